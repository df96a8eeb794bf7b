"""The bench's number-format rows (bench.formats): which quantkit settings make them, what onnxruntime runs
for each, and the report's section; on tiny models, nothing timed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bench import formats, report
from bench.float_formats import bf16_emulation, write_bf16_emulation
from bench.quantize import check_written, convert_config
from quantkit.config import ActivationType, Target
from quantkit.errors import ModelError
from quantkit.qmath.bfloat16 import round_to_bfloat16
from quantkit.runtime import Session

BF16 = TensorProto.BFLOAT16
SHAPE = ["N", 3, 4, 4]


def _bf16_scale() -> tuple[onnx.ModelProto, np.ndarray]:
    """x * w in bfloat16 between two Casts: a graph onnxruntime's CPU provider has no kernel for."""
    w = round_to_bfloat16(np.array([0.3, -1.7, 2.1], np.float32).reshape(1, 3, 1, 1))
    nodes = [
        helper.make_node("Cast", ["x"], ["b"], to=BF16),
        helper.make_node("Mul", ["b", "w"], ["m"]),
        helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "bf16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor("w", BF16, w.shape, w.flatten().tolist())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)]), w


def test_the_bf16_emulation_rounds_where_the_model_stores_bfloat16(tmp_path: Path) -> None:
    model, w = _bf16_scale()
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    with pytest.raises(ModelError, match="Mul"):
        Session.of(model)  # the reason the bench measures the emulation
    got = Session.of(bf16_emulation(model)).run(x)["y"]
    assert np.array_equal(got, round_to_bfloat16(round_to_bfloat16(x) * w))
    path = tmp_path / "m.bf16.onnx"
    onnx.save(model, str(path))
    assert formats.runnable("bf16", path) == tmp_path / "m.bf16.emulated.onnx"
    assert np.array_equal(Session(tmp_path / "m.bf16.emulated.onnx").run(x)["y"], got)
    assert formats.runnable("fp8", path) == path  # onnxruntime runs every other format's file itself
    check_written(path, emulated=True)
    with pytest.raises(RuntimeError, match="cannot load"):
        check_written(path)
    assert write_bf16_emulation(path) == tmp_path / "m.bf16.emulated.onnx"
    float_only = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "f",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        )
    )
    assert bf16_emulation(float_only) is float_only  # nothing stored in bfloat16: nothing to emulate


def test_format_variants_are_quantkits_own_settings() -> None:
    fp8 = convert_config("fp8")
    assert fp8.fp8 and fp8.target is Target.tensorrt and fp8.smoothquant == "off"
    trt = convert_config("tensorrt")
    assert not trt.fp8 and trt.target is Target.tensorrt and trt.activations is ActivationType.int8
    # everything else is the defaults': the row measures the placement, not another technique
    changed = {k for k, v in trt.to_dict().items() if convert_config("defaults").to_dict()[k] != v}
    assert changed == {"target", "activations"}


def test_only_formats_that_run_in_onnxruntimes_kernels_are_timed() -> None:
    assert [v for v in formats.FORMATS if formats.timed(v)] == ["fp16", "tensorrt"]
    assert (
        formats.notes("bf16")["latency_note"] == "emulated, no latency: onnxruntime CPU has no bf16 kernels"
    )
    assert "no float8 kernels" in formats.notes("fp8")["latency_note"]
    assert "latency_note" not in formats.notes("tensorrt")
    assert "TensorRT" in formats.notes("tensorrt")["runs_as"]


def _format_row(variant: str, sqnr: float, speedup: float | None, error: str | None = None) -> dict[str, Any]:
    cost = {"seconds": 3.0, "peak_mb": 200.0, "error": error}
    row: dict[str, Any] = {
        "tool": formats.TOOL,
        "config": variant,
        "calibration_images": 100,
        **cost,
        "commands": {"convert": cost},
        **formats.notes(variant),
    }
    if error is None:
        row.update(sqnr_db=sqnr, top1_delta_points=-0.2, top1_agreement=0.97, size_ratio=2.0)
        if formats.timed(variant) and speedup is not None:
            row["speedup_1t"] = speedup
    return row


def _result(rows: list[dict[str, Any]]) -> dict[str, Any]:
    int8 = {**_format_row("tensorrt", 31.0, 1.3), "tool": "quantkit", "config": "defaults", "size_ratio": 4.0}
    model = {
        "model": "m",
        "show_accuracy": True,
        "detector": False,
        "fp32_latency_ms": {"1": 5.0},
        "fp32_bytes": 4_000_000,
        "candidates": [int8],
        "references": [],
        "formats": rows,
    }
    return {
        "environment": {
            "cpu": "c",
            "flags": [],
            "versions": {"onnxruntime": "1", "onnx": "1", "quantkit": "0"},
        },
        "settings": {"threads": [1], "image_counts": [100], "runs": 5, "wall_seconds": 60.0},
        "rows": [model],
    }


def test_the_report_shows_the_formats_in_their_own_section() -> None:
    rows = [
        _format_row("fp16", 70.0, 0.9),
        _format_row("bf16", 40.0, None),
        _format_row("fp8", 28.0, None),
        _format_row("tensorrt", 0.0, None, error="RuntimeError: boom"),
    ]
    text = report.markdown(json.loads(json.dumps(_result(rows))))
    section = text.split("## Number formats: FP16, BF16, FP8, INT8 for TensorRT", 1)[1]
    lines = {line.split(" | ")[1]: line for line in section.splitlines() if line.startswith("| m | ")}
    assert lines["INT8, quantkit defaults"].endswith(
        "| 31.0 dB | 1.30x | 1.00 MB (4.00x smaller) | 3 s, 200 MB |"
    )
    assert (
        "| -0.2 pt top-1, 97.0% agree | 70.0 dB | 0.90x | 2.00 MB (2.00x smaller) |"
        in lines["FP16 (`--to fp16`)"]
    )
    bf16 = lines["BF16 (`--to bf16`)"]
    assert (
        "| float32 emulation" in bf16
        and "| emulated, no latency: onnxruntime CPU has no bf16 kernels |" in bf16
    )
    assert "not timed: onnxruntime CPU has no float8 kernels" in lines["FP8 E4M3FN (`--to fp8`)"]
    assert "| failed: boom | - | - | - | 3 s, 200 MB |" in lines["INT8 `--target tensorrt`"]
    assert "| quantkit convert (fp8) | 100 | 3.0 | 200 |" in text  # each convert's cost in the model's table
    before = _result([])
    assert report.formats_table(before) == []  # results from before the formats rows
