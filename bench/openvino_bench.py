"""OpenVINO: quantkit's INT8 models (defaults, --target openvino) beside NNCF's, all run in OpenVINO's CPU
runtime, on ../shared/assets.

    python -m bench.openvino_bench [--models squeezenet1.1,mobilenetv2,yolox_nano,vit_mnist]
                                   [--runs 200] [--warmup 20] [--threads 1,N] [--keep DIR]

For each model: (a) quantkit's defaults (`quantkit calibrate` on the calibration images, `quantkit
convert`) and the same table converted with `--target openvino`, (b) NNCF's defaults (`nncf.quantize` on
the ONNX model, its ONNX backend, fed the same preprocessed images; bench.nncf_peer), and for a model
below opset 13 also NNCF on the model upgraded to 13 (NNCF quantizes weights per tensor below 13; quantkit
upgrades on its way in). Images as in bench.models: the classifiers calibrate on the 100 coco-calib photos
and are scored on imagenet-dev, YOLOX calibrates on its seeded 50-photo half of coco-calib and is scored
on the other 50, the ViT on 100 seeded mnist-test digits and is scored on 1000 others. Then in OpenVINO
(CPU, latency hint, precision hint f32: quantkit.runtime_openvino) against FP32 there: accuracy by
`quantkit.compare(runtime="openvino")` itself (top-1 agreement and delta with labels, output SQNR, YOLOX's
detection recall and final boxes), latency at each thread count (all models in one interleaved loop,
medians, FP32's median over each model's), how many Conv/MatMul the CPU plugin runs int8 (and, for the
float ones, what the ONNX model gives them), and where each tool put its Q/DQ (bench.qdq_census). Writes
bench/results/openvino.md and openvino.json. Skips, saying why, without ../shared/assets, openvino or
nncf."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench import openvino_report
from bench.child import ChildResult, memory_total_bytes, run_child
from bench.models import ASSETS, MODELS, BenchModel, preprocess_spec
from bench.nncf_peer import versions as nncf_versions
from bench.qdq_census import census, float_reasons
from bench.run import calibration_folder, evaluation_paths
from quantkit.api import compare
from quantkit.cpu import cpu_info
from quantkit.graph.model_inputs import image_input
from quantkit.graph.model_io import opset_version
from quantkit.images import ImageLoader, resolve_preprocess
from quantkit.runtime import interleaved_latency, versions
from quantkit.runtime_openvino import OpenVinoSession, linear_nodes, settings, version

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = ("squeezenet1.1", "mobilenetv2", "yolox_nano", "vit_mnist")
CALIBRATION_IMAGES = 100  # YOLOX: its pool (bench.models)
SEED = 1  # bench.run's: the same calibration selections
MNIST_EVALUATION = 1000  # of the 4900 digits no calibration used


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...]
    threads: tuple[int, ...]
    runs: int
    warmup: int
    timeout: float
    memory_limit: int
    keep: str | None = None  # the folder the models are written to and left in


@dataclass
class Variant:
    """One model run in OpenVINO: FP32, or an INT8 model with how it was made and what it measures."""

    label: str
    tool: str  # "fp32", "quantkit" or "nncf"
    path: Path
    steps: dict[str, ChildResult] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return next((s.error for s in self.steps.values() if s.error), None)


def missing() -> str | None:
    """Why this bench cannot run here, or None."""
    if not (ASSETS / "models").is_dir():
        return f"real models and images not found at {ASSETS}"
    for package, install in (("openvino", "pip install 'openvino>=2024.0'"), ("nncf", "pip install nncf")):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed ({install} into the bench's environment)"
    return None


# quantkit's models: (label, bench.quantize variant, file tag); all converted from one calibration table
QUANTKIT_VARIANTS = (
    ("quantkit defaults", "defaults", "quantkit"),
    ("quantkit --target openvino", "target-openvino", "quantkit.openvino"),
)


def quantkit_variants(model: BenchModel, path: Path, work: Path, s: Settings) -> list[Variant]:
    """quantkit calibrate once, then convert with the defaults and with --target openvino, each step in a
    child process (bench.quantize); a failed calibration fails both."""
    table = work / f"{model.name}.calib.json"
    count = model.pool or CALIBRATION_IMAGES
    calib_job = {
        "kind": "quantkit-calibrate",
        "model": str(path),
        "images": str(calibration_folder(model, work)),
        "num_images": count,
        "seed": SEED,
        "preprocess": preprocess_spec(model.preprocess),
        "table": str(table),
    }
    calibrated = run_child(calib_job, s.memory_limit, s.timeout)
    variants = []
    for label, config, tag in QUANTKIT_VARIANTS:
        variant = Variant(label, "quantkit", work / f"{model.name}.{tag}.onnx")
        variant.steps["calibrate"] = calibrated
        if variant.error is None:
            job = {"kind": "quantkit-convert", "model": str(path), "table": str(table), "variant": config}
            variant.steps["convert"] = run_child(
                {**job, "output": str(variant.path)}, s.memory_limit, s.timeout
            )
        variants.append(variant)
    return variants


def nncf_variants(model: BenchModel, path: Path, work: Path, s: Settings) -> list[Variant]:
    """nncf.quantize with its defaults on the model as given; below opset 13 also on the model at 13."""
    opsets: list[int | None] = [None]
    if opset_version(onnx.load(str(path), load_external_data=False)) < 13:
        opsets.append(13)
    out = []
    for opset in opsets:
        suffix = f".opset{opset}" if opset else ""
        output = work / f"{model.name}.nncf{suffix}.onnx"
        job = {
            "model": str(path),
            "images": str(calibration_folder(model, work)),
            "num_images": model.pool or CALIBRATION_IMAGES,
            "seed": SEED,
            "preprocess": preprocess_spec(model.preprocess),
            "output": str(output),
            "opset": opset,
        }
        label = "NNCF defaults" + (f" (model upgraded to opset {opset})" if opset else "")
        variant = Variant(label, "nncf", output)
        variant.steps["nncf.quantize"] = run_child(job, s.memory_limit, s.timeout, module="bench.nncf_peer")
        out.append(variant)
    return out


def scored_paths(model: BenchModel) -> list[Path]:
    paths = evaluation_paths(model, (model.pool or CALIBRATION_IMAGES,))
    if model.evaluation == "mnist-test" and len(paths) > MNIST_EVALUATION:
        picked = np.random.default_rng(SEED).choice(len(paths), MNIST_EVALUATION, replace=False)
        return [paths[k] for k in sorted(picked)]
    return paths


def accuracy(model: BenchModel, fp32: Path, variant: Variant, paths: list[Path]) -> dict[str, Any]:
    """quantkit compare's own figures for the variant against FP32, both in OpenVINO."""
    labels = ASSETS / "labels" / model.labels if model.labels else None
    result = compare(
        fp32,
        variant.path,
        data=paths,
        labels=labels,
        preprocess=model.preprocess,
        runs=0,
        detector="yolox" if model.detector else None,
        runtime="openvino",
    )
    first = result.outputs[0]
    return {
        "images": result.num_images,
        "sqnr_db": first.sqnr_db,
        "top1_agreement": first.top1_agreement,
        "top1_fp32": result.reference_accuracy.top1 if result.reference_accuracy else None,
        "top1": result.candidate_accuracy.top1 if result.candidate_accuracy else None,
        "top1_delta_points": 100 * result.top1_delta if result.top1_delta is not None else None,
        "detection_recall": first.detection_recall,
        "detections_fp32": first.detections,
        "boxes_fp32": first.boxes,
        "boxes_found": first.boxes_found,
        "boxes_extra": first.boxes_extra,
    }


