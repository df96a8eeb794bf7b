"""Nodes put in topological order: ONNX requires it, onnxruntime sorts a graph itself on load.

onnxconverter-common's float16 conversion appends the Casts it adds at the graph's inputs to the end of
the node list (img.ly's IS-Net background remover: `graph_input_cast_0` read by the first Conv, listed
1,900 nodes before it), so onnx.checker refuses a model that every runtime runs. Sorting changes no
value; where nodes are already in order the graph is left as it is.
"""

from __future__ import annotations

import heapq

import onnx


def sort_nodes(graph: onnx.GraphProto) -> bool:
    """Reorder graph's nodes (and every subgraph's, in place) so that each comes after the producers of
    its inputs, keeping the file's order wherever it already allows: among the nodes ready at any point,
    the one listed first goes first. Names produced by no node of a graph (its inputs, initializers, an
    outer scope's tensors, or a dangling name the checker then reports) count as available. Returns
    whether any node moved."""
    moved = False
    for node in graph.node:
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                moved = sort_nodes(body) or moved
    nodes = list(graph.node)
    producer = {name: k for k, node in enumerate(nodes) for name in node.output if name}
    waits: list[set[int]] = []
    for k, node in enumerate(nodes):
        waits.append({producer[n] for n in reads(node) if n in producer and producer[n] != k})
    readers: dict[int, list[int]] = {}
    for k, needed in enumerate(waits):
        for p in needed:
            readers.setdefault(p, []).append(k)
    ready = [k for k, needed in enumerate(waits) if not needed]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for r in readers.get(k, []):
            waits[r].discard(k)
            if not waits[r]:
                heapq.heappush(ready, r)
    if len(order) < len(nodes):  # a cycle: nothing to sort it into; the checker says so
        return moved
    if order == list(range(len(nodes))):
        return moved
    del graph.node[:]
    graph.node.extend(nodes[k] for k in order)
    return True


def passes_sorted(model: onnx.ModelProto) -> bool:
    """Whether the model passes onnx.checker once its nodes are in topological order (sorted in place);
    False where sorting moves nothing or the checker still refuses it."""
    if not sort_nodes(model.graph):
        return False
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError):
        return False
    return True


def reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name the node reads: its inputs and the outer-scope names its subgraphs read."""
    names = {n for n in node.input if n}
    for attribute in node.attribute:
        for body in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
            names |= _outer_reads(body)
    return names


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads that it does not define itself."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {n for node in graph.node for n in node.output}
    return {n for node in graph.node for n in reads(node) if n not in defined}
