"""End to end on the real models and photos in ../shared/assets (skipped, with the reason, when absent).

Small image counts keep CI fast; the full acceptance figures come from the commands in the README.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantkit import pipeline
from quantkit.config import (
    CalibrateConfig,
    CompareConfig,
    ConvertConfig,
    ImageSelection,
    LatencyConfig,
    Prefer,
    PreprocessOptions,
    Preset,
    ResizeMode,
)
from quantkit.graph.query import topological_order
from quantkit.graph.smoothquant_rewrite import apply_rebalances
from quantkit.pipeline.loading import load_for_int8
from quantkit.planner import plan
from quantkit.planner.moving import CARRIED_OUT
from quantkit.runtime import Session
from tests.conftest import ASSETS, requires_assets
from tests.helpers import run

pytestmark = [requires_assets(), pytest.mark.assets]
MODELS, IMAGES, LABELS = ASSETS / "models", ASSETS / "images", ASSETS / "labels"
FAST = LatencyConfig(threads=1, warmup=1, runs=3)


def shrink(tmp: Path, model: str, images: Path, count: int, pre: PreprocessOptions) -> Path:
    table, out = tmp / f"{model}.json", tmp / f"{model}.int8.onnx"
    pipeline.calibrate(MODELS / f"{model}.onnx", table, CalibrateConfig(ImageSelection(images, count), pre))
    pipeline.convert(MODELS / f"{model}.onnx", table, out, ConvertConfig())
    return out


@pytest.mark.parametrize("model, min_agreement", [("squeezenet1.1", 0.85), ("mobilenetv2", 0.88)])
def test_classifiers_keep_their_predictions(model: str, min_agreement: float, tmp_path: Path) -> None:
    out = shrink(tmp_path, model, IMAGES / "coco-calib", 32, PreprocessOptions())
    result = pipeline.compare(
        MODELS / f"{model}.onnx",
        out,
        CompareConfig(
            ImageSelection(IMAGES / "imagenet-dev", 120, seed=3), labels=LABELS / "synset.txt", latency=FAST
        ),
        given=False,
    )
    metrics = result.outputs[0]
    assert metrics.top1_agreement is not None and metrics.top1_agreement >= min_agreement
    assert result.top1_delta is not None and result.top1_delta > -0.04
    assert result.size_ratio > 3.5


def test_detector_converts_from_opset_11_keeps_its_head_and_weakest_layers_float(tmp_path: Path) -> None:
    pre = PreprocessOptions(preset=Preset.raw, bgr=True, resize=ResizeMode.letterbox)
    table, out = tmp_path / "yolox.json", tmp_path / "yolox.int8.onnx"
    pipeline.calibrate(
        MODELS / "yolox_nano.onnx", table, CalibrateConfig(ImageSelection(IMAGES / "coco-calib", 8), pre)
    )
    # the plan's rules, not this machine's timing (the speed-aware plan keeps ops float by it)
    summary = pipeline.convert(MODELS / "yolox_nano.onnx", table, out, ConvertConfig(prefer=Prefer.accuracy))
    assert (summary.opset_before, summary.opset_after) == (11, 13)
    # its head's Concat (box and score logits) stays float: it is carried into the output (range_plan)
    head = [r for (op, r), n in summary.float_by_reason.items() if op == "Concat" and r == CARRIED_OUT]
    assert head, summary.float_by_reason
    assert summary.quantized_by_type["Conv"] >= 95 and summary.quantized_by_type["Sigmoid"] >= 95
    # its objectness and class layers, whose logits become the scores of its output, stay float
    scores = [
        n for (op, r), n in summary.float_by_reason.items() if op == "Conv" and "becomes a probability" in r
    ]
    assert scores == [6], summary.float_by_reason
    # the default --min-sqnr 12 rescues this model (8.6 dB fully quantized) with a few float layers
    assert summary.fallback_start_db is not None and summary.fallback_start_db < 12.0
    assert 1 <= len(summary.fallback) <= 8 and summary.fallback[-1].sqnr_db >= 12.0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_vision_transformer_keeps_its_accuracy(tmp_path: Path) -> None:
    pre = PreprocessOptions(mean=(33.33,), std=(78.57,), resize=ResizeMode.squash)
    out = shrink(tmp_path, "vit_mnist", IMAGES / "mnist-test", 100, pre)
    result = pipeline.compare(
        MODELS / "vit_mnist.onnx",
        out,
        CompareConfig(
            ImageSelection(IMAGES / "mnist-test", 400, seed=1),
            labels=LABELS / "mnist_classes.txt",
            latency=FAST,
        ),
        given=False,
    )
    assert result.top1_delta is not None and abs(result.top1_delta) <= 0.01
    assert result.outputs[0].top1_agreement is not None and result.outputs[0].top1_agreement >= 0.98


def test_compare_reads_another_tools_int8_model(tmp_path: Path) -> None:
    result = pipeline.compare(
        MODELS / "mobilenetv2.onnx",
        MODELS / "mobilenetv2_int8_by_another_tool.onnx",
        CompareConfig(
            ImageSelection(IMAGES / "imagenet-dev", 40), labels=LABELS / "synset.txt", latency=FAST
        ),
        given=False,
    )
    assert result.reference_accuracy is not None and result.reference_accuracy.count == 40
    assert result.outputs[0].sqnr_db < 30  # a real, lossy INT8 model: the comparison sees its error


PREPROCESS = {
    "squeezenet1.1": ("coco-calib", PreprocessOptions()),
    "mobilenetv2": ("coco-calib", PreprocessOptions()),
    "yolox_nano": ("coco-calib", PreprocessOptions(preset=Preset.raw, bgr=True, resize=ResizeMode.letterbox)),
    "vit_mnist": ("mnist-test", PreprocessOptions(mean=(33.33,), std=(78.57,), resize=ResizeMode.squash)),
}


@pytest.mark.parametrize("model", sorted(PREPROCESS))
def test_rebalanced_float_graph_matches_the_original(model: str, tmp_path: Path) -> None:
    """Every rebalancing candidate of the model at once (alpha 0.5: folds into Conv, Gemm, MatMul,
    LayerNorm, through ReLU and ReLU6, and float Muls elsewhere) leaves the FP32 outputs unchanged."""
    folder, pre = PREPROCESS[model]
    table_path = tmp_path / "table.json"
    pipeline.calibrate(
        MODELS / f"{model}.onnx", table_path, CalibrateConfig(ImageSelection(IMAGES / folder, 8), pre)
    )
    _, table, prepared = load_for_int8(MODELS / f"{model}.onnx", table_path)
    inferred = prepared.model
    decided = plan(inferred, table, ConvertConfig(smoothquant="0.5"))
    assert decided.rebalances
    rebalanced = onnx.ModelProto()
    rebalanced.CopyFrom(inferred)
    apply_rebalances(rebalanced, decided.rebalances)
    available = [i.name for i in rebalanced.graph.input] + [t.name for t in rebalanced.graph.initializer]
    ordered = topological_order(rebalanced.graph.node, available)
    del rebalanced.graph.node[:]
    rebalanced.graph.node.extend(ordered)
    assert table.samples is not None
    before, after = Session.of(inferred), Session.of(rebalanced)
    for a, b in zip(before.run_samples(table.samples), after.run_samples(table.samples), strict=True):
        for name in a:
            assert np.max(np.abs(a[name] - b[name])) / np.max(np.abs(a[name])) < 1e-4, name


@pytest.mark.parametrize("model", ["mobilenetv2", "yolox_nano"])
def test_shrink_on_real_models(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 0 with passing gates (three reports, the step summary appended), 1 with a failing one (the
    second run reuses the cached table), 2 on an error."""
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    args = [
        "shrink",
        str(MODELS / f"{model}.onnx"),
        "--images",
        str(IMAGES / "coco-calib"),
        "--num-images",
        "16",
    ]
    args += ["--cache-dir", str(tmp_path / "cache"), "--runs", "5", "--warmup", "1"]
    if model == "yolox_nano":
        args += ["--preset", "raw", "--bgr", "--resize", "letterbox", "--detector", "yolox"]
        args += ["--eval-images", str(IMAGES / "coco-calib"), "--eval-num-images", "8", "--seed", "1"]
    else:
        args += ["--eval-images", str(IMAGES / "imagenet-dev"), "--eval-num-images", "24"]
        args += ["--labels", str(LABELS / "synset.txt")]
    code, _, err = run(
        [*args, "--output-dir", str(tmp_path / "a"), "--max-drop", "50", "--max-size-ratio", "0.5"], capsys
    )
    assert code == 0, err
    assert all((tmp_path / "a" / name).exists() for name in ("report.json", "report.md", "junit.xml"))
    assert summary.read_text().startswith("### quantkit shrink: PASS")
    if model == "yolox_nano":
        return  # exit codes 1 and 2 and the cache are shown on MobileNetV2 (YOLOX converts for 40 s)
    code, _, _ = run([*args, "--output-dir", str(tmp_path / "b"), "--min-speedup", "100"], capsys)
    assert code == 1
    second = json.loads((tmp_path / "b" / "report.json").read_text())
    assert second["calibration"]["cache_hit"] is True and second["passed"] is False
    code, _, err = run(
        [*args, "--output-dir", str(tmp_path / "a"), "--labels", str(tmp_path / "none.txt")], capsys
    )
    assert code == 2 and "Traceback" not in err
