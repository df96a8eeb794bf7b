"""FP8 E4M3FN quantization (convert --to fp8): the arithmetic of ONNX's QuantizeLinear to float8e4m3fn.

E4M3FN: 1 sign, 4 exponent (bias 7), 3 mantissa bits; largest finite 448, smallest subnormal 2**-9, no
infinities. QuantizeLinear (opset 19, saturate=1) computes x / scale rounded to nearest even in that
format, saturated to +-448. Scales are symmetric: amax / 448, so the largest magnitude lands on 448.
Arrays of the type are ml_dtypes' float8_e4m3fn (onnx's own dependency; numpy_helper reads and writes
them as FLOAT8E4M3FN tensors).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from quantkit.qmath.params import along_axis, symmetric_params

E4M3_MAX = 448.0
FLOAT8 = np.dtype(ml_dtypes.float8_e4m3fn)


def to_e4m3(x: np.ndarray) -> np.ndarray:
    """x (float, any shape) saturated to +-448 and rounded to nearest even E4M3FN."""
    return np.clip(np.asarray(x, np.float32), -E4M3_MAX, E4M3_MAX).astype(FLOAT8)


def quantize_fp8(x: np.ndarray, scale: np.ndarray, axis: int | None = None) -> np.ndarray:
    """QuantizeLinear to float8e4m3fn with zero point 0. x: float [...]; scale: scalar or [x.shape[axis]]."""
    return to_e4m3(np.asarray(x, np.float32) / _scale_for(scale, x.ndim, axis))


def dequantize_fp8(q: np.ndarray, scale: np.ndarray, axis: int | None = None) -> np.ndarray:
    """DequantizeLinear of float8e4m3fn with zero point 0, as float32."""
    return (q.astype(np.float32) * _scale_for(scale, q.ndim, axis)).astype(np.float32)


def _scale_for(scale: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    s = np.asarray(scale, np.float32)
    return along_axis(s, ndim, axis) if axis is not None and s.ndim else s


def per_channel_fp8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel FP8 weights: (q float8 as w, scale float32 [C] = absmax / 448, DQ(q) - w float64).

    w: float [..., C (at axis), ...]."""
    axes = tuple(i for i in range(w.ndim) if i != axis)
    absmax = np.max(np.abs(w), axis=axes) if axes else np.abs(w)
    scale = symmetric_params(absmax, 1).astype(np.float32) / np.float32(E4M3_MAX)
    scale = np.maximum(scale, np.finfo(np.float32).tiny).astype(np.float32)
    q = quantize_fp8(w, scale, axis)
    return q, scale, dequantize_fp8(q, scale, axis) - w.astype(np.float64)


def tensor_scale(lo: float, hi: float) -> np.ndarray:
    """Per-tensor activation scale for a range [lo, hi]: amax / 448 (1 / 448 for an all-zero tensor)."""
    amax = max(abs(float(lo)), abs(float(hi)))
    return np.asarray(amax / E4M3_MAX if amax > 0 else 1.0 / E4M3_MAX, np.float32)
