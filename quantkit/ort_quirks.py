"""Model forms onnxruntime 1.32's CPU provider mishandles, known by their form alone (no session): a
session for one is made so that it runs right (runtime.Session), and the figures of one say how.

- float8 Q/DQ: its extended (QDQ) optimizations miscompute them (SqueezeNet in FP8: 27.6 dB against FP32
  at the basic level, 11.9 dB above it); they run at ORT_ENABLE_BASIC."""

from __future__ import annotations

import onnx

_FLOAT8 = ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
FLOAT8_TYPES = frozenset(getattr(onnx.TensorProto, name) for name in _FLOAT8)


def has_float8(model: onnx.ModelProto) -> bool:
    """Whether the model holds float8 tensors (the zero points of float8 Q/DQ)."""
    if any(t.data_type in FLOAT8_TYPES for t in model.graph.initializer):
        return True
    return any(
        a.t.data_type in FLOAT8_TYPES
        for n in model.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
    )
