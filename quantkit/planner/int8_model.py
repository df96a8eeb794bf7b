"""The INT8 model a plan gives, as written and as onnxruntime runs it (--fallback fp16 | bf16)."""

from __future__ import annotations

import onnx

from quantkit.config import ConvertConfig, FallbackPrecision
from quantkit.graph import fp16_rewrite as fp16_graph
from quantkit.graph import model_io
from quantkit.graph.emulate import emulate, stored_as
from quantkit.graph.float_formats import BFLOAT16, FLOAT16, FloatFormat
from quantkit.graph.qdq import WeightMemo, apply_plan
from quantkit.planner import fp16_plan as fp16_planner
from quantkit.results import QuantPlan

# --fallback: the 16-bit type the layers left float run in (fp32: none)
FALLBACK_FORMATS: dict[FallbackPrecision, FloatFormat] = {
    FallbackPrecision.fp16: FLOAT16,
    FallbackPrecision.bf16: BFLOAT16,
}


def quantized_model(model: onnx.ModelProto, plan: QuantPlan, config: ConvertConfig) -> onnx.ModelProto:
    """The plan applied; with --fallback fp16 | bf16, what it leaves float then runs in that type."""
    quantized = apply_plan(model, plan)
    low = FALLBACK_FORMATS.get(config.fallback)
    if low is None:
        return quantized
    inferred = model_io.infer_shapes(quantized)
    keep = fp16_planner.int8_float32_nodes(inferred, set(plan.quantized_nodes), low)
    return fp16_graph.rewrite(inferred, keep, True, low).model


def runnable(quantized: onnx.ModelProto, config: ConvertConfig) -> onnx.ModelProto:
    """What onnxruntime runs for the model written: itself, or, where --fallback bf16 left layers in
    bfloat16, its float32 emulation."""
    low = FALLBACK_FORMATS.get(config.fallback)
    if low is None or low.runs_in_onnxruntime:
        return quantized
    stored = stored_as(quantized, low.elem_type)
    return emulate(quantized, stored, low.elem_type) if stored else quantized


def measured_model(
    model: onnx.ModelProto, plan: QuantPlan, config: ConvertConfig, memo: WeightMemo | None = None
) -> onnx.ModelProto:
    """What the searches measure for a plan: the model written as onnxruntime runs it (runnable of
    quantized_model); without --fallback fp16 | bf16 the plan applied, memo sparing rewritten weights.
    hunt37 F2: the --min-sqnr search measured its layers in float32 and wrote them in bfloat16; MobileNetV2
    reported 25.25 dB reached and its written model measured 24.08 on the same samples."""
    if FALLBACK_FORMATS.get(config.fallback) is None:
        return apply_plan(model, plan, memo)
    return runnable(quantized_model(model, plan, config), config)
