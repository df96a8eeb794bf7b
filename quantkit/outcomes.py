"""What the commands report: frozen records of a conversion, a comparison, a sensitivity ranking and a
shrink run, each with .to_dict(), the JSON the CLI writes (versioned schemas). Plain data: no I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from quantkit.config.base import as_count
from quantkit.errors import ConfigError
from quantkit.outcome_records import (
    comparison_record,
    convert_record,
    sensitivity_record,
    shrink_record,
)
from quantkit.results import Corrections, FallbackStep, QuantPlan
from quantkit.strict_json import json_safe
from quantkit.version import __version__

CHECK_SCHEMA = "quantkit-check/1"


@dataclass(frozen=True)
class LatencyStats:
    """Latency in milliseconds over `runs` timed calls."""

    p50: float
    p90: float
    p99: float
    mean: float
    runs: int


@dataclass(frozen=True)
class OutputMetrics:
    name: str
    sqnr_db: float
    cosine: float
    max_abs_error: float
    top1_agreement: float | None = None  # fraction, classification-like outputs only
    top5_overlap: float | None = None
    detection_recall: float | None = None  # fraction of the reference's detections found (--detector)
    detections: int | None = None  # the reference's detections above the score threshold
    boxes: int | None = None  # the reference's final boxes (score threshold, then NMS), --detector
    boxes_found: int | None = None  # of those, the candidate's boxes of the same class at IoU >= 0.5
    boxes_extra: int | None = None  # the candidate's boxes the reference does not have
    boxes_borderline: int | None = None  # missed or extra boxes scoring within 0.01 of the threshold
    noise_images: int = 0  # images whose own output is mostly noise (cosine below output_errors.NOISE_COSINE)
    worst_kind: tuple[int, int, float] | None = None  # (axis, index, dB): the worst kind (kinds_axis)
    labels: bool = False  # integer outputs (an ArgMax's): top1_agreement of labels; SQNR says nothing
    varying_sqnr_db: float | None = None  # where sqnr_db hides what changes between images (variation)
    selected: bool = False  # a TopK / NonMaxSuppression chose and ordered its rows: row by row says little
    probabilities: bool = False  # class scores FP32 gives as distributions (a Softmax's, a LogSoftmax's)
    worst_image: tuple[int, float, float] | None = None  # (index, dB, the other images' pooled dB)


@dataclass(frozen=True)
class Accuracy:
    top1: float
    top5: float | None  # None: scores of 5 classes or fewer, where top-5 is always right
    count: int


@dataclass(frozen=True)
class ComparisonResult:
    reference: str
    candidate: str
    num_images: int
    outputs: tuple[OutputMetrics, ...]
    reference_accuracy: Accuracy | None
    candidate_accuracy: Accuracy | None
    reference_latency: LatencyStats | None
    candidate_latency: LatencyStats | None
    reference_bytes: int
    candidate_bytes: int
    settings: dict[str, Any]
    environment: dict[str, Any]
    candidate_conversion: dict[str, Any] | None = None  # what quantkit recorded converting it
    latency_samples_ms: tuple[tuple[float, ...], ...] = ()  # (reference, candidate) timed runs, in order
    reference_findings: tuple[str, ...] = ()  # signs that FP32 itself is fed wrongly (evaluate.sanity)
    warnings: tuple[str, ...] = ()  # other things that change what the figures mean (swapped models...)

    @property
    def speedup(self) -> float | None:
        if self.reference_latency is None or self.candidate_latency is None:
            return None
        return self.reference_latency.p50 / self.candidate_latency.p50

    @property
    def size_ratio(self) -> float:
        return self.reference_bytes / max(self.candidate_bytes, 1)

    @property
    def top1_delta(self) -> float | None:
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return self.candidate_accuracy.top1 - self.reference_accuracy.top1

    def to_dict(self) -> dict[str, Any]:
        """Every figure, JSON-ready (non-finite numbers as text): the record the CLI writes (--json)."""
        return json_safe(comparison_record(self))


@dataclass(frozen=True)
class BudgetReport:
    """convert --max-drop: the metric, each trial (layers kept float, points lost) and the choice."""

    metric: str
    max_drop: float
    validation_images: int
    trials: tuple[tuple[tuple[str, ...], float], ...]
    chosen: tuple[str, ...]
    chosen_drop: float
    stopped: str | None
    not_written: str = ""  # why the choice is not the model written (int8 slower: all float); "" if it is
    placed: str = ""  # how each trial was placed where not as planned (pipeline.speed_step.Shape.note)
    units: int = 0  # what the chosen trial's points count (images, positions, boxes): 100 points in all
    unread: tuple[str, ...] = ()  # validation images that could not be read (left out; not counted)


SLOWER_BELOW = 0.97  # reported slower than FP32 below this (interleaved medians repeat within about 2 %)


@dataclass(frozen=True)
class Speed:
    """A converted model's speed against FP32 where it was made (evaluate.speed)."""

    speedup: float  # FP32 time / candidate time: the median over interleaved rounds
    rounds: int
    fp32_ms: float  # medians
    candidate_ms: float

    @property
    def slower(self) -> bool:
        return self.speedup < SLOWER_BELOW


