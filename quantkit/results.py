"""Frozen records shared across layers. Plain data: no I/O, no onnx, no runtime."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TABLE_FORMAT = "quantkit-calibration"
TABLE_VERSION = 2  # 2: the JSON records the sha256 of its .npz

# What a model is fed: one float32 array [N, ...] for a model with one input, or {input name: [N, ...]}
# (every input the same N) for a model with several.
Feed = np.ndarray | dict[str, np.ndarray]
# A model's outputs on samples, one {tensor: array} a run (Session.iter_samples): in memory, or on disk and
# read back run by run (spill.SpilledRuns) where they are large.
Runs = Sequence[dict[str, np.ndarray]]


def feed_rows(feed: Feed) -> int:
    """N, the samples in a feed."""
    if isinstance(feed, np.ndarray):
        return int(feed.shape[0])
    return int(next(iter(feed.values())).shape[0]) if feed else 0


HALF_OVERFLOW = 65520.0  # the least value float16 rounds to infinity (65504 + half its last step)


def half_overflow(name: str, peak: float) -> str | None:
    """Why values reaching `peak` (in magnitude) cannot feed the float16 input `name` (hq69 F8, hq115 F8:
    read as infinity, then -inf dB blamed on the candidate), or None: float16 rounds every value below
    HALF_OVERFLOW to a finite one."""
    if peak < HALF_OVERFLOW:  # hq70 6: up to it, float16 rounds to 65504, no infinity
        return None
    return (
        f"input {name!r} is float16 and is fed values up to {peak:g}, beyond float16's 65504: the model "
        "reads them as infinity; feed values it can hold"
    )


def fed_as(value: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """value as an input of `dtype` takes it: float types cast, integer types (uint8 pixels) rounded and
    clipped to their range."""
    if value.dtype == dtype:
        return value
    if np.issubdtype(dtype, np.integer):  # clipped below the float nearest the top: int64's would wrap
        info = np.iinfo(dtype)
        top = np.nextafter(np.float64(info.max), 0) if info.bits == 64 else info.max
        return np.clip(np.rint(value.astype(np.float64)), info.min, top).astype(dtype)
    return value.astype(dtype)


def feed_shapes(feed: Feed, name: str) -> dict[str, tuple[int, ...]]:
    """Input name -> one sample's shape (its dimensions past the first); a lone array is input `name`."""
    if isinstance(feed, np.ndarray):
        return {name: tuple(feed.shape[1:])}
    return {key: tuple(value.shape[1:]) for key, value in feed.items()}


def fits_with(kept: list[Feed], feed: Feed) -> bool:
    """Whether feed's samples have the shapes of those kept (or nothing is kept yet): what feed_concat
    can stack. Arrays for a model with dynamic sizes (a text line of any width) come in several shapes;
    the samples a table stores are those of the first."""
    return not kept or feed_shapes(kept[0], "") == feed_shapes(feed, "")


def feed_take(feed: Feed, start: int, stop: int) -> Feed:
    """Samples [start:stop] of every input."""
    if isinstance(feed, np.ndarray):
        return feed[start:stop]
    return {name: value[start:stop] for name, value in feed.items()}


def feed_pad(feed: Feed, size: int) -> Feed:
    """The feed grown to `size` samples by repeating its last one (every input alike)."""
    if isinstance(feed, np.ndarray):
        return np.concatenate([feed, np.repeat(feed[-1:], size - feed.shape[0], axis=0)])
    return {
        name: np.concatenate([v, np.repeat(v[-1:], size - v.shape[0], axis=0)]) for name, v in feed.items()
    }


def sample_batches(samples: Feed, size: int) -> Iterator[Feed]:
    """The samples in batches of `size`, the last one padded (feed_pad): what a model of fixed batch runs."""
    for start in range(0, feed_rows(samples), size):
        chunk = feed_take(samples, start, start + size)
        yield chunk if feed_rows(chunk) == size else feed_pad(chunk, size)


def feed_repeat(feed: Feed, times: int) -> Feed:
    """Every sample repeated `times` times along the batch axis."""
    if isinstance(feed, np.ndarray):
        return np.repeat(feed, times, axis=0)
    return {name: np.repeat(value, times, axis=0) for name, value in feed.items()}


def feed_concat(feeds: list[Feed]) -> Feed:
    """The feeds one after the other (all of one kind: arrays, or dicts of the same names)."""
    if all(isinstance(f, np.ndarray) for f in feeds):
        return np.concatenate(feeds)  # type: ignore[arg-type]
    dicts = [f for f in feeds if isinstance(f, dict)]
    return {name: np.concatenate([f[name] for f in dicts]) for name in dicts[0]}


