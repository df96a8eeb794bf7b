"""Histogram re-binning: the math behind streaming, mergeable activation histograms."""

from __future__ import annotations

import numpy as np


def rebin(counts: np.ndarray, lo: float, hi: float, new_lo: float, new_hi: float) -> np.ndarray:
    """Move a histogram over [lo, hi] onto the same number of bins over [new_lo, new_hi] ⊇ [lo, hi].

    counts: [B] (any numeric). Mass is spread uniformly inside each source bin; the total is preserved.
    Returns float64 [B].
    """
    bins = counts.size
    cum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    old_edges = np.linspace(lo, hi, bins + 1)
    new_edges = np.linspace(new_lo, new_hi, bins + 1)
    return np.maximum(np.diff(np.interp(new_edges, old_edges, cum)), 0.0)


def grown_range(lo: float, hi: float, data_lo: float, data_hi: float) -> tuple[float, float]:
    """The range to grow [lo, hi] to so that it covers [data_lo, data_hi].

    Each side that must grow grows to at least twice the current width past the other side, so a range
    that creeps up batch after batch is re-binned O(log) times, not once per batch.
    """
    width = hi - lo
    new_lo, new_hi = lo, hi
    if data_lo < lo:
        new_lo = min(data_lo, hi - 2.0 * width) if width > 0 else data_lo
    if data_hi > hi:
        new_hi = max(data_hi, lo + 2.0 * width) if width > 0 else data_hi
    return new_lo, new_hi


def histogram_counts(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Counts of x (float [...]) in `bins` equal bins over [lo, hi]; values are assumed inside. int64 [B].

    Computed in float32, in place (half the memory traffic of float64): a value within a
    float32 rounding of a bin edge may land in the neighbouring bin, which no range method can see. A
    value at hi (index B) counts in the last bin."""
    if hi <= lo:
        out = np.zeros(bins, np.int64)
        out[0] = x.size
        return out
    flat = x.reshape(-1)
    if flat.dtype != np.float32:
        flat = flat.astype(np.float32)
    scaled = flat - np.float32(lo)
    scaled *= np.float32(bins / (hi - lo))
    # below lo only by rounding: truncation toward zero puts those in bin 0
    counts = np.bincount(scaled.astype(np.intp), minlength=bins + 1)
    counts[bins - 1] += counts[bins:].sum()
    return counts[:bins].astype(np.int64)


def round_counts(counts: np.ndarray) -> np.ndarray:
    """Fractional counts (after re-binning) as int64 with the same total: largest remainders round up.

    counts: float [B], non-negative. Returns int64 [B]; deterministic (ties go to the lower bin).
    """
    floor = np.floor(counts)
    short = round(float(counts.sum() - floor.sum()))
    out = floor.astype(np.int64)
    if short > 0:
        order = np.argsort(-(counts - floor), kind="stable")[:short]
        out[order] += 1
    return out
