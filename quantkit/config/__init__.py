"""Typed, frozen configuration. CLI option names map 1:1 to fields; validated once in __post_init__.
How images become inputs lives in config.preprocessing, the choices convert offers in config.choices (both
re-exported here); as_enum in config.base."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from quantkit.config.base import (
    as_enum,
    as_number,
    as_size,
    check_threads,
    set_counts,
    set_floats,
    set_names,
    set_switches,
)
from quantkit.config.choices import (
    ActivationType,
    CalibMethod,
    FallbackPrecision,
    Precision,
    Prefer,
    Rounding,
    Target,
    WeightRange,
    check_target,
)
from quantkit.config.preprocessing import (
    CROP_FRACTION,
    LETTERBOX_PAD,
    PRESETS,
    ImageSelection,
    Layout,
    Preprocess,
    PreprocessOptions,
    Preset,
    ResizeMode,
)
from quantkit.errors import ConfigError

__all__ = [
    "CROP_FRACTION",
    "LETTERBOX_PAD",
    "PRESETS",
    "ActivationType",
    "CalibMethod",
    "FallbackPrecision",
    "ImageSelection",
    "Layout",
    "Precision",
    "Prefer",
    "Preprocess",
    "PreprocessOptions",
    "Preset",
    "ResizeMode",
    "Rounding",
    "Target",
    "WeightRange",
]


FLOAT_PRECISIONS = (Precision.fp16, Precision.bf16)
# --min-sqnr's default per 16-bit type (Float16Config.min_sqnr None). Float16 models measure 45-70 dB on
# their calibration samples; bfloat16 keeps 3 bits fewer (18 dB less): 21-47 dB (emulated; YOLOX-Nano
# 20.6, where its error is spread over every layer and 8 kept float32 give 21.8)
FLOAT_MIN_SQNR = {Precision.fp16: 40.0, Precision.bf16: 22.0}


class OutputKind(str, Enum):
    """What a model's [N, C] outputs hold, for the figures that read class scores (top-1 agreement, the
    check that FP32 is fed right, --max-drop's agreement)."""

    auto = "auto"  # values where the graph computes them as features (graph.output_kinds), else classes
    classes = "classes"  # class scores, whatever computes them
    values = "values"  # values of their own (embeddings, landmarks, regressions): no class figures


MIN_BINS, MAX_BINS = 2048, 2**20  # each observed tensor's histogram: 2**20 bins are 8 MB


@dataclass(frozen=True)
class CalibrateConfig:
    images: ImageSelection
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    batch_size: int = 8
    bins: int = 2048
    output_kind: OutputKind = OutputKind.auto  # what the FP32 check reads classes from

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_kind", as_enum(OutputKind, self.output_kind, "--output-kind"))
        set_counts(self, "batch_size", "bins")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not MIN_BINS <= self.bins <= MAX_BINS:  # hq57 D(b): 1e11 bins read as out of memory
            raise ConfigError(f"--bins is from {MIN_BINS} to {MAX_BINS}, got {self.bins}")


