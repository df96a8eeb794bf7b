"""How many of the table's samples a fallback trial is screened on: as many as a budget of multiply-adds
allows (planner.fallback ranks layers on them, then measures its finalists on every sample)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.query import GraphIndex
from quantkit.results import CalibrationTable, feed_rows

# Multiply-adds one screening trial may run: about what building its model costs (0.2-0.3 s on a 2-core
# AVX2 machine). 8 samples of MobileNetV2 (0.3 G each) or YOLOX-Nano (0.5 G) fit; of a 640x640 text
# detector (2.3 G) 2 do.
SCREEN_MACS = 5e9
MIN_SCREEN_RUNS = 2  # a single sample ranks layers by what that one image happens to show


def screening_runs(model: onnx.ModelProto, table: CalibrationTable, reference: Sequence[object]) -> int:
    """How many of the reference's runs a screening trial measures: as many as SCREEN_MACS allows, at
    least MIN_SCREEN_RUNS; all of them for a model of fixed batch (a run is several samples) or one whose
    cost the table does not tell. Deterministic: the same inputs screen on the same samples."""
    total = len(reference)
    macs = macs_per_sample(model, table)
    if table.samples is None or feed_rows(table.samples) != total or macs is None or macs <= 0:
        return total
    return min(total, max(MIN_SCREEN_RUNS, int(SCREEN_MACS // macs)))


def macs_per_sample(model: onnx.ModelProto, table: CalibrationTable) -> float | None:
    """Multiply-adds of the linear layers with constant weights for one sample, from the element counts
    of their outputs in the table (whatever size the model ran at); None without a count of samples."""
    seen = table.samples_seen
    if not seen:
        return None
    index, total = GraphIndex(model), 0.0
    for node in model.graph.node:
        stats = table.stats.get(node.output[0]) if node.output else None
        weight = (
            index.constant(node.input[1]) if node.op_type in COMPUTE_OPS and len(node.input) > 1 else None
        )
        if weight is not None and stats is not None and weight.ndim >= 1:
            total += _reduction(node, weight, index) * float(stats.count)
    return total / seen


def _reduction(node: onnx.NodeProto, weight: np.ndarray, index: GraphIndex) -> float:
    """Multiply-adds per output element (about, for ConvTranspose: its stride spreads them)."""
    shape = weight.shape
    if node.op_type == "Conv":
        return float(np.prod(shape[1:]))
    if node.op_type == "ConvTranspose":
        group = index.attribute(node, "group", 1)
        return float(shape[0] * np.prod(shape[2:])) / float(group if isinstance(group, int) and group else 1)
    if node.op_type == "Gemm" and index.attribute(node, "transB", 0):
        return float(shape[-1])
    return float(shape[-2] if weight.ndim >= 2 else shape[0])
