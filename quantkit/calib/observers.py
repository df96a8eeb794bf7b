"""Streaming observers: update(batch) then result(). State is O(bins + channels), never O(images)."""

from __future__ import annotations

import math

import numpy as np

from quantkit.qmath.histogram import grown_range, histogram_counts, rebin, round_counts
from quantkit.results import TensorStats


class TensorObserver:
    """Min/max, a histogram of `bins` bins that grows its range as needed, and optional per-channel
    abs-max along `channel_axis`."""

    def __init__(self, bins: int = 2048, channel_axis: int | None = None) -> None:
        self.bins = bins
        self.channel_axis = channel_axis
        self.minimum = np.inf
        self.maximum = -np.inf
        self.lo = 0.0
        self.hi = 0.0
        self.counts = np.zeros(bins, np.float64)
        self.count = 0
        self.zeros = 0
        self.nonfinite = 0
        self.channel_min: np.ndarray | None = None
        self.channel_max: np.ndarray | None = None
        self.channel_sum: np.ndarray | None = None
        self.channel_count = 0

    def update(self, x: np.ndarray) -> None:
        """x: float [...] (one batch of the tensor). Non-finite values are counted, not binned."""
        if x.size == 0:
            return
        x_min, x_max = float(x.min()), float(x.max())  # NaN and inf show here: no isfinite pass needed
        if not (math.isfinite(x_min) and math.isfinite(x_max)):
            finite = np.isfinite(x)
            self.nonfinite += int(x.size - finite.sum())
            x = np.where(finite, x, 0.0).astype(x.dtype)
            x_min, x_max = float(x.min()), float(x.max())
        self.minimum = min(self.minimum, x_min)
        self.maximum = max(self.maximum, x_max)
        self._grow(min(x_min, 0.0), max(x_max, 0.0))
        self.counts += histogram_counts(x, self.lo, self.hi, self.bins)
        self.count += x.size
        self.zeros += int(x.size - np.count_nonzero(x))
        if self.channel_axis is not None and -x.ndim <= self.channel_axis < x.ndim:
            self._update_channels(x, self.channel_axis % x.ndim)

    def _update_channels(self, x: np.ndarray, axis: int) -> None:
        axes = tuple(i for i in range(x.ndim) if i != axis)
        batch_min = np.min(x, axis=axes).astype(np.float32)
        batch_max = np.max(x, axis=axes).astype(np.float32)
        batch_sum = np.asarray(np.sum(x, axis=axes, dtype=np.float64))
        if self.channel_min is None or self.channel_max is None or self.channel_sum is None:
            self.channel_min, self.channel_max, self.channel_sum = batch_min, batch_max, batch_sum
        else:
            np.minimum(self.channel_min, batch_min, out=self.channel_min)
            np.maximum(self.channel_max, batch_max, out=self.channel_max)
            self.channel_sum += batch_sum
        self.channel_count += x.size // x.shape[axis]

    def _grow(self, data_lo: float, data_hi: float) -> None:
        if self.count == 0:
            self.lo, self.hi = data_lo, data_hi
            return
        if data_lo >= self.lo and data_hi <= self.hi:
            return
        new_lo, new_hi = grown_range(self.lo, self.hi, data_lo, data_hi)
        if self.hi > self.lo:
            self.counts = rebin(self.counts, self.lo, self.hi, new_lo, new_hi)
        else:  # every value so far sat at one point
            self.counts = _point_mass(self.counts.sum(), self.lo, new_lo, new_hi, self.bins)
        self.lo, self.hi = new_lo, new_hi

    def result(self) -> TensorStats:
        return TensorStats(
            minimum=float(self.minimum) if self.count else 0.0,
            maximum=float(self.maximum) if self.count else 0.0,
            hist=round_counts(self.counts),
            hist_lo=float(self.lo),
            hist_hi=float(self.hi),
            count=self.count,
            channel_min=self.channel_min,
            channel_max=self.channel_max,
            channel_mean=None if self.channel_sum is None else self.channel_sum / max(self.channel_count, 1),
            zeros=self.zeros,
        )


def _point_mass(mass: float, at: float, lo: float, hi: float, bins: int) -> np.ndarray:
    out = np.zeros(bins, np.float64)
    out[min(int((at - lo) / (hi - lo) * bins), bins - 1)] = mass
    return out


def _counts_on(stats: TensorStats, lo: float, hi: float) -> np.ndarray:
    """stats' histogram moved onto [lo, hi] ⊇ its own range. float64 [B]."""
    if stats.hist_hi > stats.hist_lo:
        return rebin(stats.hist, stats.hist_lo, stats.hist_hi, lo, hi)
    if hi > lo:
        return _point_mass(float(stats.hist.sum()), stats.hist_lo, lo, hi, stats.hist.size)
    return stats.hist.astype(np.float64)


def _merge_channels(a: TensorStats, b: TensorStats) -> tuple[np.ndarray | None, np.ndarray | None]:
    if a.channel_min is None or a.channel_max is None:
        return b.channel_min, b.channel_max
    if b.channel_min is None or b.channel_max is None:
        return a.channel_min, a.channel_max
    if a.channel_min.shape != b.channel_min.shape:
        raise ValueError("per-channel statistics of different channel counts cannot be merged")
    return np.minimum(a.channel_min, b.channel_min), np.maximum(a.channel_max, b.channel_max)


def merge_stats(a: TensorStats, b: TensorStats) -> TensorStats:
    """Statistics of the union of two calibration sets (shards of one folder)."""
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    lo, hi = min(a.hist_lo, b.hist_lo), max(a.hist_hi, b.hist_hi)
    low, high = _merge_channels(a, b)
    mean = None
    if a.channel_mean is not None and b.channel_mean is not None:
        mean = (a.channel_mean * a.count + b.channel_mean * b.count) / (a.count + b.count)
    return TensorStats(
        minimum=min(a.minimum, b.minimum),
        maximum=max(a.maximum, b.maximum),
        hist=round_counts(_counts_on(a, lo, hi) + _counts_on(b, lo, hi)),
        hist_lo=lo,
        hist_hi=hi,
        count=a.count + b.count,
        channel_min=low,
        channel_max=high,
        channel_mean=mean,
        zeros=a.zeros + b.zeros,
    )
