"""Which quantized ops run faster in float on this CPU, from measured op times (issue 17, point 3).

planner.payoff is a model of onnxruntime's kernels made on one CPU; this decides from times measured on
the machine at hand. A *unit* is one op of the plan's integer path with the Relu / Clip ops folded into
it. Each unit costs int8_us as the INT8 model ran it and float_us as a float model ran it; a tensor
between an int8 unit and a float op costs one conversion pass (QuantizeLinear or DequantizeLinear:
evaluate.op_times.PassCost). Choosing which units stay int8 to minimise the sum is a binary labelling
whose pairwise costs are paid only where two neighbours differ: an s-t minimum cut, solved exactly by
Dinic's max flow (a few hundred nodes). The source side stays int8, the sink side is float; ops outside
the plan are tied to the sink. Ties stay int8, and a unit goes float only when that is FLOAT_MARGIN
cheaper than its int8 time: times are measured on a shared machine, and a float op where int8 was as
good costs accuracy for nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from quantkit.evaluate.op_times import PassCost
from quantkit.graph.query import GraphIndex
from quantkit.results import QuantPlan

FLOAT_MARGIN = 0.10  # a unit's float time counts 10 % more than measured
SOURCE, SINK = "<int8>", "<float>"
EPSILON = 1e-9


@dataclass(frozen=True)
class Cut:
    """float_nodes: the plan's quantized nodes to keep float (folded Relu / Clip follow their writer);
    int8_us, cut_us: the estimated time of the plan's units and conversions as planned and after the cut
    (microseconds per run, margins included)."""

    float_nodes: tuple[str, ...]
    int8_us: float
    cut_us: float


def cheapest(
    index: GraphIndex,
    plan: QuantPlan,
    float_us: Mapping[str, float],
    int8_us: Mapping[str, float],
    elements: Mapping[str, float],
    passes: PassCost,
    margin: float = FLOAT_MARGIN,
) -> Cut:
    """The plan's units labelled int8 or float at the least estimated time. float_us / int8_us: node ->
    microseconds per run (a node missing costs 0); elements: tensor -> elements per run; margin: how much
    more a unit's float time counts than measured (negative: less, for the plans about as fast)."""
    unit = _units(index, plan)
    graph = _Flow()
    members: dict[str, list[str]] = {}
    for node, head in unit.items():
        members.setdefault(head, []).append(node)
    for head, nodes in members.items():
        as_float = (1.0 + margin) * sum(float_us.get(n, 0.0) for n in nodes)
        as_int8 = sum(int8_us.get(n, 0.0) for n in nodes)
        graph.add(SOURCE, head, as_float)  # cut when the unit goes float
        graph.add(head, SINK, as_int8)  # cut when it stays int8
    planned = sum(graph.capacity(head, SINK) for head in members)
    for node in index.nodes:
        reader = unit.get(node.name, SINK)
        for tensor in node.input:
            if not tensor or index.is_constant(tensor):
                continue
            producer = index.producer.get(tensor)
            source = unit.get(producer.name, SINK) if producer is not None else SINK
            if source == reader:
                continue
            cost = passes.us(elements.get(tensor, 0.0))
            graph.add(source, reader, cost)
            graph.add(reader, source, cost)
            if SINK in (source, reader):
                planned += cost  # a conversion the INT8 plan has
    flow = graph.max_flow(SOURCE, SINK)
    floated = graph.sink_side() & set(members)
    chosen = tuple(sorted(n for head in floated for n in members[head] if n in plan.quantized_nodes))
    return Cut(chosen, planned, flow)


def _units(index: GraphIndex, plan: QuantPlan) -> dict[str, str]:
    """Quantized node or fold -> its unit's head (a fold joins the unit of the node writing its input)."""
    unit = {name: name for name in plan.quantized_nodes}
    for fold in plan.folds:
        writer = index.producer.get(index.by_name[fold].input[0])
        while writer is not None and writer.name in plan.folds:
            writer = index.producer.get(writer.input[0])
        unit[fold] = writer.name if writer is not None and writer.name in unit else fold
    return unit


class _Flow:
    """A flow network on named nodes: Dinic's max flow, then the sink side of the minimum cut."""

    def __init__(self) -> None:
        self.residual: dict[str, dict[str, float]] = {}

    def add(self, a: str, b: str, capacity: float) -> None:
        self.residual.setdefault(a, {})
        self.residual.setdefault(b, {})
        self.residual[a][b] = self.residual[a].get(b, 0.0) + max(capacity, 0.0)
        self.residual[b].setdefault(a, 0.0)

    def capacity(self, a: str, b: str) -> float:
        return self.residual.get(a, {}).get(b, 0.0)

    def max_flow(self, source: str, sink: str) -> float:
        total = 0.0
        while True:
            level = self._levels(source)
            if sink not in level:
                return total
            progress = {node: list(self.residual[node]) for node in self.residual}
            while True:
                pushed = self._push(source, sink, float("inf"), level, progress)
                if pushed <= EPSILON:
                    break
                total += pushed

    def _levels(self, source: str) -> dict[str, int]:
        level, queue = {source: 0}, deque([source])
        while queue:
            node = queue.popleft()
            for nxt, capacity in self.residual[node].items():
                if capacity > EPSILON and nxt not in level:
                    level[nxt] = level[node] + 1
                    queue.append(nxt)
        return level

    def _push(
        self, node: str, sink: str, limit: float, level: dict[str, int], progress: dict[str, list[str]]
    ) -> float:
        """One augmenting path of the level graph (iterative, so that deep graphs do not recurse)."""
        path: list[str] = [node]
        while path:
            here = path[-1]
            if here == sink:
                amount = min(self.residual[a][b] for a, b in pairwise(path))
                amount = min(amount, limit)
                for a, b in pairwise(path):
                    self.residual[a][b] -= amount
                    self.residual[b][a] += amount
                return amount
            edges = progress[here]
            while edges:
                nxt = edges[-1]
                if self.residual[here][nxt] > EPSILON and level.get(nxt, -1) == level[here] + 1:
                    path.append(nxt)
                    break
                edges.pop()
            else:
                path.pop()  # a dead end: no path through it in this level graph
                if path:
                    progress[path[-1]].pop()
        return 0.0

    def sink_side(self) -> set[str]:
        """The nodes that still reach the sink through residual capacity: the smallest float side."""
        reaches, queue = {SINK}, deque([SINK])
        while queue:
            node = queue.popleft()
            for other in self.residual[node]:  # every edge was added with its reverse
                if other not in reaches and self.residual[other][node] > EPSILON:
                    reaches.add(other)
                    queue.append(other)
        return reaches
