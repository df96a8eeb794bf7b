"""How figures read in every report: sizes, decibels, percentages, gate bounds, box counts."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantkit.config import LETTERBOX_PAD
from quantkit.config.fixed_inputs import values_text
from quantkit.evaluate.speed import scattered
from quantkit.outcomes import (
    ComparisonResult,
    Finding,
    GateResult,
    OutputMetrics,
    SensitivityReport,
    ShrinkResult,
    Speed,
    SpeedPlan,
)
from quantkit.results import FallbackStep


def megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def decibels(value: float) -> str:
    """'24.58 dB'; 'inf' for identical outputs; -inf for non-finite outputs or an FP32 output of zeros
    only (no signal: hq74 5 was said to hold 'NaN or Inf')."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf dB (NaN/Inf outputs, or FP32's all zero)"
    return "n/a" if math.isnan(value) else f"{value:.2f} dB"


def percent(value: float | None) -> str:
    """'97.25%'; never '100.00%' for less than all (hq74 8: 8 of 2.5 million mask elements apart)."""
    if value is None:
        return "-"
    shown = f"{100 * value:.2f}%"
    return ">99.99%" if shown == "100.00%" and value < 1.0 else shown


def cosine(value: float) -> str:
    """'0.98503', never '1.00000' for less than 1; 'n/a' where no element was compared (NaN)."""
    if math.isnan(value):
        return "n/a"
    shown = f"{value:.5f}"
    return ">0.99999" if shown == "1.00000" and value < 1.0 else shown


def finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def size_change(before: int, after: int) -> str:
    """'3.71x smaller', or '1.20x larger' when the file grew (never '0.83x smaller'); 'about the same
    size' within 0.5 % (hunt44: a model kept all float read '1.00x larger', 1,559,570 -> 1,560,720 bytes)."""
    if abs(after - before) <= 0.005 * max(before, 1):
        return "about the same size"
    if after > before:
        return f"{after / max(before, 1):.2f}x larger"
    return f"{before / max(after, 1):.2f}x smaller"


GATE_LABELS = {
    "max_drop": "accuracy drop",
    "min_speedup": "speedup",
    "max_size_ratio": "size ratio",
    "min_eval_sqnr": "output SQNR",
    "reference": "FP32 reference",
}


def figure(value: float | None) -> str:
    """A gate's measured figure: '-' where none was measured; 'inf' for an output identical to FP32's
    (hunt52 C2: '-' read as 'not measured' beside a passed SQNR gate)."""
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    value = 0.0 if value == 0 else value  # no "-0"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def gate_figure(gate: GateResult) -> str:
    """A gate's measured figure with the digits its verdict needs (hq109 F4: 31.8088 against 31.81 read
    '31.81 >= 31.81 FAIL'); the FP32 reference's warnings as a count (F7, hq71 F7: '1.00')."""
    value = gate.measured
    if gate.name == "reference" and value is not None and math.isfinite(value):
        return f"{value:.0f}"
    shown = figure(value)
    if value is None or not math.isfinite(value):
        return shown
    for digits in range(3, 10):
        if (
            float(shown) >= gate.limit if gate.name.startswith("min_") else float(shown) <= gate.limit
        ) == gate.passed:
            return shown
        shown = f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}f}"
    return repr(value)


def bound_text(gate: GateResult) -> str:
    return f"{'>=' if gate.name.startswith('min_') else '<='} {gate.limit:g}"


def shrink_warnings(result: ShrinkResult) -> tuple[str, ...]:
    """What the CLI prints as warnings, for every report: a CI page read without the log shows them too."""
    return tuple(dict.fromkeys((*result.warnings, *result.comparison.reference_findings)))  # once each (hq109
    # F7: the table's calibration warning and the reference's finding are one text)


def smoke_text(smoke_sqnr_db: dict[str, float], samples: int) -> str:
    """convert's smoke-test line, naming how many stored samples its figures are on (0: not known)."""
    sqnr = ", ".join(f"{name} {decibels(v)}" for name, v in smoke_sqnr_db.items())
    plural = "s" if samples != 1 else ""
    on = f"the table's {samples} calibration sample{plural}" if samples else "calibration samples"
    figures = f", SQNR {sqnr}" if sqnr else ""
    line = f"smoke test of the model written, on {on}: outputs finite where FP32's are{figures}\n"
    if not samples:
        return line
    return line + (
        f"(every figure on calibration samples is on {'those' if plural else 'that'} {samples}, which the "
        "corrections were chosen on, and weighs each output and each output feature alike: `quantkit "
        "compare` on held-out images measures what the model does elsewhere, pooling each output's values)\n"
    )


