"""Ranges and params of activations: the configured method over each tensor's histogram, measured after
the elementwise function its consumers apply (SiLU, Sigmoid, HardSwish, HardSigmoid) where there is one,
and never reaching past where that function saturates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quantkit.config import ActivationType, CalibMethod, ConvertConfig
from quantkit.graph.augment import COMPUTE_OPS, clip_top, clips_at_zero, hard_params
from quantkit.graph.query import SELECTING_OPS, GraphIndex
from quantkit.planner.moving import MOVING_OPS, moved_consumers, moves_to_output
from quantkit.planner.patterns import scale_factor
from quantkit.qmath.params import asymmetric_params, symmetric_params
from quantkit.qmath.range_math import (
    Transform,
    entropy_range,
    hard_sigmoid,
    minmax_range,
    mse_range,
    percentile_range,
    sigmoid,
    silu,
    without_zeros,
)
from quantkit.results import QuantParams, TensorStats

# Ops whose output is bounded by construction: no outlier can blow their range up, and the top of it is
# what matters (detection scores, attention peaks). Clipping it cost YOLOX-Nano every detection with
# --method entropy (its score Sigmoids were cut at 0.16-0.25), so they keep the observed range.
BOUNDED_OPS = frozenset({"Sigmoid", "Softmax"})


def select_range(
    stats: TensorStats,
    config: ConvertConfig,
    transform: Transform | None = None,
    bounded: bool = False,
    live: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float]:
    """The range to quantize a tensor with, by the configured method; always contains 0.

    transform: the elementwise function all consumers apply (MSE measures the error after it).
    bounded: the producer's output is bounded by construction (BOUNDED_OPS): keep the observed range.
    live: (a, b) outside which the consumers' outputs no longer change (saturated_outside): the range
    reaches no further, whatever the method (exact: a value past a bound reads as the bound)."""
    lo, hi = _by_method(stats, config, transform, bounded)
    return max(lo, min(live[0], 0.0)), min(hi, max(live[1], 0.0))


def _by_method(
    stats: TensorStats, config: ConvertConfig, transform: Transform | None, bounded: bool
) -> tuple[float, float]:
    method, dtype = config.method, config.activations.value
    if bounded or method is CalibMethod.minmax or stats.hist_hi <= stats.hist_lo:
        return minmax_range(stats.minimum, stats.maximum)
    if method is CalibMethod.percentile:
        return percentile_range(stats.hist, stats.hist_lo, stats.hist_hi, config.percentile)
    if method is CalibMethod.entropy:
        counts = without_zeros(stats.hist, stats.hist_lo, stats.hist_hi, stats.zeros)
        return entropy_range(counts, stats.hist_lo, stats.hist_hi, dtype)
    return mse_range(stats.hist, stats.hist_lo, stats.hist_hi, dtype, transform=transform)


def range_stats(index: GraphIndex, stats: Mapping[str, TensorStats], name: str) -> TensorStats:
    """The statistics a tensor's range is chosen on: its own, or where a MaxPool is its only reader
    (directly or through a Relu that is), the pool's output's (where the table has them). The pool
    passes on each window's largest value, and its output shares the tensor's params: what its readers
    see is the top of the tensor's histogram, which MSE on the whole of it clips as if it were rare. A
    PyPI text-line reader (CTC, 7 Conv-ReLU-MaxPool stages) kept 112.6 of a ReLU reaching 153 (every
    line's peak above it, 99.9 % of its values below 66): 23.1 dB on lines of their own width; chosen on
    the pools' outputs, 25.4 dB (and 30.7 -> 33.2 dB on padded lines). Values below the pool's output
    minimum never win a window: clipping them is exact."""
    tensor = name
    for _ in range(2):  # through a Relu folded into the range
        readers = index.consumers.get(tensor, [])
        if len(readers) != 1 or tensor in index.graph_outputs:
            break
        reader = readers[0][0]
        if reader.op_type == "MaxPool":
            pooled = stats.get(reader.output[0])
            return stats[name] if pooled is None else pooled
        if reader.op_type != "Relu":
            break
        tensor = reader.output[0]
    return stats[name]


def capped(lo: float, hi: float, stats: TensorStats) -> tuple[float, float]:
    """[lo, hi] with each end no further out than the mean over the calibration images of each image's
    extreme on that side (where the table has them), still containing 0.

    A range from the pooled values of every image is set by the few images with the largest outliers
    (residual sums, a handful of channels); the typical image's extremes are what the range serves. NNCF's
    default activation ranges are these means (MEAN_MINMAX); here they only ever narrow the MSE range.
    Whether that helps is the model's: on MobileNetV2 +4.2 dB on the calibration samples (+3.0 dB on 500
    held-out imagenet-dev photos), on SqueezeNet 1.1 -10 dB (its last activations before the global pool
    carry the class peaks), so convert keeps it only where it measures better (planner.corrections_choice).
    """
    if stats.image_min_mean is None or stats.image_max_mean is None:
        return lo, hi
    return max(lo, min(stats.image_min_mean, 0.0)), min(hi, max(stats.image_max_mean, 0.0))


def capped_share(lo: float, hi: float, stats: TensorStats) -> tuple[float, float]:
    """[lo, hi] (the range of a rescaled copy of the tensor of `stats`, such as X / s) narrowed by the
    share of the tensor's own extremes that `capped` keeps on each side: the images' mean extreme over
    the pooled one. A rebalanced tensor's per-image extremes are not in the table; this carries its
    source's over. Without it rebalancing gave up the cap: MobileNetV2 (100 coco photos, --prefer
    accuracy) measured no gain and kept none; with it 24.8 against 23.1 dB on the calibration samples,
    23.2 against 21.8 dB on 500 held-out imagenet-dev photos."""
    if stats.image_min_mean is None or stats.image_max_mean is None:
        return lo, hi
    if stats.maximum > 0.0:
        hi *= min(1.0, max(stats.image_max_mean, 0.0) / stats.maximum)
    if stats.minimum < 0.0:
        lo *= min(1.0, min(stats.image_min_mean, 0.0) / stats.minimum)
    return lo, hi


def caps(config: ConvertConfig) -> bool:
    """Whether activation ranges are capped at the images' mean extremes (--method mse, --range-cap on)."""
    return config.range_cap and config.method is CalibMethod.mse


