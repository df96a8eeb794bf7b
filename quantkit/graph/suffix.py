"""The part of a model that computes differently from a base model: a candidate that changes one node
(a layer kept float32 in a float16 model) recomputes only that node and what depends on it. Run on the
tensors it reads, taken from one run of the base, it gives the candidate's outputs without running the
rest again (planner.suffix_screen).

"Computes alike" is decided structurally, never by name alone: a node is unchanged when the base has a
node of its name with the same serialized form whose inputs are all unchanged; an initializer when the
base holds the same bytes under its name; a graph input when the base has it with the same type (one
that an initializer backs, as IR 3 lists every weight, is that initializer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from quantkit.graph import model_io


@dataclass(frozen=True)
class Base:
    """What a candidate is compared with, read once from the base model: its nodes serialized by name,
    its initializers and its inputs' types."""

    nodes: dict[str, bytes]
    initializers: dict[str, onnx.TensorProto]
    inputs: dict[str, bytes]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> Base:
        graph = model.graph
        return cls(
            {node.name: node.SerializeToString(deterministic=True) for node in graph.node if node.name},
            {init.name: init for init in graph.initializer},
            {value.name: value.type.SerializeToString(deterministic=True) for value in graph.input},
        )


@dataclass(frozen=True)
class Suffix:
    model: onnx.ModelProto  # the changed nodes; outputs: the wanted tensors they make
    reads: tuple[str, ...]  # the base's tensors it reads (its graph inputs, fed from the base's run)
    passed: tuple[str, ...]  # wanted tensors the base's run gives as they are (no changed node makes them)


def downstream_reads(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, frozenset[str]]:
    """node -> the non-initializer tensors that it and every node depending on it read from outside them:
    what a candidate that changes only that node needs from the base's run (`model` is the base; a name
    it lacks is left out)."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    consumers: dict[str, list[int]] = {}
    for k, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(k)
    position = {node.name: k for k, node in enumerate(graph.node)}
    found = {}
    for name in (n for n in names if n in position):
        reached, stack = set(), [position[name]]
        while stack:
            k = stack.pop()
            if k not in reached:
                reached.add(k)
                stack.extend(j for out in graph.node[k].output for j in consumers.get(out, ()))
        made = {out for k in reached for out in graph.node[k].output}
        found[name] = frozenset(
            t for k in reached for t in graph.node[k].input if t and t not in made and t not in inits
        )
    return found


def suffix_of(
    candidate: onnx.ModelProto, base: Base, wanted: Sequence[str], fed: Mapping[str, np.ndarray]
) -> Suffix:
    """The nodes of `candidate` that compute differently from `base`, as a model of their own. wanted:
    the tensors measured; fed: the values of base tensors the suffix may read (their dtypes and shapes
    type its inputs). An unchanged tensor it reads that `fed` lacks is computed again from what fed holds
    (a Cast to float32 the base already had, now read by the changed node too); a graph input fed lacks
    raises KeyError, a model with subgraphs (If, Loop, Scan: what they read is not in their inputs)
    ValueError."""
    graph = candidate.graph
    if any(_has_subgraph(node) for node in graph.node):
        raise ValueError("a subgraph reads tensors of the graph around it without naming them as inputs")
    same = _unchanged(candidate, base)
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output}
    constant = {i.name for i in graph.initializer}
    picked = {k for k, node in enumerate(graph.node) if not all(out in same for out in node.output)}
    while True:  # an unchanged tensor not held is computed again, from what is
        used = {t for k in picked for t in graph.node[k].input if t and t not in constant}
        missing = {t for t in used if t not in fed and producer.get(t) not in picked}
        if not missing:
            break
        picked |= {producer[t] for t in missing}  # a graph input not held: KeyError
    changed = [graph.node[k] for k in sorted(picked)]
    made = {out for node in changed for out in node.output}
    read = {t for node in changed for t in node.input}
    initializers = [i for i in graph.initializer if i.name in read]
    reads = tuple(sorted(t for t in used if t not in made))
    inputs = [helper.make_tensor_value_info(t, _elem_type(fed[t]), fed[t].shape) for t in reads]
    outputs = [onnx.ValueInfoProto(name=t) for t in wanted if t in made]
    infos = [v for v in graph.value_info if v.name in made]
    sub = helper.make_graph(changed, graph.name, inputs, outputs, initializers, value_info=infos)
    model = helper.make_model(sub, opset_imports=candidate.opset_import, ir_version=candidate.ir_version)
    model.functions.extend(candidate.functions)
    return Suffix(model, reads, tuple(t for t in wanted if t not in made))


def _unchanged(candidate: onnx.ModelProto, base: Base) -> set[str]:
    """The tensors of `candidate` that hold what the same names hold in `base` on every input."""
    same = {""}
    for init in candidate.graph.initializer:
        if base.initializers.get(init.name) == init:  # protobuf's own comparison: no copy of the data
            same.add(init.name)
    weights = model_io.weight_inputs(candidate)  # an input an initializer backs is that initializer
    for value in candidate.graph.input:
        if value.name not in weights and base.inputs.get(value.name) == value.type.SerializeToString(
            deterministic=True
        ):
            same.add(value.name)
    for node in candidate.graph.node:
        alike = base.nodes.get(node.name) == node.SerializeToString(deterministic=True)
        if alike and all(t in same for t in node.input):
            same.update(node.output)
    return same


def _elem_type(value: np.ndarray) -> int:
    return int(helper.np_dtype_to_tensor_dtype(value.dtype))


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
