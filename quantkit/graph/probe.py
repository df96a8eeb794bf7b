"""Probes for per-layer quantization error: quantized copies of layers beside the untouched ones, in one
FP32 model, so that one run measures many layers (or many ways to quantize one layer).

local_probe: for layer L reading x with weight W (planned as in `plan`), L(DQ(Q(x)), DQ(Q(W))) beside the
untouched L(x, W). Each layer sees exact inputs and adds only its own error: the "quantized alone" error
of a sensitivity analysis. Biases stay float (their int32 rounding is below the other errors).

smoothing_probe: for an activation X and each way to rebalance it, the summed squared error of its
consumers' outputs when X / s is quantized and their weights W s are: one scalar output per candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.graph.naming import Namer
from quantkit.graph.qdq import rounding_shift
from quantkit.graph.query import GraphIndex
from quantkit.graph.smoothquant_rewrite import input_scaled_weight
from quantkit.qmath.params import dequantize, per_channel_weight
from quantkit.results import QuantParams, QuantPlan, Rebalance, WeightPlan


class _Probe:
    """A copy of a model that grows quantized copies of its nodes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.index = GraphIndex(self.model)
        self.namer = Namer(self.model)
        self.added: list[onnx.NodeProto] = []

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.namer.fresh(base)
        self.model.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], base: str, **attributes: int) -> str:
        out = self.namer.fresh(base)
        node = helper.make_node(op, inputs, [out], name=self.namer.fresh(out))
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attributes.items())
        self.added.append(node)
        return out

    def fake_quant(self, tensor: str, params: QuantParams, shift: float = 0.0) -> str:
        """DQ(Q(tensor)) with per-tensor params; shift c: DQ(Q(tensor + c)) - c, the value a reader of a
        shifted tensor computes with once its bias has absorbed c (planner.tensorrt_shift)."""
        scale = self.constant(f"{tensor}_probe_scale", params.scale)
        zero = self.constant(f"{tensor}_probe_zero_point", params.zero_point)
        source = tensor
        if shift:
            offset = self.constant(f"{tensor}_probe_shift", np.asarray(shift, np.float32))
            source = self.node("Add", [tensor, offset], f"{tensor}_probe_shifted")
        q = self.node("QuantizeLinear", [source, scale, zero], f"{tensor}_probe_q")
        read = self.node("DequantizeLinear", [q, scale, zero], f"{tensor}_probe_dq")
        return self.node("Sub", [read, offset], f"{tensor}_probe_unshifted") if shift else read

    def fake_weight(self, base: str, weight: np.ndarray, axis: int) -> tuple[str, np.ndarray]:
        """(name of DQ(Q(weight)) per channel on `axis`, its rounding error)."""
        q_w, w_scale = per_channel_weight(weight.astype(np.float32), axis)
        fake = dequantize(q_w, w_scale, np.zeros(w_scale.shape, np.int8), axis)
        return self.constant(f"{base}_probe_fake_quant", fake), fake - weight.astype(np.float64)

    def copy(self, node: onnx.NodeProto, inputs: list[str]) -> str:
        out = self.namer.fresh(f"{node.output[0]}_local")
        copy = helper.make_node(node.op_type, inputs, [out], name=self.namer.fresh(f"{node.name}_local"))
        copy.attribute.extend(node.attribute)
        copy.domain = node.domain
        self.added.append(copy)
        return out

    def squared_error(self, got: str, reference: str) -> str:
        difference = self.node("Sub", [got, reference], f"{got}_error")
        return self.node("ReduceSumSquare", [difference], f"{got}_squared_error", keepdims=0)

    def finish(self, outputs: Sequence[str]) -> onnx.ModelProto:
        self.model.graph.node.extend(self.added)
        present = {o.name for o in self.model.graph.output}
        for tensor in outputs:
            if tensor not in present:
                self.model.graph.output.append(
                    helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)
                )
                present.add(tensor)
        return self.model


