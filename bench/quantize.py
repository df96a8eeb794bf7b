"""The bench's child process: one quantizer, one model, one set of calibration images.

    python -m bench.quantize '{"kind": "ort", "config": "entropy", ...}'

Kinds: `quantkit-calibrate`, `quantkit-convert` (variants: a range method, `defaults`, `all-integer`,
`target-T` for --target T, or a number format of bench.formats: `fp16`, `bf16`, `fp8`, `tensorrt`), `ort`
(configs in bench.ort_peer.CONFIGS) and `weights-only`. bench.child runs this module and measures it from
outside; a failure exits non-zero with its reason as the last line of stderr. A written model must pass
onnx.checker and load in onnxruntime (a bfloat16 model: its float32 emulation), or it counts as a failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bench.child import PEAK_PREFIX, own_peak_mb
from bench.float_formats import bf16_emulation
from quantkit import pipeline
from quantkit.config import (
    CalibMethod,
    CalibrateConfig,
    ConvertConfig,
    Float16Config,
    ImageSelection,
    Precision,
    Prefer,
    PreprocessOptions,
    Preset,
    ResizeMode,
    Rounding,
    Target,
)
from quantkit.graph import model_io
from quantkit.qmath.params import per_channel_weight
from quantkit.runtime import Session

WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}  # output-channel axis; Gemm and MatMul below


def preprocess_from(spec: dict[str, Any]) -> PreprocessOptions:
    return PreprocessOptions(
        preset=Preset(spec.get("preset", "imagenet")),
        mean=tuple(spec["mean"]) if spec.get("mean") else None,
        std=tuple(spec["std"]) if spec.get("std") else None,
        bgr=bool(spec.get("bgr", False)),
        resize=ResizeMode(spec.get("resize", "crop")),
    )


# The defaults with one technique turned off: each row against `defaults` is what that technique does.
TECHNIQUE_OFF = {
    "range-cap-off": ConvertConfig(range_cap=False),
    "rounding-nearest": ConvertConfig(rounding=Rounding.nearest),
    "smoothquant-off": ConvertConfig(smoothquant="off"),
    "bias-correction-off": ConvertConfig(bias_correction=False),
    "speed-plan-off": ConvertConfig(prefer=Prefer.accuracy),  # no op kept float by this CPU's profile
}
# Number formats beside INT8 (bench.formats): convert --to fp8, INT8 --target tensorrt, --to fp16 | bf16
FORMAT_CONVERT = {"fp8": ConvertConfig(fp8=True), "tensorrt": ConvertConfig(target=Target.tensorrt)}
FLOAT_FORMATS = {"fp16": Precision.fp16, "bf16": Precision.bf16}


def convert_config(variant: str) -> ConvertConfig:
    """quantkit's settings for a bench variant: its defaults, the defaults with one technique off, one
    range method, the all-integer reference (every quantizable op integer: no float fallback, no
    float Concat, no rebalancing), or FP8 / INT8 placed for TensorRT (`fp8`, `tensorrt`)."""
    if variant == "defaults":
        return ConvertConfig()
    if variant in TECHNIQUE_OFF:
        return TECHNIQUE_OFF[variant]
    if variant.startswith("target-"):  # the defaults placed for another runtime: target-openvino
        return ConvertConfig(target=Target(variant.removeprefix("target-")))
    if variant in FORMAT_CONVERT:
        return FORMAT_CONVERT[variant]
    if variant == "all-integer":
        return ConvertConfig(
            method=CalibMethod.minmax,
            min_sqnr=0.0,
            concat_range_ratio=1e30,
            smoothquant="off",
            prefer=Prefer.accuracy,  # no op kept float for speed either
        )
    return ConvertConfig(method=CalibMethod(variant))


def weights_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """Int8 per-channel weights behind DequantizeLinear, activations float: the size of INT8 with the
    float kernels' speed. model: at opset >= 13 (per-axis DequantizeLinear)."""
    inits = {init.name: init for init in model.graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    done: dict[str, str] = {}
    for node in model.graph.node:
        axis = _weight_axis(node)
        if axis is None or len(node.input) < 2 or node.input[1] not in inits:
            continue
        name = node.input[1]
        if name not in done:
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            q, scale = per_channel_weight(w, axis)
            inits[name].CopyFrom(numpy_helper.from_array(q, name + "_q"))
            extra = [
                numpy_helper.from_array(scale.astype(np.float32), name + "_scale"),
                numpy_helper.from_array(np.zeros_like(q, shape=scale.shape), name + "_zp"),
            ]
            model.graph.initializer.extend(extra)
            done[name] = name + "_dq"
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [name + "_q", name + "_scale", name + "_zp"],
                    [done[name]],
                    name=name + "_weights_only_dq",
                    axis=axis,
                )
            )
        node.input[1] = done[name]
    nodes = new_nodes + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _weight_axis(node: onnx.NodeProto) -> int | None:
    if node.op_type in WEIGHT_AXIS:
        return WEIGHT_AXIS[node.op_type]
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return 1  # a 2-D constant right operand [K, N]: per output column
    return None


def check_written(path: Path, emulated: bool = False) -> None:
    """The written model passes onnx.checker and loads in onnxruntime, or this raises. emulated: a
    bfloat16 model, which onnxruntime's CPU provider cannot run: its float32 emulation must load."""
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise RuntimeError(f"writes a model that fails onnx.checker: {_first_line(exc)}") from exc
    try:
        Session.of(bf16_emulation(onnx.load(str(path)))) if emulated else Session(path)
    except Exception as exc:  # onnxruntime raises its own types from C++
        raise RuntimeError(f"writes a model that onnxruntime cannot load: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:240] if lines else type(exc).__name__


def main(job: dict[str, Any]) -> None:
    kind = job["kind"]
    if kind == "quantkit-calibrate":
        selection = ImageSelection(Path(job["images"]), job["num_images"], job.get("seed", 0))
        pipeline.calibrate(
            Path(job["model"]),
            Path(job["table"]),
            CalibrateConfig(selection, preprocess_from(job["preprocess"])),
        )
        return
    output = Path(job["output"])
    if kind == "quantkit-convert" and job["variant"] in FLOAT_FORMATS:
        to = FLOAT_FORMATS[job["variant"]]
        pipeline.convert_float16(Path(job["model"]), Path(job["table"]), output, Float16Config(to=to))
    elif kind == "quantkit-convert":
        pipeline.convert(Path(job["model"]), Path(job["table"]), output, convert_config(job["variant"]))
    elif kind == "ort":
        from bench.ort_peer import quantize_with_ort  # imports onnxruntime.quantization: only here

        quantize_with_ort(
            Path(job["model"]),
            Path(job["images"]),
            output,
            job["num_images"],
            preprocess_from(job["preprocess"]),
            job["config"],
            seed=job.get("seed", 0),
        )
    elif kind == "weights-only":
        model = model_io.ensure_opset(model_io.load_model(Path(job["model"])))
        onnx.save(weights_only(model), str(output))
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    check_written(output, emulated=job.get("variant") == "bf16")


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]))
    except Exception as exc:  # the parent reads the last stderr line as this run's result
        print(f"{type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        print(f"{PEAK_PREFIX}{own_peak_mb():.1f}", flush=True)
