"""The API as a library (hq72): it leaves its caller's process as it was (warning filters, onnxruntime's
logger, threads), never writes over an input it was given, and refuses what the CLI refuses, in one
QuantkitError line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import quantkit
from quantkit.config import AccuracyBudget, ConvertConfig, Float16Config, ImageSelection, Preprocess
from quantkit.data import read_data
from quantkit.images import load_sample
from quantkit.pipeline.loading import read_ahead
from tests.conftest import tiny_cnn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("hygiene")
    cnn = tiny_cnn(folder / "cnn.onnx")
    table = quantkit.calibrate(cnn, data=image_dir, output=folder / "cnn.calib.json").table
    return cnn, table


def test_a_budget_labels_file_is_never_the_output(calibrated: tuple[Path, Path], image_dir: Path) -> None:
    """hq72 1: convert(max_drop=..., labels=X, output=X) wrote the INT8 model over the labels file."""
    cnn, table = calibrated
    labels = table.parent / "labels.txt"
    labels.write_text("cats\ndogs\nc\nd\ne\n")
    with pytest.raises(quantkit.QuantkitError, match=r"output .*labels\.txt would overwrite labels"):
        quantkit.convert(
            cnn, calibration=table, output=labels, max_drop=5, validation=image_dir, labels=labels
        )
    assert labels.read_text() == "cats\ndogs\nc\nd\ne\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fp8": True}, "has no option fp8"),  # hq72 3: a float8 model past to='fp8''s refusals
        ({"max_drop": 5, "validation": ""}, "validation takes a path"),  # hq72 4: read the current folder
        ({"max_drop": 5, "validation": "v", "labels": ""}, "labels takes a path"),
        ({"max_drop": 5, "validation": "v", "max_trials": 1.5}, "max_trials takes a whole number"),  # hq72 15
        ({"exclude_nodes": b"c1"}, "names take str, not bytes"),  # hq72 12: read as nodes 99 and 49
        ({"method": "minmax", "range_cap": True}, "range_cap= caps method mse's ranges"),  # hq76 6: unread
        ({"percentile": 99.0}, "percentile= sets method percentile's range"),
    ],
)
def test_convert_refuses_what_the_cli_refuses(
    calibrated: tuple[Path, Path], options: dict[str, object], message: str
) -> None:
    cnn, table = calibrated
    out = table.parent / "never.onnx"
    with pytest.raises(quantkit.ConfigError, match=message):
        quantkit.convert(cnn, calibration=table, output=out, **options)  # type: ignore[arg-type]
    assert not out.exists()


def test_shrink_and_sensitivity_refuse_bad_switches_paths_and_data(
    calibrated: tuple[Path, Path], image_dir: Path, tmp_path: Path
) -> None:
    """hq72 5, 8, 10: cache_dir='' wrote tables into the current folder, html='off' wrote report.html,
    sensitivity(data=None) raised list()'s TypeError; a NUL byte or a name too long raised pathlib's."""
    cnn, table = calibrated
    with pytest.raises(quantkit.ConfigError, match=r"^percentile= sets method percentile's range"):  # hq77 4
        quantkit.shrink(cnn, data=image_dir, output_dir=tmp_path / "o", convert_options={"percentile": 99.9})
    with pytest.raises(quantkit.ConfigError, match="cache_dir takes a path"):
        quantkit.shrink(cnn, data=image_dir, output_dir=tmp_path / "o", cache_dir="")
    with pytest.raises(quantkit.ConfigError, match=r"html takes True or False .*got 'maybe'"):
        quantkit.shrink(cnn, data=image_dir, output_dir=tmp_path / "o", html="maybe")  # type: ignore[arg-type]
    with pytest.raises(quantkit.ConfigError, match="data, num_images or seed has the wrong type"):
        quantkit.sensitivity(cnn, calibration=table, data=None)  # type: ignore[arg-type]
    with pytest.raises(quantkit.ConfigError, match=r"^output '.*' is no path \(embedded null byte\)"):
        quantkit.convert(cnn, calibration=table, output="a\0b.onnx")
    with pytest.raises(quantkit.ConfigError, match=r"^output: File name too long"):
        quantkit.convert(cnn, calibration=table, output=tmp_path / ("a" * 300 + ".onnx"))
    with pytest.raises(quantkit.ConfigError, match=r"^progress takes a callable .*; got bool"):
        quantkit.convert(cnn, calibration=table, output=tmp_path / "q.onnx", progress=True)  # type: ignore[arg-type]
    assert not (tmp_path / "o").exists() and not (tmp_path / "q.onnx").exists()


def test_data_as_a_set_or_one_dict(tmp_path: Path) -> None:
    """hq72 9: a set of paths (no order of the user's) gave other bytes in every process; hq72 12: one
    {input: array} was read as a list of image names."""
    names = {tmp_path / f"{k}.png" for k in (3, 1, 2)}
    selection, arrays = read_data(names, None, 0)
    assert arrays is None and selection.files == tuple(sorted(names, key=str))
    (tmp_path / "empty").mkdir()
    with pytest.raises(quantkit.QuantkitError, match=r"^data: no images \(\.jpg, \.png, \.\.\.\) nor arrays"):
        read_data(tmp_path / "empty", None, 0)
    sample = {"x": np.zeros((1, 3, 4, 4), np.float32)}
    _, arrays = read_data(sample, None, 0)
    assert arrays is not None and list(arrays) == [sample]


def test_pil_images_as_data_are_refused_with_the_forms_taken(calibrated: tuple[Path, Path]) -> None:
    """hq129 F11: a list of PIL images was refused as 'sample 0 has shape [426, 640, 3] per sample', which
    said neither what was wrong nor what to give."""
    cnn, _ = calibrated
    photos = [Image.new("RGB", (640, 426)) for _ in range(2)]
    with pytest.raises(quantkit.ConfigError, match=r"is a PIL image; give image files \(a folder or a list"):
        quantkit.calibrate(cnn, data=photos, output=cnn.with_name("pil.calib.json"))
    assert not cnn.with_name("pil.calib.json").exists()


def test_onnxruntime_keeps_the_callers_log_level() -> None:
    """hq72 6: importing the API set onnxruntime's process-wide logger to fatal only; the caller's own
    sessions lost their warnings. The CLI and its workers still quiet it."""
    script = (
        "import sys, onnx, numpy as np, onnxruntime as ort\n"
        "from onnx import helper, numpy_helper\n"
        "import quantkit, quantkit.runtime\n"
        "g = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g',\n"
        "    [helper.make_tensor_value_info('x', 1, [1])], [helper.make_tensor_value_info('y', 1, [1])],\n"
        "    [numpy_helper.from_array(np.zeros(4, np.float32), 'unused')])\n"
        "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 13)])\n"
        "ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])\n"
    )
    for quiet, heard in (("", True), ("1", False)):
        env = {"PATH": "/usr/bin:/bin", "QUANTKIT_QUIET_KERNELS": quiet}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, check=True
        )
        assert ("Removing initializer 'unused'" in done.stderr) is heard, done.stderr


def test_api_calls_leave_no_list_of_paths_growing(
    calibrated: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq113 F10: files.WRITTEN, which the CLI's interrupt line reads, held 202 paths after 200
    converts in one service process. The CLI notes what its run writes; the API, nothing."""
    from quantkit import files
    from tests.helpers import run

    cnn, table = calibrated
    for _ in range(3):
        quantkit.convert(cnn, calibration=table, output=tmp_path / "cnn.int8.onnx")
    assert files.WRITTEN == [] and not files.NOTING
    code, _, err = run(["convert", str(cnn), "-c", str(table), "-o", str(tmp_path / "cli.onnx")], capsys)
    assert code == 0 and not files.NOTING and files.WRITTEN == [], err  # noted while it ran, not after
    quantkit.convert(cnn, calibration=table, output=tmp_path / "cnn.int8.onnx")
    assert tmp_path / "cnn.int8.onnx" not in files.WRITTEN


def test_a_consumer_that_stops_early_stops_the_read_ahead_thread() -> None:
    """hq72 7: a cancelled or interrupted call left its read-ahead thread parked for good, one per call."""
    before = threading.active_count()
    batches = read_ahead(iter(range(1000)), depth=2)
    assert next(batches) == 0
    batches.close()
    deadline = time.monotonic() + 5.0
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
    assert list(read_ahead(iter(range(5)))) == [0, 1, 2, 3, 4]


def test_decoding_in_two_threads_leaves_the_warning_filters_as_they_were(tmp_path: Path) -> None:
    """hq72 2: catch_warnings in two decoding threads at once left ('ignore', Warning) in the process's
    filters: every later warning of the caller's program was hidden."""
    buffer = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer)
    raw, pre = buffer.read_bytes(), Preprocess(height=8, width=8)
    before = list(warnings.filters)

    def decode() -> None:
        for _ in range(300):
            load_sample(raw, pre)

    threads = [threading.Thread(target=decode) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == before


def test_a_cancel_at_the_last_progress_step_writes_nothing(calibrated: tuple[Path, Path]) -> None:
    """hq72 11: convert's last progress advance came after the model was written: a cancel raised there
    (a notebook's Ctrl-C in a progress callback) raised with the whole model in place."""
    cnn, table = calibrated

    class Cancel(Exception):
        pass

    for to, options in (("int8", {"calibration": table, "prefer": "accuracy"}), ("fp16", {})):
        calls: list[str] = []

        def counting(label: str, total: int, calls: list[str] = calls) -> Callable[[int], None]:
            return lambda n: calls.append(label)

        quantkit.convert(cnn, to=to, output=table.parent / f"all.{to}.onnx", progress=counting, **options)
        last = len(calls)
        seen = [0]

        def cancelling(
            label: str, total: int, seen: list[int] = seen, last: int = last
        ) -> Callable[[int], None]:
            def advance(n: int) -> None:
                seen[0] += 1
                if seen[0] == last:
                    raise Cancel(label)

            return advance

        out = table.parent / f"cancelled.{to}.onnx"
        with pytest.raises(Cancel):
            quantkit.convert(cnn, to=to, output=out, progress=cancelling, **options)
        assert not out.exists(), to


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (lambda: ConvertConfig(min_sqnr=True), "--min-sqnr takes one number; got True"),
        (lambda: ConvertConfig(concat_range_ratio=float("nan")), "--concat-range-ratio takes one number"),
        (lambda: ConvertConfig(percentile=[99.9, 99.99]), "--percentile takes one number"),
        (lambda: Float16Config(min_sqnr=float("nan")), "--min-sqnr takes one number; got nan"),
        (lambda: Float16Config(min_sqnr="inf"), "--min-sqnr must be a finite number of dB"),  # hq81 H3
        (
            lambda: AccuracyBudget(max_drop=True, validation=ImageSelection(Path("."))),
            "--max-drop takes one number; got True",
        ),
        (lambda: ConvertConfig(min_sqnr=np.bool_(True)), "--min-sqnr takes one number"),
        (lambda: quantkit.Preprocess(mean=True), "--mean takes comma-separated numbers"),
        (lambda: quantkit.Preprocess(resize="letterbox", pad="abc"), "--pad takes one number; got 'abc'"),
        (lambda: quantkit.Preprocess(resize="letterbox", pad=[114]), "--pad takes one number; got .114.$"),
    ],
)
def test_a_number_is_one_number(settings: Callable[[], object], message: str) -> None:
    """hq72 15: min_sqnr=True was read as 1 dB, concat_range_ratio=nan passed its `<= 1` check, and
    Float16Config's min_sqnr=nan its `< 0` one (the fallback then never ran)."""
    with pytest.raises(quantkit.ConfigError, match=message.replace("(", r"\(")):
        settings()


