"""End-to-end detector heads ([N, K, x0 y0 x1 y1 score class], YOLOv10 / YOLO26 / exports with NMS):
their rows follow the scores, so they are compared by the boxes they list, never row by row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.config import BudgetMetric, DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.budget_validator import Validator
from quantkit.evaluate.compare import Comparison
from quantkit.evaluate.end2end import listed_detections, split_head
from quantkit.results import Batch
from quantkit.runtime import Session
from tests.helpers import assert_one_line_error, compared_rows, run
from tests.test_detection import _Heads, offset_by_input

Row = tuple[float, float, float, float, float, int]


def _listed(rows: list[Row], k: int = 5) -> np.ndarray:
    """Final detections (x0, y0, x1, y1, score, class) -> [K, 6], padded with rows scoring 0.001."""
    out = np.zeros((k, 6), np.float32)
    out[:, :4] = 0, 0, 10, 10
    out[:, 4] = 0.001
    for i, row in enumerate(rows):
        out[i] = row
    return out


def test_listed_detections_keeps_rows_above_the_score_by_falling_score() -> None:
    rows = _listed([(0, 0, 5, 5, 0.4, 2), (1, 1, 6, 6, 0.9, 0), (2, 2, 7, 7, 0.2, 1)])
    boxes, cls, score = listed_detections(rows, 0.3)
    np.testing.assert_array_equal(boxes, [[1, 1, 6, 6], [0, 0, 5, 5]])
    np.testing.assert_array_equal(cls, [0, 2])
    np.testing.assert_allclose(score, [0.9, 0.4])
    assert cls.dtype == np.int64


def test_rows_in_another_order_are_the_same_detections() -> None:
    """A candidate whose scores moved a little lists its boxes in another order: every box is found,
    though its rows measure far apart."""
    ref = _listed([(0, 0, 50, 50, 0.90, 0), (100, 100, 150, 150, 0.85, 1), (10, 10, 40, 40, 0.5, 2)])
    cand = _listed([(100, 100, 150, 150, 0.91, 1), (0, 0, 50, 50, 0.88, 0), (10, 10, 40, 40, 0.52, 2)])
    comparison = Comparison(Path("."), None, 0.3, DetectorHead.end2end)
    comparison.update(
        Batch(np.zeros((1, 1), np.float32), (Path("a.jpg"),)), {"y": ref[None]}, {"y": cand[None]}
    )
    (metrics,), _, _, count = comparison.result()
    assert count == 1
    assert (metrics.boxes, metrics.boxes_found, metrics.boxes_extra) == (3, 3, 0)
    assert metrics.detection_recall == 1.0 and metrics.detections == 3
    assert metrics.sqnr_db < 10.0  # row by row, the same detections read as noise


def test_a_moved_box_is_one_missed_and_one_added() -> None:
    ref = _listed([(0, 0, 50, 50, 0.9, 0), (100, 100, 150, 150, 0.8, 1)])
    cand = _listed([(0, 0, 50, 50, 0.9, 0), (100, 200, 150, 250, 0.8, 1)])
    comparison = Comparison(Path("."), None, 0.3, DetectorHead.end2end)
    comparison.update(
        Batch(np.zeros((1, 1), np.float32), (Path("a.jpg"),)), {"y": ref[None]}, {"y": cand[None]}
    )
    (metrics,), _, _, _ = comparison.result()
    assert (metrics.boxes, metrics.boxes_found, metrics.boxes_extra) == (2, 1, 1)
    assert metrics.detection_recall == 0.5


def test_a_detr_heads_boxes_scores_and_labels_are_read_as_one_list() -> None:
    """hunt52 B5: DEIMv2 (like RT-DETR and D-FINE) writes labels [N, K] (int64), boxes [N, K, 4] and
    scores [N, K]: --detector end2end refused them, and its TensorRT placement's lost quarter of the
    detections showed nowhere."""
    ref = _listed([(0, 0, 50, 50, 0.9, 0), (100, 100, 150, 150, 0.8, 1)])[None]
    cand = _listed([(0, 0, 50, 50, 0.9, 0), (100, 200, 150, 250, 0.8, 1)])[None]

    def split(rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"labels": rows[..., 5].astype(np.int64), "boxes": rows[..., :4], "scores": rows[..., 4]}

    comparison = Comparison(Path("."), None, 0.3, DetectorHead.end2end)
    comparison.update(Batch(np.zeros((1, 1), np.float32), (Path("a.jpg"),)), split(ref), split(cand))
    # review54 L1: a later image where FP32 finds nothing (every score 0, whole numbers, which the outputs'
    # form was read from anew) and the candidate finds 2 boxes: they are 2 added
    empty = split(np.zeros_like(ref))
    comparison.update(Batch(np.zeros((1, 1), np.float32), (Path("b.jpg"),)), empty, split(ref))
    metrics = {m.name: m for m in comparison.result()[0]}
    boxes = metrics["boxes"]
    assert (boxes.boxes, boxes.boxes_found, boxes.boxes_extra, boxes.detection_recall) == (2, 1, 3, 0.5)
    assert metrics["scores"].boxes is None and metrics["labels"].boxes is None
    # hunt56 C2: one more [N, K] output (a quality score): the one named for scores is read
    quality = {**split(ref), "quality": split(ref)["scores"] ** 2}
    assert split_head(quality) == ("boxes", "scores", "labels")
    assert split_head({**quality, "score_quality": quality["quality"]}) is None  # two named so: refused

    # hunt53 C3: the TensorFlow Object Detection API's form (tf2onnx's TFLite SSDs): boxes as y0 x0 y1 x1
    # (IoU is the same either way), classes as floats, and a count [N]
    def tensorflow(rows: np.ndarray) -> dict[str, np.ndarray]:
        listed = {"boxes": rows[..., [1, 0, 3, 2]], "classes": rows[..., 5], "scores": rows[..., 4]}
        return {**listed, "count": np.array([2.0], np.float32)}

    comparison = Comparison(Path("."), None, 0.3, DetectorHead.end2end)
    comparison.update(
        Batch(np.zeros((1, 1), np.float32), (Path("a.jpg"),)), tensorflow(ref), tensorflow(cand)
    )
    boxes = {m.name: m for m in comparison.result()[0]}["boxes"]
    assert (boxes.boxes, boxes.boxes_found, boxes.boxes_extra, boxes.detection_recall) == (2, 1, 1, 0.5)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [(4, 3.5, "scores from"), (5, 0.5, "not class indices"), (5, -1.0, "not class indices")],
)
def test_rows_that_are_not_detections_are_refused(column: int, value: float, message: str) -> None:
    rows = _listed([(0, 0, 50, 50, 0.9, 0)])
    rows[1, column] = value
    comparison = Comparison(Path("."), None, 0.3, DetectorHead.end2end)
    with pytest.raises(ConfigError, match=message):
        comparison.update(
            Batch(np.zeros((1, 1), np.float32), (Path("a.jpg"),)), {"y": rows[None]}, {"y": rows[None]}
        )


def test_the_budget_counts_listed_boxes_missed_for_recall_and_added_too_for_boxes() -> None:
    ref = [
        _listed([(0, 0, 50, 50, 0.9, 0), (100, 100, 150, 150, 0.8, 1)])[None],
        _listed([(0, 0, 50, 50, 0.7, 2)])[None],
    ]
    cand = [  # reordered, one box moved (missed + added), one added
        _listed([(100, 100, 150, 150, 0.8, 1), (0, 90, 50, 140, 0.9, 0)])[None],
        _listed([(0, 0, 50, 50, 0.7, 2), (60, 60, 90, 90, 0.6, 1)])[None],
    ]

    def batches() -> list[Batch]:
        return [Batch(np.full((1, 1), k, np.float32), (Path(f"{k}.jpg"),)) for k in range(2)]

    boxes = Validator(_Heads(ref), batches, BudgetMetric.auto, Path("."), None, 0.3, DetectorHead.end2end)
    assert boxes.metric is BudgetMetric.boxes
    assert boxes.drop(_Heads(ref)) == 0.0
    assert boxes.drop(_Heads(cand)) == pytest.approx(100 * 3 / 3)  # 1 missed + 2 added, 3 FP32 boxes
    recall = Validator(_Heads(ref), batches, BudgetMetric.recall, Path("."), None, 0.3, DetectorHead.end2end)
    assert recall.drop(_Heads(cand)) == pytest.approx(100 / 3)  # only the missed one

    # a DETR head's labels, boxes and scores (hunt52 B5): the same budget, where --max-drop refused them
    class Split(_Heads):
        def run_batch(self, data: np.ndarray) -> dict[str, np.ndarray]:
            rows = super().run_batch(data)["y"]
            return {"labels": rows[..., 5].astype(np.int64), "boxes": rows[..., :4], "scores": rows[..., 4]}

    split = Validator(Split(ref), batches, BudgetMetric.auto, Path("."), None, 0.3, DetectorHead.end2end)
    assert (split.metric, split.output) == (BudgetMetric.boxes, "boxes+scores+labels")
    assert split.drop(Split(ref)) == 0.0 and split.drop(Split(cand)) == pytest.approx(100 * 3 / 3)


def _end2end_model(path: Path, boxes: np.ndarray, base: np.ndarray, classes: np.ndarray) -> Path:
    """input [1, 3, 32, 32] -> [1, 4, 6]: TopK of 8 anchors' scores (base + a tenth of the input's
    sigmoid mean), their boxes and classes gathered, as an end-to-end head lists them."""
    nodes = [
        *offset_by_input("scores"),
        helper.make_node("TopK", ["scores", "k"], ["top", "index"], axis=1),
        helper.make_node("Gather", ["boxes", "index"], ["b"], axis=0),
        helper.make_node("Gather", ["classes", "index"], ["c"], axis=0),
        helper.make_node("Unsqueeze", ["top", "last"], ["t3"]),
        helper.make_node("Unsqueeze", ["c", "last"], ["c3"]),
        helper.make_node("Concat", ["b", "t3", "c3"], ["y"], axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        "e2e",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6])],
        [
            numpy_helper.from_array(base[None].astype(np.float32), "base"),
            numpy_helper.from_array(boxes.astype(np.float32), "boxes"),
            numpy_helper.from_array(classes.astype(np.float32), "classes"),
            numpy_helper.from_array(np.array([1, 1], np.int64), "one"),
            numpy_helper.from_array(np.array(0.1, np.float32), "tenth"),
            numpy_helper.from_array(np.array([4], np.int64), "k"),
            numpy_helper.from_array(np.array([2], np.int64), "last"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_cli_compares_an_end_to_end_detector_by_its_boxes(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boxes = np.array([[k * 30, k * 20, k * 30 + 25, k * 20 + 25] for k in range(8)], np.float32)
    base = np.array([0.5, 0.8, 0.1, 0.6, 0.05, 0.7, 0.02, 0.01])
    classes = np.arange(8) % 3
    reference = _end2end_model(tmp_path / "ref.onnx", boxes, base, classes)
    reranked = base.copy()
    reranked[[1, 5]] = reranked[[5, 1]]  # the same four detections, listed in another order...
    moved = boxes.copy()
    moved[[1, 5]] = moved[[5, 1]]
    moved_classes = classes.copy()
    moved_classes[[1, 5]] = moved_classes[[5, 1]]
    moved[3] += 100  # ...but for one box, moved away: one missed, one added
    candidate = _end2end_model(tmp_path / "cand.onnx", moved, reranked, moved_classes)
    args = ["compare", str(reference), str(candidate), "--images", str(image_dir), "--runs", "0"]
    args += [
        "--detector",
        "end2end",
        "--preset",
        "unit",
        "--resize",
        "squash",
        "--json",
        str(tmp_path / "c.json"),
    ]
    code, _, err = run(args, capsys)
    assert code == 0, err
    output = json.loads((tmp_path / "c.json").read_text())["outputs"][0]
    images = output["boxes"] // 4
    assert images > 0 and output["boxes"] == 4 * images  # four listed detections above 0.3 an image
    assert (output["boxes_found"], output["boxes_extra"]) == (3 * images, images)
    assert "chosen and ordered by a TopK" not in err  # its boxes were compared, not its rows
    code, _, err = run([a for a in args if a not in ("--detector", "end2end")], capsys)
    assert code == 0 and "output(s) 'y' are chosen and ordered by a TopK" in err
    assert "--detector end2end reads" in " ".join(err.split())


def test_cli_refuses_a_raw_head_read_as_end_to_end(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_detection import _raw_detector

    model = _raw_detector(tmp_path / "det.onnx", 21)
    args = ["compare", str(model), str(model), "--images", str(image_dir), "--runs", "0"]
    args += ["--detector", "end2end", "--preset", "unit", "--resize", "squash"]
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, "not class indices", "--detector end2end")


def _per_image_detector(path: Path, keep_above: float) -> Path:
    """x [1, 3, 16, 16] -> a Conv head of 8 channels a cell -> its rows [256, 8]: box corners (x0, y0 in
    0..8, x1, y1 in 8..16), a score (Sigmoid), a class (ArgMax of 3); those scoring above `keep_above`
    picked by NonZero: boxes [K, 4], scores [K], labels [K] of the one image, as many as the data gives
    (torchvision's detectors as torch.onnx exports them)."""
    g = np.random.default_rng(7)
    consts = {
        "w": g.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
        "b": g.normal(0, 0.5, (8,)).astype(np.float32),
        "rows_shape": np.array([8, -1], np.int64),
        "eight": np.array(8.0, np.float32),
        "offset": np.array([0.0, 0.0, 8.0, 8.0], np.float32),
        "threshold": np.array(keep_above, np.float32),
        "box_cols": np.array([0, 1, 2, 3], np.int64),
        "score_col": np.array(4, np.int64),
        "class_cols": np.array([5, 6, 7], np.int64),
        "axis0": np.array([0], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["head"], pads=[1, 1, 1, 1], name="head"),
        helper.make_node("Reshape", ["head", "rows_shape"], ["by_channel"], name="flat"),
        helper.make_node("Transpose", ["by_channel"], ["rows"], perm=[1, 0], name="rows"),
        helper.make_node("Gather", ["rows", "box_cols"], ["box_logits"], axis=1, name="box_cols"),
        helper.make_node("Sigmoid", ["box_logits"], ["box_unit"], name="box_sigmoid"),
        helper.make_node("Mul", ["box_unit", "eight"], ["box_size"], name="box_scale"),
        helper.make_node("Add", ["box_size", "offset"], ["box_all"], name="box_offset"),
        helper.make_node("Gather", ["rows", "score_col"], ["score_logit"], axis=1, name="score_col"),
        helper.make_node("Sigmoid", ["score_logit"], ["score_all"], name="score_sigmoid"),
        helper.make_node("Gather", ["rows", "class_cols"], ["class_logits"], axis=1, name="class_cols"),
        helper.make_node("ArgMax", ["class_logits"], ["label_all"], axis=1, keepdims=0, name="label"),
        helper.make_node("Greater", ["score_all", "threshold"], ["kept"], name="kept"),
        helper.make_node("NonZero", ["kept"], ["picked"], name="picked"),
        helper.make_node("Squeeze", ["picked", "axis0"], ["index"], name="index"),
        helper.make_node("Gather", ["box_all", "index"], ["boxes"], axis=0, name="boxes"),
        helper.make_node("Gather", ["score_all", "index"], ["scores"], axis=0, name="scores"),
        helper.make_node("Gather", ["label_all", "index"], ["labels"], axis=0, name="labels"),
    ]
    graph = helper.make_graph(
        nodes,
        "per_image",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["K", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["K"]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["K"]),
        ],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_one_images_detections_without_a_batch_axis_are_read_as_its_list(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq61: torchvision's detectors (SSD, RetinaNet, FCOS, Faster R-CNN) export one image's boxes [K, 4],
    scores [K] and labels [K], K as many as the data gives; --detector end2end refused them ('needs an
    output shaped [N, detections, ...]'), leaving row-by-row figures of rows that stand for other boxes.
    A model run one image at a time gives them as that image's list: the candidate here keeps only the
    detections above 0.7 of the reference's above 0.6, each the same box."""
    reference = _per_image_detector(tmp_path / "ref.onnx", 0.6)
    candidate = _per_image_detector(tmp_path / "cand.onnx", 0.7)
    given = ("--detector", "end2end", "--score-threshold", "0.5")
    boxes = compared_rows(reference, candidate, image_dir, capsys, *given)["boxes"]
    assert boxes["boxes"] > boxes["boxes_found"] > 0 and boxes["boxes_extra"] == 0
    # independently: the reference's scores on the images as compare reads them
    from quantkit.config import ImageSelection, PreprocessOptions
    from quantkit.graph.model_inputs import image_input
    from quantkit.graph.model_io import load_model
    from quantkit.image_folders import select_images
    from quantkit.images import ImageLoader, resolve_preprocess

    pre = resolve_preprocess(PreprocessOptions(), image_input(load_model(reference)))
    session = Session.of(onnx.load(str(reference)))
    scores = np.concatenate(
        [
            session.run(batch.data)["scores"]
            for batch in ImageLoader(select_images(ImageSelection(image_dir)), pre, 1)
        ]
    )
    assert (boxes["boxes"], boxes["boxes_found"]) == (int((scores > 0.5).sum()), int((scores > 0.7).sum()))
    code, _, err = run(
        ["compare", str(reference), str(candidate), "--images", str(image_dir), "--runs", "0", *given], capsys
    )
    assert code == 0 and "different number of rows" not in err and "chosen and ordered" not in err, err
    # shrink's --min-eval-sqnr has no element figure of it to judge, and says what does (review)
    import quantkit
    from quantkit.config import Gates
    from quantkit.evaluate.gates import check

    result = quantkit.compare(
        str(reference), str(candidate), data=str(image_dir), detector="end2end", score_threshold=0.5, runs=0
    )
    (gate,) = check(result, Gates(min_eval_sqnr=10.0))
    assert gate.measured is None and "gate its detections with --max-drop" in gate.unit
    from quantkit.reports.markdown import comparison_markdown

    assert "| `boxes` SQNR / cosine | n/a / n/a |" in comparison_markdown(result)  # not 'nan'


def test_a_batched_model_s_last_short_batch_is_no_one_image_list() -> None:
    """Review of hq61's reading: a batched model giving one box an image (boxes [N, 4], scores and labels
    [N]) was read as one image's list on a last batch of 1 image, and from then on N images' boxes as one
    image's K; the one-image reading is the model's (its batch fixed at 1), not the batch's."""
    one = {"boxes": np.array([[1.0, 2.0, 5.0, 6.0]], np.float32), "scores": np.array([0.9], np.float32)}
    one["labels"] = np.array([2], np.int64)
    assert split_head(one, 0) is None and split_head(one, 1) == ("boxes", "scores", "labels")
    for one_image, found in ((False, None), (True, ("boxes", "scores", "labels"))):
        comparison = Comparison(Path("."), None, 0.5, DetectorHead.end2end, one_image=one_image)
        comparison.update(Batch(np.zeros((1, 3, 8, 8), np.float32), (Path("a.png"),)), one, one)
        assert comparison.split == found
