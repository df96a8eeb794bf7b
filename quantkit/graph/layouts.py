"""Where a rank-4 tensor's channels lie, read from the ops that compute it: a model's own layout, where its
shape cannot tell. [1, 256, 512, 19] (a segmenter's class logits transposed to NHWC, as tf2onnx and
Keras exports give them) and [1, 255, 48, 80] (a YOLOv5 head, NCHW) look alike to a rule on shapes; the
Transpose that writes the one and the Conv that writes the other do not."""

from __future__ import annotations

from collections.abc import Collection

import onnx

from quantkit.graph.query import GraphIndex

NCHW, NHWC = 1, 3  # the channel axis of a rank-4 map

# ops whose output keeps the layout of their data input (input 0): activations, casts, Q/DQ, and the
# ops that resize, pad or crop a map in place
_KEEPING = frozenset(
    {
        "Identity",
        "Cast",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Celu",
        "Tanh",
        "Clip",
        "Softplus",
        "Exp",
        "Log",
        "Neg",
        "Abs",
        "Sqrt",
        "Erf",
        "Softmax",
        "LogSoftmax",
        "QuantizeLinear",
        "DequantizeLinear",
        "Resize",
        "Upsample",
        "Pad",
        "Slice",
    }
)
# elementwise ops of several computed operands (and Concat): the layout their rank-4 operands agree on
_JOINING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Concat"})
# ops that read and write NCHW by the ONNX specification
_CHANNELS_FIRST = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "BatchNormalization",
        "InstanceNormalization",
        "MaxPool",
        "AveragePool",
        "LpPool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "DepthToSpace",
        "SpaceToDepth",
        "LRN",
    }
)


def channel_axes(model: onnx.ModelProto, tensors: Collection[str]) -> dict[str, int]:
    """Tensor -> the axis its channels lie along where it is a rank-4 map the graph lays out: computed by
    an op ONNX defines as NCHW (Conv, pools, normalisations: axis 1) or a per-pixel Dense layer (a MatMul
    by a constant weight: its features last), then moved by Transposes (each perm
    applied to the axis it reads; one of a tensor it cannot tell read as NCHW, as exporters write them
    around NCHW convolutions) and kept by ops that leave values where they are (activations, casts,
    Resize, Pad, Slice, elementwise arithmetic and Concat where their rank-4 operands agree). Tensors it
    cannot tell (a Reshape's, an input's) are left out: their shape decides (evaluate.output_noise). The
    review of hq61's first version: a CRNN's [0, 3, 1, 2], two Transposes in a row, a broadcast operand of
    lower rank and a Resize last were read wrong or not at all."""
    index = GraphIndex(model)
    memo: dict[str, int | None] = {}
    found: dict[str, int] = {}
    for name in tensors:
        axis = _axis_of(index, name, memo)
        if axis is not None:
            found[name] = axis
    return found


def _axis_of(index: GraphIndex, name: str, memo: dict[str, int | None]) -> int | None:
    if name in memo:
        return memo[name]
    memo[name] = None  # a graph is acyclic; a cycle in a broken one ends here
    node = index.producer.get(name)
    axis: int | None = None
    if node is None or index.ranks.get(name, 4) != 4:
        axis = None
    elif node.op_type in _CHANNELS_FIRST:
        axis = NCHW
    elif node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and index.is_constant(node.input[1]):
        axis = NHWC  # a per-pixel Dense layer's features, last (Keras's on an NHWC map: hq62)
    elif node.op_type == "Reshape" and len(node.input) > 1:
        axis = _dense_rows(index, node)
    elif node.op_type == "Transpose" and node.input:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
        inner = _axis_of(index, node.input[0], memo)
        inner = NCHW if inner is None else inner
        axis = perm.index(inner) if sorted(perm) == [0, 1, 2, 3] else None
    elif node.op_type in _KEEPING and node.input and not index.is_constant(node.input[0]):
        axis = _axis_of(index, node.input[0], memo)
    elif node.op_type in _JOINING:
        read = node.input[1:] if node.op_type == "Where" else node.input  # not its condition
        operands = [i for i in read if i and not index.is_constant(i) and index.ranks.get(i, 4) == 4]
        axes = {_axis_of(index, i, memo) for i in operands} - {None}
        axis = axes.pop() if len(axes) == 1 else None
    memo[name] = axis
    return axis


def _dense_rows(index: GraphIndex, node: onnx.NodeProto) -> int | None:
    """A Reshape to [N, H, W, C] of a per-pixel Dense layer's rows [N*H*W, C] (tf2onnx's Tensordot: Reshape,
    MatMul, Reshape; hq62's Keras segmenter): its features last; else None."""
    target, dense = index.constant(node.input[1]), index.producer.get(node.input[0])
    if target is None or target.size != 4 or dense is None or dense.op_type not in ("MatMul", "Gemm"):
        return None
    weight = index.constant(dense.input[1]) if len(dense.input) > 1 else None
    if weight is None or weight.ndim != 2:
        return None
    transposed = dense.op_type == "Gemm" and int(index.attribute(dense, "transB", 0) or 0)  # type: ignore[call-overload]
    return NHWC if int(target.reshape(-1)[-1]) == weight.shape[0 if transposed else 1] else None