@dataclass(frozen=True)
class ConvertConfig:
    method: CalibMethod = CalibMethod.mse
    # --method mse: each end of an activation's range no further out than the mean over the calibration
    # images of each image's extreme (planner.range_plan.capped), kept where measured better
    range_cap: bool = True
    percentile: float = 99.999
    activations: ActivationType = ActivationType.uint8
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    # Layers that compute on exact values: their output, data input and the path back to the previous
    # linear layer stay float (--exclude-from; what `quantkit sensitivity` measures and writes).
    float_layers: tuple[str, ...] = ()
    quantize_attention_matmul: bool = False
    smoothquant: str = "auto"  # "auto", "off", or a fixed alpha in (0, 1)
    bias_correction: bool = True
    rounding: Rounding = Rounding.compensated
    prefer: Prefer = Prefer.balanced
    # Keep layers float until the output SQNR on the table's samples reaches this (0: never). Healthy INT8
    # models measure 17-34 dB here; below 12 dB a model is broken (YOLOX-Nano: 8.6 dB, 55 % of detections).
    min_sqnr: float = 12.0
    max_float_layers: int = 8
    # Measured: feature-map Concats in SqueezeNet and YOLOX have input range ratios <= 2.3; YOLOX's
    # head Concats (boxes beside sigmoid scores) 6.4-6.9. 4 keeps the former integer, the latter float.
    concat_range_ratio: float = 4.0
    fallback: FallbackPrecision = FallbackPrecision.fp32
    compact: bool = False  # shared initializers, default attributes dropped, short inner tensor names
    weight_range: WeightRange = WeightRange.auto  # the pipeline resolves auto for the machine it runs on
    # tensorrt: activations int8 symmetric (set here; TensorRT has no uint8 Q/DQ), weights full range
    target: Target = Target.ort_cpu
    # --to fp8: E4M3FN Q/DQ (opset 19), amax / 448 scales, placed for TensorRT; no rebalancing, weights
    # rounded to nearest (the integer grids of SmoothQuant's search and GPTQ's solve are not FP8's)
    fp8: bool = False

    @property
    def weight_qmax(self) -> int:
        """The int8 weights' largest magnitude: 63 when reduced, else 127 (auto unresolved counts as full)."""
        return 63 if self.weight_range is WeightRange.reduced else 127  # qmath.params' two ranges

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", as_enum(CalibMethod, self.method, "--method"))
        object.__setattr__(self, "activations", as_enum(ActivationType, self.activations, "--activations"))
        object.__setattr__(self, "fallback", as_enum(FallbackPrecision, self.fallback, "--fallback"))
        object.__setattr__(self, "weight_range", as_enum(WeightRange, self.weight_range, "--weight-range"))
        object.__setattr__(self, "rounding", as_enum(Rounding, self.rounding, "--rounding"))
        object.__setattr__(self, "prefer", as_enum(Prefer, self.prefer, "--prefer"))
        object.__setattr__(self, "target", as_enum(Target, self.target, "--target"))
        set_switches(self, "range_cap", "quantize_attention_matmul", "bias_correction", "compact", "fp8")
        check_target(self.target, self.activations, self.fp8, self.fallback)
        if self.fp8:  # the settings recorded are the ones that shape the file (hq75 1)
            object.__setattr__(self, "method", CalibMethod.minmax)  # amax / 448
            object.__setattr__(self, "target", Target.tensorrt)
            object.__setattr__(self, "smoothquant", "off")
            object.__setattr__(self, "rounding", Rounding.nearest)
        if self.method is not CalibMethod.mse:  # the cap bounds mse's search only (hq75 4)
            object.__setattr__(self, "range_cap", False)
        if self.target is Target.tensorrt:
            object.__setattr__(self, "activations", ActivationType.int8)
        if self.target is Target.openvino:  # signed int8 activations: 4-11 dB in OpenVINO 2026.4 on AVX2
            object.__setattr__(self, "activations", ActivationType.uint8)
        if self.target is not Target.ort_cpu and self.prefer is Prefer.speed:
            raise ConfigError(
                f"--prefer speed times onnxruntime on this CPU, not {self.target.value}; leave it out with "
                f"--target {self.target.value} and measure the model where it runs"
            )
        if self.target is not Target.ort_cpu:  # nothing is timed: --prefer accuracy changed only the
            object.__setattr__(self, "prefer", Prefer.balanced)  # recorded settings (hq107 F6: other bytes)
        set_names(self, "exclude_nodes", "exclude_op_types", "float_layers")
        set_floats(self, "percentile", "min_sqnr", "concat_range_ratio")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"--percentile must be in (50, 100], got {self.percentile}")
        if self.concat_range_ratio <= 1.0:
            raise ConfigError("the concat range ratio must be above 1")
        if not self.min_sqnr >= 0 or math.isinf(self.min_sqnr):  # hunt38: nan passed every comparison
            raise ConfigError(
                f"--min-sqnr must be at least 0 (0 turns the fallback off), got {self.min_sqnr}"
            )
        set_counts(self, "max_float_layers")
        if self.max_float_layers < 0:
            raise ConfigError(f"--max-float-layers must be at least 0, got {self.max_float_layers}")
        if self.smoothquant not in ("auto", "off"):
            try:
                alpha = as_number(self.smoothquant, "--smoothquant")
            except ConfigError:
                alpha = -1.0
            if not 0.0 < alpha < 1.0:
                raise ConfigError(
                    f"--smoothquant takes auto, off or an alpha in (0, 1); got {self.smoothquant!r}"
                )
            # one spelling of each alpha (hq144 F2: 0.5, '0.50' and '.5' wrote three files, np.float32
            # a TypeError after the whole conversion)
            object.__setattr__(self, "smoothquant", repr(alpha))

    def with_uint8_activations(self) -> ConvertConfig:
        """This config with uint8 activations whatever its target: the twin --target tensorrt measures its
        symmetric int8 against (pipeline.tensorrt_parity), the same plan in the other format. Never a model
        written: TensorRT has no uint8 Q/DQ, which is why __post_init__ sets int8 for it."""
        twin = dataclasses.replace(self)
        object.__setattr__(twin, "activations", ActivationType.uint8)
        return twin

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.value,
            "range_cap": self.range_cap,
            "percentile": self.percentile,
            "activations": self.activations.value,
            "exclude_nodes": list(self.exclude_nodes),
            "float_layers": list(self.float_layers),
            "exclude_op_types": list(self.exclude_op_types),
            "quantize_attention_matmul": self.quantize_attention_matmul,
            "smoothquant": self.smoothquant,
            "bias_correction": self.bias_correction,
            "rounding": self.rounding.value,
            "prefer": self.prefer.value,
            "min_sqnr": self.min_sqnr,
            "max_float_layers": self.max_float_layers,
            "concat_range_ratio": self.concat_range_ratio,
            "fallback": self.fallback.value,
            "compact": self.compact,
            "weight_range": self.weight_range.value,
            "target": self.target.value,
            "fp8": self.fp8,
        }


