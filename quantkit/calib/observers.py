"""Streaming observers: update(batch), then partial() (mergeable) or result(). State is O(bins +
channels), never O(images).

Partials of shards of the data merge exactly: min/max, counts and histograms (on aligned grids,
qmath.histogram) are order-free; per-channel sums are floats, so `merge` adds them in the order it is
called, and calibration merges shards in the order of the image list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantkit.qmath.histogram import Grid, grid_counts, grid_for, regrid, sample_of, sample_stride
from quantkit.results import TensorStats


@dataclass(frozen=True)
class Partial:
    """One tensor's statistics over part of the data. count: values seen; counts: int64 [bins] on `grid`,
    of the values sampled (every value of a small tensor, every k-th block of 64 of a large one);
    zeros: exact 0.0 values among those sampled; channel arrays [C] (min/max float32, sum float64) over
    every value, or None."""

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

    def __add__(self, other: Partial) -> Partial:
        """The statistics of both parts; self's part comes first in the data (channel sums add in that
        order)."""
        if other.count == 0 and other.nonfinite == 0:
            return self
        if self.count == 0 and self.nonfinite == 0:
            return other
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
        )

    def stats(self) -> TensorStats:
        """The table's record of these statistics."""
        empty = self.count == 0
        point = empty or (self.minimum == 0.0 and self.maximum == 0.0)  # no range to bin over
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
        )


def _combine(op: np.ufunc, a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    if a.shape != b.shape:
        raise ValueError("per-channel statistics of different channel counts cannot be merged")
    return np.asarray(op(a, b))


class TensorObserver:
    """Min/max, a histogram of `bins` bins on the smallest aligned grid that holds the values so far,
    and optional per-channel min/max/sum along `channel_axis`."""

    def __init__(self, bins: int = 2048, channel_axis: int | None = None) -> None:
        self.channel_axis = channel_axis
        self.state = empty_partial(bins)

    @property
    def nonfinite(self) -> int:
        return self.state.nonfinite

    def update(self, x: np.ndarray) -> None:
        """x: float [...] (one batch of the tensor). Non-finite values are counted, not binned."""
        if x.size == 0:
            return
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        nonfinite = 0
        axis = self.channel_axis
        if axis is not None:
            axis = axis % x.ndim if -x.ndim <= axis < x.ndim else None
        low = high = total = None
        count = 0
        if axis is not None:  # the channels' extremes give the tensor's: two passes over x fewer
            low, high, total, count = _channel_stats(x, axis)
            x_min, x_max = float(low.min()), float(high.max())
        else:
            x_min, x_max = float(x.min()), float(x.max())
        if not (math.isfinite(x_min) and math.isfinite(x_max)):  # NaN and inf show in min and max
            finite = np.isfinite(x)
            nonfinite = int(x.size - finite.sum())
            x = np.where(finite, x, np.float32(0.0))
            x_min, x_max = float(x.min()), float(x.max())
            if axis is not None:
                low, high, total, count = _channel_stats(x, axis)
        grid = grid_for(min(x_min, 0.0), max(x_max, 0.0), self.state.grid.bins)
        images = x.shape[0] if x.ndim > 1 else 1  # observed activations lead with the batch
        counts, zeros = grid_counts(sample_of(x, sample_stride(x.size, images)), grid)
        self.state = self.state + Partial(
            grid=grid,
            counts=counts,
            minimum=x_min,
            maximum=x_max,
            count=x.size,
            zeros=zeros,
            nonfinite=nonfinite,
            channel_min=low,
            channel_max=high,
            channel_sum=total,
            channel_count=count,
        )

    def partial(self) -> Partial:
        return self.state

    def result(self) -> TensorStats:
        return self.state.stats()


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


def _channel_stats(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-channel (min float32 [C], max float32 [C], sum float64 [C], elements per channel)."""
    axes = tuple(i for i in range(x.ndim) if i != axis)
    return (
        np.min(x, axis=axes).astype(np.float32),
        np.max(x, axis=axes).astype(np.float32),
        np.asarray(np.sum(x, axis=axes, dtype=np.float64)),
        x.size // x.shape[axis],
    )
