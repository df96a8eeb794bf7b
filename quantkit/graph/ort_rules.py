"""What onnxruntime's CPU provider runs in float in a Q/DQ model (`quantkit check --target ort-cpu`):
static rules on the model as written, and its own verdict read from the graph it optimizes
(`unfused_after` on runtime.optimized_graph's). The rules and their sources are in quantkit/docs/targets.md.
"""

from __future__ import annotations

import platform

import onnx
from onnx import TensorProto

from quantkit.cpu import X86_MACHINES
from quantkit.graph.augment import INTEGER_PATH_OPS
from quantkit.graph.query import GraphIndex
from quantkit.graph.target_rules import (
    FLOAT8_TYPES,
    NO_ORT_INTEGER_KERNEL,
    WEIGHTED_OPS,
    _all_live_from_dq,
    _dq_of_constant,
    _from_dq,
    _qdq_type,
    _quantized_layer,
)
from quantkit.outcomes import Finding


def ort_cpu(model: onnx.ModelProto) -> list[Finding]:
    """What onnxruntime's CPU provider runs in float by construction: float8 Q/DQ (no float8 kernels)."""
    index = GraphIndex(model)
    found = []
    for node in index.nodes:
        if node.op_type in WEIGHTED_OPS and any(_qdq_type(index, i) in FLOAT8_TYPES for i in node.input[:2]):
            found.append(
                Finding(
                    "float8",
                    node.name,
                    node.op_type,
                    "float8 Q/DQ: onnxruntime's CPU provider has no float8 kernels and computes this layer "
                    "in float32 (and 1.32 miscomputes float8 Q/DQ above its basic optimization level); "
                    "check --target tensorrt for a GPU",
                )
            )
        elif (slow := _slow_integer_kernel(index, node)) is not None:
            found.append(Finding("slow-kernel", node.name, node.op_type, slow))
        elif _weights_only(index, node):  # hq110 F7: onnxruntime folds the DQ, and check saw nothing
            found.append(
                Finding(
                    "weights-only",
                    node.name,
                    node.op_type,
                    "its weight is stored quantized but its input is float: onnxruntime runs the layer in "
                    "float on the dequantized weight (smaller file, no integer kernel); quantize its input "
                    "too (quantkit convert of the FP32 model) for integer speed",
                )
            )
    return found


# hq139 F3: integer operators other tools write that onnxruntime's CPU provider runs slower than float,
# measured on MobileNetV2 (1 thread, FP32 4.3 ms); check said "no findings" of each
QOPERATOR_ACTIVATIONS = frozenset({"QLinearConv"})