def same_value(a: object, b: object) -> bool:
    """Equality that numpy arrays take part in: equal dtype, shape and values (NaN equal to NaN), through
    dicts, tuples, lists and dataclasses."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and (a.dtype, a.shape) == (b.dtype, b.shape)
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_value, a, b))
    return bool(a == b)


class ArrayFields:
    """For a dataclass (declared eq=False) that holds numpy arrays: == by value (same_value; the
    generated == raised 'the truth value of an array is ambiguous': hq103 F4), and unhashable, as
    its arrays are."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            same_value(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.compare
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class TensorStats(ArrayFields):
    """Streaming statistics of one activation tensor over the whole calibration set.

    hist: int64 [bins], counts in equal-width bins over [hist_lo, hist_hi] (an aligned power-of-two grid,
    qmath.histogram) of the values sampled: all of a small batch, a fixed stride of a large one.
    count: every value seen. minimum, maximum and the channel statistics are over every value.
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
    zeros: int = 0  # sampled values exactly 0.0 (represented exactly by every quantizer): part of hist
    # the mean over calibration images of each image's minimum / maximum (None: unknown, e.g. a table from
    # before they were recorded, or a tensor that does not lead with its images)
    image_min_mean: float | None = None
    image_max_mean: float | None = None
    # values that were NaN or +-inf (left out of every statistic above): by design where the model's
    # outputs stay finite (an attention mask's -inf); such a tensor is never quantized
    nonfinite: int = 0

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
    samples: Feed | None = None  # float32 [K, ...] (per input): a few inputs for convert's smoke test
    # float32 [S, ...] (per input): the images with the most extreme activations (calib.extremes), on
    # which convert checks the range cap; None for array data, or a table from an earlier quantkit
    stress: Feed | None = None

    @property
    def model_sha256(self) -> str:
        return str(self.meta.get("model_sha256", ""))

    @property
    def samples_seen(self) -> int:
        """Images (or arrays) the statistics were gathered over; 0 where the table does not say."""
        for key in ("images", "inputs"):
            entry = self.meta.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("count"), int):
                return int(entry["count"])
        return 0


@dataclass(frozen=True, eq=False)
class QuantParams(ArrayFields):
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
    layer: str = ""  # a bias on another node (a MatMul's bias Add): the layer whose scales it takes


@dataclass(frozen=True, eq=False)
class Rebalance(ArrayFields):
    """Divide activation `tensor` by `scales` per channel and multiply its consumers' weights by them.

    producer: the node that absorbs 1/s (planner.smoothquant_plan: a Conv/Gemm/MatMul, BatchNormalization,
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


@dataclass(frozen=True, eq=False)
class QuantPlan(ArrayFields):
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
    # node -> its weight's integers chosen for the output error (qmath.rounding), in the weight's layout;
    # the scales stay per-channel absmax / weight_qmax. Layers not here round to nearest.
    rounded: dict[str, np.ndarray] = field(default_factory=dict)
    # biases stay float (corrected for the weights' rounding) instead of int32 through a DQ: TensorRT
    float_bias: bool = False
    fp8: bool = False  # weights and activations E4M3FN (zero point 0, per-channel weights at absmax / 448)
    # layers kept float whose input path stops at a tensor other layers read too (planner.plan's `cut`)
    cut_paths: frozenset[str] = frozenset()
    # tensor -> c: the Q/DQ pair quantizes tensor + c, every reader's float bias absorbs c (--target
    # tensorrt: planner.tensorrt_shift decides, graph.shift_rewrite writes)
    shifts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """data: float32 [N, C, H, W] or [N, H, W, C] (or, for a model with several inputs, {name: [N, ...]});
    paths: the N image files (or sample-K names) it came from."""

    data: Feed
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class InputSpec:
    """One input of the model: name, shape (None for a dynamic dimension) and numpy's name of its element
    type ("float32", "uint8", "int64", "bool", "float16")."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @property
    def pixels(self) -> bool:
        """The input takes uint8 pixel values (0-255) and normalises them itself."""
        return self.dtype == "uint8"

    @property
    def integer(self) -> bool:
        """Another integer type (an id, a size): fed from arrays, through float32 samples."""
        return np.dtype(self.dtype).kind in "iu" and not self.pixels

    @property
    def batch_dim(self) -> int | None:
        """Its first dimension (None: dynamic); 1 for a scalar (rank 0), which has no batch axis to stack
        samples on: one sample a run, fed as the scalar it is (runtime.Session.feed)."""
        return self.shape[0] if self.shape else 1


def fixed_batch_of(first_dims: Sequence[int | None]) -> int | None:
    """The batch a model's inputs fix, from their first dimensions (None: dynamic): None where none fixes
    it, the size where each fixes the same one, else 1. A fixed [1] beside a dynamic image batch (an
    unsharp mask's `amount`, a low-light net's exposure) has no batch axis: one sample a run is all that
    fits; stacking 8 gave it [8] and onnxruntime refused the run."""
    fixed = {d for d in first_dims if d is not None}
    if not fixed:
        return None
    return fixed.pop() if len(fixed) == 1 and None not in first_dims else 1


@dataclass(frozen=True)
class FallbackStep:
    """One layer kept in float by the accuracy fallback, and the output SQNR reached with it."""

    node: str
    op_type: str
    sqnr_db: float
    cut: bool = False  # its input path stops at a tensor other layers read too (planner.plan's `cut`)


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
    # error-compensating rounding (planner.rounding_plan), on top of the above: output SQNR rounding to
    # nearest and with the chosen integers (None: --rounding nearest or nothing to round); layers kept so
    rounded_layers: int = 0
    sqnr_nearest_db: float | None = None
    sqnr_rounded_db: float | None = None


def batched(value: Any) -> np.ndarray:
    """A model's output as [N, ...]: a rank-0 one (a ReduceMean over every axis, keepdims=0) as [1], one
    value a run, so that the figures' per-image rows read it (hq59 B2: every convert and compare crashed
    on it)."""
    array = np.asarray(value)
    return array.reshape(1) if array.ndim == 0 else array
