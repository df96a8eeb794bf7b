"""Apply Rebalance decisions to a float graph: consumers' weights times s, the producer's output channels
(or an inserted Mul) times 1/s, and the nodes between them kept exact (an Add's constant times 1/s, a
Clip(0, c) rewritten as ReLU then Min with the per-channel bounds c / s). The FP32 function is unchanged.
In a quantized graph the folded Clip is gone already: its Q node clips within every bound."""

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
    touched: set[str] = set()  # nodes whose inputs an earlier rebalance replaced
    index = GraphIndex(model)
    for rebalance in rebalances:
        mine = {
            *rebalance.consumers,
            *rebalance.through,
            *([rebalance.producer] if rebalance.producer else []),
        }
        if mine & touched:  # a layer rebalanced on both sides: read its current weights
            index = GraphIndex(model)  # (built once per rebalance, it cost a 640x640 convert 2 s of 84)
            touched.clear()
        touched |= mine
        s = rebalance.scales.astype(np.float64)
        for name in rebalance.consumers:
            _scale_input(model, namer, index, nodes[name], s)
        shape = [1] * rebalance.rank
        shape[rebalance.channel_axis] = s.size
        if rebalance.producer is not None:
            _scale_output(model, namer, index, nodes[rebalance.producer], 1.0 / s, shape)
            for name in rebalance.through:
                if name in nodes:  # a folded Clip is no longer in a quantized graph
                    _keep_exact(model, namer, index, nodes[name], (1.0 / s).reshape(shape))
            continue
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
    _replace(model, namer, node, 1, input_scaled_weight(index, node, s))


def input_scaled_weight(index: GraphIndex, node: onnx.NodeProto, s: np.ndarray) -> np.ndarray:
    """A Conv/Gemm/MatMul's weight times s [C] along the input channels of its data input (float64)."""
    w = _weight(index, node, 1)
    if node.op_type == "Conv":
        group = int(index.attribute(node, "group", 1))  # type: ignore[call-overload]
        c_out, c_per_group = w.shape[0], w.shape[1]
        blocks = w.reshape(group, c_out // group, c_per_group, -1) * s.reshape(group, 1, c_per_group, 1)
        return blocks.reshape(w.shape)
    if node.op_type == "Gemm" and index.attribute(node, "transB", 0):
        return w * s[None, :]  # B [N, K]
    return w * s[:, None]  # B [K, N]


def _scale_output(
    model: onnx.ModelProto,
    namer: Namer,
    index: GraphIndex,
    node: onnx.NodeProto,
    f: np.ndarray,
    shape: list[int],
) -> None:
    """The producer's output channel j times f_j [C]; shape: f's broadcast shape against its output."""
    if node.op_type in ("BatchNormalization", "LayerNormalization"):
        for position in (1, 2):  # scale and B, both [C]
            if len(node.input) > position and node.input[position]:
                _replace(model, namer, node, position, _weight(index, node, position) * f)
        return
    if node.op_type == "Mul":
        position = next(i for i, n in enumerate(node.input) if index.is_constant(n))
        _replace(model, namer, node, position, _weight(index, node, position) * f.reshape(shape))
        return
    if node.op_type == "Div":  # x / c times f: x / (c / f)
        _replace(model, namer, node, 1, _weight(index, node, 1) / f.reshape(shape))
        return
    w = _weight(index, node, 1)
    if node.op_type == "Conv" or index.attribute(node, "transB", 0):
        scaled = w * f.reshape(-1, *([1] * (w.ndim - 1)))
    else:
        scaled = w * f[None, :]
    _replace(model, namer, node, 1, scaled)
    if len(node.input) > 2 and node.input[2]:
        _replace(model, namer, node, 2, _weight(index, node, 2) * f)


def _keep_exact(
    model: onnx.ModelProto, namer: Namer, index: GraphIndex, node: onnx.NodeProto, f: np.ndarray
) -> None:
    """A node between the producer and the rebalanced tensor, now fed x / s: f = 1/s in broadcast shape."""
    if node.op_type == "Add":
        position = next(i for i, n in enumerate(node.input) if index.is_constant(n))
        _replace(model, namer, node, position, _weight(index, node, position) * f)
    elif node.op_type == "Clip":  # Clip(0, c)(x) / s = Min(Relu(x / s), c / s): per-channel bounds
        high = _weight(index, node, 2)
        bound = namer.fresh(f"{node.output[0]}_smooth_bound")
        model.graph.initializer.append(numpy_helper.from_array((high * f).astype(np.float32), bound))
        relu = namer.fresh(f"{node.output[0]}_relu")
        out = node.output[0]
        node.op_type = "Relu"
        del node.input[1:]
        del node.attribute[:]
        node.output[0] = relu
        model.graph.node.append(helper.make_node("Min", [relu, bound], [out], name=namer.fresh(f"{out}_Min")))