def _slow_integer_kernel(index: GraphIndex, node: onnx.NodeProto) -> str | None:
    """Why `node`'s integer kernel runs slower than the float op on this CPU, or None: a ConvInteger
    (dynamic quantization; onnxruntime's guidance: quantize CNNs statically), or a QLinearConv reading
    int8 activations on x86-64 (onnxruntime's S8S8 QOperator kernels, slow there)."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "ConvInteger":
        return (
            "ConvInteger (dynamic quantization): onnxruntime's CPU provider has no fast kernel for it and "
            "runs it slower than the float Conv (MobileNetV2: 7.5-39 ms against 4.3 ms); quantize "
            "statically (quantkit convert of the FP32 model)"
        )
    if (
        node.op_type in QOPERATOR_ACTIVATIONS
        and len(node.input) > 2
        and index.elem_types.get(node.input[2]) == TensorProto.INT8
        and platform.machine().lower() in X86_MACHINES
    ):
        return (
            f"{node.op_type} with int8 activations (S8S8 in onnxruntime's QOperator form), whose x86-64 "
            "kernels are slow (MobileNetV2: 22.8 ms against 2.1 ms with uint8 activations); quantize "
            "with uint8 activations, or in Q/DQ form"
        )
    return None


def _weights_only(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """A Conv / Gemm / MatMul onnxruntime has integer kernels for, reading a weight through a
    DequantizeLinear of a constant, its data input through none."""
    if node.op_type not in WEIGHTED_OPS - NO_ORT_INTEGER_KERNEL or len(node.input) < 2:
        return False
    return (
        _from_dq(index, node.input[1])
        and _dq_of_constant(index, node.input[1])
        and not _from_dq(index, node.input[0])
    )


def bfloat16_nodes(model: onnx.ModelProto) -> list[Finding]:
    """Nodes computing in bfloat16 (shape-inferred model): onnxruntime's CPU provider has no kernel for
    them (Conv, MatMul, Add, Relu...), so it cannot load the model at all."""
    index = GraphIndex(model)
    return [
        Finding(
            "bfloat16",
            node.name,
            node.op_type,
            "computes in bfloat16: onnxruntime's CPU provider has no bfloat16 kernels (the model runs where "
            "bfloat16 does: OpenVINO, accelerators)",
        )
        for node in index.nodes
        if node.op_type != "Cast"
        and any(index.elem_types.get(o) == TensorProto.BFLOAT16 for o in node.output if o)
    ]


def unfused_after(optimized: onnx.ModelProto) -> list[Finding]:
    """In the graph onnxruntime runs (its QDQ fusions applied): quantized weighted layers (weights, or
    both inputs of an activation x activation MatMul, read through DequantizeLinear) left as float ops,
    and ops onnxruntime has integer kernels for left in float between a DequantizeLinear and a
    QuantizeLinear. A float op with no integer kernel (LayerNormalization, Erf, Softmax) between two
    quantized tensors is a planned conversion, not a finding."""
    index = GraphIndex(optimized)
    found = []
    for node in index.nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in WEIGHTED_OPS - NO_ORT_INTEGER_KERNEL and _quantized_layer(index, node):
            found.append(
                Finding(
                    "not-fused",
                    node.name,
                    node.op_type,
                    "onnxruntime did not fuse its Q/DQ into an integer kernel: it runs in float on "
                    "dequantized values",
                )
            )
        elif (
            node.op_type in INTEGER_PATH_OPS
            and not _interpolates(index, node)
            and _all_live_from_dq(index, node)
            and any(c.op_type == "QuantizeLinear" for o in node.output for c, _ in index.consumers.get(o, []))
        ):
            found.append(
                Finding(
                    "float-between",
                    node.name,
                    node.op_type,
                    "runs in float between a DequantizeLinear and a QuantizeLinear although onnxruntime has "
                    "an integer kernel for it (their scales or types do not let it fuse)",
                )
            )
        elif node.op_type == "BatchNormalization" and _unfolded(index, node):
            # hunt52 B6: another tool's model ran 0.28x FP32 with 35 such, and check said nothing
            found.append(
                Finding(
                    "unfolded-norm",
                    node.name or node.output[0],
                    node.op_type,
                    "runs in float between a DequantizeLinear and a QuantizeLinear: fold it into the layer "
                    "before it, then quantize (onnxruntime folds it only where its parameters are constants)",
                )
            )
    return found


def _unfolded(index: GraphIndex, norm: onnx.NodeProto) -> bool:
    """A BatchNormalization between a DequantizeLinear and a QuantizeLinear that could have been folded:
    its parameters fed at run time, or its input a linear layer's output quantized just before it. Not
    one after a Concat or an Add, which nothing folds (DenseNet's, as convert writes them: review54 H2)."""
    after = index.consumers.get(norm.output[0], [])
    if not _from_dq(index, norm.input[0]) or not any(c.op_type == "QuantizeLinear" for c, _ in after):
        return False
    q = index.producer.get(index.producer[norm.input[0]].input[0])
    layer = index.producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
    fed = not all(index.is_constant(name) for name in norm.input[1:] if name)
    return fed or (layer is not None and layer.op_type in WEIGHTED_OPS)


def _interpolates(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """A Resize that is not nearest-neighbour: onnxruntime (1.2x) drops the Q/DQ around a nearest Resize
    only, and runs a linear or cubic one in float between them whatever their scales (U^2-Net's 32
    bilinear upsamplings were reported as unfused for their scales, which were equal)."""
    return node.op_type == "Resize" and index.attribute(node, "mode", b"nearest") != b"nearest"
