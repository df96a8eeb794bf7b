"""`make zoo`: every corpus model through quantkit's CLI and beside onnxruntime's quantizer.

    python -m bench.zoo.run [--models a,b] [--calib-images 32] [--eval-images 40] [--runs 20]
                            [--ort-configs minmax,percentile] [--budget-min 27] [--work DIR]

For each model (fetched and verified first, bench/zoo/fetch.py): `quantkit calibrate` on the
calibration half of its image folder, `convert --to int8`, `convert --to fp16` without a table, and
`compare` of each against FP32 on the held-out half; then onnxruntime.quantization's per-channel QDQ
(each config in --ort-configs, in its own process) measured by the same `compare`, the best output
SQNR kept; then FP32 and every INT8 model timed side by side in one loop (bench/zoo/speed.py), the
table's speedups. Every step's exit code and last line are recorded, failures included. Writes
bench/results/zoo.md and zoo.json. Work files go to bench/work/zoo/ (git-ignored), never beside the
cached models. Skips, saying why, when ../shared/assets is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.zoo import report, steps
from bench.zoo.corpus import ManifestError, ZooModel, cache_dir, load
from bench.zoo.fetch import FetchError, fetch_all
from bench.zoo.steps import Step, run_step, skipped
from quantkit.cpu import cpu_info
from quantkit.pipeline import speed_memory
from quantkit.runtime import versions

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "bench" / "results"
QUANTKIT = Path(sys.executable).parent / "quantkit"
MIN_STEP_S = 30.0
SPEED_ROUNDS, SPEED_SECONDS = 30, 10.0  # side-by-side timing: rounds at most, seconds at least 5 rounds


@dataclass
class Clock:
    """The run's deadline shared fairly: each model gets what is left over the models left, so a
    slow model's steps time out (recorded) instead of leaving later models unrun."""

    deadline: float
    models_left: int
    model_deadline: float = 0.0

    def start_model(self) -> float:
        share = max(0.0, self.deadline - time.monotonic()) / max(self.models_left, 1)
        self.models_left -= 1
        self.model_deadline = time.monotonic() + share
        return share

    def timeout(self, cap: float) -> float:
        """Seconds the next step may take: its model's share left (at least MIN_STEP_S), never past
        the run's deadline; 0 when the run's time is spent."""
        now = time.monotonic()
        run_left = self.deadline - now
        if run_left < 5:
            return 0.0
        return min(cap, run_left, max(MIN_STEP_S, self.model_deadline - now))

    def share_left(self) -> float:
        return self.model_deadline - time.monotonic()


@dataclass(frozen=True)
class Settings:
    calib_images: int
    eval_images: int
    runs: int
    warmup: int
    ort_configs: tuple[str, ...]
    step_timeout: float
    work: Path
    clock: Clock


def split_images(folder: Path, work: Path) -> tuple[Path, Path]:
    """Hard links (copies across file systems) of the even- and odd-position images of `folder`
    (sorted): a calibration half and a held-out half that share no image."""
    calib, held = work / "images" / folder.name / "calib", work / "images" / folder.name / "eval"
    if calib.is_dir() and held.is_dir():
        return calib, held
    for target in (calib, held):
        target.mkdir(parents=True, exist_ok=True)
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    )
    for index, path in enumerate(files):
        target = (calib if index % 2 == 0 else held) / path.name
        if target.exists():
            continue
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return calib, held


def _step(name: str, argv: list[str], log: Path, settings: Settings) -> Step:
    timeout = settings.clock.timeout(settings.step_timeout)
    if timeout <= 0:
        return skipped(name, "the run's time budget is spent")
    return run_step(name, argv, log, timeout)


def _compare(
    name: str,
    model: ZooModel,
    fp32: Path,
    candidate: Path,
    eval_dir: Path,
    out: Path,
    settings: Settings,
    runs: int,
) -> tuple[Step, dict[str, Any] | None]:
    argv = [str(QUANTKIT), "compare", str(fp32), str(candidate), "--images", str(eval_dir)]
    argv += ["--num-images", str(settings.eval_images), "--runs", str(runs), "--warmup", str(settings.warmup)]
    argv += ["--threads", "1", "--json", str(out), *model.preprocess, *model.compare]
    step = _step(name, argv, out.with_suffix(".log"), settings)
    figures = json.loads(out.read_text()) if step.ok and out.is_file() else None
    return step, figures


