"""Range selection from a streamed histogram: minmax, percentile, entropy (KL search) and MSE.

Every function takes the histogram of one tensor:
    counts: int64 [B], the number of values in each of B equal-width bins over [lo, hi].
and returns the (range_lo, range_hi) to quantize with, always containing 0 and within [lo, hi].
"""

from __future__ import annotations

from collections.abc import Callable

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


def _abs_histogram(
    counts: np.ndarray, lo: float, hi: float, bins: int | None = None
) -> tuple[np.ndarray, float]:
    """Fold a histogram over [lo, hi] into a histogram of |x| over [0, max(|lo|, |hi|)] with `bins` bins
    (None: as many as `counts`).

    Mass is spread uniformly within each source bin (exact for the CDF at the new edges).
    Returns (counts float64 [bins], absmax).
    """
    bins = counts.size if bins is None else bins
    absmax = max(abs(lo), abs(hi))
    if absmax == 0.0:
        return counts.astype(np.float64), 0.0
    edges = bin_edges(lo, hi, counts.size)
    cum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    new_edges = np.linspace(0.0, absmax, bins + 1)
    # mass of |x| <= t  =  F(t) - F(-t), with F the CDF (linear inside source bins, flat outside)
    cdf_pos = np.interp(new_edges, edges, cum)
    cdf_neg = np.interp(-new_edges, edges, cum)
    folded = np.diff(cdf_pos - cdf_neg)
    return np.maximum(folded, 0.0), absmax


def without_zeros(counts: np.ndarray, lo: float, hi: float, zeros: int) -> np.ndarray:
    """The histogram less `zeros` exact 0.0 values, taken from the bin that holds 0. float64 [B]."""
    out = counts.astype(np.float64)
    if zeros and lo <= 0.0 <= hi and hi > lo:
        k = min(int((0.0 - lo) / (hi - lo) * out.size), out.size - 1)
        out[k] = max(out[k] - zeros, 0.0)
    return out


ENTROPY_BINS = 2048  # the |x| histogram entropy_range searches, at most: TensorRT's


def entropy_range(
    counts: np.ndarray, lo: float, hi: float, dtype: str = "uint8", stride: int = 1
) -> tuple[float, float]:
    """KL-divergence threshold search (TensorRT's calibration) on the histogram of |x|.

    For each candidate threshold T (a bin edge), P is the histogram clipped at T (outliers added to the
    last bin) and Q is P merged into the number of levels the tensor gets and expanded back over the
    non-empty bins; the T with the smallest KL(P || Q) wins. A non-negative tensor gets every level of
    the type on [0, T]; a signed tensor gets half of them per side. Pass counts without exact zeros
    (`without_zeros`): they are represented exactly, and a ReLU's spike at 0 would otherwise pull the
    threshold far down.
    """
    # its cost grows with the square of the bins: a --bins 2**20 table took hours a tensor (hq132 F3)
    folded, absmax = _abs_histogram(counts, lo, hi, min(counts.size, ENTROPY_BINS))
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
    """KL(P || Q) for clipping the |x| histogram (float64 [B]) after its first i bins.

    P is the clipped distribution (the mass beyond bin i lands in its last bin); Q is the *unclipped*
    slice quantized to `levels` levels, so that clipping costs divergence.
    """
    p = folded[:i].copy()
    p[-1] += folded[i:].sum()
    sliced = folded[:i]
    nonzero = sliced > 0
    group = (np.arange(i) * levels) // i  # merge i bins into `levels` groups of (nearly) equal width
    group_mass = np.bincount(group, weights=sliced, minlength=levels)
    group_nonzero = np.bincount(group, weights=nonzero.astype(np.float64), minlength=levels)
    q = np.where(nonzero, group_mass[group] / np.maximum(group_nonzero[group], 1.0), 0.0)
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum == 0 or q_sum == 0:
        return np.inf
    p = p / p_sum
    q = q / q_sum
    mask = p > 0
    if np.any(q[mask] == 0):
        q = np.where(mask & (q == 0), 1e-10, q)  # smoothing: an empty Q bin under P mass is costly, not inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def silu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(x)


Transform = Callable[[np.ndarray], np.ndarray]