def float_smoke_text(smoke_sqnr_db: dict[str, float], smoke_input: str) -> str:
    """convert --to fp16 / bf16's smoke-test line. On synthetic inputs no figure: they show a broken
    conversion, not accuracy (hunt31: a detector's 53 dB there was 32 dB on photos)."""
    sqnr = ", ".join(f"{name} {decibels(v)}" for name, v in smoke_sqnr_db.items())
    figures = f", SQNR {sqnr}" if sqnr else ""
    if smoke_input.startswith("synthetic"):
        figures = " (figures on them tell no accuracy on real inputs: `quantkit compare` measures it)"
    return f"smoke test on {smoke_input}: outputs finite where FP32's are{figures}\n"


def verdict(result: ShrinkResult) -> str:
    """The report's headline: PASS or FAIL by the gates, REPORT ONLY where none was set (shrink's report
    said PASS with no gate to pass)."""
    if not result.gates:
        return "REPORT ONLY"
    return "PASS" if result.passed else "FAIL"


def failed_gates(result: ShrinkResult) -> str:
    """'FAIL: accuracy drop 3.20 (<= 1), speedup 0.91 (>= 1)': the gates a failed shrink did not pass, one
    line; '' where it passed."""
    failed = [g for g in result.gates if not g.passed]
    if not failed:
        return ""
    shown = ", ".join(f"{GATE_LABELS.get(g.name, g.name)} {gate_figure(g)} ({bound_text(g)})" for g in failed)
    return f"FAIL: {shown}"


def recall_text(m: OutputMetrics) -> str:
    """'94.00% of 1517': the reference's detections per anchor the candidate keeps ('-': not a head)."""
    return "-" if m.detections is None else f"{percent(m.detection_recall)} of {m.detections}"


def boxes_text(m: OutputMetrics) -> str:
    """'433/435 same, 0 extra (2 at the threshold)': the reference's final boxes the candidate makes."""
    if m.boxes is None:
        return "-"
    text = f"{m.boxes_found}/{m.boxes} same, {m.boxes_extra} extra"
    return text + (f" ({m.boxes_borderline} at the threshold)" if m.boxes_borderline else "")


def reference_line(result: ShrinkResult) -> str:
    """FP32's own accuracy on the evaluation images, beside INT8's (or why there is none)."""
    comparison = result.comparison
    ref, cand = comparison.reference_accuracy, comparison.candidate_accuracy
    if ref is None or cand is None:
        boxes = any(m.detection_recall is not None for m in comparison.outputs)  # hq145 F6: --labels is
        return (  # refused beside --detector, whose boxes are the accuracy
            f"FP32 reference on {comparison.num_images} images: "
            + (
                "judged by its detections (no labels)"
                if boxes
                else "no labels, so no accuracy of its own (--labels gives top-1)"
            )
        )
    return (
        f"FP32 top-1 {100 * ref.top1:.2f}%{'' if ref.top5 is None else f' (top-5 {100 * ref.top5:.2f}%)'} "
        f"on {ref.count} labelled image{'' if ref.count == 1 else 's'}; "
        f"INT8 top-1 {100 * cand.top1:.2f}%"
    )


def runtime_line(result: ComparisonResult) -> str | None:
    """compare --runtime openvino: where both models ran, and how many of the candidate's Conv/MatMul
    OpenVINO's CPU plugin runs on int8 inputs (the float ones named, a few); None for onnxruntime."""
    ov = result.settings.get("openvino")
    if result.settings.get("runtime") != "openvino" or not isinstance(ov, dict):
        return None
    version = result.environment.get("versions", {}).get("openvino", "?")
    line = (
        f"runtime OpenVINO {version}, {ov.get('device')} device, precision hint {ov.get('precision_hint')} "
        f"for both models, {str(ov.get('performance_hint', '')).lower()} hint"
    )
    layers = ov.get("candidate_layers")
    if isinstance(layers, dict):
        floats = list(layers.get("float", []))
        named = ", ".join(floats[:4]) + (f" and {len(floats) - 4} more" if len(floats) > 4 else "")
        line += f"; candidate: {layers.get('int8')} of {layers.get('linear')} Conv/MatMul run int8"
        line += f" (float: {named})" if floats else ""
    return line


