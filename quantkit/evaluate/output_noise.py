"""Output noise against a reference, each output (and each kind of feature within one) weighing alike:
the figure every search, floor and sensitivity share of convert reads. Pure numpy."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from quantkit.errors import ConversionError
from quantkit.evaluate.end2end import rows_differ
from quantkit.evaluate.metrics import sqnr_db
from quantkit.evaluate.variation import FEW_IMAGES, MAX_ELEMENTS

# An output [N, a, b] can list features of different kinds along a short axis: YOLOv8's [N,
# 4 + classes, anchors] boxes in pixels beside class scores in [0, 1], YOLOX's [N, anchors, 85] raw boxes
# beside objectness and class scores. Pooled, the boxes' power hid the scores: NudeNet's YOLOv8n measured
# 41 dB (boxes 40.9, class scores 8.5) while it lost 38 of its 81 final boxes. Its scores (features whose
# every value is in [0, 1]) and its other features then weigh alike, each kind pooled: every feature
# alike instead made a class absent from the images (YOLOX: scores of 0.008 RMS, 1.8 dB) as weighty as
# the boxes. A feature axis is at most FEATURE_AXIS_MAX long, and each feature spans at least
# FEATURE_SPREAD values of a sample; of axis 1 and the last, the shorter that qualifies.
FEATURE_AXIS_MAX = 256
FEATURE_SPREAD = 8

# An output map or anchor list (rank 3 or more) mostly below 0 whose values above 0 are rare holds the
# logits of rare events (a heat map's peaks, a detector's anchors): a sigmoid in the caller's
# post-processing reads it where it crosses 0, while its pooled power sits in the confident negatives.
# Where the candidate's values above 0 overlap FP32's by less than SIGN_IOU (intersection over union), it
# is judged as that sigmoid reads it, where that is worse. hunt55 A1: LORE's table-cell heat map measured
# 15.6 dB as logits while its INT8 form put 79,666 values above 0 where FP32 put 14,005 (12,402 of them
# the same). Where the signs hold, its own figure stands: a segmentation's class logits, also mostly
# below 0, are read by their order, and the sigmoid's figure sits below theirs with nothing wrong.
RARE_POSITIVE_SHARE = 0.1
MIN_POSITIVES = 10
SIGN_IOU = 0.5
READ_RANK = 3


def rare_positives(total: int, negative: int, positive: int) -> bool:
    """Whether an output of `total` values, `negative` of them below 0 and `positive` above, holds rare
    events' logits: at least MIN_POSITIVES and at most RARE_POSITIVE_SHARE of it above 0, half below."""
    return MIN_POSITIVES <= positive <= RARE_POSITIVE_SHARE * total and negative >= total / 2


