"""The API's arguments as a library user writes them (hq144): numpy scalars where floats go, a table's own
preprocessing given back, one .npz file, wrong keywords and callbacks, each a result or one ConfigError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import quantkit
from quantkit.config import CompareConfig, ConvertConfig
from tests.conftest import tiny_cnn


def test_numpy_floats_and_spellings_of_one_number_are_one_setting() -> None:
    """hq144 F1, F2: np.float32 score_threshold / smoothquant raised json's TypeError after the whole run;
    smoothquant 0.5, '0.5', '0.50' and '.5' wrote four different files."""
    spellings = (0.5, "0.5", "0.50", ".5", np.float32(0.5))
    assert {ConvertConfig(smoothquant=a).smoothquant for a in spellings} == {"0.5"}
    for threshold in (np.float32(0.3), "0.3", 0.3):
        config = CompareConfig(images=None, detection_threshold=threshold)  # type: ignore[arg-type]
        assert config.detection_threshold == 0.3 and type(config.detection_threshold) is float
    json.dumps(ConvertConfig(smoothquant=np.float32(0.25)).to_dict())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: quantkit.shrink("m.onnx", data="d", output_dir="o", method="minmax"),  # type: ignore[call-arg]
            "quantkit.shrink has no option method (shrink takes convert's options as convert_options=",
        ),
        (
            lambda: quantkit.sensitivity("m.onnx", keep=3),  # type: ignore[call-arg]
            "quantkit.sensitivity has no option keep (the report's .best_together(n) gives how many of its "
            "first layers to keep float together, at most n: k = report.best_together(n); [row.node for row "
            "in report.layers[:k]])",
        ),
        (  # hq157 F2: no hint, and a list without max_drop, validation, workers ...
            lambda: quantkit.convert("m.onnx", output="o.onnx", calibration="t.json", max_dorp=1),
            "quantkit.convert(to='int8') has no option max_dorp (did you mean max_drop=?); it takes "
            "activations,",
        ),
        (
            lambda: quantkit.calibrate("m.onnx", num_image=3),  # type: ignore[call-arg]
            "quantkit.calibrate has no option num_image (did you mean num_images=?); it takes model, data",
        ),
        (
            lambda: quantkit.check("m.onnx", "tensorrt"),  # type: ignore[misc]
            "quantkit.check: too many positional arguments; give the model (compare: both) by position",
        ),
        (
            lambda: quantkit.shrink("m.onnx", data="d", output_dir="o", convert_options={"workers": 2}),
            "shrink's convert_options cannot set workers: pass compact=, target=, workers=",
        ),
        (  # hq169 F2: 'convert has no option to (did you mean to=?); it takes ..., to, ...'
            lambda: quantkit.shrink("m.onnx", data="d", output_dir="o", convert_options={"to": "fp16"}),
            "shrink's convert_options cannot set to: shrink converts to int8 with the table it calibrates "
            "and writes the model in output_dir (quantkit.convert takes them)",
        ),
        (  # hq170 F3: the list and the hint named options shrink refuses (calibration=, workers=...)
            lambda: quantkit.shrink(
                "m.onnx", data="d", output_dir="o", convert_options={"calibration_table": 1}
            ),
            "shrink's convert_options has no option calibration_table; it takes activations, ",
        ),
        (
            lambda: quantkit.calibrate("m.onnx", data="d", progress=lambda: None),
            "progress takes a callable start(label, total) -> advance(n);",
        ),
    ],
)
def test_a_keyword_or_callback_it_does_not_take_is_one_line(call: object, message: str) -> None:
    """hq144 F9, F10, F13 (hq128 F2): Python's TypeError 'got an unexpected keyword argument', a progress
    start of another shape failing deep inside the run, 'convert has no option workers'."""
    with pytest.raises(quantkit.ConfigError) as raised:
        call()  # type: ignore[operator]
    assert str(raised.value).startswith(message), raised.value


def test_best_together_takes_a_whole_number_of_at_least_one() -> None:
    """hq144 F8: best_together('2') raised a TypeError, -1 answered None, 2.5 was taken."""
    report = quantkit.SensitivityReport((), 10.0, ((1, 12.0, 0.5),), 4, 1.0, {})
    assert report.best_together(2) == 1 and report.best_together(np.int64(1)) == 1
    for wrong in ("x", -1, 0, 2.5):
        with pytest.raises(quantkit.ConfigError, match="best_together's most"):
            report.best_together(wrong)  # type: ignore[arg-type]


def test_a_tables_own_preprocessing_given_back_is_that_preprocessing(tmp_path: Path, image_dir: Path) -> None:
    """hq144 F3: preprocess=summary.preprocess was refused as 'takes quantkit.Preprocess(...), not
    Preprocess'."""
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    asked = quantkit.Preprocess(preset="unit", resize="squash", bgr=True)
    first = quantkit.calibrate(cnn, data=image_dir, output=tmp_path / "a.calib.json", preprocess=asked)
    again = quantkit.calibrate(
        cnn, data=image_dir, output=tmp_path / "b.calib.json", preprocess=first.preprocess
    )
    assert again.preprocess == first.preprocess
    a, b = (json.loads(p.read_text()) for p in (first.table, again.table))
    assert a["tensors"] == b["tensors"]


