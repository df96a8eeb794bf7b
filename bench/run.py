"""quantkit beside onnxruntime.quantization, measured in one run on ../shared/assets.

    python -m bench.run [--models squeezenet1.1,mobilenetv2] [--metric all|accuracy|latency|cost]
                        [--images 100,500] [--runs 50] [--threads 1,2]

For each model (the shared assets' classifiers and detector, and a seeded random ResNet-50 built here),
at each calibration-image count: quantkit with its defaults and with each range method, and
onnxruntime's quantize_static (QDQ) with its defaults and per-channel MinMax, Percentile and Entropy;
on the shared models, from the first count's table, quantkit's other number formats (bench.formats:
FP16, BF16, FP8, INT8 placed for TensorRT), measured beside them.
Every quantizer runs in its own child process (wall time, peak RSS, a memory limit), each command's
cost recorded apart (calibrate, convert, quantize_static, ...); beside calibrate, in the same run, its
floor (bench.floor: the same images decoded and preprocessed, one plain FP32 forward per batch), with
the calibrate / floor ratios of wall time and peak RSS. Then accuracy
against FP32 (top-1 delta and agreement, or detection recall; SQNR), latency against FP32 at each
thread count (interleaved runs, medians) and file size, beside two references: FP32 and a weights-only
INT8 model, and quantkit's all-integer model (every quantizable op integer), the kernel limit.
Writes bench/results/latest.md and latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench import formats, measure, report
from bench.child import ChildResult, memory_total_bytes, run_child
from bench.models import ASSETS, MODELS, RESNET, BenchModel, preprocess_spec
from bench.resnet import build as build_resnet
from quantkit.config import ImageSelection, Preprocess
from quantkit.cpu import cpu_info
from quantkit.graph.model_inputs import image_input
from quantkit.image_folders import find_images, select_images
from quantkit.images import ImageLoader, resolve_preprocess
from quantkit.pipeline import speed_memory
from quantkit.runtime import versions

RESULTS = Path(__file__).resolve().parent / "results"
# defaults is mse with every technique on; the next five turn one off each (bench.quantize)
QUANTKIT_VARIANTS = (
    "defaults",
    "range-cap-off",
    "rounding-nearest",
    "smoothquant-off",
    "bias-correction-off",
    "speed-plan-off",
    "minmax",
    "percentile",
    "entropy",
)
ORT_CONFIGS = ("defaults", "minmax", "percentile", "entropy")
SEED = 1


@dataclass(frozen=True)
class Settings:
    image_counts: tuple[int, ...]
    threads: tuple[int, ...]
    runs: int
    warmup: int
    metric: str
    memory_limit: int
    timeout: float


@dataclass
class Candidate:
    """One quantized model: who made it, how, at what cost, and (later) how it measures."""

    tool: str  # "quantkit" or "onnxruntime"
    config: str
    images: int
    path: Path
    cost: ChildResult
    results: dict[str, Any]
    steps: dict[str, ChildResult]  # each command's own cost: calibrate, convert, quantize_static, ...

    @property
    def ok(self) -> bool:
        return self.cost.error is None


def calibration_folder(model: BenchModel, work: Path) -> Path:
    """The folder the quantizers calibrate from: the assets folder, or a copy of the model's pool."""
    folder = ASSETS / "images" / model.calibration
    if model.pool is None:
        return folder
    pool = work / f"{model.name}-calibration"
    pool.mkdir(exist_ok=True)
    for path in select_images(ImageSelection(folder, model.pool, SEED)):
        shutil.copyfile(path, pool / path.name)
    return pool


def _quantkit(
    model: BenchModel, path: Path, count: int, work: Path, s: Settings, pre: Preprocess
) -> tuple[list[Candidate], dict[str, Any]]:
    """quantkit's candidates at this image count, and calibrate beside its floor."""
    table = work / f"{model.name}.{count}.calib.json"
    images = str(calibration_folder(model, work))
    for image in select_images(ImageSelection(Path(images), count, SEED)):
        image.read_bytes()  # in the page cache for calibrate and the floor alike
    calib = run_child(
        {
            "kind": "quantkit-calibrate",
            "model": str(path),
            "images": images,
            "num_images": count,
            "seed": SEED,
            "preprocess": preprocess_spec(model.preprocess),
            "table": str(table),
        },
        s.memory_limit,
        s.timeout,
    )
    floor_job = {
        "model": str(path),
        "images": images,
        "num_images": count,
        "seed": SEED,
        "preprocess": pre.to_dict(),
    }
    floor_cost = run_child(floor_job, s.memory_limit, s.timeout, module="bench.floor")
    beside = floor_row(count, calib, floor_cost)
    print(f"  {model.name}: {floor_line(beside)}", file=sys.stderr, flush=True)
    out = []
    # The range method changes only convert; at later image counts only the defaults are converted again
    # (another method's cost there is this calibration plus a convert like the first count's).
    variants = QUANTKIT_VARIANTS if count == s.image_counts[0] else QUANTKIT_VARIANTS[:1]
    for variant in variants:
        target = work / f"{model.name}.{count}.quantkit-{variant}.onnx"
        steps = {"calibrate": calib}
        if calib.error:
            cost = calib
        else:
            job = {"kind": "quantkit-convert", "model": str(path), "table": str(table)}
            convert = run_child({**job, "output": str(target), "variant": variant}, s.memory_limit, s.timeout)
            steps["convert"] = convert
            cost = ChildResult(
                calib.seconds + convert.seconds, max(calib.peak_mb, convert.peak_mb), convert.error
            )
        out.append(Candidate("quantkit", variant, count, target, cost, {}, steps))
    return out, beside


