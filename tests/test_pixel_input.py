"""Models whose input is uint8 pixels (TensorFlow exports, models that normalise inside): quantkit feeds
the images as 0-255 values, with no normalisation of its own, in every command."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from quantkit.config import Layout, Preprocess
from quantkit.image_folders import find_images
from quantkit.images import ImageLoader
from tests.conftest import conv_params, make_model
from tests.helpers import assert_one_line_error, run

Capsys = pytest.CaptureFixture[str]
SIZE = 16


def _pixel_model(path: Path) -> Path:
    """uint8 [N, 16, 16, 3] -> Cast -> NCHW -> (x - 127.5) / 64 -> Conv 3->4 3x3 -> Relu -> Conv 4->5 1x1
    -> GlobalAveragePool -> Flatten."""
    first, second = conv_params(4, 3, 3, 0), conv_params(5, 4, 1, 1)
    nodes = [
        helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["t", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["n"]),
        helper.make_node("Conv", ["n", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["h"], name="c2"),
        helper.make_node("GlobalAveragePool", ["h"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    weights = {
        "mean": np.array(127.5, np.float32),
        "std": np.array(64.0, np.float32),
        "w1": first["w"],
        "b1": first["b"],
        "w2": second["w"],
        "b2": second["b"],
    }
    model = make_model(nodes, weights, input_shape=("N", SIZE, SIZE, 3))
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    onnx.save(model, path)
    return path


def _outputs(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": pixels})[0])


def test_uint8_pixels_are_fed_to_every_command(image_dir: Path, tmp_path: Path, capsys: Capsys) -> None:
    model = _pixel_model(tmp_path / "pixels.onnx")
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    table, int8, fp16 = tmp_path / "t.json", tmp_path / "int8.onnx", tmp_path / "fp16.onnx"
    code, out, _ = run(["calibrate", str(model), "--images", str(image_dir), "-o", str(table)], capsys)
    assert code == 0 and "16x16 NHWC RGB, resize crop, mean 0,0,0, std 1,1,1" in out
    assert run(["convert", str(model), "--calibration", str(table), "-o", str(int8)], capsys)[0] == 0
    assert run(["convert", str(model), "--to", "fp16", "-o", str(fp16)], capsys)[0] == 0
    code, out, _ = run(["compare", str(model), str(int8), "--images", str(image_dir)], capsys)
    assert code == 0
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before
    # the photos as the model takes them: 0-255 values, no normalisation
    pre = Preprocess(height=SIZE, width=SIZE, layout=Layout.NHWC, mean=(0.0,) * 3, std=(1.0,) * 3)
    pixels = next(iter(ImageLoader(find_images(image_dir), pre, 24))).data
    assert isinstance(pixels, np.ndarray) and pixels.shape == (24, SIZE, SIZE, 3)
    fed = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    reference = _outputs(model, fed)
    for candidate, floor_db in ((int8, 25.0), (fp16, 45.0)):
        got = _outputs(candidate, fed)
        assert onnx.load(str(candidate)).graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
        sqnr = 10 * np.log10(np.sum(reference**2) / np.sum((reference - got) ** 2))
        assert sqnr > floor_db, (candidate.name, sqnr)


def test_a_normalisation_for_a_uint8_input_is_refused(
    image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    model = _pixel_model(tmp_path / "pixels.onnx")
    table = tmp_path / "t.json"
    code, _, err = run(
        ["calibrate", str(model), "--images", str(image_dir), "-o", str(table), "--preset", "imagenet"],
        capsys,
    )
    assert_one_line_error(
        code,
        err,
        "input 'x' is uint8: the model takes pixel values 0-255 and normalises them itself; drop --mean, "
        "--std and --preset (or give --preset raw)",
    )
    assert not table.exists()
    args = ["calibrate", str(model), "--images", str(image_dir), "-o", str(table), "--preset", "raw"]
    assert run(args, capsys)[0] == 0


def test_arrays_a_uint8_input_would_round_or_clip_are_refused(tmp_path: Path, capsys: Capsys) -> None:
    """hunt53 B2: [0, 1] float arrays for a uint8 pixel input were rounded to 0 and 1 ('arrays fed as
    given'): the table and the model converted from it were of near-black images, exit 0."""
    model = _pixel_model(tmp_path / "pixels.onnx")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3))
    cases = {
        "scaled": (pixels / 255.0, "feed whole numbers (pixels 0-255, not scaled to [0, 1])"),
        "beyond": (pixels * 2.0, "holds values from 0 to 510; input 'x' takes uint8 pixels 0-255"),
        "halves": (
            np.minimum(pixels, 254) + 0.5,
            "which would round them: feed whole numbers\n",
        ),  # no [0, 1] hint here
        "whole": (pixels.astype(np.float32), None),  # float arrays of whole pixels are fed as they are
    }
    for name, (values, refused) in cases.items():
        folder, table = tmp_path / name, tmp_path / f"{name}.json"
        folder.mkdir()
        for k, sample in enumerate(values):
            np.save(folder / f"{k}.npy", sample)
        code, _, err = run(["calibrate", str(model), "--inputs", str(folder), "-o", str(table)], capsys)
        if refused is None:
            assert code == 0, err
        else:
            assert code == 2 and refused in err and len(err.strip().splitlines()) == 1 and not table.exists()


