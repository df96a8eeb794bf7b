"""The 16-bit float types `convert --to fp16|bf16` writes, as data: what differs between them is stated
here once and read by the planner, the rewrite and the pipeline.

float16 has 11 significant bits and a range up to 65504: the planner's overflow checks matter, the
precision seldom does. bfloat16 has float32's range (the same 8 exponent bits: up to 3.39e38, smallest
normal 2**-126), so the same checks, stated with its numbers, do not fire on a float32 model; it has 8
significant bits, so its error is precision, which the fallback measures. ONNX admits bfloat16 in Conv and
the pools only from opset 22, and onnxruntime's CPU provider has no bfloat16 kernels for them (nor for
MatMul, Add, Relu): a bfloat16 model is checked through its float32 emulation (graph.emulate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from quantkit.qmath.bfloat16 import bfloat16_bits, round_to_bfloat16


@dataclass(frozen=True)
class FloatFormat:
    name: str  # "float16": the ONNX type's name, as the summary says it
    flag: str  # "fp16": convert --to
    elem_type: int  # TensorProto.FLOAT16
    largest: float  # the largest finite value: weights and activations beyond it overflow
    smallest_normal: float  # below it values lose bits (subnormal) or vanish
    significand_bits: int  # with the implicit bit; each one is 6.02 dB of rounding noise
    runs_in_onnxruntime: bool  # onnxruntime's CPU provider runs it; else measured on the emulation
    min_opset: int  # the opset the model is taken to first (0: keep the model's)

    @property
    def type_str(self) -> str:
        return f"tensor({self.name})"

    @property
    def suffix(self) -> str:
        return "_" + self.flag

    def rounded(self, values: np.ndarray) -> np.ndarray:
        """float `values` rounded to this type and held in their own dtype, as a Cast there and back gives
        them (beyond float16's range: +-inf)."""
        if self.elem_type == TensorProto.FLOAT16:
            with np.errstate(over="ignore"):
                return np.asarray(values).astype(np.float16).astype(np.asarray(values).dtype)
        return round_to_bfloat16(np.asarray(values, np.float32)).astype(np.asarray(values).dtype)

    def store(self, values: np.ndarray, name: str = "") -> TensorProto:
        """float values as a tensor of this type: rounded to nearest even, never clamped."""
        if self.elem_type == TensorProto.FLOAT16:
            return numpy_helper.from_array(np.asarray(values, dtype=np.float32).astype(np.float16), name)
        tensor = TensorProto(name=name, data_type=self.elem_type, dims=np.shape(values))
        tensor.raw_data = bfloat16_bits(np.asarray(values)).astype("<u2").tobytes()
        return tensor


FLOAT16 = FloatFormat(
    "float16", "fp16", TensorProto.FLOAT16, 65504.0, 2.0**-14, 11, runs_in_onnxruntime=True, min_opset=0
)
# opset 22: the first where Conv, MaxPool, AveragePool and GlobalAveragePool admit bfloat16 (13: MatMul,
# Gemm, Add, Relu, Clip, Cast); onnx's version converter takes the four shared models there with
# outputs unchanged (graph.prepare checks it), where opset 13 would leave every Conv float32
BFLOAT16 = FloatFormat(
    "bfloat16", "bf16", TensorProto.BFLOAT16, 3.3895313892515355e38, 2.0**-126, 8, False, min_opset=22
)
FORMATS = {f.flag: f for f in (FLOAT16, BFLOAT16)}


def opsets(model: onnx.ModelProto) -> dict[str, int]:
    """domain -> opset version imported ("" for ai.onnx)."""
    return {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}


def admits(
    node: onnx.NodeProto, versions: Mapping[str, int], type_str: str, positions: tuple[set[int], set[int]]
) -> bool | None:
    """Whether the node's ONNX schema, at the model's opset, admits `type_str` ("tensor(bfloat16)") at
    the given (input, output) positions (its float tensors); None when no schema is known (a custom
    domain, an op the installed onnx does not know)."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    try:
        schema = onnx.defs.get_schema(node.op_type, versions.get(domain, 1), domain)
    except onnx.defs.SchemaError:
        return None
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    for formal, wanted in ((schema.inputs, positions[0]), (schema.outputs, positions[1])):
        for k in wanted:
            if not formal:
                return False
            param = formal[min(k, len(formal) - 1)]
            if k >= len(formal) and param.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
                return False
            if type_str not in allowed.get(param.type_str, {param.type_str}):
                return False
    return True
