"""Where to rebalance (SmoothQuant-style), with which scales, and where 1/s goes.

A quantized activation X is a candidate when every consumer is a quantized Conv, Gemm or MatMul reading
it as the data input. For each alpha of the config, the first-order noise estimate of qmath.smooth is
compared with X's current quantization. With --smoothquant auto the best alpha is kept where 1/s folds
into the producer (a quantized Conv/Gemm, through a folded ReLU: exact and free) and the estimate drops
by >= 10 %. Elsewhere a float Mul would have to be inserted before the consumers (X then stays float and
its producer loses its integer kernel); measured on MobileNetV2 that cost 6 % of speed for +0.1 dB, so
only a fixed --smoothquant ALPHA inserts it.
The rebalanced tensor's range follows from X's per-channel min/max: no second calibration pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from quantkit.config import ConvertConfig
from quantkit.graph.query import GraphIndex
from quantkit.planner.ranges import activation_params
from quantkit.qmath.smooth import LinearLayer, output_noise, rebalanced_range, smoothing_scales
from quantkit.results import CalibrationTable, QuantParams, Rebalance, TensorStats

FOLD_GAIN = 0.9
REBALANCED_OPS = frozenset({"Conv", "Gemm", "MatMul"})
FOLD_PRODUCERS = frozenset({"Conv", "Gemm"})


def plan_rebalances(
    index: GraphIndex,
    table: CalibrationTable,
    config: ConvertConfig,
    quantized: dict[str, str],
    folds: dict[str, str],
    activations: dict[str, QuantParams],
    range_of: Callable[[str], tuple[float, float]],
    shared: set[str],
) -> list[Rebalance]:
    """shared: tensors whose params are tied to another tensor's (they are left alone)."""
    if not config.smooth_alphas:
        return []
    found = []
    for tensor in sorted(activations):
        stats = table.stats.get(tensor)
        if tensor in shared or stats is None or stats.channel_min is None or stats.channel_max is None:
            continue
        consumers = _consumers(index, quantized, tensor)
        if not consumers:
            continue
        axis = 1 if consumers[0].op_type == "Conv" else -1
        layers = [_layer(index, node, stats.channel_min.size) for node in consumers]
        if any(layer is None for layer in layers) or any(_axis(n) != axis for n in consumers):
            continue
        choice = _best_alpha(
            [layer for layer in layers if layer is not None], stats, range_of(tensor), config
        )
        if choice is None:
            continue
        alpha, scales, ratio = choice
        producer = _fold_producer(index, quantized, folds, tensor, scales.size)
        if len(config.smooth_alphas) > 1 and (producer is None or ratio >= FOLD_GAIN):
            continue  # auto folds where that is free; a float Mul only when the user fixes alpha
        lo, hi = rebalanced_range(stats.channel_min, stats.channel_max, scales)
        found.append(
            Rebalance(
                tensor=tensor,
                scales=scales.astype(np.float32),
                alpha=alpha,
                consumers=tuple(n.name for n in consumers),
                producer=producer,
                channel_axis=axis,
                rank=index.ranks.get(tensor, 4 if axis == 1 else 2),
                params=activation_params(lo, hi, config.activations),
                noise_ratio=ratio,
            )
        )
    return found


def _consumers(index: GraphIndex, quantized: dict[str, str], tensor: str) -> list[onnx.NodeProto]:
    """The consumers of `tensor` if all are quantized linear layers reading it as data; else []."""
    uses = index.consumers.get(tensor, [])
    if not uses or tensor in index.graph_outputs:
        return []
    nodes = [node for node, position in uses if position == 0 and quantized.get(node.name) in REBALANCED_OPS]
    return nodes if len(nodes) == len(uses) else []


def _axis(node: onnx.NodeProto) -> int:
    return 1 if node.op_type == "Conv" else -1


def _layer(index: GraphIndex, node: onnx.NodeProto, channels: int) -> LinearLayer | None:
    """The weight as [O, C] abs-max and energy over taps, C = the input channels of X."""
    weight = index.constant(node.input[1])
    if weight is None:
        return None
    w = weight.astype(np.float64)
    if node.op_type == "Conv":
        group = int(index.attribute(node, "group", 1))  # type: ignore[call-overload]
        c_out, c_per_group = w.shape[0], w.shape[1]
        if c_per_group * group != channels:
            return None
        taps = int(np.prod(w.shape[2:]))
        blocks = w.reshape(group, c_out // group, c_per_group, taps)
        absmax, energy = np.zeros((c_out, channels)), np.zeros((c_out, channels))
        for g in range(group):
            rows = slice(g * (c_out // group), (g + 1) * (c_out // group))
            cols = slice(g * c_per_group, (g + 1) * c_per_group)
            absmax[rows, cols] = np.abs(blocks[g]).max(-1)
            energy[rows, cols] = (blocks[g] ** 2).sum(-1)
        return LinearLayer(absmax, energy, taps)
    matrix = w.T if node.op_type == "MatMul" or not index.attribute(node, "transB", 0) else w  # [O, C]
    if matrix.shape[1] != channels:
        return None
    return LinearLayer(np.abs(matrix), matrix**2, 1)


def _best_alpha(
    layers: list[LinearLayer], stats: TensorStats, current: tuple[float, float], config: ConvertConfig
) -> tuple[float, np.ndarray, float] | None:
    assert (
        stats.channel_min is not None and stats.channel_max is not None and stats.channel_absmax is not None
    )
    ch_min, ch_max = stats.channel_min, stats.channel_max
    x_absmax = stats.channel_absmax.astype(np.float64)
    w_absmax = np.max([layer.absmax_w.max(axis=0) for layer in layers], axis=0)
    before = output_noise(layers, x_absmax, current, np.ones_like(x_absmax))
    if before <= 0:
        return None
    best: tuple[float, np.ndarray, float] | None = None
    for alpha in config.smooth_alphas:
        scales = smoothing_scales(x_absmax, w_absmax, alpha)
        after = output_noise(layers, x_absmax, rebalanced_range(ch_min, ch_max, scales), scales)
        if best is None or after / before < best[2]:
            best = (alpha, scales, after / before)
    return best


def _fold_producer(
    index: GraphIndex, quantized: dict[str, str], folds: dict[str, str], tensor: str, channels: int
) -> str | None:
    """The Conv/Gemm whose output channels can absorb 1/s exactly: it writes `tensor` directly or
    through a folded ReLU (positive scales commute with ReLU; Clip's fixed bound does not)."""
    node = index.producer.get(tensor)
    if node is not None and node.name in folds:
        if node.op_type != "Relu":
            return None
        node = index.producer.get(node.input[0])
    if node is None or quantized.get(node.name) not in FOLD_PRODUCERS:
        return None
    weight = index.constant(node.input[1])
    if weight is None or weight.ndim < 2:
        return None
    out_axis = 0 if node.op_type == "Conv" or index.attribute(node, "transB", 0) else 1
    if weight.shape[out_axis] != channels:
        return None
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = index.constant(node.input[2])
        if bias is None or bias.ndim != 1:
            return None
    return node.name
