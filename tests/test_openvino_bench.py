"""bench.openvino_bench's parts that need neither OpenVINO nor NNCF: the Q/DQ census, the report, the
skip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import pytest

from bench import openvino_bench, openvino_report
from bench.qdq_census import census, float_reasons
from tests.conftest import tiny_cnn
from tests.helpers import run


def test_census_counts_quantkit_placement_on_a_tiny_cnn(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_cnn(tmp_path / "cnn.onnx")
    table, int8 = tmp_path / "t.json", tmp_path / "int8.onnx"
    assert run(["calibrate", str(model), "--images", str(image_dir), "-o", str(table), "-q"], capsys)[0] == 0
    assert run(["convert", str(model), "-c", str(table), "-o", str(int8), "-q"], capsys)[0] == 0
    found = census(onnx.load(str(int8)))
    assert found["weight_reads"]["Conv weight"] == 2 and found["weight_reads"]["Conv bias"] == 2
    assert found["activation_reads"]["Conv"] == 2
    assert "int8 zero point 0 per-channel" in found["weight_formats"]
    assert found["q"] == sum(found["activation_formats"].values())
    conv = next(n.name for n in onnx.load(str(int8)).graph.node if n.op_type == "Conv")
    assert float_reasons(onnx.load(str(int8)), [conv]) == {conv: "Conv: input int8, weight int8"}
    assert float_reasons(onnx.load(str(model)), ["c1"]) == {
        "c1": "Conv: input float (from initializer or graph input), weight float"
    }


def _variant(label: str, tool: str, **figures: object) -> dict[str, object]:
    return {"label": label, "tool": tool, "error": None, "steps": {}, **figures}


def test_report_shows_every_variant_its_speedup_and_placement() -> None:
    placement = {
        "q": 3,
        "dq": 5,
        "activation_reads": {"Conv": 2},
        "quantized_outputs": {"Relu": 2},
        "activation_formats": {"uint8 zero point 0 per-tensor": 3},
        "weight_reads": {"Conv weight": 2},
        "weight_formats": {"int8 zero point 0 per-channel": 2},
        "float_ops": {},
    }
    layers = {
        "linear": 2,
        "int8": 1,
        "float": ["c2"],
        "float_held_by": {"c2": "Convolution f32"},
        "float_reasons": {"c2": "Conv: input float"},
    }
    record = {
        "command": "python -m bench.openvino_bench --models m",
        "settings": {"threads": [1, 2], "runs": 10, "warmup": 1},
        "openvino": {"device": "CPU", "performance_hint": "LATENCY", "precision_hint": "f32"},
        "environment": {"cpu": "x", "flags": ["avx2"], "vnni": False, "versions": {"openvino": "1"}},
        "models": [
            {
                "model": "m",
                "calibration_images": 100,
                "evaluation_images": 500,
                "variants": [
                    _variant(
                        "FP32", "fp32", latency_ms_1t=2.0, speedup_1t=1.0, latency_ms_2t=1.0, speedup_2t=1.0
                    ),
                    _variant(
                        "NNCF defaults",
                        "nncf",
                        latency_ms_1t=1.0,
                        speedup_1t=2.0,
                        latency_ms_2t=0.5,
                        speedup_2t=2.0,
                        sqnr_db=30.0,
                        top1_agreement=0.9,
                        top1=0.5,
                        top1_delta_points=-1.0,
                        layers=layers,
                        placement=placement,
                    ),
                    {**_variant("quantkit defaults", "quantkit"), "error": "stopped at the time limit"},
                ],
            }
        ],
    }
    text = openvino_report.markdown(record)
    assert "| m | NNCF defaults | top-1 agreement 90.0%, top-1 50.0% (-1.0 points) | 30.00 dB |" in text
    assert "1.00 (2.00x) | 0.50 (2.00x) | 1 / 2 |" in text
    assert "| m | quantkit defaults | failed: stopped at the time limit |" in text
    assert (
        "`c2` (runs in Convolution f32; ONNX Conv: input float)" in text
        and "| quantized outputs of | Relu 2 |" in text
    )


def test_the_bench_skips_with_the_reason_when_openvino_or_nncf_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(openvino_bench, "ASSETS", tmp_path)
    assert openvino_bench.missing() == f"real models and images not found at {tmp_path}"
    (tmp_path / "models").mkdir()
    real = importlib.util.find_spec
    for absent, install in (("openvino", "pip install 'openvino>=2024.0'"), ("nncf", "pip install nncf")):
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, a=absent: None if name == a else real(name)
        )
        if absent == "nncf" and real("openvino") is None:
            continue  # without openvino the first check already answers
        assert (
            openvino_bench.missing() == f"{absent} is not installed ({install} into the bench's environment)"
        )
    assert openvino_bench.main(["--models", "squeezenet1.1"]) == 0
    assert "bench.openvino_bench skipped: " in capsys.readouterr().err
