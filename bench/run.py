"""quantkit beside onnxruntime.quantization, measured in one run on ../shared/assets.

    python -m bench.run [--models squeezenet1.1,mobilenetv2] [--runs 100]

For each model: quantkit with its defaults, and onnxruntime's quantize_static (QDQ, per-channel MinMax,
uint8 activations, pre-processed as its documentation advises) on the same calibration tensors; then
accuracy against FP32, output SQNR, latency at 1 thread (interleaved, medians) and size. Writes
bench/results/latest.md and latest.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.ort_peer import quantize_with_ort
from quantkit import pipeline, report
from quantkit.config import (
    CalibrateConfig,
    CompareConfig,
    ConvertConfig,
    ImageSelection,
    LatencyConfig,
    PreprocessOptions,
    Preset,
    ResizeMode,
)
from quantkit.runtime import cpu_info, versions

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
RESULTS = Path(__file__).resolve().parent / "results"

# model -> (calibration folder, evaluation folder, labels or None, preprocessing, detector)
MODELS: dict[str, tuple[str, str, str | None, PreprocessOptions, bool]] = {
    "squeezenet1.1": ("coco-calib", "imagenet-dev", "synset.txt", PreprocessOptions(), False),
    "mobilenetv2": ("coco-calib", "imagenet-dev", "synset.txt", PreprocessOptions(), False),
    "yolox_nano": (
        "coco-calib",
        "coco-calib",
        None,
        PreprocessOptions(preset=Preset.raw, bgr=True, resize=ResizeMode.letterbox),
        True,
    ),
    "vit_mnist": (
        "mnist-test",
        "mnist-test",
        "mnist_classes.txt",
        PreprocessOptions(mean=(33.33,), std=(78.57,), resize=ResizeMode.squash),
        False,
    ),
}
CALIBRATION_IMAGES = {"yolox_nano": 60, "vit_mnist": 200}


def _compare(model: Path, candidate: Path, spec: tuple[Any, ...], runs: int) -> dict[str, Any]:
    _, folder, labels, pre, detector = spec
    config = CompareConfig(
        images=ImageSelection(ASSETS / "images" / folder),
        preprocess=pre,
        labels=ASSETS / "labels" / labels if labels else None,
        latency=LatencyConfig(threads=1, warmup=10, runs=runs),
        detection_threshold=0.3 if detector else None,
    )
    return report.comparison_dict(pipeline.compare(model, candidate, config, explicit_preprocess=True))


def bench_model(name: str, work: Path, runs: int, convert: ConvertConfig) -> dict[str, Any]:
    spec = MODELS[name]
    calib, _, _, pre, _ = spec
    model = ASSETS / "models" / f"{name}.onnx"
    count = CALIBRATION_IMAGES.get(name, 100)
    table = work / f"{name}.calib.json"
    started = time.perf_counter()
    pipeline.calibrate(
        model, table, CalibrateConfig(ImageSelection(ASSETS / "images" / calib, count, seed=1), pre)
    )
    ours = work / f"{name}.quantkit.onnx"
    summary = pipeline.convert(model, table, ours, convert)
    quantkit_seconds = time.perf_counter() - started
    row: dict[str, Any] = {"model": name, "calibration_images": count, "quantkit_seconds": quantkit_seconds}
    row["quantkit"] = _compare(model, ours, spec, runs)
    row["quantkit_float_ops"] = sum(summary.float_by_reason.values())
    peer = work / f"{name}.ort.onnx"
    started = time.perf_counter()
    try:
        quantize_with_ort(
            model, ASSETS / "images" / calib, peer, count, pre, per_channel=True, method="minmax"
        )
        row["ort_seconds"] = time.perf_counter() - started
        row["ort"] = _compare(model, peer, spec, runs)
    except Exception as exc:  # the peer's failure is a result, not a crash of the benchmark
        row["ort"] = {"error": " ".join(str(exc).replace(str(work) + "/", "").split())[:300]}
        traceback.print_exc(file=sys.stderr)
    return row


def _cell(result: dict[str, Any], key: str) -> str:
    out = result["outputs"][0]
    acc = result["accuracy"]
    if key == "accuracy":
        if acc["top1_delta_points"] is not None:
            return f"{acc['top1_delta_points']:+.1f} pt top-1"
        recall = out.get("detection_recall")
        return f"recall {100 * recall:.1f}%" if recall is not None else "-"
    if key == "agreement":
        return f"{100 * out['top1_agreement']:.1f}%" if out["top1_agreement"] is not None else "-"
    if key == "sqnr":
        return f"{out['sqnr_db']:.2f} dB" if isinstance(out["sqnr_db"], float) else str(out["sqnr_db"])
    if key == "speed":
        return f"{result['latency']['speedup_p50']:.2f}x"
    return f"{result['size']['ratio']:.2f}x"


def markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    lines = [
        f"CPU: {env['cpu']} ({', '.join(env['flags'])}); onnxruntime {env['versions']['onnxruntime']}; "
        "1 thread, batch 1, latency medians of interleaved runs.",
        "",
        "| model | tool | accuracy vs FP32 | top-1 agreement | output SQNR | speedup | smaller |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for tool in ("quantkit", "ort"):
            result = row[tool]
            label = "quantkit (defaults)" if tool == "quantkit" else "onnxruntime per-channel MinMax"
            if "error" in result:
                cells = [f"writes a model that fails: {result['error'][:90]}", "-", "-", "-", "-"]
            else:
                cells = [_cell(result, k) for k in ("accuracy", "agreement", "sqnr", "speed", "size")]
            lines.append(f"| {row['model']} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    if not (ASSETS / "models").is_dir():
        print(f"skipped: {ASSETS} not found (the benchmarks need ../shared/assets beside the checkout)")
        return
    env = {**cpu_info(), "versions": versions()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            rows.append(bench_model(name, Path(tmp), args.runs, ConvertConfig()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")
    text = markdown(rows, env)
    (RESULTS / "latest.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