def activation_params(lo: float, hi: float, activations: ActivationType) -> QuantParams:
    if activations is ActivationType.uint8:
        scale, zero_point = asymmetric_params(lo, hi, "uint8")
        return QuantParams(np.asarray(scale, np.float32), np.asarray(zero_point, np.uint8))
    scale_arr = symmetric_params(max(abs(lo), abs(hi)), 127)
    return QuantParams(np.asarray(scale_arr, np.float32), np.asarray(0, np.int8))


def is_bounded(index: GraphIndex, name: str) -> bool:
    """Whether `name` is the output of a BOUNDED_OPS node, other than a SiLU's gate (the SiLU's Mul is
    quantized after it, and clipping the gate measured 0.9 dB better on YOLOX-Nano), or a Relu / Clip(0, c)
    of one: folded into the Q, the clip's output is the tensor quantized (hunt53 A1: a TFLite SSD's
    Sigmoid -> Relu class scores, chosen by MSE, topped at 0.485, and no detection reached 0.5)."""
    producer = index.producer.get(name)
    if producer is not None and clips_at_zero(index, producer):
        return is_bounded(index, producer.input[0])
    if producer is None or producer.op_type not in BOUNDED_OPS:
        return False
    return consumer_transform(index, producer.input[0]) is not silu


def consumer_transform(index: GraphIndex, name: str) -> Transform | None:
    """The elementwise function that every consumer of `name` applies to it, where one is known:
    SiLU (x * Sigmoid(x), as exporters write it), Sigmoid, HardSwish or HardSigmoid. None otherwise."""
    consumers = index.consumers.get(name, [])
    if not consumers or name in index.graph_outputs:
        return None
    hard = hard_consumer(index, name)
    if hard is not None:
        return hard.transform()
    sigmoids = [n for n, _ in consumers if n.op_type == "Sigmoid"]
    if len(sigmoids) != 1:
        return None
    gate = sigmoids[0].output[0]
    others = [n for n, _ in consumers if n is not sigmoids[0]]
    if not others:
        return sigmoid
    is_silu = len(others) == 1 and others[0].op_type == "Mul" and set(others[0].input) == {name, gate}
    if is_silu and len(index.consumers.get(gate, [])) == 1:
        return silu
    return None


PROBABILITY_OPS = frozenset({"Sigmoid", "Softmax", "LogSoftmax"})


def becomes_probability(index: GraphIndex, name: str) -> bool:
    """Whether values of `name` reach a Sigmoid, Softmax or LogSoftmax (not a SiLU's gate) through ops
    that only move them: a detector's class and objectness logits, concatenated with its boxes and
    reshaped first (YOLOv8, YOLOX). Their rare large values are the detections: --range-cap must not
    clip them to the typical image's extreme. PyPI's YOLOv8 DocLayNet detector had its class logits'
    mean image maximum at -1.9 (most anchors of most pages see nothing): capped at 0, no score passed 0.5
    and all 18 of FP32's detections above it were lost, at 32.5 dB output SQNR dominated by the boxes."""
    return any(_squashes(index, node, tensor) for node, tensor in moved_consumers(index, name))


