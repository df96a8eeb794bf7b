"""Q/DQ parameters that lose what they carry, whatever the target: a scale of 0, below 0 or Inf, and an
int32 bias at the type's limit (clipped when it was quantized). `quantkit check` reads models other
quantizers wrote too: such a model ran, and measured -20.7 dB, with check saying only "not-fused" or
nothing (hq132 F4)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.outcomes import Finding

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INT32_LIMITS = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)


def broken_params(model: onnx.ModelProto) -> list[Finding]:
    """One finding per Q/DQ node whose scale (an initializer) holds a value that is not finite and above
    0, and per DequantizeLinear of an int32 initializer holding its type's limit."""
    values = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        scale = values.get(node.input[1])
        if scale is not None and (what := _bad_scale(numpy_helper.to_array(scale))) is not None:
            found.append(
                Finding(
                    "scale",
                    node.name,
                    node.op_type,
                    f"its scale {node.input[1]!r} holds {what} (a scale is finite and above 0): what it "
                    "carries comes out as 0, Inf or NaN; quantize the model again",
                )
            )
        data = values.get(node.input[0])
        if (
            node.op_type == "DequantizeLinear"
            and data is not None
            and data.data_type == onnx.TensorProto.INT32
        ):
            clipped = int(np.isin(numpy_helper.to_array(data), INT32_LIMITS).sum())
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


def _bad_scale(scale: np.ndarray) -> str | None:
    """What is wrong with a scale's values, or None."""
    values = scale.astype(np.float64).reshape(-1)
    for test, what in (
        (np.isnan(values), "NaN"),
        (np.isinf(values), "Inf"),
        (values == 0.0, "0"),
        (values < 0.0, "a value below 0"),
    ):
        if test.any():
            return what if values.size == 1 else f"{what} in {int(test.sum())} of its {values.size} channels"
    return None
