"""What rich renders for people, checked against golden text at 80 and 120 columns (no colour).

Results are built by hand so that the text is the same on every machine. After an intended change of
the output: QUANTKIT_UPDATE_GOLDEN=1 pytest tests/test_golden.py, and review the diff of tests/golden/."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console, RenderableType

from quantkit.outcomes import (
    Accuracy,
    ComparisonResult,
    ConvertSummary,
    GateResult,
    LatencyStats,
    OutputMetrics,
    ShrinkResult,
    Speed,
)
from quantkit.reports import console
from quantkit.results import Corrections, QuantParams, QuantPlan, Rebalance

GOLDEN = Path(__file__).parent / "golden"


WIDTHS = (80, 120)  # every CI log and pipe is 80 columns; a wide terminal 120


def _render(renderable: RenderableType, width: int) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(width=width, record=True, color_system=None, force_terminal=False, file=sink)
        console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("QUANTKIT_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"{name} changed; see the module docstring to update"


def _comparison() -> ComparisonResult:
    return ComparisonResult(
        reference="model.onnx",
        candidate="model.int8.onnx",
        num_images=500,
        outputs=(OutputMetrics("logits", 19.58, 0.99450, 4.2, 0.976, 0.929),),
        reference_accuracy=Accuracy(0.828, 0.966, 500),
        candidate_accuracy=Accuracy(0.824, 0.966, 500),
        reference_latency=LatencyStats(7.26, 7.42, 7.54, 7.30, 100),
        candidate_latency=LatencyStats(3.59, 3.94, 4.21, 3.65, 100),
        reference_bytes=13_964_571,
        candidate_bytes=3_840_313,
        settings={"threads": 1, "batch_size_latency": 1, "runs": 100},
        environment={"cpu": "Example CPU @ 2.0GHz", "vnni": True},
        candidate_conversion={
            "rebalanced": [{"tensor": "clip_5", "alpha": 0.75}, {"tensor": "clip_21", "alpha": 0.5}],
            "bias_corrected_layers": 53,
            "calibration_sqnr_db": {
                "plain": 16.33,
                "bias_correction": 18.39,
                "rebalancing": 17.71,
                "both": 19.84,
            },
        },
    )


def _summary() -> ConvertSummary:
    params = QuantParams(np.asarray(0.05, np.float32), np.asarray(0, np.uint8))
    rebalance = Rebalance(
        "clip_5", np.ones(4, np.float32), 0.75, ("conv_7",), "conv_5", 1, 4, params, ("clip_5",)
    )
    plan = QuantPlan(
        activations={},
        weights=(),
        quantized_nodes={},
        folds={},
        skipped=(),
        rebalances=(rebalance,),
        input_means={f"conv_{i}": np.zeros(1) for i in range(53)},
    )
    return ConvertSummary(
        quantized_by_type={"Conv": 52, "Gemm": 1, "Add": 10},
        folded_by_type={"Clip": 35},
        float_by_reason={("Flatten", "not between quantized ops"): 1},
        bytes_before=13_964_571,
        bytes_after=3_840_313,
        opset_before=13,
        opset_after=13,
        smoke_sqnr_db={"output": 19.84},
        plan=plan,
        corrections=Corrections({"clip_5": 0.29}, 16.33, 18.39, 17.71, 19.84),
        speed=Speed(1.98, 40, 8.1, 4.09),
        samples=8,
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_table(width: int) -> None:
    _check(f"compare_{width}.txt", _render(console.compare_table(_comparison()), width))


@pytest.mark.parametrize("width", WIDTHS)
def test_convert_table(width: int) -> None:
    _check(f"convert_{width}.txt", _render(console.convert_table(_summary(), "model.int8.onnx"), width))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("passed", [True, False])
def test_shrink_table(passed: bool, width: int) -> None:
    gates = (
        GateResult("max_drop", 0.4, 1.0, "top-1 points (labels)", True),
        GateResult("min_speedup", 2.02, 1.5 if passed else 3.0, "x FP32 speed (p50)", passed),
    )
    result = ShrinkResult(
        "model.onnx",
        "out/model.int8.onnx",
        "cache/0123.calib.json",
        True,
        0.0,
        _summary(),
        _comparison(),
        gates,
        {},
    )
    name = f"shrink_{'pass' if passed else 'fail'}_{width}.txt"
    _check(name, _render(console.shrink_table(result, "out"), width))


def test_a_long_output_name_in_the_gate_table_folds_at_80_columns() -> None:
    """hq145 F9: in a CI log (80 columns) the unit column cut a long output name with an ellipsis:
    'squeezenet0_flatten0_reshape0…', which names no output."""
    name = "'squeezenet0_flatten0_reshape0_output_of_the_classifier'"
    gates = (
        GateResult("max_drop", 0.4, 1.0, "top-1 points (labels)", True),
        GateResult("min_eval_sqnr", 31.2, 30.0, f"dB SQNR, worst output {name}", True),
        GateResult("min_speedup", 2.02, 1.5, "x FP32 speed (p50)", True),
    )
    summary = _summary()
    result = ShrinkResult(
        "model.onnx", "out/m.onnx", "c.calib.json", True, 0.0, summary, _comparison(), gates, {}
    )
    text = _render(console.shrink_table(result, "out"), 80)
    assert "…" not in text and name in "".join(line.strip(" │") for line in text.splitlines())


def test_every_shrink_report_carries_the_warnings() -> None:
    """A CI page read without the log (the step summary, report.md, junit.xml, report.html) shows what
    the CLI prints as warnings: a PP-OCRv3 text detector passed its gates with its map at 4.8 dB, and
    only the log and report.json said so."""
    from quantkit.reports import html_page, junit, markdown

    squashed = "output 'y' measures 5.5 dB on the calibration samples where its logits measure 22.2 dB"
    gates = (GateResult("max_size_ratio", 0.3, 0.5, "x FP32 size", True),)
    fed = "FP32 gives class 3 for 8 of 8"
    comparison = dataclasses.replace(_comparison(), reference_findings=(fed,))
    summary, warned = _summary(), (squashed,)
    result = ShrinkResult("m.onnx", "o.onnx", "t", True, 0.0, summary, comparison, gates, {}, warnings=warned)
    assert f"- warning: {squashed}\n- warning: {fed}\n" in markdown.shrink_markdown(result)
    assert f"warning: {squashed}\nwarning: {fed}</system-err>" in junit.junit_xml(result)
    assert f'<p class="fail">warning: {squashed.replace(chr(39), "&#x27;")}</p>' in html_page.render(result)
    quiet = dataclasses.replace(result, warnings=(), comparison=_comparison())
    assert "system-err" not in junit.junit_xml(quiet) and "warning" not in markdown.shrink_markdown(quiet)


def test_a_shrink_without_gates_reports_no_verdict() -> None:
    """report.md and report.html said PASS where no gate was set (helper's hunt): a report-only run."""
    from quantkit.reports import html_page, markdown

    gates = (GateResult("max_size_ratio", 0.3, 0.5, "x FP32 size", True),)
    result = ShrinkResult("m.onnx", "o.onnx", "t", True, 0.0, _summary(), _comparison(), gates, {})
    assert markdown.shrink_markdown(result).startswith("### quantkit shrink: PASS")
    bare = dataclasses.replace(result, gates=())
    assert markdown.shrink_markdown(bare).startswith("### quantkit shrink: REPORT ONLY")
    # hq93 F5: the list of gates left --min-eval-sqnr out
    assert "No gates were set (--max-drop, --min-eval-sqnr, --min-speedup, --max-size-ratio)" in (
        markdown.shrink_markdown(bare)
    )
    page = html_page.render(bare)
    assert "<title>quantkit shrink: REPORT ONLY</title>" in page and "PASS" not in page


def test_the_rounded_layers_counted_are_those_written_int8() -> None:
    """hunt52 C5: 'weights rounded for their layer's output error in 106 layers' where the speed-aware
    plan wrote 45 of them int8 (the file's metadata said 45)."""
    summary = _summary()
    rounded = {"conv_1": np.zeros(1, np.int8), "conv_2": np.zeros(1, np.int8)}
    corrections = dataclasses.replace(
        summary.corrections, rounded_layers=5, sqnr_nearest_db=19.0, sqnr_rounded_db=20.0
    )
    summary = dataclasses.replace(
        summary, plan=dataclasses.replace(summary.plan, rounded=rounded), corrections=corrections
    )
    text = " ".join(_render(console.convert_table(summary, "out.onnx"), 300).split())
    assert "weights rounded for their layer's output error in 2 layers written int8 (19.00 dB" in text
    none = dataclasses.replace(summary, plan=dataclasses.replace(summary.plan, rounded={}))  # hq93 F4: 'in 0'
    text = " ".join(_render(console.convert_table(none, "out.onnx"), 300).split())
    assert (
        # hq125 F6: it blamed the speed plan where --max-drop or the payoff rule had kept them float
        "none of those layers is written int8 (why each is float: the kept-in-float table above)" in text
        and "in 0" not in text
    )


def test_a_name_holding_a_pipe_keeps_every_markdown_row_in_its_columns() -> None:
    """hq145 F5: an output 'logits|x' split report.md's gate row (GitHub splits cells at '|' inside code
    spans too): the result column read "x', evaluation images)" and pass / FAIL was gone."""
    import re

    from quantkit.reports import markdown

    gates = (
        GateResult("min_eval_sqnr", 42.35, 10.0, "dB (worst output 'logits|x', evaluation images)", True),
    )
    piped = dataclasses.replace(_comparison().outputs[0], name="logits|x")
    comparison = dataclasses.replace(_comparison(), outputs=(piped,))
    result = ShrinkResult("m.onnx", "o.onnx", "t", True, 0.0, _summary(), comparison, gates, {})
    rows = [line for line in markdown.shrink_markdown(result).splitlines() if line.startswith("|")]
    cells = [len(re.split(r"(?<!\\)\|", row)) for row in rows]
    assert cells[0] == cells[2] == 7 and all(n == 4 for n in cells[3:]), rows  # 5 and 2 columns
    assert rows[2].endswith("| pass |")


def test_a_detectors_report_does_not_send_it_to_labels() -> None:
    """hq145 F6: a detector's report said '--labels gives top-1', which --detector refuses."""
    from quantkit.reports.formats import reference_line

    unlabelled = dataclasses.replace(_comparison(), reference_accuracy=None, candidate_accuracy=None)
    result = ShrinkResult("m.onnx", "o.onnx", "t", True, 0.0, _summary(), unlabelled, (), {})
    assert reference_line(result).endswith("(--labels gives top-1)")
    boxes = dataclasses.replace(unlabelled.outputs[0], detection_recall=0.9, detections=10)
    detector = dataclasses.replace(result, comparison=dataclasses.replace(unlabelled, outputs=(boxes,)))
    assert reference_line(detector).endswith("judged by its detections (no labels)")


def test_every_report_names_paths_under_home_as_report_json_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """hq145 F8: report.json wrote '~/p/m.onnx', report.md (the step summary), junit.xml and report.html
    the whole home path."""
    from quantkit.reports import html_page, junit, markdown

    monkeypatch.setenv("HOME", "/home/ana")
    gates = (GateResult("max_size_ratio", 0.3, 0.2, "x FP32 size", False),)
    paths = ("/home/ana/p/m.onnx", "/home/ana/p/out/m.int8.onnx")
    result = ShrinkResult(*paths, "t", True, 0.0, _summary(), _comparison(), gates, {})
    assert "`~/p/m.onnx` -> `~/p/out/m.int8.onnx`" in markdown.shrink_markdown(result)
    assert "model ~/p/m.onnx, output ~/p/out/m.int8.onnx" in junit.junit_xml(result)
    page = html_page.render(result)
    assert "<code>~/p/m.onnx</code>" in page and "/home/ana" not in page
