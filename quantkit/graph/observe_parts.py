"""Tensors observed in groups (calib.collect.fetch_groups), each group by a model of its own that computes
only what the group needs.

onnxruntime runs every node of a graph whatever a run fetches: a copy of the model that outputs an early
group of tensors still computes the rest of the network. Observed in groups of the graph's order, each
group's model keeps only the nodes its tensors depend on, and the group that ends the graph (which needs
all of it) goes first, carrying the model's own outputs (calibrate's reference check reads them from the
first session). A 512x512 low-light net (hunt29's PairLIE, 1.6 GB of observed tensors a sample, four
groups) ran four whole forward passes a sample, 2.2 s each; the parts take 2.2, 0.65, 1.2 and 1.9 s, and
give the same statistics (calibrate on 6 samples: 78 -> 56 s, the table byte for byte the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from quantkit.graph.augment import with_outputs


def in_graph_order(model: onnx.ModelProto, names: Sequence[str]) -> list[str]:
    """names ordered by the position of the node that makes each (graph inputs and initializers first,
    names no node makes keep their order among them)."""
    position = {out: k for k, node in enumerate(model.graph.node) for out in node.output if out}
    return sorted(names, key=lambda name: position.get(name, -1))


def last_first(groups: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    """Groups of tensors in the graph's order with the last one moved first (it carries the outputs)."""
    ordered = [tuple(group) for group in groups]
    return tuple(ordered[-1:] + ordered[:-1])


def group_model(model: onnx.ModelProto, group: Sequence[str], carries_outputs: bool) -> onnx.ModelProto:
    """A copy of `model` that outputs `group` (float tensors) and holds only the nodes they depend on and
    the initializers those read; with carries_outputs, the whole model with the model's outputs before
    them (graph.augment.with_outputs). Graph inputs stay, fed or not. A model with control flow (If,
    Loop, Scan) keeps every node, as before: its subgraphs read names of the outer graph."""
    if carries_outputs or _has_subgraphs(model):
        return with_outputs(model, list(group))
    return _pruned(model, list(group))


def _has_subgraphs(model: onnx.ModelProto) -> bool:
    graphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    return any(a.type in graphs for node in model.graph.node for a in node.attribute)


def _pruned(model: onnx.ModelProto, group: list[str]) -> onnx.ModelProto:
    nodes = model.graph.node
    producer = {out: k for k, node in enumerate(nodes) for out in node.output if out}
    needed: set[int] = set()
    stack = [producer[name] for name in group if name in producer]
    while stack:
        k = stack.pop()
        if k in needed:
            continue
        needed.add(k)
        stack.extend(producer[name] for name in nodes[k].input if name in producer)
    kept = [node for k, node in enumerate(nodes) if k in needed]
    read = {name for node in kept for name in node.input} | set(group)
    inputs = {value.name for value in model.graph.input}
    part = onnx.ModelProto()
    part.CopyFrom(model)
    graph = part.graph
    del graph.node[:]
    graph.node.extend(kept)
    keep_init = [t for t in model.graph.initializer if t.name in read or t.name in inputs]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    made = read | {out for node in kept for out in node.output}
    keep_info = [v for v in model.graph.value_info if v.name in made]
    del graph.value_info[:]
    graph.value_info.extend(keep_info)
    del graph.output[:]
    for name in dict.fromkeys(group):
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return part
