"""The float16 rewrite: weights and compute in float16, chosen nodes kept float32, Casts at the borders.

Which nodes stay float32 is decided by the caller (quantkit.planner.fp16_plan); this module only rewrites:
float initializers read by float16 nodes are stored as float16 (never clamped: the planner keeps a node
whose weights do not fit float32), float Constant / ConstantOfShape values and Cast(to=FLOAT) inside the
float16 region become float16, and every float tensor that crosses between the regions gets one Cast
per direction. With keep_io_types the graph's inputs and outputs stay float32.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex

FLOAT16_MAX = 65504.0
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


@dataclass(frozen=True)
class Float16Rewrite:
    model: onnx.ModelProto
    casts: int  # Cast nodes inserted at region borders and graph edges
    initializers_float16: int


def rewrite(
    model: onnx.ModelProto, keep_float32: Iterable[str], keep_io_types: bool = True
) -> Float16Rewrite:
    """model: shape-inferred, every node named. keep_float32: names of nodes that stay float32."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep = set(keep_float32)
    index = GraphIndex(model)
    floats = {name for name in index.elem_types if index.is_float(name)}
    namer = Namer(out)
    half = {node.name: node.name not in keep for node in graph.node}

    # initializers: float16 where float16 nodes read them, a float32 copy kept where float32 nodes do
    inits = {i.name: i for i in graph.initializer if i.data_type == FLOAT}
    readers = {name: [node for node, _ in users] for name, users in index.consumers.items()}
    renamed: dict[str, str] = {}  # float32 initializer -> its float16 copy, when both are needed
    converted = 0
    for name, init in inits.items():
        users = readers.get(name, [])
        wants_half = any(half[n.name] for n in users)
        wants_full = any(not half[n.name] for n in users) or _is_graph_output(graph, name)
        if not wants_half:
            continue
        value = numpy_helper.to_array(init).astype(np.float16)
        converted += 1
        if wants_full:
            copy = namer.fresh(name + "_fp16")
            graph.initializer.append(numpy_helper.from_array(value, copy))
            renamed[name] = copy
        else:
            init.CopyFrom(numpy_helper.from_array(value, name))

    # the type each float tensor has after the rewrite
    produced_half = {o for node in graph.node if half[node.name] for o in node.output if o in floats}
    graph_inputs = {name for name in index.graph_inputs if name in floats}
    if not keep_io_types:
        produced_half |= graph_inputs
    half_tensors = produced_half | {
        n for n in inits if n not in renamed and any(half[u.name] for u in readers.get(n, []))
    }

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}

    def cast(tensor: str, to: int) -> str:
        key = (tensor, to)
        if key not in casts:
            suffix = "_fp16" if to == FLOAT16 else "_fp32"
            casts[key] = namer.fresh(tensor + suffix)
            node = helper.make_node(
                "Cast", [tensor], [casts[key]], name=namer.fresh(f"{tensor}_cast{suffix}"), to=to
            )
            new_nodes.append(node)
        return casts[key]

    for node in graph.node:
        want_half = half[node.name]
        for k, name in enumerate(node.input):
            if name not in floats:
                continue
            if want_half and name in renamed:
                node.input[k] = renamed[name]
                continue
            is_half = name in half_tensors
            if want_half and not is_half:
                node.input[k] = cast(name, FLOAT16)
            elif not want_half and is_half:
                node.input[k] = cast(name, FLOAT)
        if want_half:
            _retype_attributes(node)
        new_nodes.append(node)

    outputs_cast = 0
    for output in graph.output:
        if output.name not in floats:
            continue
        want_half = not keep_io_types
        if (output.name in half_tensors) != want_half:
            inner = namer.fresh(output.name + ("_fp32" if want_half else "_fp16"))
            for node in new_nodes:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if i == output.name else i for i in node.input]
            name = namer.fresh(f"{output.name}_cast")
            to = FLOAT16 if want_half else FLOAT
            new_nodes.append(helper.make_node("Cast", [inner], [output.name], name=name, to=to))
            outputs_cast += 1
        if want_half:
            output.type.tensor_type.elem_type = FLOAT16
    if not keep_io_types:
        for info in graph.input:
            if info.name in graph_inputs:
                info.type.tensor_type.elem_type = FLOAT16

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # the float types there are stale; inference restores what it can
    return Float16Rewrite(out, len(casts) + outputs_cast, converted)


def _is_graph_output(graph: onnx.GraphProto, name: str) -> bool:
    return any(o.name == name for o in graph.output)


def _retype_attributes(node: onnx.NodeProto) -> None:
    """Float32 types carried in a float16 node's attributes: Cast's target, constant values."""
    if node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name in ("value_float", "value_floats"):
                values = [attr.f] if attr.name == "value_float" else list(attr.floats)
                array = np.asarray(values if attr.name == "value_floats" else values[0], np.float16)
                node.ClearField("attribute")
                node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(array)))
                return
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = FLOAT16
        elif attr.name == "value" and attr.HasField("t") and attr.t.data_type == FLOAT:
            value = numpy_helper.to_array(attr.t).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(value, attr.t.name))
