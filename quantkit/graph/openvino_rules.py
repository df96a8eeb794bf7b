"""What OpenVINO's CPU plugin runs in float or as integer element-wise blocks in a Q/DQ model: the static
rules of `quantkit check --target openvino` (quantkit/docs/targets.md)."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from quantkit.graph.query import GraphIndex
from quantkit.graph.target_rules import (
    DYNAMIC_LAYER_OPS,
    WEIGHTED_OPS,
    _all_live_from_dq,
    _dequantized_through,
    _dq_of_constant,
    _from_dq,
    _qdq_type_of_node,
    _stored,
    _weight_data,
)
from quantkit.outcomes import Finding

# element-wise functions OpenVINO's CPU plugin fuses into the layer before them when they run in float; with
# a dequantized input and a quantized output it runs them as integer element-wise blocks of their own
OPENVINO_FUSED_AFTER_LAYER = frozenset(
    {"Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Erf", "Exp", "Softplus", "Mish"}
)


# the ops outside the standard domain OpenVINO's ONNX frontend converts: each of the 115 com.microsoft and 19
# ai.onnx.ml ops read alone by OpenVINO 2026.4.1 (hq92 F6: its supported_ops.md had missed three); any
# other fails the model's load, "No conversion rule found" (hq90 F1: check passed a
# QLinearGlobalAveragePool model, the shared mobilenetv2_int8_by_another_tool among them)
CONTRIB_TEXT = """Attention BiasAdd BiasGelu BifurcationDetector DequantizeLinear DynamicQuantizeLSTM
    DynamicQuantizeMatMul EmbedLayerNormalization FastGelu FusedConv FusedGemm FusedMatMul
    GatherBlockQuantized GatherND Gelu GroupNorm GroupQueryAttention MatMulIntegerToFloat MatMulNBits
    MultiHeadAttention Pad QLinearAdd QLinearAveragePool QLinearConcat QLinearLeakyRelu QLinearMul
    QLinearReduceMean QLinearSigmoid QLinearSoftmax QLinearWhere QuantizeLinear QuickGelu Range
    RotaryEmbedding SimplifiedLayerNormalization SkipLayerNormalization SkipSimplifiedLayerNormalization
    Trilu"""
OPENVINO_CONVERTS = {
    "com.microsoft": frozenset(CONTRIB_TEXT.split()),
    "ai.onnx.ml": frozenset({"Normalizer"}),
}
OPENVINO_DOMAINS = frozenset({"", "ai.onnx", "org.openvinotoolkit"})  # read whole


def openvino(model: onnx.ModelProto) -> list[Finding]:
    """OpenVINO's CPU plugin (its low-precision transformations): a weighted layer runs int8 when its data
    input and its weight both reach a DequantizeLinear (the data input possibly through pools, Concat and
    data movement, which it runs on int8 values); an activation function between a DequantizeLinear and
    a QuantizeLinear runs as an integer element-wise block instead of fusing into the layer before it."""
    index = GraphIndex(model)
    found: list[Finding] = []
    for node in index.nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            found.extend(_openvino_qdq(index, node))
        elif node.op_type in WEIGHTED_OPS and len(node.input) > 1:
            found.extend(_openvino_layer(index, node))
        elif node.op_type in DYNAMIC_LAYER_OPS and node.domain in ("", "ai.onnx"):
            why = (
                f"{node.op_type} (dynamic quantization): OpenVINO converts its integers back to float32 and "
                "runs the layer in float32, slower than the FP32 model's (a ConvInteger model: 0.372 ms "
                "against 0.152); quantize statically (convert --target openvino of the FP32 model)"
            )
            found.append(Finding("slow-kernel", node.name, node.op_type, why))
        elif node.op_type in OPENVINO_FUSED_AFTER_LAYER and _between_qdq(index, node):
            why = (
                "Q/DQ on its input and output: OpenVINO runs it as an integer element-wise block instead of "
                "fusing it into the layer before it (YOLOX-Nano's SiLUs so: 16.9 of 32.7 ms); quantize "
                "after it only (convert --target openvino)"
            )
            found.append(Finding("integer-activation", node.name, node.op_type, why))
        elif node.domain not in OPENVINO_DOMAINS and node.op_type not in OPENVINO_CONVERTS.get(
            node.domain, ()
        ):
            why = (
                f"{node.domain} {node.op_type}: OpenVINO's ONNX frontend has no conversion for it, so the "
                "model does not load; convert the FP32 model with --target openvino"
            )
            found.append(Finding("operator", node.name, node.op_type, why))
    return found


def _openvino_qdq(index: GraphIndex, node: onnx.NodeProto) -> list[Finding]:
    """OpenVINO's integer kernels take 8-bit Q/DQ, and signed int8 on a layer's activation broke its CPU
    plugin (quantkit/docs/targets.md: 10.7 dB against onnxruntime's 29.7 on the same SqueezeNet file);
    a signed model input is quantkit's own choice (`signed_inputs`), as NNCF's. hunt37 F3: check passed
    int8, 16-bit and float8 activation Q/DQ."""
    qtype = _qdq_type_of_node(index, node)
    stored = _stored(index, node)
    if qtype is None or qtype == TensorProto.UINT8 or _weight_data(index, stored):
        return []
    if qtype != TensorProto.INT8:
        name = TensorProto.DataType.Name(qtype).lower()
        why = f"{name} Q/DQ on an activation: OpenVINO's CPU plugin runs 8-bit ones in integer kernels"
        return [Finding("qdq-type", node.name, node.op_type, why)]
    if stored in index.graph_inputs or _widened_input(index, stored):
        return []
    why = (
        "signed int8 activation: OpenVINO 2026.4's CPU plugin measured such files 4-11 dB where onnxruntime "
        "measured 14-30 dB; quantize activations uint8 (convert --target openvino)"
    )
    return [Finding("qdq-type", node.name, node.op_type, why)]


def _widened_input(index: GraphIndex, tensor: str) -> bool:
    """A float16 model input read as float32 (its Cast): the model input quantkit quantizes signed (hq69
    F4: convert --target openvino flagged its own Q/DQ on a float16-fed model, and check exited 1)."""
    cast = index.producer.get(tensor)
    return cast is not None and cast.op_type == "Cast" and cast.input[0] in index.graph_inputs


def _between_qdq(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """Every live input dequantized and a QuantizeLinear reading its output."""
    readers = index.consumers.get(node.output[0], [])
    return _all_live_from_dq(index, node) and any(c.op_type == "QuantizeLinear" for c, _ in readers)


def _openvino_layer(index: GraphIndex, node: onnx.NodeProto) -> list[Finding]:
    w = node.input[1]
    x_q, w_q = _dequantized_through(index, node.input[0]), _from_dq(index, w)
    w_const = index.is_constant(w) or (w_q and _dq_of_constant(index, w))
    if w_q and w_const and not x_q:
        why = "its weight is quantized but its input reaches no DequantizeLinear: OpenVINO runs it in float"
        return [Finding("float-input", node.name, node.op_type, why)]
    if x_q and w_const and not w_q:
        why = "its input is quantized but its weight has no Q/DQ: OpenVINO runs the layer in float"
        return [Finding("float-weight", node.name, node.op_type, why)]
    return []
