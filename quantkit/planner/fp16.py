"""Which nodes of a float16 conversion stay float32, and why. Pure: reads the graph and the table.

A node stays float32 when
- its op has no safe float16 form: Resize/Upsample (scales are float32 by the spec), Range, TopK,
  NonMaxSuppression, RoiAlign, random generators, control flow, quantized ops;
- the user excluded it;
- a weight it reads does not fit float16 (|w| > 65504): the weight is never clamped;
- with a calibration table: a tensor it reads or writes reached more than a quarter of float16's
  largest value on the calibration images (a margin for brighter inputs and for sums inside the op);
- it produces a tensor that a subgraph captures (the subgraph was typed for float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.graph.fp16 import FLOAT16_MAX
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
) -> Float16Plan:
    """model: every node named. Nodes are listed once, with the first reason that applies."""
    index = GraphIndex(model)
    reasons: dict[str, str] = {}

    def keep(node: onnx.NodeProto, reason: str) -> None:
        reasons.setdefault(node.name, reason)

    for node in index.nodes:
        if node.op_type in UNSAFE_OPS or is_quantized_op(node.op_type):
            keep(node, "no safe float16 form")
        elif node.name in exclude_nodes or node.op_type in exclude_op_types:
            keep(node, "excluded")
    overflowing = _overflowing_weights(index)
    for name, peak in overflowing:
        for node, _ in index.consumers.get(name, []):
            keep(node, f"weight {name} reaches {peak:.4g}, beyond float16's {FLOAT16_MAX:g}")
    checked = None
    if table is not None:
        checked = 0
        for name, stats in sorted(table.stats.items()):
            if not index.is_float(name):
                continue
            checked += 1
            peak = max(abs(stats.minimum), abs(stats.maximum))
            if peak <= RANGE_LIMIT:
                continue
            reason = f"{name} reached {peak:.4g} in calibration (float16 safe up to {RANGE_LIMIT:g})"
            if name in index.producer:
                keep(index.producer[name], reason)
            for node, _ in index.consumers.get(name, []):
                keep(node, reason)
    for name in subgraph_inputs(model):
        if name in index.producer:
            keep(index.producer[name], "its output is read inside a subgraph")
    kept = tuple(KeptFloat32(n.name, n.op_type, reasons[n.name]) for n in index.nodes if n.name in reasons)
    return Float16Plan(kept, checked, tuple(overflowing))


def _overflowing_weights(index: GraphIndex) -> list[tuple[str, float]]:
    found = []
    for name, init in index.initializers.items():
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        peak = float(np.max(np.abs(values))) if values.size else 0.0
        if peak > FLOAT16_MAX:
            found.append((name, peak))
    return found


def int8_float32_nodes(model: onnx.ModelProto, quantized: set[str]) -> set[str]:
    """For --fallback fp16 on a QDQ model: the nodes that stay float32. Quantized nodes (their Q/DQ
    patterns must stay whole for onnxruntime's integer kernels), Q/DQ and every op `plan` keeps float32;
    the rest, the layers left float, run in float16. model: the QDQ model, shape-inferred, nodes named."""
    kept = {k.node for k in plan(model, None).kept}
    return kept | {n.name for n in model.graph.node if n.name in quantized}
