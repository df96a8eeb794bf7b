"""`quantkit check`: a Q/DQ model read against one target's rules (graph.target_rules)."""

from __future__ import annotations

from pathlib import Path

import onnx

from quantkit.config import Target
from quantkit.graph import model_io
from quantkit.graph import target_rules as rules
from quantkit.outcomes import CheckReport, Finding
from quantkit.runtime import optimized_graph


def check(model_path: Path, target: Target) -> CheckReport:
    """Every Q/DQ placement `target` cannot fuse or will run in float, and every type it cannot run."""
    model = model_io.load_model(model_path)
    inferred = model_io.infer_shapes(model)
    layers, quantized = rules.quantized_layers(inferred, through=target is Target.openvino)
    return CheckReport(
        model=str(model_path),
        target=target.value,
        layers=layers,
        quantized_layers=quantized,
        findings=findings(model, inferred, target),
    )


def findings(model: onnx.ModelProto, inferred: onnx.ModelProto, target: Target) -> tuple[Finding, ...]:
    """inferred: the model with shapes inferred. ort-cpu also asks onnxruntime what it fused."""
    if target is Target.tensorrt:
        return tuple(rules.tensorrt(inferred))
    if target is Target.openvino:
        return tuple(rules.openvino(inferred))
    bfloat16 = rules.bfloat16_nodes(inferred)
    if bfloat16:  # onnxruntime cannot load it to say what it would fuse
        return (*rules.ort_cpu(inferred), *bfloat16)
    return (*rules.ort_cpu(inferred), *rules.unfused_after(optimized_graph(model)))
