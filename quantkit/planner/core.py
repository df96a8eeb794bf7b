"""Decide what to quantize: model + calibration table + config -> QuantPlan (plain data).

The rules, in order:
1. Compute ops (Conv, ConvTranspose, Gemm, MatMul) with a constant weight are quantized: weight int8
   per output channel, bias int32, activation input and output per tensor.
2. Ops on the integer path (data movement, pooling, Concat, Add, Mul, Sigmoid) are quantized when they
   touch a quantized tensor, so that onnxruntime keeps the path integer; repeated to a fixed point.
   HardSigmoid and HardSwish join it as Add/Mul (uint8), and a Mul or Div by a positive constant after a
   quantized op folds into its Q node's scale (planner.patterns).
3. Relu and Clip(0, x) after a quantized op are folded into the range of its output (uint8 only, where
   the zero point 0 makes the Q node clip exactly as they do).
4. Ops that onnxruntime fuses only with equal input/output scales share one set of params.
5. A Concat whose inputs have very different ranges (a detection head's boxes beside its scores) stays
   float, and so does what only it feeds.
6. Ranges: the configured method over each tensor's histogram (planner.range_plan); then outlier channels are
   rebalanced (planner.smoothquant_plan: where, and where 1/s goes; the alphas under auto are measured by
   planner.smoothquant_search) and each biased layer gets its input's channel means for bias correction.
   Weights round to nearest unless the caller passes integers chosen for them (planner.rounding_plan).
7. A compute op whose int8 kernel would not pay for the Q/DQ passes it needs stays float (planner.payoff;
   onnxruntime's CPU kernels only).
8. Another --target keeps the Q/DQ its runtime fuses (planner.targets: tensorrt and openvino).
Model outputs stay float. Layers the accuracy fallback keeps float arrive as keep_float.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx

from quantkit.config import ConvertConfig, Target
from quantkit.graph.augment import COMPUTE_OPS, INTEGER_PATH_OPS
from quantkit.graph.query import GraphIndex
from quantkit.planner.fixed_reads import FROM_FIXED_INPUT, fixed_input_names, from_fixed_inputs
from quantkit.planner.gemm_bias import plan_gemm_biases
from quantkit.planner.ort_unfused import DILATED_READ, dilated_pool
from quantkit.planner.patterns import SCALE_OPS, data_input, writer
from quantkit.planner.payoff import unpaid
from quantkit.planner.placement import (
    check_exclusions,
    data_path,
    drop_unread_outputs,
    excluded,
    float_reason,
    plan_compute,
    pooled_writers,
    propagate,
)
from quantkit.planner.planning_state import (
    ATTENTION_FLOAT,
    ATTENTION_INT8_INPUTS,
    EXCLUDED,
    FLOAT_LAYER_REASON,
    Planning,
)
from quantkit.planner.range_plan import score_tensors
from quantkit.planner.shared_params import scaled_reads, tensor_params
from quantkit.planner.smoothquant_plan import Rebalancer
from quantkit.planner.targets import (
    for_fp8,
    for_tensorrt,
    hoisted,
    near_commuting,
    signed_inputs,
    unified,
    with_exact_folds,
)
from quantkit.planner.tensorrt_shift import one_sided, shiftable, shifted
from quantkit.results import (
    CalibrationTable,
    QuantParams,
    QuantPlan,
    Rebalance,
    Skip,
)

MAX_PAYOFF_ROUNDS = 16  # each round can leave the next layer of a chain without an integer writer


def plan(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    keep_float: dict[str, str] | None = None,
    range_cache: dict[str, tuple[float, float]] | None = None,
    alphas: Mapping[str, float] | None = None,
    rounded: Mapping[str, np.ndarray] | None = None,
    slower: Mapping[str, str] | None = None,
    cut: frozenset[str] = frozenset(),
) -> QuantPlan:
    """model: opset >= 13, every node named, shapes inferred.

    keep_float: node -> why it stays float (decided by the accuracy fallback). Unlike --exclude-nodes,
    such a layer computes on exact values: its output, its data input and the path back to the previous
    linear layer's output (through elementwise and data-movement ops) stay float.
    range_cache: select_range results to reuse (and fill) across plans of one model, table and config.
    alphas: under --smoothquant auto, the activations to rebalance and how (planner.smoothquant_search
    measures them); a fixed alpha rebalances every candidate; off, none.
    rounded: node -> its weight's integers (planner.rounding_plan), used where the node is quantized.
    slower: node -> why it stays float: its int8 form measured slower on this CPU (planner.speed_cut).
    Such a node is left off the integer path, as the payoff rule's layers are: its neighbours stay int8,
    with Q/DQ passes between.
    cut: the layers of keep_float whose input path stops at a tensor that other layers read too
    (placement.input_path's cut; planner.fallback chooses them by measurement).
    """
    state, activations, rebalancer = _decide(model, table, config, keep_float, range_cache, slower, cut)
    rebalances = rebalancer.chosen(alphas)
    for rebalance in rebalances:
        _apply_rebalance_decision(state, activations, rebalance)
    decided = _plan_of(state, activations, rebalances)
    if cut:
        decided = dataclasses.replace(decided, cut_paths=cut)
    if not rounded:
        return decided
    kept = {n: q for n, q in rounded.items() if n in decided.quantized_nodes}
    return dataclasses.replace(decided, rounded=kept)


def smoothing_candidates(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    range_cache: dict[str, tuple[float, float]] | None = None,
) -> tuple[QuantPlan, Rebalancer]:
    """The plan without rebalancing, and the Rebalancer that makes candidates against it."""
    state, activations, rebalancer = _decide(model, table, config, None, range_cache)
    return _plan_of(state, dict(activations), []), rebalancer


def _decide(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    keep_float: dict[str, str] | None,
    range_cache: dict[str, tuple[float, float]] | None,
    slower: Mapping[str, str] | None = None,
    cut: frozenset[str] = frozenset(),
) -> tuple[Planning, dict[str, QuantParams], Rebalancer]:
    """What is quantized and with which params, before rebalancing."""
    index = GraphIndex(model)
    check_exclusions(index, config)
    keep_float = {**dict.fromkeys(config.float_layers, FLOAT_LAYER_REASON), **(keep_float or {})}
    if config.target is Target.ort_cpu:
        keep_float = pooled_writers(index, keep_float, cut)
    slow: dict[str, str] = dict(slower or {})
    state = _planned(index, table, config, keep_float, range_cache, slow, cut)
    for _ in range(MAX_PAYOFF_ROUNDS if config.target is Target.ort_cpu else 0):  # costs are ORT's
        # a layer kept float can leave its neighbours' conversions to pay
        found = {k: v for k, v in unpaid(state).items() if k not in slow}
        if not found:
            break
        slow.update(found)
        state = _planned(index, table, config, keep_float, range_cache, slow, cut)
    activations, tied = tensor_params(state)
    # a scale-folded Mul is gone from the rewritten graph: never an absorber of rebalancing
    scaled = {n: index.by_name[n].op_type for n in state.folds if index.by_name[n].op_type in SCALE_OPS}
    candidates = dict(activations)
    if config.target is Target.openvino:  # planner.targets may move or merge these pairs: keep them whole
        for tensor in [t for t in candidates if near_commuting(index, t)]:
            del candidates[tensor]
    # onnxruntime CPU's rule (and TensorRT's, unmeasured): OpenVINO's are measured as any (_integer_written)
    if config.smoothquant == "auto" and config.target is not Target.openvino:
        for tensor in _integer_written(state):
            candidates.pop(tensor, None)
    if config.target is Target.tensorrt and not config.fp8:
        for tensor in _shifted_instead(state, candidates):
            del candidates[tensor]
    rebalancer = Rebalancer(
        index, table, config, {**state.quantized, **scaled}, dict(state.folds), candidates, tied
    )
    return state, activations, rebalancer


def _planned(
    index: GraphIndex,
    table: CalibrationTable,
    config: ConvertConfig,
    keep_float: dict[str, str],
    range_cache: dict[str, tuple[float, float]] | None,
    slow: dict[str, str],
    cut: frozenset[str],
) -> Planning:
    """What is quantized (rules 1-5), with the compute nodes in `slow` left float (planner.payoff)."""
    state = Planning(index, table, config, scores=score_tensors(index))
    if range_cache is not None:
        state.selected = range_cache
    fixed, fixed_readers = from_fixed_inputs(index, fixed_input_names(table))
    state.float_tensors.update(fixed)
    pools = [n for n in index.nodes if dilated_pool(index, n)] if config.target is Target.ort_cpu else []
    for pool in pools:  # OpenVINO's and TensorRT's placements fuse no pool between Q/DQ (hq167 F4)
        state.float_tensors.add(pool.output[0])
        state.float_why[pool.output[0]] = DILATED_READ
    for name in keep_float:
        node = index.by_name[name]
        state.float_tensors.update(o for o in node.output if o)
        state.float_tensors.update(data_path(index, node, name in cut))
    for node in index.nodes:
        if keep_float and node.name in keep_float:
            state.reasons[node.name] = keep_float[node.name]
        elif excluded(node, config):
            state.reasons[node.name] = EXCLUDED
        elif node.name in slow:
            state.reasons[node.name] = slow[node.name]
        elif node.name in fixed_readers:
            state.reasons[node.name] = FROM_FIXED_INPUT
        elif node.op_type in COMPUTE_OPS:
            plan_compute(state, node)
    propagate(state)
    drop_unread_outputs(state)
    plan_gemm_biases(state)
    return state


def _shifted_instead(state: Planning, candidates: Mapping[str, QuantParams]) -> list[str]:
    """The one-sided tensors --target tensorrt shifts onto its symmetric grid (planner.tensorrt_shift):
    rebalancing one behind a Mul it inserts (a ReLU6 output) would leave it unshifted. Measured on
    MobileNetV2 (500 held-out imagenet-dev photos): 21.2 dB with 21 ReLU6 outputs rebalanced and none
    shifted, 23.0 dB with them shifted instead."""
    weighted = {w.node for w in state.weights if w.kind == "weight"}
    return [
        t
        for t in sorted(candidates)
        if t in state.table.stats  # a constant operand's params have none
        and shiftable(state.index, state.quantized, t, weighted)
        and one_sided(*state.range_of(t))
    ]


def _integer_written(state: Planning) -> list[str]:
    """Quantized tensors written (through folds) by an integer-path op: nothing can absorb 1/s there, so
    rebalancing one inserts a float Mul and takes its writer off the integer path (a float op, a Mul and a
    Q/DQ pass on the whole tensor). --smoothquant auto leaves them alone for onnxruntime's CPU kernels: on
    a MobileNetV3 (hard-swish outputs and SE products) that cost 0.60x FP32 against 1.06x, on a SiLU
    network 8.3 ms against 5.9. Placed for OpenVINO, they are measured as any (hq158 F2: NanoTrack's
    backbone 15.11 -> 21.30 dB held out, a text-orientation classifier 15.09 -> 30.30 dB; MobileNetV2's
    bytes unchanged); TensorRT keeps the rule until its engines' speed with those Muls is measured."""
    found = []
    for tensor in state.q:
        node = writer(state, tensor)
        if node is not None and node.op_type not in COMPUTE_OPS:
            found.append(tensor)
    return sorted(found)


def _plan_of(state: Planning, activations: dict[str, QuantParams], rebalances: list[Rebalance]) -> QuantPlan:
    index = state.index
    scaled_reads(state, activations)
    for node in index.nodes:
        if node.name not in state.quantized and node.name not in state.folds:
            state.reasons.setdefault(node.name, float_reason(node))
        if state.reasons.get(node.name) == ATTENTION_FLOAT and all(i in activations for i in node.input):
            state.reasons[node.name] = ATTENTION_INT8_INPUTS
    skipped = tuple(
        Skip(node.name, node.op_type, state.reasons[node.name])
        for node in index.nodes
        if node.name in state.reasons and node.op_type != "Constant"
    )
    decided = QuantPlan(
        activations=activations,
        weights=tuple(state.weights),
        quantized_nodes=dict(state.quantized),
        folds=dict(state.folds),
        skipped=skipped,
        ranges={name: state.range_of(name) for name in sorted(state.q)},
        rebalances=tuple(rebalances),
        input_means=_input_means(state, rebalances) if state.config.bias_correction else {},
        weight_qmax=state.config.weight_qmax,
    )
    if state.config.target is Target.ort_cpu:
        return decided
    if state.config.target is Target.openvino:
        placed = unified(for_tensorrt(decided, index, "OpenVINO"), index, state.config.concat_range_ratio)
        return signed_inputs(with_exact_folds(hoisted(placed, index), decided), index)
    placed = for_tensorrt(decided, index)
    return for_fp8(placed, state.table) if state.config.fp8 else shifted(placed, index)  # fp8: tensorrt's


def _input_means(state: Planning, rebalances: list[Rebalance]) -> dict[str, np.ndarray]:
    """E[x] per input channel of each biased Conv/Gemm (and MatMul, by its bias Add's name), in the scale
    its input has after rebalancing."""
    divisors = {node: r.scales for r in rebalances for node in r.consumers}
    means = {}
    for weight in state.weights:
        node = state.index.by_name[weight.layer or weight.node]
        if weight.kind != "bias" or node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        if node.op_type == "Gemm" and state.index.attribute(node, "transA", 0):  # A is [K, M]: its channel
            continue  # statistics are of M, not of the K inputs (hq104 F1: an internal error in the product)
        stats = state.table.stats.get(node.input[0])
        if stats is None or stats.channel_mean is None:
            continue
        mean = stats.channel_mean
        means[weight.node] = mean / divisors[node.name] if node.name in divisors else mean
    return means


def _apply_rebalance_decision(
    state: Planning, activations: dict[str, QuantParams], rebalance: Rebalance
) -> None:
    """The rebalanced tensor's params replace X's (fold), or X is left float for the inserted Mul."""
    if rebalance.producer is not None:
        activations[rebalance.tensor] = rebalance.params
        return
    activations.pop(rebalance.tensor, None)
    state.q.discard(rebalance.tensor)
    producer = state.index.producer.get(rebalance.tensor)
    if producer is None:
        return
    if producer.name in state.folds:  # Q saturation and scale no longer apply: the folds run as ops
        node: onnx.NodeProto | None = producer
        while node is not None and node.name in state.folds:
            del state.folds[node.name]
            state.reasons[node.name] = "its output is rebalanced by a float Mul (kept as an op)"
            if state.reads.pop(node.name, None) is not None:  # its source keeps its Q/DQ
                break
            source = data_input(state.index, node) if node.op_type in SCALE_OPS else node.input[0]
            node = state.index.producer.get(source)
    elif state.quantized.get(producer.name) in INTEGER_PATH_OPS | {"HardSigmoid"}:
        del state.quantized[producer.name]
        state.reasons[producer.name] = "its output is rebalanced by a float Mul"