def test_one_npz_file_is_read_as_the_one_file_of_a_folder(tmp_path: Path) -> None:
    """hq144 F5: data='s.npz' saved with np.savez(f, arr) (its array called 'arr_0') was refused, the
    same file in a folder read; a table written beside it is no sample of it."""
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    arrays = np.random.default_rng(0).random((6, 3, 16, 16), np.float32)
    (tmp_path / "in").mkdir()
    np.savez(tmp_path / "s.npz", arrays)
    np.savez(tmp_path / "in" / "s.npz", arrays)
    one = quantkit.calibrate(cnn, data=tmp_path / "s.npz", output=tmp_path / "f.calib.json")
    folder = quantkit.calibrate(cnn, data=tmp_path / "in", output=tmp_path / "d.calib.json")
    assert one.images_used == folder.images_used == 6
    with pytest.raises(quantkit.OutputError, match="the table's arrays"):  # its .npz the data file
        quantkit.calibrate(cnn, data=tmp_path / "s.npz", output=tmp_path / "s.json")


def test_shrinks_cache_folder_is_never_among_the_images(tmp_path: Path, image_dir: Path) -> None:
    """hq144 F6: cache_dir=<the image folder> wrote the tables among the images, after which every
    data=<that folder> was refused as holding both images and arrays."""
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    with pytest.raises(quantkit.OutputError, match=r"the cache folder .* lies in the images folder"):
        quantkit.shrink(cnn, data=image_dir, output_dir=tmp_path / "out", cache_dir=image_dir / "cache")
    assert not (image_dir / "cache").exists() and not (tmp_path / "out").exists()
    # hq149 F1: a list of files from two folders has '/' as its parent, which every cache folder lies in
    other = tmp_path / "other"
    other.mkdir()
    listed = sorted(p for p in image_dir.rglob("*") if p.is_file())[:6]
    for path in listed[:3]:
        (other / path.name).write_bytes(path.read_bytes())
    files = [*listed[3:], *sorted(other.iterdir())]
    fast = {"runs": 1, "warmup": 0}
    assert quantkit.shrink(cnn, data=files, output_dir=tmp_path / "o", cache_dir=tmp_path / "c", **fast)  # type: ignore[arg-type]
    with pytest.raises(quantkit.OutputError, match="lies in the images folder"):  # hq151 F3: their own folder
        quantkit.shrink(cnn, data=files, output_dir=tmp_path / "p", cache_dir=other, **fast)  # type: ignore[arg-type]
    # hq153 F2: a list reads only its files: a cache below their folder (photos in ~, ~/.cache) is no harm
    assert quantkit.shrink(cnn, data=files, output_dir=tmp_path / "q", cache_dir=other / "cache", **fast)  # type: ignore[arg-type]


