"""What a plan is being built from and into: the graph, the table, the config, and each decision so far."""

from __future__ import annotations

from dataclasses import dataclass, field

from quantkit.config import ConvertConfig
from quantkit.graph.query import GraphIndex
from quantkit.planner.moving import moves_to_output
from quantkit.planner.range_plan import (
    becomes_probability,
    capped,
    caps,
    consumer_transform,
    is_bounded,
    range_stats,
    saturated_outside,
    score_bound,
    score_logit_top,
    select_range,
)
from quantkit.results import (
    CalibrationTable,
    WeightPlan,
)

MULTI_INPUT_OPS = frozenset({"Concat", "Add", "Mul"})


EXCLUDED = "excluded by --exclude-nodes / --exclude-op-types"  # the reason an excluded node is float
ATTENTION_FLOAT = "activation x activation MatMul (attention) kept float"
# where both its inputs carry Q/DQ all the same (quantized for another reader, or a scale folded into their
# DequantizeLinear), onnxruntime fuses them into MatMulIntegerToFloat: hunt35's ViT showed 12 of its 24
# "kept float" attention MatMuls running so
ATTENTION_INT8_INPUTS = (
    "activation x activation MatMul (attention): no Q/DQ of its own, but both its inputs reach it "
    "quantized, so onnxruntime runs it on their int8 values"
)


@dataclass
class Planning:
    index: GraphIndex
    table: CalibrationTable
    config: ConvertConfig
    quantized: dict[str, str] = field(default_factory=dict)
    q: set[str] = field(default_factory=set)
    folds: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    weights: list[WeightPlan] = field(default_factory=list)
    constants: set[str] = field(default_factory=set)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    float_tensors: set[str] = field(default_factory=set)  # never quantized (the fallback's layers)
    float_why: dict[str, str] = field(default_factory=dict)  # a float tensor's reason for its readers
    scores: set[str] = field(default_factory=set)  # never quantized (range_plan.score_tensors)
    selected: dict[str, tuple[float, float]] = field(default_factory=dict)  # select_range results, by tensor
    reads: dict[str, tuple[str, float]] = field(default_factory=dict)  # scaled reads: node -> (source, k)
    # a scaled read's tensor -> the shared-scale ops' outputs that take its params (shared_params)
    moved_reads: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def has_stats(self, name: str) -> bool:
        """Whether the tensor can be quantized on its statistics: a float activation the table saw, and
        saw finite (NaN or Inf inside the model, an attention mask's -inf: no grid holds it)."""
        stats = self.table.stats.get(name)
        return (
            stats is not None
            and not stats.nonfinite
            and self.index.is_float(name)
            and not self.index.is_constant(name)
        )

    def nonfinite(self, name: str) -> bool:
        stats = self.table.stats.get(name)
        return stats is not None and stats.nonfinite > 0

    def range_of(self, name: str) -> tuple[float, float]:
        """The tensor's range: select_range's on range_stats (cached in `selected` across plans), capped
        at the images' mean extremes under --method mse with --range-cap on (never a bounded op's
        output, nor logits that become probabilities). Values a model output holds as they are (a Conv
        writing it, through ops that only move values) keep the calibration's whole range: what the
        user reads there is the rounding alone, never a clipped peak (a heat map's, a depth map's)."""
        if name not in self.ranges:
            stats, bounded = self.table.stats[name], is_bounded(self.index, name)
            whole = moves_to_output(self.index, name)
            if name not in self.selected:
                transform = consumer_transform(self.index, name)
                live = saturated_outside(self.index, name)
                seen = range_stats(self.index, self.table.stats, name)
                self.selected[name] = select_range(seen, self.config, transform, bounded or whole, live)
            lo, hi = self.selected[name]
            if caps(self.config) and not (bounded or whole) and not becomes_probability(self.index, name):
                lo, hi = capped(lo, hi, stats)
            logit_top = None if bounded else score_logit_top(self.index, name)
            if logit_top is not None:  # the rare top logits are the detections: kept to the calibration
                hi = max(hi, float(stats.maximum), logit_top)  # maximum and a sure score's logit
                # (range_plan.SURE_SCORE; hunt54 A1: an SSD's head logits MSE-clipped at 0.147 capped every
                # score at 0.537, none of 23 above 0.7 left)
            top = score_bound(self.index, name) if bounded else None
            if top is not None:  # scores higher than calibration saw are kept (range_plan.score_bound)
                lo, hi = min(lo, 0.0), max(hi, top)
            self.ranges[name] = (lo, hi)
        return self.ranges[name]

    def echo_quantizable(self, name: str) -> bool:
        """A graph input echoed as a model output whose Q/DQ pair, after the input, leaves every model
        output as it is: none of its readers writes one (an Identity copying it to another output read
        the rounded values, hq167 F3)."""
        readers = [node for node, _ in self.index.consumers.get(name, [])]
        outputs = set(self.index.graph_outputs)
        return name in self.index.graph_inputs and not any(outputs & set(node.output) for node in readers)

    def add_q(self, name: str, model_output: bool = False) -> bool:
        """Put a Q/DQ pair on `name`; a model output only where `model_output` says its writer needs one
        (an int8 Conv on onnxruntime's CPU: no integer Conv writes float) or where it is a graph input (the
        pair goes after it, for its readers: the output is the input as given)."""
        if (
            (name in self.index.graph_outputs and not model_output and not self.echo_quantizable(name))
            or name in self.q
            or name in self.float_tensors
            or name in self.scores
        ):
            return False
        self.q.add(name)
        return True


FLOAT_LAYER_REASON = "kept float by --exclude-from, with its input path"
