"""Range selection from a streamed histogram: minmax, percentile, entropy (KL search) and MSE.

Every function takes the histogram of one tensor:
    counts: int64 [B], the number of values in each of B equal-width bins over [lo, hi].
and returns the (range_lo, range_hi) to quantize with, always containing 0 and within [lo, hi].
"""

from __future__ import annotations

import numpy as np

from quantkit.qmath.params import QRANGE


def bin_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """float64 [bins + 1]."""
    return np.linspace(lo, hi, bins + 1)


def minmax_range(minimum: float, maximum: float) -> tuple[float, float]:
    return min(minimum, 0.0), max(maximum, 0.0)


def percentile_range(counts: np.ndarray, lo: float, hi: float, percentile: float) -> tuple[float, float]:
    """Clip both tails: keep the central `percentile` % of the mass ((100 - p)/2 % cut on each side that
    holds data), interpolating inside the bin."""
    total = counts.sum()
    if total == 0:
        return min(lo, 0.0), max(hi, 0.0)
    edges = bin_edges(lo, hi, counts.size)
    cdf = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)]) / total
    tail = (100.0 - percentile) / 100.0
    has_negative = lo < 0.0
    low_q = tail / 2.0 if has_negative else 0.0
    high_q = 1.0 - (tail / 2.0 if has_negative else tail)
    r_lo = float(np.interp(low_q, cdf, edges)) if has_negative else lo
    r_hi = float(np.interp(high_q, cdf, edges))
    return min(r_lo, 0.0), max(r_hi, 0.0)


def _abs_histogram(counts: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, float]:
    """Fold a histogram over [lo, hi] into a histogram of |x| over [0, max(|lo|, |hi|)] with as many bins.

    Mass is spread uniformly within each source bin (exact for the CDF at the new edges).
    Returns (counts float64 [B], absmax).
    """
    bins = counts.size
    absmax = max(abs(lo), abs(hi))
    if absmax == 0.0:
        return counts.astype(np.float64), 0.0
    edges = bin_edges(lo, hi, bins)
    cum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    new_edges = np.linspace(0.0, absmax, bins + 1)
    # mass of |x| <= t  =  F(t) - F(-t), with F the CDF (linear inside source bins, flat outside)
    cdf_pos = np.interp(new_edges, edges, cum)
    cdf_neg = np.interp(-new_edges, edges, cum)
    folded = np.diff(cdf_pos - cdf_neg)
    return np.maximum(folded, 0.0), absmax


def entropy_range(
    counts: np.ndarray, lo: float, hi: float, dtype: str = "uint8", stride: int = 1
) -> tuple[float, float]:
    """KL-divergence threshold search (TensorRT's calibration) on the histogram of |x|.

    For each candidate threshold T (a bin edge), P is the histogram clipped at T (outliers added to the
    last bin) and Q is P merged into the number of levels the tensor gets and expanded back over the
    non-empty bins; the T with the smallest KL(P || Q) wins. A non-negative tensor gets every level of
    the type on [0, T]; a signed tensor gets half of them per side.
    """
    folded, absmax = _abs_histogram(counts, lo, hi)
    bins = folded.size
    if absmax == 0.0 or folded.sum() == 0:
        return min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = QRANGE[dtype]
    levels = (qmax - qmin + 1) if lo >= 0.0 else (qmax - qmin + 1) // 2
    if bins <= levels:
        return min(lo, 0.0), max(hi, 0.0)
    best_i, best_kl = bins, np.inf
    for i in range(levels, bins + 1, stride):
        kl = _kl_for_threshold(folded, i, levels)
        if kl < best_kl:
            best_kl, best_i = kl, i
    threshold = absmax * best_i / bins
    return max(lo, -threshold) if lo < 0 else 0.0, min(hi, threshold) if hi > 0 else 0.0


def _kl_for_threshold(folded: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) for clipping the |x| histogram (float64 [B]) after its first i bins."""
    p = folded[:i].copy()
    p[-1] += folded[i:].sum()
    nonzero = p > 0
    # merge i bins into `levels` groups of (nearly) equal width
    group = (np.arange(i) * levels) // i
    group_mass = np.bincount(group, weights=p, minlength=levels)
    group_nonzero = np.bincount(group, weights=nonzero.astype(np.float64), minlength=levels)
    q = np.where(nonzero, group_mass[group] / np.maximum(group_nonzero[group], 1.0), 0.0)
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum == 0 or q_sum == 0:
        return np.inf
    p = p / p_sum
    q = q / q_sum
    mask = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def mse_range(
    counts: np.ndarray, lo: float, hi: float, dtype: str = "uint8", steps: int = 200
) -> tuple[float, float]:
    """Shrink [lo, hi] by a common factor; pick the factor with the smallest expected squared error.

    The error of a candidate range is the clipping error of the values outside it plus the rounding
    noise step^2/12 of the values inside, both computed from the histogram's bin centres.
    """
    total = counts.sum()
    if total == 0 or hi - lo <= 0:
        return min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = QRANGE[dtype]
    n_steps = qmax - qmin
    edges = bin_edges(lo, hi, counts.size)
    centres = (edges[:-1] + edges[1:]) / 2.0
    weights = counts.astype(np.float64)
    best, best_err = (min(lo, 0.0), max(hi, 0.0)), np.inf
    for factor in np.linspace(1.0, 1.0 / steps, steps):
        c_lo, c_hi = min(lo * factor, 0.0), max(hi * factor, 0.0)
        step = (c_hi - c_lo) / n_steps
        if step <= 0:
            continue
        clipped = np.clip(centres, c_lo, c_hi)
        clip_err = np.sum(weights * (centres - clipped) ** 2)
        inside = np.sum(weights[(centres >= c_lo) & (centres <= c_hi)])
        err = clip_err + inside * step * step / 12.0
        if err < best_err:
            best_err, best = err, (c_lo, c_hi)
    return best