MAX_TIMED_RUNS = 100_000  # a median of this many runs moves no more


@dataclass(frozen=True)
class LatencyConfig:
    threads: int = 1
    warmup: int = 10
    runs: int = 100

    def __post_init__(self) -> None:
        set_counts(self, "threads", "runs", "warmup")
        if self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        check_threads(self.threads, automatic=False)
        if self.runs < 0 or self.warmup < 0:
            raise ConfigError("--runs must be 0 (no timing) or more and --warmup 0 or more")
        if max(self.runs, self.warmup) > MAX_TIMED_RUNS:  # hq114 F6: 2**63 an internal error, or no end
            raise ConfigError(f"--runs and --warmup take at most {MAX_TIMED_RUNS:,} runs each")


class DetectorHead(str, Enum):
    """How the box values of a [N, A, 4 + 1 + C] detector output read (yolov8: [N, 4 + C, A]; db: no box
    values, a map that text boxes are read from)."""

    yolo = "yolo"  # (cx, cy, w, h) in input pixels, as YOLOv5 and decoded YOLOX exports write them
    yolox = "yolox"  # raw YOLOX head: cell offsets and log sizes over the stride 8, 16, 32 grids
    yolov8 = "yolov8"  # Ultralytics YOLOv8/11: [N, 4 + C, A], boxes in pixels, class scores, no objectness
    db = "db"  # a DB text detector's probability map [N, 1, H, W] (PaddleOCR's): text boxes read from it
    # an end-to-end head [N, K, 6 + E] listing its final detections (x0, y0, x1, y1, score, class):
    # YOLOv10, YOLO26, Ultralytics exports with NMS
    end2end = "end2end"
    # GFL split heads (PP-PicoDet, NanoDet): class scores [N, A_s, C] and box distributions
    # [N, A_s, 4 (R + 1)] per stride, or both in one [N, A, C + 4 (R + 1)] (evaluate.gfl)
    gfl = "gfl"
    # SSD-style split heads (SSD, RFB, RetinaNet exports): class scores [N, A, C] (a softmax's background
    # its first or last class) beside decoded boxes [N, A, 4] as corners (evaluate.ssd)
    ssd = "ssd"


class Runtime(str, Enum):
    """Where compare runs both models (accuracy and latency alike)."""

    onnxruntime = "onnxruntime"
    openvino = "openvino"  # OpenVINO's CPU device, latency hint, float32 precision hint (an extra)


@dataclass(frozen=True)
class CompareConfig:
    images: ImageSelection
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    labels: Path | None = None
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    batch_size: int = 8
    detection_threshold: float | None = None  # YOLO-style detection recall at this score, when set
    detector: DetectorHead = DetectorHead.yolo  # how the head's boxes read, with detection_threshold
    runtime: Runtime = Runtime.onnxruntime
    output_kind: OutputKind = OutputKind.auto  # which outputs get class figures

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_kind", as_enum(OutputKind, self.output_kind, "--output-kind"))
        set_floats(self, "detection_threshold", flag="--score-threshold")  # hq144 F1: np.float32 in JSON
        if self.detection_threshold is not None and not 0.0 < self.detection_threshold < 1.0:
            raise ConfigError(f"--score-threshold must be in (0, 1), got {self.detection_threshold}")
        object.__setattr__(self, "runtime", as_enum(Runtime, self.runtime, "--runtime"))


