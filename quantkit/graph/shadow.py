"""A shadow graph for measuring each layer's own quantization error.

For every quantized linear layer (Conv, ConvTranspose, Gemm, MatMul) the FP32 graph gets a twin of the
node that reads the FP32 input through Q/DQ and int8 weights, so that one run gives, side by side, each
layer's FP32 output and its output with only that layer quantized.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from quantkit.graph.augment import COMPUTE_OPS, with_outputs
from quantkit.graph.qdq import Rewriter, quantize_constant_input
from quantkit.graph.query import GraphIndex, topological_order
from quantkit.graph.rebalance import apply_rebalances
from quantkit.results import QuantPlan, WeightPlan


def _renamed(means: dict[str, np.ndarray], node: str, twin: str) -> dict[str, np.ndarray]:
    return {twin: means[node]} if node in means else {}


def shadow_model(
    model: onnx.ModelProto, plan: QuantPlan
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """(model with twin outputs, node name -> (FP32 output, quantized-alone output)).

    The FP32 part is the rebalanced float graph (same function); twins exist for layers whose data input
    is quantized.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rewriter = Rewriter(out)
    activations = {**plan.activations, **apply_rebalances(out, plan.rebalances, rewriter.namer)}
    index = GraphIndex(out)
    twins: dict[str, tuple[str, str]] = {}
    by_node: dict[str, list[WeightPlan]] = {}
    for weight in plan.weights:
        by_node.setdefault(weight.node, []).append(weight)
    for node in list(out.graph.node):
        if node.name not in plan.quantized_nodes or node.op_type not in COMPUTE_OPS:
            continue
        params = activations.get(node.input[0])
        if params is None:
            continue
        twin = helper.make_node(
            node.op_type,
            list(node.input),
            [rewriter.namer.fresh(f"{node.output[0]}_alone")],
            name=rewriter.namer.fresh(f"{node.name}_alone"),
        )
        twin.attribute.extend(node.attribute)
        x_q = rewriter.namer.fresh(f"{node.input[0]}_alone_dq")
        rewriter.qdq_pair(node.input[0], x_q, f"{node.input[0]}_alone", params)
        twin.input[0] = x_q
        activations[x_q] = params  # the twin's bias scale is s_x * s_w
        for weight in sorted(by_node.get(node.name, []), key=lambda w: (w.kind == "bias", w.input_index)):
            quantize_constant_input(
                rewriter, index, twin, weight, activations, _renamed(plan.input_means, node.name, twin.name)
            )
        rewriter.new_nodes.append(twin)
        twins[node.name] = (node.output[0], twin.output[0])
    nodes = [*out.graph.node, *rewriter.new_nodes]
    available = [i.name for i in out.graph.input] + [t.name for t in out.graph.initializer]
    del out.graph.node[:]
    out.graph.node.extend(topological_order(nodes, available))
    del out.graph.value_info[:]
    return with_outputs(out, sorted({name for pair in twins.values() for name in pair})), twins
