"""Apply Rebalance decisions to a float graph: consumers' weights times s, the producer's output channels
(or an inserted Mul) times 1/s. The FP32 function is unchanged."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex
from quantkit.results import QuantParams, Rebalance


def apply_rebalances(
    model: onnx.ModelProto, rebalances: Sequence[Rebalance], namer: Namer | None = None
) -> dict[str, QuantParams]:
    """Rewrite `model` in place. Returns the params of each tensor an inserted Mul writes."""
    namer = namer or Namer(model)
    nodes = {n.name: n for n in model.graph.node}
    inserted: dict[str, QuantParams] = {}
    for rebalance in rebalances:
        index = GraphIndex(model)  # a layer may be rebalanced on both sides: read its current weights
        s = rebalance.scales.astype(np.float64)
        for name in rebalance.consumers:
            _scale_input(model, namer, index, nodes[name], s)
        if rebalance.producer is not None:
            _scale_output(model, namer, index, nodes[rebalance.producer], 1.0 / s)
            continue
        shape = [1] * rebalance.rank
        shape[rebalance.channel_axis] = s.size
        factor = namer.fresh(f"{rebalance.tensor}_smooth_factor")
        model.graph.initializer.append(
            numpy_helper.from_array((1.0 / s).astype(np.float32).reshape(shape), factor)
        )
        smoothed = namer.fresh(f"{rebalance.tensor}_smoothed")
        model.graph.node.append(
            helper.make_node(
                "Mul", [rebalance.tensor, factor], [smoothed], name=namer.fresh(f"{smoothed}_Mul")
            )
        )
        for name in rebalance.consumers:
            nodes[name].input[0] = smoothed
        inserted[smoothed] = rebalance.params
    return inserted


def _replace(
    model: onnx.ModelProto, namer: Namer, node: onnx.NodeProto, position: int, value: np.ndarray
) -> None:
    name = namer.fresh(f"{node.input[position]}_smoothed")
    model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    node.input[position] = name


def _weight(index: GraphIndex, node: onnx.NodeProto, position: int) -> np.ndarray:
    value = index.constant(node.input[position])
    assert value is not None, node.input[position]
    return value.astype(np.float64)


def _scale_input(
    model: onnx.ModelProto, namer: Namer, index: GraphIndex, node: onnx.NodeProto, s: np.ndarray
) -> None:
    """W times s along the input channels of X (C = s.size)."""
    w = _weight(index, node, 1)
    if node.op_type == "Conv":
        group = int(index.attribute(node, "group", 1))  # type: ignore[call-overload]
        c_out, c_per_group = w.shape[0], w.shape[1]
        blocks = w.reshape(group, c_out // group, c_per_group, -1) * s.reshape(group, 1, c_per_group, 1)
        scaled = blocks.reshape(w.shape)
    elif node.op_type == "Gemm" and index.attribute(node, "transB", 0):
        scaled = w * s[None, :]  # B [N, K]
    else:
        scaled = w * s[:, None]  # B [K, N]
    _replace(model, namer, node, 1, scaled)


def _scale_output(
    model: onnx.ModelProto, namer: Namer, index: GraphIndex, node: onnx.NodeProto, f: np.ndarray
) -> None:
    """The producer's output channel j (and its bias) times f_j."""
    w = _weight(index, node, 1)
    if node.op_type == "Conv" or index.attribute(node, "transB", 0):
        scaled = w * f.reshape(-1, *([1] * (w.ndim - 1)))
    else:
        scaled = w * f[None, :]
    _replace(model, namer, node, 1, scaled)
    if len(node.input) > 2 and node.input[2]:
        _replace(model, namer, node, 2, _weight(index, node, 2) * f)