@dataclass(frozen=True)
class Float16Config:
    """convert --to fp16 | bf16 (`to`): nodes to keep float32 by hand; graph inputs and outputs stay
    float32 unless keep_io_types is off."""

    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    keep_io_types: bool = True
    # With a table: keep the fewest layers float32 that lift the output SQNR on its samples to this (0:
    # off; None: FLOAT_MIN_SQNR's for `to`). Float16 models measure 45-70 dB here; YOLOX-Nano 38 dB,
    # where one layer float32 gives 42.
    min_sqnr: float | None = None
    max_float32_layers: int = 8
    compact: bool = False  # as ConvertConfig.compact
    # Without a table the smoke test runs on synthetic inputs: HxW for a model with a dynamic size
    # (default: the first of graph.samples.DEFAULT_SIDES the model runs on)
    input_size: tuple[int, int] | None = None
    to: Precision = Precision.fp16  # fp16 or bf16

    def __post_init__(self) -> None:
        object.__setattr__(self, "to", as_enum(Precision, self.to, "--to"))
        set_names(self, "exclude_nodes", "exclude_op_types")  # hunt38 F8: a string was read per character
        set_switches(self, "keep_io_types", "compact")
        if self.input_size is not None:
            object.__setattr__(self, "input_size", as_size(self.input_size))
        if self.to not in FLOAT_PRECISIONS:
            raise ConfigError(f"a 16-bit float conversion is --to fp16 or bf16, got {self.to.value}")
        set_counts(self, "max_float32_layers", flag="--max-float-layers")
        set_floats(self, "min_sqnr")
        if not 0 <= self.min_sqnr_db < math.inf:  # hq81 H3: inf kept all
            raise ConfigError(f"--min-sqnr must be a finite number of dB, 0 or more; got {self.min_sqnr_db}")
        if self.max_float32_layers < 0:  # hq113 F8: its refusal named --min-sqnr first
            raise ConfigError(f"--max-float-layers must be at least 0, got {self.max_float32_layers}")

    @property
    def min_sqnr_db(self) -> float:
        """min_sqnr, or the default of the type when it is None."""
        return FLOAT_MIN_SQNR[self.to] if self.min_sqnr is None else self.min_sqnr

    def to_dict(self) -> dict[str, Any]:
        return {
            "exclude_nodes": list(self.exclude_nodes),
            "exclude_op_types": list(self.exclude_op_types),
            "keep_io_types": self.keep_io_types,
            "min_sqnr": self.min_sqnr_db,
            "max_float32_layers": self.max_float32_layers,
            "compact": self.compact,
            "input_size": list(self.input_size) if self.input_size else None,
        }


class BudgetMetric(str, Enum):
    auto = "auto"  # top1 with --labels; on a YOLO-style head boxes with --detector, else recall; agreement
    top1 = "top1"  # top-1 accuracy points lost against FP32 (needs --labels)
    agreement = "agreement"  # points of top-1 disagreement with FP32
    recall = "recall"  # points of FP32 detections (anchors scoring > threshold) lost
    boxes = "boxes"  # FP32's final boxes (threshold, NMS) missed or added, per 100 (needs --detector)


# --max-drop without --labels or --detector where --output-kind values says no output holds class scores
VALUES_SAID = (
    "--max-drop needs class scores to agree on, and --output-kind values says no output holds them: give "
    "--min-sqnr DB for a floor on the output's SQNR (shrink: --min-eval-sqnr DB, a gate on it) instead, "
    "--labels, or --detector for a detection head"
)

# convert's options that only the accuracy budget (--max-drop) reads, by their parameter names
BUDGET_OPTIONS = (
    "max_drop",
    "validation",
    "validation_images",
    "labels",
    "metric",
    "max_trials",
    "timeout",
    "detector",
    "output_kind",
)


