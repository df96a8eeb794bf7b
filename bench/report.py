"""bench/results/latest.md from the bench's JSON: a headline table, calibrate beside its floor, then one
table per model with the best value per column bold and the cost of every command the bench ran.

    python -m bench.report [bench/results/latest.json]   # rewrite the .md beside it
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]
LABELS = {
    ("quantkit", "defaults"): "quantkit defaults (mse)",
    ("quantkit", "range-cap-off"): "quantkit defaults, --range-cap off",
    ("quantkit", "rounding-nearest"): "quantkit defaults, --rounding nearest",
    ("quantkit", "smoothquant-off"): "quantkit defaults, --smoothquant off",
    ("quantkit", "bias-correction-off"): "quantkit defaults, --bias-correction off",
    ("quantkit", "speed-plan-off"): "quantkit defaults, --prefer accuracy (no speed-aware plan)",
    ("onnxruntime", "defaults"): "onnxruntime defaults (per-tensor)",
}


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Row], float | None]
    fmt: Callable[[float], str]
    higher_is_better: bool
    per_count: bool  # one value per calibration-image count ("a / b"), else the first count's


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _key(name: str, scale: float = 1.0) -> Callable[[Row], float | None]:
    def get(row: Row) -> float | None:
        value = _num(row.get(name))
        return None if value is None else value * scale

    return get


def columns(model: Row, threads: list[int]) -> list[Column]:
    out = []
    if model["show_accuracy"]:
        if model["detector"]:
            out.append(Column("recall @0.3", _key("detection_recall", 100), "{:.1f}%".format, True, True))
            out.append(Column("final boxes", _boxes_kept, "{:.1f}%".format, True, True))
        else:
            out += [
                Column("Δ top-1", _key("top1_delta_points"), "{:+.1f} pt".format, True, True),
                Column("agreement", _key("top1_agreement", 100), "{:.1f}%".format, True, True),
            ]
        out.append(Column("SQNR", _key("sqnr_db"), "{:.1f} dB".format, True, True))
    out += [Column(f"speedup {t}T", _key(f"speedup_{t}t"), "{:.2f}x".format, True, False) for t in threads]
    out += [
        Column("smaller", _key("size_ratio"), "{:.2f}x".format, True, False),
        Column("calibration s", _key("seconds"), "{:.0f}".format, False, True),
        Column("peak RSS MB", _key("peak_mb"), "{:.0f}".format, False, True),
    ]
    return out


def _groups(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["tool"], row["config"]), []).append(row)
    return groups


def _label(tool: str, config: str) -> str:
    if (tool, config) in LABELS:
        return LABELS[(tool, config)]
    return f"{tool} {config}" + (" (per-channel)" if tool == "onnxruntime" else "")


def _cell(column: Column, rows: list[Row], best: float | None) -> str:
    shown = rows if column.per_count else rows[:1]
    parts = []
    for row in shown:
        value = column.value(row) if row.get("error") is None else None
        text = "failed" if row.get("error") else ("-" if value is None else column.fmt(value))
        parts.append(f"**{text}**" if value is not None and value == best and row is rows[0] else text)
    return " / ".join(parts)


def model_table(model: Row, threads: list[int]) -> list[str]:
    cols = columns(model, threads)
    groups = _groups(model["candidates"])
    counts = sorted({r["calibration_images"] for r in model["candidates"]})
    best: dict[str, float | None] = {}
    for col in cols:  # best at the first image count, among the quantizers that worked
        values = [
            v
            for rows in groups.values()
            if (v := col.value(rows[0])) is not None and not rows[0].get("error")
        ]
        best[col.header] = (max if col.higher_is_better else min)(values) if values else None
    lines = [
        f"### {model['model']}",
        "",
        "| quantizer | " + " | ".join(c.header for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    failures = []
    for (tool, config), rows in groups.items():
        if all(r.get("error") for r in rows):
            cells = ["failed (below)"] + ["-"] * (len(cols) - 1)
        else:
            cells = [_cell(c, rows, best[c.header]) for c in cols]
        lines.append(f"| {_label(tool, config)} | " + " | ".join(cells) + " |")
        failures += [
            f"- {_label(tool, config)}, {r['calibration_images']} images: {_reason(r['error'])}"
            for r in rows
            if r.get("error")
        ]
    lines += ["", _references(model, threads), ""]
    lines += command_table(model)
    if failures:
        lines += ["Failures:", *failures, ""]
    if len(counts) > 1:
        lines.insert(1, f"\nCells with two values: {counts[0]} / {counts[1]} calibration images.")
    return lines


def _references(model: Row, threads: list[int]) -> str:
    fp32 = model["fp32_latency_ms"]
    parts = []
    if fp32:
        parts.append("FP32 " + ", ".join(f"{fp32[str(t)]:.1f} ms ({t}T)" for t in threads))
    for ref in model["references"]:
        if ref.get("error"):
            parts.append(f"{ref['config']}: failed ({ref['error']})")
            continue
        speed = " / ".join(f"{ref[f'speedup_{t}t']:.2f}x" for t in threads if f"speedup_{t}t" in ref)
        extra = []
        if speed:
            extra.append(f"speedup {speed}")
        if "sqnr_db" in ref and model["show_accuracy"]:
            extra.append(f"SQNR {ref['sqnr_db']:.1f} dB")
        extra.append(f"{ref['size_ratio']:.2f}x smaller")
        parts.append(f"{ref['config']}: " + ", ".join(extra))
    return "References: " + "; ".join(parts) + "."


FLOOR = "floor (decode + FP32 forward)"


def floor_table(result: Row) -> list[str]:
    """calibrate beside its floor for every model and image count (nothing for results without one)."""
    rows = [(model["model"], row) for model in result["rows"] for row in model.get("floor", [])]
    if not rows:
        return []
    lines = [
        "Floor: the same calibration images decoded and preprocessed (quantkit.images) and one plain FP32 "
        "forward per batch of 8 (onnxruntime, default session options), in its own process, in the same "
        "run as calibrate. Ratio: calibrate / floor.",
        "",
        "| model | images | calibrate | floor | ratio: wall time | ratio: peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows:
        wall, peak = row.get("wall_ratio"), row.get("peak_ratio")
        lines.append(
            f"| {name} | {row['calibration_images']} | {_cost(row['calibrate'])} | {_cost(row['floor'])} | "
            + (f"{wall:.2f}x | {peak:.2f}x |" if wall is not None and peak is not None else "- | - |")
        )
    return [*lines, ""]


def command_table(model: Row) -> list[str]:
    """Wall time and peak RSS of every command the bench ran for this model, each in its own process."""
    costs: list[tuple[str, int, Row]] = []
    for row in model.get("floor", []):
        costs.append((FLOOR, row["calibration_images"], row["floor"]))
    seen: set[tuple[str, int]] = set()  # calibrate ran once per image count, for every variant
    for row in model["candidates"] + model["references"] + model.get("formats", []):
        for command, cost in row.get("commands", {}).items():
            images = row["calibration_images"]
            if command == "calibrate":
                label = "quantkit calibrate"
            elif command == "convert":  # quantkit's variants and its all-integer reference
                label = f"quantkit convert ({row['config']})"
            elif row["tool"] == "onnxruntime":
                label = f"onnxruntime {command} ({row['config']})"
            else:
                label = row["config"]  # the weights-only reference
            if (label, images) not in seen:
                seen.add((label, images))
                costs.append((label, images, cost))
    if not costs:
        return []
    lines = ["| command | images | wall s | peak RSS MB |", "|---|---|---|---|"]
    for label, images, cost in costs:
        if cost.get("error"):
            cells = f"failed: {_reason(cost['error'])[:80]} | {cost['peak_mb']:.0f}"
        else:
            cells = f"{cost['seconds']:.1f} | {cost['peak_mb']:.0f}"
        lines.append(f"| {label} | {images or '-'} | {cells} |")
    return [*lines, ""]


HEADLINE = (
    ("quantkit", "defaults"),
    ("onnxruntime", "defaults"),
    ("onnxruntime", "minmax"),
    ("onnxruntime", "entropy"),
)


def headline(result: Row) -> list[str]:
    """Ten-second table: quantkit's defaults beside onnxruntime's defaults, per-channel MinMax and Entropy."""
    threads = list(result["settings"]["threads"])
    counts = list(result["settings"]["image_counts"])
    last = counts[-1]
    lines = [
        f"| model | quantizer | accuracy vs FP32 | SQNR | speedup {threads[0]}T "
        f"| calibration at {last} images |",
        "|---|---|---|---|---|---|",
    ]
    for model in result["rows"]:
        groups = _groups(model["candidates"])
        for key in HEADLINE:
            rows = groups.get(key)
            if not rows:
                continue
            first = rows[0]
            at_last = next((r for r in rows if r["calibration_images"] == last), None)
            lines.append(
                f"| {model['model']} | {_label(*key)} | "
                + " | ".join(_headline_cells(model, first, at_last, threads[0]))
                + " |"
            )
    return lines


def _headline_cells(model: Row, row: Row, at_last: Row | None, threads: int) -> list[str]:
    if row.get("error"):
        return [f"failed: {_reason(row['error'])[:100]}", "-", "-", _cost(at_last)]
    speed = row.get(f"speedup_{threads}t")
    return [*_accuracy(model, row), f"{speed:.2f}x" if speed else "-", _cost(at_last)]


def _accuracy(model: Row, row: Row) -> tuple[str, str]:
    """A row's accuracy against FP32 in words (top-1, or detection recall and final boxes) and its SQNR."""
    if not model["show_accuracy"]:
        return "(random weights)", "-"
    if row.get("sqnr_db") is None:  # --metric cost or latency: no accuracy pass
        return "(not measured)", "-"
    if model["detector"]:
        accuracy = f"recall {100 * row['detection_recall']:.1f}%"
        if row.get("boxes_fp32"):
            accuracy += f", final boxes {row['boxes_found']}/{row['boxes_fp32']} (+{row['boxes_extra']})"
    else:
        accuracy = f"{row['top1_delta_points']:+.1f} pt top-1, {100 * row['top1_agreement']:.1f}% agree"
    return accuracy, f"{row['sqnr_db']:.1f} dB"


