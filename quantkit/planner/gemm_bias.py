"""A quantized MatMul's bias Add, planned as the int32 bias of the Gemm onnxruntime fuses the two into.

onnxruntime fuses a MatMul whose only reader is an Add of a bias [N] into a Gemm (MatMulAddFusion, one
of its graph optimizations) before its Q/DQ fusions. With the MatMul's inputs dequantized and the bias
float, that Gemm has no integer kernel and runs in float on dequantized weights; with the bias
dequantized from int32 at the scale input x weight, as a Conv's or a Gemm's bias is, it becomes QGemm.
Measured here on one thread, [1, 197, 384] x [384, 1536] with a per-channel weight: 3.4 ms as a float
Gemm, 0.54 ms as QGemm, 0.66 ms as QLinearMatMul with an output Q/DQ pair and a float Add (what the plan
did for 2-D inputs before); a fixed-size timm DeiT-Tiny's inputs-only plan went from 1.14x to 1.36x FP32,
32.8 to 37.6 dB held out. It fuses where the MatMul's input has rank 2, or a larger rank with every size
known (it reshapes around the Gemm): a model whose inputs are all fixed, where onnxruntime infers every
size. Elsewhere it keeps MatMulIntegerToFloat and the Add, and the int32 bias costs one dequantized [N]
vector.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import onnx

from quantkit.config import Target
from quantkit.graph.query import GraphIndex
from quantkit.planner.planning_state import EXCLUDED, Planning
from quantkit.results import WeightPlan


def fused_with_add(index: GraphIndex, node: onnx.NodeProto) -> tuple[onnx.NodeProto, int] | None:
    """(the Add, the position of its bias) where onnxruntime fuses MatMul `node` and its bias Add into a
    Gemm: a constant 2-D weight, an input of rank 2 or of fixed sizes, the Add its only reader, a finite
    float32 bias [N]; else None."""
    if node.op_type != "MatMul" or node.output[0] in index.graph_outputs:
        return None
    rank, weight = index.ranks.get(node.input[0]), index.constant(node.input[1])
    if (
        rank is None
        or rank < 2
        or weight is None
        or weight.ndim != 2
        or (rank > 2 and not index.fixed_inputs)
    ):
        return None
    readers = index.consumers.get(node.output[0], [])
    if len(readers) != 1 or readers[0][0].op_type != "Add" or len(readers[0][0].input) != 2:
        return None
    add, position = readers[0][0], 1 - readers[0][1]
    bias = index.constant(add.input[position])
    if bias is None or bias.dtype != np.float32 or bias.shape != (weight.shape[1],):
        return None
    return (add, position) if np.isfinite(bias).all() else None


def gemm_biases(
    index: GraphIndex, quantized: Mapping[str, str], weights: Sequence[WeightPlan], kept: Collection[str]
) -> list[WeightPlan]:
    """The int32 biases to plan: one for each quantized MatMul with a weight (weights: the plan's) whose
    bias Add (fused_with_add) is not in `kept` (quantized or folded: its output pair is the plan's), on
    the Add, its scales the MatMul's (`layer`)."""
    weighted = {w.node for w in weights if w.kind == "weight"}
    planned = {w.layer for w in weights if w.layer}
    found = []
    for name, op in sorted(quantized.items()):
        if op != "MatMul" or name not in weighted or name in planned:
            continue
        fused = fused_with_add(index, index.by_name[name])
        if fused is not None and fused[0].name not in kept:
            add, position = fused
            found.append(WeightPlan(add.name, position, add.input[position], "bias", 0, layer=name))
    return found


def plan_gemm_biases(state: Planning) -> None:
    """For onnxruntime's CPU: each quantized MatMul with a weight whose bias Add stays float gets that bias
    planned int32 (gemm_biases), and no Q/DQ pair on its output, which only the Add reads. In place."""
    if state.config.target is not Target.ort_cpu:
        return
    excluded = {name for name, reason in state.reasons.items() if reason == EXCLUDED}
    kept = state.quantized.keys() | state.folds.keys() | excluded  # an excluded Add stays as it is
    for bias in gemm_biases(state.index, state.quantized, state.weights, kept):
        state.weights.append(bias)
        state.q.discard(state.index.by_name[bias.layer].output[0])
