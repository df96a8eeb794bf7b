"""Each quantized activation's params: tensors onnxruntime fuses only with equal scales share one set
(rule 4 of planner.core), and scaled reads take their source's."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from quantkit.graph.augment import SHARED_SCALE_OPS
from quantkit.planner.planning_state import Planning
from quantkit.planner.range_plan import activation_params
from quantkit.results import (
    QuantParams,
    TensorStats,
)


def tensor_params(state: Planning) -> tuple[dict[str, QuantParams], set[str]]:
    """Params per quantized tensor; tensors tied by shared-scale ops get those of the widest member.
    Also returns the tensors that share their params with another."""
    reads = {state.folds[n] for n in state.reads}  # their params are their sources' (scaled_reads)
    groups = _UnionFind(sorted(state.q - reads))
    clipped = _clipped(state)
    for node in state.index.nodes:
        if state.quantized.get(node.name) in SHARED_SCALE_OPS:
            for out in node.output:
                # an output whose Relu is folded into its Q is quantized as that Relu's output (hunt53 C2:
                # 5 MaxPools of a TFLite SSD got scales of their own and ran in float between DQ and Q;
                # check failed convert's own model): tied where the input holds no negative value, so
                # the shared range still starts at 0 and the Q still clips
                if out in clipped and state.range_of(node.input[0])[0] >= 0.0:
                    out = clipped[out]
                if out:
                    groups.union(node.input[0], out)
    params: dict[str, QuantParams] = {}
    tied: set[str] = set()
    for members in groups.groups():
        if len(members) > 1:
            tied.update(members)
        widest = max(members, key=lambda n: (_width(state.table.stats[n]), n))
        lo, hi = state.range_of(widest)
        shared = activation_params(lo, hi, state.config.activations)
        for name in members:
            state.ranges[name] = (lo, hi)
            params[name] = shared
    for weight in state.weights:
        if weight.kind == "constant" and weight.initializer not in params:
            value = state.index.constant(weight.initializer)
            assert value is not None
            params[weight.initializer] = activation_params(
                float(value.min()), float(value.max()), state.config.activations
            )
    return dict(sorted(params.items())), tied


def scaled_reads(state: Planning, activations: dict[str, QuantParams]) -> None:
    """A scaled read's params: its source's (final, after rebalancing) with the scale times k. A source
    left float for a rebalancing Mul leaves the read to run as its Mul/Div with params of its own."""
    for node_name, (source, k) in list(state.reads.items()):
        out = state.folds[node_name]
        if source in activations:
            params = activations[source]
            activations[out] = QuantParams(
                (params.scale * np.float32(k)).astype(np.float32), params.zero_point
            )
            continue
        del state.folds[node_name], state.reads[node_name]
        if out in state.q:
            activations[out] = activation_params(*state.range_of(out), state.config.activations)


def _clipped(state: Planning) -> dict[str, str]:
    """A tensor whose Relu or Clip(0, c) is folded into its Q -> that clip's output, the tensor quantized."""
    return {
        node.input[0]: state.folds[node.name]
        for node in state.index.nodes
        if node.name in state.folds and node.op_type in ("Relu", "Clip")
    }


def _width(stats: TensorStats) -> float:
    return stats.maximum - min(stats.minimum, 0.0)


class _UnionFind:
    def __init__(self, names: Iterable[str]) -> None:
        self.parent = {n: n for n in names}

    def find(self, name: str) -> str:
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> None:
        if a in self.parent and b in self.parent:
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[str]]:
        out: dict[str, list[str]] = {}
        for name in self.parent:
            out.setdefault(self.find(name), []).append(name)
        return [sorted(v) for _, v in sorted(out.items())]
