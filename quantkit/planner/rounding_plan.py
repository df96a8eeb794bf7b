"""Error-compensating rounding, planned: which layers, the second moment of each one's input as the INT8
model feeds it (upstream activations already quantized) on the table's samples, and the integers that
qmath.rounding chooses with it. `resolve` measures the result at the model output and keeps it only where
it is no worse than rounding to nearest on those samples.

Only layers that saw at least ROWS_PER_COLUMN input rows per input column of their weight are rounded
this way (a Conv sees one row per output position, a Gemm one per sample): a second moment from few rows
is near singular and the integers fit the samples, not the data. With the table's 8 samples, 1 row per
column let vit_mnist's MatMuls (136 rows for 64 columns) round for the samples: +0.2 dB on them and 3
of 1000 held-out digits lost; 4 leaves them at nearest and gave MobileNetV2 96.2 % agreement on
imagenet-dev against 94.8 % (1 row per column: 94.8 %). The others round to nearest, and so do the
costliest layers of a model whose moments would pass rounding_budget.MOMENT_MACS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quantkit.config import ConvertConfig, Rounding
from quantkit.graph.augment import with_outputs
from quantkit.graph.qdq import apply_plan
from quantkit.graph.query import GraphIndex
from quantkit.graph.smoothquant_rewrite import input_scaled_weight
from quantkit.planner import rounding_budget
from quantkit.planner.at_output import SqnrMemo, output_sqnr
from quantkit.planner.core import plan as make_plan
from quantkit.qmath.params import per_channel_weight
from quantkit.qmath.rounding import (
    MAX_POSITIONS,
    compensated_round,
    conv_rows,
    matmul_rows,
    second_moment_update,
)
from quantkit.results import CalibrationTable, Feed, QuantPlan, Runs, feed_rows
from quantkit.runtime import Session

MOMENT_BYTES = 256 << 20  # second moments held at once (float64); more layers take another pass
ROWS_PER_COLUMN = 4  # rows a layer must see per input column (see the module's docstring)
# Layer inputs one run outputs, at most (float32 bytes a sample); more layers take another pass. A
# 1024x1024 nucleus segmenter (czann, EfficientNet U-Net) reads 861 MB a sample over its 95 layers.
RUN_BYTES = 512 << 20


@dataclass(frozen=True)
class Layer:
    """One layer to round. weight: as the rewrite quantizes it (rebalanced where the plan rebalances),
    in the model's layout; to_groups / from_groups: that layout <-> [G, O, K] (qmath.rounding's)."""

    node: onnx.NodeProto
    weight: np.ndarray
    axis: int
    groups: int
    columns: int  # K: input columns per output channel
    most: int = MAX_POSITIONS  # a Conv's output positions taken per image, at most (rounding_budget)

    def to_groups(self, array: np.ndarray) -> np.ndarray:
        if self.node.op_type == "Conv":
            return array.reshape(self.groups, array.shape[0] // self.groups, -1)
        return array[None] if self.axis == 0 else array.T[None]  # Gemm B [N, K] / B [K, N]

    def from_groups(self, array: np.ndarray) -> np.ndarray:
        if self.node.op_type == "Conv":
            return array.reshape(self.weight.shape)
        return array[0] if self.axis == 0 else array[0].T

    def rows(self, index: GraphIndex, x: np.ndarray) -> np.ndarray:
        """The rows the layer multiplies by its weight, [G, P, K], from its input x."""
        if self.node.op_type != "Conv":
            return matmul_rows(x)
        top, left, bottom, right = _ints(index, self.node, "pads", [0, 0, 0, 0])
        stride_h, stride_w = _ints(index, self.node, "strides", [1, 1])
        dilation_h, dilation_w = _ints(index, self.node, "dilations", [1, 1])
        return conv_rows(
            x,
            (self.weight.shape[2], self.weight.shape[3]),
            (stride_h, stride_w),
            (top, left, bottom, right),
            (dilation_h, dilation_w),
            self.groups,
            self.most,
        )


def resolve(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    alphas: Mapping[str, float] | None,
    reference: Runs,
    cache: dict[str, tuple[float, float]],
    memo: SqnrMemo | None = None,
    solved: dict[object, dict[str, np.ndarray]] | None = None,
) -> tuple[dict[str, np.ndarray], float | None, float | None]:
    """(node -> its integers, output SQNR on the samples rounding to nearest, with them): empty with
    --rounding nearest, without samples, or where they measured worse than nearest (then kept nearest).
    solved: the integers solved before for each set of `alphas` (their weights), reused, and this call's
    added (corrections_choice solves once for bias correction on and off: its input moments change the
    integers little, and the second solve cost PP-OCRv4's text detector at 640x640 4 s of a 35 s convert)."""
    if config.rounding is Rounding.nearest or table.samples is None:
        return {}, None, None
    base = make_plan(model, table, config, range_cache=cache, alphas=alphas)
    quantized = apply_plan(model, base)
    key = None if alphas is None else tuple(sorted(alphas.items()))
    known = None if solved is None else solved.get(key)
    rounded = compensated(model, base, table.samples, quantized) if known is None else known
    if solved is not None:
        solved[key] = rounded
    if not rounded:
        return {}, None, None
    nearest = output_sqnr(quantized, reference, table.samples, memo)
    chosen = dataclasses.replace(base, rounded=rounded)
    after = output_sqnr(apply_plan(model, chosen), reference, table.samples, memo)
    return (rounded if after >= nearest else {}), nearest, after


def replanned(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    keep_float: Mapping[str, str],
    cache: dict[str, tuple[float, float]],
    alphas: Mapping[str, float] | None,
    rounded: Mapping[str, np.ndarray] | None,
    slower: Mapping[str, str] | None = None,
    cut: frozenset[str] = frozenset(),
) -> QuantPlan:
    """The plan with `keep_float` (and `slower`, `cut`: planner.plan's) float and, where `resolve` chose
    compensated rounding for the model, each layer's integers solved again for the inputs this plan feeds
    it: downstream of a float layer they are less noisy than in the all-INT8 plan `rounded` was solved
    for, and integers that compensate noise that is no longer there add error of their own (--max-drop's
    trials, issue 17)."""
    samples = table.samples if keep_float and rounded else None  # None: the integers stand as solved
    kept = dict(keep_float)
    solved = None if samples is not None else rounded
    plan = make_plan(model, table, config, kept, cache, alphas, solved, slower, cut)
    return plan if samples is None else dataclasses.replace(plan, rounded=compensated(model, plan, samples))


def compensated(
    model: onnx.ModelProto, plan: QuantPlan, samples: Feed, quantized: onnx.ModelProto | None = None
) -> dict[str, np.ndarray]:
    """node -> int8 weight (its layout) for each layer that saw enough rows; plan: made for `model`;
    quantized: apply_plan(model, plan) where the caller has it already."""
    index = GraphIndex(model)
    layers = _layers(index, plan)
    shapes = {name: (layer.groups, layer.columns) for name, layer in layers.items()}
    costs = rounding_budget.costs(model, shapes, samples)
    most, skipped = rounding_budget.within(costs, feed_rows(samples))
    layers = {n: dataclasses.replace(layer, most=most) for n, layer in layers.items() if n not in skipped}
    quantized = apply_plan(model, plan) if quantized is None else quantized
    # a reader of a shifted tensor (planner.tensorrt_shift) is solved for x + c as it reads it, not for x:
    # near-centred, which suits the bias correction that takes the error's mean off after (SqueezeNet 1.1
    # --target tensorrt: 32.74 against 32.52 dB on the calibration samples, 35.65 against 35.01 held out)
    feeds = {n.name: n.input[0] for n in quantized.graph.node if n.name in layers}
    found: dict[str, np.ndarray] = {}
    for chunk in _chunks(layers, {n: costs[n].input_bytes for n in layers}):
        moments, rows = _moments(quantized, index, {n: layers[n] for n in chunk}, feeds, samples)
        for name in chunk:
            layer = layers[name]
            if rows[name] < ROWS_PER_COLUMN * layer.columns or name not in moments:
                continue
            if not np.isfinite(moments[name]).all():  # inputs past float32's squares (hq103 F6: std=1e-30
                continue  # made numpy warn on stderr): nothing to learn from; it rounds to nearest
            _, scale = per_channel_weight(layer.weight.astype(np.float32), layer.axis, plan.weight_qmax)
            groups = layer.to_groups(layer.weight)
            with np.errstate(all="ignore"):  # a singular solve gives NaN, which compensated_round handles
                q = compensated_round(
                    groups, moments[name], scale.reshape(groups.shape[:2]), plan.weight_qmax
                )
            found[name] = np.ascontiguousarray(layer.from_groups(q))
    return found


def _layers(index: GraphIndex, plan: QuantPlan) -> dict[str, Layer]:
    """The plan's quantized Conv (2-D), Gemm and MatMul layers with a per-channel weight at input 1,
    whose second moment fits MOMENT_BYTES."""
    scales = {node: r.scales.astype(np.float64) for r in plan.rebalances for node in r.consumers}
    layers = {}
    for weight in plan.weights:
        node = index.by_name[weight.node]
        if weight.kind != "weight" or weight.input_index != 1 or weight.axis is None:
            continue
        value = index.constant(node.input[1])
        if (
            node.name not in plan.quantized_nodes
            or value is None
            or not _supported(index, node, value, weight.axis)
            or len(index.consumers.get(node.input[1], [])) > 1  # shared: one set of integers serves all
        ):
            continue
        if node.name in scales:
            value = input_scaled_weight(index, node, scales[node.name])
        groups = int(index.attribute(node, "group", 1)) if node.op_type == "Conv" else 1  # type: ignore[call-overload]
        columns = int(np.prod(value.shape[1:])) if node.op_type == "Conv" else value.shape[1 - weight.axis]
        if groups * columns**2 * 8 <= MOMENT_BYTES:
            layers[node.name] = Layer(node, value.astype(np.float64), weight.axis, groups, columns)
    return layers


def _supported(index: GraphIndex, node: onnx.NodeProto, weight: np.ndarray, axis: int) -> bool:
    if node.op_type == "Conv":
        auto_pad = index.attribute(node, "auto_pad", "NOTSET")
        return weight.ndim == 4 and axis == 0 and auto_pad in ("NOTSET", b"NOTSET")
    if node.op_type == "Gemm":
        return weight.ndim == 2 and not index.attribute(node, "transA", 0) and axis in (0, 1)
    return node.op_type == "MatMul" and weight.ndim == 2 and axis == 1


def _ints(index: GraphIndex, node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    value = index.attribute(node, name, default)
    return [int(v) for v in value]  # type: ignore[attr-defined]


def _chunks(layers: Mapping[str, Layer], inputs: Mapping[str, int | None] | None = None) -> list[list[str]]:
    """The layers in groups whose second moments fit MOMENT_BYTES together and whose inputs (`inputs`:
    float32 bytes a sample, None where not known) fit RUN_BYTES a run: one pass over the samples each."""
    inputs = inputs or {}
    chunks: list[list[str]] = [[]]
    held = read = 0
    for name, layer in layers.items():
        size = layer.groups * layer.columns**2 * 8
        reads = inputs.get(name) or 0
        if chunks[-1] and (held + size > MOMENT_BYTES or read + reads > RUN_BYTES):
            chunks.append([])
            held = read = 0
        chunks[-1].append(name)
        held += size
        read += reads
    return [c for c in chunks if c]


def _moments(
    quantized: onnx.ModelProto,
    index: GraphIndex,
    layers: Mapping[str, Layer],
    feeds: Mapping[str, str],
    samples: Feed,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """(node -> sum of its rows' outer products [G, K, K], node -> rows seen) over the samples, each
    layer's input read from the INT8 model as it runs. A layer whose first batch shows that all the
    samples give it fewer than ROWS_PER_COLUMN rows per column has no moment: a VGG16 classifier's first
    Gemm (K = 25088, one row a sample) allocated 5 GB for 8 rows (8.2 GB peak convert, 1.3 GB without)."""
    names = list(dict.fromkeys(feeds[n] for n in layers))
    # numpy's products follow each run: onnxruntime's workers spinning after it would take the cores
    # OpenBLAS's threads need (one [192, 25, 25] product took 7.5 s instead of 7 ms on this 2-core machine)
    session = Session.of(with_outputs(quantized, names), spin=False)
    moments: dict[str, np.ndarray] = {}
    rows = dict.fromkeys(layers, 0)
    runs = session.run_count(samples)  # iter_samples' runs, each alike
    short: set[str] = set()  # too few rows on all the samples: never held (they round to nearest)
    for outputs in session.iter_samples(samples):
        for name, layer in layers.items():
            if name in short:
                continue
            block = layer.rows(index, outputs[feeds[name]].astype(np.float32))
            rows[name] += block.shape[1]
            if name not in moments:
                if block.shape[1] * runs < ROWS_PER_COLUMN * layer.columns:
                    short.add(name)  # its rows on every run are those of the first: not formed again
                    rows[name] = block.shape[1] * runs
                    continue
                moments[name] = np.zeros((layer.groups, layer.columns, layer.columns))
            with np.errstate(over="ignore", invalid="ignore"):  # an infinite sum is skipped after
                second_moment_update(moments[name], block)
    return moments, rows
