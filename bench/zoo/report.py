"""bench/results/zoo.md and zoo.json from the rows `python -m bench.zoo.run` collected."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.zoo.corpus import Manifest, ZooModel

STEP_ORDER = ("calibrate", "convert_int8", "convert_fp16")


def _number(value: object) -> float | None:
    """compare's JSON writes inf/nan as strings; both forms come back as float, others as None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def figures(data: dict[str, Any] | None, model: ZooModel) -> dict[str, Any]:
    """The few numbers the table shows, from one `compare --json` document."""
    if not data:
        return {}
    outputs = data.get("outputs", [])
    sqnr = {o["name"]: o.get("sqnr_db") for o in outputs}
    values = [_number(v) for v in sqnr.values()]
    worst = min((v for v in values if v is not None), default=None)
    if any(v is not None and math.isnan(v) for v in values):
        worst = math.nan
    chosen = [o for o in outputs if o["name"] == model.agreement_output] or [
        o for o in outputs if o.get("top1_agreement") is not None
    ]
    boxes = next((o for o in outputs if o.get("boxes") is not None), None)
    latency, size = data.get("latency", {}), data.get("size", {})
    ref, cand = latency.get("reference") or {}, latency.get("candidate") or {}
    return {
        "sqnr_db": worst if worst is None or math.isfinite(worst) else str(worst),
        "sqnr_db_per_output": sqnr,
        "top1_agreement": chosen[0].get("top1_agreement") if chosen else None,
        "agreement_output": chosen[0]["name"] if chosen else None,
        "boxes": None
        if boxes is None
        else {k: boxes.get(k) for k in ("boxes", "boxes_found", "boxes_extra")},
        "detection_recall": None if boxes is None else boxes.get("detection_recall"),
        "fp32_p50_ms": ref.get("p50_ms"),
        "p50_ms": cand.get("p50_ms"),
        "speedup": latency.get("speedup_p50"),
        "size_ratio": size.get("ratio"),
        "bytes": size.get("candidate_bytes"),
        "images": data.get("images"),
    }


def _db(value: object) -> str:
    number = _number(value)
    if number is None:
        return "-"
    return f"{number:.1f}" if math.isfinite(number) else str(number)


def _agree(f: dict[str, Any]) -> str:
    if f.get("boxes"):
        b = f["boxes"]
        return f"boxes {b['boxes_found']}/{b['boxes']} (+{b['boxes_extra']})"
    value = f.get("top1_agreement")
    return "-" if value is None else f"top-1 {100 * value:.1f}%"


def _x(value: object) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.2f}x"


def _rc(step: dict[str, Any] | None) -> str:
    if step is None:
        return "-"
    rc = step.get("rc")
    return "skip" if rc is None else str(rc)


def one_line(row: dict[str, Any]) -> str:
    if "fetch_error" in row:
        return f"fetch failed: {row['fetch_error']}"
    s = row["steps"]
    codes = " ".join(f"{name}={_rc(s.get(name))}" for name in STEP_ORDER)
    i8, f16 = row.get("int8_figures", {}), row.get("fp16_figures", {})
    ours, theirs, mark = _speedups(row, _ort_best(row)[0])
    int8 = f"int8 {_db(i8.get('sqnr_db'))} dB {_x(ours)}{mark} (ORT {_x(theirs)}{mark})"
    return f"{codes}; {int8}; fp16 {_db(f16.get('sqnr_db'))} dB"


