"""Frozen records shared across layers. Plain data: no I/O, no onnx, no runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TABLE_FORMAT = "quantkit-calibration"
TABLE_VERSION = 2  # 2: the JSON records the sha256 of its .npz


@dataclass(frozen=True)
class TensorStats:
    """Streaming statistics of one activation tensor over the whole calibration set.

    hist: int64 [bins], counts of values in equal-width bins over [hist_lo, hist_hi].
    channel_min, channel_max: float32 [C] or None, per-channel extremes (axis chosen at collection time).
    """

    minimum: float
    maximum: float
    hist: np.ndarray
    hist_lo: float
    hist_hi: float
    count: int
    channel_min: np.ndarray | None = None
    channel_max: np.ndarray | None = None
    channel_mean: np.ndarray | None = None  # float64 [C], for bias correction
    zeros: int = 0  # values exactly 0.0 (represented exactly by every quantizer)

    @property
    def channel_absmax(self) -> np.ndarray | None:
        """float32 [C]: max |x| per channel."""
        if self.channel_min is None or self.channel_max is None:
            return None
        return np.maximum(np.abs(self.channel_min), np.abs(self.channel_max))


@dataclass(frozen=True)
class CalibrationTable:
    """Statistics per tensor name, plus provenance (model hash, preprocessing, image-list hash, versions)."""

    meta: dict[str, Any]
    stats: dict[str, TensorStats]
    samples: np.ndarray | None = None  # float32 [K, ...]: a few preprocessed inputs for convert's smoke test

    @property
    def model_sha256(self) -> str:
        return str(self.meta.get("model_sha256", ""))


@dataclass(frozen=True)
class QuantParams:
    """scale/zero point of a QuantizeLinear. Per tensor: scale shape (). Per channel: shape [C] on axis."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # uint8 / int8 / int32, same shape as scale
    axis: int | None = None

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.zero_point.dtype


@dataclass(frozen=True)
class WeightPlan:
    """How one constant input of a quantized node is quantized (weight, bias, or constant operand)."""

    node: str
    input_index: int
    initializer: str
    kind: str  # "weight" | "bias" | "constant"
    axis: int | None  # per-channel axis, None for per-tensor


@dataclass(frozen=True)
class Rebalance:
    """Divide activation `tensor` by `scales` per channel and multiply its consumers' weights by them.

    producer: the node that absorbs 1/s (planner.rebalance: a Conv/Gemm/MatMul, BatchNormalization,
    LayerNormalization or Mul by a constant); None: a float Mul is inserted before the consumers and
    `tensor` itself is left unquantized.
    through: the ReLU / folded Clip / Add-constant nodes between the producer and `tensor`.
    params: Q/DQ params of the rebalanced tensor, whose range follows from the per-channel statistics.
    """

    tensor: str
    scales: np.ndarray  # float32 [C]
    alpha: float
    consumers: tuple[str, ...]
    producer: str | None
    channel_axis: int
    rank: int
    params: QuantParams
    through: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skip:
    node: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class QuantPlan:
    """Everything convert decided, as plain data: the rewrite applies it without further decisions.

    activations: tensor name -> params for a Q/DQ pair on that tensor.
    folds: Relu/Clip node name -> the tensor its producer now writes (the folded node's output).
    """

    activations: dict[str, QuantParams]
    weights: tuple[WeightPlan, ...]
    quantized_nodes: dict[str, str]  # node name -> op type
    folds: dict[str, str]
    skipped: tuple[Skip, ...]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    rebalances: tuple[Rebalance, ...] = ()
    input_means: dict[str, np.ndarray] = field(default_factory=dict)  # node -> E[x] per input channel
    weight_qmax: int = 127  # weights on [-weight_qmax, weight_qmax]: 63 for CPUs whose int8 kernel saturates


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


@dataclass(frozen=True)
class Accuracy:
    top1: float
    top5: float
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


@dataclass(frozen=True)
class Batch:
    """data: float32 [N, C, H, W] or [N, H, W, C]; paths: the N image files it came from."""

    data: np.ndarray
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class InputSpec:
    """The model's one image input: name and shape, None for a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class FallbackStep:
    """One layer kept in float by the accuracy fallback, and the output SQNR reached with it."""

    node: str
    op_type: str
    sqnr_db: float


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


@dataclass(frozen=True)
class Corrections:
    """What rebalancing and bias correction changed: output SQNR on the table's samples (before any
    layer is kept float) with neither, each alone and both; None where that one is off.

    layer_error_ratio: rebalanced activation -> its consumers' squared output error after / before
    (measured under --smoothquant auto). dropped: auto's choices measured no better at the output than
    none, so none were kept."""

    layer_error_ratio: dict[str, float]
    sqnr_plain_db: float
    sqnr_corrected_db: float | None
    sqnr_rebalanced_db: float | None
    sqnr_both_db: float | None
    dropped: bool = False


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
    budget: BudgetReport | None = None
    corrections: Corrections | None = None
    notes: tuple[str, ...] = ()  # what was changed on the way in (opset upgrade, Constant weights)


@dataclass(frozen=True)
class Float16Summary:
    """What convert --to fp16 did: float16 nodes by op type, nodes kept float32 and why, the range check,
    sizes and the smoke test."""

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


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op_type: str
    local_sqnr_db: float  # this layer's output with only it quantized, against FP32
    output_sqnr_db: float  # the model's output with only this layer kept float, against FP32
    recovered: float  # share of the INT8 model's output noise power that keeping it float removes


@dataclass(frozen=True)
class SensitivityReport:
    """Layers ranked by recovery (most first), and the top-k kept float together."""

    layers: tuple[LayerSensitivity, ...]
    int8_output_sqnr_db: float
    cumulative: tuple[tuple[int, float, float], ...]  # (k, output SQNR dB, share of noise recovered)
    num_images: int
    seconds: float
    settings: dict[str, Any]


@dataclass(frozen=True)
class GateResult:
    """One gate of `quantkit shrink`: what was measured against which limit, in which unit."""

    name: str  # "max_drop" | "min_speedup" | "max_size_ratio"
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
    # for the HTML report: (node, op type, SQNR dB when only it is quantized) and
    # (tensor, observed min, observed max, quantized lo, quantized hi)
    layer_sqnr_db: tuple[tuple[str, str, float], ...] = ()
    ranges: tuple[tuple[str, float, float, float, float], ...] = ()
    warnings: tuple[str, ...] = ()  # calibration's and comparison's (e.g. more images asked than held)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)
