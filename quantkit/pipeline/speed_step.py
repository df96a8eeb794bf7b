"""convert's speed-aware step: the plan made again with the ops whose int8 form profiles slower on this
CPU kept float (pipeline.speed_memory, pipeline.speed_refine), where that keeps every output above the
INT8 floor that the plan itself keeps; and the shape --max-drop's trials take from it (`trial_shape`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from quantkit.config import ConvertConfig, FallbackPrecision, Prefer, Target
from quantkit.graph import model_io
from quantkit.graph.emulate import stored_as
from quantkit.graph.float_formats import FLOAT16
from quantkit.graph.query import GraphIndex
from quantkit.outcomes import SpeedPlan
from quantkit.pipeline import speed_memory
from quantkit.pipeline.speed_refine import INPUTS, REASON, TIED_GAIN_DB, Refined, matmul_led
from quantkit.pipeline.writing import INT8_FLOOR_DB
from quantkit.planner import fallback, targets
from quantkit.planner import plan as make_plan
from quantkit.planner.int8_model import quantized_model, runnable
from quantkit.results import CalibrationTable, Feed, QuantPlan, Runs


def timed(config: ConvertConfig, quantized: onnx.ModelProto) -> bool:
    """Whether convert times the plan of `quantized` on this CPU: runs_here, and not --prefer accuracy."""
    return config.prefer is not Prefer.accuracy and runs_here(config, quantized)


def runs_here(config: ConvertConfig, quantized: onnx.ModelProto) -> bool:
    """Whether `quantized` runs on this CPU as it would where deployed: placed for onnxruntime's CPU
    kernels, run as written (the float32 emulation of bfloat16 layers is not their speed), with no layer
    in float16 (in_float16), and not --fallback bf16: every op the timing would keep float is bfloat16
    there, which onnxruntime's CPU provider cannot load (hq120 F2: MobileNetV2's plan, no layer float,
    was timed, and convert failed 'onnxruntime cannot load the model (... Conv(22))'). --prefer accuracy
    plans with no timing, but the model it writes is timed once for the summary where this holds (hq166
    F4: a low-light enhancer, SCI, was written at 0.63x FP32 without a word)."""
    if config.target is not Target.ort_cpu or config.fallback is FallbackPrecision.bf16:
        return False  # nothing timed: no emulation built to learn it
    return runnable(quantized, config) is quantized and not in_float16(config, quantized)


def in_float16(config: ConvertConfig, quantized: onnx.ModelProto) -> bool:
    """Whether --fallback fp16 left layers in float16: hardware with float16 kernels runs them, this CPU
    runs them between Casts (hq75 2: timed here, MobileNetV2's 37 int8 layers of a --min-sqnr 30 plan
    ran 0.79x FP32 and were all kept float, the file the FP32 model in float16)."""
    return config.fallback is FallbackPrecision.fp16 and bool(stored_as(quantized, FLOAT16.elem_type))


@dataclass(frozen=True)
class Shape:
    """How each --max-drop trial is placed: as convert writes the plan without a budget, with the ops its
    speed-aware step kept float (slower: node -> why), or with Q/DQ on the weighted layers' inputs only
    (planner.targets.inputs_only); report: what that step measured on the plan with no layer kept float."""

    slower: Mapping[str, str]
    inputs_only: bool
    report: SpeedPlan

    @property
    def note(self) -> str:
        """One line for convert's summary, beside the trials."""
        if self.inputs_only:
            how = "places Q/DQ on the weighted layers' inputs only"
        else:
            how = f"keeps float the {len(self.slower)} op(s) whose int8 form profiled slower on this CPU"
        return f"each trial {how}, as convert does without --max-drop (--prefer accuracy: none)"