def test_numbers_of_every_numeric_type_are_kept() -> None:
    assert ConvertConfig(min_sqnr=np.float32(15), percentile="99.9").min_sqnr == 15.0
    assert ConvertConfig(percentile="99.9").percentile == pytest.approx(99.9)
    assert Float16Config(min_sqnr=np.int64(40)).min_sqnr_db == 40.0


def test_calibrates_summary_stands_for_its_table(tmp_path: Path, image_dir: Path) -> None:
    """hq72 15: convert took calibrate's summary as calibration=, sensitivity refused it."""
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    summary = quantkit.calibrate(cnn, data=image_dir, output=tmp_path / "cnn.calib.json", num_images=4)
    by_summary = quantkit.sensitivity(cnn, calibration=summary, data=image_dir, num_images=2, top=1)
    by_path = quantkit.sensitivity(cnn, calibration=summary.table, data=image_dir, num_images=2, top=1)
    assert by_summary.to_dict()["layers"] == by_path.to_dict()["layers"]
    assert len(by_summary.to_dict()["layers"]) > 0


def test_a_summary_stands_for_its_table_after_a_chdir_and_not_after_a_rewrite(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq103 F1: a summary made with a relative output= kept the relative path: after os.chdir, convert
    read the new folder's table of that name (other preprocessing, other bytes) with nothing said; a
    second calibrate to the same path changed what every earlier summary stood for."""
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(second)
    other = quantkit.calibrate(cnn, data=image_dir, output="t.calib.json", num_images=4)
    monkeypatch.chdir(first)
    unit = quantkit.Preprocess(preset="unit")
    summary = quantkit.calibrate(cnn, data=image_dir, output="t.calib.json", num_images=4, preprocess=unit)
    assert summary.table == first / "t.calib.json" and other.table == second / "t.calib.json"
    quantkit.convert(cnn, calibration=first / "t.calib.json", output=tmp_path / "p.onnx")
    monkeypatch.chdir(second)
    quantkit.convert(cnn, calibration=summary, output=tmp_path / "s.onnx")
    assert (tmp_path / "s.onnx").read_bytes() == (tmp_path / "p.onnx").read_bytes()
    quantkit.calibrate(cnn, data=image_dir, output=first / "t.calib.json", num_images=3)  # replaced
    with pytest.raises(quantkit.CalibrationError, match=r"was replaced after this summary was made"):
        quantkit.convert(cnn, calibration=summary, output=tmp_path / "late.onnx")
    assert not (tmp_path / "late.onnx").exists()


def test_results_holding_arrays_compare_by_value(calibrated: tuple[Path, Path], tmp_path: Path) -> None:
    """hq103 F4: `a == b` of two convert results (and `a in [b]`) raised numpy's 'truth value of an array
    is ambiguous' from the plan's scales and rounded weights."""
    from quantkit.results import QuantParams, same_value

    cnn, table = calibrated
    a = quantkit.convert(cnn, calibration=table, output=tmp_path / "a.onnx")
    b = quantkit.convert(cnn, calibration=table, output=tmp_path / "b.onnx")
    assert isinstance(a, quantkit.ConvertSummary) and a.plan.activations  # arrays inside
    b = dataclasses.replace(b, speed=a.speed, speed_plan=a.speed_plan, warnings=a.warnings)  # timings differ
    assert a == b and a in [b] and a.plan == b.plan
    c = quantkit.convert(cnn, calibration=table, output=tmp_path / "c.onnx", method="minmax")
    assert a != c
    one = QuantParams(np.array(0.5, np.float32), np.array(0, np.uint8))
    assert one == QuantParams(np.array(0.5, np.float32), np.array(0, np.uint8))
    assert one != QuantParams(np.array(0.5, np.float32), np.array(0, np.int8))  # the type is the meaning
    assert one != QuantParams(np.array(0.25, np.float32), np.array(0, np.uint8))
    assert same_value({"x": np.array([np.nan])}, {"x": np.array([np.nan])})
    assert not same_value((np.zeros(2),), [np.zeros(2)])
