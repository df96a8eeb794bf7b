"""onnxruntime's kernel times, attributed to the nodes of the model they were made from.

onnxruntime runs an optimized graph: QDQ groups fused into QLinearConv / QLinearMul..., Sigmoid and Mul
fused into QuickGelu, float Convs rewritten to NCHWc, layout Transposes inserted. Its profiler names
each kernel after what it came from, in four forms (onnxruntime 1.18-1.32): the node's own name; the
name with `_token_N` suffixes (nodes the layout transformer copied); `Name/SomethingFusion/` (a fusion,
named after the node it ends in); `tensor_nchwc` (an NCHWc Conv, named after the tensor the original
Conv writes). Kernels in none of these forms (inserted Reorder / Transpose nodes, the Q/DQ nodes of a
QDQ model) stay unattributed: they belong to no node of the plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from quantkit.evaluate.profiler import KernelTime

TOKEN = re.compile(r"(_token_\d+)+$")
CONVERSION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
MIN_PASS_ELEMENTS = 4096  # smaller conversions are mostly the pass's fixed cost: not used for the rate
# A conversion pass where the profile has none large enough to measure one (0.3-0.5 ns per element on
# AVX2, about 1 us fixed: planner.payoff's figures).
DEFAULT_NS_PER_ELEMENT = 0.5
FIXED_PASS_US = 1.0


@dataclass(frozen=True)
class PassCost:
    """What one QuantizeLinear or DequantizeLinear pass costs: fixed_us + elements * ns_per_element."""

    ns_per_element: float
    fixed_us: float = FIXED_PASS_US

    def us(self, elements: float) -> float:
        return self.fixed_us + elements * self.ns_per_element / 1000.0


def node_times(
    nodes: Iterable[str], profiled: onnx.ModelProto, kernels: list[KernelTime]
) -> dict[str, float]:
    """node name (of `nodes`) -> microseconds per run of the kernels made of it. `profiled`: the model
    that ran (its graph names the tensors an NCHWc kernel is named after); `nodes`: the names to attribute
    to (the prepared model's, which the profiled model keeps for the nodes it did not add)."""
    names = set(nodes)
    writer = {out: node.name for node in profiled.graph.node for out in node.output}
    found: dict[str, float] = {}
    for kernel in kernels:
        owner = _owner(kernel.name, names, writer)
        if owner is not None:
            found[owner] = found.get(owner, 0.0) + kernel.us
    return found


def _owner(kernel: str, names: set[str], writer: dict[str, str]) -> str | None:
    for candidate in (kernel, TOKEN.sub("", kernel), kernel.split("/")[0]):
        if candidate in names:
            return candidate
    if kernel.endswith("_nchwc"):
        tensor = TOKEN.sub("", kernel[: -len("_nchwc")])
        owner = writer.get(tensor)
        return owner if owner in names else None
    return None


def pass_cost(kernels: list[KernelTime]) -> PassCost:
    """The conversion pass's rate measured on the profile's Q/DQ kernels of at least MIN_PASS_ELEMENTS
    elements (median ns per element beyond the fixed cost), else DEFAULT_NS_PER_ELEMENT."""
    rates = [
        max(k.us - FIXED_PASS_US, 0.0) * 1000.0 / k.out_elements
        for k in kernels
        if k.op_type in CONVERSION_OPS and k.out_elements >= MIN_PASS_ELEMENTS
    ]
    return PassCost(float(np.median(rates)) if rates else DEFAULT_NS_PER_ELEMENT)