def _squashes(index: GraphIndex, node: onnx.NodeProto, tensor: str) -> bool:
    """Whether `node` turns `tensor` into probabilities (not a SiLU's gate)."""
    return node.op_type in PROBABILITY_OPS and consumer_transform(index, tensor) is not silu


def scored_output(index: GraphIndex, name: str) -> bool:
    """Whether values of `name` reach, through ops that only move them, a Sigmoid or Softmax whose own
    values reach a model output the same way: scores a threshold reads. A squeeze-excitation gate (a
    Sigmoid into a Mul), an attention Softmax or a box head's DFL (a Softmax into a Conv) is none."""
    return any(
        _squashes(index, node, tensor) and moves_to_output(index, node.output[0])
        for node, tensor in moved_consumers(index, name)
    )


# a Sigmoid's logits that become scores keep at least the logit of this score in range: calibration photos
# rarely hold a detector's surest objects (a pet SSD calibrated on 32 COCO photos topped its logits at
# 1.17, every score above 0.764 lost, 13 of 13 pet photos above 0.8)
SURE_SCORE = 0.99
SURE_LOGIT = math.log(SURE_SCORE / (1.0 - SURE_SCORE))


def score_logit_top(index: GraphIndex, name: str) -> float | None:
    """Where `name` holds logits whose probabilities (a Sigmoid's or Softmax's, not a gate's, reached
    through ops that only move values) reach a model output or a TopK / NonMaxSuppression through ops that
    only move values or a Relu / Clip (scores a threshold or a selection reads, not an excitation or
    attention gate, whose logits MSE may clip): the least top its range keeps, SURE_LOGIT where a Sigmoid
    reads them, else -inf. None where they become no such scores."""
    squashing = {
        node.op_type
        for node, tensor in moved_consumers(index, name)
        if _squashes(index, node, tensor) and _reaches_scores_end(index, node.output[0])
    }
    if not squashing:
        return None
    return SURE_LOGIT if "Sigmoid" in squashing else -math.inf


SCORE_PATH_OPS = MOVING_OPS | {"Relu", "Clip"}  # a probability stays a score through them


def score_bound(index: GraphIndex, name: str) -> float | None:
    """The largest value `name` can hold where it holds scores a threshold or a selection reads: a
    Sigmoid's or Softmax's probabilities (not a gate), or those clipped at zero (Clip(0, c): at most c),
    that reach a model output or a TopK / NonMaxSuppression; None otherwise. Its range spans
    that bound, not the calibration maximum: a TFLite SSD's Sigmoid -> Relu scores topped at the 32
    photos' 0.764, and of the 23 pet photos FP32 scores above 0.7, INT8 kept 6 (none of 13 above 0.8)."""
    bound, tensor = 1.0, name
    while (node := index.producer.get(tensor)) is not None and node.op_type in ("Relu", "Clip"):
        if not clips_at_zero(index, node):
            return None
        bound, tensor = min(bound, clip_top(index, node)), node.input[0]
    if (
        node is None
        or node.op_type not in ("Sigmoid", "Softmax")
        or not _squashes(index, node, node.input[0])
    ):
        return None
    return bound if _reaches_scores_end(index, name) else None


def _reaches_scores_end(index: GraphIndex, name: str) -> bool:
    """`name` is a model output, or reaches one or a TopK / NonMaxSuppression through SCORE_PATH_OPS."""
    return name in index.graph_outputs or any(
        node.op_type in SELECTING_OPS
        or (node.op_type in SCORE_PATH_OPS and any(o in index.graph_outputs for o in node.output))
        for node, _ in moved_consumers(index, name, SCORE_PATH_OPS)
    )


def score_tensors(index: GraphIndex) -> set[str]:
    """The outputs of Conv / Gemm / MatMul layers whose values become scores (scored_output), and the
    tensors the moving ops carry them through to their Sigmoid or Softmax: a detector's class logits,
    concatenated per level with its box logits, reshaped, concatenated and split before their Sigmoid
    (YOLOv8). One uint8 scale over such a head's logits left its class scores 42 distinct
    values: every FP32 score in (0.33, 0.35] became 0.354, and at the package's 0.35 threshold a YOLOv8
    detector (PyPI clashroyalebuildabot) found 207 boxes where FP32 found 144; in float, 175, all 144 of
    FP32's among them, at the same speed. A layer whose logits are split from the scores' only after a
    Concat counts as theirs (scored_output does not follow a Split's parts one by one)."""
    found: set[str] = set()
    for node in index.nodes:
        out = node.output[0] if node.op_type in COMPUTE_OPS and node.output else ""
        if not out or out in found or not scored_output(index, out):
            continue
        todo = [out]
        found.add(out)
        while todo:
            for consumer, _ in index.consumers.get(todo.pop(), []):
                if consumer.op_type in MOVING_OPS:
                    fresh = [o for o in consumer.output if o and o not in found and scored_output(index, o)]
                    found.update(fresh)
                    todo.extend(fresh)
    return found


