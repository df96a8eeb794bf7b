"""What compensated rounding may spend on its second moments, and how it keeps within that.

A layer's moment costs rows x G x K^2 multiply-adds (rows: the output positions taken of each sample, a
Conv's capped at MAX_POSITIONS per image; G groups of K input columns), summed over the samples. Most
models cost little: MobileNetV2, SqueezeNet 1.1 and YOLOX-Nano 6-8 G for the table's 8 samples,
PP-OCRv4's text detector at 640x640 143 G. A U-Net at full resolution costs far more: U^2-Net-p at
320x320 (4.6 MB) 608 G, 36 s a solve of its 193 s INT8 convert on this 2-core machine, most of it in the
128-channel decoder layers at 320x320 (K = 1152). Above MOMENT_MACS, the Convs' positions are thinned
(every s-th row and column of their output grid, down to MIN_POSITIONS an image); where that is not
enough, the costliest layers round to nearest until the rest fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quantkit.graph.augment import declared_dims, tensor_bytes, with_sample_shapes
from quantkit.graph.query import GraphIndex
from quantkit.qmath.rounding import MAX_POSITIONS, position_spacing
from quantkit.results import Feed, feed_shapes

MOMENT_MACS = 2e11  # multiply-adds of every layer's moment over all the samples, at most
MIN_POSITIONS = 32 * 32  # a Conv's output positions taken per image, at least (where it has as many)


@dataclass(frozen=True)
class MomentCost:
    """One layer's moment, per sample: `width` = G x K^2 multiply-adds per row; grid: a Conv's output
    [Ho, Wo] (None: not known, counted at the cap); rows: a Gemm/MatMul's rows (None: a Conv);
    input_bytes: its input's float32 bytes (None: not known), which a run outputs to read its rows."""

    width: int
    grid: tuple[int, int] | None = None
    rows: int | None = None
    input_bytes: int | None = None

    def macs(self, most: int) -> float:
        """Multiply-adds per sample with at most `most` positions of a Conv's grid per image."""
        if self.rows is not None:
            return float(self.rows) * self.width
        if self.grid is None:
            return float(most) * self.width
        height, width = self.grid
        spacing = position_spacing(height * width, most)
        return float(math.ceil(height / spacing) * math.ceil(width / spacing)) * self.width


def costs(
    model: onnx.ModelProto, layers: Mapping[str, tuple[int, int]], samples: Feed
) -> dict[str, MomentCost]:
    """layers: node name -> (groups, columns) -> each one's MomentCost at the samples' size (shapes
    inferred with the graph inputs fixed to one sample's)."""
    index = GraphIndex(model)
    inputs = index.graph_inputs
    fixed = with_sample_shapes(model, feed_shapes(samples, inputs[0] if inputs else ""))
    dims = declared_dims(fixed)
    read = tensor_bytes(fixed, [index.by_name[name].input[0] for name in layers])
    found = {}
    for name, (groups, columns) in layers.items():
        node = index.by_name[name]
        width, size = groups * columns * columns, read[node.input[0]]
        if node.op_type == "Conv":
            out = dims.get(node.output[0], [])
            known = len(out) == 4 and out[2] > 0 and out[3] > 0
            found[name] = MomentCost(width, (out[2], out[3]) if known else None, input_bytes=size)
        else:
            shape = dims.get(node.input[0], [])
            rows = (
                int(np.prod(shape[1:-1], dtype=np.int64)) if shape and all(d > 0 for d in shape[1:-1]) else 1
            )
            found[name] = MomentCost(width, rows=rows, input_bytes=size)
    return found


def within(
    costs: Mapping[str, MomentCost], samples: int, budget: float = MOMENT_MACS
) -> tuple[int, set[str]]:
    """(the positions a Conv takes per image at most, the layers left to round to nearest) that keep the
    moments of `samples` samples within `budget` multiply-adds: MAX_POSITIONS and none where they fit."""

    def total(most: int, skipped: set[str]) -> float:
        return samples * sum(c.macs(most) for name, c in costs.items() if name not in skipped)

    most = MAX_POSITIONS
    while total(most, set()) > budget and most > MIN_POSITIONS:
        most //= 2
    skipped: set[str] = set()
    for name in sorted(costs, key=lambda n: (-costs[n].macs(most), n)):
        if total(most, skipped) <= budget:
            break
        skipped.add(name)
    return most, skipped
