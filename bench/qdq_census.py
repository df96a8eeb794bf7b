"""Where a QDQ model's quantizer put its Q/DQ pairs: counted by the op that reads each dequantized
tensor, the op whose output is quantized, the activations' and weights' integer formats; and, for the
Conv/Gemm/MatMul that a runtime left in float, what the model gives them (a float input or weight).

Plain onnx, no runtime: the bench compares quantkit's placement with NNCF's with it (bench.openvino_bench).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

LINEAR = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
QUANT = frozenset({"QuantizeLinear", "DequantizeLinear"})
# ops that pass a dequantized tensor on unchanged in kind (the runtime folds them into the DQ)
PASS_THROUGH = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def census(model: onnx.ModelProto) -> dict[str, Any]:
    """The placement of a QDQ model's Q/DQ nodes (see the module's docstring)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    weight_reads: Counter[str] = Counter()
    activation_reads: Counter[str] = Counter()
    quantized_outputs: Counter[str] = Counter()
    activation_formats: Counter[str] = Counter()
    weight_formats: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            weight = _from_initializer(node.input[0], producers, inits)
            for reader in readers.get(node.output[0], []):
                if weight:
                    slot = list(reader.input).index(node.output[0])
                    weight_reads[f"{reader.op_type} {'bias' if slot == 2 else 'weight'}"] += 1
                else:
                    activation_reads[reader.op_type] += 1
            if weight:
                weight_formats[_format(node, inits, weight=True)] += 1
        elif node.op_type == "QuantizeLinear" and not _from_initializer(node.input[0], producers, inits):
            source = producers.get(node.input[0])
            quantized_outputs[source.op_type if source is not None else "graph input"] += 1
            activation_formats[_format(node, inits, weight=False)] += 1
    ops = Counter(n.op_type for n in graph.node)
    return {
        "q": ops["QuantizeLinear"],
        "dq": ops["DequantizeLinear"],
        "activation_reads": dict(activation_reads.most_common()),
        "weight_reads": dict(weight_reads.most_common()),
        "quantized_outputs": dict(quantized_outputs.most_common()),
        "activation_formats": dict(activation_formats.most_common()),
        "weight_formats": dict(weight_formats.most_common()),
        "float_ops": dict(_float_ops(graph, producers, readers).most_common()),
    }


def float_reasons(model: onnx.ModelProto, names: list[str]) -> dict[str, str]:
    """For each named Conv/Gemm/MatMul: whether its data input and its weight arrive through a DQ."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    nodes = {n.name: n for n in graph.node}
    reasons = {}
    for name in names:
        node = nodes.get(name)
        if node is None or node.op_type not in LINEAR or len(node.input) < 2:
            reasons[name] = "not a Conv/Gemm/MatMul of the model (a layer OpenVINO made)"
            continue
        data, weight = (_through(node.input[i], producers) for i in (0, 1))
        parts = [
            "input int8" if data == "DequantizeLinear" else f"input float (from {data})",
            "weight int8"
            if weight == "DequantizeLinear"
            else "weight float"
            if node.input[1] in inits
            else f"second input float (from {weight})",
        ]
        reasons[name] = f"{node.op_type}: " + ", ".join(parts)
    return reasons


def _through(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    """The op type that makes `name`, looking through reshapes; "graph input" or "initializer"."""
    node = producers.get(name)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producers.get(node.input[0])
    return node.op_type if node is not None else "initializer or graph input"


def _from_initializer(
    name: str, producers: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto]
) -> bool:
    """Whether a tensor is a constant: an initializer, or a Q/DQ/Reshape chain over one."""
    node = producers.get(name)
    while node is not None and (node.op_type in QUANT or node.op_type in PASS_THROUGH):
        name = node.input[0]
        node = producers.get(name)
    return node is None and name in inits


def _format(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], weight: bool) -> str:
    """'uint8 zero point 0 per-tensor', 'int8 zero point 0 per-channel'... from the zero point and scale
    (int8 with zero point 0 is symmetric; uint8 with zero point 0 covers [0, max], as after a ReLU)."""
    scale = _constant(node.input[1], inits)
    zero = _constant(node.input[2], inits) if len(node.input) > 2 and node.input[2] else None
    if weight and node.input[0] in inits:
        kind = str(onnx.helper.tensor_dtype_to_np_dtype(inits[node.input[0]].data_type))
    else:
        kind = str(zero.dtype) if zero is not None else "uint8"
    at_zero = zero is None or not np.any(zero)
    channels = "per-channel" if scale is not None and scale.size > 1 else "per-tensor"
    return f"{kind} {'zero point 0' if at_zero else 'zero point != 0'} {channels}"


def _constant(name: str, inits: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    return numpy_helper.to_array(inits[name]) if name in inits else None


def _float_ops(
    graph: onnx.GraphProto,
    producers: dict[str, onnx.NodeProto],
    readers: dict[str, list[onnx.NodeProto]],
) -> Counter[str]:
    """Compute ops (not Q/DQ, not shape plumbing) none of whose inputs comes from a DQ in the ONNX graph
    (a ReLU after a Conv counts: whether the runtime fuses it is the runtime's business)."""
    found: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in QUANT or node.op_type in PASS_THROUGH or node.op_type in ("Shape", "Constant"):
            continue
        sources = [_through(i, producers) for i in node.input if i]
        if sources and "DequantizeLinear" not in sources:
            found[node.op_type] += 1
    return found
