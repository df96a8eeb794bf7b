"""A segmenter's class probabilities at each pixel ([N, C, H, W] or [N, H, W, C] softmax) get a top-1
agreement per pixel: compare gave such a map only SQNR and cosine (hunt31: road-seg-adas and DeepLabV3,
whose pixel agreement a user had to compute by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from quantkit.evaluate.class_scores import class_axis, logits_axis, probability_axis
from quantkit.evaluate.output_errors import OutputErrors
from tests.conftest import conv_params, make_model, save
from tests.helpers import assert_one_line_error, run


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("axis", [1, 3])
def test_pixel_agreement_of_a_probability_map(axis: int) -> None:
    g = np.random.default_rng(7)
    shape = (2, 5, 6, 7) if axis == 1 else (2, 6, 7, 5)
    logits = g.normal(0, 2, shape)
    ref = _softmax(logits, axis)
    cand = _softmax(logits + g.normal(0, 0.5, shape), axis)
    assert probability_axis(ref) == axis and class_axis(ref, images=2) == axis
    assert class_axis(ref, images=1) is None  # two maps are not one image's
    errors = OutputErrors("mask")
    errors.update(ref, cand, images=2)
    figures = errors.result()
    same = ref.argmax(axis) == cand.argmax(axis)  # [N, H, W]
    assert figures.top1_agreement == pytest.approx(float(same.mean()))
    assert 0.0 < figures.top1_agreement < 1.0
    assert figures.top5_overlap is None  # 5 classes: top-5 overlap says nothing


def test_maps_that_hold_no_probabilities_have_no_agreement() -> None:
    g = np.random.default_rng(8)
    logits = g.normal(0, 2, (1, 4, 6, 6)).astype(np.float32)  # logits: not in [0, 1]
    gray = g.random((1, 3, 6, 6)).astype(np.float32)  # an image in [0, 1], channels not summing to 1
    one = np.ones((1, 1, 6, 6), np.float32)  # one channel sums to 1 everywhere: no classes
    for value in (logits, gray, one):
        assert probability_axis(value) is None
        errors = OutputErrors("y")
        errors.update(value, value * 0.99, images=1)
        assert errors.result().top1_agreement is None


def test_compare_gives_a_segmenter_its_pixel_agreement(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p1, p2 = conv_params(6, 3, 3, 11), conv_params(4, 6, 1, 12)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["z"], name="c2"),
        helper.make_node("Softmax", ["z"], ["y"], name="soft", axis=1),
    ]
    weights = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"] * 4, "b2": p2["b"]}
    model = save(make_model(nodes, weights), tmp_path / "seg.onnx")
    table, int8, report = tmp_path / "t.json", tmp_path / "seg.int8.onnx", tmp_path / "c.json"
    code, _, err = run(["calibrate", str(model), "--images", str(image_dir), "--output", str(table)], capsys)
    assert code == 0, err
    code, _, err = run(["convert", str(model), "--calibration", str(table), "--output", str(int8)], capsys)
    assert code == 0, err
    argv = ["compare", str(model), str(int8), "--images", str(image_dir), "--runs", "0"]
    code, _, err = run([*argv, "--json", str(report)], capsys)
    assert code == 0, err
    (figures,) = json.loads(report.read_text())["outputs"]
    assert 0.9 <= figures["top1_agreement"] <= 1.0
    # shrink's --max-drop gates on it (a map no Softmax computes is refused before calibrating)
    out = tmp_path / "shrink"
    argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(out), "--runs", "0"]
    code, _, err = run([*argv, "--max-drop", "10"], capsys)
    assert code == 0, err
    gates = json.loads((out / "report.json").read_text())
    assert gates["comparison"]["outputs"][0]["top1_agreement"] >= 0.9


def test_logits_axis_is_a_map_at_the_inputs_own_size() -> None:
    side = (6, 7)
    assert logits_axis(np.zeros((1, 21, 6, 7)), side) == 1
    assert logits_axis(np.zeros((1, 6, 7, 21)), side) == 3
    assert logits_axis(np.zeros((1, 3, 6, 7)), side) is None  # an image given back (an enhancer)
    assert logits_axis(np.zeros((1, 1, 6, 7)), side) is None  # saliency, depth
    assert logits_axis(np.zeros((1, 17, 3, 4)), side) is None  # a keypoint heatmap at a fraction of it
    assert logits_axis(np.zeros((1, 21, 6, 7)), None) is None


def _conv_segmenter(path: Path, classes: int) -> Path:
    """Conv -> Relu -> Conv to `classes` logits at the input's own size (no Softmax)."""
    p1, p2 = conv_params(6, 3, 3, 13), conv_params(classes, 6, 1, 14)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="c2"),
    ]
    return save(make_model(nodes, {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"] * 4, "b2": p2["b"]}), path)


@pytest.mark.parametrize(
    ("classes", "kind", "agreement"), [(5, "classes", True), (3, "classes", False), (5, "auto", False)]
)
def test_compare_reads_a_segmenters_logits_per_pixel_where_told(
    classes: int,
    kind: str,
    agreement: bool,
    tmp_path: Path,
    image_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DeepLabV3 (tflite, [1, 257, 257, 21] logits after a Resize) measured 99.0 % of pixels agreeing by
    hand; compare gave it none. Read so only with --output-kind classes: CRAFT's region and affinity
    heatmaps, resized to the input, read '99.99 % of pixels agree' whatever the candidate did (hunt34).
    Three channels at the input's size are an image, not classes."""
    model = _conv_segmenter(tmp_path / "seg.onnx", classes)
    table, int8, report = tmp_path / "t.json", tmp_path / "seg.int8.onnx", tmp_path / "c.json"
    code, _, err = run(["calibrate", str(model), "--images", str(image_dir), "--output", str(table)], capsys)
    assert code == 0, err
    code, _, err = run(["convert", str(model), "--calibration", str(table), "--output", str(int8)], capsys)
    assert code == 0, err
    argv = [
        "compare",
        str(model),
        str(int8),
        "--images",
        str(image_dir),
        "--runs",
        "0",
        "--output-kind",
        kind,
    ]
    code, _, err = run([*argv, "--json", str(report)], capsys)
    assert code == 0, err
    (figures,) = json.loads(report.read_text())["outputs"]
    hint = "--output-kind classes adds the share of pixels whose class agrees"  # hq59: DeepLabV3 had none
    assert (hint in " ".join(err.split())) == (kind == "auto")
    three = "hold 3 channels at the input's size, read as an image the model gives back"  # hq106 F4
    assert (three in " ".join(err.split())) == (kind == "classes" and classes == 3)
    out = tmp_path / "shrink"
    argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(out), "--runs", "0"]
    code, _, err = run([*argv, "--max-drop", "10", "--output-kind", kind], capsys)
    if agreement:
        assert 0.9 <= figures["top1_agreement"] <= 1.0
        assert code == 0, err  # shrink's gate reads the same figure
        (gated, *_) = json.loads((out / "report.json").read_text())["comparison"]["outputs"]
        assert gated["top1_agreement"] >= 0.9
    elif kind == "classes":
        assert figures["top1_agreement"] is None
        assert_one_line_error(code, err, "first output 'y' [1, 3, 16, 16] holds no class scores")
    else:  # refused from the graph, before calibrating
        assert figures["top1_agreement"] is None
        assert_one_line_error(code, err, "is a rank-4 map of no segmenter's classes", "--output-kind classes")


def test_an_agreement_one_class_wins_everywhere_is_not_given() -> None:
    """hunt34: UltraFace's face/background softmax per anchor (face on 0.13 % of 4420 anchors) and CRAFT's
    region/affinity heatmaps read '99.99 % agree' whatever the candidate did."""
    g = np.random.default_rng(9)
    logits = g.normal(0, 1, (2, 4420, 2))
    logits[:, :, 0] += 8.0  # background on top almost everywhere
    logits[:, :5, 1] += 20.0  # a few faces
    ref = _softmax(logits, 2)
    cand = _softmax(logits + g.normal(0, 3.0, logits.shape), 2)
    errors = OutputErrors("scores")
    errors.update(ref, cand, images=2)
    assert errors.one_sided() and errors.result().top1_agreement is None
    balanced = _softmax(g.normal(0, 2, (2, 300, 4)), 2)
    fair = OutputErrors("scores")
    fair.update(balanced, balanced, images=2)
    assert not fair.one_sided() and fair.result().top1_agreement == pytest.approx(1.0)


def test_uint8_scores_are_numbers_and_int64_ones_labels() -> None:
    """hunt53 B1: a TFLite classifier's uint8 [N, 5] scores (a QuantizeLinear's output) were read as labels:
    '28 % top-1 agree', the share of equal bytes, where the argmax agreed on 95 %, and no SQNR."""
    g = np.random.default_rng(3)
    logits = g.normal(0, 2, (40, 5))
    ref = np.round(_softmax(logits, 1) * 255).astype(np.uint8)
    cand = np.round(_softmax(logits + g.normal(0, 0.3, logits.shape), 1) * 255).astype(np.uint8)
    errors = OutputErrors("scores")
    errors.update(ref, cand, images=40)
    figures = errors.result()
    agree = float(np.mean(ref.argmax(1) == cand.argmax(1)))
    assert figures.top1_agreement == pytest.approx(agree) and agree > float(np.mean(ref == cand))
    assert not figures.labels and figures.sqnr_db is not None and 10.0 < figures.sqnr_db < 60.0
    # review54 M1: a segmenter's ArgMax -> Cast(uint8) class map is labels, known by what writes it
    from quantkit.evaluate.budget_validator import picked

    ref_map, cand_map = (np.argmax(g.normal(0, 1, (2, 5, 4, 4)), axis=1).astype(np.uint8) for _ in range(2))
    class_map = OutputErrors("map", labelled=True)
    class_map.update(ref_map, cand_map, images=2)
    assert class_map.result().labels
    assert class_map.result().top1_agreement == pytest.approx(float(np.mean(ref_map == cand_map)))
    assert picked(ref_map, labelled=True) is ref_map and picked(ref).shape == (40,)
    ids = OutputErrors("ids", ordered=True)  # class ids an NMS chose, written as floats: labels too
    ids.update(ref.argmax(1).astype(np.float32)[:, None], cand.argmax(1).astype(np.float32)[:, None], 40)
    assert ids.result().labels and not OutputErrors("plain").result().labels
    labels = OutputErrors("picked")  # an ArgMax's int64 classes: agreed on as they are (no SQNR shown)
    labels.update(
        ref.argmax(1).astype(np.int64)[:, None], cand.argmax(1).astype(np.int64)[:, None], images=40
    )
    assert labels.result().labels and labels.result().top1_agreement == pytest.approx(agree)


def test_a_map_whose_foreground_shows_on_few_samples_is_said(tmp_path: Path, image_dir: Path) -> None:
    """hq97 F1: PP-OCRv4's text detector calibrated on photos had text pixels on 1 of its 8 samples, read
    12.61 dB there (over --min-sqnr 12) and 4.30 dB held out: every figure judged that one image."""
    import onnx
    import onnxruntime as ort

    from quantkit.config import ConvertConfig
    from quantkit.pipeline.sample_figures import sparse_foreground
    from tests.helpers import quantize

    p1, p2 = conv_params(4, 3, 3, 3), conv_params(1, 4, 1, 4)

    def segmenter(shift: float) -> onnx.ModelProto:
        nodes = [
            helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["r"], name="relu"),
            helper.make_node("Conv", ["r", "w2", "b2"], ["logits"], name="c2"),
            helper.make_node("Sigmoid", ["logits"], ["y"], name="sigmoid"),
        ]
        bias = (p2["b"] - np.float32(shift)).astype(np.float32)
        return make_model(nodes, {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": bias})

    quantize(segmenter(0.0), tmp_path, image_dir)  # the table's samples, to place the threshold
    samples = np.load(tmp_path / "model.calib.npz")["samples"]
    session = ort.InferenceSession(segmenter(0.0).SerializeToString(), providers=["CPUExecutionProvider"])
    (maps,) = session.run(["y"], {"x": samples})
    peaks = np.sort(maps.reshape(len(maps), -1).max(axis=1)).astype(np.float64)
    middle = (peaks[-2] + peaks[-1]) / 2  # a logit above log(middle / (1 - middle)) on one sample only
    summary, _ = quantize(
        segmenter(float(np.log(middle / (1 - middle)))), tmp_path, image_dir, ConvertConfig()
    )
    assert len(samples) == 8
    (line,) = [w for w in summary.warnings if "show foreground" in w]
    assert line.startswith(
        "only 1 of the 8 calibration samples show foreground on output 'y' (a logit above 0"
    )
    assert "judge its foreground on that one; calibrate on images that show what the model finds" in line
    many = [{"l": np.where(np.arange(8)[:, None] < 3, 1.0, -1.0) * np.ones((8, 4))}]
    assert sparse_foreground([("y", "l")], {"y"}, many) == ()  # 3 of 8: enough to judge on
    none = [{"l": -np.ones((8, 4))}]
    assert sparse_foreground([("y", "l")], {"y"}, none) == ()  # no foreground: the logits are what is read
