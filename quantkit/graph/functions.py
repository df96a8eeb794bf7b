"""Model-local functions inlined, and the If nodes whose condition the graph fixes taken out.

torch.onnx's dynamo exporter (torch 2.1 to 2.6 without its optimizer) writes a model as calls of
functions defined inside it, and onnxscript's torch_lib functions branch on a tensor's rank
(`If(Not(Equal(Size(Shape(x)), 4)))`). onnxruntime runs such a model; quantkit called its functions
custom ops and refused it (hunt41 F2: BlazeFace, 181 functions). On the way in, the functions are
inlined (onnx.inliner) and each If whose condition follows from constants and the ranks shape inference
gives is replaced by the branch it takes, until none is left: the Convs inside become the graph's own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx.inliner
from onnx import helper, numpy_helper

from quantkit.errors import ModelError
from quantkit.graph import model_io
from quantkit.graph.naming import fresh_name, names_in
from quantkit.graph.query import GraphIndex, bodies, captured, constant_value, graphs_within

ROUNDS = 256  # rounds of folding (each If uncovers the rank the next tests; BlazeFace: 95), at most
SMALL = 64  # elements: the constants a condition is computed from are scalars and short vectors

_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {"Not": np.logical_not, "Identity": np.asarray}
_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Equal": np.equal,
    "And": np.logical_and,
    "Or": np.logical_or,
    "Xor": np.logical_xor,
    "Greater": np.greater,
    "Less": np.less,
    "GreaterOrEqual": np.greater_equal,
    "LessOrEqual": np.less_equal,
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
}


def inline_functions(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, int]:
    """(the model with its local functions inlined and the Ifs they fix folded, how many functions, how
    many Ifs folded); the model itself where it defines no function."""
    if not model.functions:
        return model, 0, 0
    try:
        inlined = onnx.inliner.inline_local_functions(_with_defaults(model))
    except Exception as exc:  # onnx's C++ inliner raises bare RuntimeError
        raise ModelError(
            f"the model's local functions could not be inlined ({exc}); export it again with "
            "torch.onnx.export(..., dynamo=False) or run onnxscript's optimizer on it"
        ) from exc
    del inlined.functions[:]
    folded = 0
    for _ in range(ROUNDS):
        done = _fold_round(inlined)
        folded += done
        if not done:
            break
    _drop_dead(inlined.graph)
    used = {n.domain for n in inlined.graph.node} | {"", "ai.onnx"}
    kept = [o for o in inlined.opset_import if o.domain in used]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    return inlined, len(model.functions), folded


def _with_defaults(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of model whose calls of its local functions (in the graph, its bodies and the functions
    themselves) carry each attribute the call leaves out at the function's default (attribute_proto):
    onnx.inliner drops the defaults (hq110 F1: a LeakyRelu's alpha=@alpha, default 0.5, became 0.01;
    every format was written at 7 dB, exit 0)."""
    defaults = {  # by overload too (IR 10: hq116 F3, two overloads' defaults were one's)
        (f.domain, f.name, getattr(f, "overload", "")): list(f.attribute_proto)
        for f in model.functions
        if f.attribute_proto
    }
    if not defaults:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graphs = [g for f in copy.functions for g in _function_graphs(f)]
    graphs += [list(g.node) for g in graphs_within(copy.graph)]
    for nodes in graphs:
        for node in nodes:
            given = {a.name for a in node.attribute}
            for attribute in defaults.get((node.domain, node.op_type, getattr(node, "overload", "")), ()):
                if attribute.name not in given:
                    node.attribute.append(attribute)
    return copy


def _function_graphs(function: onnx.FunctionProto) -> list[list[onnx.NodeProto]]:
    """The node lists of a function: its own and those of every body inside it."""
    lists: list[list[onnx.NodeProto]] = [list(function.node)]
    for node in function.node:
        lists += [list(g.node) for body in bodies(node) for g in graphs_within(body)]
    return lists


