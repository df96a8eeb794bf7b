"""--target tensorrt: shift a one-sided activation onto TensorRT's symmetric int8 grid.

TensorRT's Q/DQ are int8 with zero point 0: a tensor on [lo, hi] gets the scale max(|lo|, |hi|) / 127, so
a ReLU output on [0, hi] uses 128 of the 256 levels and a SiLU or GELU output on [-0.28, hi] about as
many: one bit of that tensor's resolution, which onnxruntime's uint8 zero point keeps. Where every reader
of such a tensor x is linear in each value it reads and adds a constant after (a Conv without padding, a
Gemm, a MatMul followed by its bias Add: graph.shift_rewrite.absorber) the bit is bought back exactly: the
model quantizes x + c, c about -(lo + hi) / 2 (a whole number of steps: `grid`), whose range is symmetric
(scale about (hi - lo) / 254), and each reader's bias absorbs the shift (c times its dequantized weight
summed over the input axis). A padded Conv reads its zeros as zeros, not as c, so its input keeps the
plain symmetric grid. graph.shift_rewrite writes the Add after the activation a layer ends with (up
through a MaxPool or Concat, where TensorRT fuses pointwise ops) and the biases.

Measured (100 coco-calib photos; held out: 500 imagenet-dev photos, `quantkit compare`; ort-cpu's
defaults in brackets): SqueezeNet 1.1 35.12 -> 35.65 dB with 24 of 26 layers int8 instead of 23 (35.67);
MobileNetV2 22.65 -> 23.11 dB with 52 of 53 int8 instead of 48 (24.69); YOLOX-Nano 13.91 -> 15.91 dB on
200 imagenet-dev photos, 110 of 113 int8 (20.98, 43 int8); vit_mnist (its GELU outputs, read by MatMuls
with a bias Add) 33.38 dB with its head float -> 33.65 dB with every layer int8 on 1000 mnist-test digits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from quantkit.graph.query import GraphIndex
from quantkit.graph.shift_rewrite import absorber
from quantkit.results import QuantParams, QuantPlan

# shifted only where the symmetric grid wastes this share of the range or more: 2 max(|lo|, |hi|) /
# (hi - lo) >= 1.25, about 2 dB of the tensor's noise (a ReLU output: 2, 6 dB)
MIN_GAIN = 1.25


def shifted(plan: QuantPlan, index: GraphIndex) -> QuantPlan:
    """The TensorRT int8 plan with plan.shifts set (module docstring): its one-sided activations whose
    every reader can absorb the shift (graph.shift_rewrite.absorber), their params on the shifted grid."""
    if plan.fp8 or not plan.float_bias or plan.folds:  # float biases (TensorRT's) absorb the shift
        return plan
    weighted = {w.node for w in plan.weights if w.kind == "weight"}
    shifts: dict[str, float] = {}
    activations = dict(plan.activations)
    for tensor, params in sorted(plan.activations.items()):
        lo_hi = _range(plan, tensor, params)
        if lo_hi is None or not shiftable(index, plan.quantized_nodes, tensor, weighted):
            continue
        lo, hi = lo_hi
        if not one_sided(lo, hi):
            continue
        shift, scale = grid(lo, hi)
        shifts[tensor] = shift
        activations[tensor] = QuantParams(np.asarray(scale, np.float32), np.asarray(0, np.int8))
    if not shifts:
        return plan
    return dataclasses.replace(plan, activations=activations, shifts=shifts)


def _range(plan: QuantPlan, tensor: str, params: QuantParams) -> tuple[float, float] | None:
    """[lo, hi] that the symmetric int8 params of `tensor` cover: its recorded range. None: not per-tensor
    int8 at zero point 0, rebalanced (X / s: its range is not the one recorded, and core._shifted_instead
    keeps what it would shift out of rebalancing), or not known."""
    per_tensor = params.axis is None and params.scale.size == 1
    lo_hi = plan.ranges.get(tensor)
    rebalanced = any(r.tensor == tensor for r in plan.rebalances)
    if params.dtype != np.int8 or not per_tensor or params.zero_point.any() or lo_hi is None or rebalanced:
        return None
    recorded = max(abs(lo_hi[0]), abs(lo_hi[1]))
    absmax = 127.0 * float(params.scale)
    return lo_hi if recorded > 0.0 and bool(np.isclose(absmax, recorded, rtol=1e-5)) else None


def grid(lo: float, hi: float) -> tuple[float, float]:
    """(c, scale) for [lo, hi] shifted: c a whole number m of steps, so that x = 0 (every ReLU zero, most
    of a ReLU output) lands on a grid point as under a uint8 zero point (m = -127 for [0, hi]). c is a
    float16 value where it fits (--fallback fp16 may run the Add in float16: the biases absorb the very
    value it adds, review52 L1) and the scale c / m: 127 steps still cover [lo + c, hi + c] to half a step,
    as uint8's nudged zero point does. The centre -(lo + hi) / 2 rounded to float16 alone put every zero
    off the grid, a bias the weights' correction does not see: SqueezeNet 1.1 30.3 dB on the calibration
    samples with bias correction against 31.8 at the exact centre; on the grid 32.7 against 32.4 with
    compensated rounding, vit_mnist 35.9 against 25.5 with every layer int8."""
    step = (hi - lo) / 254.0
    if lo > 0.0 or hi < 0.0:  # no zero to keep exact: the centre, and a scale that covers the range
        shift = _half(-(lo + hi) / 2.0)
        return shift, max(abs(lo + shift), abs(hi + shift)) / 127.0
    m = int(np.clip(round(-(lo + hi) / 2.0 / step), -127, 127))
    shift = _half(m * step)
    return shift, (shift / m if m else step)


def _half(value: float) -> float:
    """`value` rounded to float16 where it fits (a float16 Add adds exactly that)."""
    return float(np.float16(value)) if abs(value) < float(np.finfo(np.float16).max) else value


def one_sided(lo: float, hi: float) -> bool:
    """Whether the symmetric grid wastes enough of [lo, hi] for a shift to pay (MIN_GAIN)."""
    return hi > lo and 2.0 * max(abs(lo), abs(hi)) >= MIN_GAIN * (hi - lo)


def shiftable(index: GraphIndex, quantized: Mapping[str, str], tensor: str, weighted: set[str]) -> bool:
    """`tensor` is written by a node the rewrite leaves as it is (no rewritten HardSigmoid) and read only,
    as the data input, by quantized layers (`weighted`: the nodes whose weight is quantized) that can
    absorb a shift (graph.shift_rewrite.absorber); not a model output, nor read by an If/Loop/Scan body
    (hq60 B: the rewrite renames it, and a branch reading it from the outer scope lost it)."""
    producer = index.producer.get(tensor)
    if producer is None or tensor in index.graph_outputs or index.is_constant(tensor):
        return False
    if tensor in index.captured:
        return False
    if quantized.get(producer.name) in ("HardSigmoid", "HardSwish"):
        return False
    readers = index.consumers.get(tensor, [])
    return bool(readers) and all(
        node.name in weighted and absorber(index, node, position) for node, position in readers
    )
