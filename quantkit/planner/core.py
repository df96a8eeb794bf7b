"""Decide what to quantize: model + calibration table + config -> QuantPlan (plain data).

The rules, in order:
1. Compute ops (Conv, ConvTranspose, Gemm, MatMul) with a constant weight are quantized: weight int8
   per output channel, bias int32, activation input and output per tensor.
2. Ops on the integer path (data movement, pooling, Concat, Add, Mul, Sigmoid) are quantized when they
   touch a quantized tensor, so that onnxruntime keeps the path integer; repeated to a fixed point.
   HardSigmoid and HardSwish join it as Add/Mul (uint8), and a Mul or Div by a positive constant after a
   quantized op folds into its Q node's scale (planner.patterns).
3. Relu and Clip(0, x) after a quantized op are folded into the range of its output (uint8 only, where
   the zero point 0 makes the Q node clip exactly as they do).
4. Ops that onnxruntime fuses only with equal input/output scales share one set of params.
5. A Concat whose inputs have very different ranges (a detection head's boxes beside its scores) stays
   float, and so does what only it feeds.
6. Ranges: the configured method over each tensor's histogram (planner.ranges); then outlier channels are
   rebalanced (planner.rebalance: where, and where 1/s goes; the alphas under auto are measured by
   planner.smoothing) and each biased layer gets its input's channel means for bias correction.
7. A compute op whose int8 kernel would not pay for the Q/DQ passes it needs stays float (planner.payoff).
Model outputs stay float. Layers the accuracy fallback keeps float arrive as keep_float.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from quantkit.config import ActivationType, ConvertConfig
from quantkit.errors import ConfigError
from quantkit.graph.augment import COMPUTE_OPS, INTEGER_PATH_OPS, SHARED_SCALE_OPS
from quantkit.graph.query import GraphIndex
from quantkit.planner.patterns import HARD_OPS, SCALE_OPS, data_input, try_hard, try_scale_fold, writer
from quantkit.planner.payoff import unpaid
from quantkit.planner.ranges import activation_params, consumer_transform, is_bounded, select_range
from quantkit.planner.rebalance import Rebalancer
from quantkit.results import (
    CalibrationTable,
    QuantParams,
    QuantPlan,
    Rebalance,
    Skip,
    TensorStats,
    WeightPlan,
)

MULTI_INPUT_OPS = frozenset({"Concat", "Add", "Mul"})
MAX_PAYOFF_ROUNDS = 4


@dataclass
class _Planning:
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
    selected: dict[str, tuple[float, float]] = field(default_factory=dict)  # select_range results, by tensor
    reads: dict[str, tuple[str, float]] = field(default_factory=dict)  # scaled reads: node -> (source, k)

    def has_stats(self, name: str) -> bool:
        return name in self.table.stats and self.index.is_float(name) and not self.index.is_constant(name)

    def range_of(self, name: str) -> tuple[float, float]:
        if name not in self.ranges:
            if name not in self.selected:
                transform = consumer_transform(self.index, name)
                stats, bounded = self.table.stats[name], is_bounded(self.index, name)
                self.selected[name] = select_range(stats, self.config, transform, bounded)
            self.ranges[name] = self.selected[name]
        return self.ranges[name]

    def add_q(self, name: str) -> bool:
        if name in self.index.graph_outputs or name in self.q or name in self.float_tensors:
            return False
        self.q.add(name)
        return True


FLOAT_LAYER_REASON = "kept float by --exclude-from, with its input path"


def plan(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    keep_float: dict[str, str] | None = None,
    range_cache: dict[str, tuple[float, float]] | None = None,
    alphas: Mapping[str, float] | None = None,
) -> QuantPlan:
    """model: opset >= 13, every node named, shapes inferred.

    keep_float: node -> why it stays float (decided by the accuracy fallback). Unlike --exclude-nodes,
    such a layer computes on exact values: its output, its data input and the path back to the previous
    linear layer's output (through elementwise and data-movement ops) stay float.
    range_cache: select_range results to reuse (and fill) across plans of one model, table and config.
    alphas: under --smoothquant auto, the activations to rebalance and how (planner.smoothing measures
    them); a fixed alpha rebalances every candidate; off, none.
    """
    state, activations, rebalancer = _decide(model, table, config, keep_float, range_cache)
    rebalances = rebalancer.chosen(alphas)
    for rebalance in rebalances:
        _apply_rebalance_decision(state, activations, rebalance)
    return _plan_of(state, activations, rebalances)


def smoothing_candidates(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    range_cache: dict[str, tuple[float, float]] | None = None,
) -> tuple[QuantPlan, Rebalancer]:
    """The plan without rebalancing, and the Rebalancer that makes candidates against it."""
    state, activations, rebalancer = _decide(model, table, config, None, range_cache)
    return _plan_of(state, dict(activations), []), rebalancer


def _decide(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    keep_float: dict[str, str] | None,
    range_cache: dict[str, tuple[float, float]] | None,
) -> tuple[_Planning, dict[str, QuantParams], Rebalancer]:
    """What is quantized and with which params, before rebalancing."""
    index = GraphIndex(model)
    _check_exclusions(index, config)
    keep_float = {**dict.fromkeys(config.float_layers, FLOAT_LAYER_REASON), **(keep_float or {})}
    slow: dict[str, str] = {}
    state = _planned(index, table, config, keep_float, range_cache, slow)
    for _ in range(MAX_PAYOFF_ROUNDS):  # a layer kept float can leave its neighbours' conversions to pay
        found = {k: v for k, v in unpaid(state).items() if k not in slow}
        if not found:
            break
        slow.update(found)
        state = _planned(index, table, config, keep_float, range_cache, slow)
    activations, tied = _activation_params(state)
    # a scale-folded Mul is gone from the rewritten graph: never an absorber of rebalancing
    scaled = {n: index.by_name[n].op_type for n in state.folds if index.by_name[n].op_type in SCALE_OPS}
    candidates = dict(activations)
    if config.smoothquant == "auto":
        for tensor in _integer_written(state):
            candidates.pop(tensor, None)
    rebalancer = Rebalancer(
        index, table, config, {**state.quantized, **scaled}, dict(state.folds), candidates, tied
    )
    return state, activations, rebalancer


def _planned(
    index: GraphIndex,
    table: CalibrationTable,
    config: ConvertConfig,
    keep_float: dict[str, str],
    range_cache: dict[str, tuple[float, float]] | None,
    slow: dict[str, str],
) -> _Planning:
    """What is quantized (rules 1-5), with the compute nodes in `slow` left float (planner.payoff)."""
    state = _Planning(index, table, config)
    if range_cache is not None:
        state.selected = range_cache
    for name in keep_float:
        node = index.by_name[name]
        state.float_tensors.update(o for o in node.output if o)
        for tensor in _data_inputs(node):
            state.float_tensors.update(input_path(index, tensor))
    for node in index.nodes:
        if keep_float and node.name in keep_float:
            state.reasons[node.name] = keep_float[node.name]
        elif _excluded(node, config):
            state.reasons[node.name] = "excluded by --exclude-nodes / --exclude-op-types"
        elif node.name in slow:
            state.reasons[node.name] = slow[node.name]
        elif node.op_type in COMPUTE_OPS:
            _plan_compute(state, node)
    _propagate(state)
    return state


def _integer_written(state: _Planning) -> list[str]:
    """Quantized tensors written (through folds) by an integer-path op: nothing can absorb 1/s there, so
    rebalancing one inserts a float Mul and takes its writer off the integer path (a float op, a Mul and a
    Q/DQ pass on the whole tensor). --smoothquant auto leaves them alone: on a MobileNetV3 (hard-swish
    outputs and SE products) that cost 0.60x FP32 against 1.06x, on a SiLU network 8.3 ms against 5.9."""
    found = []
    for tensor in state.q:
        node = writer(state, tensor)
        if node is not None and node.op_type not in COMPUTE_OPS:
            found.append(tensor)
    return sorted(found)


def _plan_of(state: _Planning, activations: dict[str, QuantParams], rebalances: list[Rebalance]) -> QuantPlan:
    index = state.index
    _scaled_reads(state, activations)
    for node in index.nodes:
        if node.name not in state.quantized and node.name not in state.folds:
            state.reasons.setdefault(node.name, _float_reason(node))
    skipped = tuple(
        Skip(node.name, node.op_type, state.reasons[node.name])
        for node in index.nodes
        if node.name in state.reasons and node.op_type != "Constant"
    )
    return QuantPlan(
        activations=activations,
        weights=tuple(state.weights),
        quantized_nodes=dict(state.quantized),
        folds=dict(state.folds),
        skipped=skipped,
        ranges={name: state.range_of(name) for name in sorted(state.q)},
        rebalances=tuple(rebalances),
        input_means=_input_means(state, rebalances) if state.config.bias_correction else {},
        weight_qmax=state.config.weight_qmax,
    )


def _input_means(state: _Planning, rebalances: list[Rebalance]) -> dict[str, np.ndarray]:
    """E[x] per input channel of each biased Conv/Gemm, in the scale its input has after rebalancing."""
    divisors = {node: r.scales for r in rebalances for node in r.consumers}
    means = {}
    for weight in state.weights:
        node = state.index.by_name[weight.node]
        if weight.kind != "bias" or node.op_type not in ("Conv", "Gemm"):
            continue
        stats = state.table.stats.get(node.input[0])
        if stats is None or stats.channel_mean is None:
            continue
        mean = stats.channel_mean
        means[node.name] = mean / divisors[node.name] if node.name in divisors else mean
    return means


def _apply_rebalance_decision(
    state: _Planning, activations: dict[str, QuantParams], rebalance: Rebalance
) -> None:
    """The rebalanced tensor's params replace X's (fold), or X is left float for the inserted Mul."""
    if rebalance.producer is not None:
        activations[rebalance.tensor] = rebalance.params
        return
    activations.pop(rebalance.tensor, None)
    state.q.discard(rebalance.tensor)
    producer = state.index.producer.get(rebalance.tensor)
    if producer is None:
        return
    if producer.name in state.folds:  # Q saturation and scale no longer apply: the folds run as ops
        node: onnx.NodeProto | None = producer
        while node is not None and node.name in state.folds:
            del state.folds[node.name]
            state.reasons[node.name] = "its output is rebalanced by a float Mul (kept as an op)"
            if state.reads.pop(node.name, None) is not None:  # its source keeps its Q/DQ
                break
            source = data_input(state.index, node) if node.op_type in SCALE_OPS else node.input[0]
            node = state.index.producer.get(source)
    elif state.quantized.get(producer.name) in INTEGER_PATH_OPS | {"HardSigmoid"}:
        del state.quantized[producer.name]
        state.reasons[producer.name] = "its output is rebalanced by a float Mul"


def input_path(index: GraphIndex, tensor: str) -> set[str]:
    """`tensor` and the tensors it is computed from, back to (and including) the outputs of the previous
    linear layers or the graph inputs."""
    path, todo = set(), [tensor]
    while todo:
        name = todo.pop()
        if name in path or index.is_constant(name):
            continue
        path.add(name)
        producer = index.producer.get(name)
        if producer is not None and producer.op_type not in COMPUTE_OPS:
            todo.extend(n for n in producer.input if n)
    return path


def _check_exclusions(index: GraphIndex, config: ConvertConfig) -> None:
    for option, names in (("--exclude-nodes", config.exclude_nodes), ("--exclude-from", config.float_layers)):
        unknown = [n for n in names if n not in index.by_name]
        if unknown:
            raise ConfigError(
                f"{option} names {len(unknown)} node(s) not in the model ({', '.join(unknown[:3])}); "
                "use node names as shown by the convert summary, quantkit sensitivity or Netron"
            )


def _excluded(node: onnx.NodeProto, config: ConvertConfig) -> bool:
    return node.name in config.exclude_nodes or node.op_type in config.exclude_op_types


def _plan_compute(state: _Planning, node: onnx.NodeProto) -> None:
    index = state.index
    x, w = node.input[0], node.input[1] if len(node.input) > 1 else ""
    weight = index.constant(w) if w else None
    if weight is None:
        both_live = w and state.has_stats(w)
        if node.op_type == "MatMul" and both_live and not state.config.quantize_attention_matmul:
            state.reasons[node.name] = "activation x activation MatMul (attention) kept float"
        else:
            state.reasons[node.name] = "weight is not a constant"
        return
    if x in state.float_tensors:
        state.reasons[node.name] = "its input is kept float by the accuracy fallback"
        return
    if node.output[0] in state.float_tensors:
        # int8 weights under a float output would make onnxruntime dequantize them every run and lose its
        # pre-packed float kernel (measured on YOLOX: 1.03x instead of 1.20x): run the layer in float
        state.reasons[node.name] = "its output is kept float by the accuracy fallback"
        return
    if weight.dtype != np.float32 or not state.has_stats(x):
        state.reasons[node.name] = "no calibration statistics for its input; recalibrate"
        return
    if not np.isfinite(weight).all():
        state.reasons[node.name] = "weight holds NaN or Inf"
        return
    axis = _weight_axis(index, node, weight)
    if axis is None:
        state.reasons[node.name] = "weight layout not supported for per-channel quantization"
        return
    state.quantized[node.name] = node.op_type
    state.add_q(x)
    state.weights.append(WeightPlan(node.name, 1, w, "weight", axis))
    if len(node.input) > 2 and node.input[2] and _bias_ok(index, node, weight, axis):
        state.weights.append(WeightPlan(node.name, 2, node.input[2], "bias", 0))
    out = node.output[0]
    if state.has_stats(out):
        state.add_q(out)


def _weight_axis(index: GraphIndex, node: onnx.NodeProto, weight: np.ndarray) -> int | None:
    if node.op_type == "Conv":
        return 0 if weight.ndim >= 3 else None
    if node.op_type == "ConvTranspose":
        return 1 if weight.ndim >= 3 else None
    if weight.ndim != 2:
        return None
    if node.op_type == "Gemm":
        return 0 if index.attribute(node, "transB", 0) else 1
    return 1  # MatMul: [K, N]


def _bias_ok(index: GraphIndex, node: onnx.NodeProto, weight: np.ndarray, axis: int) -> bool:
    bias = index.constant(node.input[2])
    if bias is None or bias.dtype != np.float32 or not np.isfinite(bias).all():
        return False
    if node.op_type == "Gemm":
        return (
            bias.ndim == 1 and bias.size == weight.shape[axis] and index.attribute(node, "beta", 1.0) == 1.0
        )
    return bias.ndim == 1


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    if node.op_type in MULTI_INPUT_OPS:
        return [n for n in node.input if n]
    return [node.input[0]] if node.input and node.input[0] else []


def _propagate(state: _Planning) -> None:
    changed = True
    while changed:
        changed = False
        for node in state.index.nodes:
            if node.name in state.quantized or node.name in state.folds or node.name in state.reasons:
                continue
            if node.op_type in ("Relu", "Clip"):
                changed |= _try_fold(state, node)
            elif node.op_type in HARD_OPS:
                changed |= try_hard(state, node)
            elif node.op_type in SCALE_OPS and try_scale_fold(state, node):
                changed = True
            elif node.op_type in INTEGER_PATH_OPS:
                changed |= _try_integer(state, node)


def _try_fold(state: _Planning, node: onnx.NodeProto) -> bool:
    index = state.index
    source, out = node.input[0], node.output[0]
    if source not in state.q or writer(state, source) is None:
        return False
    if out in state.float_tensors:
        state.reasons[node.name] = "its output is kept float by the accuracy fallback"
        return False
    if (
        state.config.activations is not ActivationType.uint8
        or len(index.consumers[source]) != 1
        or out in index.graph_outputs
        or not state.has_stats(out)
        or not _clips_at_zero(index, node)
    ):
        state.reasons[node.name] = "not foldable into the range of its input (kept float)"
        return False
    state.folds[node.name] = out
    state.q.discard(source)
    state.add_q(out)
    return True


def _clips_at_zero(index: GraphIndex, node: onnx.NodeProto) -> bool:
    if node.op_type == "Relu":
        return True
    low = index.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    return low is not None and low.size == 1 and float(low.reshape(())) == 0.0


def _try_integer(state: _Planning, node: onnx.NodeProto) -> bool:
    index = state.index
    data = _data_inputs(node)
    outputs = [o for o in node.output if o]
    if not any(n in state.q for n in [*data, *outputs]):
        return False
    if any(n in state.float_tensors for n in [*data, *outputs]):
        state.reasons[node.name] = "reads or writes a tensor kept float by the accuracy fallback"
        return False
    live = [n for n in data if not index.is_constant(n)]
    if not live or not all(state.has_stats(n) for n in live):
        return False
    constants = [index.constant(n) for n in data if index.is_constant(n)]
    if constants and (
        node.op_type not in ("Add", "Mul") or any(c is None or c.dtype != np.float32 for c in constants)
    ):
        return False
    if any(o in index.graph_outputs for o in outputs):
        state.reasons[node.name] = "its output is a model output (kept float)"
        return False
    if not all(state.has_stats(o) for o in outputs):
        state.reasons[node.name] = "no calibration statistics for its output; recalibrate"
        return False
    if node.op_type == "Concat" and len(live) > 1:
        widths = [max(hi - lo, 1e-12) for lo, hi in (state.range_of(n) for n in live)]
        if max(widths) / min(widths) > state.config.concat_range_ratio:
            state.reasons[node.name] = (
                f"inputs' ranges differ {max(widths) / min(widths):.0f}x: one scale would crush the narrower "
                "(e.g. scores beside boxes)"
            )
            return False
    state.quantized[node.name] = node.op_type
    for name in [*live, *outputs]:
        state.add_q(name)
    for position, name in enumerate(node.input):
        if name in data and index.is_constant(name):
            state.weights.append(WeightPlan(node.name, position, name, "constant", None))
    return True


def _float_reason(node: onnx.NodeProto) -> str:
    if node.op_type in INTEGER_PATH_OPS:
        return "not between quantized ops"
    if node.op_type in COMPUTE_OPS:
        return "not quantizable"
    return "no integer kernel in onnxruntime (kept float)"


def _activation_params(state: _Planning) -> tuple[dict[str, QuantParams], set[str]]:
    """Params per quantized tensor; tensors tied by shared-scale ops get those of the widest member.
    Also returns the tensors that share their params with another."""
    reads = {state.folds[n] for n in state.reads}  # their params are their sources' (_scaled_reads)
    groups = _UnionFind(sorted(state.q - reads))
    for node in state.index.nodes:
        if state.quantized.get(node.name) in SHARED_SCALE_OPS:
            for out in node.output:
                if out:
                    groups.union(node.input[0], out)
    params: dict[str, QuantParams] = {}
    tied: set[str] = set()
    for members in groups.groups():
        if len(members) > 1:
            tied.update(members)
        widest = max(members, key=lambda n: (_width(state.table.stats[n]), n))
        lo, hi = state.range_of(widest)
        shared = activation_params(lo, hi, state.config.activations)
        for name in members:
            state.ranges[name] = (lo, hi)
            params[name] = shared
    for weight in state.weights:
        if weight.kind == "constant" and weight.initializer not in params:
            value = state.index.constant(weight.initializer)
            assert value is not None
            params[weight.initializer] = activation_params(
                float(value.min()), float(value.max()), state.config.activations
            )
    return dict(sorted(params.items())), tied


def _scaled_reads(state: _Planning, activations: dict[str, QuantParams]) -> None:
    """A scaled read's params: its source's (final, after rebalancing) with the scale times k. A source
    left float for a rebalancing Mul leaves the read to run as its Mul/Div with params of its own."""
    for node_name, (source, k) in list(state.reads.items()):
        out = state.folds[node_name]
        if source in activations:
            params = activations[source]
            activations[out] = QuantParams(
                (params.scale * np.float32(k)).astype(np.float32), params.zero_point
            )
            continue
        del state.folds[node_name], state.reads[node_name]
        if out in state.q:
            activations[out] = activation_params(*state.range_of(out), state.config.activations)


def _width(stats: TensorStats) -> float:
    return stats.maximum - min(stats.minimum, 0.0)


class _UnionFind:
    def __init__(self, names: Iterable[str]) -> None:
        self.parent = {n: n for n in names}

    def find(self, name: str) -> str:
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> None:
        if a in self.parent and b in self.parent:
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[str]]:
        out: dict[str, list[str]] = {}
        for name in self.parent:
            out.setdefault(self.find(name), []).append(name)
        return [sorted(v) for _, v in sorted(out.items())]
