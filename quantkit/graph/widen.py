"""Mixed-precision models read as float32: the 16-bit floats inside a model fed and read in float32.

Keras' mixed_float16 policy exports (tf2onnx) compute their convolutions in float16 between Casts and
keep float32 inputs and outputs; a model once converted to float16 by a tool that keeps its inputs
(quantkit --to fp16 among them) stores its weights in float16. Every float16 and bfloat16 value is
exactly a float32 one, so such a model is read as the float32 model it rounds: its 16-bit weights
widened, its Casts to 16 bits made Casts to float32, every declared 16-bit type made float32, at any
depth of If/Loop/Scan bodies. The model computes what it did, without the 16-bit rounding of its
activations. A model whose own inputs or outputs are 16-bit is left as it is (its interface would
change; the commands refuse it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.graph.query import graphs_within

HALF = frozenset({onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16})
FLOAT = onnx.TensorProto.FLOAT
# attributes that name an element type produced by the node (Cast's `to`, the random generators' and
# EyeLike's `dtype`)
TYPE_ATTRIBUTES = frozenset({"to", "dtype"})


@dataclass(frozen=True)
class Widened:
    model: onnx.ModelProto
    weights: int  # 16-bit initializers and constant tensors made float32
    casts: int  # Casts to a 16-bit type made Casts to float32 (and other type attributes)


def widenable(model: onnx.ModelProto) -> bool:
    """Whether the model's inputs and outputs are free of 16-bit floats (its insides may hold them)."""
    initializers = {t.name for t in model.graph.initializer}
    interface = [v for v in model.graph.input if v.name not in initializers] + list(model.graph.output)
    return not any(v.type.tensor_type.elem_type in HALF for v in interface)


def widen(model: onnx.ModelProto) -> Widened:
    """A copy of `model` with no 16-bit float inside (see the module's text); the model itself where it
    holds none or is not widenable."""
    if not widenable(model) or not _has_half(model):
        return Widened(model, 0, 0)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    weights = casts = 0
    for graph in graphs_within(out.graph):
        for tensor in graph.initializer:
            weights += _widen_tensor(tensor)
        for value in _values(graph):
            if value.type.tensor_type.elem_type in HALF:
                value.type.tensor_type.elem_type = FLOAT
        for node in graph.node:
            for attr in node.attribute:
                if _names_half(attr):
                    attr.i = FLOAT
                    casts += 1
                elif attr.type == onnx.AttributeProto.TENSOR:
                    weights += _widen_tensor(attr.t)
    return Widened(out, weights, casts)


def _has_half(model: onnx.ModelProto) -> bool:
    """Whether widen would change anything: a 16-bit tensor, declared type or type attribute."""
    for graph in graphs_within(model.graph):
        tensors = [*graph.initializer, *(a.t for n in graph.node for a in n.attribute if a.HasField("t"))]
        if any(t.data_type in HALF for t in tensors):
            return True
        if any(v.type.tensor_type.elem_type in HALF for v in _values(graph)):
            return True
        if any(_names_half(a) for n in graph.node for a in n.attribute):
            return True
    return False


def _values(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    return [*graph.input, *graph.output, *graph.value_info]


def _names_half(attr: onnx.AttributeProto) -> bool:
    """A Cast's `to` or a generator's `dtype` naming a 16-bit float."""
    return attr.name in TYPE_ATTRIBUTES and attr.type == onnx.AttributeProto.INT and attr.i in HALF


def _widen_tensor(tensor: onnx.TensorProto) -> int:
    """Make a 16-bit float tensor float32 in place (its name and any external-data fields kept out:
    the value is read first); 1 where it was one, else 0."""
    if tensor.data_type not in HALF:
        return 0
    value = numpy_helper.to_array(tensor).astype(np.float32)
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    return 1