def formats_table(result: Row) -> list[str]:
    """quantkit's number formats (bench.formats) beside its INT8 defaults, every model in one table; nothing
    for results from before them."""
    models = [m for m in result["rows"] if m.get("formats")]
    if not models:
        return []
    threads = list(result["settings"]["threads"])
    count = result["settings"]["image_counts"][0]
    lines = [
        "## Number formats: FP16, BF16, FP8, INT8 for TensorRT",
        "",
        f"quantkit `convert --to fp16 | bf16 | fp8` and INT8 `--target tensorrt`, from the {count}-image "
        "calibration table, beside quantkit's INT8 defaults (placed for onnxruntime CPU). Accuracy against "
        "FP32 on the same held-out images as the tables above; speedup against FP32 in the same interleaved "
        "loop, only where the model runs in onnxruntime's CPU kernels; size: the file written; convert: "
        "that command's wall time and peak RSS.",
        "",
        "| model | format | runs as | accuracy vs FP32 | SQNR | speedup "
        + " / ".join(f"{t}T" for t in threads)
        + " | size | convert |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        int8 = next((r for r in model["candidates"] if (r["tool"], r["config"]) == HEADLINE[0]), None)
        rows = ([("INT8, quantkit defaults", "onnxruntime CPU", int8)] if int8 else []) + [
            (r["label"], r["runs_as"], r) for r in model["formats"]
        ]
        for label, runs_as, row in rows:
            cells = _format_cells(model, row, threads)
            lines.append(f"| {model['model']} | {label} | {runs_as} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _format_cells(model: Row, row: Row, threads: list[int]) -> list[str]:
    """accuracy, SQNR, speedup, size and convert cost of one number-format row."""
    convert = _cost(row.get("commands", {}).get("convert"))
    if row.get("error"):
        return [f"failed: {_reason(row['error'])[:100]}", "-", "-", "-", convert]
    note = row.get("latency_note")  # bench.formats: why it has no latency on this CPU
    speeds = [row.get(f"speedup_{t}t") for t in threads]
    speed = note or (" / ".join(f"{v:.2f}x" for v in speeds) if all(speeds) else "-")
    ratio = row.get("size_ratio")
    size = f"{model['fp32_bytes'] / ratio / 1e6:.2f} MB ({ratio:.2f}x smaller)" if ratio else "-"
    return [*_accuracy(model, row), speed, size, convert]


def _boxes_kept(row: Row) -> float | None:
    """FP32's final boxes the candidate also makes, percent (older results have none)."""
    total, found = _num(row.get("boxes_fp32")), _num(row.get("boxes_found"))
    return None if not total or found is None else 100.0 * found / total


def _reason(error: str) -> str:
    """A child's error line without the exception type it was raised as."""
    return re.sub(r"^[A-Za-z]*(Error|Exception): ", "", error)


def _cost(row: Row | None) -> str:
    if row is None:
        return "-"
    if row.get("error", "") and str(row["error"]).startswith("stopped"):
        return str(row["error"])
    return f"{row['seconds']:.0f} s, {row['peak_mb']:.0f} MB"


def markdown(result: Row) -> str:
    env, settings = result["environment"], result["settings"]
    threads = list(settings["threads"])
    lines = [
        "# quantkit beside onnxruntime.quantization",
        "",
        f"CPU: {env['cpu']} ({', '.join(env['flags'])}); onnxruntime {env['versions']['onnxruntime']}, "
        f"onnx {env['versions']['onnx']}, quantkit {env['versions']['quantkit']}. Batch 1; speedup = FP32 "
        f"median / INT8 median over {settings['runs']} interleaved runs; calibration = wall time of the "
        "quantizer's own process (quantkit: calibrate + convert), peak RSS of that process. Bold: the best "
        f"value of a column at the first image count. Whole run: {settings['wall_seconds'] / 60:.1f} min.",
        "",
        *headline(result),
        "",
        *floor_table(result),
    ]
    for model in result["rows"]:
        lines += model_table(model, threads)
    lines += formats_table(result)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    """python -m bench.report [RESULTS.json]: rewrite the Markdown beside a results file from its JSON."""
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "latest.json"
    source.with_suffix(".md").write_text(markdown(json.loads(source.read_text())))


if __name__ == "__main__":
    main()