def _peer(
    model: ZooModel, fp32: Path, calib: Path, eval_dir: Path, work: Path, settings: Settings
) -> dict[str, Any]:
    """onnxruntime's configs, each quantized and compared; the one with the best worst-output SQNR."""
    tried: dict[str, Any] = {}
    best: tuple[float, str] | None = None
    for index, config in enumerate(settings.ort_configs):
        if index and settings.clock.share_left() <= 0:
            tried[config] = {
                "quantize": skipped(f"ort_{config}", "this model's time share is spent").to_dict()
            }
            continue
        out = work / f"ort_{config}.onnx"
        argv = [
            sys.executable,
            "-m",
            "bench.zoo.peer",
            str(fp32),
            "--images",
            str(calib),
            "--output",
            str(out),
        ]
        argv += ["--num-images", str(settings.calib_images), "--config", config, "--", *model.preprocess]
        quantize = _step(f"ort_{config}", argv, work / f"ort_{config}.log", settings)
        entry: dict[str, Any] = {"quantize": quantize.to_dict()}
        if quantize.ok and out.is_file():
            step, figures = _compare(
                f"compare_ort_{config}",
                model,
                fp32,
                out,
                eval_dir,
                work / f"compare_ort_{config}.json",
                settings,
                settings.runs,
            )
            entry["compare"] = step.to_dict()
            entry["figures"] = report.figures(figures, model)
            sqnr = entry["figures"].get("sqnr_db") if figures else None
            if isinstance(sqnr, (int, float)) and (best is None or sqnr > best[0]):
                best = (float(sqnr), config)
        tried[config] = entry
    return {"configs": tried, "best": best[1] if best else None}


def _speed(
    model: ZooModel, fp32: Path, work: Path, eval_dir: Path, settings: Settings, row: dict[str, Any]
) -> dict[str, Any]:
    """FP32, quantkit's INT8 and each of onnxruntime's models timed in one loop (bench.zoo.speed):
    {"step", "speedup": {label: x}, "p50_ms": {label: ms}}; empty figures when a step failed."""
    labels, paths = ["fp32"], [fp32]
    if row["steps"]["convert_int8"]["rc"] == 0 and (work / "int8.onnx").is_file():
        labels.append("int8")
        paths.append(work / "int8.onnx")
    for config in row["onnxruntime"]["configs"]:
        if (work / f"ort_{config}.onnx").is_file():
            labels.append(f"ort_{config}")
            paths.append(work / f"ort_{config}.onnx")
    if len(paths) < 2:
        return {"step": skipped("speed", "no INT8 model").to_dict()}
    out = work / "speed.json"
    argv = [sys.executable, "-m", "bench.zoo.speed", *map(str, paths), "--images", str(eval_dir)]
    argv += ["--json", str(out), "--runs", str(SPEED_ROUNDS), "--seconds", str(SPEED_SECONDS)]
    step = _step("speed", [*argv, "--", *model.preprocess], work / "speed.log", settings)
    step.extra.pop("stdout", None)
    result: dict[str, Any] = {"step": step.to_dict(), "speedup": {}, "p50_ms": {}}
    if step.ok and out.is_file():
        data = json.loads(out.read_text())
        result["rounds"] = data["rounds"]
        result["p50_ms"] = dict(zip(labels, data["p50_ms"], strict=True))
        result["speedup"] = dict(zip(labels[1:], data["speedup"], strict=True))
    return result


def _size_flag(model: ZooModel) -> list[str]:
    """--input-size for `convert --to fp16` when the model's preprocessing names one (dynamic H/W:
    the size of its synthetic smoke-test inputs); never --calibration."""
    flags = list(model.preprocess)
    if "--input-size" in flags:
        index = flags.index("--input-size")
        return flags[index : index + 2]
    return []