def hard_sigmoid(alpha: float, beta: float) -> Transform:
    """ONNX HardSigmoid: max(0, min(1, alpha x + beta))."""
    return lambda x: np.clip(alpha * x + beta, 0.0, 1.0)


def mse_range(
    counts: np.ndarray,
    lo: float,
    hi: float,
    dtype: str = "uint8",
    steps: int = 200,
    rounds: int = 3,
    transform: Transform | None = None,
) -> tuple[float, float]:
    """The range with the smallest expected squared error, each end searched on its own.

    The error of a candidate [a, b] is the clipping error of the values outside it plus the rounding noise
    step^2/12 of the values inside, from the histogram's bin centres. With `transform` g (the elementwise
    function every consumer applies, e.g. SiLU), the error is measured after it: (g(x) - g(clip(x)))^2
    and g'(x)^2 step^2/12, so range is not spent where g flattens the values.
    Coordinate descent: the upper end over `steps` fractions of hi with the lower end fixed, then the
    lower end, `rounds` times.
    """
    total = counts.sum()
    if total == 0 or hi - lo <= 0:
        return min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = QRANGE[dtype]
    edges = bin_edges(lo, hi, counts.size)
    centres = (edges[:-1] + edges[1:]) / 2.0
    g = transform or (lambda x: x)
    h = (hi - lo) / counts.size / 2.0
    slope2 = ((g(centres + h) - g(centres - h)) / (2.0 * h)) ** 2  # g'(x)^2, [B]
    weights = counts.astype(np.float64)
    fractions = np.linspace(1.0, 1.0 / steps, steps)
    best_lo, best_hi = min(lo, 0.0), max(hi, 0.0)
    for _ in range(rounds):
        if best_hi > 0:
            his = hi * fractions
            errors = range_errors(centres, weights, slope2, g, np.full(steps, best_lo), his, qmax - qmin)
            best_hi = float(his[int(np.argmin(errors))])
        if best_lo < 0:
            los = lo * fractions
            errors = range_errors(centres, weights, slope2, g, los, np.full(steps, best_hi), qmax - qmin)
            best_lo = float(los[int(np.argmin(errors))])
    return best_lo, best_hi


def range_errors(
    centres: np.ndarray,
    weights: np.ndarray,
    slope2: np.ndarray,
    g: Transform,
    los: np.ndarray,
    his: np.ndarray,
    n_steps: int,
) -> np.ndarray:
    """Expected squared error [S] of each candidate range [los, his] over the histogram (mse_range's).

    The bins below a candidate clip to g(lo), those above to g(hi): sum w (g(c) - g(e))^2 over them is
    W2 - 2 g(e) W1 + g(e)^2 W0 with W_k the sums of w g(c)^k over those bins, and the rounding noise
    inside is the sum of w g'(c)^2 over the bins within. Prefix sums (suffix sums above, so that the
    few bins past a wide range are not the difference of two large totals) make each candidate O(1):
    S x B products took 2 s of a 640x640 text detector's convert (963 searches of 200 candidates)."""
    gc = g(centres)
    moments = np.stack([weights, weights * gc, weights * gc * gc, weights * slope2])  # [4, B]
    zero = np.zeros((4, 1))
    prefix = np.concatenate([zero, np.cumsum(moments, axis=1)], axis=1)  # [4, B + 1]: bins before k
    suffix = np.concatenate([np.cumsum(moments[:, ::-1], axis=1)[:, ::-1], zero], axis=1)  # bins from k
    below = np.searchsorted(centres, los, side="left")  # bins [0, below) lie under lo
    above = np.searchsorted(centres, his, side="right")  # bins [above, B) lie over hi
    g_lo, g_hi = g(np.asarray(los, np.float64)), g(np.asarray(his, np.float64))
    low = prefix[2, below] - 2.0 * g_lo * prefix[1, below] + g_lo * g_lo * prefix[0, below]
    high = suffix[2, above] - 2.0 * g_hi * suffix[1, above] + g_hi * g_hi * suffix[0, above]
    inside = np.maximum(prefix[3, above] - prefix[3, below], 0.0)
    step = (his - los) / n_steps
    return np.maximum(low, 0.0) + np.maximum(high, 0.0) + inside * step * step / 12.0
