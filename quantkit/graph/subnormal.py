"""Subnormal float32 weights: the values Intel's x86 cores compute with many times slower than the others
(an AMD EPYC ran PFLD no slower for them: hq96 F2, so compare times the cost before it warns).

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

from quantkit.graph.query import bodies

SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)  # 1.18e-38
WARN_SHARE = 0.01  # of the float32 weight values


def _weights(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The model's float32 weights: the initializers and Constant nodes' values of its graph and of the
    If/Loop/Scan bodies in it, at any depth (Paddle2ONNX and tf2onnx store weights in Constant nodes:
    PP-OCRv3's recognizer, 35 % subnormal; a table recognizer's GRU decoder holds its in a Loop body)."""
    found: list[onnx.TensorProto] = []
    pending = [model.graph]
    while pending:
        graph = pending.pop(0)
        found += [init for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT]
        for node in graph.node:
            pending += bodies(node)
            if node.op_type == "Constant":
                found += [
                    a.t
                    for a in node.attribute
                    if a.name == "value" and a.t.data_type == onnx.TensorProto.FLOAT
                ]
    return found


def _tiny(values: np.ndarray) -> np.ndarray:
    return (np.abs(values) < SMALLEST_NORMAL) & (values != 0)


def subnormal_weights(model: onnx.ModelProto) -> tuple[int, int]:
    """(subnormal values, all values) over the model's float32 weights (_weights; external data read where
    the model holds it)."""
    found = total = 0
    for tensor in _weights(model):
        values = numpy_helper.to_array(tensor)
        found += int(np.count_nonzero(_tiny(values)))
        total += values.size
    return found, total


def flushed(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of `model` with its subnormal float32 weights set to zero, how many; `model` itself where it
    holds none). The change is below float32's precision: PFLD's outputs were the same bit for bit. Only
    the weights holding some are decoded again, in the copy (_weights lists them in `model`'s order)."""
    holding = {k for k, tensor in enumerate(_weights(model)) if _tiny(numpy_helper.to_array(tensor)).any()}
    if not holding:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    count = 0
    for k, tensor in enumerate(_weights(out)):
        if k in holding:
            values = numpy_helper.to_array(tensor)
            tiny = _tiny(values)
            count += int(np.count_nonzero(tiny))
            tensor.CopyFrom(numpy_helper.from_array(np.where(tiny, np.float32(0), values), tensor.name))
    return out, count


def flushed_note(count: int, timed: bool = True) -> tuple[str, ...]:
    """convert's note where the file holds `count` subnormal weights, flushed (`flushed`) in what it converts
    and in the FP32 model it times."""
    if not count:
        return ()
    return (
        f"{count:,} subnormal FP32 weight(s) (nonzero, below {SMALLEST_NORMAL:.2g}) flushed to zero in the "
        f"model written{' and in the FP32 model its speed is measured against' if timed else ''}: Intel's "
        "x86 cores compute them many times slower, and the change is below float32's precision",
    )


def many_subnormal(model: onnx.ModelProto) -> tuple[int, int] | None:
    """subnormal_weights where WARN_SHARE or more of the float32 weights are subnormal, else None."""
    found, total = subnormal_weights(model)
    return (found, total) if total and found >= WARN_SHARE * total else None


def subnormal_warning(model: onnx.ModelProto) -> str | None:
    """The warning for a model whose float32 weights are WARN_SHARE or more subnormal, else None."""
    if (counted := many_subnormal(model)) is None:
        return None
    found, total = counted
    return (
        f"{found:,} of the FP32 model's {total:,} weights ({found / total:.0%}) are subnormal (nonzero, "
        f"below {SMALLEST_NORMAL:.2g}), which Intel's x86 cores compute with many times slower (quantkit "
        "compare times it on this CPU): its latency, and any speedup against it, may be inflated by that; "
        "flushed to zero (a change below float32's precision) they cost nothing"
    )
