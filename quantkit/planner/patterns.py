"""Activation patterns of modern backbones on the integer path (MobileNetV3, EfficientNet, YOLO, ViT).

onnxruntime has integer kernels for Add, Mul, Sigmoid, LeakyRelu and the pools, but none for HardSigmoid,
HardSwish or Div. Between two integer convolutions such an op would run as DQ -> float op -> Q: three
passes over float data. Two rules put these patterns on integer kernels instead, with Q/DQ semantics that
stay exact (the model computes what the float one does, up to the rounding of the quantized tensors):

1. Scale folds. A Mul or Div by a positive scalar constant k whose input is written by a quantized op (or
   a fold after one) and read by nothing else is removed: its input's writer writes the result directly,
   and the Q node divides by k in its scale. DQ(Q(v, s / k), s) = s * round(k v / s) is k v quantized
   with scale s, so `Clip(x + 3, 0, 6) / 6`, `* (1/6)`, `(x * relu6(x + 3)) / 6` and GELU's final `* 0.5`
   cost no kernel at all. Where the input is quantized but read by other nodes too (GELU's x / sqrt 2),
   the node becomes a second DequantizeLinear of the input's integers with scale k s (a scaled read).
2. Hard activations, uint8 only (the Q node's saturation at zero point 0 is the lower clip):
   HardSigmoid(x) = alpha * clip(x + beta / alpha, 0, 1 / alpha) becomes Add(x, beta / alpha) with its
   output quantized at scale s / alpha (QLinearAdd); HardSwish(x) = x * HardSigmoid(x) becomes that Add,
   a Q/DQ pair for the gate (its range derived from x's, no statistics needed) and Mul(x, gate)
   (QLinearMul). The rewrite is graph.qdq's; the decision and the params are made here.

The gate's upper clip is the Q node's saturation too, so its range never exceeds [0, 1].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from quantkit.config import ActivationType
from quantkit.graph.augment import HARD_OPS, SCALE_OPS, SHARED_SCALE_OPS, hard_params
from quantkit.graph.query import GraphIndex
from quantkit.planner.moving import output_reason

if TYPE_CHECKING:
    from quantkit.planner.planning_state import Planning

__all__ = [
    "HARD_OPS",
    "SCALE_OPS",
    "SCORE_REASON",
    "data_input",
    "scale_factor",
    "try_hard",
    "try_scale_fold",
    "writer",
]


# why range_plan.score_tensors' writers and movers stay float
SCORE_REASON = "its output becomes a probability (scores, box bins): kept float for a threshold's resolution"


def scale_factor(index: GraphIndex, node: onnx.NodeProto) -> float | None:
    """k where `node` computes k * x for one live input x and a positive finite scalar constant: Mul by
    k, or Div by 1/k. None otherwise."""
    if node.op_type not in SCALE_OPS or len(node.input) != 2 or not all(node.input):
        return None
    positions = [0, 1] if node.op_type == "Mul" else [1]
    for position in positions:
        value = index.constant(node.input[position])
        other = node.input[1 - position]
        if value is None or index.is_constant(other) or value.dtype != np.float32 or value.size != 1:
            continue
        if value.ndim > index.ranks.get(other, 0):  # the constant's rank would broadcast the output up
            return None
        k = float(value.reshape(()))
        if not np.isfinite(k) or k <= 0.0:
            return None
        k = k if node.op_type == "Mul" else 1.0 / k
        return k if np.isfinite(k) and k > 0.0 else None
    return None


def data_input(index: GraphIndex, node: onnx.NodeProto) -> str:
    """The live input of a scaling node (scale_factor is not None)."""
    return next(n for n in node.input if not index.is_constant(n))


# what its neighbours say of a layer kept float, whoever kept it (hunt32: --exclude-from's neighbours were
# put down to the fallback in a run whose fallback kept nothing)
FLOAT_BESIDE = "kept float with a layer --min-sqnr, --max-drop or --exclude-from keeps float"


def writer(state: Planning, tensor: str) -> onnx.NodeProto | None:
    """The quantized node whose output Q node writes `tensor`: its producer if quantized, or through the
    folds (Relu, Clip, scale) back to one; None if there is none."""
    node = state.index.producer.get(tensor)
    while node is not None and node.name in state.folds:
        if node.name in state.reads:  # a second DQ of another tensor's integers: no Q node to rescale
            return None
        source = data_input(state.index, node) if node.op_type in SCALE_OPS else node.input[0]
        node = state.index.producer.get(source)
    return node if node is not None and node.name in state.quantized else None


def try_scale_fold(state: Planning, node: onnx.NodeProto) -> bool:
    """Rule 1. True when `node` is folded now."""
    index = state.index
    k = scale_factor(index, node)
    if k is None:
        return False
    source, out = data_input(index, node), node.output[0]
    if source not in state.q or output_reason(index, node) or out in state.float_tensors:
        return False  # one carried into a model output too: placement says why it stays float
    if not state.has_stats(out):
        return False
    found = writer(state, source)
    # a shared-scale writer (MaxPool, Reshape...) must keep its input's params: read it scaled instead
    alone = len(index.consumers[source]) == 1 and source not in index.graph_outputs | index.captured
    if alone and found is not None and found.op_type not in SHARED_SCALE_OPS:
        state.q.discard(source)
    else:
        state.reads[node.name] = (source, k)
    state.folds[node.name] = out
    state.add_q(out)
    return True


def try_hard(state: Planning, node: onnx.NodeProto) -> bool:
    """Rule 2. True when `node` is planned as integer ops now."""
    index = state.index
    x, out = node.input[0], node.output[0]
    if x not in state.q and out not in state.q:
        return False
    if state.config.activations is not ActivationType.uint8:
        state.reasons[node.name] = "no integer kernel in onnxruntime; integer form needs uint8 (kept float)"
        return False
    if node.op_type == "HardSigmoid" and hard_params(node)[0] <= 0.0:
        state.reasons[node.name] = "HardSigmoid with alpha <= 0 (kept float)"
        return False
    if x in state.float_tensors or out in state.float_tensors:
        state.reasons[node.name] = f"reads or writes a tensor {FLOAT_BESIDE}"
        return False
    if x in state.scores or out in state.scores:
        state.reasons[node.name] = SCORE_REASON
        return False
    carried = output_reason(index, node)  # also what only moving ops carry into one
    if carried:
        state.reasons[node.name] = carried
        return False
    if not (state.has_stats(x) and state.has_stats(out)):
        return False
    state.quantized[node.name] = node.op_type
    state.add_q(x)
    state.add_q(out)
    if node.op_type == "HardSigmoid":
        hi = state.range_of(out)[1]
        state.ranges[out] = (0.0, min(max(hi, 0.0), 1.0))
    return True