def run_model(model: ZooModel, fp32: Path, settings: Settings) -> dict[str, Any]:
    """Every step for one model; failures recorded, never raised."""
    work = settings.work / model.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    calib, eval_dir = split_images(ASSETS / "images" / model.images, settings.work)
    qk, pre = str(QUANTKIT), list(model.preprocess)
    table, int8, fp16 = work / "calib.json", work / "int8.onnx", work / "fp16.onnx"
    started = time.perf_counter()
    count = str(settings.calib_images)
    cal_argv = [qk, "calibrate", str(fp32), "--images", str(calib), "--num-images", count, "-o", str(table)]
    cal = _step("calibrate", [*cal_argv, *pre], work / "calibrate.log", settings)
    if cal.ok:
        to_int8 = _step(
            "convert_int8",
            [qk, "convert", str(fp32), "--to", "int8", "-c", str(table), "-o", str(int8)],
            work / "convert_int8.log",
            settings,
        )
    else:
        to_int8 = skipped("convert_int8", "no calibration table")
    fp16_argv = [qk, "convert", str(fp32), "--to", "fp16", "-o", str(fp16), *_size_flag(model)]
    to_fp16 = _step("convert_fp16", fp16_argv, work / "convert_fp16.log", settings)
    out: dict[str, Any] = {"model": model.name}
    for step, reader in ((to_int8, steps.kept_float_int8), (to_fp16, steps.kept_float_fp16)):
        stdout = str(step.extra.pop("stdout", ""))
        step.extra["kept_float"] = reader(stdout) if step.ok else []
        step.extra["notes"] = steps.notes(stdout) if step.ok else []
    cal.extra.pop("stdout", None)
    for label, step, candidate, runs in (
        ("int8", to_int8, int8, settings.runs),
        ("fp16", to_fp16, fp16, 3),
    ):
        if step.ok and candidate.is_file():
            compared, figures = _compare(
                f"compare_{label}",
                model,
                fp32,
                candidate,
                eval_dir,
                work / f"compare_{label}.json",
                settings,
                runs,
            )
        else:
            compared, figures = skipped(f"compare_{label}", f"no {label} model"), None
        compared.extra.pop("stdout", None)
        out[f"compare_{label}"] = compared.to_dict()
        out[f"{label}_figures"] = report.figures(figures, model)
    out["steps"] = {s.name: s.to_dict() for s in (cal, to_int8, to_fp16)}
    out["onnxruntime"] = _peer(model, fp32, calib, eval_dir, work, settings)
    for entry in out["onnxruntime"]["configs"].values():
        for key in ("quantize", "compare"):
            if key in entry:
                entry[key].pop("stdout", None)
    out["speed"] = _speed(model, fp32, work, eval_dir, settings, out)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    parser.add_argument("--calib-images", type=int, default=24)
    parser.add_argument("--eval-images", type=int, default=24)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model in compare (FP16: 3)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ort-configs", default="minmax,percentile")
    parser.add_argument(
        "--budget-min", type=float, default=30.0, help="no step starts after this many minutes"
    )
    parser.add_argument("--step-timeout", type=float, default=420.0, help="seconds per command at most")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "zoo")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (ASSETS / "images").is_dir():
        print(f"zoo: skipped: {ASSETS} is absent (the shared real images are needed)")
        return 0
    if not QUANTKIT.is_file():
        print(f"zoo: {QUANTKIT} not found; run `make install` first", file=sys.stderr)
        return 2
    start = time.monotonic()
    load_at_start = os.getloadavg()
    try:
        manifest = load()
        chosen = sorted(manifest.select(args.models), key=lambda m: m.size)  # spare time rolls to the big
        fetched = fetch_all(manifest, args.models, cache_dir())
    except ManifestError as exc:
        print(f"zoo: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        calib_images=args.calib_images,
        eval_images=args.eval_images,
        runs=args.runs,
        warmup=args.warmup,
        ort_configs=tuple(c for c in args.ort_configs.split(",") if c),
        step_timeout=args.step_timeout,
        work=args.work.resolve(),
        clock=Clock(deadline=start + 60 * args.budget_min, models_left=len(chosen)),
    )
    rows = []
    # every run times its own speed-aware plans (a decision kept by an earlier run would hide its cost)
    shutil.rmtree(settings.work / "speed", ignore_errors=True)
    os.environ[speed_memory.ENV] = str(settings.work / "speed")
    for model in chosen:
        got = fetched[model.name]
        if isinstance(got, FetchError):
            rows.append({"model": model.name, "fetch_error": str(got)})
            continue
        share = settings.clock.start_model()
        print(f"zoo: {model.name} ({share:.0f} s share) ...", flush=True)
        row = run_model(model, got, settings)
        print(f"zoo: {model.name}: {report.one_line(row)} ({row['seconds']:.0f} s)", flush=True)
        rows.append(row)
    elapsed = time.monotonic() - start
    env = {
        "versions": versions(),
        "cpu": cpu_info(),
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_at_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    args.results.mkdir(parents=True, exist_ok=True)
    report.write(args.results, manifest, chosen, rows, vars(args) | {"work": str(args.work)}, env, elapsed)
    print(f"zoo: {len(rows)} model(s) in {elapsed / 60:.1f} min -> {args.results / 'zoo.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
