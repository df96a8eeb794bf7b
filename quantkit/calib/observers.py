"""Streaming observers: update(batch) then result(). State is O(bins + channels), never O(images)."""

from __future__ import annotations

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
        self.channel_absmax: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        """x: float [...] (one batch of the tensor). Non-finite values are counted, not binned."""
        finite = np.isfinite(x)
        if not finite.all():
            self.nonfinite += int(x.size - finite.sum())
            x = np.where(finite, x, 0.0).astype(x.dtype)
        if x.size == 0:
            return
        x_min, x_max = float(x.min()), float(x.max())
        self.minimum = min(self.minimum, x_min)
        self.maximum = max(self.maximum, x_max)
        self._grow(min(x_min, 0.0), max(x_max, 0.0))
        self.counts += histogram_counts(x, self.lo, self.hi, self.bins)
        self.count += x.size
        self.zeros += int(x.size - np.count_nonzero(x))
        if self.channel_axis is not None and -x.ndim <= self.channel_axis < x.ndim:
            axis = self.channel_axis % x.ndim
            axes = tuple(i for i in range(x.ndim) if i != axis)
            batch_max = np.max(np.abs(x), axis=axes).astype(np.float32)
            if self.channel_absmax is None or self.channel_absmax.shape != batch_max.shape:
                self.channel_absmax = batch_max
            else:
                np.maximum(self.channel_absmax, batch_max, out=self.channel_absmax)

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
            channel_absmax=self.channel_absmax,
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


def merge_stats(a: TensorStats, b: TensorStats) -> TensorStats:
    """Statistics of the union of two calibration sets (shards of one folder)."""
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    lo, hi = min(a.hist_lo, b.hist_lo), max(a.hist_hi, b.hist_hi)
    channel = a.channel_absmax if b.channel_absmax is None else b.channel_absmax
    if a.channel_absmax is not None and b.channel_absmax is not None:
        channel = np.maximum(a.channel_absmax, b.channel_absmax)
    return TensorStats(
        minimum=min(a.minimum, b.minimum),
        maximum=max(a.maximum, b.maximum),
        hist=round_counts(_counts_on(a, lo, hi) + _counts_on(b, lo, hi)),
        hist_lo=lo,
        hist_hi=hi,
        count=a.count + b.count,
        channel_absmax=channel,
        zeros=a.zeros + b.zeros,
    )