@dataclass(frozen=True)
class SpeedPlan:
    """What the speed-aware plan did (pipeline.speed_refine): the ops it kept float, and the speedups over
    FP32 before and after, one interleaved measurement (refined None: not faster as a whole, the plan
    stands); sqnr_db: the fastest refined plan's and the one kept as more accurate and nearly as fast."""

    floated: tuple[str, ...]
    plain_speedup: float | None  # None: nothing timed (--prefer accuracy's placement, speed_step.ACCURATE)
    refined_speedup: float | None
    sqnr_db: tuple[float, float] | None = None
    recalled: str | None = None  # the record it was read back from (pipeline.speed_memory); None: measured
    placement: str | None = None  # "inputs-only": Q/DQ on the weighted layers' inputs only (floated empty);
    # "inputs-only, more accurate": so placed by --prefer accuracy, sqnr_db (the full plan's, this one's)


@dataclass(frozen=True)
class Finding:
    """One placement or type a runtime cannot fuse or run (graph.target_rules): rule, node, why."""

    rule: str
    node: str
    op_type: str
    message: str


@dataclass(frozen=True)
class CheckReport:
    """`quantkit check`: a Q/DQ model read against one target's rules."""

    model: str
    target: str
    layers: int  # Conv / ConvTranspose / Gemm / MatMul nodes
    quantized_layers: int  # of those, reading a DequantizeLinear on their data input
    findings: tuple[Finding, ...]
    kept_for_speed: tuple[str, ...] = ()  # float on purpose: quantkit's speed plan (not findings)
    rebalancing_muls: tuple[str, ...] = ()  # float on purpose: rebalancing's Muls nothing absorbs

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CHECK_SCHEMA,
            "version": __version__,
            "model": self.model,
            "target": self.target,
            "layers": self.layers,
            "quantized_layers": self.quantized_layers,
            "findings": [dataclasses.asdict(f) for f in self.findings],
            "kept_float_for_speed": list(self.kept_for_speed),
            "float_rebalancing_muls": list(self.rebalancing_muls),
        }


@dataclass(frozen=True)
class ConvertSummary:
    """What convert did: counts by op type, what stayed float and why, sizes, and the smoke test."""

    quantized_by_type: dict[str, int]
    folded_by_type: dict[str, int]
    float_by_reason: dict[tuple[str, str], int]  # (op type, reason) -> count
    bytes_before: int
    bytes_after: int
    opset_before: int
    opset_after: int
    smoke_sqnr_db: dict[str, float]  # per output, on the table's stored samples
    plan: QuantPlan
    fallback: tuple[FallbackStep, ...] = ()
    fallback_start_db: float | None = None
    fallback_target_db: float = 0.0  # --min-sqnr, or --target tensorrt's own target (its whose)
    fallback_target_whose: str = "--min-sqnr"
    budget: BudgetReport | None = None
    corrections: Corrections | None = None
    notes: tuple[str, ...] = ()  # what was changed on the way in (opset upgrade, Constant weights)
    speed: Speed | None = None  # measured after writing (1 thread); None when not measured
    speed_plan: SpeedPlan | None = None  # None: the ops' times were not compared (nothing to gain)
    prepared_fewer: int = 0  # ops the preparation took out (BatchNormalization folded, weights stored)
    target_findings: tuple[Finding, ...] = ()  # what the --target cannot fuse (graph.target_rules)
    warnings: tuple[str, ...] = ()  # what changes the written model's meaning: stderr, kept under --quiet
    samples: int = 0  # the table's stored samples that every figure on calibration samples is measured on

    def to_dict(self) -> dict[str, Any]:
        """Every figure but the plan's arrays, JSON-ready (non-finite numbers as text)."""
        return json_safe({**convert_record(self), "notes": list(self.notes), "warnings": list(self.warnings)})