def trial_shape(
    inferred: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    base: QuantPlan,
    fallen: Mapping[str, str],
    cache: dict[str, tuple[float, float]],
    alphas: Mapping[str, float] | None,
    measured: tuple[Runs, Feed, fallback.SqnrMemo],
) -> Shape | None:
    """The speed-aware step of `base` (the plan convert makes without a budget, `fallen` float by the
    fallback) as the shape of --max-drop's trials; None where convert times nothing or the plan stands.
    hunt36 F4: YOLOX-Nano's trials quantized every op of its SiLU chains, which that plan keeps float for
    speed: 64 points lost with no layer float, where the plan lost 4.93, and --max-drop 5 wrote FP32."""
    quantized = quantized_model(inferred, base, config)
    if not timed(config, quantized):
        return None
    faster, _ = refined(inferred, table, config, (base, quantized), fallen, cache, alphas, measured)
    report = None if faster is None else faster.report
    if report is None or report.refined_speedup is None:
        return None
    return Shape(dict.fromkeys(report.floated, REASON), report.placement == INPUTS, report)


def refined(
    inferred: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    made: tuple[QuantPlan, onnx.ModelProto],
    fallen: Mapping[str, str],
    cache: dict[str, tuple[float, float]],
    alphas: Mapping[str, float] | None,
    measured: tuple[Runs, Feed, fallback.SqnrMemo],
) -> tuple[Refined | None, tuple[str, ...]]:
    """made: the plan and its model; fallen: node -> why, the layers the fallback kept float (kept so in
    every plan tried); measured: FP32's outputs on the table's samples, the samples, the memo of output
    SQNRs. (the faster plan and its model, or None where the plan stands; the note where the faster one
    put an output below the floor that the plan keeps, and so was not taken)."""
    base, quantized = made
    reference, samples, memo = measured

    def build(slower: Mapping[str, str]) -> tuple[QuantPlan, onnx.ModelProto]:
        again = make_plan(
            inferred, table, config, dict(fallen), cache, alphas, base.rounded, slower, base.cut_paths
        )
        return again, quantized_model(inferred, again, config)

    def accuracy(model: onnx.ModelProto) -> float:
        return fallback.output_sqnr(model, reference, samples, memo)

    def inputs_only() -> tuple[QuantPlan, onnx.ModelProto]:
        placed = targets.inputs_only(base, GraphIndex(inferred))
        return placed, quantized_model(inferred, placed, config)

    def holds(model: onnx.ModelProto) -> bool:  # measured with accuracy's run (the memo)
        return fallback.output_sqnr(model, reference, samples, memo, worst=True) >= INT8_FLOOR_DB

    fixed = model_io.weights_fixed(inferred)[0]  # profiled as the network, not its overridable form
    faster = speed_memory.refine(fixed, table, base, quantized, samples, build, accuracy, inputs_only, holds)
    pair = (runnable(faster.model, config), runnable(quantized, config))
    below = speed_memory.below_floor(*pair, INT8_FLOOR_DB, reference, samples, memo)
    return (None, below) if below else (faster, ())


ACCURATE = "inputs-only, more accurate"  # SpeedPlan.placement of --prefer accuracy's inputs-only plan


def more_accurate(
    inferred: onnx.ModelProto,
    config: ConvertConfig,
    made: tuple[QuantPlan, onnx.ModelProto],
    measured: tuple[Runs, Feed, fallback.SqnrMemo],
) -> Refined | None:
    """--prefer accuracy decides nothing by timing, but where MatMul / Gemm lead an onnxruntime plan (a
    transformer's) it also measures that plan with Q/DQ on the weighted layers' inputs only
    (planner.targets.inputs_only): where that is TIED_GAIN_DB more accurate on the calibration samples it
    is written (hq150 F4: the full plan quantizes residual Adds and LayerNorm / GELU arithmetic; vit_mnist
    read 25.7 dB so, 32.3 dB so placed, which balanced wrote for its speed). No timing: the same bytes on
    any machine but where the two measure within rounding of the margin. None: the plan stands."""
    base, quantized = made
    if config.prefer is not Prefer.accuracy or config.target is not Target.ort_cpu or not matmul_led(base):
        return None
    if runnable(quantized, config) is not quantized:  # an emulation (bfloat16, float16 layers)
        return None
    reference, samples, memo = measured
    placed = targets.inputs_only(base, GraphIndex(inferred), targets.INPUTS_ONLY_ACCURATE)
    model = quantized_model(inferred, placed, config)
    full, kept = (fallback.output_sqnr(m, reference, samples, memo) for m in (quantized, model))
    if kept < full + TIED_GAIN_DB:
        return None
    return Refined(placed, model, SpeedPlan((), None, None, (full, kept), placement=ACCURATE))
