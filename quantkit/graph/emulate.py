"""A 16-bit model that onnxruntime cannot run (bfloat16: no CPU kernels for Conv, MatMul, Add, Relu),
emulated by one it can: the same graph with every tensor the model stores in the 16-bit type held in
float32 but rounded to that type (Cast float -> bfloat16 -> float, round to nearest even), and every op
computing in float32. That is 16-bit storage with float32 arithmetic inside each op, which is what
bfloat16 hardware does (float32 accumulation); it is what the fallback, the floors and the smoke test
measure for such a model, and the summary says so.

Built from the rewritten model itself (graph.fp16_rewrite's `stored` tensors), so the emulation checks the
graph that is written: its Casts, its float32 region, its initializers' stored values. Tensor names stay:
a name read as an extra output is the same tensor, float32 in the emulation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit.graph.naming import Namer

FLOAT = TensorProto.FLOAT
# ops whose output is a sequence, which a Cast cannot round (torch.onnx's dynamo exports of split/cat)
SEQUENCE_OPS = frozenset(
    {"SequenceConstruct", "SequenceInsert", "SequenceErase", "SequenceEmpty", "SplitToSequence"}
)


def emulate(model: onnx.ModelProto, stored: Iterable[str], elem_type: int) -> onnx.ModelProto:
    """model: a rewritten model; stored: the tensors it holds in elem_type. Returns its float32
    emulation: those tensors rounded to elem_type by a Cast pair right where they are made, initializers
    and constant values of elem_type as float32 (exact), graph inputs and outputs float32."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    low = set(stored)
    namer = Namer(out)
    for init in graph.initializer:
        if init.data_type == elem_type:
            init.CopyFrom(_as_float32(init))
    nodes: list[onnx.NodeProto] = []

    def rounding(source: str, target: str) -> None:
        between = namer.fresh(target + "_stored")
        nodes.append(helper.make_node("Cast", [source], [between], name=namer.fresh(between), to=elem_type))
        nodes.append(helper.make_node("Cast", [between], [target], name=namer.fresh(target), to=FLOAT))

    renamed_inputs: dict[str, str] = {}
    for info in graph.input:
        if info.type.tensor_type.elem_type == elem_type:
            info.type.tensor_type.elem_type = FLOAT
            if info.name in low:  # the caller feeds elem_type: float32 samples arrive rounded
                renamed_inputs[info.name] = namer.fresh(info.name + "_rounded")
                rounding(info.name, renamed_inputs[info.name])
    for node in graph.node:
        node.input[:] = [renamed_inputs.get(name, name) for name in node.input]
        _lower_attributes(node, elem_type)
        exact = {}
        for k, name in enumerate(node.output):
            if name in low and node.op_type not in SEQUENCE_OPS:  # elements rounded where they were made
                exact[name] = namer.fresh(name + "_exact")
                node.output[k] = exact[name]
        nodes.append(node)
        for name, source in exact.items():
            rounding(source, name)
    for info in graph.output:
        if info.type.tensor_type.elem_type == elem_type:
            info.type.tensor_type.elem_type = FLOAT
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return out


def stored_as(model: onnx.ModelProto, elem_type: int) -> frozenset[str]:
    """The tensors `model` holds in elem_type, read from its types (shape inference, not strict):
    initializers, graph inputs and outputs, node outputs."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    typed = [*graph.input, *graph.output, *graph.value_info]
    return frozenset(
        [i.name for i in graph.initializer if i.data_type == elem_type]
        + [v.name for v in typed if v.type.tensor_type.elem_type == elem_type]
    )


def _as_float32(tensor: TensorProto) -> TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def _lower_attributes(node: onnx.NodeProto, elem_type: int) -> None:
    """A Cast to elem_type casts to float32 (its output is rounded after it); a constant value of
    elem_type becomes float32, exactly."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == elem_type:
            attr.i = FLOAT
        elif attr.HasField("t") and attr.t.data_type == elem_type:
            attr.t.CopyFrom(_as_float32(attr.t))