@dataclass(frozen=True)
class Float16Summary:
    """What convert --to fp16 | bf16 did: 16-bit nodes by op type (float16_by_type, whichever the type),
    nodes kept float32 and why, the range check, sizes and the smoke test, and what ran it."""

    float16_by_type: dict[str, int]
    kept_float32: tuple[tuple[str, str, str], ...]  # (node, op type, reason)
    checked_tensors: int | None  # activations range-checked against the table; None: no table given
    overflowing_weights: tuple[tuple[str, float], ...]  # (initializer, max |w|) kept float32
    casts: int
    bytes_before: int
    bytes_after: int
    smoke_sqnr_db: dict[str, float]
    smoke_input: str  # what the smoke test ran on
    notes: tuple[str, ...] = ()  # what was changed on the way in (Constant weights read as initializers)
    target: str = "float16"  # the type written: float16 or bfloat16
    measured_by: str = "onnxruntime"  # or the float32 emulation of a bfloat16 model (smoke test, fallback)
    warnings: tuple[str, ...] = ()  # on stderr, kept under --quiet (ConvertSummary.warnings)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))  # every field is JSON-ready but non-finite numbers


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op_type: str
    local_sqnr_db: float  # this layer's output with only it quantized, against FP32
    output_sqnr_db: float  # the model's output with only this layer kept float, against FP32
    recovered: float  # share of the INT8 model's output noise power that keeping it float removes
    with_it: tuple[str, ...] = ()  # the other layers that go float with it (planner.sensitivity.floated_with)


# A larger top-k set kept float together must measure this much more than a smaller one to be chosen.
TOGETHER_MARGIN_DB = 0.1


@dataclass(frozen=True)
class SensitivityReport:
    """Layers ranked by recovery (most first), and the top-k kept float together."""

    layers: tuple[LayerSensitivity, ...]
    int8_output_sqnr_db: float
    cumulative: tuple[tuple[int, float, float], ...]  # (k, output SQNR dB, share of noise recovered)
    num_images: int
    seconds: float
    settings: dict[str, Any]
    warnings: tuple[str, ...] = ()  # images unread, fewer than --num-images asked (hunt39 F8: in silence)

    def to_dict(self) -> dict[str, Any]:
        """Every figure, JSON-ready (non-finite numbers as text): the record the CLI writes (--json)."""
        return json_safe(sensitivity_record(self))

    def best_together(self, most: int) -> int | None:
        """Of the top-k sets kept float together (k <= most), the fewest within TOGETHER_MARGIN_DB of the
        best measured; None where none was measured. A text detector's file listed 5 layers for 16.93 dB
        where 1 gave 16.89 dB. most: a whole number, at least 1 (hq144 F8: '2' raised a TypeError)."""
        if (most := as_count(most, "best_together's most")) < 1:
            raise ConfigError(f"best_together's most is how many layers at most, at least 1; got {most}")
        measured = [(k, db) for k, db, _ in self.cumulative if k <= most]
        if not measured:
            return None
        best = max((db for _, db in measured if db < float("inf")), default=float("inf"))  # not all float
        return min(k for k, db in measured if db >= best - TOGETHER_MARGIN_DB)


@dataclass(frozen=True)
class GateResult:
    """One gate of `quantkit shrink`: what was measured against which limit, in which unit."""

    name: str  # "max_drop" | "min_speedup" | "max_size_ratio" | "min_eval_sqnr" | "reference"
    measured: float | None  # None: the figure could not be measured (the gate fails)
    limit: float
    unit: str
    passed: bool


@dataclass(frozen=True)
class ShrinkResult:
    """What `quantkit shrink` did: the converted model, the comparison, the gates and the cache."""

    model: str
    output: str
    table: str
    cache_hit: bool
    calibration_seconds: float  # 0 when the cache was hit
    convert: ConvertSummary
    comparison: ComparisonResult
    gates: tuple[GateResult, ...]
    settings: dict[str, Any]
    # for the HTML report: (node, op, SQNR dB only it quantized); (tensor, min, max, quantized lo, hi)
    layer_sqnr_db: tuple[tuple[str, str, float], ...] = ()
    ranges: tuple[tuple[str, float, float, float, float], ...] = ()
    warnings: tuple[str, ...] = ()  # calibration's and comparison's (e.g. more images asked than held)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        """Every figure, JSON-ready (non-finite numbers as text): the record of report.json and --json."""
        return json_safe(shrink_record(self))
