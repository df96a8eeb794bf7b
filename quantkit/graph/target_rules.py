"""What a runtime cannot fuse or run in a Q/DQ model: static rules per target (`quantkit check`).

Pure graph reading: every rule looks at the model as written. onnxruntime's own verdict (which Q/DQ it
fused into integer kernels) comes from the graph it optimizes, read by `unfused_after` on the graph
runtime.optimized_graph returns. The rules and their sources are in quantkit/docs/targets.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto

from quantkit.graph.augment import COMMUTING_OPS, commuting_data_inputs
from quantkit.graph.query import GraphIndex, graphs_within
from quantkit.outcomes import Finding

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# weighted ops onnxruntime's CPU provider has no integer kernel for: float by plan, never a failed fusion
# (onnxruntime 1.32 itself quantizes a ConvTranspose's float weight between Q/DQ and runs it dequantized)
NO_ORT_INTEGER_KERNEL = frozenset({"ConvTranspose"})
# pointwise ops TensorRT fuses into the weighted layer before them (a Q/DQ pair between splits the fusion)
FUSED_AFTER_LAYER = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "BatchNormalization", "Elu"})
FLOAT8_TYPES = frozenset(
    {
        TensorProto.FLOAT8E4M3FN,
        TensorProto.FLOAT8E4M3FNUZ,
        TensorProto.FLOAT8E5M2,
        TensorProto.FLOAT8E5M2FNUZ,
    }
)
TENSORRT_QDQ_TYPES = frozenset({TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4})
# element types TensorRT has no tensors of (its DataType: float, half, bf16, int8, int32, int64, bool,
# uint8 at the network's edges, fp8, int4)
TENSORRT_MISSING_TYPES: dict[int, str] = {
    TensorProto.DOUBLE: "float64",
    TensorProto.INT16: "int16",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128",
    TensorProto.STRING: "string",
}


def tensorrt(model: onnx.ModelProto) -> list[Finding]:
    """TensorRT's explicit quantization: int8 (fp8, int4) symmetric Q/DQ, per-tensor activations,
    per-channel weights on the output-channel axis, both inputs of a weighted layer quantized together,
    no Q/DQ between a layer and the activation it fuses, no float64 / 16-bit integer tensors."""
    index = GraphIndex(model)
    found: list[Finding] = []
    for node in index.nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            found.extend(_tensorrt_qdq(index, node))
        elif node.op_type in WEIGHTED_OPS:
            found.extend(_tensorrt_layer(index, node))
        elif node.op_type in INTEGER_LAYER_OPS or node.op_type.startswith("QLinear"):
            why = (
                f"{node.domain or 'ai.onnx'} {node.op_type}: TensorRT's ONNX parser reads Q/DQ models, not "
                "integer operators (QOperator); convert the FP32 model with --target tensorrt"
            )
            found.append(Finding("operator", node.name, node.op_type, why))
        elif node.domain == "ai.onnx.ml":  # hq110 F4: a LabelEncoder was called an onnxruntime contrib op
            why = (
                f"{node.domain} {node.op_type}: TensorRT's ONNX parser reads no ONNX-ML operator; end the "
                "exported model before it (a LabelEncoder's input, the class index, is what TensorRT gives)"
            )
            found.append(Finding("operator", node.name, node.op_type, why))
        elif node.domain not in ("", "ai.onnx"):  # hq104 F3: it said to run the convert that wrote it
            why = (
                f"{node.domain} {node.op_type}: TensorRT's ONNX parser reads no onnxruntime contrib op (one "
                "an onnxruntime-optimized export holds, which convert keeps as it is); export the FP32 model "
                "without onnxruntime's graph optimizations"
            )
            found.append(Finding("operator", node.name, node.op_type, why))
    found.extend(_unsupported_types(index))
    return found


def _dequantized_through(index: GraphIndex, tensor: str) -> bool:
    """`tensor` is written by a DequantizeLinear, or by an op that commutes with Q/DQ (COMMUTING_OPS)
    from data inputs that all are."""
    producer = index.producer.get(tensor)
    if producer is None:
        return False
    if producer.op_type == "DequantizeLinear":
        return True
    if producer.op_type not in COMMUTING_OPS:
        return False
    return all(_dequantized_through(index, t) for t in commuting_data_inputs(producer))


def _tensorrt_qdq(index: GraphIndex, node: onnx.NodeProto) -> list[Finding]:
    found = []
    qtype = _qdq_type_of_node(index, node)
    zero = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if node.op_type == "DequantizeLinear" and qtype == TensorProto.INT32:
        found.append(
            Finding(
                "int32-dq",
                node.name,
                node.op_type,
                "dequantizes int32 (a bias): TensorRT dequantizes int8, fp8 and int4 only; keep the bias "
                "float (convert --target tensorrt does)",
            )
        )
    elif qtype == TensorProto.INT4 and not _weight_data(index, _stored(index, node)):
        why = "int4 Q/DQ on an activation: TensorRT's int4 is for weights"
        found.append(Finding("qdq-type", node.name, node.op_type, why))
    elif qtype is not None and qtype not in TENSORRT_QDQ_TYPES:
        name = TensorProto.DataType.Name(qtype).lower()
        found.append(
            Finding(
                "qdq-type",
                node.name,
                node.op_type,
                f"{name} Q/DQ: TensorRT's are int8 (fp8, int4 for weights); convert --target tensorrt",
            )
        )
    if zero is not None and np.any(np.asarray(zero, np.float64) != 0):
        found.append(
            Finding(
                "zero-point",
                node.name,
                node.op_type,
                "non-zero zero point: TensorRT's quantization is symmetric (zero point 0)",
            )
        )
    scale = index.constant(node.input[1])
    data = node.input[0]
    if scale is not None and scale.size > 1 and not _weight_data(index, data):
        found.append(
            Finding(
                "activation-axis",
                node.name,
                node.op_type,
                "per-channel scale on an activation: TensorRT quantizes activations per tensor",
            )
        )
    return found


def _tensorrt_layer(index: GraphIndex, node: onnx.NodeProto) -> list[Finding]:
    found = []
    x, w = node.input[0], node.input[1] if len(node.input) > 1 else ""
    x_q, w_q = _from_dq(index, x), bool(w) and _from_dq(index, w)
    w_const = bool(w) and (index.is_constant(w) or (w_q and _dq_of_constant(index, w)))
    if w_q and w_const and not x_q:
        found.append(
            Finding(
                "float-input",
                node.name,
                node.op_type,
                "its weight is quantized but its input has no Q/DQ: TensorRT runs the layer in float",
            )
        )
    if x_q and w_const and not w_q:
        found.append(
            Finding(
                "float-weight",
                node.name,
                node.op_type,
                "its input is quantized but its weight has no Q/DQ: TensorRT runs the layer in float",
            )
        )
    if w_q and w_const:
        axis = _weight_axis_expected(index, node)
        dq = index.producer[w]
        scale = index.constant(dq.input[1])
        got = int(index.attribute(dq, "axis", 1))  # type: ignore[call-overload]
        stored = dq.input[0]
        quantizer = index.producer.get(stored)  # float weight -> Q -> DQ: the Q's constant has the rank
        rank = index.ranks.get(stored) or _rank_of_constant(
            index, quantizer.input[0] if quantizer else stored
        )
        if scale is not None and scale.size > 1 and axis is not None and rank and got % rank != axis % rank:
            found.append(
                Finding(
                    "weight-axis",
                    node.name,
                    node.op_type,
                    f"weight scales on axis {got}: TensorRT needs them on the output-channel axis ({axis})",
                )
            )
    for out in node.output:
        for q, _ in index.consumers.get(out, []):
            if q.op_type == "QuantizeLinear" and _feeds_fused_activation(index, q):
                found.append(
                    Finding(
                        "split-fusion",
                        q.name,
                        q.op_type,
                        f"a Q/DQ pair between {node.op_type} {node.name} and the activation after it blocks "
                        "TensorRT's fusion of the two; quantize the activation's output instead",
                    )
                )
    return found


def _unsupported_types(index: GraphIndex) -> list[Finding]:
    found = []
    for name, elem in sorted(index.elem_types.items()):
        missing = TENSORRT_MISSING_TYPES.get(elem)
        if missing is None:
            continue
        producer = index.producer.get(name)
        found.append(
            Finding(
                "dtype",
                producer.name if producer is not None else name,
                producer.op_type if producer is not None else "tensor",
                f"tensor {name} is {missing}: TensorRT has no {missing} tensors; export float32 / int32",
            )
        )
    return found


def _feeds_fused_activation(index: GraphIndex, q: onnx.NodeProto) -> bool:
    for dq, _ in index.consumers.get(q.output[0], []):
        if dq.op_type != "DequantizeLinear":
            continue
        readers = index.consumers.get(dq.output[0], [])
        if readers and all(r.op_type in FUSED_AFTER_LAYER for r, _ in readers):
            return True
    return False


def _weight_axis_expected(index: GraphIndex, node: onnx.NodeProto) -> int | None:
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if index.attribute(node, "transB", 0) else 1
    return -1  # MatMul: [..., K, N], the last axis


# a weighted layer written as an integer operator (onnxruntime.quantization's QOperator format): quantized
# as it stands (hunt31: check read 43 QLinearConv of a YuNet as '0 of 0 ... quantized')
INTEGER_LAYER_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm"})
# dynamic quantization's layers: OpenVINO converts their integers back and runs them in float32 (hq171 F1:
# a table detector's 65 ConvInteger were 'quantized, no findings', every one an f32 Convolution there)
DYNAMIC_LAYER_OPS = frozenset({"ConvInteger", "MatMulInteger"})


def quantized_layers(
    model: onnx.ModelProto, through: bool = False, operators: frozenset[str] = INTEGER_LAYER_OPS
) -> tuple[int, int]:
    """(weighted layers, those whose data input comes from a DequantizeLinear, with `through` possibly
    through ops that commute with it as OpenVINO reads them, and whose weight does too (a float weight:
    the layer runs in float on a dequantized input, hunt51 B1: a YuNet's 6 head Convs kept float counted
    quantized), or that are integer operators of `operators`; the others count as layers, not quantized
    ones: TensorRT parses none, OpenVINO runs DYNAMIC_LAYER_OPS in float)."""
    quantized = _dequantized_through if through else _from_dq
    total = done = 0
    for graph in graphs_within(model.graph):  # hunt52 C9: an If's branches' Convs, left float, went uncounted
        wrapped = model if graph is model.graph else onnx.ModelProto(graph=graph)
        index = GraphIndex(wrapped)
        layers = [n for n in index.nodes if n.op_type in WEIGHTED_OPS]
        integer = [n.op_type for n in index.nodes if n.op_type in INTEGER_LAYER_OPS]
        total += len(layers) + len(integer)
        done += sum(_runs_integer(index, n, quantized) for n in layers) + sum(o in operators for o in integer)
    return total, done


def _runs_integer(
    index: GraphIndex, node: onnx.NodeProto, dequantized: Callable[[GraphIndex, str], bool]
) -> bool:
    """Its data input is `dequantized` and so is its second input (a weight or an activation), where it
    has one."""
    second = node.input[1] if len(node.input) > 1 else ""
    return dequantized(index, node.input[0]) and (not second or dequantized(index, second))


def _quantized_layer(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """Its weight is a dequantized constant, or both its inputs are dequantized activations."""
    if len(node.input) < 2:
        return False
    x, w = node.input[0], node.input[1]
    if _from_dq(index, w) and _dq_of_constant(index, w):
        return True
    return _from_dq(index, x) and _from_dq(index, w)


def _all_live_from_dq(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """Every non-constant input is dequantized (a float one makes the op float by plan, not by a failed
    fusion)."""
    live = [t for t in node.input if t and not index.is_constant(t)]
    return bool(live) and all(_from_dq(index, t) for t in live)


def _from_dq(index: GraphIndex, tensor: str) -> bool:
    producer = index.producer.get(tensor)
    return producer is not None and producer.op_type == "DequantizeLinear"


def _dq_of_constant(index: GraphIndex, tensor: str) -> bool:
    producer = index.producer[tensor]
    return _weight_data(index, producer.input[0])


def _weight_data(index: GraphIndex, tensor: str) -> bool:
    """A constant, or a QuantizeLinear's of one: TensorRT's exporters (pytorch-quantization, ModelOpt)
    write a weight as float -> Q -> DQ and TensorRT folds the Q (hunt37 F1: check read such a DQ as an
    activation's, 53 'activation-axis' findings on a compliant MobileNetV2, and ran no layer rule)."""
    if index.is_constant(tensor):
        return True
    producer = index.producer.get(tensor)
    return (
        producer is not None and producer.op_type == "QuantizeLinear" and index.is_constant(producer.input[0])
    )


def _stored(index: GraphIndex, node: onnx.NodeProto) -> str:
    """The float tensor a Q reads, or the one the Q before a DQ read (the DQ's own input where none)."""
    if node.op_type == "QuantizeLinear":
        return node.input[0]
    producer = index.producer.get(node.input[0])
    return (
        producer.input[0] if producer is not None and producer.op_type == "QuantizeLinear" else node.input[0]
    )


def _rank_of_constant(index: GraphIndex, name: str) -> int:
    value = index.constant(name)
    return 0 if value is None else value.ndim


def _qdq_type_of_node(index: GraphIndex, node: onnx.NodeProto) -> int | None:
    """The integer (or float8) type a Q writes or a DQ reads."""
    if node.op_type == "DequantizeLinear":
        return index.elem_types.get(node.input[0]) or _zero_point_type(index, node)
    return _zero_point_type(index, node) or index.elem_types.get(node.output[0])


def _zero_point_type(index: GraphIndex, node: onnx.NodeProto) -> int | None:
    if len(node.input) > 2 and node.input[2]:
        return index.elem_types.get(node.input[2])
    return TensorProto.UINT8 if node.op_type == "QuantizeLinear" else None  # the default zero point


def _qdq_type(index: GraphIndex, tensor: str) -> int | None:
    producer = index.producer.get(tensor)
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    return _qdq_type_of_node(index, producer)
