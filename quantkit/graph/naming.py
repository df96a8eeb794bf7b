"""Deterministic names for inserted tensors and nodes, unique even when the model already uses them."""

from __future__ import annotations

import onnx

from quantkit.graph.query import graphs_within


class Namer:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.taken: set[str] = names_within(model.graph)

    def fresh(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ... : the first not used anywhere in the model."""
        return fresh_name(base, self.taken)


def names_in(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name the graph (not its bodies) uses or declares."""
    taken = {n.name for n in graph.node} | {t.name for t in graph.initializer}
    for node in graph.node:
        taken.update(node.input)
        taken.update(node.output)
    taken.update(v.name for v in [*graph.input, *graph.output, *graph.value_info])
    return taken


def names_within(graph: onnx.GraphProto) -> set[str]:
    """Every name the graph and its If/Loop/Scan bodies use or declare: a body may not define a name the
    graph around it does (hq131 F3: an If branch's own 'r1_scale' met the Q/DQ scale named so, and
    onnxruntime refused the model written)."""
    return {name for body in graphs_within(graph) for name in names_in(body)}


def fresh_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_1`, `base_2`, ... : the first not in `taken`, which gets it."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def fresh_prefix(base: str, taken: set[str]) -> str:
    """`base`, or `base_1`, `base_2`, ...: the first that no name in `taken` extends as `<it>_...`, nor
    is itself unless it is `base` (the node a rewrite replaces): every name made as f"{prefix}_..." is
    then new (hq134 F1: a QuickGelu 'q' written out beside the model's own 'q_alpha' defined it twice)."""
    name, k = base, 0
    while (name != base and name in taken) or any(t.startswith(f"{name}_") for t in taken):
        k += 1
        name = f"{base}_{k}"
    return name
