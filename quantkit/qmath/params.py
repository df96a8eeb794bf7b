"""Ranges -> scale/zero point, and QuantizeLinear/DequantizeLinear exactly as ONNX defines them."""

from __future__ import annotations

from typing import Any

import numpy as np

QRANGE: dict[str, tuple[int, int]] = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "int32": (-(2**31), 2**31 - 1),
}
WEIGHT_QMAX = 127  # symmetric int8 weights use [-127, 127] so that -w quantizes to -q
# 7-bit weights for x86 CPUs without VNNI: their u8 x s8 kernel (vpmaddubsw) adds two products in int16,
# 2 * 255 * 127 overflows it and saturates, while 2 * 255 * 63 = 32130 fits (onnxruntime's reduce_range)
REDUCED_WEIGHT_QMAX = 63


def asymmetric_params(lo: float, hi: float, dtype: str = "uint8") -> tuple[np.float32, int]:
    """Scale and zero point mapping [lo, hi] (widened to contain 0) onto the full integer range.

    0.0 is exactly representable (the zero point is an integer); lo == hi gives scale 1.
    """
    qmin, qmax = QRANGE[dtype]
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        return np.float32(1.0), int(np.clip(0, qmin, qmax))
    scale = np.float32((hi - lo) / (qmax - qmin))
    if scale <= 0 or not np.isfinite(scale):
        scale = np.float32(1.0)
    zero_point = int(np.clip(np.rint(qmin - lo / float(scale)), qmin, qmax))
    return scale, zero_point


def symmetric_params(absmax: np.ndarray | float, qmax: int = 127) -> np.ndarray:
    """Scales for symmetric quantization: absmax / qmax; 1 where absmax is 0.

    absmax: float [...] (any shape). Returns float32 of the same shape, every entry > 0.
    """
    absmax = np.asarray(absmax, dtype=np.float64)
    scale = absmax / qmax
    scale = np.where((scale > 0) & np.isfinite(scale), scale, 1.0)
    # float32 may round a tiny scale to 0: keep it positive.
    return np.maximum(scale.astype(np.float32), np.finfo(np.float32).tiny)


def quantize(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, dtype: str, axis: int | None = None
) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(rint(x / scale) + zero_point), round half to even.

    x: float [...]; scale, zero_point: scalar, or [x.shape[axis]] for per-axis quantization.
    """
    scale_b, zp_b = _broadcast(np.asarray(scale, np.float32), np.asarray(zero_point), x.ndim, axis)
    qmin, qmax = QRANGE[dtype]
    q = np.rint(x.astype(np.float32) / scale_b) + zp_b.astype(np.float64)
    return np.clip(q, qmin, qmax).astype(dtype)


def dequantize(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None = None
) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero_point) * scale, as float32."""
    scale_b, zp_b = _broadcast(np.asarray(scale, np.float32), np.asarray(zero_point), q.ndim, axis)
    return ((q.astype(np.int64) - zp_b.astype(np.int64)) * scale_b).astype(np.float32)


def _broadcast(scale: np.ndarray, zp: np.ndarray, ndim: int, axis: int | None) -> tuple[Any, Any]:
    if axis is None or scale.ndim == 0:
        return scale, zp
    return along_axis(scale, ndim, axis), along_axis(zp, ndim, axis)


def along_axis(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Per-axis values [C] shaped to broadcast against an ndim-array along `axis`."""
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def per_channel_weight(w: np.ndarray, axis: int, qmax: int = WEIGHT_QMAX) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per-channel quantization of a weight onto [-qmax, qmax].

    w: float [..., C (at axis), ...]. Returns (q int8 same shape as w, scale float32 [C]).
    """
    axes = tuple(i for i in range(w.ndim) if i != axis)
    absmax = np.max(np.abs(w), axis=axes) if axes else np.abs(w)
    scale = symmetric_params(absmax, qmax)
    q = quantize(w, scale, np.zeros_like(scale, dtype=np.int8), "int8", axis)
    return np.clip(q, -qmax, qmax).astype(np.int8), scale


def weight_with_error(
    value: np.ndarray, axis: int, qmax: int = WEIGHT_QMAX
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel int8 quantization onto [-qmax, qmax] with its rounding error.

    value: float [..., C (at axis), ...]. Returns (q int8 as value, scale float32 [C], DQ(q) - value as
    float64, value's shape)."""
    q, scale = per_channel_weight(value.astype(np.float32), axis, qmax)
    return q, scale, weight_error(value, q, scale, axis)


def weight_error(value: np.ndarray, q: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """DQ(q) - value as float64, for per-channel int8 q on `scale` [C] along axis; value, q: same shape."""
    return dequantize(q, scale, np.zeros(scale.shape, np.int8), axis) - value.astype(np.float64)


# The share of int32's range a bias may take at its scale s_x * s_w: its correction for the weights'
# rounding comes after the weight's scale is fixed, and float32 rounds the product.
INT32_HEADROOM = 0.5


def bias_weight_scale_floor(bias: np.ndarray, input_scale: float) -> np.ndarray:
    """The least weight scale per output channel at which bias / (s_x * s_w) fits int32 (with
    INT32_HEADROOM). bias: float [C]. Returns float32 [C]. Only a channel whose weights are near zero
    next to its bias needs it (a BatchNorm folded into a dead channel: weights 1e-39..1e-6, bias -6.4):
    on a scale that small its int32 bias saturates, and the layer computes -9e-31 where -6.4 was."""
    limit = float(input_scale) * QRANGE["int32"][1] * INT32_HEADROOM
    return (np.abs(bias.astype(np.float64)) / limit).astype(np.float32)


def bias_int32(
    bias: np.ndarray, input_scale: float, weight_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bias as int32 with scale s_x * s_w (per output channel), zero point 0.

    bias: float [C]; weight_scale: float [C] (or a scalar). Returns (q int32 [C], scale float32 [C]).
    """
    scale = (np.float32(input_scale) * np.asarray(weight_scale, np.float32)).astype(np.float32)
    scale = np.broadcast_to(scale, bias.shape).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    q = quantize(bias, scale, np.zeros(bias.shape, np.int32), "int32", 0 if bias.ndim else None)
    return q.astype(np.int32), scale