def latency(variants: list[Variant], sample: np.ndarray, threads: int, s: Settings) -> list[float]:
    """Median ms per variant at batch 1, all of them in one interleaved loop."""
    sessions = [OpenVinoSession(v.path, threads=threads) for v in variants]
    return [float(np.median(t)) for t in interleaved_latency(sessions, sample, s.warmup, s.runs)]


def layers(variant: Variant) -> dict[str, Any]:
    """The Conv/MatMul OpenVINO runs int8, the float ones with what the ONNX model gives them, and the
    runtime model's layers by (type, precision)."""
    proto = onnx.load(str(variant.path))
    session = OpenVinoSession(variant.path, threads=1)
    found = session.layers(linear_nodes(proto))
    kinds: dict[str, int] = {}
    for layer in session.runtime_layers():
        if layer.get("layerType") not in ("Const", "Input", "Output"):
            key = f"{layer.get('layerType')} {layer.get('runtimePrecision')}"
            kinds[key] = kinds.get(key, 0) + 1
    return {
        **found.to_dict(),
        "float_reasons": float_reasons(proto, list(found.float_layers)),
        "runtime_layers": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
    }


def bench_model(model: BenchModel, work: Path, s: Settings) -> dict[str, Any]:
    path = model.path(work)
    print(f"  {model.name}: quantizing (quantkit, NNCF)", file=sys.stderr, flush=True)
    variants = [Variant("FP32", "fp32", path), *quantkit_variants(model, path, work, s)]
    variants += nncf_variants(model, path, work, s)
    ready = [v for v in variants if v.error is None]
    paths = scored_paths(model)
    print(f"  {model.name}: accuracy in OpenVINO on {len(paths)} images", file=sys.stderr, flush=True)
    for v in ready[1:]:
        v.results.update(accuracy(model, path, v, paths))
    pre = resolve_preprocess(model.preprocess, image_input(onnx.load(str(path), load_external_data=False)))
    first = next(iter(ImageLoader(paths[:1], pre, 1))).data
    assert isinstance(first, np.ndarray)
    for threads in s.threads:
        print(f"  {model.name}: latency, {threads} thread(s)", file=sys.stderr, flush=True)
        medians = latency(ready, first, threads, s)
        for v, ms in zip(ready, medians, strict=True):
            v.results[f"latency_ms_{threads}t"] = ms
            v.results[f"speedup_{threads}t"] = medians[0] / ms
    for v in ready:
        v.results["layers"] = layers(v)
        v.results["placement"] = census(onnx.load(str(v.path))) if v.tool != "fp32" else None
    return {
        "model": model.name,
        "calibration_images": model.pool or CALIBRATION_IMAGES,
        "evaluation_images": len(paths),
        "variants": [
            {
                "label": v.label,
                "tool": v.tool,
                "error": v.error,
                "steps": {k: asdict(c) for k, c in v.steps.items()},
                **v.results,
            }
            for v in variants
        ],
    }