def _ort_best(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    peer = row.get("onnxruntime", {})
    best = peer.get("best")
    if not best:
        codes = ",".join(f"{c}:{_rc(e.get('quantize'))}" for c, e in peer.get("configs", {}).items())
        return f"failed ({codes})" if codes else "-", {}
    return str(best), peer["configs"][best].get("figures", {})


def _speedups(row: dict[str, Any], ort_label: str) -> tuple[object, object, str]:
    """(quantkit's INT8 speedup, the best ORT config's, mark): side by side (bench.zoo.speed) when that
    step ran, else each compare's own with the mark '*'."""
    side = row.get("speed", {}).get("speedup", {})
    if "int8" in side:
        return side["int8"], side.get(f"ort_{ort_label}"), ""
    _, ort = _ort_best(row)
    return row.get("int8_figures", {}).get("speedup"), ort.get("speedup"), "*"


def _table(manifest_models: dict[str, ZooModel], rows: Sequence[dict[str, Any]]) -> list[str]:
    head = (
        "| model | family | task | opset | rc cal/int8/fp16 | INT8 SQNR dB | INT8 agreement | INT8 speedup | "
        "FP16 SQNR dB | FP16 agreement | ORT best | ORT SQNR dB | ORT agreement | ORT speedup | FP32 p50 ms |"
    )
    lines = [head, "|" + "---|" * 15]
    for row in rows:
        m = manifest_models[row["model"]]
        lead = f"| {m.name} | {m.family} | {m.task} | {m.opset} |"
        if "fetch_error" in row:
            lines.append(lead + " fetch failed |" + " - |" * 10)
            continue
        s = row["steps"]
        codes = "/".join(_rc(s.get(n)) for n in STEP_ORDER)
        i8, f16 = row.get("int8_figures", {}), row.get("fp16_figures", {})
        label, ort = _ort_best(row)
        ms = row.get("speed", {}).get("p50_ms", {}).get("fp32")
        ms = ms or i8.get("fp32_p50_ms") or ort.get("fp32_p50_ms")
        ours, theirs, mark = _speedups(row, label)
        lines.append(
            f"{lead} {codes} | {_db(i8.get('sqnr_db'))} | {_agree(i8)} | {_x(ours)}{mark} | "
            f"{_db(f16.get('sqnr_db'))} | {_agree(f16)} | {label} | {_db(ort.get('sqnr_db'))} | "
            f"{_agree(ort)} | "
            f"{_x(theirs)}{mark} | {'-' if ms is None else f'{ms:.2f}'} |"
        )
    return lines


def _failures(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each step that ran and failed, with its last line; then, per model, the steps not run."""
    lines = []
    for row in rows:
        if "fetch_error" in row:
            lines.append(f"- **{row['model']}** fetch: {row['fetch_error']}")
            continue
        named = [(n, row["steps"].get(n)) for n in STEP_ORDER]
        named += [(f"compare_{k}", row.get(f"compare_{k}")) for k in ("int8", "fp16")]
        for config, entry in row.get("onnxruntime", {}).get("configs", {}).items():
            named += [(f"onnxruntime {config}", entry.get("quantize"))]
            named += [(f"compare ort {config}", entry.get("compare"))]
        named += [("speed", row.get("speed", {}).get("step"))]
        not_run: dict[str, list[str]] = {}
        for name, step in named:
            if step is None or step.get("rc") == 0:
                continue
            text = str(step.get("last_line", "")).replace("|", "\\|")
            if step.get("rc") is None:
                not_run.setdefault(text.removeprefix("not run: "), []).append(name)
            else:
                lines.append(f"- **{row['model']}** {name} (rc {_rc(step)}): `{text}`")
        if not_run:
            parts = [f"{', '.join(names)} ({reason})" for reason, names in not_run.items()]
            lines.append(f"- **{row['model']}** not run: {'; '.join(parts)}")
    return lines or ["- none"]


def _kept(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if "fetch_error" in row:
            continue
        for label, name in (("INT8", "convert_int8"), ("FP16", "convert_fp16")):
            step = row["steps"].get(name) or {}
            kept = step.get("kept_float") or []
            if step.get("rc") == 0:
                text = "; ".join(f"{k['op']} x{k['count']}: {k['why']}" for k in kept) or "nothing"
                lines.append(f"- **{row['model']}** {label}: {text}")
    return lines or ["- no conversion succeeded"]


def write(
    results: Path,
    manifest: Manifest,
    chosen: Sequence[ZooModel],
    rows: Sequence[dict[str, Any]],
    settings: dict[str, Any],
    environment: dict[str, Any],
    elapsed_s: float,
) -> None:
    models = {m.name: m for m in manifest.models}
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
    document = {
        "schema": 1,
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "elapsed_s": round(elapsed_s, 1),
        "settings": settings,
        "environment": environment,
        "models": [
            {
                "manifest": {k: getattr(models[r["model"]], k) for k in ("family", "task", "opset", "size")},
                **r,
            }
            for r in rows
        ],
    }
    (results / "zoo.json").write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    md = [
        "# quantkit conformance corpus (`make zoo`)",
        "",
        f"{len(rows)} of {len(manifest.models)} models, {elapsed_s / 60:.1f} min on "
        f"{environment.get('cpus')} CPU(s), {time.strftime('%Y-%m-%d')}. Models: bench/zoo/manifest.json "
        "(origin, licence, sha256, preprocessing); every figure: zoo.json. Load average (1, 5, 15 min) "
        f"at the start {environment.get('load_average_start')}, at the end "
        f"{environment.get('load_average_end')}: a load above the CPU count means other work shared the "
        "machine, inflating times and latencies.",
        "",
        f"Calibration: {settings.get('calib_images')} images from the even positions of the model's "
        f"image folder; compare: {settings.get('eval_images')} held-out images (odd positions), "
        f"{settings.get('runs')} timed runs (FP16: 3), 1 thread, p50. Speedups (INT8 and ORT) and FP32 "
        "p50: FP32 and every INT8 model timed side by side in one process on one held-out image, 1 "
        "thread, up to 30 rounds of one run each in alternating order, the median of the per-round "
        "FP32/INT8 ratios (bench/zoo/speed.py); `*`: that step failed, the compare's own figure "
        "(FP32 and that model only, timed minutes apart from the other). SQNR: the worst output. "
        "Agreement: top-1 of the task output (2-D outputs only), or the final boxes of `--detector`. "
        "rc: exit codes of calibrate / convert int8 / convert fp16 (skip: not run). ORT: "
        "onnxruntime.quantization per-channel QDQ (u8 activations, s8 weights), the config with the "
        "best SQNR among those tried.",
        "",
        *_table(models, rows),
        "",
        "## Failures and refusals (last line of each failed step)",
        "",
        *_failures(rows),
        "",
        "## Kept float (from convert's summary)",
        "",
        *_kept(rows),
        "",
    ]
    (results / "zoo.md").write_text("\n".join(md), encoding="utf-8")
