"""Trained weights that are not numbers: refused on loading, with the weight's name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.errors import ModelError, shorten

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})

# Ops whose initializer inputs are trained parameters: an infinity there is a broken weight. Elsewhere it
# is a constant the exporter meant: PyTorch's masked_fill(-inf) exports a scalar -inf read by Where.
PARAMETER_READERS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
    }
    | {"LSTM", "GRU", "RNN", "PRelu"}
)


QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def check_finite_weights(model: onnx.ModelProto, path: Path) -> None:
    """Refuse NaN in any float initializer or Constant (hunt42 F3), and Inf in one a PARAMETER_READERS op
    reads."""
    parameters = {name for n in model.graph.node if n.op_type in PARAMETER_READERS for name in n.input}
    scales = {n.input[1] for n in model.graph.node if n.op_type in QDQ_OPS and len(n.input) > 1}
    read = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    held = [  # a Constant nothing reads is no weight (hunt43 F5: onnxruntime drops it)
        (n.output[0], a.t)
        for n in model.graph.node
        if n.op_type == "Constant" and n.output[0] in read
        for a in n.attribute
        if a.name == "value"
    ]
    for name, tensor in [*((t.name, t) for t in model.graph.initializer), *held]:
        if tensor.data_type in FLOAT_TYPES:
            try:
                values = numpy_helper.to_array(tensor)
            except (ValueError, TypeError) as exc:  # dims that do not match the data
                raise ModelError(
                    f"weight {name!r} of {path.name} is malformed ({shorten(str(exc), 160)}); re-export the "
                    "model"
                ) from exc
            finite = np.isfinite(values) if name in parameters else ~np.isnan(values)
            bad = int(values.size - np.count_nonzero(finite))
            if bad:
                fix = (  # hq132 F4: a Q/DQ scale is the quantizer's, not a trained weight
                    "a quantization scale: quantize the model again"
                    if name in scales
                    else "fix the trained weights and re-export"
                )
                raise ModelError(f"weight {name!r} of {path.name} holds {bad} NaN or Inf value(s); {fix}")
