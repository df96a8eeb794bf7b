"""Subnormal float32 weights: the values x86 CPUs compute with many times slower than the others.

A float32 below 1.2e-38 (and not zero) has no implicit leading bit; x86 floating-point units take a
microcode assist for each operation on one unless the thread flushes them (FTZ/DAZ), which onnxruntime
does not by default. A model trained with weight decay to near-zero filters can hold many: PFLD's 68-point
landmark network (hunt30) has 447,229 of its 741,192 weights subnormal, and its FP32 run took 44.8 ms at
one thread against 1.77 ms with them flushed to zero (the same outputs, bit for bit). Every latency of such
a model, and every speedup measured against it (its INT8 model's 31.6x), is then mostly that cost.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)  # 1.18e-38
WARN_SHARE = 0.01  # of the float32 weight values


def subnormal_weights(model: onnx.ModelProto) -> tuple[int, int]:
    """(subnormal values, all values) over the model's float32 initializers (external data read where
    the model holds it)."""
    found = total = 0
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = np.abs(numpy_helper.to_array(init))
        found += int(np.count_nonzero((values < SMALLEST_NORMAL) & (values > 0)))
        total += values.size
    return found, total


def subnormal_warning(model: onnx.ModelProto) -> str | None:
    """The warning for a model whose float32 weights are WARN_SHARE or more subnormal, else None."""
    found, total = subnormal_weights(model)
    if not total or found < WARN_SHARE * total:
        return None
    return (
        f"{found:,} of the FP32 model's {total:,} weights ({found / total:.0%}) are subnormal (nonzero, "
        f"below {SMALLEST_NORMAL:.2g}), which x86 CPUs compute with many times slower: its latency, and "
        "any speedup against it, is inflated by that; flushed to zero (a change below float32's "
        "precision) they cost nothing"
    )
