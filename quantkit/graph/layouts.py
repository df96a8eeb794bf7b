"""Where a rank-4 tensor's channels lie, read from the ops that compute it: a model's own layout, where its
shape cannot tell. [1, 256, 512, 19] (a segmenter's class logits transposed to NHWC, as tf2onnx and
Keras exports give them) and [1, 255, 48, 80] (a YOLOv5 head, NCHW) look alike to a rule on shapes; the
Transpose that writes the one and the Conv that writes the other do not."""

from __future__ import annotations

from collections.abc import Collection

import onnx

from quantkit.graph.query import GraphIndex

NCHW, NHWC = 1, 3  # the channel axis of a rank-4 map

# ops that keep every value where it is: the layout of what they give is the layout of what they read
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
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Max",
        "Min",
        "Where",
        "QuantizeLinear",
        "DequantizeLinear",
    }
)
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
_PERMS = {(0, 2, 3, 1): NHWC, (0, 3, 1, 2): NCHW}


def channel_axes(model: onnx.ModelProto, tensors: Collection[str]) -> dict[str, int]:
    """Tensor -> the axis its channels lie along where it is a rank-4 map the graph lays out (NCHW or
    NHWC): computed, past ops that keep each value where it is (activations, casts, elementwise
    arithmetic on its first computed operand), by an op ONNX defines as NCHW (Conv, pools, normalisations)
    or by a Transpose of perm [0, 2, 3, 1] (NHWC) or [0, 3, 1, 2] (NCHW). Tensors it cannot tell (a
    Reshape's, a Concat's, an input) are left out: their shape decides (evaluate.output_noise)."""
    index = GraphIndex(model)
    found = {}
    for name in tensors:
        axis = _axis_of(index, name)
        if axis is not None:
            found[name] = axis
    return found


def _axis_of(index: GraphIndex, name: str) -> int | None:
    node = index.producer.get(name)
    for _ in range(len(index.nodes)):  # a graph is acyclic: at most every node once
        if node is None:
            return None
        if node.op_type in _CHANNELS_FIRST:
            return NCHW
        if node.op_type == "Transpose":
            perm = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), ())
            return _PERMS.get(perm)
        read = node.input[1:] if node.op_type == "Where" else node.input  # not its condition
        computed = [i for i in read if i and not index.is_constant(i)]
        if node.op_type not in _KEEPING or not computed:
            return None
        node = index.producer.get(computed[0])
    return None