def floor_row(count: int, calib: ChildResult, floor_cost: ChildResult) -> dict[str, Any]:
    """calibrate beside its floor at one image count: both costs and the ratios (None if either failed)."""
    ok = calib.error is None and floor_cost.error is None
    return {
        "calibration_images": count,
        "calibrate": asdict(calib),
        "floor": asdict(floor_cost),
        "wall_ratio": calib.seconds / floor_cost.seconds if ok and floor_cost.seconds > 0 else None,
        "peak_ratio": calib.peak_mb / floor_cost.peak_mb if ok and floor_cost.peak_mb > 0 else None,
    }


def floor_line(row: dict[str, Any]) -> str:
    calib, low = row["calibrate"], row["floor"]
    text = (
        f"{row['calibration_images']} images: calibrate {calib['seconds']:.1f} s, {calib['peak_mb']:.0f} MB; "
        f"floor {low['seconds']:.1f} s, {low['peak_mb']:.0f} MB"
    )
    if row["wall_ratio"] is None:
        return text + f" (failed: {calib['error'] or low['error']})"
    return text + f": {row['wall_ratio']:.2f}x the time, {row['peak_ratio']:.2f}x the peak RSS"


def _onnxruntime(model: BenchModel, path: Path, count: int, work: Path, s: Settings) -> list[Candidate]:
    out = []
    for config in ORT_CONFIGS:
        target = work / f"{model.name}.{count}.ort-{config}.onnx"
        job = {
            "kind": "ort",
            "model": str(path),
            "images": str(calibration_folder(model, work)),
            "num_images": count,
            "seed": SEED,
            "preprocess": preprocess_spec(model.preprocess),
            "output": str(target),
            "config": config,
        }
        cost = run_child(job, s.memory_limit, s.timeout)
        out.append(Candidate("onnxruntime", config, count, target, cost, {}, {"quantize_static": cost}))
    return out


def _references(model: BenchModel, path: Path, work: Path, s: Settings) -> list[Candidate]:
    """Weights-only INT8 (float activations) and quantkit's all-integer model from the first table."""
    weights = work / f"{model.name}.weights-only.onnx"
    cost = run_child(
        {"kind": "weights-only", "model": str(path), "output": str(weights)}, s.memory_limit, s.timeout
    )
    table = work / f"{model.name}.{s.image_counts[0]}.calib.json"
    integer = work / f"{model.name}.all-integer.onnx"
    job = {"kind": "quantkit-convert", "model": str(path), "table": str(table), "variant": "all-integer"}
    integer_cost = run_child({**job, "output": str(integer)}, s.memory_limit, s.timeout)
    return [
        Candidate("reference", "weights-only INT8", 0, weights, cost, {}, {"weights-only": cost}),
        Candidate("reference", "all-integer INT8", 0, integer, integer_cost, {}, {"convert": integer_cost}),
    ]


def _formats(model: BenchModel, path: Path, work: Path, s: Settings) -> list[Candidate]:
    """FP16, BF16, FP8 and INT8 for TensorRT (bench.formats) from the first image count's table."""
    table = work / f"{model.name}.{s.image_counts[0]}.calib.json"
    made = formats.convert(path, table, work, s.memory_limit, s.timeout)
    return [
        Candidate(formats.TOOL, v, s.image_counts[0], p, c, formats.notes(v), {"convert": c})
        for v, p, c in made
    ]


def evaluation_paths(model: BenchModel, counts: tuple[int, ...]) -> list[Path]:
    """The evaluation folder's images minus every image any calibration run used (by file name)."""
    assert model.evaluation is not None
    folder = ASSETS / "images" / model.calibration
    if model.pool is not None:
        used = {p.name for p in select_images(ImageSelection(folder, model.pool, SEED))}
    else:
        used = {p.name for n in counts for p in select_images(ImageSelection(folder, n, SEED))}
    return [p for p in find_images(ASSETS / "images" / model.evaluation) if p.name not in used]