def saturated_outside(index: GraphIndex, name: str) -> tuple[float, float]:
    """(a, b): where every consumer of `name` is a hard activation (hard_consumer), its output is the
    same for every x <= a (and every x >= b): hard-swish is 0 below -beta / alpha (-3), HardSigmoid 0 below
    it and 1 above (1 - beta) / alpha. A range of `name` need not reach past them: PP-LCNet's
    pre-activations reach -33 where HardSwish reads everything below -3 as 0, and a uint8 range over
    [-33, 25] gave more than half its steps to values that all become 0. (-inf, inf) otherwise."""
    hard = hard_consumer(index, name)
    if hard is None or hard.alpha <= 0.0:
        return -math.inf, math.inf
    low = -hard.beta / hard.alpha
    return (low, math.inf) if hard.gated else (low, (1.0 - hard.beta) / hard.alpha)


@dataclass(frozen=True)
class HardActivation:
    """HardSigmoid(x) = clip(alpha x + beta, 0, 1), or with gated, hard-swish x * HardSigmoid(x)."""

    gated: bool
    alpha: float
    beta: float

    def transform(self) -> Transform:
        gate = hard_sigmoid(self.alpha, self.beta)
        return (lambda x: x * gate(x)) if self.gated else gate


def hard_consumer(index: GraphIndex, name: str) -> HardActivation | None:
    """The hard activation that every consumer of `name` together computes, where they do: one HardSwish,
    one HardSigmoid, or a HardSigmoid and a Mul of `name` by its output (hard-swish as Paddle2ONNX and
    PyTorch before opset 14 export it)."""
    uses = index.consumers.get(name, [])
    if name in index.graph_outputs or not uses or len(uses) > 2:
        return None
    hard = [node for node, position in uses if node.op_type in ("HardSwish", "HardSigmoid") and position == 0]
    if len(hard) != 1:
        return _written_out_swish(index, name) if len(uses) == 2 else None
    node = hard[0]
    alpha, beta = hard_params(node)
    if len(uses) == 1:
        return HardActivation(node.op_type == "HardSwish", alpha, beta)
    mul = next(n for n, _ in uses if n is not node)
    gate = node.output[0]
    if node.op_type != "HardSigmoid" or mul.op_type != "Mul" or set(mul.input) != {name, gate}:
        return None
    return HardActivation(True, alpha, beta) if len(index.consumers.get(gate, [])) == 1 else None


def _written_out_swish(index: GraphIndex, name: str) -> HardActivation | None:
    """x * Clip(x + k, 0, h), scaled by positive constants before or after the Mul, as PyTorch before
    opset 14 and Paddle2ONNX write hard-swish (k 3, h 6; PicoDet has 94 of them): `name` read by an Add
    of a positive scalar k, whose Clip(0, h) alone reads it, and by a Mul with what that Clip's output
    becomes through Mul / Div by positive scalars. It is x * HardSigmoid(x) with alpha 1/h, beta k/h (the
    scalings change no range choice); 0 for every x <= -k."""
    uses = index.consumers.get(name, [])
    adds = [node for node, _ in uses if node.op_type == "Add"]
    muls = [node for node, _ in uses if node.op_type == "Mul"]
    if len(adds) != 1 or len(muls) != 1:
        return None
    add, mul = adds[0], muls[0]
    k = _scalar(index, next((t for t in add.input if t != name), ""))
    clip = _sole_reader(index, add.output[0])
    if k is None or k <= 0.0 or clip is None or clip.op_type != "Clip" or not clips_at_zero(index, clip):
        return None
    h = _scalar(index, clip.input[2]) if len(clip.input) > 2 and clip.input[2] else None
    if h is None or h <= 0.0:
        return None
    gate = clip.output[0]
    for _ in range(2):  # Clip -> (Mul | Div by a positive scalar)* -> Mul(x, gate)
        if gate in mul.input:
            break
        node = _sole_reader(index, gate)
        if node is None or scale_factor(index, node) is None:
            return None
        gate = node.output[0]
    if sorted(mul.input) != sorted([name, gate]):
        return None
    return HardActivation(True, 1.0 / h, k / h)


def _scalar(index: GraphIndex, name: str) -> float | None:
    value = index.constant(name) if name else None
    return float(value.reshape(())) if value is not None and value.size == 1 else None


def _sole_reader(index: GraphIndex, name: str) -> onnx.NodeProto | None:
    uses = index.consumers.get(name, [])
    return uses[0][0] if len(uses) == 1 and name not in index.graph_outputs else None
