"""The bench harness's own parts, on tiny models: no assets needed, nothing timed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from bench import floor, report
from bench.child import ChildResult, run_child
from bench.models import MODELS
from bench.quantize import convert_config, weights_only
from bench.resnet import build as build_resnet
from bench.run import calibration_folder, evaluation_paths, floor_line, floor_row
from quantkit.config import CalibMethod, Preprocess
from quantkit.runtime import Session
from tests.conftest import conv_params, make_model, requires_assets, tiny_cnn


def _two_convs() -> onnx.ModelProto:
    a, b = conv_params(8, 3, seed=1), conv_params(4, 8, seed=2)
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "wb", "bb"], ["y"], pads=[1, 1, 1, 1]),
    ]
    return make_model(nodes, {"wa": a["w"], "ba": a["b"], "wb": b["w"], "bb": b["b"]})


def test_weights_only_stores_int8_weights_and_keeps_the_function() -> None:
    model = _two_convs()
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    expected = Session.of(model).run(x)["y"]
    quantized = weights_only(model)
    onnx.checker.check_model(quantized)
    int8 = {i.name: list(i.dims) for i in quantized.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert int8["wa_q"] == [8, 3, 3, 3] and int8["wb_q"] == [4, 8, 3, 3]
    assert {i.name for i in quantized.graph.initializer} >= {"wa_scale", "wb_scale"}
    assert not {"wa", "wb"} & {i.name for i in quantized.graph.initializer}  # no float copy left
    assert sum(n.op_type == "DequantizeLinear" for n in quantized.graph.node) == 2
    got = Session.of(quantized).run(x)["y"]
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert 0 < error < 0.02  # int8 rounding, not a copy of the float weights


def test_all_integer_reference_turns_every_float_keeper_off() -> None:
    config = convert_config("all-integer")
    assert config.min_sqnr == 0.0 and config.smoothquant == "off" and config.prefer.value == "accuracy"
    assert config.concat_range_ratio > 1e6
    assert convert_config("entropy").method is CalibMethod.entropy
    assert convert_config("defaults").method is CalibMethod.mse
    # each technique row differs from the defaults in that one setting only
    defaults = convert_config("defaults").to_dict()
    for variant, key, off in (
        ("range-cap-off", "range_cap", False),
        ("rounding-nearest", "rounding", "nearest"),
        ("smoothquant-off", "smoothquant", "off"),
        ("bias-correction-off", "bias_correction", False),
        ("speed-plan-off", "prefer", "accuracy"),
    ):
        assert convert_config(variant).to_dict() == {**defaults, key: off}


def test_resnet50_shape() -> None:
    model = build_resnet()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 53  # 1 stem + 16 blocks x 3 + 4 projection shortcuts
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    assert 25.4e6 < params < 25.7e6  # torchvision's resnet50 has 25.56 M
    assert build_resnet().SerializeToString() == model.SerializeToString()  # seeded: same bytes


def test_child_reports_its_error_line_and_its_own_peak(tmp_path: Path) -> None:
    ballast = np.ones(400 * 2**20, np.uint8)  # the parent holds 400 MB more than the child ever does
    result = run_child({"kind": "no-such-kind", "output": str(tmp_path / "o.onnx")}, 2**34, 60)
    assert result.error is not None and "unknown job kind 'no-such-kind'" in result.error
    assert 10 < result.peak_mb < 350, result.peak_mb  # the child's VmHWM, not the parent's peak
    del ballast


@requires_assets()
def test_detector_calibration_pool_and_evaluation_images_are_disjoint(tmp_path: Path) -> None:
    model = MODELS["yolox_nano"]
    pool = {p.name for p in calibration_folder(model, tmp_path).iterdir()}
    evaluation = {p.name for p in evaluation_paths(model, (100, 500))}
    assert len(pool) == 50 and len(evaluation) == 50 and not pool & evaluation
    classifier = evaluation_paths(MODELS["vit_mnist"], (100, 500))
    assert 4400 <= len(classifier) < 4900  # mnist-test minus both seeded calibration subsets


def test_child_stopped_at_the_memory_limit(tmp_path: Path) -> None:
    job = {"kind": "quantkit-calibrate", "model": "x", "images": "x", "num_images": 1, "table": "t"}
    result = run_child(job, 1, 60)  # one byte: any process is over it at the first poll
    assert result.error is not None and result.error.startswith("stopped at the 0 GiB memory limit")


def _row(tool: str, config: str, images: int, sqnr: float, seconds: float, error: str | None = None) -> dict:
    return {
        "tool": tool,
        "config": config,
        "calibration_images": images,
        "seconds": seconds,
        "peak_mb": 100.0,
        "error": error,
        "sqnr_db": sqnr,
        "top1_agreement": 0.9,
        "top1_delta_points": -0.2,
        "speedup_1t": 2.0,
        "size_ratio": 3.7,
    }


def test_markdown_marks_the_best_and_lists_failures() -> None:
    result = {
        "environment": {
            "cpu": "cpu",
            "flags": ["avx2"],
            "versions": {"onnxruntime": "1", "onnx": "1", "quantkit": "0"},
        },
        "settings": {"threads": [1], "image_counts": [100, 500], "runs": 5, "wall_seconds": 60.0},
        "rows": [
            {
                "model": "m",
                "show_accuracy": True,
                "detector": False,
                "fp32_latency_ms": {"1": 7.0},
                "candidates": [
                    _row("quantkit", "defaults", 100, 33.0, 4.0),
                    _row("quantkit", "defaults", 500, 34.0, 9.0),
                    _row("onnxruntime", "entropy", 100, 30.0, 3.0),
                    _row("onnxruntime", "entropy", 500, 0.0, 80.0, error="stopped at the 8 GiB memory limit"),
                ],
                "references": [],
            }
        ],
    }
    text = report.markdown(json.loads(json.dumps(result)))
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "**33.0 dB** / 34.0 dB" in lines["| quantkit defaults (mse)"]
    assert "30.0 dB / failed" in lines["| onnxruntime entropy (per-channel)"]
    assert "**3** / failed" in lines["| onnxruntime entropy (per-channel)"]
    assert "onnxruntime entropy (per-channel), 500 images: stopped at the 8 GiB memory limit" in text
    assert "FP32 7.0 ms (1T)" in text
    head = [line for line in text.splitlines() if line.startswith("| m | ")]
    assert head[0].endswith("| 33.0 dB | 2.00x | 9 s, 100 MB |")  # cost at the last image count
    assert head[1].endswith("| 30.0 dB | 2.00x | stopped at the 8 GiB memory limit |")


@pytest.mark.parametrize("metric", ["sqnr_db", "seconds"])
def test_best_ignores_failed_runs(metric: str) -> None:
    rows = [_row("quantkit", "a", 100, 10.0, 5.0), _row("onnxruntime", "b", 100, 50.0, 1.0, error="boom")]
    model = {
        "model": "m",
        "show_accuracy": True,
        "detector": False,
        "candidates": rows,
        "references": [],
        "fp32_latency_ms": {},
    }
    table = "\n".join(report.model_table(model, [1]))
    assert "**10.0 dB**" in table if metric == "sqnr_db" else "**5**" in table


def test_a_quantizer_that_failed_at_every_count_gets_one_failed_cell() -> None:
    rows = [
        _row("quantkit", "a", 100, 10.0, 5.0),
        _row("onnxruntime", "b", 100, 0.0, 1.0, error="stopped at the 12 GiB memory limit"),
        _row("onnxruntime", "b", 500, 0.0, 1.0, error="stopped at the 12 GiB memory limit"),
    ]
    model = {"model": "m", "show_accuracy": True, "detector": False, "candidates": rows, "references": []}
    table = report.model_table({**model, "fp32_latency_ms": {}}, [1])
    failed = next(line for line in table if line.startswith("| onnxruntime b"))
    assert failed.count("failed") == 1 and failed.count(" - ") == 6  # 7 columns


def test_detector_rows_show_final_boxes_beside_anchor_recall() -> None:
    boxes = {"detection_recall": 0.913, "boxes_fp32": 206, "boxes_found": 190, "boxes_extra": 7}
    rows = [{**_row("quantkit", "defaults", 100, 14.4, 55.0), **boxes}]
    model = {"model": "d", "show_accuracy": True, "detector": True, "candidates": rows, "references": []}
    table = [
        line for line in report.model_table({**model, "fp32_latency_ms": {}}, [1]) if line.startswith("|")
    ]
    assert table[0].startswith("| quantizer | recall @0.3 | final boxes |")
    assert "| **91.3%** | **92.2%** |" in table[2]  # 190 of 206 final boxes (a lone row is the best)
    head = report._headline_cells(model, rows[0], rows[0], 1)
    assert head[0] == "recall 91.3%, final boxes 190/206 (+7)"


def test_floor_decodes_and_runs_every_selected_image_in_its_own_process(
    tmp_path: Path, image_dir: Path
) -> None:
    model = tiny_cnn(tmp_path / "cnn.onnx")
    spec = Preprocess(height=16, width=16).to_dict()
    assert Preprocess.from_dict(json.loads(json.dumps(spec))) == Preprocess(height=16, width=16)
    job = {"model": str(model), "images": str(image_dir), "num_images": 20, "seed": 1, "preprocess": spec}
    assert floor.run(job) == {"images": 20, "batches": 3}  # batches of 8: 8 + 8 + 4
    cost = run_child(job, 2**34, 120, module="bench.floor")
    assert cost.error is None and 10 < cost.peak_mb < 1000 and cost.seconds > 0
    failed = run_child({**job, "model": str(tmp_path / "missing.onnx")}, 2**34, 120, module="bench.floor")
    assert failed.error is not None and "missing.onnx" in failed.error


def test_floor_ratios_and_the_tables_that_show_them() -> None:
    beside = floor_row(100, ChildResult(6.0, 600.0), ChildResult(2.0, 200.0))
    assert beside["wall_ratio"] == 3.0 and beside["peak_ratio"] == 3.0
    assert floor_line(beside).endswith("3.00x the time, 3.00x the peak RSS")
    assert floor_row(100, ChildResult(6.0, 600.0, "boom"), ChildResult(2.0, 200.0))["wall_ratio"] is None
    calib, convert = {"seconds": 6.0, "peak_mb": 600.0, "error": None}, {"seconds": 3.0, "peak_mb": 450.0}
    rows = [
        {**_row("quantkit", v, 100, 30.0, 9.0), "commands": {"calibrate": calib, "convert": convert}}
        for v in ("defaults", "minmax")
    ]
    ort = {"seconds": 1.0, "peak_mb": 3000.0, "error": "stopped at the 8 GiB memory limit after 1 s"}
    rows.append(
        {**_row("onnxruntime", "entropy", 100, 0.0, 1.0, ort["error"]), "commands": {"quantize_static": ort}}
    )
    weights = {**_row("reference", "weights-only INT8", 0, 30.0, 1.0), "commands": {"weights-only": convert}}
    model = {"model": "m", "candidates": rows, "references": [weights], "floor": [beside]}
    table = report.command_table(model)
    assert table[2] == "| floor (decode + FP32 forward) | 100 | 2.0 | 200 |"
    assert sum("quantkit calibrate" in line for line in table) == 1  # once per image count
    assert "| quantkit convert (minmax) | 100 | 3.0 | 450 |" in table
    assert "| onnxruntime quantize_static (entropy) | 100 | failed: stopped at the 8 GiB" in "\n".join(table)
    assert "| weights-only INT8 | - | 3.0 | 450 |" in table
    head = report.floor_table({"rows": [model]})
    assert "| m | 100 | 6 s, 600 MB | 2 s, 200 MB | 3.00x | 3.00x |" in head
    assert report.floor_table({"rows": [{**model, "floor": []}]}) == []  # results from before the floor


def test_headline_of_a_cost_only_run_says_accuracy_was_not_measured() -> None:
    row = {"tool": "quantkit", "config": "defaults", "seconds": 9.0, "peak_mb": 100.0, "error": None}
    model = {"show_accuracy": True, "detector": False}
    assert report._headline_cells(model, row, row, 1) == ["(not measured)", "-", "-", "9 s, 100 MB"]
