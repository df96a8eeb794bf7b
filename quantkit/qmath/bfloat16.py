"""bfloat16 in plain numpy (numpy has no bfloat16 type): the upper 16 bits of a float32, rounded to nearest
even as onnx's Cast and onnxruntime's Cast kernel round (tests check both agree bit for bit)."""

from __future__ import annotations

import numpy as np

_QUIET_NAN = np.uint32(0x7FC0)


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """uint16 bit patterns of `values` (any float array) in bfloat16, round to nearest even; a value
    beyond bfloat16's largest (3.39e38) rounds to infinity, NaN stays a (quiet) NaN with its sign."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint32)
    nan = np.isnan(np.asarray(values, dtype=np.float32))
    rounded = np.where(nan, ((bits >> 16).astype(np.uint32) & 0x8000) | _QUIET_NAN, rounded)
    return rounded.astype(np.uint16)


def bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (exact: every bfloat16 is a float32)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """`values` rounded to bfloat16 and held in float32, the value a float -> bfloat16 -> float Cast gives."""
    return bits_to_float32(bfloat16_bits(values))