def test_uint8_arrays_fed_to_a_float_input_are_warned_of(cnn: Path, tmp_path: Path, capsys: Capsys) -> None:
    """hq129 F5: photos loaded with np.asarray(image) were calibrated on, and compared, as 0-255 floats by a
    model that expects normalised pixels, without a word (hq169: as int64 too); float32 arrays of the same
    values say 0-255 is meant and are fed as given."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 1, 3, 16, 16))
    warned = (
        "sample-0.npy holds {} values from 0 to 255, fed to float input 'x' as they are: where the model "
        "expects normalised pixels (most do), scale the arrays as it was trained"
    )
    pixels[0, 0, 0, 0, :2] = [0, 255]  # the first sample's full range, stated
    for dtype, said in ((np.uint8, True), (np.int64, True), (np.float32, False)):
        folder, table = tmp_path / np.dtype(dtype).name, tmp_path / f"{np.dtype(dtype).name}.json"
        folder.mkdir()
        for k, sample in enumerate(pixels):
            np.save(folder / f"sample-{k}.npy", sample.astype(dtype))
        code, out, err = run(["calibrate", str(cnn), "--inputs", str(folder), "-o", str(table)], capsys)
        assert code == 0 and table.exists(), err
        assert (warned.format(np.dtype(dtype).name) in " ".join((out + err).split())) is said
        compared = ["compare", str(cnn), str(cnn), "--inputs", str(folder), "--runs", "0"]
        code, out, err = run(compared, capsys)
        assert code == 0, err
        assert (warned.format(np.dtype(dtype).name) in " ".join((out + err).split())) is said


def test_images_the_models_size_already_are_said_to_be_zoomed_by_crop(
    cnn: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq133 F3: 28x28 MNIST digits were scaled to 32x32 and cut back to 28 by the default --resize crop, a
    LeNet's own FP32 top-1 98.6 -> 98.4 %, without a word."""
    from PIL import Image

    folder = tmp_path / "presized"
    folder.mkdir()
    g = np.random.default_rng(0)
    for k in range(16):
        Image.fromarray(g.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    warned = (
        "the images are the model's 16x16 already: --resize crop (the default) scales them 1.14x and cuts "
        "their border, as torchvision's Resize(18) + CenterCrop would; calibrate (and compare) with --resize "
        "squash to feed them as they are"
    )
    for resize, said in (("crop", True), ("squash", False)):
        table = tmp_path / f"{resize}.json"
        argv = ["calibrate", str(cnn), "--images", str(folder), "--resize", resize, "-o", str(table)]
        code, _, err = run(argv, capsys)
        assert code == 0 and (warned in " ".join(err.split())) is said, err
        compared = ["compare", str(cnn), str(cnn), "--images", str(folder), "--resize", resize, "--runs", "0"]
        code, out, err = run(compared, capsys)
        assert code == 0 and (warned in " ".join((out + err).split())) is said, err


def test_samples_of_random_noise_are_warned_of(
    cnn: Path, tmp_path: Path, image_dir: Path, capsys: Capsys
) -> None:
    """hq172 F2: 16 noise PNGs, or np.random arrays (the 'no data at hand' habit), calibrated without a word,
    and sample-chosen corrections fitted to them cost SqueezeNet 28 points of top-1 agreement on photos.
    Photo-like images, and a blank one, are no noise."""
    from PIL import Image

    noise, arrays = tmp_path / "noise", tmp_path / "arrays"
    noise.mkdir()
    arrays.mkdir()
    g = np.random.default_rng(0)
    for k in range(8):
        Image.fromarray(g.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(noise / f"{k}.png")
        np.save(arrays / f"{k}.npy", g.standard_normal((1, 3, 16, 16)).astype(np.float32))
    warned = "the calibration samples look like random noise (values 2 apart uncorrelated:"
    for argv, said in (
        (["--images", str(noise), "--resize", "squash"], True),
        (["--images", str(noise)], True),  # hq173 F3: crop's interpolation joined neighbours, no warning
        (["--images", str(noise), "--resize", "letterbox"], True),
        (["--inputs", str(arrays)], True),
        (["--images", str(image_dir)], False),
    ):
        code, _, err = run(["calibrate", str(cnn), *argv, "-o", str(tmp_path / "t.json")], capsys)
        assert code == 0, err
        assert (warned in " ".join(err.split())) is said, (argv, err)
    from quantkit.pipeline.calib_warnings import noise_like

    assert noise_like(np.zeros((4, 3, 16, 16), np.float32)) is None  # blank images
    g = np.random.default_rng(1)
    with warnings.catch_warnings():  # hq173 F4: [N, H, W, 1] read its channel axis, numpy warned 6 lines
        warnings.simplefilter("error")
        assert noise_like(g.normal(0, 1, (4, 16, 16, 1)).astype(np.float32)) is not None
        smooth = np.cumsum(g.normal(0, 1, (4, 16, 16, 1)), axis=2).astype(np.float32)
        assert noise_like(smooth) is None