def test_a_shrink_refused_before_it_runs_leaves_no_earlier_verdict(tmp_path: Path, image_dir: Path) -> None:
    """hq145 F2: shrink(max_drop=-1) raised its ConfigError and left the last run's PASS junit.xml, report
    and model in output_dir, where the command line's refusal removes them."""
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    out = tmp_path / "release"
    fast = {"runs": 1, "warmup": 0, "cache_dir": tmp_path / "cache"}
    assert quantkit.shrink(cnn, data=image_dir, output_dir=out, **fast).passed  # type: ignore[arg-type]
    assert (out / "junit.xml").is_file()
    with pytest.raises(
        quantkit.ConfigError, match=r"--max-drop .*; the earlier run's verdict in .* was removed"
    ):
        quantkit.shrink(cnn, data=image_dir, output_dir=out, max_drop=-1, **fast)  # type: ignore[arg-type]
    assert sorted(p.name for p in out.iterdir()) == [] and cnn.is_file()


def test_a_progress_start_that_returns_nothing_only_logs(tmp_path: Path, image_dir: Path) -> None:
    """hq149 F6: progress=print (a start that returns None) ran before the argument checks of 10a45de,
    then was refused inside the run."""
    steps: list[tuple[str, int]] = []
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    quantkit.calibrate(
        cnn, data=image_dir, output=tmp_path / "t.calib.json", progress=lambda *a: steps.append(a)
    )  # type: ignore[arg-type,func-returns-value]
    assert steps and all(isinstance(label, str) for label, _ in steps)


def test_image_options_beside_arrays_are_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq146 F1: calibrate and compare --inputs took --mean, --bgr and --input-size 64x64 on a 32x32
    model, read none of them, and the later warning told the user to check them."""
    from tests.helpers import assert_one_line_error, run

    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(4):
        np.save(folder / f"{k}.npy", np.random.default_rng(k).random((3, 16, 16), np.float32))
    table = tmp_path / "t.calib.json"
    argv = ["calibrate", str(cnn), "--inputs", str(folder), "-o", str(table)]
    code, _, err = run([*argv, "--bgr", "--input-size", "64x64"], capsys)
    assert_one_line_error(code, err, "--bgr, --input-size shape images; model-ready arrays (--inputs")
    assert not table.exists() and run(argv, capsys)[0] == 0
    code, _, err = run(["compare", str(cnn), str(cnn), "--inputs", str(folder), "--mean", "1,2,3"], capsys)
    assert_one_line_error(code, err, "--mean shape images;")
    with pytest.raises(quantkit.ConfigError, match="--preset shape images"):
        quantkit.calibrate(
            cnn, data=folder, output=tmp_path / "a.calib.json", preprocess=quantkit.Preprocess(preset="unit")
        )


def test_a_table_written_among_the_images_leaves_the_folder_an_image_folder(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq146 F4: calibrate -o IMAGES/t.json was taken, and from then on data=IMAGES was refused as holding
    both images and arrays (the table's .npz)."""
    import shutil

    images = tmp_path / "images"
    shutil.copytree(image_dir, images)
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    first = quantkit.calibrate(cnn, data=images, output=images / "t.calib.json")
    again = quantkit.calibrate(cnn, data=images, output=tmp_path / "u.calib.json")
    assert again.images_used == first.images_used > 0
    np.save(images / "stray.npy", np.zeros(3, np.float32))  # an array of no table: mixed, as before
    with pytest.raises(quantkit.ImageError, match="holds both images and arrays"):
        quantkit.calibrate(cnn, data=images, output=tmp_path / "v.calib.json")


def test_samples_with_json_sidecars_are_arrays_not_tables(tmp_path: Path) -> None:
    """hq151 F6: a folder of .npz samples each with its own .json sidecar read 'no images nor arrays'
    after 60da7b7 took every .npz beside a .json for a table's arrays."""
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    folder = tmp_path / "arr"
    folder.mkdir()
    for k in range(4):
        np.savez(folder / f"{k}.npz", x=np.random.default_rng(k).random((3, 16, 16), np.float32))
        (folder / f"{k}.json").write_text('{"source": "camera 2"}')
    assert quantkit.calibrate(cnn, data=folder, output=tmp_path / "t.calib.json").images_used == 4