def feature_axis(shape: tuple[int, ...]) -> int | None:
    """The feature axis of an output shaped [N, a, b] (see FEATURE_AXIS_MAX), or None: other ranks
    are maps and class scores, whose channels or columns are one kind."""
    if len(shape) != 3:
        return None
    per_sample = math.prod(shape[1:])
    fits = [a for a in (1, len(shape) - 1) if 1 < shape[a] <= FEATURE_AXIS_MAX]
    fits = [a for a in fits if per_sample // shape[a] >= FEATURE_SPREAD]
    return min(fits, key=lambda a: (shape[a], a)) if fits else None


@dataclass
class _Powers:
    """One output's sums over batches, per feature ([F] float64; [1] without a feature axis): signal and
    noise power, and the reference's extremes (which features are scores)."""

    signal: np.ndarray
    noise: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def __add__(self, other: _Powers) -> _Powers:
        if self.signal.shape != other.signal.shape:  # the feature axis changed length: pool both
            return _pooled(self) + _pooled(other)
        return _Powers(
            self.signal + other.signal,
            self.noise + other.noise,
            np.minimum(self.low, other.low),
            np.maximum(self.high, other.high),
        )

    def relative(self) -> float | None:
        """noise / signal, the scores and the other features each pooled and weighing alike (None: no
        signal)."""
        scores = (self.low >= 0.0) & (self.high <= 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):  # NaN noise is the caller's to judge (hunt45)
            ratios = [
                float(np.sum(self.noise[kind]) / np.sum(self.signal[kind]))
                for kind in (scores, ~scores)
                if np.sum(self.signal[kind]) > 0.0
            ]
        return sum(ratios) / len(ratios) if ratios else None


@dataclass
class _Read:
    """An output's values as a sigmoid reads them, per channel (_channel_axis): sign counts (values, below
    0 in the reference, above 0 in the reference, in the candidate, in both) [C, 5] int64 and the powers
    of sigmoid(reference) and of its difference from sigmoid(candidate) [C] float64."""

    counts: np.ndarray
    signal: np.ndarray
    noise: np.ndarray

    def __add__(self, other: _Read) -> _Read:
        if self.counts.shape != other.counts.shape:  # the channel axis changed length: pool both
            return self.pooled() + other.pooled()
        return _Read(self.counts + other.counts, self.signal + other.signal, self.noise + other.noise)

    def pooled(self) -> _Read:
        return _Read(*(np.sum(a, axis=0, keepdims=True) for a in (self.counts, self.signal, self.noise)))

    def relative(self) -> float | None:
        """The sigmoid's noise / signal of the worst channel that holds rare events' logits whose values
        above 0 moved (sign_overlap below SIGN_IOU), else None. Per channel: LORE's two maps pooled shared
        0.69 of their values above 0 while the cell map its caller decodes shared 0.01 (hq58 C2)."""
        ratios = [
            float(self.noise[k] / self.signal[k])
            for k, (total, negative, positive, candidate, both) in enumerate(self.counts.tolist())
            if rare_positives(total, negative, positive)
            and sign_overlap(positive, candidate, both) < SIGN_IOU
            and self.signal[k] > 0.0
        ]
        return max(ratios) if ratios else None


def sign_overlap(positive: int, candidate: int, both: int) -> float:
    """Intersection over union of the values above 0 in the reference and in the candidate (1.0: none)."""
    union = positive + candidate - both
    return both / union if union else 1.0


def _channel_axis(shape: tuple[int, ...], known: int | None = None) -> int | None:
    """The axis a map's channels (an anchor list's classes) lie along: of a rank-4 map, `known` where the
    graph lays it out (graph.layouts.channel_axes), else axis 1 (NCHW), or 3 where axes 1 and 2 are a
    square map and axis 3 is not of their size (NHWC); at most FEATURE_AXIS_MAX long; axis 1 of a higher
    rank; a rank-3 output's feature_axis; None: the output pools as one. hq59 C: a square NHWC map was
    judged row by row (its height, axis 1, read as channels), or pooled above 256 rows, never per class.
    From its shape alone, [1, 255, 48, 80] (a YOLOv5 head, NCHW) and [1, 256, 512, 19] (NHWC) cannot be
    told apart by a rule that reads neither wrongly: the Transpose or Conv that writes them can."""
    if len(shape) == 4:
        _, a, h, b = shape
        axis = known if known is not None else 3 if a == h != b else 1
        return axis if shape[axis] <= FEATURE_AXIS_MAX else None
    if len(shape) > 4:
        return 1 if shape[1] <= FEATURE_AXIS_MAX else None
    return feature_axis(shape)


def _by_channel(r: np.ndarray, c: np.ndarray, known: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """r, c [N, ...] as [C, rest] along _channel_axis ([1, all] where none)."""
    axis = _channel_axis(r.shape, known)
    if axis is not None:
        r, c = np.moveaxis(r, axis, 0), np.moveaxis(c, axis, 0)
    rows = r.shape[0] if axis is not None else 1
    width = r.size // rows if rows else 0  # hq148 F4: [N, 0, H, W], no channel at all: no row either
    return r.reshape(rows, width), c.reshape(rows, width)


def channel_signs(ref: np.ndarray, got: np.ndarray, known: int | None = None) -> np.ndarray:
    """Per channel (_channel_axis, `known` the graph's channel axis of a rank-4 map; one row where none):
    values, below 0 in ref, above 0 in ref, above 0 in got, above 0 in both: int64 [C, 5], summed by the
    caller over its batches."""
    return _row_signs(*_by_channel(ref, got, known))


def _row_signs(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """channel_signs of r, c already [C, rest]."""
    above, now = r > 0, c > 0
    per = [np.full(len(r), r.shape[1]), (r < 0).sum(1), above.sum(1), now.sum(1), (above & now).sum(1)]
    return np.stack(per, axis=1).astype(np.int64)


def add_signs(total: np.ndarray | None, counts: np.ndarray) -> np.ndarray:
    """Two channel_signs summed ([C, 5]; None: none yet); where the channel axis changed length between
    batches (a rank-3 output whose feature axis moved), both pooled to one row."""
    if total is None:
        return counts
    if total.shape == counts.shape:
        return total + counts
    return total.sum(axis=0, keepdims=True) + counts.sum(axis=0, keepdims=True)


def _read(r: np.ndarray, c: np.ndarray, known: int | None) -> _Read:
    """r, c: float64 [N, ...] with the same infinities (_same_infinities_as_zero)."""
    r, c = _by_channel(r, c, known)  # once: the fallback measures every trial's outputs through here
    counts = _row_signs(r, c)
    sr, sc = 0.5 + 0.5 * np.tanh(0.5 * r), 0.5 + 0.5 * np.tanh(0.5 * c)
    return _Read(counts, np.sum(sr * sr, axis=1), np.sum((sr - sc) ** 2, axis=1))


def _pooled(powers: _Powers) -> _Powers:
    return _Powers(
        powers.signal.sum(keepdims=True),
        powers.noise.sum(keepdims=True),
        powers.low.min(keepdims=True),
        powers.high.max(keepdims=True),
    )


class OutputNoise:
    """Signal and noise power of each of a model's outputs against a reference, summed over batches.

    sqnr_db weighs the outputs alike: the noise of each relative to its own signal, averaged. Pooled
    powers let the largest output hide the others: CRAFT's score maps measured 25.9 dB inside a pooled
    29.0 dB, and a face detector's landmarks in [0, 1] would vanish beside its boxes in pixels. Within an
    output with a feature axis (feature_axis), its scores and its other features weigh alike the same
    way, where `features` (a model's outputs; not a layer's own activation, whose channels are one kind).
    An output that FP32 gives as zeros on every sample has no scale of its own: it counts only where its
    noise is not finite (NaN or Inf), or where every output is zeros (then the pooled powers). An output
    map holding rare events' logits counts at the worse of its own figure and a sigmoid's reading of it
    (rare_positives; with `features` only). A `centred` output's signal is what moves between the
    samples: its deviation from each element's mean over them (graph.carried)."""

    def __init__(
        self,
        features: bool = True,
        views: Mapping[str, str] | None = None,
        axes: Mapping[str, int] | None = None,
        centred: Collection[str] = (),
        rows: int | None = None,
    ) -> None:
        """views: an output -> the logits it is measured by beside its own values (a Sigmoid map with
        foreground, query.foreground_views): the pair counts as one output, at the worse of the two.
        axes: a rank-4 output -> its channel axis, where the graph lays it out (graph.layouts).
        centred: the outputs measured by how they move between the samples (_Centred), where they hold a
        row per sample: `rows` in all (a tensor without the batch axis, [anchors, 4] after a Squeeze, would
        be centred over its anchors)."""
        self.features = features
        self.views = dict(views or {})
        self.axes = dict(axes or {})
        self.powers: dict[str, _Powers] = {}
        self.reads: dict[str, _Read] = {}
        self.centred = {name: _Centred(rows) for name in centred}

    def update(self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> None:
        """Outputs by name, float [N, ...] each; candidate has every name of reference."""
        for name, value in reference.items():
            if value.shape != candidate[name].shape:
                if rows_differ(value.shape, candidate[name].shape):  # rows as many as the data gives: another
                    continue  # count in each model, no element stands for the same thing in both
                got = list(candidate[name].shape)
                raise ConversionError(
                    f"a converted form of the model gives output {name!r} as {got} where FP32 gives "
                    f"{list(value.shape)}: it computes something else; nothing was written"
                )
            r, c = _same_infinities_as_zero(value.astype(np.float64), candidate[name])
            axis = feature_axis(r.shape) if self.features else None
            others = tuple(a for a in range(r.ndim) if a != axis)
            powers = _Powers(
                np.sum(r * r, axis=others).reshape(-1),
                np.sum((r - c) ** 2, axis=others).reshape(-1),
                np.min(r, axis=others, initial=np.inf).reshape(-1),
                np.max(r, axis=others, initial=-np.inf).reshape(-1),
            )
            self.powers[name] = self.powers[name] + powers if name in self.powers else powers
            if name in self.centred:
                self.centred[name].update(r, axis)
            if self.features and r.ndim >= READ_RANK:
                read = _read(r, c.astype(np.float64), self.axes.get(name))
                self.reads[name] = self.reads[name] + read if name in self.reads else read

    def centred_names(self) -> list[str]:
        """The `centred` outputs judged by what moves between the samples, sorted (_Centred.applies)."""
        return sorted(n for n, c in self.centred.items() if n in self.powers and c.applies(self.powers[n]))

    def _ratios(self) -> dict[str, float]:
        """Each output's noise / signal (those with a signal), at the worse of its own and a sigmoid's
        reading of it (_Read)."""
        found = {
            name: ratio
            for name, p in self.powers.items()
            if (ratio := (self.centred[name].of(p) if name in self.centred else p).relative()) is not None
        }
        for name, read in self.reads.items():
            ratio = read.relative()
            if name in found and ratio is not None:
                found[name] = max(found[name], ratio)
        return found

    @property
    def relative_noise(self) -> float:
        """The mean over outputs of noise / signal (_Powers.relative; outputs FP32 gives as zeros aside);
        inf where any output's noise is not finite."""
        if any(not np.all(np.isfinite(p.noise)) for p in self.powers.values()):
            return math.inf
        found = self._ratios()
        for output, logits in self.views.items():  # hunt44: a text map at 11.7 dB passed --min-sqnr 12
            if output in found and logits in found:  # averaged with its logits at 19.0 dB
                found[output] = max(found[output], found.pop(logits))
        ratios = list(found.values())
        return sum(ratios) / len(ratios) if ratios else math.nan

    @property
    def sqnr_db(self) -> float:
        relative = self.relative_noise
        if math.isnan(relative):  # no output with a signal: the pooled powers decide (-inf or inf)
            return sqnr_db(0.0, sum(float(np.sum(p.noise)) for p in self.powers.values()))
        return sqnr_db(1.0, relative)

    def worst(self) -> tuple[str, float] | None:
        """(the output with the most noise for its signal, its SQNR dB); None without one with a signal."""
        ratios = self._ratios()
        if not ratios:
            return None
        name = max(sorted(ratios), key=lambda n: ratios[n])
        return name, sqnr_db(1.0, ratios[name])

    def recovered_by(self, other: OutputNoise) -> float:
        """Share of this relative noise that `other` no longer has (negative where it has more)."""
        mine, theirs = self.relative_noise, other.relative_noise
        if not (mine > 0.0 and math.isfinite(mine)):
            return 0.0
        return 1.0 - theirs / mine if not math.isnan(theirs) else 0.0


# A carried tensor is centred where what moves between the samples is at least this share of its power:
# samples of one still scene (hq101 F2: 16 frames, the boxes moving -78 dB against their power) leave
# nothing to judge by, and every layer went float for boxes 0.3 px off in 640; hq93's photos: -23 dB.
MOVING_SHARE = 1e-4


class _Centred:
    """One output's per-element sum over the samples (Σx, [elements per sample] float64), to take each
    element's mean out of its signal: Σ(x - mean)² = Σx² - (Σx)² / n, summed per feature."""

    def __init__(self, rows: int | None = None) -> None:
        self.rows = rows  # the samples: as many rows in all, or nothing is centred
        self.total: np.ndarray | None = None
        self.images = 0
        self.axis: int | None = None  # the feature axis of a sample, as _Powers sums it
        self.followed = True  # False once a batch held another shape, or the output is too large

    def update(self, r: np.ndarray, axis: int | None) -> None:
        """r: float64 [N, ...]; axis: its feature axis (None: pooled)."""
        if not self.followed or not len(r):
            return
        total = r.sum(axis=0)
        if total.size > MAX_ELEMENTS or (self.total is not None and (total.shape, axis) != self.shape()):
            self.followed, self.total = False, None
            return
        self.total = total if self.total is None else self.total + total
        self.axis, self.images = (None if axis is None else axis - 1), self.images + len(r)

    def shape(self) -> tuple[tuple[int, ...], int | None]:
        assert self.total is not None
        return self.total.shape, None if self.axis is None else self.axis + 1

    def of(self, powers: _Powers) -> _Powers:
        """`powers` with each feature's signal centred; as given where not followed, or where `centres`
        says no."""
        signal = self._centred(powers)
        return powers if signal is None else _Powers(signal, powers.noise, powers.low, powers.high)

    def applies(self, powers: _Powers) -> bool:
        """Whether `of` centres `powers`."""
        return self._centred(powers) is not None

    def _centred(self, powers: _Powers) -> np.ndarray | None:
        if not self.followed or self.total is None:
            return None
        others = tuple(a for a in range(self.total.ndim) if a != self.axis)
        constant = np.sum(self.total * self.total, axis=others).reshape(-1) / self.images
        if constant.shape != powers.signal.shape:
            return None  # pooled after a change of feature axis
        signal = powers.signal - constant
        if not centres(self.images, self.rows, float(np.sum(signal)), float(np.sum(powers.signal))):
            return None
        return np.maximum(signal, 0.0)


def centres(images: int, rows: int | None, moving: float, power: float) -> bool:
    """Whether a carried output is judged by what moves between the samples: it holds a row per sample
    (`rows` in all, at least FEW_IMAGES of them), and what moves (`moving`, of its `power`) is at least
    MOVING_SHARE of it."""
    return images == rows and images >= FEW_IMAGES and moving >= MOVING_SHARE * power


def _same_infinities_as_zero(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the reference holds +-inf (a mask's -inf in logits a Softmax reads) and the candidate the
    same infinity, neither signal nor noise: both set to 0. A finite value where the reference has an
    infinity stays an infinite error."""
    if np.isfinite(r).all():
        return r, c  # (the candidate as given: no copy on the fallback's every trial)
    same = np.isinf(r) & (r == c)
    return np.where(same, 0.0, r), np.where(same, 0.0, c.astype(np.float64))
