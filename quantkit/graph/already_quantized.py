"""Whether a model is quantized already, in any of the forms tools write: Q/DQ and integer ops anywhere
(the main graph, If/Loop bodies, model-local functions), onnxruntime's fused and block-quantized
kernels, and weights stored in 8 bits or fewer that a Cast turns back into float (a weights-only export
without DequantizeLinear). quantkit converts float models: each of these is refused with what was found."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import onnx

from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.query import function_nodes, graphs_within

QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "ConvInteger",
        "MatMulInteger",
        # onnxruntime's fused and block-quantized kernels (hq69 F3: a 4-bit MatMulNBits ViT was 'no
        # integer kernel, computes as the FP32 model does'; a quantize_dynamic model saved by onnxruntime's
        # optimizer 'has no op quantkit quantizes')
        "MatMulNBits",
        "MatMulBnb4",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "GatherBlockQuantized",
        "QuantizeBFP",
        "DequantizeBFP",
    }
)


def is_quantized_op(op_type: str) -> bool:
    """Q/DQ, the integer ops, and onnxruntime's QOperator kernels (QLinearConv, QLinearAdd, QGemm, ...)."""
    return op_type in QUANTIZED_OPS or op_type.startswith(("QLinear", "QGemm", "QAttention", "QOrdered"))


# a stored type this narrow is a quantized value, not a float weight
LOW_BIT_TYPES = frozenset(
    {
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
        onnx.TensorProto.FLOAT8E4M3FN,
        onnx.TensorProto.FLOAT8E4M3FNUZ,
        onnx.TensorProto.FLOAT8E5M2,
        onnx.TensorProto.FLOAT8E5M2FNUZ,
    }
)
# fewer values than this are a fixed kernel (a box filter of ones over 9, 3 x 3 x 3), not a layer's weights
MIN_WEIGHT_VALUES = 64
# ops between a stored weight and its layer that change only its layout
_LAYOUT = frozenset({"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze"})
# ops that dequantize by hand: a scale (Mul, Div) or a zero point (Sub, Add) of fewer values than the weight
_SCALING = frozenset({"Mul", "Div", "Sub", "Add"})


def quantized_ops(model: onnx.ModelProto) -> Counter[str]:
    """Quantized ops by type, in the main graph, its If/Loop/Scan bodies and the model's local functions
    (hq69 F2: Q/DQ inside functions, as torch.onnx's dynamo exporter writes modules, or inside an If,
    were let through as float and written back out)."""
    nodes = [n for graph in graphs_within(model.graph) for n in graph.node] + function_nodes(model)
    return Counter(n.op_type for n in nodes if is_quantized_op(n.op_type))


def low_bit_weights(model: onnx.ModelProto) -> Counter[str]:
    """The stored type of each Conv/ConvTranspose/Gemm/MatMul weight dequantized by hand: a constant of 8
    bits or fewer, Cast to float, then scaled by a smaller constant (and offset, reshaped) before the
    layer reads it; by type name, one count per layer. hq69 F1: int8, float8 and int4 weights behind Cast
    + Mul were read as 'weight is not a constant', every layer kept float and the file written up to 5.5x
    larger than the model given. Not a float weight times a uint8 mask, a mask on activations, or a uint8
    kernel read as it is (hq70 1: refused as 'quantized already')."""
    graph = model.graph
    stored = {t.name: (t.data_type, _size(t.dims)) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            tensor = node.attribute[0].t
            stored[node.output[0]] = (tensor.data_type, _size(tensor.dims))
    writer = {o: n for n in graph.node for o in n.output}
    found: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in COMPUTE_OPS and len(node.input) > 1:
            kind = _dequantized_from(node.input[1], stored, writer, scaled=False)
            if kind is not None:
                found[onnx.TensorProto.DataType.Name(kind)] += 1
    return found


def _size(dims: Sequence[int]) -> int:
    return math.prod(dims)


def _dequantized_from(
    name: str, stored: dict[str, tuple[int, int]], writer: dict[str, onnx.NodeProto], scaled: bool
) -> int | None:
    """The low-bit type `name` is dequantized from by hand (scaled on the way), or None."""
    node = writer.get(name)
    if node is None:
        return None
    if node.op_type == "Cast":
        kind, size = stored.get(node.input[0], (0, 0))
        return kind if scaled and kind in LOW_BIT_TYPES and size >= MIN_WEIGHT_VALUES else None
    if node.op_type in _LAYOUT:
        return _dequantized_from(node.input[0], stored, writer, scaled)
    if node.op_type not in _SCALING or len(node.input) != 2:
        return None
    for value, other in _pairs(node):
        source = _cast_source(value, writer)
        if source is None or other not in stored or source not in stored:
            continue
        if stored[other][1] < stored[source][1]:  # a scale or zero point, not a mask of the weight's size
            return _dequantized_from(value, stored, writer, scaled=True)
    return None


def _pairs(node: onnx.NodeProto) -> list[tuple[str, str]]:
    """(the operand a weight may come through, the other): either for Mul and Add, the first for Div, Sub."""
    first, second = node.input[0], node.input[1]
    return [(first, second), (second, first)] if node.op_type in ("Mul", "Add") else [(first, second)]


def _cast_source(name: str, writer: dict[str, onnx.NodeProto]) -> str | None:
    """The constant a chain of layout ops, offsets and Casts starts from (what a weight is stored as)."""
    node = writer.get(name)
    while node is not None and node.op_type in (_LAYOUT | {"Cast", "Sub", "Add"}):
        name = node.input[0]
        node = writer.get(name)
    return name if node is None else None