def fallback_steps(
    steps: Sequence[FallbackStep],
    start_db: float,
    target_db: float,
    whose: str = "--min-sqnr",
    outputs: int = 1,
) -> str:
    """'--min-sqnr: output SQNR on calibration samples 7.2 dB -> 8.19 dB with Conv.0 (Conv) in float ->
    ...': the SQNR before and after each step of the fallback; the layers of a block kept float together
    (planner.fallback_blocks: one figure for all) in one step. With no step, whether start_db met
    target_db (hunt44: 13.9 dB below --min-sqnr 20 read 'at least --min-sqnr'). whose: the target's
    name (--target tensorrt sets one of its own, pipeline.tensorrt_parity). outputs: how many the model
    has; with several, the figure is named their mean (hq61b F2: CRAFT's 25.2 dB beside an output at 18.7)."""
    what = f"the mean over its {outputs} outputs' SQNR" if outputs > 1 else "output SQNR"
    said = [f"{whose}: {what} on calibration samples {decibels(start_db)}"]
    if not steps:
        shown = f"{target_db:g}" if whose == "--min-sqnr" else f"{target_db:.2f}"  # the user's as given
        below = f" (below {whose} {shown})"
        met = f" (at least {whose} {shown}: nothing kept float)"  # hq147 F8, hq151 F9, hq153 F5
        return said[0] + (met if start_db >= target_db else below)
    for db, group in itertools.groupby(steps, key=lambda step: step.sqnr_db):
        block = list(group)
        first = f"{block[0].node} ({block[0].op_type})"
        named = first if len(block) == 1 else f"{len(block)} layers from {first} to {block[-1].node}"
        said.append(f" -> {decibels(db)} with {named} in float")
    return "".join(said)


def shown_name(name: str) -> str:
    """A file name as one printable line of valid UTF-8: a newline or another control character as its
    escape ('a\\nb.jpg'), a byte no encoding decodes (a lone surrogate, which strict JSON readers refuse)
    as '\\xff' (hunt39 F13)."""
    if name.isprintable() and not any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return name
    raw = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


def skipped_line(skipped: Sequence[tuple[str | Path, str]], shown: int = 3) -> str:
    """'skipped 4 unreadable file(s): a (why), b (why), c (why) and 1 more', each file named by its path
    below the deepest folder they share (hq68 7: cam1/ ... cam5/ each holding a broken IMG_0001.jpg read
    'IMG_0001.jpg, IMG_0001.jpg, IMG_0001.jpg and 2 more')."""
    paths = [Path(name) for name, _ in skipped]
    try:
        common = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()
    except ValueError:  # relative and absolute paths mixed
        common = None
    relative = [p.relative_to(common) if common is not None else Path(p.name) for p in paths]
    names = ", ".join(
        f"{shown_name(name.as_posix())} ({why})"
        for name, (_, why) in zip(relative[:shown], skipped[:shown], strict=True)
    )
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"skipped {len(skipped)} unreadable file(s): {names}{more}"


