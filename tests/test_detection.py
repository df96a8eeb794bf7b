"""Detector comparison: YOLOX grid decoding, NMS, and matching the final boxes of two models, on heads
built by hand so that every box's fate is known."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.config import DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.compare import Comparison
from quantkit.evaluate.metrics import (
    BoxAgreement,
    corner_boxes,
    final_detections,
    is_yolo_head,
    yolov8_rows,
    yolox_grid,
)
from quantkit.results import Batch
from tests.helpers import assert_one_line_error, run

CLASSES = 3


def _head(boxes: list[tuple[float, float, float, float, float, int]], anchors: int = 6) -> np.ndarray:
    """(cx, cy, w, h, score, class) per anchor, in pixels -> head [A, 5 + C]; other anchors score 0."""
    head = np.zeros((anchors, 5 + CLASSES), np.float32)
    for k, (cx, cy, w, h, score, cls) in enumerate(boxes):
        head[k, :4] = cx, cy, w, h
        head[k, 4] = 1.0
        head[k, 5 + cls] = score
    return head


def test_yolox_grid_covers_strides_8_16_32() -> None:
    grid = yolox_grid(416, 416)
    assert grid is not None and grid.shape == (52 * 52 + 26 * 26 + 13 * 13, 3)
    assert grid[0].tolist() == [0, 0, 8] and grid[53].tolist() == [1, 1, 8]
    assert grid[-1].tolist() == [12, 12, 32]
    assert yolox_grid(416, 420) is None


def test_raw_yolox_boxes_decode_to_pixels() -> None:
    grid = np.array([[3.0, 2.0, 8.0], [1.0, 1.0, 32.0]])
    head = np.zeros((2, 5 + CLASSES))
    head[0, :4] = 0.5, 0.25, 0.0, np.log(2.0)  # centre (3.5, 2.25) cells of 8 px; 8 x 16 px
    head[1, :4] = 0.0, 0.0, np.log(3.0), 0.0  # centre (32, 32); 96 x 32 px
    boxes = corner_boxes(head, grid)
    np.testing.assert_allclose(boxes[0], [24.0, 10.0, 32.0, 26.0])
    np.testing.assert_allclose(boxes[1], [-16.0, 16.0, 80.0, 48.0])


def test_nms_keeps_one_box_per_object_and_class() -> None:
    head = _head(
        [
            (50, 50, 20, 20, 0.9, 0),
            (52, 50, 20, 20, 0.8, 0),  # same object, same class: suppressed
            (52, 50, 20, 20, 0.7, 1),  # same place, another class: kept
            (150, 50, 20, 20, 0.6, 0),  # another object
            (250, 50, 20, 20, 0.2, 0),  # below the threshold
        ]
    )
    boxes, classes, scores = final_detections(head, 0.3, None)
    assert classes.tolist() == [0, 1, 0]
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6], rtol=1e-6)
    np.testing.assert_allclose(boxes[0], [40, 40, 60, 60])


def test_box_agreement_counts_found_missed_extra_and_threshold_ties() -> None:
    ref = _head([(50, 50, 20, 20, 0.9, 0), (150, 50, 20, 20, 0.8, 1), (250, 50, 20, 20, 0.305, 2)])
    same = ref.copy()
    moved = _head(
        [
            (53, 50, 20, 20, 0.85, 0),  # IoU 0.74: the same detection
            (150, 70, 20, 20, 0.8, 1),  # moved by its own height: missed, and an extra box
            (250, 50, 20, 20, 0.295, 2),  # fell just under the threshold: a threshold tie
        ]
    )
    agreement = BoxAgreement(0.3, None)
    agreement.update(ref[None], same[None])
    assert (agreement.reference, agreement.found, agreement.extra, agreement.borderline) == (3, 3, 0, 0)
    agreement.update(ref[None], moved[None])
    assert (agreement.reference, agreement.found, agreement.extra, agreement.borderline) == (6, 4, 1, 1)


def test_a_box_of_another_class_is_not_the_same_detection() -> None:
    agreement = BoxAgreement(0.3, None)
    agreement.update(_head([(50, 50, 20, 20, 0.9, 0)])[None], _head([(50, 50, 20, 20, 0.9, 1)])[None])
    assert (agreement.found, agreement.extra) == (0, 1)


def offset_by_input(output: str) -> list[onnx.NodeProto]:
    """`output` = base + a tenth of sigmoid(mean(x)): a constant that moves a little with the input (the
    initializers base, one [1, 1] or [1, 1, 1] and tenth come with the graph)."""
    return [
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=1),
        helper.make_node("Reshape", ["m", "one"], ["m1"]),
        helper.make_node("Sigmoid", ["m1"], ["s"]),
        helper.make_node("Mul", ["s", "tenth"], ["s1"]),
        helper.make_node("Add", ["base", "s1"], [output]),
    ]


def _raw_detector(path: Path, anchors: int) -> Path:
    """input [1, 3, 32, 32] -> a constant-plus-input head [1, A, 5 + C] (enough to compare), its scores
    in [0, 1] as a sigmoid's."""
    base = np.zeros((1, anchors, 5 + CLASSES), np.float32)
    base[0, :, 4] = 0.9
    base[0, :, 5] = np.linspace(0.1, 0.9, anchors)
    nodes = offset_by_input("y")
    graph = helper.make_graph(
        nodes,
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, anchors, 5 + CLASSES])],
        [
            numpy_helper.from_array(base, "base"),
            numpy_helper.from_array(np.array([1, 1, 1], np.int64), "one"),
            numpy_helper.from_array(np.array(0.1, np.float32), "tenth"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize(("anchors", "code"), [(16 + 4 + 1, 0), (20, 2)])
def test_cli_yolox_reads_the_grid_of_the_input_or_says_why_not(
    anchors: int, code: int, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _raw_detector(tmp_path / "det.onnx", anchors)
    args = ["compare", str(model), str(model), "--images", str(image_dir), "--runs", "2", "--warmup", "0"]
    args += [
        "--detector",
        "yolox",
        "--preset",
        "unit",
        "--resize",
        "squash",
        "--json",
        str(tmp_path / "c.json"),
    ]
    got, _, err = run(args, capsys)
    if code == 0:
        assert got == 0, err
        output = json.loads((tmp_path / "c.json").read_text())["outputs"][0]
        assert output["boxes"] > 0 and output["boxes_found"] == output["boxes"]
        assert (output["boxes_extra"], output["boxes_borderline"]) == (0, 0)
    else:
        assert_one_line_error(got, err, "--detector yolox", "--detector yolo")


class _Heads:
    """A stand-in session: returns a fixed head per batch index, whatever the input."""

    def __init__(self, heads: list[np.ndarray]) -> None:
        self.heads = heads

    def run_batch(self, data: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": self.heads[int(data[0, 0])]}


def test_boxes_budget_counts_missed_and_added_boxes_per_100() -> None:
    from quantkit.config import BudgetMetric, DetectorHead
    from quantkit.evaluate.budget_validator import Validator
    from quantkit.results import Batch

    ref = [
        np.stack([_head([(50, 50, 20, 20, 0.9, 0), (150, 50, 20, 20, 0.8, 1)])]),
        np.stack([_head([(50, 50, 20, 20, 0.9, 2), (52, 50, 20, 20, 0.85, 2)])]),  # NMS: one box
    ]
    cand = [
        np.stack([_head([(50, 50, 20, 20, 0.9, 0), (150, 90, 20, 20, 0.8, 1)])]),  # one missed, one added
        np.stack([_head([(50, 50, 20, 20, 0.9, 2)])]),
    ]

    def batches() -> list[Batch]:
        return [Batch(np.full((1, 1), k, np.float32), (Path(f"{k}.jpg"),)) for k in range(2)]

    validator = Validator(_Heads(ref), batches, BudgetMetric.auto, Path("."), None, 0.3, DetectorHead.yolo)
    assert validator.metric is BudgetMetric.boxes
    assert validator.drop(_Heads(ref)) == 0.0
    assert validator.drop(_Heads(cand)) == pytest.approx(100 * 2 / 3)  # 2 differences, 3 FP32 boxes
    anchors = Validator(_Heads(ref), batches, BudgetMetric.auto, Path("."), None, 0.3)
    assert anchors.metric is BudgetMetric.recall  # without --detector the boxes cannot be read


def test_the_boxes_budget_reads_a_yolov8_head() -> None:
    """--max-drop with --detector yolov8 refused NudeNet's YOLOv8n ('--metric boxes needs an output
    shaped [N, anchors, 5 + classes]'), though compare reads its [N, 4 + classes, anchors] head: the
    budget now reads it as compare does."""
    from quantkit.config import BudgetMetric
    from quantkit.evaluate.budget_validator import Validator

    def v8(boxes: list[tuple[float, float, float, float, float, int]]) -> np.ndarray:
        rows = _head(boxes, anchors=64)  # [A, 5 + C] with objectness 1 -> [1, 4 + C, A]
        return np.concatenate([rows[:, :4], rows[:, 5:]], axis=1).T[None]

    ref = [v8([(50, 50, 20, 20, 0.9, 0), (150, 50, 20, 20, 0.8, 1)]), v8([(50, 50, 20, 20, 0.9, 2)])]
    cand = [v8([(50, 50, 20, 20, 0.9, 0), (150, 90, 20, 20, 0.8, 1)]), v8([(50, 50, 20, 20, 0.9, 2)])]

    def batches() -> list[Batch]:
        return [Batch(np.full((1, 1), k, np.float32), (Path(f"{k}.jpg"),)) for k in range(2)]

    validator = Validator(_Heads(ref), batches, BudgetMetric.auto, Path("."), None, 0.3, DetectorHead.yolov8)
    assert validator.metric is BudgetMetric.boxes
    assert validator.drop(_Heads(ref)) == 0.0
    assert validator.drop(_Heads(cand)) == pytest.approx(100 * 2 / 3)  # one missed, one added of 3
    recall = Validator(_Heads(ref), batches, BudgetMetric.recall, Path("."), None, 0.3, DetectorHead.yolov8)
    faded = [v8([(50, 50, 20, 20, 0.9, 0), (150, 50, 20, 20, 0.1, 1)]), ref[1]]  # one anchor below 0.3
    assert recall.drop(_Heads(faded)) == pytest.approx(100 / 3)


def test_convert_reads_detector_only_with_a_budget(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _raw_detector(tmp_path / "det.onnx", 21)
    code, _, err = run(
        ["convert", str(model), "-c", "none.json", "-o", str(tmp_path / "o.onnx"), "--detector", "yolox"],
        capsys,
    )
    assert_one_line_error(code, err, "--detector only with --max-drop")


def test_shrink_gate_reads_final_boxes_then_anchor_recall() -> None:
    import dataclasses

    from quantkit.evaluate.gates import accuracy_drop
    from quantkit.outcomes import OutputMetrics
    from tests.test_golden import _comparison

    head = OutputMetrics("output", 15.0, 0.99, 1.0, detection_recall=0.92, detections=618)
    boxes = dataclasses.replace(head, boxes=94, boxes_found=90, boxes_extra=4, boxes_borderline=1)
    plain = dataclasses.replace(_comparison(), reference_accuracy=None, candidate_accuracy=None)
    drop, unit = accuracy_drop(dataclasses.replace(plain, outputs=(boxes,)))
    assert drop == pytest.approx(100 * 8 / 94) and "final boxes" in unit
    no_box = dataclasses.replace(boxes, boxes=0, boxes_found=0, boxes_extra=0)
    drop, unit = accuracy_drop(dataclasses.replace(plain, outputs=(no_box,)))
    assert drop == pytest.approx(8.0) and "detections lost" in unit  # boxes added there: inf (test_shrink)
    # the row with the boxes, wherever the model lists it (hq60 F1: a PicoDet's distributions, an
    # RT-DETR's labels listed first: the gate read those and failed, or gated on top-1 agreement)
    labels = OutputMetrics("labels", 9.0, 0.9, 0.45)
    drop, unit = accuracy_drop(dataclasses.replace(plain, outputs=(labels, boxes)))
    assert drop == pytest.approx(100 * 8 / 94) and "final boxes" in unit


def _compared(detector: DetectorHead, reference: np.ndarray, candidate: np.ndarray) -> Comparison:
    comparison = Comparison(Path("."), None, 0.3, detector)
    paths = tuple(Path(f"{k}.jpg") for k in range(len(reference)))
    batch = Batch(np.zeros((len(reference), 3, 8, 8), np.float32), paths)
    comparison.update(batch, {"y": reference}, {"y": candidate})
    return comparison


def test_a_yolov8_head_is_read_with_its_anchors_along_the_last_axis() -> None:
    """YOLOv8 writes [N, 4 box + classes, anchors] without objectness: --detector yolov8 reads it as the
    [N, anchors, 5 + classes] rows with objectness 1 give, and yolo or yolox refuse it (read as rows
    it gave a PyPI layout detector a recall of 39.6 % that meant nothing)."""
    anchors = 40
    reference = _head([(20, 20, 10, 10, 0.9, 0), (60, 30, 12, 8, 0.8, 2)], anchors)[None]
    candidate = _head([(20, 21, 10, 10, 0.85, 0), (60, 30, 12, 8, 0.2, 2)], anchors)[None]
    v8 = [np.delete(h, 4, axis=-1).transpose(0, 2, 1) for h in (reference, candidate)]  # [1, 4 + C, A]
    assert v8[0].shape == (1, 4 + CLASSES, anchors) and not is_yolo_head(v8[0])
    rows = yolov8_rows(v8[0])
    np.testing.assert_array_equal(np.delete(rows, 4, axis=-1), np.delete(reference, 4, axis=-1))
    assert (rows[..., 4] == 1.0).all()  # no objectness: every anchor's score is its class score
    read = _compared(DetectorHead.yolov8, *v8)
    plain = _compared(DetectorHead.yolo, reference, candidate)
    assert read.recalls["y"].recall == plain.recalls["y"].recall == 0.5
    assert read.boxes["y"].found == plain.boxes["y"].found == 1
    with pytest.raises(ConfigError, match=r"output 'y' is \[1, 7, 40\]: its anchors run along the last axis"):
        _compared(DetectorHead.yolo, *v8)


def _segmenter(head: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A YOLOv8-seg head [1, 4 + C + M, A]: head [1, A, 5 + C] without objectness, then M coefficients."""
    return np.concatenate([np.delete(head, 4, axis=-1), masks], axis=-1).transpose(0, 2, 1)


def test_a_segmenters_mask_coefficients_are_not_read_as_class_scores() -> None:
    """captcha-recognizer's YOLO11s-seg writes [1, 4 + 1 + 32, 8400] and its 32 mask prototypes
    [1, 32, 160, 160]: read as 33 classes, its unbounded mask coefficients made all 67200 anchors of 8
    photos detections and 17584 final boxes. The coefficients after the classes are dropped when an
    output holds that many prototypes; values outside [0, 1] that nothing explains are refused."""
    anchors, masks = 40, 2
    reference = _head([(20, 20, 10, 10, 0.9, 0), (60, 30, 12, 8, 0.8, 2)], anchors)[None]
    candidate = _head([(20, 21, 10, 10, 0.85, 0), (60, 30, 12, 8, 0.2, 2)], anchors)[None]
    coefficients = rng_coefficients((1, anchors, masks))
    seg = [_segmenter(h, coefficients) for h in (reference, candidate)]
    protos = np.zeros((1, masks, 4, 4), np.float32)
    comparison = Comparison(Path("."), None, 0.3, DetectorHead.yolov8)
    batch = Batch(np.zeros((1, 3, 8, 8), np.float32), (Path("0.jpg"),))
    comparison.update(batch, {"y": seg[0], "protos": protos}, {"y": seg[1], "protos": protos})
    plain = _compared(DetectorHead.yolo, reference, candidate)
    assert comparison.recalls["y"].reference == plain.recalls["y"].reference == 2
    assert comparison.recalls["y"].recall == plain.recalls["y"].recall == 0.5
    assert comparison.boxes["y"].found == plain.boxes["y"].found == 1
    assert "protos" not in comparison.recalls
    with pytest.raises(ConfigError) as refused:  # no prototypes: a pose head's keypoints read alike
        _compared(DetectorHead.yolov8, *seg)
    assert str(refused.value) == (
        f"output 'y' holds values from {coefficients.min():.3g} to {coefficients.max():.3g} where --detector "
        "yolov8 reads objectness and class scores ([N, 4 box + classes, anchors]), probabilities in [0, 1]: "
        "a pose or rotated-box head keeps keypoints or an angle there, a head of logits lacks its sigmoid, "
        "and a PicoDet or NanoDet head its box distributions (--detector gfl); leave --detector out to "
        "compare its values"
    )


def test_the_budget_drops_a_segmenters_mask_coefficients() -> None:
    from quantkit.config import BudgetMetric
    from quantkit.evaluate.budget_validator import Validator

    coefficients = rng_coefficients((1, 64, 3))
    protos = np.zeros((1, 3, 4, 4), np.float32)

    def seg(boxes: list[tuple[float, float, float, float, float, int]]) -> dict[str, np.ndarray]:
        return {"y": _segmenter(_head(boxes, anchors=64)[None], coefficients), "protos": protos}

    ref = [seg([(50, 50, 20, 20, 0.9, 0), (150, 50, 20, 20, 0.8, 1)])]
    cand = [seg([(50, 50, 20, 20, 0.9, 0), (150, 90, 20, 20, 0.8, 1)])]  # one missed, one added

    def batches() -> list[Batch]:
        return [Batch(np.zeros((1, 1), np.float32), (Path("0.jpg"),))]

    v8 = DetectorHead.yolov8
    validator = Validator(_Outputs(ref), batches, BudgetMetric.auto, Path("."), None, 0.3, v8)
    assert validator.metric is BudgetMetric.boxes and validator.references[0].masks == 3
    assert validator.drop(_Outputs(ref)) == 0.0
    assert validator.drop(_Outputs(cand)) == pytest.approx(100 * 2 / 2)


def rng_coefficients(shape: tuple[int, ...]) -> np.ndarray:
    """Mask coefficients as a segmenter writes them: unbounded, mostly outside [0, 1]."""
    return np.random.default_rng(0).normal(0.0, 4.0, shape).astype(np.float32)


class _Outputs:
    """A model whose k-th run returns the k-th dict of outputs (cycling)."""

    def __init__(self, runs: list[dict[str, np.ndarray]]) -> None:
        self.runs, self.k = runs, 0

    def run_batch(self, feed: object) -> dict[str, np.ndarray]:
        out = self.runs[self.k % len(self.runs)]
        self.k += 1
        return out


def test_an_output_that_is_noise_on_some_images_is_flagged_where_the_pooled_sqnr_reads_fine() -> None:
    """CRAFT's text map measured 23.1 dB pooled over 16 photos beside a mean cosine of 0.58: on its
    textless photos the map is small and the INT8 error as large as it (-3.9 to -3.3 dB each)."""
    from quantkit.evaluate.figure_warnings import noise_hidden
    from quantkit.evaluate.output_errors import OutputErrors

    random = np.random.default_rng(2)
    text = random.normal(0.0, 1.0, (3, 64)).astype(np.float32)  # three images with a strong map
    empty = random.normal(0.0, 0.01, (2, 64)).astype(np.float32)  # two with next to nothing
    noise = random.normal(0.0, 0.05, (5, 64)).astype(np.float32)  # the candidate's error, alike everywhere
    errors = OutputErrors("y")
    reference = np.concatenate([text, empty])
    errors.update(reference, reference + noise)
    result = errors.result()
    assert result.sqnr_db > 20 and result.noise_images == 2
    assert noise_hidden(result) == (
        f"output 'y' measures {result.sqnr_db:.1f} dB pooled over all images, but on 2 image(s) on their "
        "own it is mostly noise (cosine with FP32's below 0.5): where its values are small (no text, an "
        "empty mask) the error is as large as they are; judge it on your task's metric"
    )
    low = OutputErrors("y")
    low.update(reference, reference + 20 * noise)  # a low pooled figure shows it already
    assert low.result().sqnr_db < 15 and low.result().noise_images >= 2 and noise_hidden(low.result()) is None


def test_anchor_scores_are_not_classes_and_five_classes_have_no_top5() -> None:
    """YuNet's per-anchor scores [N, A, 1] read as [N, A] gave '31 % top-1 agreement' over anchors beside
    31 dB; a 2-class output's top-5 overlap was always 100 %."""
    from quantkit.evaluate.class_scores import class_view
    from quantkit.evaluate.output_errors import OutputErrors

    g = np.random.default_rng(0)
    scores = g.random((2, 300, 1)).astype(np.float32)
    assert class_view(scores).shape == (2, 300, 1)
    assert class_view(np.zeros((2, 1000, 1, 1), np.float32)).shape == (2, 1000)  # Caffe-era classifier
    comparison = Comparison(Path("."), None)
    batch = Batch(np.zeros((2, 3, 8, 8), np.float32), (Path("a.jpg"), Path("b.jpg")))
    two = g.normal(size=(2, 2)).astype(np.float32)
    comparison.update(batch, {"s": scores, "two": two}, {"s": scores + 0.01, "two": two})
    (anchors, pair), _, _, _ = comparison.result()
    assert anchors.top1_agreement is None and anchors.top5_overlap is None
    assert pair.top1_agreement == 1.0 and pair.top5_overlap is None
    errors = OutputErrors("y")
    many = g.normal(size=(2, 6)).astype(np.float32)
    errors.update(many, many)
    assert errors.result().top5_overlap == 1.0


def test_a_kind_of_value_far_below_its_pooled_output_is_named() -> None:
    """afis' LEADER writes [N, H, W, 4] (mask, angle, type, quality): 13.5 dB pooled, its quality channel
    3.4 dB. The worst kind along a short axis is kept (shards merge to the one-pass figure) and named."""
    from quantkit.evaluate.figure_warnings import kind_hidden
    from quantkit.evaluate.output_errors import OutputErrors, kinds_axis

    shapes = ((1, 32, 32, 4), (1, 3549, 6), (1, 6, 100), (1, 1, 48, 64))
    assert [kinds_axis(s) for s in shapes] == [3, 2, 1, None]
    assert kinds_axis((1, 1000)) is None and kinds_axis((1, 21, 64, 64)) is None  # 21 classes: one kind
    g = np.random.default_rng(0)
    ref = g.normal(size=(2, 8, 8, 4))
    ref[..., 1] *= 10.0  # the large kind dominates the pooled figure
    cand = ref.copy()
    cand[..., 3] += 0.5
    whole, first, second = OutputErrors("y"), OutputErrors("y"), OutputErrors("y")
    whole.update(ref, cand)
    first.update(ref[:1], cand[:1])
    second.update(ref[1:], cand[1:])
    first.merge(second)
    metrics = whole.result()
    assert metrics.worst_kind == first.result().worst_kind
    assert metrics.worst_kind is not None and metrics.worst_kind[:2] == (3, 3) and metrics.worst_kind[2] < 8.0
    assert metrics.sqnr_db > 20.0
    warned = kind_hidden(metrics)
    assert warned is not None and "at index 3 of axis 3 measure 6.7 dB" in warned
    assert kind_hidden(dataclasses.replace(metrics, detection_recall=0.9)) is None  # judged by its boxes
    fine = dataclasses.replace(metrics, sqnr_db=47.7, worst_kind=(1, 6, 38.4))  # a CTC head's last step
    assert kind_hidden(fine) is None and kind_hidden(dataclasses.replace(fine, worst_kind=(1, 6, 29.0)))
    mixed = OutputErrors("y")
    mixed.update(ref, cand)
    mixed.update(ref[..., :3], cand[..., :3])  # another layout: no per-kind figure
    assert mixed.result().worst_kind is None


def test_a_raw_yolox_head_read_as_pixels_is_refused() -> None:
    """CapSpot's raw YOLOX head (box values in [-0.74, 1.72]) under --detector yolo matched 12 of 19 boxes
    where yolox matched 3 of 5: a detection with a width or height of 0 or below is not in pixels."""
    raw = np.stack([_head([(30.4, 40.2, -0.7, 0.3, 0.9, 0), (20.1, 0.5, 0.2, 0.4, 0.8, 1)])])
    refused = r"width or height -0\.7: --detector yolo reads .* give --detector yolox"
    with pytest.raises(ConfigError, match=refused):
        _compared(DetectorHead.yolo, raw, raw)
    # hunt52 B4: YOLOX-Nano's raw head, its detections of positive log sizes: centres of cell offsets
    offsets = np.stack([_head([(0.4, -0.3, 1.7, 0.3, 0.9, 0), (3.6, 0.5, 0.2, 0.4, 0.8, 1)])])
    with pytest.raises(
        ConfigError, match=r"box centres from -0\.3 to 3\.6 over all its anchors: .* --detector yolox"
    ):
        _compared(DetectorHead.yolo, offsets, offsets)
    # normalised, a little past the image as a YOLOv5's at a small input (review54 M3)
    fractions = np.stack([_head([(0.4, -0.06, 0.1, 0.3, 0.9, 0), (1.06, 0.5, 0.2, 0.4, 0.8, 1)])])
    assert _compared(DetectorHead.yolo, fractions, fractions).result()[0][0].boxes == 2
    fine = np.stack([_head([(50, 50, 20, 20, 0.9, 0), (150, 50, 0.5, 0.25, 0.8, 1)])])  # tiny but positive
    assert _compared(DetectorHead.yolo, fine, fine).result()[0][0].boxes == 2


def _yolov8_head() -> onnx.ModelProto:
    """x -> Conv -> Relu -> box Conv (4) and class Conv (2) -> Concat -> Reshape -> Split -> boxes as they
    are, classes through a Sigmoid -> Concat -> y [N, 6, 256]: a YOLOv8 head without its DFL."""
    from tests.conftest import conv_params, make_model

    trunk, box, cls = conv_params(8, 3), conv_params(4, 8, 1, seed=1), conv_params(2, 8, 1, seed=2)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["f"], name="trunk", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["f"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wb", "bb"], ["box"], name="box"),
        helper.make_node("Conv", ["r", "wc", "bc"], ["cls"], name="cls"),
        helper.make_node("Concat", ["box", "cls"], ["level"], name="level", axis=1),
        helper.make_node("Reshape", ["level", "shape"], ["flat"], name="flat"),
        helper.make_node("Split", ["flat", "parts"], ["boxes", "logits"], name="split", axis=1),
        helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], name="out", axis=1),
    ]
    weights = {
        **trunk,
        "wb": box["w"],
        "bb": box["b"],
        "wc": cls["w"],
        "bc": cls["b"] - 2.0,
        "shape": np.array([0, 6, -1], np.int64),
        "parts": np.array([4, 2], np.int64),
    }
    return make_model(nodes, weights)


def test_logits_that_become_scores_keep_float_from_their_layer_to_their_sigmoid(
    image_dir: Path, tmp_path: Path
) -> None:
    """A YOLOv8 head concatenates its box and class logits, reshapes and splits them before the Sigmoid:
    one uint8 scale over them all left a real detector's class scores 42 distinct values, and at its 0.35
    threshold 207 boxes where FP32 had 144. The class layer and what carries its logits stay float; the
    trunk stays int8."""
    from quantkit.graph.query import GraphIndex
    from quantkit.planner.patterns import SCORE_REASON
    from quantkit.planner.range_plan import score_tensors
    from tests.helpers import quantize

    model = _yolov8_head()
    index = GraphIndex(onnx.shape_inference.infer_shapes(model))
    # the box layer too: its logits share the Concat and the Split with the scores
    assert score_tensors(index) == {"box", "cls", "level", "flat", "logits"}
    summary, out = quantize(model, tmp_path, image_dir)
    assert summary.plan.quantized_nodes == {"trunk": "Conv"}
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert reasons["cls"] == reasons["box"] == SCORE_REASON
    written = onnx.load(str(out))
    quantized = {n.input[0] for n in written.graph.node if n.op_type == "QuantizeLinear"}
    assert "x" in quantized and not quantized & {"box", "cls", "level", "flat", "logits"}


def test_no_top1_change_is_a_drop_of_zero_not_minus_zero() -> None:
    """hunt32: report.json read '"measured": -0.0' for a model whose top-1 did not move."""
    import dataclasses
    import math

    from quantkit.evaluate.gates import accuracy_drop
    from tests.test_golden import _comparison

    same = _comparison()
    same = dataclasses.replace(same, candidate_accuracy=same.reference_accuracy)
    drop, _ = accuracy_drop(same)
    assert drop == 0.0 and math.copysign(1.0, drop) == 1.0  # type: ignore[arg-type]


def test_a_boxes_budget_on_a_sample_without_objects_checks_the_head_only() -> None:
    """hq82 1: convert --max-drop --detector ssd|yolox refused 'FP32 finds no final box ... on the
    validation images' (18 there) because the head check ran on the table's first sample, a background
    photo, and its fix named --score-threshold, which convert does not have."""
    from quantkit.config import BudgetMetric, DetectorHead
    from quantkit.errors import ConfigError
    from quantkit.evaluate.budget_validator import Validator
    from quantkit.results import Batch

    empty = [np.stack([_head([])])]

    def batches() -> list[Batch]:
        return [Batch(np.zeros((1, 1), np.float32), (Path("0.jpg"),))]

    yolo = DetectorHead.yolo
    head = Validator(_Heads(empty), batches, BudgetMetric.boxes, Path("."), None, 0.3, yolo, counted=False)
    assert head.metric is BudgetMetric.boxes
    with pytest.raises(ConfigError, match=r"give --validation images with the model's objects$"):
        Validator(_Heads(empty), batches, BudgetMetric.boxes, Path("."), None, 0.3, DetectorHead.yolo)
