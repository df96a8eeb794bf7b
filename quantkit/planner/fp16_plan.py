"""Which nodes of a float16 conversion stay float32, and why. Pure: reads the graph and the table.

A node stays float32 when
- its op has no safe float16 form: Resize/Upsample (scales are float32 by the spec), Range, TopK,
  NonMaxSuppression, RoiAlign, random generators, control flow, quantized ops;
- the user excluded it;
- a weight it reads, or a value it holds (Constant, ConstantOfShape), does not fit float16 (|w| > 65504):
  the value is never clamped; or a weight whose every value is below float16's smallest normal;
- a tensor it reads or writes reached more than a quarter of float16's largest value (a margin for
  brighter inputs and for sums inside the op): on the calibration images with a table, and in FP32 on the
  smoke test's samples (the table's, or synthetic ones) in any case;
- it computes a shape or a resize scale: float arithmetic that ends in an integer Cast or in Resize's
  roi/scales, which float16 rounding would turn into another size;
- it produces a tensor that a subgraph captures (the subgraph was typed for float32).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.graph.fp16_rewrite import FLOAT16_MAX
from quantkit.graph.query import GraphIndex, is_quantized_op, subgraph_inputs
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
FLOAT16_TINY = 6.103515625e-05  # float16's smallest normal, 2**-14
RANGE_MARGIN = 4.0
RANGE_LIMIT = FLOAT16_MAX / RANGE_MARGIN


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
) -> Float16Plan:
    """model: every node named. peaks: tensor -> max |value| in FP32 on sample inputs. Nodes are listed
    once, with the first reason that applies."""
    index = GraphIndex(model)
    reasons: dict[str, str] = {}

    def keep(node: onnx.NodeProto, reason: str) -> None:
        reasons.setdefault(node.name, reason)

    for node in index.nodes:
        if node.op_type in UNSAFE_OPS or is_quantized_op(node.op_type):
            keep(node, "no safe float16 form")
        elif node.name in exclude_nodes or node.op_type in exclude_op_types:
            keep(node, "excluded")
    weights = _weight_peaks(index)
    overflowing = [(name, peak) for name, peak in weights if peak > FLOAT16_MAX]
    for name, peak in overflowing:
        for node, _ in index.consumers.get(name, []):
            keep(node, f"weight {name} reaches {peak:.4g}, beyond float16's {FLOAT16_MAX:g}")
    for node, peak in _overflowing_constants(index):
        keep(node, f"holds a value of {peak:.4g}, beyond float16's {FLOAT16_MAX:g}")
    # every value below float16's smallest normal (not all zero): float16 keeps a few bits of it, or none
    # (a scale of 1e-8 becomes 0); a weight with some tiny values beside normal ones loses nothing
    for name, peak in ((n, p) for n, p in weights if 0.0 < p < FLOAT16_TINY):
        for node, _ in index.consumers.get(name, []):
            keep(
                node, f"weight {name} peaks at {peak:.3g}, below float16's smallest normal {FLOAT16_TINY:.3g}"
            )
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
        if peak <= RANGE_LIMIT:
            continue
        reason = f"{name} reached {peak:.4g} {where} (float16 safe up to {RANGE_LIMIT:g})"
        if name in index.producer:
            keep(index.producer[name], reason)
        for node, _ in index.consumers.get(name, []):
            keep(node, reason)
    for node in shape_computation(index):
        keep(node, "computes a shape or resize scale (float16 rounding would change a size)")
    for name in subgraph_inputs(model):
        if name in index.producer:
            keep(index.producer[name], "its output is read inside a subgraph")
    kept = tuple(KeptFloat32(n.name, n.op_type, reasons[n.name]) for n in index.nodes if n.name in reasons)
    return Float16Plan(kept, checked if observed else None, tuple(overflowing))


def _weight_peaks(index: GraphIndex) -> list[tuple[str, float]]:
    """(initializer, max |value|) of every float32 initializer, in the graph's order."""
    found = []
    for name, init in index.initializers.items():
        if init.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(init)
            found.append((name, float(np.max(np.abs(values))) if values.size else 0.0))
    return found


def _overflowing_constants(index: GraphIndex) -> list[tuple[onnx.NodeProto, float]]:
    """Constant and ConstantOfShape nodes whose float value does not fit float16."""
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
        peak = float(np.max(np.abs(value)))
        if peak > FLOAT16_MAX:
            found.append((node, peak))
    return found


# Inputs that are sizes or resize parameters in float: (op type, input positions)
_SIZE_INPUTS = {"Resize": (1, 2, 3), "Upsample": (1,)}
_INTEGER_TYPES = frozenset(
    {
        onnx.TensorProto.INT64,
        onnx.TensorProto.INT32,
        onnx.TensorProto.INT16,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.UINT64,
    }
)


def shape_computation(index: GraphIndex) -> list[onnx.NodeProto]:
    """The nodes whose float outputs end up as a size: they feed a Resize's roi/scales (or Upsample's
    scales), or a Cast to an integer type, through float tensors of rank 0 or 1 only (sizes, scales; a
    feature map cast to integers is data, not a size). Graph order."""
    pending = [
        node.input[k]
        for node in index.nodes
        for k in _SIZE_INPUTS.get(node.op_type, ())
        if k < len(node.input) and node.input[k]
    ]
    pending += [
        node.input[0]
        for node in index.nodes
        if node.op_type == "Cast" and index.attribute(node, "to") in _INTEGER_TYPES and node.input
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


def int8_float32_nodes(model: onnx.ModelProto, quantized: set[str]) -> set[str]:
    """For --fallback fp16 on a QDQ model: the nodes that stay float32. Quantized nodes (their Q/DQ
    patterns must stay whole for onnxruntime's integer kernels), Q/DQ and every op `plan` keeps float32;
    the rest, the layers left float, run in float16. model: the QDQ model, shape-inferred, nodes named."""
    kept = {k.node for k in plan(model, None).kept}
    return kept | {n.name for n in model.graph.node if n.name in quantized}