def local_probe(
    model: onnx.ModelProto, plan: QuantPlan, layers: list[str]
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """(probe model, layer -> (float output, locally quantized output)); both are graph outputs.
    model: shape-inferred, every node named; plan: made for it."""
    probe = _Probe(model)
    weights = {(w.node, w.input_index): w for w in plan.weights if w.kind == "weight"}
    pairs: dict[str, tuple[str, str]] = {}
    for name in layers:
        node = probe.index.by_name[name]
        inputs = list(node.input)
        for position, tensor in enumerate(node.input):
            params = plan.activations.get(tensor)
            if params is not None and not probe.index.is_constant(tensor):
                inputs[position] = probe.fake_quant(tensor, params, plan.shifts.get(tensor, 0.0))
            weight = weights.get((name, position))
            if weight is not None and weight.axis is not None:
                value = numpy_helper.to_array(probe.index.initializers[tensor])
                inputs[position] = probe.fake_weight(tensor, value, weight.axis)[0]
        pairs[name] = (node.output[0], probe.copy(node, inputs))
    return probe.finish([t for pair in pairs.values() for t in pair]), pairs


def smoothing_probe(
    model: onnx.ModelProto, plan: QuantPlan, candidates: Sequence[Rebalance]
) -> tuple[onnx.ModelProto, dict[str, str], list[str]]:
    """(probe model, tensor -> error output as planned (not rebalanced), candidate i -> error output).

    plan: made for `model` without rebalancing; candidates: Rebalance records against it. Each error
    output is a scalar: the squared error summed over the consumers' outputs (and the batch). Biases are
    corrected for weight rounding as apply_plan does where the plan corrects them (plan.input_means)."""
    probe = _Probe(model)
    weights = {w.node: w for w in plan.weights if w.kind == "weight"}
    plain = {}
    for tensor, consumers in sorted({c.tensor: c.consumers for c in candidates}.items()):
        source = probe.fake_quant(tensor, plan.activations[tensor])
        plain[tensor] = _consumers_error(probe, plan, weights, consumers, source, None)
    errors = []
    for candidate in candidates:
        shape = [1] * candidate.rank
        shape[candidate.channel_axis] = candidate.scales.size
        factor = probe.constant(f"{candidate.tensor}_probe_factor", (1.0 / candidate.scales).reshape(shape))
        smoothed = probe.node("Mul", [candidate.tensor, factor], f"{candidate.tensor}_probe_smoothed")
        source = probe.fake_quant(smoothed, candidate.params)
        errors.append(_consumers_error(probe, plan, weights, candidate.consumers, source, candidate.scales))
    return probe.finish([*plain.values(), *errors]), plain, errors


def _consumers_error(
    probe: _Probe,
    plan: QuantPlan,
    weights: dict[str, WeightPlan],
    consumers: Sequence[str],
    source: str,
    scales: np.ndarray | None,
) -> str:
    """Sum over `consumers` of the squared error of a copy reading `source`, with its weight times
    `scales` (None: as it is) quantized per channel."""
    parts = []
    for name in consumers:
        node = probe.index.by_name[name]
        if scales is None:
            value = probe.index.constant(node.input[1])
            assert value is not None
            weight = value.astype(np.float64)
        else:
            weight = input_scaled_weight(probe.index, node, scales.astype(np.float64))
        axis = weights[name].axis
        assert axis is not None
        fake, error = probe.fake_weight(node.input[1], weight, axis)
        inputs = [source, fake, *node.input[2:]]
        mean = plan.input_means.get(name)
        if mean is not None and len(node.input) > 2 and node.input[2]:
            bias = probe.index.constant(node.input[2])
            assert bias is not None
            shift = rounding_shift(probe.index, node, error, mean if scales is None else mean / scales)
            inputs[2] = probe.constant(f"{node.input[2]}_probe_corrected", (bias - shift).astype(np.float32))
        parts.append(probe.squared_error(probe.copy(node, inputs), node.output[0]))
    return parts[0] if len(parts) == 1 else probe.node("Sum", parts, f"{source}_consumers_error")
