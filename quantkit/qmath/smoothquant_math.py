"""SmoothQuant-style rebalancing math. Pure numpy.

An activation X feeding linear layers is divided per channel by s and the layers' weights are multiplied
by s along their input channel, which leaves the FP32 function unchanged:  W x = (W s)(x / s).
With s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), outlier channels shrink and the per-tensor quantization
step of X drops, at the price of larger weights in those channels.

Shapes: C input channels of X. Which alpha pays is measured on calibration data (planner.smoothquant_search).
"""

from __future__ import annotations

import numpy as np

SCALE_LIMITS = (1e-3, 1e3)  # s outside this range trades a tensor problem for a weight problem


def smoothing_scales(x_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """s [C] from the activation's per-channel max |X| [C] and the weights' per-input-channel max |W| [C].

    Channels that are all zero on either side keep s = 1.
    """
    x = np.asarray(x_absmax, np.float64)
    w = np.asarray(w_absmax, np.float64)
    live = (x > 0) & (w > 0)
    s = np.ones_like(x)
    s[live] = x[live] ** alpha / w[live] ** (1.0 - alpha)
    return np.clip(s, *SCALE_LIMITS)


def rebalanced_range(
    channel_min: np.ndarray, channel_max: np.ndarray, scales: np.ndarray
) -> tuple[float, float]:
    """The range of X / s from X's per-channel extremes [C] (s > 0 keeps each channel's order)."""
    return min(float(np.min(channel_min / scales)), 0.0), max(float(np.max(channel_max / scales)), 0.0)
