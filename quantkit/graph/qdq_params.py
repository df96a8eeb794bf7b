"""Q/DQ parameters that lose what they carry, whatever the target: a scale of 0, below 0 or Inf, and an
int32 bias at the type's limit (clipped when it was quantized). `quantkit check` reads models other
quantizers wrote too: such a model ran, and measured -20.7 dB, with check saying only "not-fused" or
nothing (hq132 F4)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.graph.finite_weights import QDQ_OPS
from quantkit.graph.query import constant_value
from quantkit.outcomes import Finding

INT32_LIMITS = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)


def broken_params(model: onnx.ModelProto) -> list[Finding]:
    """One finding per Q/DQ node whose scale (an initializer) holds a value that is not finite and above
    0, and per DequantizeLinear of an int32 initializer holding its type's limit."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:  # a scale a Constant node holds (hq138 F5)
        if node.op_type == "Constant" and (value := constant_value(node)) is not None:
            values[node.output[0]] = value
    found = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        scale = values.get(node.input[1])
        data = values.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        zero = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is not None and (
            what := _bad_scale(scale, _zero_channels(node, _offsets(node, data, zero), scale))
        ):
            found.append(
                Finding(
                    "scale",
                    node.name,
                    node.op_type,
                    f"its scale {node.input[1]!r} holds {what} (a scale is finite and above 0): what it "
                    "carries comes out as 0, Inf or NaN; quantize the model again",
                )
            )
        if data is not None and data.dtype == np.int32:
            clipped = int(np.isin(data, INT32_LIMITS).sum())
            if clipped:
                found.append(
                    Finding(
                        "saturated-bias",
                        node.name,
                        node.op_type,
                        f"{node.input[0]!r} holds {clipped} value(s) at int32's limit: the bias was clipped "
                        "when quantized (input scale x weight scale too small for it); quantize the model "
                        "again, with weight scales no smaller than the bias needs",
                    )
                )
    return found


def _offsets(node: onnx.NodeProto, data: np.ndarray | None, zero: np.ndarray | None) -> np.ndarray | None:
    """bool, data's shape: where a DequantizeLinear's constant codes differ from their zero point (hq142
    F4: a pruned channel stored as uint8 128 with zero point 128 is as empty as int8 zeros)."""
    if data is None:
        return None
    if zero is None or zero.size <= 1:
        return np.asarray(data != (0 if zero is None else zero.reshape(())))
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % max(data.ndim, 1)
    block = next((a.i for a in node.attribute if a.name == "block_size"), 0)
    try:
        if block:  # the zero point's shape is the data's with its axis cut into blocks
            zero = np.repeat(zero, block, axis=axis).take(range(data.shape[axis]), axis=axis)
        else:
            zero = zero.reshape([-1 if a == axis else 1 for a in range(data.ndim)])
        return np.asarray(data != zero)
    except (ValueError, IndexError):  # a shape onnxruntime refuses too: no channel is called pruned
        return np.ones(data.shape, dtype=bool)


def _zero_channels(node: onnx.NodeProto, data: np.ndarray | None, scale: np.ndarray) -> np.ndarray:
    """bool [scale.size]: the channels (or blocks, with block_size) a DequantizeLinear's constant data holds
    only zeros in (pruned: a scale of 0 loses nothing there, hq138 F6, hq141 F5). data: bool, where each
    code differs from its zero point (_offsets)."""
    none = np.zeros(scale.size, dtype=bool)
    if data is None or scale.size <= 1 or data.ndim == 0:
        return none
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % data.ndim
    block = next((a.i for a in node.attribute if a.name == "block_size"), 0)
    if block:  # scale: data's shape, its axis cut into blocks (hq140 F3: no channel of one)
        count = -(-data.shape[axis] // block)
        moved = np.moveaxis(data, axis, 0)
        padded = np.zeros((count * block, *moved.shape[1:]), dtype=moved.dtype)
        padded[: moved.shape[0]] = moved
        held = padded.reshape(count, block, *moved.shape[1:]).any(axis=1)
        zero = np.moveaxis(np.asarray(~held), 0, axis)
        return zero.reshape(-1) if zero.shape == scale.shape else none
    if data.shape[axis] != scale.size:
        return none
    return np.asarray(~np.moveaxis(data, axis, 0).reshape(scale.size, -1).any(axis=1))


def _bad_scale(scale: np.ndarray, pruned: np.ndarray) -> str | None:
    """What is wrong with a scale's values, or None; pruned: channels whose 0 loses nothing."""
    values = scale.astype(np.float64).reshape(-1)
    for test, what in (
        (np.isnan(values), "NaN"),
        (np.isinf(values), "Inf"),
        ((values == 0.0) & ~pruned, "0"),
        (values < 0.0, "a value below 0"),
    ):
        if test.any():
            return what if values.size == 1 else f"{what} in {int(test.sum())} of its {values.size} values"
    return None
