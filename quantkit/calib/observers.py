"""Streaming observers: update(batch), then partial() (mergeable) or result(). State is O(bins +
channels + PENDING_VALUES), never O(images).

Partials of shards of the data merge exactly: min/max, counts and histograms (on aligned grids,
qmath.histogram) are order-free; per-channel sums are floats, so `merge` adds them in the order it is
called, and calibration merges shards in the order of the image list.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from quantkit.calib.extremes import ImageExtremes
from quantkit.qmath.histogram import Grid, grid_counts, grid_for, regrid, sample_stride, tails_of
from quantkit.results import TensorStats


@dataclass(frozen=True)
class Partial:
    """One tensor's statistics over part of the data. count: values seen; counts: int64 [bins] on `grid`,
    of the values sampled (every value of a small tensor, every k-th block of 64 of a large one);
    zeros: exact 0.0 values among those sampled; channel arrays [C] (min/max float32, sum float64) over
    every value, or None. image_extremes: each image's minimum and maximum folded over the images
    (calib.extremes); None once a batch's tensor did not lead with its images."""

    grid: Grid
    counts: np.ndarray
    minimum: float
    maximum: float
    count: int
    zeros: int
    nonfinite: int
    channel_min: np.ndarray | None
    channel_max: np.ndarray | None
    channel_sum: np.ndarray | None
    channel_count: int
    image_extremes: ImageExtremes | None = field(default_factory=ImageExtremes)
    # parts disagreed on the channel axis's length (it was not channels: the batch or sequence axis of
    # a sequence-first [S, N, C] tensor, run in parts of different sizes): no per-channel statistics
    mixed_channels: bool = False

    def __add__(self, other: Partial) -> Partial:
        """The statistics of both parts; self's part comes first in the data (channel sums add in that
        order)."""
        extremes = _add_extremes(self.image_extremes, other.image_extremes)
        mixed = self.mixed_channels or other.mixed_channels or _differ(self.channel_min, other.channel_min)
        first, second = (_unmixed(self), _unmixed(other)) if mixed else (self, other)
        if second.count == 0 and second.nonfinite == 0:
            return dataclasses.replace(first, image_extremes=extremes)
        if first.count == 0 and first.nonfinite == 0:
            return dataclasses.replace(second, image_extremes=extremes)
        return first._merged(second, extremes, mixed)

    def _merged(self, other: Partial, extremes: ImageExtremes | None, mixed: bool) -> Partial:
        grid = grid_for(
            min(self.minimum, other.minimum, 0.0), max(self.maximum, other.maximum, 0.0), self.grid.bins
        )
        return Partial(
            grid=grid,
            counts=regrid(self.counts, self.grid, grid) + regrid(other.counts, other.grid, grid),
            minimum=min(self.minimum, other.minimum),
            maximum=max(self.maximum, other.maximum),
            count=self.count + other.count,
            zeros=self.zeros + other.zeros,
            nonfinite=self.nonfinite + other.nonfinite,
            channel_min=_combine(np.minimum, self.channel_min, other.channel_min),
            channel_max=_combine(np.maximum, self.channel_max, other.channel_max),
            channel_sum=_combine(np.add, self.channel_sum, other.channel_sum),
            channel_count=self.channel_count + other.channel_count,
            image_extremes=extremes,
            mixed_channels=mixed,
        )

    def stats(self) -> TensorStats:
        """The table's record of these statistics."""
        empty = self.count == 0
        point = empty or (self.minimum == 0.0 and self.maximum == 0.0)  # no range to bin over
        extremes = self.image_extremes or ImageExtremes()
        return TensorStats(
            minimum=0.0 if empty else float(self.minimum),
            maximum=0.0 if empty else float(self.maximum),
            hist=self.counts.astype(np.int64),
            hist_lo=0.0 if point else self.grid.lo,
            hist_hi=0.0 if point else self.grid.hi,
            count=self.count,
            channel_min=self.channel_min,
            channel_max=self.channel_max,
            channel_mean=None if self.channel_sum is None else self.channel_sum / max(self.channel_count, 1),
            zeros=self.zeros,
            image_min_mean=extremes.low_sum / extremes.images if extremes.images else None,
            image_max_mean=extremes.high_sum / extremes.images if extremes.images else None,
            nonfinite=self.nonfinite,
        )


def _add_extremes(a: ImageExtremes | None, b: ImageExtremes | None) -> ImageExtremes | None:
    return None if a is None or b is None else a + b