@dataclass(frozen=True)
class AccuracyBudget:
    """convert --max-drop: keep the fewest layers float that hold the metric within max_drop points of
    FP32 on validation images held apart from calibration."""

    max_drop: float
    validation: ImageSelection
    metric: BudgetMetric = BudgetMetric.auto
    labels: Path | None = None
    max_trials: int = 16
    timeout_s: float = 900.0
    detection_threshold: float = 0.3
    detector: DetectorHead | None = None  # how the head's boxes read; needed by the boxes metric
    output_kind: OutputKind = OutputKind.auto  # which outputs hold class scores to agree on

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", as_enum(BudgetMetric, self.metric, "--metric"))
        object.__setattr__(self, "output_kind", as_enum(OutputKind, self.output_kind, "--output-kind"))
        set_floats(self, "max_drop")
        set_floats(self, "timeout_s", flag="--timeout")
        set_floats(self, "detection_threshold", flag="--score-threshold")
        if self.metric is BudgetMetric.boxes and self.detector is None:
            raise ConfigError(
                "--metric boxes needs --detector yolo|yolox|yolov8|db|end2end|gfl|ssd to read the boxes"
            )
        if not 0.0 <= self.max_drop <= 100.0:
            raise ConfigError(f"--max-drop is in points (0-100), got {self.max_drop}")
        if self.max_trials < 1 or not self.timeout_s > 0:  # hq57 C1: nan passed `<= 0`, no time limit
            raise ConfigError("--max-trials must be at least 1 and --timeout above 0")
        if self.metric is BudgetMetric.top1 and self.labels is None:
            raise ConfigError("--metric top1 needs --labels FILE; or use --metric agreement")
        if self.labels is None and self.detector is None and self.output_kind is OutputKind.values:
            raise ConfigError(VALUES_SAID)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_drop": self.max_drop,
            "metric": self.metric.value,
            "validation": str(self.validation.folder),
            "validation_images": self.validation.num_images,
            "labels": str(self.labels) if self.labels else None,
            "max_trials": self.max_trials,
            "timeout_s": self.timeout_s,
            "detector": self.detector.value if self.detector else None,
            "output_kind": self.output_kind.value,
        }


@dataclass(frozen=True)
class Gates:
    """The pass/fail thresholds of `quantkit shrink`; None: not checked.

    max_drop: accuracy points lost against FP32: top-1 points with labels, else points of FP32
    detections lost for a YOLO-style head, else points of top-1 disagreement with FP32.
    min_speedup: FP32 p50 latency / INT8 p50 latency. max_size_ratio: INT8 bytes / FP32 bytes."""

    max_drop: float | None = None
    min_speedup: float | None = None
    max_size_ratio: float | None = None
    allow_degenerate_reference: bool = False  # else signs that FP32 is fed wrongly fail the run
    # the worst output's SQNR on the evaluation images, in dB: the gate of models whose outputs hold values
    min_eval_sqnr: float | None = None

    def __post_init__(self) -> None:
        set_floats(self, "max_drop", "min_speedup", "max_size_ratio", "min_eval_sqnr")
        set_switches(self, "allow_degenerate_reference")
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 100.0:
            raise ConfigError(f"--max-drop is in points (0-100), got {self.max_drop}")
        # finite too (hunt32: a limit of nan or inf ran the whole shrink, then failed a gate none passes)
        if self.min_speedup is not None and not 0 < self.min_speedup < math.inf:
            raise ConfigError(
                f"--min-speedup must be a finite number above 0 (e.g. 1.2), got {self.min_speedup}"
            )
        if self.max_size_ratio is not None and not 0 < self.max_size_ratio < math.inf:
            raise ConfigError(
                f"--max-size-ratio must be a finite number above 0 (e.g. 0.3), got {self.max_size_ratio}"
            )
        if self.min_eval_sqnr is not None and not math.isfinite(self.min_eval_sqnr):
            raise ConfigError(
                f"--min-eval-sqnr must be a finite number of dB (e.g. 25), got {self.min_eval_sqnr}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_drop": self.max_drop,
            "min_speedup": self.min_speedup,
            "max_size_ratio": self.max_size_ratio,
            "allow_degenerate_reference": self.allow_degenerate_reference,
            "min_eval_sqnr": self.min_eval_sqnr,
        }


@dataclass(frozen=True)
class ShrinkConfig:
    """quantkit shrink: calibrate on `calibration`, convert, compare on `evaluation`, check `gates`.
    cache_dir: where calibration tables are kept, keyed by model, preprocessing and image contents."""

    calibration: CalibrateConfig
    convert: ConvertConfig
    evaluation: CompareConfig
    gates: Gates
    cache_dir: Path | None

    def __post_init__(self) -> None:
        target = self.convert.target
        if self.gates.min_speedup is not None and target is not Target.ort_cpu:
            raise ConfigError(
                f"--min-speedup times onnxruntime on this CPU, not {target.value}; leave the gate out with "
                f"--target {target.value}"
            )
        evaluation = self.evaluation
        scores = evaluation.labels is not None or evaluation.detection_threshold is not None
        if self.gates.max_drop is not None and not scores and evaluation.output_kind is OutputKind.values:
            raise ConfigError(VALUES_SAID)
        if self.gates.min_speedup is not None and self.evaluation.latency.runs == 0:
            raise ConfigError("--min-speedup needs timed runs; give --runs 1 or more, or drop the gate")
