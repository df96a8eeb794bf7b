"""Markdown of compare and shrink (report.md, GitHub's step summary)."""

from __future__ import annotations

from quantkit.outcomes import ComparisonResult, ShrinkResult
from quantkit.reports.formats import (
    GATE_LABELS,
    bound_text,
    boxes_text,
    cosine,
    decibels,
    environment_line,
    gate_figure,
    megabytes,
    milliseconds,
    percent,
    preprocess_line,
    preprocess_origin,
    reference_line,
    runtime_line,
    shrink_warnings,
    size_change,
    verdict,
)
from quantkit.strict_json import home_short


def comparison_markdown(result: ComparisonResult, warned: bool = True) -> str:
    """compare's table; with `warned`, the images it read and its warnings too (hq68 10: a page read
    without the log gave top-1 on '12 labelled images' of 16 files, 2 skipped, none of it said). shrink's
    report says its warnings itself."""
    lines = ["| metric | value |", "|---|---|", f"| images compared | {result.num_images} |"]
    if result.reference_accuracy and result.candidate_accuracy and result.top1_delta is not None:
        ref, cand = result.reference_accuracy, result.candidate_accuracy
        lines.append(f"| images labelled | {ref.count} |")
        lines.append(
            f"| top-1 reference / candidate | {percent(ref.top1)} / {percent(cand.top1)} "
            f"({100 * result.top1_delta:+.2f} points) |"
        )
        if ref.top5 is not None and cand.top5 is not None:
            lines.append(f"| top-5 reference / candidate | {percent(ref.top5)} / {percent(cand.top5)} |")
    for m in result.outputs:
        if not m.labels:  # an integer output's SQNR is of label numbers: its agreement follows
            lines.append(f"| {code(m.name)} SQNR / cosine | {decibels(m.sqnr_db)} / {cosine(m.cosine)} |")
        if m.top1_agreement is not None:
            lines.append(
                f"| {code(m.name)} top-1 agreement / top-5 overlap | {percent(m.top1_agreement)} / "
                f"{percent(m.top5_overlap)} |"
            )
        if m.detection_recall is not None:
            lines.append(
                f"| {code(m.name)} detection recall | {percent(m.detection_recall)} of {m.detections} |"
            )
            lines.append(f"| {code(m.name)} final boxes (IoU >= 0.5, same class) | {boxes_text(m)} |")
    settings = result.settings
    if result.speedup is not None and result.reference_latency and result.candidate_latency:
        lines.append(
            f"| latency p50 reference / candidate | {milliseconds(result.reference_latency.p50)} / "
            f"{milliseconds(result.candidate_latency.p50)} ({result.speedup:.2f}x; "
            f"{settings.get('threads')} thread(s), batch {settings.get('batch_size_latency')}, "
            f"{settings.get('runs')} interleaved runs after {settings.get('warmup')} warm-up) |"
        )
    lines.append(
        f"| size | {megabytes(result.reference_bytes)} -> {megabytes(result.candidate_bytes)} "
        f"({size_change(result.reference_bytes, result.candidate_bytes)}) |"
    )
    runtime = runtime_line(result)
    lines += [f"| runtime | {runtime.removeprefix('runtime ')} |"] if runtime else []
    pre = settings.get("preprocess")  # hq121 F6: the page said none of how it was measured
    if pre:
        shown = preprocess_line(pre).removeprefix("preprocessing: ")
        lines.append(
            f"| preprocessing | {escaped(shown)} ({preprocess_origin(settings.get('preprocess_source'))}) |"
        )
    lines.append(f"| environment | {escaped(environment_line(result.environment))} |")
    said = (*result.warnings, *result.reference_findings) if warned else ()
    lines += ["", *(f"- warning: {escaped(line)}" for line in said)] if said else []
    return "\n".join(lines) + "\n"


def shrink_markdown(result: ShrinkResult) -> str:
    lines = [
        f"### quantkit shrink: {verdict(result)}",
        "",
        f"`{home_short(result.model)}` -> `{home_short(result.output)}`",
        "",
    ]
    if result.gates:
        lines += ["| gate | measured | limit | unit | result |", "|---|---|---|---|---|"]
        for g in result.gates:
            mark = "pass" if g.passed else "**FAIL**"
            lines.append(
                f"| {GATE_LABELS[g.name]} | {gate_figure(g)} | {bound_text(g)} | {escaped(g.unit)} | {mark} |"
            )
        lines.append("")
    else:
        lines += [
            "No gates were set (--max-drop, --min-eval-sqnr, --min-speedup, --max-size-ratio): report only.",
            "",
        ]
    if result.settings.get("evaluated_on_calibration", not result.settings.get("held_out")):
        lines += ["Evaluated on the calibration images: pass --eval-images DIR for held-out figures.", ""]
    cache = (
        "reused from the cache" if result.cache_hit else f"calibrated in {result.calibration_seconds:.1f} s"
    )
    lines += [f"Calibration table {cache}.", "", reference_line(result) + ".", ""]
    warned = shrink_warnings(result)
    lines += [f"- warning: {escaped(line)}" for line in warned] + ([""] if warned else [])
    lines += [comparison_markdown(result.comparison, warned=False)]
    return "\n".join(lines)


def escaped(text: str) -> str:
    """Prose as Markdown shows it: file names and values hold '|', '*', '_', '<b>' (hq70 11: a file
    named '<b>x</b>|*y*.png' in a warning rendered bold and split the table)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join(f"\\{c}" if c in "\\`*_[]|#" else c for c in text)


def code(name: str) -> str:
    """A name as code in a table cell: GitHub splits cells at '|' inside code spans too, unless escaped
    (hq145 F5: an output 'logits|x' moved the gate row's pass / FAIL out of its column)."""
    return "`" + name.replace("|", "\\|") + "`"