def _fold_round(model: onnx.ModelProto) -> int:
    """Fold, in place, every top-level If whose condition is known; how many. Ranks come from shape
    inference without the model's value_info, which can contradict the tensors (hq110 F2: an input
    declared [N, 8] that is [N, 8, 16, 16] took the other branch; prepare drops such declarations only
    later)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    try:
        typed = model_io.infer_shapes(bare)
    except ModelError:
        typed = bare
    ranks = _ranks(typed)
    known = _constants(model.graph)
    taken: dict[int, onnx.GraphProto] = {}
    for index, node in enumerate(model.graph.node):
        _evaluate(node, known, ranks)
        if node.op_type == "If" and node.input[0] in known:
            branch = "then_branch" if bool(np.asarray(known[node.input[0]]).reshape(-1)[0]) else "else_branch"
            taken[index] = next(a.g for a in node.attribute if a.name == branch)
    if not taken:
        return 0
    names = names_in(model.graph)
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(model.graph.node):
        if index in taken:
            nodes += _branch_nodes(node, taken[index], model.graph, names)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(taken)


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank by tensor name: the declared and inferred ones, and the initializers'."""
    return {**GraphIndex(model).ranks, **{t.name: len(t.dims) for t in model.graph.initializer}}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """The small initializers, but those the graph lists as inputs too: a caller may feed another value
    (hq110 F9: an overridable flag's default branch was baked in and the input removed)."""
    fed = {i.name for i in graph.input}
    small = (t for t in graph.initializer if int(np.prod(t.dims)) <= SMALL and t.name not in fed)
    return {t.name: numpy_helper.to_array(t) for t in small}


def _evaluate(node: onnx.NodeProto, known: dict[str, np.ndarray], ranks: dict[str, int]) -> None:
    """Add the node's output to `known` where it follows from known values (and, for Size(Shape(x)),
    x's rank)."""
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return
    out, op = node.output[0], node.op_type
    if op == "Constant":
        value = constant_value(node)
        if value is not None and value.size <= SMALL:
            known[out] = value
        return
    if op == "Shape" and len(node.attribute) == 0 and node.input[0] in ranks:
        known[f"{out}\0rank"] = np.asarray(ranks[node.input[0]], np.int64)  # Size reads it
        return
    if op == "Size" and f"{node.input[0]}\0rank" in known:
        known[out] = known[f"{node.input[0]}\0rank"]
        return
    args = [known.get(name) for name in node.input]
    if any(a is None for a in args):
        return
    values = [np.asarray(a) for a in args if a is not None]
    if op in _UNARY and len(values) == 1:
        known[out] = _UNARY[op](values[0])
    elif op in _BINARY and len(values) == 2:
        known[out] = _BINARY[op](values[0], values[1])
    elif op == "CastLike" and len(values) == 2:
        known[out] = values[0].astype(values[1].dtype)
    elif op == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), 0)
        if to:
            known[out] = values[0].astype(helper.tensor_dtype_to_np_dtype(to))


def _branch_nodes(
    node: onnx.NodeProto, branch: onnx.GraphProto, graph: onnx.GraphProto, names: set[str]
) -> list[onnx.NodeProto]:
    """The branch's nodes in the If's place: the tensors it makes renamed apart, its outputs written
    under the If's output names, its initializers moved to the graph."""
    made = {t.name for t in branch.initializer} | {o for n in branch.node for o in n.output if o}
    ends = dict(zip((o.name for o in branch.output), node.output, strict=True))
    renamed = {name: ends.get(name) or fresh_name(f"{node.name or 'if'}/{name}", names) for name in made}
    for tensor in branch.initializer:
        moved = onnx.TensorProto()
        moved.CopyFrom(tensor)
        moved.name = renamed[tensor.name]
        graph.initializer.append(moved)
    nodes = []
    for inner in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.input[:] = [renamed.get(n, n) for n in copy.input]
        copy.output[:] = [renamed.get(n, n) for n in copy.output]
        copy.name = fresh_name(f"{node.name or 'if'}/{inner.name or inner.op_type}", names)
        _rename_reads(copy, renamed)
        nodes.append(copy)
    for output, target in ends.items():
        if output not in made:  # the branch hands on a tensor of the outer graph
            nodes.append(helper.make_node("Identity", [output], [target], fresh_name(f"{target}/id", names)))
    return nodes


def _rename_reads(node: onnx.NodeProto, renamed: dict[str, str]) -> None:
    """Inside the node's own bodies (a nested If's, at any depth), reads of the branch's tensors renamed."""
    for outer in bodies(node):
        for body in graphs_within(outer):
            for inner in body.node:
                inner.input[:] = [renamed.get(n, n) for n in inner.input]


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Remove, in place, the nodes nothing reads (the rank tests of the folded Ifs)."""
    ends = {o.name for o in graph.output}
    while True:
        read = {name for n in graph.node for name in (*n.input, *captured(n))} | ends
        alive = [n for n in graph.node if any(o in read for o in n.output if o)]
        if len(alive) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(alive)
