"""Apply a QuantPlan: fold Relu/Clip, quantize weights and biases, insert Q/DQ pairs. No decisions here.

A quantized tensor T produced by node P becomes  P -> T_prequant -> Q -> T_quantized -> DQ -> T , so every
consumer of T (and a model output named T) reads the dequantized value without being edited.
A quantized graph input gets Q -> DQ after it and its quantized consumers are pointed at the DQ output
(float ones read the input as given).

Folded Mul/Div by a constant k (planner.patterns) leave T = k * T_prequant: the Q node's scale is the DQ's
divided by k, which is exact (DQ(Q(v, s / k), s) is k v quantized with scale s). Quantized HardSigmoid and
HardSwish nodes become Add (+ Mul) the same way. A folded Mul/Div whose input keeps its own Q/DQ (a scaled
read) becomes a second DQ of that input's integers, with the scale of its output's params.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.graph.augment import hard_params
from quantkit.graph.naming import Namer
from quantkit.graph.pole_reads import float_pole_reads
from quantkit.graph.query import GraphIndex, drop_unread_initializers, subgraph_inputs, topological_order
from quantkit.graph.shift_rewrite import Shifting, shifted_pair
from quantkit.graph.smoothquant_rewrite import apply_rebalances
from quantkit.qmath.fp8 import FLOAT8, per_channel_fp8
from quantkit.qmath.params import (
    WEIGHT_QMAX,
    along_axis,
    asymmetric_params,
    bias_int32,
    bias_weight_scale_floor,
    quantize,
    weight_error,
    weight_with_error,
)
from quantkit.results import QuantParams, QuantPlan, WeightPlan


class _Rewriter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.namer = Namer(model)
        self.new_nodes: list[onnx.NodeProto] = []
        self.weight_scales: dict[str, np.ndarray] = {}  # node name -> per-channel weight scale
        self.weight_errors: dict[str, np.ndarray] = {}  # node name -> dequantized - float weight
        # node name -> its int8 weight's DequantizeLinear, integers, float value (rebalanced), axis, qmax
        self.weight_dq: dict[str, tuple[onnx.NodeProto, np.ndarray, np.ndarray, int, int]] = {}
        self.quantized_of: dict[str, str] = {}  # tensor -> the integer tensor its Q node writes

    def add_initializer(self, base: str, array: np.ndarray) -> str:
        name = self.namer.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def replace_initializer(self, name: str, array: np.ndarray) -> None:
        found = next(i for i in self.graph.initializer if i.name == name)
        found.CopyFrom(numpy_helper.from_array(array, name))

    def raise_weight_scales(self, node: str, floor: np.ndarray) -> np.ndarray:
        """The node's int8 weight again with each channel's scale at least floor [C] (the channels
        raised rounded to nearest on their new scale, the others as they were); its new scales."""
        dq, kept, value, axis, qmax = self.weight_dq[node]
        before = self.weight_scales[node]
        scale = np.maximum(before, floor).astype(np.float32)
        nearest = quantize(value, scale, np.zeros(scale.shape, np.int8), "int8", axis)
        raised = along_axis(scale > before, value.ndim, axis)
        q = np.where(raised, np.clip(nearest, -qmax, qmax), kept).astype(np.int8)
        self.replace_initializer(dq.input[0], q)
        self.replace_initializer(dq.input[1], scale)
        self.weight_scales[node] = scale
        self.weight_errors[node] = weight_error(value, q, scale, axis)
        return scale

    def params_initializers(self, base: str, params: QuantParams) -> tuple[str, str]:
        """The scale and zero-point initializers of a Q/DQ node."""
        scale = self.add_initializer(f"{base}_scale", params.scale.astype(np.float32))
        return scale, self.add_initializer(f"{base}_zero_point", params.zero_point)

    def dequantize_node(self, base: str, q_name: str, params: QuantParams) -> str:
        scale, zero = self.params_initializers(base, params)
        out = self.namer.fresh(f"{base}_dequantized")
        node = helper.make_node(
            "DequantizeLinear",
            [q_name, scale, zero],
            [out],
            name=self.namer.fresh(f"{base}_DequantizeLinear"),
        )
        if params.axis is not None:
            node.attribute.append(helper.make_attribute("axis", params.axis))
        self.new_nodes.append(node)
        return out

    def qdq_pair(self, source: str, target: str, base: str, params: QuantParams, factor: float = 1.0) -> None:
        """Q -> DQ from source to target; factor k: target is k * source (the Q node's scale is s / k)."""
        scale, zero = self.params_initializers(base, params)
        q_scale = scale
        if factor != 1.0:
            q_scale = self.add_initializer(
                f"{base}_prescale", (params.scale / np.float32(factor)).astype(np.float32)
            )
        quantized = self.namer.fresh(f"{base}_quantized")
        self.quantized_of[base] = quantized
        self.new_nodes.append(
            helper.make_node(
                "QuantizeLinear",
                [source, q_scale, zero],
                [quantized],
                name=self.namer.fresh(f"{base}_QuantizeLinear"),
            )
        )
        self.new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [quantized, scale, zero],
                [target],
                name=self.namer.fresh(f"{base}_DequantizeLinear"),
            )
        )


