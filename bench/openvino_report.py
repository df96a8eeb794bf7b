"""bench/results/openvino.md from bench.openvino_bench's record: the figures, the int8 layers OpenVINO
runs, and where quantkit and NNCF put their Q/DQ."""

from __future__ import annotations

import math
from typing import Any


def markdown(record: dict[str, Any]) -> str:
    env, ov, s = record["environment"], record["openvino"], record["settings"]
    threads = s["threads"]
    versions = env["versions"]
    lines = [
        "# quantkit beside NNCF, in OpenVINO",
        "",
        f"`{record['command']}` (bench/openvino_bench.py). CPU {env['cpu']} ({', '.join(env['flags'])}; "
        f"VNNI {'yes' if env['vnni'] else 'no'}); OpenVINO {versions.get('openvino')}, NNCF "
        f"{versions.get('nncf')}, onnxruntime {versions.get('onnxruntime')}, quantkit "
        f"{versions.get('quantkit')}.",
        "",
        f"Every model runs in OpenVINO: {ov['device']} device, {ov['performance_hint'].lower()} hint, "
        f"precision hint {ov['precision_hint']} (FP32 is float32). Accuracy is `quantkit compare "
        "--runtime openvino`'s against FP32 in OpenVINO. Latency: batch 1, all models of a row group in "
        f"one interleaved loop (each round in a seeded shuffled order, no model twice in a row), {s['runs']} "
        f"rounds after {s['warmup']} warm-up, medians; speedup is "
        "FP32's median over the model's. int8 layers: the Conv/MatMul that OpenVINO's runtime model "
        "runs on u8/i8 inputs (rt_info runtimePrecision), of all of them.",
        "",
        "| model | INT8 by | accuracy vs FP32 | SQNR | "
        + " | ".join(f"{t} thread{'s' if t > 1 else ''}: ms (speedup)" for t in threads)
        + " | int8 Conv/MatMul | quantize time |",
        "|---|---|---|---|" + "---|" * len(threads) + "---|---|",
    ]
    for row in record["models"]:
        for v in row["variants"]:
            lines.append(_row(row, v, threads))
    lines += ["", _images_line(record), ""]
    lines += _float_layers(record)
    lines += _placement(record)
    return "\n".join(lines) + "\n"


def _row(row: dict[str, Any], v: dict[str, Any], threads: list[int]) -> str:
    name = row["model"]
    if v.get("error"):
        return f"| {name} | {v['label']} | failed: {v['error']} |" + " - |" * (len(threads) + 3)
    times = []
    for t in threads:
        ms = v.get(f"latency_ms_{t}t")
        times.append("-" if ms is None else f"{ms:.2f} ({v[f'speedup_{t}t']:.2f}x)")
    layers = v.get("layers") or {}
    int8 = f"{layers.get('int8')} / {layers.get('linear')}" if layers else "-"
    cost = sum(step["seconds"] for step in v.get("steps", {}).values())
    return (
        f"| {name} | {v['label']} | {_accuracy(v)} | {_db(v.get('sqnr_db'))} | "
        + " | ".join(times)
        + f" | {int8} | {f'{cost:.0f} s' if v['tool'] != 'fp32' else '-'} |"
    )


def _accuracy(v: dict[str, Any]) -> str:
    if v["tool"] == "fp32":
        return "reference"
    if v.get("detection_recall") is not None:
        boxes = (
            f", final boxes {v['boxes_found']}/{v['boxes_fp32']} (+{v['boxes_extra']})"
            if v.get("boxes_fp32") is not None
            else ""
        )
        return f"recall {100 * v['detection_recall']:.1f}% of {v['detections_fp32']}{boxes}"
    if v.get("top1_delta_points") is not None:
        return (
            f"top-1 agreement {100 * v['top1_agreement']:.1f}%, top-1 {100 * v['top1']:.1f}% "
            f"({v['top1_delta_points']:+.1f} points)"
        )
    if v.get("top1_agreement") is not None:
        return f"top-1 agreement {100 * v['top1_agreement']:.1f}%"
    return "-"


def _db(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2f} dB"


def _images_line(record: dict[str, Any]) -> str:
    parts = [
        f"{row['model']} {row['calibration_images']} calibration / {row['evaluation_images']} scored"
        for row in record["models"]
    ]
    return (
        "Images (calibration never overlaps scoring): "
        + "; ".join(parts)
        + ". Classifiers: coco-calib photos, scored on imagenet-dev (top-1 against labels, "
        "FP32's in brackets as the delta); YOLOX: its seeded half of coco-calib, scored on the other half "
        "(recall of FP32's detections at score 0.3, final boxes after NMS matched at IoU 0.5); ViT: seeded "
        "mnist-test digits, scored on others."
    )


def _float_layers(record: dict[str, Any]) -> list[str]:
    lines = [
        "## Conv/MatMul that OpenVINO runs in float",
        "",
        "For each: the runtime layer that holds it (a Subgraph is the CPU plugin's fused block, e.g. its "
        "attention), and what the ONNX model gives it (its data input and weight through a "
        "DequantizeLinear or not); then the runtime model's layers by type and precision (Const, Input, "
        "Output left out).",
        "",
    ]
    for row in record["models"]:
        for v in row["variants"]:
            layers = v.get("layers")
            if v["tool"] == "fp32" or not layers:
                continue
            reasons = layers.get("float_reasons", {})
            held = layers.get("float_held_by", {})
            head = f"- **{row['model']}, {v['label']}**: {layers['int8']} of {layers['linear']} int8"
            if reasons:
                shown = "; ".join(
                    f"`{k}` (runs in {held.get(k, '?')}; ONNX {r})" for k, r in list(reasons.items())[:12]
                )
                more = f"; and {len(reasons) - 12} more" if len(reasons) > 12 else ""
                head += f"; float: {shown}{more}"
            runtime = ", ".join(f"{k} {n}" for k, n in layers.get("runtime_layers", {}).items())
            lines += [head + ".", f"  Runtime layers: {runtime}."]
    return [*lines, ""]


PLACEMENT_ROWS = (
    ("Q / DQ nodes", None),
    ("dequantized activations read by", "activation_reads"),
    ("quantized outputs of", "quantized_outputs"),
    ("activation formats (Q)", "activation_formats"),
    ("dequantized constants read by", "weight_reads"),
    ("constant formats (DQ)", "weight_formats"),
    ("ops reading no dequantized input", "float_ops"),
)


def _placement(record: dict[str, Any]) -> list[str]:
    lines = [
        "## Where each tool put its Q/DQ",
        "",
        "Counted in the ONNX models (bench/qdq_census.py): every DequantizeLinear -> reader edge by the "
        "reader's op (activations and constants apart), every activation QuantizeLinear by the op whose "
        "output it quantizes, formats by zero point and scale shape.",
        "",
    ]
    for row in record["models"]:
        made = [v for v in row["variants"] if v.get("placement")]
        if not made:
            continue
        lines += [
            f"### {row['model']}",
            "",
            "| | " + " | ".join(v["label"] for v in made) + " |",
            "|---|" + "---|" * len(made),
        ]
        for title, key in PLACEMENT_ROWS:
            cells = [
                f"{v['placement']['q']} / {v['placement']['dq']}"
                if key is None
                else _counts(v["placement"][key])
                for v in made
            ]
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"
