"""The command line: the happy path end to end, and one clear line with exit code 2 for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.cli import main
from tests.conftest import conv_params, make_model


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["quantkit", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def tiny_cnn(path: Path, seed: int = 0, inputs: int = 1) -> Path:
    p1, p2 = conv_params(4, 3, 3, seed), conv_params(5, 4, 1, seed + 1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Conv", ["g", "w2", "b2"], ["h"], name="c2"),
        helper.make_node("Flatten", ["h"], ["y"], name="flat"),
    ]
    model = make_model(nodes, {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]})
    if inputs == 2:
        model.graph.input.append(helper.make_tensor_value_info("x2", onnx.TensorProto.FLOAT, [1, 3, 16, 16]))
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    return tiny_cnn(tmp_path / "cnn.onnx")


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


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("calibrate", "convert", "compare"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and "Example: quantkit " + command in " ".join(out.split())


BAD_MODELS = {
    "missing": (None, "does not exist"),
    "empty": (b"", "is empty"),
    "random bytes": (bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)), "re-export"),
    "text": (b"this is not a model\n" * 10, "re-export"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_files(
    case: str, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, phrase = BAD_MODELS[case]
    model = tmp_path / "bad.onnx"
    if content is not None:
        model.write_bytes(content)
    table = tmp_path / "t.json"
    code, _, err = run(["calibrate", str(model), "--images", str(image_dir), "--output", str(table)], capsys)
    assert_one_line_error(code, err, phrase)
    assert not table.exists() and not table.with_suffix(".npz").exists()


def test_truncated_model(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(cnn.read_bytes()[: cnn.stat().st_size // 2])
    code, _, err = run(
        ["calibrate", str(truncated), "--images", str(image_dir), "-o", str(tmp_path / "t.json")], capsys
    )
    assert_one_line_error(code, err, "re-export")


def test_several_inputs(tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_cnn(tmp_path / "two.onnx", inputs=2)
    code, _, err = run(
        ["calibrate", str(model), "--images", str(image_dir), "-o", str(tmp_path / "t.json")], capsys
    )
    assert_one_line_error(code, err, "2 inputs", "one image input")


def test_table_for_another_model_is_refused(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "cnn.calib.json"
    assert run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    other = tiny_cnn(tmp_path / "other.onnx", seed=5)
    out = tmp_path / "other.int8.onnx"
    code, _, err = run(["convert", str(other), "-c", str(table), "-o", str(out)], capsys)
    assert_one_line_error(code, err, "made for another model", "quantkit calibrate")
    assert not out.exists()


def test_output_may_not_overwrite_the_input(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "cnn.calib.json"
    assert run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    before = cnn.read_bytes()
    code, _, err = run(["convert", str(cnn), "-c", str(table), "-o", str(cnn)], capsys)
    assert_one_line_error(code, err, "is an input file")
    assert cnn.read_bytes() == before


def test_output_folder_missing(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["calibrate", str(cnn), "--images", str(image_dir), "-o", str(tmp_path / "no" / "t.json")], capsys
    )
    assert_one_line_error(code, err, "does not exist", "create it first")


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--input-size", "big"], "HxW"),
        (["--mean", "1,x,3"], "comma-separated numbers"),
        (["--mean", "1,2"], "--mean has 2 values"),
        (["--num-images", "0"], "at least 1"),
        (["--bins", "100"], "at least 2048"),
    ],
)
def test_bad_options(
    args: list[str],
    phrase: str,
    cnn: Path,
    image_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(
        ["calibrate", str(cnn), "--images", str(image_dir), "-o", str(tmp_path / "t.json"), *args], capsys
    )
    assert_one_line_error(code, err, phrase)


def test_image_folder_problems(cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(
        ["calibrate", str(cnn), "--images", str(empty), "-o", str(tmp_path / "t.json")], capsys
    )
    assert_one_line_error(code, err, "no images")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"{i}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, _, err = run(
        ["calibrate", str(cnn), "--images", str(broken), "-o", str(tmp_path / "t.json")], capsys
    )
    assert_one_line_error(code, err, "only 0 of 3 images")
    assert not (tmp_path / "t.json").exists()


def test_a_few_bad_images_are_skipped_and_reported(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in sorted(image_dir.rglob("*.png"))[:6]:
        (mixed / p.name).write_bytes(p.read_bytes())
    (mixed / "zero.png").write_bytes(b"")
    code, out, err = run(
        ["calibrate", str(cnn), "--images", str(mixed), "-o", str(tmp_path / "t.json")], capsys
    )
    assert code == 0, err
    assert "on 6 images" in out and "skipped 1 unreadable file(s): zero.png" in out


def test_damaged_table(cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "t.json"
    table.write_text("{")
    table.with_suffix(".npz").write_bytes(b"")
    code, _, err = run(["convert", str(cnn), "-c", str(table), "-o", str(tmp_path / "o.onnx")], capsys)
    assert_one_line_error(code, err, "recalibrate")


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