def bench_model(model: BenchModel, work: Path, s: Settings) -> dict[str, Any]:
    path = model.path(work)
    if model.name == RESNET:
        onnx.save(build_resnet(), str(path))
    pre = resolve_preprocess(model.preprocess, image_input(onnx.load(str(path), load_external_data=False)))
    candidates: list[Candidate] = []
    floors = []
    for count in s.image_counts:
        print(f"  {model.name}: quantizing with {count} calibration images", file=sys.stderr, flush=True)
        made, beside = _quantkit(model, path, count, work, s, pre)
        candidates += made
        floors.append(beside)
        candidates += _onnxruntime(model, path, count, work, s)
    references = _references(model, path, work, s)
    # the number formats on the shared models only (the random ResNet has no accuracy to show)
    formatted = _formats(model, path, work, s) if model.evaluation is not None else []
    ready = [c for c in candidates + references + formatted if c.ok]
    evaluated = 0
    if s.metric in ("all", "accuracy") and model.evaluation is not None:
        print(f"  {model.name}: accuracy of {len(ready)} models", file=sys.stderr, flush=True)
        paths = evaluation_paths(model, s.image_counts)
        labels = ASSETS / "labels" / model.labels if model.labels else None
        folder = ASSETS / "images" / model.evaluation
        run = [formats.runnable(c.config, c.path) if c.tool == formats.TOOL else c.path for c in ready]
        rows = measure.accuracy(path, run, paths, pre, folder, labels)
        for c, row in zip(ready, rows, strict=True):
            c.results.update(row)
        evaluated = len(paths)
    fp32_ms: dict[str, float] = {}
    if s.metric in ("all", "latency"):
        sample = next(iter(ImageLoader(find_images(ASSETS / "images" / model.calibration), pre, 1))).data
        assert isinstance(sample, np.ndarray)  # images: one input
        timed = [c for c in ready if c.tool != formats.TOOL or formats.timed(c.config)]
        for threads in s.threads:
            print(f"  {model.name}: latency at {threads} thread(s)", file=sys.stderr, flush=True)
            medians = measure.latency([path] + [c.path for c in timed], sample, threads, s.warmup, s.runs)
            fp32_ms[str(threads)] = medians[0]
            for c, ms in zip(timed, medians[1:], strict=True):
                c.results[f"latency_ms_{threads}t"] = ms
                c.results[f"speedup_{threads}t"] = medians[0] / ms
    size = path.stat().st_size
    for c in ready:
        c.results["size_ratio"] = size / c.path.stat().st_size
    return {
        "model": model.name,
        "show_accuracy": model.evaluation is not None,
        "detector": model.detector,
        "evaluation_images": evaluated,
        "fp32_latency_ms": fp32_ms,
        "fp32_bytes": size,
        "floor": floors,
        "candidates": [_row(c) for c in candidates],
        "references": [_row(c) for c in references],
        "formats": [_row(c) for c in formatted],
    }


def _row(c: Candidate) -> dict[str, Any]:
    return {
        "tool": c.tool,
        "config": c.config,
        "calibration_images": c.images,
        **asdict(c.cost),
        "commands": {name: asdict(cost) for name, cost in c.steps.items()},
        **c.results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS)
    )
    parser.add_argument("--metric", choices=("all", "accuracy", "latency", "cost"), default="all")
    parser.add_argument("--images", default="100,500", help="calibration-image counts, comma-separated")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model and thread count")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--memory-limit-gb", type=float, default=None, help="default: half the RAM")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per quantizer run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (ASSETS / "models").is_dir():
        print(f"skipped: {ASSETS} not found (the bench needs ../shared/assets beside the checkout)")
        return
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    limit = args.memory_limit_gb * 2**30 if args.memory_limit_gb else 0.5 * memory_total_bytes()
    settings = Settings(
        image_counts=tuple(int(n) for n in args.images.split(",")),
        threads=tuple(int(n) for n in args.threads.split(",")),
        runs=args.runs,
        warmup=args.warmup,
        metric=args.metric,
        memory_limit=int(limit),
        timeout=args.timeout,
    )
    started = time.perf_counter()
    env = {**cpu_info(), "versions": versions()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="quantkit-bench-") as tmp:
        # every run times its own speed-aware plans (a decision kept by an earlier run would hide its cost)
        os.environ[speed_memory.ENV] = str(Path(tmp) / "speed")
        for name in names:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            rows.append(bench_model(MODELS[name], Path(tmp), settings))
            text = _write(args.output, env, settings, rows, time.perf_counter() - started)
    print(text)


def _write(folder: Path, env: dict[str, Any], s: Settings, rows: list[dict[str, Any]], wall: float) -> str:
    """Both result files, rewritten after every model so that a stopped run keeps what it measured."""
    result = {
        "environment": env,
        "settings": {**asdict(s), "seed": SEED, "wall_seconds": wall},
        "rows": rows,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.json").write_text(json.dumps(result, indent=1) + "\n")
    text = report.markdown(result)
    (folder / "latest.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