def _differ(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is not None and b is not None and a.shape != b.shape


def _unmixed(part: Partial) -> Partial:
    """The part without per-channel statistics, marked so that no merge brings them back."""
    return dataclasses.replace(
        part, channel_min=None, channel_max=None, channel_sum=None, channel_count=0, mixed_channels=True
    )


def _combine(op: np.ufunc, a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    if a.shape != b.shape:
        raise ValueError("per-channel statistics of different channel counts cannot be merged")
    return np.asarray(op(a, b))


# Histogram values an observer holds before it bins them (float32: 32 KB a tensor). Binning every batch
# apart cost more than the binning itself on models of many small tensors (YOLOX-Nano: 370 tensors,
# batch 1); any grouping gives the same counts (aligned grids), so only time and memory change: 2**15
# held 27 MB more on YOLOX for the same time, 2**12 took 10 % longer.
PENDING_VALUES = 1 << 13


class TensorObserver:
    """Min/max, a histogram of `bins` bins on the smallest aligned grid that holds the values so far (each
    image's tail counted exactly, the rest from a strided sample of it: qmath.histogram.tails_of), and
    optional per-channel min/max/sum along `channel_axis`."""

    def __init__(self, bins: int = 2048, channel_axis: int | None = None) -> None:
        self.channel_axis = channel_axis
        self.state = empty_partial(bins)
        self._pending = _Pending()

    @property
    def nonfinite(self) -> int:
        return self.state.nonfinite + self._pending.nonfinite

    def update(self, x: np.ndarray, images: int | None = None) -> None:
        """x: float [...] (one batch of the tensor); images: how many images (samples) the batch holds,
        where x leads with them (each image's extremes are then recorded), else None. Non-finite values
        are counted, not binned."""
        if x.size == 0:  # no image's extremes (and the images' positions would no longer line up)
            self._pending.add_images(None)
            return
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        nonfinite = 0
        axis = self.channel_axis
        if axis is not None:
            axis = axis % x.ndim if -x.ndim <= axis < x.ndim else None
        leads = images and x.ndim > 1 and x.shape[0] == images and axis != 0
        per_image = images if leads else None
        channels, extremes = _extremes(x, axis, per_image)
        x_min, x_max = float(extremes[0].min()), float(extremes[1].max())
        if not (math.isfinite(x_min) and math.isfinite(x_max)):  # NaN and inf show in min and max
            finite = np.isfinite(x)
            nonfinite = int(x.size - finite.sum())
            x = np.where(finite, x, np.float32(0.0))
            channels, extremes = _extremes(x, axis, per_image)
            x_min, x_max = float(extremes[0].min()), float(extremes[1].max())
        leading = x.shape[0] if x.ndim > 1 else 1  # observed activations lead with the batch
        rows = x.reshape(leading, -1)  # each image's values sampled and cut on their own (tails_of)
        stride = sample_stride(rows.shape[1])
        pending = self._pending
        if stride == 1:
            pending.hold(1, rows.reshape(-1).copy())  # held past this call: never a view of the caller's
        else:
            _, _, middle, tail = tails_of(rows, rows[:, ::stride], x_min >= 0.0)
            pending.hold(stride, middle)
            pending.hold(1, tail)
        pending.add(x_min, x_max, x.size, nonfinite, channels)
        pending.add_images(extremes if per_image else None)
        if pending.size >= PENDING_VALUES:
            self.flush()

    def flush(self) -> None:
        """Bin the values held so far into the state."""
        pending = self._pending
        if pending.count or pending.nonfinite or pending.extremes is None:
            self.state = self.state + pending.partial(self.state.grid.bins)
        self._pending = _Pending()

    def partial(self) -> Partial:
        self.flush()
        return self.state

    def result(self) -> TensorStats:
        return self.partial().stats()


@dataclass
class _Pending:
    """Batches seen since the last flush: their statistics, and their histogram values by weight (a
    sampled value stands for `stride` values, a tail value for itself)."""

    minimum: float = math.inf
    maximum: float = -math.inf
    count: int = 0
    nonfinite: int = 0
    channels: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None
    values: dict[int, list[np.ndarray]] = field(default_factory=dict)
    size: int = 0
    extremes: list[tuple[np.ndarray, np.ndarray]] | None = field(default_factory=list)  # per batch
    mixed_channels: bool = False  # as Partial's

    def hold(self, weight: int, values: np.ndarray) -> None:
        if values.size:
            self.values.setdefault(weight, []).append(values)
            self.size += values.size

    def add(
        self,
        x_min: float,
        x_max: float,
        count: int,
        nonfinite: int,
        channels: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None,
    ) -> None:
        """One batch's statistics; per-channel sums add in batch order."""
        self.minimum, self.maximum = min(self.minimum, x_min), max(self.maximum, x_max)
        self.count += count
        self.nonfinite += nonfinite
        if channels is not None and self.channels is not None and _differ(channels[0], self.channels[0]):
            self.mixed_channels = True
        if self.mixed_channels:
            self.channels = None
            return
        if channels is not None and self.channels is not None:
            low, high, total, per_channel = self.channels
            channels = (
                np.minimum(low, channels[0]),
                np.maximum(high, channels[1]),
                total + channels[2],
                per_channel + channels[3],
            )
        self.channels = channels if channels is not None else self.channels

    def add_images(self, extremes: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Each image's minimum and maximum (float32 [N] each), added one image at a time in order; None:
        this batch's tensor does not lead with its images, so no image's extremes are known."""
        if self.extremes is None or extremes is None:
            self.extremes = None
            return
        self.extremes.append(extremes)  # folded once, at the flush (ImageExtremes.fold)

    def partial(self, bins: int) -> Partial:
        """These batches as one Partial: every held value binned once on their common grid, which is
        what binning each batch on its own grid and merging gives (aligned grids)."""
        grid = grid_for(min(self.minimum, 0.0), max(self.maximum, 0.0), bins)
        counts, zeros = np.zeros(bins, np.int64), 0
        for weight, held in sorted(self.values.items()):
            part, part_zeros = grid_counts(np.concatenate(held), grid)
            counts += part * weight
            zeros += part_zeros * weight
        low, high, total, per_channel = self.channels or (None, None, None, 0)
        return Partial(
            grid=grid,
            counts=counts,
            minimum=self.minimum,
            maximum=self.maximum,
            count=self.count,
            zeros=zeros,
            nonfinite=self.nonfinite,
            channel_min=low,
            channel_max=high,
            channel_sum=total,
            channel_count=per_channel,
            image_extremes=None if self.extremes is None else ImageExtremes.fold(self.extremes),
            mixed_channels=self.mixed_channels,
        )


def empty_partial(bins: int) -> Partial:
    """The statistics of no data: the identity of `+`."""
    return Partial(
        grid=grid_for(0.0, 0.0, bins),
        counts=np.zeros(bins, np.int64),
        minimum=math.inf,
        maximum=-math.inf,
        count=0,
        zeros=0,
        nonfinite=0,
        channel_min=None,
        channel_max=None,
        channel_sum=None,
        channel_count=0,
    )


def _extremes(
    x: np.ndarray, axis: int | None, images: int | None
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, int] | None, tuple[np.ndarray, np.ndarray]]:
    """(per-channel statistics along `axis` or None, (minima, maxima)): the minima and maxima per image
    (float32 [images]) where x leads with `images` images, else of the whole batch ([1]). Each image's
    extremes come out of the same reductions as the channels' (no pass over x of their own)."""
    rows = images or 1
    with np.errstate(over="ignore"):  # values near float32's limit sum to inf: check_finite names them
        return _reduced(x, axis, rows)


def _reduced(
    x: np.ndarray, axis: int | None, rows: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, int] | None, tuple[np.ndarray, np.ndarray]]:
    """_extremes' reductions, for `rows` images (1: the batch counts as one)."""
    if axis is None:
        flat = x.reshape(rows, -1)
        return None, (flat.min(axis=1), flat.max(axis=1))
    channels = x.shape[axis]
    before = int(np.prod(x.shape[:axis], dtype=np.int64))
    view = x.reshape(before, channels, -1)
    if view.shape[2] == 1:  # channels last: reduce over the leading rows (each image's apart)
        per = view.reshape(rows, -1, channels)
        low, high = per.min(axis=1), per.max(axis=1)
        total = per.reshape(-1, channels).sum(axis=0, dtype=np.float32)
    else:  # images lead the rows before the channel axis (callers pass images only for axis > 0)
        low, high = view.min(axis=2), view.max(axis=2)  # [before, C]
        if rows > 1:
            low, high = (
                low.reshape(rows, -1, channels).min(axis=1),
                high.reshape(rows, -1, channels).max(axis=1),
            )
        total = view.sum(axis=2, dtype=np.float32).sum(axis=0, dtype=np.float32)
    # low, high: [images, C]; [rows before the channel axis, C] where the batch counts as one image
    channel_low, channel_high = low.min(axis=0), high.max(axis=0)
    stats = (
        channel_low.astype(np.float32),
        channel_high.astype(np.float32),
        total.astype(np.float64),
        x.size // channels,
    )
    if rows == 1:  # the whole batch is one image (or unknown): its extremes are the channels'
        return stats, (channel_low.min(keepdims=True), channel_high.max(keepdims=True))
    return stats, (low.min(axis=1), high.max(axis=1))
