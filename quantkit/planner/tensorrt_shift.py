"""--target tensorrt: shift a one-sided activation onto TensorRT's symmetric int8 grid.

TensorRT's Q/DQ are int8 with zero point 0: a tensor on [lo, hi] gets the scale max(|lo|, |hi|) / 127, so
a ReLU output on [0, hi] uses 128 of the 256 levels and a SiLU or GELU output on [-0.28, hi] about as
many: one bit of that tensor's resolution, which onnxruntime's uint8 zero point keeps. Where every reader
of such a tensor x is linear in each value it reads and adds a constant after (a Conv without padding, a
Gemm, a MatMul followed by its bias Add: graph.shift_rewrite.absorber) the bit is bought back exactly: the
model quantizes x + c with c = -(lo + hi) / 2, whose range [-(hi - lo) / 2, (hi - lo) / 2] is symmetric
(scale (hi - lo) / 254), and each reader's bias absorbs the shift (c times its dequantized weight summed
over the input axis). A padded Conv reads its zeros as zeros, not as c, so its input keeps the plain
symmetric grid. The Add of c runs in the precision of the ops before the Q (TensorRT's pointwise fusion);
graph.shift_rewrite writes it and the biases.

Measured (100 coco-calib photos; held out: 500 imagenet-dev photos, `quantkit compare`): SqueezeNet 1.1
35.12 -> 35.68 dB with 24 of 26 layers int8 instead of 23 (9 tensors shifted); MobileNetV2 22.65 -> 23.03 dB,
with 52 of 53 int8 instead of 48; YOLOX-Nano 13.9 -> 15.7 dB on 200 imagenet-dev photos; vit_mnist (its
GELU outputs, read by MatMuls with a bias Add) 33.4 -> 36.5 dB on 1000 mnist-test digits.
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
    every reader is a quantized Conv without padding, their params on the shifted range."""
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
        shifts[tensor] = -(lo + hi) / 2.0
        activations[tensor] = QuantParams(np.asarray((hi - lo) / 254.0, np.float32), np.asarray(0, np.int8))
    if not shifts:
        return plan
    return dataclasses.replace(plan, activations=activations, shifts=shifts)


def _range(plan: QuantPlan, tensor: str, params: QuantParams) -> tuple[float, float] | None:
    """[lo, hi] that the symmetric int8 params of `tensor` cover: its recorded range; for a tensor
    rebalanced into its writer (X / s, s > 0 per channel, planner.smoothquant_plan) whose recorded range
    (X's) is non-negative, [0, 127 scale]. None: not per-tensor int8 at zero point 0, or not known."""
    per_tensor = params.axis is None and params.scale.size == 1
    lo_hi = plan.ranges.get(tensor)
    if params.dtype != np.int8 or not per_tensor or params.zero_point.any() or lo_hi is None:
        return None
    absmax = 127.0 * float(params.scale)
    rebalanced = [r for r in plan.rebalances if r.tensor == tensor]
    if rebalanced:
        positive = all(bool((r.scales > 0).all()) for r in rebalanced)
        return (0.0, absmax) if positive and lo_hi[0] >= 0.0 else None
    recorded = max(abs(lo_hi[0]), abs(lo_hi[1]))
    return lo_hi if recorded > 0.0 and bool(np.isclose(absmax, recorded, rtol=1e-5)) else None


def one_sided(lo: float, hi: float) -> bool:
    """Whether the symmetric grid wastes enough of [lo, hi] for a shift to pay (MIN_GAIN)."""
    return hi > lo and 2.0 * max(abs(lo), abs(hi)) >= MIN_GAIN * (hi - lo)


def shiftable(index: GraphIndex, quantized: Mapping[str, str], tensor: str, weighted: set[str]) -> bool:
    """`tensor` is written by a node the rewrite leaves as it is (no rewritten HardSigmoid) and read only,
    as the data input, by quantized Convs (`weighted`: the nodes whose weight is quantized) without
    padding; not a model output."""
    producer = index.producer.get(tensor)
    if producer is None or tensor in index.graph_outputs or index.is_constant(tensor):
        return False
    if quantized.get(producer.name) in ("HardSigmoid", "HardSwish"):
        return False
    readers = index.consumers.get(tensor, [])
    return bool(readers) and all(
        node.name in weighted and absorber(index, node, position) for node, position in readers
    )