def parse(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="comma-separated")
    parser.add_argument("--runs", type=int, default=200, help="interleaved rounds per thread count")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per quantizer run")
    parser.add_argument("--keep", type=Path, help="write the models here (default: a temporary folder)")
    args = parser.parse_args(argv)
    names = tuple(m for m in args.models.split(",") if m)
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_MODELS)}")
    threads = tuple(dict.fromkeys(int(t) for t in args.threads.split(",") if t))
    keep = str(args.keep) if args.keep else None
    return Settings(names, threads, args.runs, args.warmup, args.timeout, memory_total_bytes() // 2, keep)


def main(argv: list[str] | None = None) -> int:
    reason = missing()
    if reason:
        print(f"bench.openvino_bench skipped: {reason}", file=sys.stderr)
        return 0
    s = parse(argv)
    command = "python -m bench.openvino_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    record: dict[str, Any] = {
        "command": command.strip(),
        "settings": asdict(s),
        "openvino": {**settings(), "version": version()},
        "environment": {**cpu_info(), "versions": {**versions(), "openvino": version(), **nncf_versions()}},
        "models": [],
    }
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="quantkit-ov-bench-") as folder:
        work = Path(s.keep) if s.keep else Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        for name in s.models:
            record["models"].append(bench_model(MODELS[name], work, s))
            # written after each model: a later model's failure keeps the earlier figures
            (RESULTS / "openvino.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
            (RESULTS / "openvino.md").write_text(openvino_report.markdown(record))
    print(f"wrote {RESULTS / 'openvino.md'} and openvino.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
