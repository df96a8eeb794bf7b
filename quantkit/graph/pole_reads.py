"""Float reads that blow up at 0 (a Div's divisor, Reciprocal, Log) take a quantized tensor's float value,
not its dequantized one: int8 makes every value within half a step of 0 exactly 0. afis's fingerprint
network divided by such a tensor, behind two Squeezes, in its atan2 expansion: NaN and Inf outputs.

After the Q/DQ rewrite, such a read is followed back through DequantizeLinear -> QuantizeLinear (of the
same scale: not a folded Mul/Div) to the float tensor the QuantizeLinear reads, and through value-moving
ops (Squeeze, Reshape, Transpose...) and elementwise arithmetic that read dequantized values, which are
copied to read float ones: the divisor is computed as in FP32 from the nearest float tensors.
"""

from __future__ import annotations

import onnx
from onnx import helper

from quantkit.graph.augment import SHARED_SCALE_OPS
from quantkit.graph.naming import Namer

POLE_READS = frozenset({("Div", 1), ("Reciprocal", 0), ("Log", 0)})  # (op type, input position)
MOVING_OPS = SHARED_SCALE_OPS | {"Identity"}  # data in input 0 only
# Arithmetic whose float result becomes 0 where its int8 inputs do (afis's atan2: y / (sqrt(x^2 + y^2) + x)
# with y quantized to 0): copied too, every input read float.
ARITHMETIC_OPS = frozenset({"Add", "Sub", "Mul", "Abs", "Neg", "Sqrt", "Max", "Min"})
COPIED_OPS = MOVING_OPS | ARITHMETIC_OPS
MAX_DEPTH = 16


def float_pole_reads(nodes: list[onnx.NodeProto], namer: Namer) -> list[onnx.NodeProto]:
    """Point every pole read of `nodes` (the rewritten graph, edited in place) at the float value of what
    it reads; returns the copies of value-moving ops that this needs, to be added to the graph."""
    producer = {out: node for node in nodes for out in node.output if out}
    added: list[onnx.NodeProto] = []
    copies: dict[str, str] = {}

    def float_of(tensor: str, depth: int) -> str:
        node = producer.get(tensor)
        if node is None or depth > MAX_DEPTH:
            return tensor
        if node.op_type == "DequantizeLinear":
            q = producer.get(node.input[0])
            same_scale = q is not None and q.op_type == "QuantizeLinear" and q.input[1] == node.input[1]
            return float_of(q.input[0], depth + 1) if q is not None and same_scale else tensor
        if tensor in copies or node.op_type not in COPIED_OPS:
            return copies.get(tensor, tensor)
        every = node.op_type in ARITHMETIC_OPS
        inputs = [float_of(name, depth + 1) if k == 0 or every else name for k, name in enumerate(node.input)]
        if inputs == list(node.input):
            return tensor
        outputs = [namer.fresh(f"{name}_float") if name else "" for name in node.output]  # Split: each part
        copy = helper.make_node(node.op_type, inputs, outputs, namer.fresh(node.name))
        copy.attribute.extend(node.attribute)
        copy.domain = node.domain
        added.append(copy)
        copies.update((name, out) for name, out in zip(node.output, outputs, strict=True) if name)
        return copies[tensor]

    for node in nodes:
        for position, name in enumerate(node.input):
            if (node.op_type, position) in POLE_READS and name:
                node.input[position] = float_of(name, 0)
    return added
