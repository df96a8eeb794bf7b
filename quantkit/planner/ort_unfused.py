"""Layers onnxruntime's CPU provider would run in float on dequantized weights: kept float on ort-cpu
(an extra pass over the weights every run and a rounding error for no speed)."""

from __future__ import annotations

import numpy as np
import onnx

from quantkit.config import Prefer, Target
from quantkit.graph.query import GraphIndex
from quantkit.planner.planning_state import Planning


def unfused_on_ort(state: Planning, node: onnx.NodeProto) -> str:
    """Why onnxruntime's CPU provider would run this layer in float on dequantized weights (an extra pass
    over its weights every run and a rounding error for nothing), or "" where it fuses it. Measured with
    its optimized graph (quantkit check): no QDQ ConvTranspose fusion at any level (1.32), and no integer
    Conv writing a float output (Gemm and MatMul have one: QGemm, MatMulIntegerToFloat). So a Conv writing
    a model output stays float, unless --prefer speed: then it is int8 with a Q/DQ pair on that output
    (placement.plan_compute), as onnxruntime.quantization writes it. One uint8 scale over the output
    rounds what the user reads: hq166's probes lost a small-scale channel beside a large one (8.9 dB
    against 77 dB with the head float), a heat map's peaks (argmax 37 % against 92 % of FP32's) and
    logits' argmax (80 % against 94 %); a real ESPCN lost 2 dB PSNR for 1.92x against 1.61x FP32."""
    if state.config.target is not Target.ort_cpu:
        return ""
    if node.op_type == "ConvTranspose":
        return "onnxruntime has no integer ConvTranspose kernel (it would run in float on int8 weights)"
    if node.op_type == "Gemm" and _scaled_gemm(state.index, node):
        return GEMM_SCALED
    if node.op_type == "Gemm" and _broadcast_bias(state.index, node):
        return GEMM_BROADCAST
    out = node.output[0]
    if node.op_type == "Conv" and out in state.index.graph_outputs:
        return OUTPUT_FLOAT if state.config.prefer is not Prefer.speed else _thin_channel(state, out)
    if node.op_type == "Conv" and not state.has_stats(out):
        return "no statistics for its output: onnxruntime has no integer Conv with a float output"
    return ""


OUTPUT_FLOAT = (
    "its output stays float (a model output): onnxruntime has no integer Conv with a float output "
    "(--prefer speed runs it int8 with its output rounded to uint8)"
)
DILATED_POOL = "a dilated AveragePool: onnxruntime has no integer kernel for it (kept float)"
DILATED_READ = (
    "its input is a dilated AveragePool's output, kept float: onnxruntime fuses a pool between Q/DQ pairs "
    "into QLinearAveragePool, which takes no dilations"
)


# A model output --prefer speed rounds to one uint8 grid: each of its channels must span this many of the
# grid's 255 steps (6 bits), else it stays float. hq167's detector-style head (box channels ~100 px beside
# logits ~1) left its logits 3 distinct values, class argmax 71 % of FP32's; hq166's mixed-scale probe
# 8.9 dB on its small channel.
MIN_CHANNEL_STEPS = 64.0


def _thin_channel(state: Planning, name: str) -> str:
    """Why the model output `name` stays float under --prefer speed: a channel whose calibration range
    spans fewer than MIN_CHANNEL_STEPS of the tensor's uint8 grid; "" where none does or the table has
    no channel statistics for it."""
    stats = state.table.stats.get(name)
    if stats is None or stats.channel_min is None or stats.channel_max is None:
        return ""
    grid = max(stats.maximum, 0.0) - min(stats.minimum, 0.0)
    if not np.isfinite(grid) or grid <= 0.0:
        return ""
    steps = (stats.channel_max.astype(np.float64) - stats.channel_min) * 255.0 / grid
    k = int(np.argmin(steps))
    if steps[k] >= MIN_CHANNEL_STEPS:
        return ""
    return (
        f"its output is a model output whose channel {k} spans {steps[k]:.1f} of the 255 steps one uint8 "
        f"scale over it would have (kept float: --prefer speed rounds a model output only where every "
        f"channel spans {MIN_CHANNEL_STEPS:.0f})"
    )


def dilated_pool(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """An AveragePool with a dilation other than 1: onnxruntime's QDQ fusion makes a QLinearAveragePool of
    it wherever its input and output both carry Q/DQ, which then fails to load ('Unrecognized attribute:
    dilations'; hq155 F2), so no Q/DQ may be on its output."""
    if node.op_type != "AveragePool":
        return False
    dilations = index.attribute(node, "dilations", [1])
    return any(d != 1 for d in np.asarray(dilations).reshape(-1))


GEMM_SCALED = (
    "onnxruntime fuses a Gemm into QGemm only at alpha 1 and beta 1 (it would run in float on int8 weights)"
)


GEMM_BROADCAST = (
    "onnxruntime fuses a Gemm into QGemm only with a bias of one value per output (this one's C is "
    "broadcast; it would run in float on int8 weights)"
)


def _broadcast_bias(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """A Gemm whose constant C is not one value per output ([N] or [1, N]; a scalar [1] broadcast, say):
    onnxruntime leaves it a float Gemm on dequantized weights (hq104 F4: counted as quantized, no QGemm)."""
    weight = index.constant(node.input[1]) if len(node.input) > 1 else None
    bias = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if weight is None or bias is None or weight.ndim != 2:
        return False
    outputs = weight.shape[0] if index.attribute(node, "transB", 0) else weight.shape[1]
    return bias.shape not in ((outputs,), (1, outputs))


def _scaled_gemm(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """A Gemm with alpha != 1, or a bias and beta != 1: onnxruntime 1.32 leaves it a float Gemm on
    dequantized weights (measured: a DQ -> Gemm(alpha 0.5) -> float reader stays Gemm, 3 DequantizeLinear)."""
    biased = len(node.input) > 2 and bool(node.input[2])
    beta = index.attribute(node, "beta", 1.0) if biased else 1.0
    return index.attribute(node, "alpha", 1.0) != 1.0 or beta != 1.0
