"""The reports of `quantkit shrink`: report.json (versioned schema), report.md (for people and GitHub's
step summary), junit.xml (one test case per gate) and the rich table the CLI prints. No computation."""

from __future__ import annotations

import math
from typing import Any
from xml.etree import ElementTree

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from quantkit import __version__
from quantkit.report import comparison_dict, comparison_markdown
from quantkit.results import GateResult, ShrinkResult

SCHEMA = "quantkit-shrink/1"
GATE_LABELS = {
    "max_drop": "accuracy drop",
    "min_speedup": "speedup",
    "max_size_ratio": "size ratio",
    "reference": "FP32 reference",
}


def _figure(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    value = 0.0 if value == 0 else value  # no "-0"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _bound(gate: GateResult) -> str:
    return f"{'>=' if gate.name == 'min_speedup' else '<='} {gate.limit:g}"


def shrink_dict(result: ShrinkResult) -> dict[str, Any]:
    summary = result.convert
    corrections = summary.corrections
    return {
        "schema": SCHEMA,
        "quantkit_version": __version__,
        "passed": result.passed,
        "gates": [
            {"name": g.name, "measured": g.measured, "limit": g.limit, "unit": g.unit, "passed": g.passed}
            for g in result.gates
        ],
        "model": result.model,
        "output": result.output,
        "calibration": {
            "table": result.table,
            "cache_hit": result.cache_hit,
            "seconds": result.calibration_seconds,
            "images": result.settings.get("calibration_images"),
            "count": result.settings.get("calibration_count"),
            "set_sha256": result.settings.get("calibration_set_sha256"),
        },
        "conversion": {
            "opset_before": summary.opset_before,
            "opset_after": summary.opset_after,
            "quantized_by_type": summary.quantized_by_type,
            "folded_by_type": summary.folded_by_type,
            "float_nodes": sum(summary.float_by_reason.values()),
            "rebalanced": [{"tensor": r.tensor, "alpha": r.alpha} for r in summary.plan.rebalances],
            "bias_corrected_layers": len(summary.plan.input_means),
            "calibration_sqnr_db": {
                "plain": corrections.sqnr_plain_db if corrections else None,
                "final": dict(summary.smoke_sqnr_db),
            },
            "kept_float_by_fallback": [s.node for s in summary.fallback],
        },
        "warnings": list(result.warnings),
        "comparison": comparison_dict(result.comparison),
        "settings": result.settings,
    }


def shrink_markdown(result: ShrinkResult) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    lines = [f"### quantkit shrink: {verdict}", "", f"`{result.model}` -> `{result.output}`", ""]
    if result.gates:
        lines += ["| gate | measured | limit | unit | result |", "|---|---|---|---|---|"]
        for g in result.gates:
            mark = "pass" if g.passed else "**FAIL**"
            lines.append(
                f"| {GATE_LABELS[g.name]} | {_figure(g.measured)} | {_bound(g)} | {g.unit} | {mark} |"
            )
        lines.append("")
    else:
        lines += ["No gates were set (--max-drop, --min-speedup, --max-size-ratio): report only.", ""]
    if not result.settings.get("held_out"):
        lines += ["Evaluated on the calibration images: pass --eval-images DIR for held-out figures.", ""]
    cache = (
        "reused from the cache" if result.cache_hit else f"calibrated in {result.calibration_seconds:.1f} s"
    )
    lines += [f"Calibration table {cache}.", "", reference_line(result) + ".", ""]
    lines += [f"- warning: {line}" for line in result.comparison.reference_findings]
    lines += [""] if result.comparison.reference_findings else []
    lines += [comparison_markdown(result.comparison)]
    return "\n".join(lines)


def reference_line(result: ShrinkResult) -> str:
    """FP32's own accuracy on the evaluation images, beside INT8's (or why there is none)."""
    comparison = result.comparison
    ref, cand = comparison.reference_accuracy, comparison.candidate_accuracy
    if ref is None or cand is None:
        return (
            f"FP32 reference on {comparison.num_images} images: no labels, so no accuracy of its own "
            "(--labels gives top-1)"
        )
    return (
        f"FP32 top-1 {100 * ref.top1:.2f}% (top-5 {100 * ref.top5:.2f}%) on {ref.count} labelled images; "
        f"INT8 top-1 {100 * cand.top1:.2f}%"
    )


def junit_xml(result: ShrinkResult) -> str:
    """One test case per gate; a failing gate carries a <failure> with the figure and its limit."""
    failures = sum(not g.passed for g in result.gates)
    suite = ElementTree.Element(
        "testsuite", name="quantkit shrink", tests=str(len(result.gates)), failures=str(failures), errors="0"
    )
    for g in result.gates:
        case = ElementTree.SubElement(suite, "testcase", classname="quantkit.shrink", name=g.name)
        if not g.passed:
            failure = ElementTree.SubElement(
                case,
                "failure",
                message=f"{GATE_LABELS[g.name]} {_figure(g.measured)} {g.unit}, limit {_bound(g)}",
            )
            failure.text = f"model {result.model}, output {result.output}"
    ElementTree.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(suite, encoding="unicode") + "\n"


def shrink_table(result: ShrinkResult, output_dir: str) -> RenderableType:
    table = Table(title="gates", show_edge=False, title_justify="left")
    for column in ("gate", "measured", "limit", "unit", "result"):
        table.add_column(column, justify="right" if column in ("measured", "limit") else "left")
    for g in result.gates:
        mark = Text("pass", style="green") if g.passed else Text("FAIL", style="bold red")
        table.add_row(GATE_LABELS[g.name], _figure(g.measured), _bound(g), g.unit, mark)
    lines = Text()
    cache = (
        "reused from the cache" if result.cache_hit else f"calibrated in {result.calibration_seconds:.1f} s"
    )
    lines.append(f"calibration table {cache}: {result.table}\n")
    lines.append(reference_line(result) + "\n")
    lines.append(f"wrote {result.output} and report.json, report.md, junit.xml in {output_dir}\n")
    verdict = "all gates pass" if result.passed else "a gate failed (exit 1)"
    lines.append(verdict if result.gates else "no gates set: report only")
    return Group(table, Text(""), lines) if result.gates else lines
