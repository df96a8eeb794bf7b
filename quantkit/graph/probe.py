"""A probe for per-layer quantization error: every quantized layer duplicated onto its own quantized
input and int8 weights, in one FP32 model, so that one run gives each layer's output twice.

For layer L reading x with weight W (planned as in `plan`): L_local = L(DQ(Q(x)), DQ(Q(W))) beside the
untouched L(x, W). Each layer sees exact inputs and adds only its own error: the "quantized alone" error of
a sensitivity analysis. Biases stay float (their int32 rounding is below the other errors).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex
from quantkit.qmath.params import dequantize, per_channel_weight
from quantkit.results import QuantPlan


def local_probe(
    model: onnx.ModelProto, plan: QuantPlan, layers: list[str]
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """(probe model, layer -> (float output, locally quantized output)); both are graph outputs.
    model: shape-inferred, every node named; plan: made for it."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    index = GraphIndex(out)
    namer = Namer(out)
    weights = {(w.node, w.input_index): w for w in plan.weights if w.kind == "weight"}
    pairs: dict[str, tuple[str, str]] = {}
    added: list[onnx.NodeProto] = []
    for name in layers:
        node = index.by_name[name]
        inputs = list(node.input)
        for position, tensor in enumerate(node.input):
            params = plan.activations.get(tensor)
            if params is not None and not index.is_constant(tensor):
                scale = namer.fresh(f"{tensor}_probe_scale")
                zero = namer.fresh(f"{tensor}_probe_zero_point")
                out.graph.initializer.extend(
                    [
                        numpy_helper.from_array(params.scale, scale),
                        numpy_helper.from_array(params.zero_point, zero),
                    ]
                )
                q, dq = namer.fresh(f"{tensor}_probe_q"), namer.fresh(f"{tensor}_probe_dq")
                added.append(
                    helper.make_node("QuantizeLinear", [tensor, scale, zero], [q], name=namer.fresh(q))
                )
                added.append(
                    helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=namer.fresh(dq))
                )
                inputs[position] = dq
            weight = weights.get((name, position))
            if weight is not None and weight.axis is not None:
                w = numpy_helper.to_array(index.initializers[tensor])
                q_w, w_scale = per_channel_weight(w, weight.axis)
                fake = dequantize(q_w, w_scale, np.zeros(w_scale.shape, np.int8), weight.axis)
                fake_name = namer.fresh(f"{tensor}_probe_fake_quant")
                out.graph.initializer.append(numpy_helper.from_array(fake, fake_name))
                inputs[position] = fake_name
        local = namer.fresh(f"{node.output[0]}_local")
        copy = helper.make_node(node.op_type, inputs, [local], name=namer.fresh(f"{name}_local"))
        copy.attribute.extend(node.attribute)
        copy.domain = node.domain
        added.append(copy)
        pairs[name] = (node.output[0], local)
    out.graph.node.extend(added)
    present = {o.name for o in out.graph.output}
    for reference, local in pairs.values():
        for tensor in (reference, local):
            if tensor not in present:
                out.graph.output.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
                present.add(tensor)
    return out, pairs
