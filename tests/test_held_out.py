"""compare says when its images calibrated the model (hq84 F5: a text detector measured 14.0 dB on its
calibration images and 8.1 dB held out, and compare said nothing). The INT8 model records a short content
digest of each calibration image; compare counts its own images among them, by content."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import onnx
import pytest

from quantkit.pipeline.held_out import contents
from tests.conftest import tiny_cnn
from tests.helpers import assert_one_line_error, run

FAST = ["--runs", "0"]


def test_compare_counts_the_images_that_calibrated_the_model(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_cnn(tmp_path / "model.onnx")
    dogs, cats = image_dir / "dogs", image_dir / "cats"
    table, out = tmp_path / "dogs.calib.json", tmp_path / "model.int8.onnx"
    assert run(["calibrate", str(model), "--images", str(dogs), "-o", str(table)], capsys)[0] == 0
    assert run(["convert", str(model), "-c", str(table), "-o", str(out)], capsys)[0] == 0
    recorded = {p.key: p.value for p in onnx.load(out).metadata_props}["quantkit.calibration_images"]
    digests = sorted(hashlib.sha256(f.read_bytes()).digest()[:6] for f in dogs.iterdir())
    assert recorded == "12 " + base64.b64encode(b"".join(digests)).decode()  # 12 photos, 6 bytes each

    half = tmp_path / "model.fp16.onnx"  # hq91 F11: its figures barely depend on the table's images
    assert run(["convert", str(model), "--to", "fp16", "-c", str(table), "-o", str(half)], capsys)[0] == 0
    assert not any(p.key == "quantkit.calibration_images" for p in onnx.load(half).metadata_props)

    code, _, err = run(["compare", str(model), str(out), "--images", str(dogs), *FAST], capsys)
    said = "warning: 12 of the 12 images compared calibrated the model: the figures are not held out"
    assert code == 0 and said in err
    code, _, err = run(["compare", str(model), str(out), "--images", str(cats), *FAST], capsys)
    assert code == 0 and "calibrated the model" not in err
    mixed = tmp_path / "mixed"  # copies under other names, beside held-out photos
    shutil.copytree(cats, mixed)
    for k, photo in enumerate(sorted(dogs.iterdir())[:3]):
        shutil.copy(photo, mixed / f"copy{k}{photo.suffix}")
    code, _, err = run(["compare", str(model), str(out), "--images", str(mixed), *FAST], capsys)
    assert code == 0 and "warning: 3 of the 15 images compared calibrated the model" in err


def test_shrink_says_it_once_its_own_way(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_cnn(tmp_path / "model.onnx")
    argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(tmp_path / "out"), *FAST]
    code, stdout, err = run([*argv, "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 0, err
    assert "calibrated the model" not in err + stdout  # the report says: not held out


def test_a_large_calibration_set_is_recorded_as_a_sample_and_judged_by_it() -> None:
    """At most SAMPLED digests (1 KB) whatever the set: a 30 KB model must not double in size. Past that,
    compare judges by its images in the sampled range and says 'about'."""
    from quantkit.pipeline.held_out import SAMPLED, in_sample_line, stamped

    calibration = [hashlib.sha256(f"calib{i}".encode()).digest() for i in range(2000)]
    listed = contents(calibration)
    assert len(listed) == SAMPLED and listed == sorted(d[:6].hex() for d in calibration)[:SAMPLED]
    model = onnx.ModelProto()
    entry = model.metadata_props.add()
    entry.key, entry.value = (
        "quantkit.calibration_images",
        stamped({"images": {"contents": listed, "unique": 2000}})["calibration_images"],
    )
    assert len(entry.value) < 2100
    others = [hashlib.sha256(f"other{i}".encode()).digest() for i in range(1000)]
    assert in_sample_line(model, others) is None
    line = in_sample_line(model, calibration[:500] + others[:500])
    assert line is not None and line.startswith("about ") and 350 <= int(line.split()[1]) <= 650, line


def test_a_record_of_another_length_is_read_as_none() -> None:
    """hq92 F5: a record of 3-byte digests (an earlier build's) was read as 6-byte pieces."""
    from quantkit.pipeline.held_out import in_sample_line

    model = onnx.ModelProto()
    entry = model.metadata_props.add()
    entry.key, entry.value = "quantkit.calibration_images", "3 " + base64.b64encode(bytes(range(9))).decode()
    assert in_sample_line(model, [bytes(range(32))]) is None


def test_convert_says_when_some_validation_images_calibrated_the_model(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq95 F2: --max-drop refused validation images equal to the calibration ones, and took 16 of 32
    shared for held out without a word (compare on the same folder warned)."""
    model = tiny_cnn(tmp_path / "model.onnx")
    dogs, cats = image_dir / "dogs", image_dir / "cats"
    table = tmp_path / "dogs.calib.json"
    assert run(["calibrate", str(model), "--images", str(dogs), "-o", str(table)], capsys)[0] == 0
    mixed = tmp_path / "mixed"
    shutil.copytree(cats, mixed)
    for k, photo in enumerate(sorted(dogs.iterdir())[:4]):
        shutil.copy(photo, mixed / f"copy{k}{photo.suffix}")
    argv = ["convert", str(model), "-c", str(table), "-o", str(tmp_path / "q.onnx"), "--max-drop", "50"]
    code, _, err = run([*argv, "--validation", str(mixed)], capsys)
    said = "warning: 4 of the 16 --validation images are calibration images: --max-drop's search measured"
    assert code == 0 and said in " ".join(err.split()), err
    code, _, err = run([*argv, "--validation", str(cats)], capsys)
    assert code == 0 and "--validation images are calibration images" not in err
    code, _, err = run([*argv, "--validation", str(cats), "--validation-images", "100000"], capsys)
    said = f"--validation-images 100000 asks for more images than {cats} holds; using all 12, each once"
    assert code == 0 and said in " ".join(err.split()), err  # hq125 F9: all of them, without a word
    renamed = tmp_path / "renamed"  # hq125 F1: the calibration images copied under other names passed
    renamed.mkdir()
    for k, photo in enumerate(sorted(dogs.iterdir())):
        shutil.copy(photo, renamed / f"held{k}{photo.suffix}")
    code, _, err = run([*argv, "--validation", str(renamed)], capsys)
    assert_one_line_error(code, err, "the --validation images are the calibration images; hold some apart")
    for extra in sorted(renamed.iterdir())[4:]:
        extra.unlink()  # 4 of the 12: a subset of them, warned of, no longer 'partly'
    code, _, err = run([*argv, "--validation", str(renamed)], capsys)
    said = (
        "4 of the 4 --validation images are calibration images: --max-drop's search measured its budget only"
    )
    assert code == 0 and said in " ".join(err.split()), err
