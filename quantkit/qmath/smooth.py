"""SmoothQuant-style rebalancing math. Pure numpy.

An activation X feeding linear layers is divided per channel by s and the layers' weights are multiplied
by s along their input channel, which leaves the FP32 function unchanged:  W x = (W s)(x / s).
With s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), outlier channels shrink and the per-tensor quantization
step of X drops, at the price of larger weights in those channels.

Shapes: C input channels of X; O output channels of a layer.
  absmax_w [O, C]: max |W| over the kernel taps linking input channel j to output channel o (0 where the
                   layer does not link them, e.g. outside a group).
  energy_w [O, C]: sum of W^2 over those taps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCALE_LIMITS = (1e-3, 1e3)  # s outside this range trades a tensor problem for a weight problem
ACT_LEVELS = 255
WEIGHT_QMAX = 127


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


@dataclass(frozen=True)
class LinearLayer:
    """What the noise estimate needs of one consumer of X."""

    absmax_w: np.ndarray  # [O, C]
    energy_w: np.ndarray  # [O, C]
    taps: int  # kernel taps per (o, j) pair: kh * kw for a convolution, 1 for a matrix product


def output_noise(
    layers: Sequence[LinearLayer], x_absmax: np.ndarray, x_range: tuple[float, float], scales: np.ndarray
) -> float:
    """First-order quantization noise power summed over the outputs of `layers` when X / s is quantized
    per tensor over x_range (uint8) and the weights W s per output channel (int8, symmetric).

    Activation noise: step_x^2 / 12 per element, through the weights' energy.  Weight noise: step_w[o]^2
    / 12 per tap, through the inputs' power, bounded by (max |X_j| / s_j)^2 / 3 (uniform within range).
    """
    step_x = (x_range[1] - x_range[0]) / ACT_LEVELS
    power_x = (np.asarray(x_absmax, np.float64) / scales) ** 2 / 3.0  # [C]
    total = 0.0
    for layer in layers:
        linked = layer.absmax_w > 0  # [O, C]
        act = step_x**2 / 12.0 * float(np.sum(layer.energy_w * scales[None, :] ** 2))
        step_w = np.max(layer.absmax_w * scales[None, :], axis=1) / WEIGHT_QMAX  # [O]
        weight = float(np.sum(step_w**2 / 12.0 * layer.taps * (linked @ power_x)))
        total += act + weight
    return total