class WeightMemo:
    """Per-channel int8 weights already computed, found by content. Loops that build one model per layer
    (sensitivity, the fallback searches) quantize each unchanged weight once instead of once per model.
    Scope one to a loop: it holds every weight's int8 copy and float64 rounding error."""

    def __init__(self) -> None:
        self._found: dict[tuple[object, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def per_channel(
        self, value: np.ndarray, axis: int, qmax: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        digest = hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).digest()
        key = (axis, qmax, value.shape, value.dtype.str, digest)
        if key not in self._found:
            self._found[key] = weight_with_error(value, axis, qmax)
        return self._found[key]


def apply_plan(model: onnx.ModelProto, plan: QuantPlan, memo: WeightMemo | None = None) -> onnx.ModelProto:
    """A new model with the plan applied; the input model is not modified. memo: weights quantized by
    earlier calls of the same loop."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    reads = _scaled_reads(out, plan)
    factors = _fold(out, {n: t for n, t in plan.folds.items() if t not in reads})
    _drop(out, set(reads))
    rewriter = _Rewriter(out)
    for tensor, k in _rewrite_hard(rewriter, plan).items():  # a HardSigmoid's output may be scaled on
        factors[tensor] = factors.get(tensor, 1.0) * k
    inserted = apply_rebalances(out, plan.rebalances, rewriter.namer)
    index = GraphIndex(out)
    nodes = {n.name: n for n in out.graph.node}
    activations = dict(sorted({**plan.activations, **inserted}.items()))
    for weight in sorted(plan.weights, key=lambda w: (w.kind == "bias", w.node, w.input_index)):
        _quantize_constant_input(
            rewriter,
            index,
            nodes[weight.node],
            weight,
            activations,
            plan.input_means,
            memo,
            plan.weight_qmax,
            plan.rounded.get(weight.node),
            plan.float_bias,
            plan.fp8,
        )
    shifting = (
        Shifting(
            index,
            {i.name: i for i in out.graph.initializer},
            frozenset(subgraph_inputs(out)),
            frozenset(activations),
        )
        if plan.shifts
        else None
    )
    for tensor, params in activations.items():
        if index.is_constant(tensor):
            continue
        if shifting is not None and tensor in plan.shifts:
            shifted_pair(rewriter, shifting, tensor, params, plan.shifts[tensor])
        elif tensor in index.graph_inputs:  # its float readers read it as given (hq167 F3: an Identity
            dq = rewriter.namer.fresh(f"{tensor}_dequantized")  # copying it to an output was rounded)
            for consumer, position in index.consumers[tensor]:
                if consumer.name in plan.quantized_nodes or consumer.name in plan.folds:
                    consumer.input[position] = dq
            rewriter.qdq_pair(tensor, dq, tensor, params)
        elif tensor in index.producer:
            producer = index.producer[tensor]
            pre = rewriter.namer.fresh(f"{tensor}_prequant")
            producer.output[list(producer.output).index(tensor)] = pre
            rewriter.qdq_pair(pre, tensor, tensor, params, factors.get(tensor, 1.0))
    for tensor, source in reads.items():
        scale, zero = rewriter.params_initializers(tensor, activations[tensor])
        rewriter.new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [rewriter.quantized_of[source], scale, zero],
                [tensor],
                name=rewriter.namer.fresh(f"{tensor}_DequantizeLinear"),
            )
        )
    rewriter.new_nodes += float_pole_reads([*out.graph.node, *rewriter.new_nodes], rewriter.namer)
    _finish(out, rewriter.new_nodes)
    return out


def _fold(model: onnx.ModelProto, folds: dict[str, str]) -> dict[str, float]:
    """Remove each folded node (Relu, Clip, Mul or Div by a constant); the node that wrote its input
    writes its output directly. Returns k per tensor that is now k times what its writer computes."""
    if not folds:
        return {}
    index = GraphIndex(model)
    writers = {o: n for n in model.graph.node for o in n.output if o}
    factors: dict[str, float] = {}
    keep = []
    for node in model.graph.node:
        if node.name not in folds:
            keep.append(node)
            continue
        source, k = node.input[0], 1.0
        if node.op_type in ("Mul", "Div"):
            constant = next(i for i in node.input if index.is_constant(i))
            source = next(i for i in node.input if i != constant)
            value = float(np.asarray(index.constant(constant)).reshape(()))
            k = value if node.op_type == "Mul" else 1.0 / value
        writer = writers[source]
        writer.output[list(writer.output).index(source)] = node.output[0]
        writers[node.output[0]] = writer
        k *= factors.pop(source, 1.0)
        if k != 1.0:
            factors[node.output[0]] = k
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return factors


def _scaled_reads(model: onnx.ModelProto, plan: QuantPlan) -> dict[str, str]:
    """Folded Mul/Div whose input keeps its own Q/DQ: output -> input."""
    index = GraphIndex(model)
    reads = {}
    for node in model.graph.node:
        if node.name in plan.folds and node.op_type in ("Mul", "Div"):
            source = next(i for i in node.input if not index.is_constant(i))
            if source in plan.activations:
                reads[node.output[0]] = source
    return reads


def _drop(model: onnx.ModelProto, outputs: set[str]) -> None:
    """Remove the nodes writing `outputs` (scaled reads: a DQ writes them instead)."""
    keep = [n for n in model.graph.node if not (n.output and n.output[0] in outputs)]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _rewrite_hard(rewriter: _Rewriter, plan: QuantPlan) -> dict[str, float]:
    """Quantized HardSigmoid(x) -> Add(x, beta / alpha), its output alpha times the Add's; HardSwish(x) ->
    the same Add, a Q/DQ pair for the gate (range from x's params) and Mul(x, gate). Returns the factors
    of the HardSigmoid outputs."""
    factors: dict[str, float] = {}
    for node in rewriter.graph.node:
        kind = plan.quantized_nodes.get(node.name)
        if kind not in ("HardSigmoid", "HardSwish"):
            continue
        x, out = node.input[0], node.output[0]
        params = plan.activations[x]
        alpha, beta = hard_params(node)
        dtype = str(params.zero_point.dtype)
        offset = np.float32(beta / alpha)
        c_scale, c_zero = asymmetric_params(min(float(offset), 0.0), max(float(offset), 0.0), dtype)
        c_params = QuantParams(np.asarray(c_scale, np.float32), np.asarray(c_zero, params.zero_point.dtype))
        c_q = quantize(np.asarray(offset, np.float32), c_params.scale, c_params.zero_point, dtype)
        base = f"{node.name}_offset"
        c_name = rewriter.dequantize_node(base, rewriter.add_initializer(f"{base}_quantized", c_q), c_params)
        del node.attribute[:]
        if kind == "HardSigmoid":
            node.op_type = "Add"
            del node.input[:]
            node.input.extend([x, c_name])
            factors[out] = alpha
            continue
        # the gate's range from x's: hardsigmoid is monotonic, so [0, hardsigmoid(max x)]
        qmax = np.iinfo(params.zero_point.dtype).max
        x_hi = float(params.scale) * (qmax - int(params.zero_point))
        gate_hi = min(max(alpha * x_hi + beta, 1.0 / 255), 1.0)
        g_scale, g_zero = asymmetric_params(0.0, gate_hi, dtype)
        g_params = QuantParams(np.asarray(g_scale, np.float32), np.asarray(g_zero, params.zero_point.dtype))
        pre = rewriter.namer.fresh(f"{node.name}_gate_prequant")
        gate = rewriter.namer.fresh(f"{node.name}_gate")
        rewriter.new_nodes.append(
            helper.make_node("Add", [x, c_name], [pre], name=rewriter.namer.fresh(f"{node.name}_Add"))
        )
        rewriter.qdq_pair(pre, gate, f"{node.name}_gate", g_params, alpha)
        node.op_type = "Mul"
        del node.input[:]
        node.input.extend([x, gate])
    return factors


def _quantize_constant_input(
    rewriter: _Rewriter,
    index: GraphIndex,
    node: onnx.NodeProto,
    weight: WeightPlan,
    activations: dict[str, QuantParams],
    input_means: dict[str, np.ndarray] | None = None,
    memo: WeightMemo | None = None,
    qmax: int = WEIGHT_QMAX,
    rounded: np.ndarray | None = None,
    float_bias: bool = False,
    fp8: bool = False,
) -> None:
    """Quantize one constant input of `node`; a bias is first corrected by the weights' rounding shift
    E[(W_q - W) x] where the input's per-channel means are known (input_means). rounded: the weight's
    integers where the plan chose them (else round to nearest), on the same per-channel scales.
    float_bias: the (corrected) bias stays a float32 initializer, read directly. fp8: E4M3FN weights."""
    source = node.input[weight.input_index]  # the rebalanced copy, where there is one
    value = index.constant(source)
    assert value is not None, source
    base = f"{weight.initializer}_{node.name}" if weight.kind == "bias" else weight.initializer
    if weight.kind == "weight" and fp8:
        assert weight.axis is not None
        q, scale, rewriter.weight_errors[node.name] = per_channel_fp8(value.astype(np.float32), weight.axis)
        rewriter.weight_scales[node.name] = scale
        params = QuantParams(scale, np.zeros(scale.shape, FLOAT8), weight.axis)
    elif weight.kind == "weight":
        assert weight.axis is not None
        found = (
            memo.per_channel(value, weight.axis, qmax)
            if memo
            else weight_with_error(value, weight.axis, qmax)
        )
        q, scale, rewriter.weight_errors[node.name] = found
        if rounded is not None:
            q, rewriter.weight_errors[node.name] = rounded, weight_error(value, rounded, scale, weight.axis)
        rewriter.weight_scales[node.name] = scale
        params = QuantParams(scale, np.zeros(scale.shape, np.int8), weight.axis)
    elif weight.kind == "bias" and float_bias:
        if input_means and node.name in input_means:
            shift = rounding_shift(index, node, rewriter.weight_errors[node.name], input_means[node.name])
            corrected = (value - shift).astype(np.float32)
            node.input[weight.input_index] = rewriter.add_initializer(f"{base}_corrected", corrected)
        return
    elif weight.kind == "bias":
        layer = index.by_name[weight.layer] if weight.layer else node  # a MatMul's, for its bias Add
        input_scale = float(activations[layer.input[0]].scale)  # what feeds the layer now (maybe rebalanced)
        w_scale = rewriter.weight_scales[layer.name]
        floor = bias_weight_scale_floor(value, input_scale)
        if layer.name in rewriter.weight_dq and w_scale.size == value.size and (w_scale < floor).any():
            w_scale = rewriter.raise_weight_scales(layer.name, floor)  # else the int32 bias saturates
        if input_means and node.name in input_means:
            value = value - rounding_shift(
                index, layer, rewriter.weight_errors[layer.name], input_means[node.name]
            )
        if node.op_type == "ConvTranspose" and w_scale.size != value.size:
            w_scale = np.tile(w_scale, value.size // w_scale.size)
        q, scale = bias_int32(value.astype(np.float32), input_scale, w_scale)
        params = QuantParams(scale, np.zeros(scale.shape, np.int32), 0)
    else:
        params = activations[weight.initializer]
        q = quantize(value.astype(np.float32), params.scale, params.zero_point, str(params.dtype))
    q_name = rewriter.add_initializer(f"{base}_quantized", q)
    node.input[weight.input_index] = rewriter.dequantize_node(base, q_name, params)
    if weight.kind == "weight" and not fp8 and weight.axis is not None:
        rewriter.weight_dq[node.name] = (rewriter.new_nodes[-1], q, value, weight.axis, qmax)


def rounding_shift(
    index: GraphIndex, node: onnx.NodeProto, error: np.ndarray, mean: np.ndarray
) -> np.ndarray:
    """E[(W_q - W) x] per output channel [O], from the weight error and the input's channel means [C], in
    the units of the layer's bias: a Gemm's alpha / beta times it (hq131 F4: a Gemm at alpha 0.125 was
    corrected 8x too much, and bias correction then measured worse and was dropped for the model)."""
    if node.op_type == "Gemm":
        alpha = float(index.attribute(node, "alpha", 1.0))  # type: ignore[arg-type]
        ratio = alpha / float(index.attribute(node, "beta", 1.0))  # type: ignore[arg-type]
        return ratio * (error @ mean if index.attribute(node, "transB", 0) else mean @ error)
    if node.op_type == "Conv":
        group = int(index.attribute(node, "group", 1))  # type: ignore[call-overload]
        c_out, c_per_group = error.shape[0], error.shape[1]
        blocks = error.reshape(group, c_out // group, c_per_group, -1).sum(-1)  # [g, O/g, C/g]
        return np.einsum("gok,gk->go", blocks, mean.reshape(group, c_per_group)).reshape(c_out)
    if index.attribute(node, "transB", 0):
        return error @ mean  # B [N, K]
    return mean @ error  # B [K, N]


def _finish(model: onnx.ModelProto, new_nodes: list[onnx.NodeProto]) -> None:
    graph = model.graph
    nodes = [*graph.node, *new_nodes]
    available = [i.name for i in graph.input] + [t.name for t in graph.initializer]
    ordered = topological_order(nodes, available)
    del graph.node[:]
    graph.node.extend(ordered)
    used = {name for node in graph.node for name in node.input} | subgraph_inputs(model)
    used.update(o.name for o in graph.output)
    live_nodes = [n for n in graph.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(live_nodes)
    drop_unread_initializers(model)
    del graph.value_info[:]  # stale after renaming; shape inference rebuilds it