def grouped_findings(findings: tuple[Finding, ...]) -> list[tuple[str, str, str]]:
    """(rule, 'N x op: first nodes', message) per distinct rule and message, in first-seen order."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.rule, f.message), []).append(f)
    rows = []
    for (rule, message), members in groups.items():
        named = [f.node or "(unnamed)" for f in members[:3]]  # hq110 F8: blank names printed ', '
        names = ", ".join(named) + (", ..." if len(members) > 3 else "")
        ops = "/".join(dict.fromkeys(f.op_type for f in members))
        rows.append((rule, f"{len(members)} x {ops}: {names}", message))
    return rows


def preprocess_origin(source: object) -> str:
    """Where compare's preprocessing came from (its settings' preprocess_source), in words."""
    return {
        "flags": "from the flags",
        "recorded": "recorded in the model",
        "recorded + flags": "recorded in the model, with the flags given",
    }.get(str(source), "defaults")


def milliseconds(value: float) -> str:
    """A latency, three significant digits below 1 ms (hq121 F6: 0.008 and 0.012 ms read 0.01 / 0.02)."""
    return f"{value:.2f} ms" if value >= 1 else f"{value:.3g} ms"


def environment_line(environment: dict[str, Any]) -> str:
    """The CPU, its SIMD flags and the versions a comparison ran with (its environment record)."""
    flags = ", ".join(str(f) for f in environment.get("flags", [])) or "none of note"
    versions = ", ".join(f"{k} {v}" for k, v in dict(environment.get("versions", {})).items())
    return f"CPU {environment.get('cpu')} {environment.get('machine', '')} (flags: {flags}); {versions}"


def preprocess_line(pre: dict[str, Any], source: str | None = None) -> str:
    """The resolved preprocessing in one line (Preprocess.to_dict()), and where it came from."""

    def values(key: str) -> str:
        return ",".join(f"{v:g}" for v in pre.get(key, []))

    order = "BGR" if pre.get("bgr") else "RGB" if pre.get("channels", 3) == 3 else "gray"
    pad = pre.get("pad", LETTERBOX_PAD)  # said where it is not the default
    fill = (
        f" (pad {pad:g})" if str(pre.get("resize")).startswith("letterbox") and pad != LETTERBOX_PAD else ""
    )
    fixed = "".join(
        f"; {f.get('name')}={values_text(f.get('values', []))}" for f in pre.get("fixed_inputs", [])
    )
    fixed = f"; images feed {pre.get('image')!r}{fixed}" if fixed else ""
    return (
        f"preprocessing{f' ({source})' if source else ''}: {pre.get('height')}x{pre.get('width')} "
        f"{pre.get('layout')} {order}, resize "
        f"{pre.get('resize')}{fill}, mean {values('mean')}, std {values('std')} (0-255 units){fixed}"
    )


# The written model's speedup over the FP32 file this many times the plan's over the FP32 model as quantkit
# prepares it (weights computed by subgraphs stored, BatchNormalization folded) is mostly that preparation
PREPARED_GAIN = 1.5


def prepared_gain(speed: Speed, plan: SpeedPlan | None, fewer: int) -> str | None:
    """A note where most of the speedup over the FP32 file is quantkit's preparation, not int8 (hq61: a
    dynamo export without its optimizer, 4.22x FP32 where the plan measured 1.21x against the prepared
    FP32; 1.10x against the same network's TorchScript export): where the preparation took ops out
    (`fewer`), else the gap is the timings' scatter."""
    planned = None if plan is None else plan.refined_speedup or plan.plain_speedup
    if planned is None or fewer <= 0:
        return None
    if speed.slower or speed.speedup < PREPARED_GAIN * planned or speed.speedup - planned < 0.5:
        return None
    return (
        f"of the {speed.speedup:.2f}x, int8 gives {planned:.2f}x (the plan, timed against the FP32 model as "
        "quantkit prepares it: weights computed by subgraphs stored, BatchNormalization folded); the rest is "
        "that preparation, which the FP32 model also gets from an optimized export (torch.onnx's optimizer, "
        "onnxruntime's offline optimization)"
    )


def speed_line(speed: Speed) -> str:
    """convert's speed line, and a warning where the timings scattered too much for it to be a figure.
    Where the runs' median ratio and the medians' ratio fall on either side of 1 within that scatter, the
    line says so (hq63b F3: '1.01x FP32 (11.13 -> 11.23 ms' read as a gain and a loss at once)."""
    medians = speed.fp32_ms / speed.candidate_ms if speed.candidate_ms > 0 else speed.speedup
    apart, straddle = scattered(speed.speedup, medians)
    tie = not apart and min(medians, speed.speedup) < 1.0 <= max(medians, speed.speedup)
    line = (
        f"speed on this CPU: {speed.speedup:.2f}x FP32 ({speed.fp32_ms:.2f} -> {speed.candidate_ms:.2f} ms, "
        f"1 thread, median of {speed.rounds} interleaved runs on a calibration sample"
        f"{'; as fast as FP32 within their scatter' if tie else ''})\n"
    )
    if not apart:
        return line
    verdict = "; whether it is faster than FP32 is within that scatter" if straddle else ""
    return line + (
        f"warning: the timings scattered (a busy CPU?): the runs' median ratio is {speed.speedup:.2f}x, "
        f"their medians make {medians:.2f}x{verdict}; measure again on an idle machine "
        "(QUANTKIT_SPEED_CACHE=off)\n"
    )


def set_note(k: int, best: int, db: float) -> str:
    """What sensitivity's top-k set is beside the one --write-exclusions keeps (the top `best`)."""
    if k == best:
        return " (the set --write-exclusions keeps)"
    if k < best:
        return ""
    if db == float("inf"):  # every layer measured float: FP32's own outputs, not a plan
        return f" (FP32 itself: every ranked layer float; --write-exclusions keeps the top {best})"
    return f" (no better than the top {best}, which --write-exclusions keeps)"


def float_in_all(result: SensitivityReport, k: int) -> str:
    """' (N layers float in all, ...)' for sensitivity's top-k set where layers go float with them (their
    input paths, and the layers onnxruntime then runs in float: hunt39 F5), '' where none do."""
    top = result.layers[:k]
    more = {n for r in top for n in r.with_it} - {r.node for r in top}
    return f" ({k + len(more)} layers float in all, with those that go float with them)" if more else ""
