"""How a fallback round screens layers: on how many of the table's samples (as many as a budget of
multiply-adds allows; planner.fallback ranks layers on them, then measures its finalists on every sample),
and which layers (screen_layers: groups of consecutive layers first where many remain)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
import onnx

from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.query import GraphIndex
from quantkit.planner.fallback_choice import best_finite
from quantkit.results import CalibrationTable, feed_rows

# Multiply-adds one screening trial may run: about what building its model costs (0.2-0.3 s on a 2-core
# AVX2 machine). 8 samples of MobileNetV2 (0.3 G each) or YOLOX-Nano (0.5 G) fit; of a 640x640 text
# detector (2.3 G) 2 do.
SCREEN_MACS = 5e9
MIN_SCREEN_RUNS = 2  # a single sample ranks layers by what that one image happens to show
UNGROUPED_LAYERS = 20  # up to this many layers left, a round measures each alone (no groups)
# Groups whose layers a round measures one by one, best first: the first round's choice (often one layer
# that dominates) matters most; later rounds refine by tenths of a dB.
FIRST_ROUND_GROUPS = 2
LATER_ROUND_GROUPS = 1


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


def group_size(layers: int) -> int:
    """How many consecutive layers screen_layers keeps float together, of `layers` left: ceil(sqrt(n))."""
    return math.isqrt(max(layers - 1, 0)) + 1


class Screens(Protocol):
    """What screen_layers measures with: Trials, or the float16 fallback's trials (pipeline.run_fp16)."""

    def screen_all(self, keeps: Sequence[Iterable[str]]) -> list[float]: ...


def screen_layers(
    trials: Screens,
    kept: list[str],
    remaining: list[str],
    floor: float,
    expand: int,
    progress: Callable[[int], None] | None,
) -> dict[str, float]:
    """Remaining layer -> screening SQNR with it float on top of `kept`, for the layers worth measuring:
    every one when few remain; else those of the `expand` best groups of ceil(sqrt(n))
    consecutive layers that beat `floor` (kept's own SQNR), best first, stopping at a group that does not
    beat the best finite layer found (it would have to hold a better one; an FP32 copy sets no bar:
    planner.fallback_choice)."""
    advance = progress if progress is not None else (lambda _: None)
    if len(remaining) <= UNGROUPED_LAYERS:
        found = dict(zip(remaining, trials.screen_all([[*kept, n] for n in remaining]), strict=True))
        advance(len(remaining))
        return found
    size = group_size(len(remaining))
    groups = [remaining[i : i + size] for i in range(0, len(remaining), size)]
    scores = trials.screen_all([[*kept, *group] for group in groups])
    # groups holding an FP32 copy (inf) after the others: they took every slot, and the group whose layer
    # reached the target alone was never screened (review54 M4)
    order = sorted(range(len(groups)), key=lambda i: (math.isinf(scores[i]), -scores[i], i))
    chosen = order[:expand]
    left = sum(len(groups[i]) for i in chosen)  # settled once their group is measured or passed over
    advance(len(remaining) - left)
    found = {}
    for i in chosen:
        if scores[i] <= floor or (found and scores[i] <= best_finite(found)):
            break
        found.update(zip(groups[i], trials.screen_all([[*kept, n] for n in groups[i]]), strict=True))
        advance(len(groups[i]))
        left -= len(groups[i])
    advance(left)
    return found
