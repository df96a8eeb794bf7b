"""The command line: the happy path end to end, and one clear line with exit code 2 for bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.conftest import conv_params, make_model, tiny_cnn
from tests.helpers import assert_one_line_error, run


def test_calibrate_convert_compare(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "cnn.calib.json"
    code, out, err = run(
        ["calibrate", str(cnn), "--images", str(image_dir), "--output", str(table), "--num-images", "10"],
        capsys,
    )
    assert code == 0, err
    assert "on 10 images" in out and table.is_file() and table.with_suffix(".npz").is_file()
    meta = json.loads(table.read_text())["meta"]
    assert meta["images"]["count"] == 10 and len(meta["model_sha256"]) == 64
    assert set(meta["versions"]) >= {"quantkit", "onnx", "onnxruntime"}

    int8 = tmp_path / "cnn.int8.onnx"
    code, out, err = run(["convert", str(cnn), "--to", "int8", "-c", str(table), "-o", str(int8)], capsys)
    assert code == 0, err
    assert "Conv" in out and "folded" in out and int8.is_file()
    props = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert json.loads(props["quantkit.settings"])["method"] == "mse"
    assert json.loads(props["quantkit.preprocess"])["height"] == 16

    report = tmp_path / "report.json"
    markdown = tmp_path / "report.md"
    code, out, err = run(
        [
            "compare",
            str(cnn),
            str(int8),
            "--images",
            str(image_dir),
            "--runs",
            "5",
            "--warmup",
            "1",
            "--json",
            str(report),
            "--markdown",
            str(markdown),
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["schema"] == "quantkit-compare/1" and data["images"] == 24
    output = data["outputs"][0]
    assert output["sqnr_db"] > 12 and 0.0 <= output["top1_agreement"] <= 1.0  # an untrained random CNN
    assert data["latency"]["speedup_p50"] > 0 and data["settings"]["threads"] == 1
    assert "flags" in data["environment"] and "| size |" in markdown.read_text()
    page = markdown.read_text()  # hq121 F6: no threads, runs, CPU, versions or preprocessing on the page
    assert "1 thread(s), batch 1, 5 interleaved runs after 1 warm-up" in page
    assert f"onnxruntime {data['environment']['versions']['onnxruntime']}" in page
    assert "| preprocessing | 16x16 NCHW RGB, resize crop" in page and "(recorded in the model) |" in page


def test_compare_with_labels_from_folders(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("dogs\ncats\nbirds\nfish\nfrogs\n")
    code, out, err = run(
        [
            "compare",
            str(cnn),
            str(cnn),
            "--images",
            str(image_dir),
            "--labels",
            str(labels),
            "--runs",
            "2",
            "--warmup",
            "0",
        ],
        capsys,
    )
    assert code == 0, err
    assert "accuracy on 24 labelled images" in out and "+0.00" in out  # a model against itself
    assert "match no class" not in err
    argv = ["compare", str(cnn), str(cnn), "--images", str(image_dir), "--labels", str(labels), "--runs", "0"]
    labels.write_text("dogs\ncats\nbirds\nfish\nfrogs\n", encoding="utf-8-sig")  # Notepad's BOM (hunt39)
    code, out, err = run(argv, capsys)
    assert code == 0 and "accuracy on 24 labelled images" in out and "match no class" not in err
    labels.write_text("dogs\nkittens\nbirds\nfish\nfrogs\n")  # the cats/ folder matches none: said
    markdown = tmp_path / "report.md"
    code, out, err = run([*argv, "--markdown", str(markdown)], capsys)
    assert code == 0 and "accuracy on 12 labelled images" in out
    assert "12 of 24 image(s) match no class in the labels file (e.g." in " ".join(err.split())
    page = markdown.read_text()  # hq68 10: a CI page read without the log said none of it
    assert "| images compared | 24 |" in page and "| images labelled | 12 |" in page
    assert "- warning: 12 of 24 image(s) match no class in the labels file" in page
    one = tmp_path / "one" / "dogs"
    one.mkdir(parents=True)
    one.joinpath("a.png").write_bytes(next((image_dir / "dogs").glob("*.png")).read_bytes())
    code, out, err = run(["compare", *argv[1:3], "--images", str(one.parent), *argv[5:]], capsys)
    assert code == 0 and "accuracy on 1 labelled image " in out, err  # hq68 19: 'images


def test_a_four_channel_nhwc_model_calibrates_on_its_arrays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt52 B3: M-LSD's [1,320,320,4] (RGB and a channel of ones), at opset 11, was read as C 320, H 320,
    W 4 by the opset upgrade's check, which refused the arrays' 320x320 as an --input-size never given: no
    table, so no int8 at all, by the route the images' error recommends."""
    p = conv_params(6, 4, 3, 4)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = make_model(nodes, {"w": p["w"], "b": p["b"]}, input_shape=(1, 16, 16, 4), opset=11)
    src, table, data = tmp_path / "m.onnx", tmp_path / "t.json", tmp_path / "arrays"
    onnx.save(model, str(src))
    data.mkdir()
    for k in range(4):
        np.save(data / f"{k}.npy", np.random.default_rng(k).standard_normal((1, 16, 16, 4), np.float32))
    code, _, err = run(["calibrate", str(src), "--inputs", str(data), "-o", str(table)], capsys)
    assert code == 0, err
    assert run(["convert", str(src), "-c", str(table), "-o", str(tmp_path / "q.onnx")], capsys)[0] == 0


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("calibrate", "convert", "compare"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and "Example: quantkit " + command in " ".join(out.split())


def test_unknown_choice_is_a_usage_error(cnn: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["convert", str(cnn), "-c", "t.json", "-o", "o.onnx", "--method", "magic"], capsys)
    assert code == 2 and "magic" in err and "Traceback" not in err


def test_nhwc_model_with_a_fixed_batch_of_two(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Layout from the input shape; batches padded to the fixed size and outputs cut back, so 5 images
    count as 5; latency at the batch the model fixes."""
    p = conv_params(6, 3, 3, 4)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    model = make_model(nodes, {"w": p["w"], "b": p["b"]}, input_shape=(2, 12, 12, 3))
    src, table, out, report = (tmp_path / n for n in ("m.onnx", "t.json", "q.onnx", "r.json"))
    onnx.save(model, str(src))
    five = ["--num-images", "5"]
    assert run(["calibrate", str(src), "--images", str(image_dir), "-o", str(table), *five], capsys)[0] == 0
    assert run(["convert", str(src), "-c", str(table), "-o", str(out)], capsys)[0] == 0
    code, _, err = run(
        [
            "compare",
            str(src),
            str(out),
            "--images",
            str(image_dir),
            *five,
            "--runs",
            "2",
            "--json",
            str(report),
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["images"] == 5 and data["settings"]["batch_size_latency"] == 2
    assert json.loads(table.read_text())["meta"]["preprocess"]["layout"] == "NHWC"


def test_compare_says_when_it_falls_back_to_default_preprocessing(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A float16 model converted without a table records no preprocessing: a detector read with ImageNet
    normalisation gives numbers that look plausible and mean nothing, so compare says what it used."""
    base = ["compare", str(cnn), str(cnn), "--images", str(image_dir), "--runs", "2", "--warmup", "0"]
    code, out, err = run(base, capsys)
    assert code == 0, err
    shown = " ".join(out.split())
    assert "preprocessing (defaults): 16x16 NCHW RGB, resize crop, mean 123.675,116.28,103.53" in shown
    assert "neither model records its preprocessing" in shown
    code, out, err = run([*base, "--preset", "unit"], capsys)
    assert code == 0, err
    shown = " ".join(out.split())
    assert "preprocessing (from the flags)" in shown and "neither model records" not in shown
    data = tmp_path / "c.json"
    assert run([*base, "--json", str(data)], capsys)[0] == 0
    assert json.loads(data.read_text())["settings"]["preprocess_source"] == "defaults"


def test_compare_without_timing_prints_no_latency_table(
    cnn: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--runs 0 measures no latency: the table and the speedup were printed empty ("-")."""
    base = ["compare", str(cnn), str(cnn), "--images", str(image_dir), "--warmup", "0"]
    code, out, err = run([*base, "--runs", "0"], capsys)
    assert code == 0, err
    assert "latency, ms" not in out and "speedup (p50)" not in out and "size " in out
    code, out, err = run([*base, "--runs", "2"], capsys)
    assert code == 0, err
    assert "latency, ms" in out and "speedup (p50)" in out


def test_a_log_that_is_no_terminal_hears_which_step_is_at_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CI log (stderr no terminal) got nothing from a 20-minute convert until it ended; now a line every
    HEARTBEAT_S names the latest step not done yet, and none under --quiet."""
    import importlib
    import time

    app = importlib.import_module("quantkit.cli.app")  # the module: quantkit.cli.app is the typer app
    monkeypatch.setattr(app, "HEARTBEAT_S", 0.05)
    with app.progress_bars() as progress:
        progress("converting", 4)(1)
        progress("measuring each layer's recovery", 3)(2)
        time.sleep(0.3)
    err = capsys.readouterr().err
    assert "still working after 0 s: measuring each layer's recovery, 2 of 3 step(s) done\n" in err
    assert "converting," not in err  # the outer step's count stands while the inner one runs
    monkeypatch.setitem(app.VERBOSITY, "level", -1)
    with app.progress_bars() as progress:
        progress("converting", 4)
        time.sleep(0.2)
    assert capsys.readouterr().err == ""


def test_the_fallback_search_ends_its_step_when_it_stops_early(
    cnn: Path, tmp_path: Path, image_dir: Path
) -> None:
    """A search that met its target at once left its step at 0 of N, and a CI log's "still working" line
    named it for the minutes the speed plan took after it (hunt29's AGLLNet: 0 of 126 step(s) done)."""
    from quantkit import pipeline
    from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection

    table = tmp_path / "t.json"
    pipeline.calibrate(cnn, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    steps: dict[str, list[int]] = {}

    def progress(label: str, total: int) -> Callable[[int], None]:
        counts = steps.setdefault(label, [total, 0])
        return lambda n: counts.__setitem__(1, counts[1] + n)

    pipeline.convert(cnn, table, tmp_path / "q.onnx", ConvertConfig(min_sqnr=1.0), progress=progress)
    total, done = steps["measuring each layer's recovery"]
    assert total > 0 and done == total, steps
    # hunt50 C1: an 88 MB ISNet spent 7 minutes under "converting, 0 of 4" with nothing named: the FP32
    # reference and the corrections' choice are steps of their own, each ended
    for label in ("running FP32 on the table's samples", "choosing the corrections: range cap, rebalancing"):
        (total, done), *others = [counts for name, counts in steps.items() if name.startswith(label)]
        assert not others and total > 0 and done == total, steps
    steps.clear()
    pipeline.convert(cnn, table, tmp_path / "b.onnx", ConvertConfig(bias_correction=False), progress=progress)
    assert all(done == total for total, done in steps.values()), steps


def test_convert_in_a_log_beats_and_keeps_stdout_clean(
    cnn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    app = importlib.import_module("quantkit.cli.app")
    code, quiet_out, _ = run(["convert", str(cnn), "--to", "fp16", "-o", str(tmp_path / "a.onnx")], capsys)
    assert code == 0
    monkeypatch.setattr(app, "HEARTBEAT_S", 0.001)
    code, out, err = run(["convert", str(cnn), "--to", "fp16", "-o", str(tmp_path / "b.onnx")], capsys)
    assert code == 0 and "still working after 0 s: " in err
    assert out.replace("b.onnx", "a.onnx") == quiet_out
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


_TELEMETRY_PROBE = """
import builtins, os, sys
seen = []
real_import = builtins.__import__
def spy(name, *args, **kwargs):
    if name == "onnxruntime" and not seen:
        seen.append(os.environ.get("ORT_DISABLE_TELEMETRY", "unset"))
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
import quantkit.cli
import quantkit.runtime  # loads onnxruntime, if quantkit.cli has not already
print(seen[0], os.environ.get("ORT_DISABLE_TELEMETRY", "unset"))
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "1 1"), ("0", "0 0")])
def test_the_command_line_turns_off_onnxruntime_telemetry_before_it_loads(
    given: str | None, expected: str
) -> None:
    """An unwritable $HOME made onnxruntime print a telemetry warning on every command; a value
    the user set is theirs."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    if given is not None:
        env["ORT_DISABLE_TELEMETRY"] = given
    done = subprocess.run(
        [sys.executable, "-c", _TELEMETRY_PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == expected.split()


def _strict(text: str) -> object:
    """text as JSON, refusing Infinity and NaN (which Python writes and JSON does not have)."""

    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_compare_json_of_identical_outputs_is_strict_json(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt31: a lossless candidate's record held `"worst_kind": {"sqnr_db": Infinity}` beside
    `"sqnr_db": "inf"`, and JSON.parse failed on it. Every non-finite figure is written as text."""
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="rows")  # [N, 3, H*W]: a kinds axis
    model = make_model([node], {"shape": np.array([0, 3, -1], np.int64)})
    path = tmp_path / "rows.onnx"
    onnx.save(model, str(path))
    report = tmp_path / "report.json"
    argv = ["compare", str(path), str(path), "--images", str(image_dir), "--runs", "0", "--json", str(report)]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    record = _strict(report.read_text())
    assert isinstance(record, dict)
    output = record["outputs"][0]
    assert output["sqnr_db"] == "inf" and output["worst_kind"]["sqnr_db"] == "inf"


def test_an_image_name_is_read_by_the_longest_class_it_begins_with(tmp_path: Path) -> None:
    """hunt39 F6: tiger_cat_0001.jpg was scored as 'tiger' (its first word, also a class): 8 of 11 photos
    named <class>_*.jpg after Keras's class names were scored against another class, 27 % for 73 %."""
    from quantkit.evaluate.labels import label_of

    lookup = {"tiger": 0, "tiger_cat": 1, "n01440764": 2, "cats": 3}
    for name, label in (
        ("tiger_cat_0001.jpg", 1),
        ("tiger_0001.jpg", 0),
        ("tiger_beetle_0001.jpg", 0),  # no class 'tiger_beetle' here: the longest that is one
        ("n01440764_tench.JPEG", 2),
        ("tiger_cat.jpg", 1),
        ("lion_1.jpg", -1),
    ):
        assert label_of(tmp_path / name, tmp_path, lookup) == label, name
    assert label_of(tmp_path / "cats" / "tiger_1.jpg", tmp_path, lookup) == 3  # the folder first


def test_labels_of_names_and_ids_score_every_image_of_their_folders(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A labels file whose lines give more names than classes (a line and its first word) is still read
    as its lines' count of classes (5 here: the tiny CNN's), and its folders' images all labelled."""
    from tests.conftest import tiny_cnn

    model = tiny_cnn(tmp_path / "m.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("dogs of all kinds\ncats small and large\nbirds\nfish\nmice\n")
    argv = ["compare", str(model), str(model), "--images", str(image_dir), "--labels", str(labels)]
    code, out, err = run([*argv, "--runs", "0"], capsys)
    assert code == 0 and "accuracy on 24 labelled images" in " ".join(out.split()), err + out


def test_class_names_match_folders_as_people_spell_them(tmp_path: Path) -> None:
    """hq68 6, 9, 17: Fashion-MNIST's 'Ankle boot' was read as 'Ankle' (its first word, unique), so
    `Ankle boot/` matched nothing; `bald_eagle/` never matched 'bald eagle', nor `T-shirt_top/` the class
    'T-shirt/top'; a macOS (NFD) folder name did not match its NFC labels file."""
    import unicodedata

    from quantkit.evaluate.labels import class_lookup, label_of

    names = ["T-shirt/top", "Trouser", "Ankle boot", "bald eagle", "zéro", "n01440764 tench, Tinca tinca"]
    lookup = class_lookup(names)
    for relative, label in (
        ("Ankle boot/00007_9.png", 2),
        ("ankle_boot/1.png", 2),
        ("bald_eagle/n01614925_bald_eagle.JPEG", 3),
        ("T-shirt_top/1.png", 0),
        ("Trouser/batch1/00030_3.png", -1),  # only the folder an image is in (hq70 12: 2024/3/15/ read as 3)
        (unicodedata.normalize("NFD", "zéro") + "/00003_0.png", 4),
        ("n01440764_tench.JPEG", 5),
        ("Ankle_3.png", 2),  # a first word no other class shares names its class, as an id does
    ):
        assert label_of(tmp_path / relative, tmp_path, lookup) == label, relative
    emnist = class_lookup(["A", "B", "a", "b"])  # hq70 2: case-folded, EMNIST's classes were lost
    assert [label_of(tmp_path / c / "1.png", tmp_path, emnist) for c in ("A", "a", "b")] == [0, 2, 3]
    shared = class_lookup(["great white shark", "great grey owl", "tench"])
    assert "great" not in shared and shared["tench"] == 2  # a first word two classes share names neither


def test_a_labels_file_of_class_names_reads_whole_lines(tmp_path: Path) -> None:
    """hunt39 F7: PyTorch's imagenet_classes.txt ('great white shark', 'great grey owl') was read by first
    words, 905 distinct of 1000, and refused as 'lists 905 classes'."""
    from quantkit.errors import ConfigError
    from quantkit.evaluate.labels import class_lookup, read_classes

    labels = tmp_path / "labels.txt"
    labels.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n")
    lookup = class_lookup(read_classes(labels))
    assert lookup["n01440764"] == 0 and lookup["n01443537_goldfish"] == 1
    labels.write_text("great white shark\ngreat grey owl\ntench\n")
    assert read_classes(labels) == ["great white shark", "great grey owl", "tench"]
    assert class_lookup(read_classes(labels)) == {"great_white_shark": 0, "great_grey_owl": 1, "tench": 2}
    labels.write_text("cats\ndogs\ncats\n")  # ImageNet's names hold two 'crane's: a name neither takes
    assert len(read_classes(labels)) == 3 and class_lookup(read_classes(labels)) == {"dogs": 1}
    labels.write_text("\n\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_classes(labels)
    labels.write_text('{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}')
    with pytest.raises(ConfigError, match="is JSON; give a text file, one class per line"):
        read_classes(labels)  # hq68 19: 'lists 1 classes


def test_index_and_name_lines_out_of_order_are_read_by_their_ids(tmp_path: Path) -> None:
    """hq121 F1: `1 dog` listed before `0 cat` made dog class 0; the images in folder 1/ were scored
    against cat, a top-1 change of -4.17 points read +4.17 and shrink's --max-drop 1 passed. Ids that
    count no classes (years) leave the lines in file order."""
    from quantkit.evaluate.labels import class_lookup, label_of, read_classes

    labels = tmp_path / "labels.txt"
    for text in (
        "1 dog\n0 cat\n3 Ankle boot\n2 bald eagle\n",
        "2: dog\n1: cat\n4: Ankle boot\n3: bald eagle\n",
    ):
        labels.write_text(text)
        lookup = class_lookup(read_classes(labels))
        assert [lookup[k] for k in ("cat", "dog", "bald_eagle", "Ankle_boot")] == [0, 1, 2, 3]
        first = text[0]  # the id of dog's line: 1 counted from 0, 2 from 1
        assert label_of(tmp_path / first / "a.png", tmp_path, lookup) == 1
    labels.write_text("2019 Toyota\n2017 Honda\n")
    assert read_classes(labels) == ["2019 Toyota", "2017 Honda"]
    from quantkit.errors import ConfigError
    from quantkit.evaluate.labels import require_labels_fit

    # hq125 F4: ImageNet's labels for YOLOX read 'declared: 3549 classes', its anchor rows
    with pytest.raises(ConfigError, match=r"declared: 3549, as top-1 reads .* \(a detector's rows are no"):
        require_labels_fit([3549], labels)


def test_a_labels_file_of_index_and_name_lines_matches_folders_by_name(tmp_path: Path) -> None:
    """hq89 F1: with `0 cat` lines the first words were the numbers, so `bird/0.png` was scored as class
    0 by its file name (its folder matched nothing): 25 % top-1 where the truth was 20 %, no warning."""
    from quantkit.evaluate.labels import class_lookup, label_of

    forms = (["0 cat", "1 dog", "2 bird"], ["1: cat", "2: dog", "3: bird"], ["0,cat", "1\tdog", "2 bird"])
    for lines in forms:
        lookup = class_lookup(lines)  # each folder's own class, whatever number its file names hold
        for photo in ("0.png", "2.png"):
            assert [label_of(tmp_path / c / photo, tmp_path, lookup) for c in ("cat", "dog", "bird")] == [
                0,
                1,
                2,
            ]
    numbered = class_lookup(["0 cat", "1 dog", "2 bird"])  # folders named by index still match
    assert label_of(tmp_path / "2" / "0.png", tmp_path, numbered) == 2
    assert "tench" not in class_lookup(["n01440764 tench", "n01443537 goldfish"])  # not indices: ids
    # hq91 F2, hq92 F1: a number that is one line's name and another's index names neither
    shifted = class_lookup(["0 1", "1 2", "2 3"])
    assert [label_of(tmp_path / c / "x.png", tmp_path, shifted) for c in ("0", "1", "2", "3")] == [
        0,
        -1,
        -1,
        2,
    ]
    for based in (["1 0", "2 1", "3 2"], ["1: 0", "2: 1", "3: 2"], ["1,0", "2,1", "3,2"]):  # hq94 F2
        lookup = class_lookup(based)
        assert [label_of(tmp_path / c / "x.png", tmp_path, lookup) for c in ("0", "1", "2", "3")] == [
            0,
            -1,
            -1,
            2,
        ]
    years = class_lookup(["0 20", "1 30"])  # names clashing with no index: the folders they name
    assert [label_of(tmp_path / c / "x.png", tmp_path, years) for c in ("20", "30", "0")] == [0, 1, 0]


def test_markdown_warnings_show_file_names_as_written() -> None:
    """hq70 11: a file named '<b>x</b>|*y*.png' in a warning rendered bold, italic, and split the table."""
    from quantkit.reports.markdown import escaped

    assert escaped("skipped a_b.png (<b>x</b>|*y*)") == r"skipped a\_b.png (&lt;b&gt;x&lt;/b&gt;\|\*y\*)"


def test_compare_says_when_images_are_copies(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq68 8: calibrate warned of byte-identical copies, compare counted each copy again without a word."""
    folder = tmp_path / "copies"
    folder.mkdir()
    png = next(image_dir.rglob("*.png")).read_bytes()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(png)
    (folder / "d.png").write_bytes(sorted(image_dir.rglob("*.png"))[1].read_bytes())
    code, _, err = run(["compare", str(cnn), str(cnn), "--images", str(folder), "--runs", "0"], capsys)
    assert code == 0 and "2 of the 4 images compared hold the same bytes as another one" in " ".join(
        err.split()
    )


def test_a_line_break_in_a_path_keeps_the_error_one_line_and_short_equals_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq114 F10: a path holding a newline split the one error line in two; -o=eq.onnx wrote '=eq.onnx'."""
    odd = tmp_path / "a\nb.onnx"
    code, _, err = run(["check", str(odd)], capsys)
    assert_one_line_error(code, err, "a\\nb.onnx")
    model = tiny_cnn(tmp_path / "m.onnx")
    code, _, err = run(["convert", str(model), "--to", "fp16", "-o=eq.onnx"], capsys)
    assert_one_line_error(code, err, "-o=eq.onnx gives -o the value '=eq.onnx'; write -o eq.onnx")


def test_a_pipe_as_the_table_and_a_binary_exclusion_file_are_named_for_what_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq146 F8: a named pipe given as -c read 'does not exist'; a non-UTF-8 --exclude-from file read
    '(UnicodeDecodeError); check the path' of a path that was right."""
    import os

    from tests.conftest import tiny_cnn
    from tests.helpers import assert_one_line_error, run

    model = tiny_cnn(tmp_path / "m.onnx")
    os.mkfifo(tmp_path / "t.json")
    code, _, err = run(
        ["convert", str(model), "-c", str(tmp_path / "t.json"), "-o", str(tmp_path / "o.onnx")], capsys
    )
    assert_one_line_error(code, err, f"calibration table {tmp_path / 't.json'} is no regular file (a pipe")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\xd8conv")
    argv = [
        "convert",
        str(model),
        "--to",
        "fp16",
        "-o",
        str(tmp_path / "o.onnx"),
        "--exclude-from",
        str(tmp_path / "bin.txt"),
    ]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, f"--exclude-from {tmp_path / 'bin.txt'} is not text quantkit can read")
