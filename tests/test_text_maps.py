"""`--detector db`: a text detector's probability map read as the text boxes a DB post-process makes,
in compare and in --max-drop's budget, on maps built by hand so that every box's fate is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.config import BudgetMetric, DetectorHead
from quantkit.evaluate.budget_validator import Validator
from quantkit.evaluate.compare import Comparison
from quantkit.evaluate.text_maps import is_probability_map, regions, text_boxes
from quantkit.results import Batch
from tests.helpers import assert_one_line_error, run


def _flood_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each 4-connected region, by a plain flood fill."""
    seen = np.zeros_like(mask)
    boxes = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        stack, points = [(y, x)], []
        seen[y, x] = True
        while stack:
            py, px = stack.pop()
            points.append((py, px))
            for qy, qx in ((py - 1, px), (py + 1, px), (py, px - 1), (py, px + 1)):
                inside = 0 <= qy < mask.shape[0] and 0 <= qx < mask.shape[1]
                if inside and mask[qy, qx] and not seen[qy, qx]:
                    seen[qy, qx] = True
                    stack.append((qy, qx))
        ys, xs = zip(*points, strict=True)
        boxes.append((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return boxes


def test_regions_are_the_boxes_of_the_4_connected_components() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = (int(rng.integers(1, 24)), int(rng.integers(1, 24)))
        mask = rng.random(shape) < rng.random()
        assert sorted(map(tuple, regions(mask).tolist())) == sorted(_flood_boxes(mask))
    diagonal = np.eye(4, dtype=bool)  # touching corners only: four regions, not one
    assert len(regions(diagonal)) == 4
    assert regions(np.zeros((3, 5), bool)).shape == (0, 4)


def _map() -> np.ndarray:
    """[32, 48]: a confident text line, a faint region (above 0.3, mean under 0.6) and a 2-pixel sliver."""
    prob = np.full((32, 48), 0.01, np.float32)
    prob[4:10, 5:30] = 0.9  # text: box (5, 4, 30, 10), score 0.9
    prob[15:25, 10:20] = 0.45  # above the threshold, below the box score
    prob[28:30, 2:40] = 0.95  # 2 pixels tall: no text line
    return prob


def test_text_boxes_keep_confident_regions_of_text_line_size() -> None:
    boxes, classes, scores = text_boxes(_map(), 0.3)
    assert boxes.tolist() == [[5.0, 4.0, 30.0, 10.0]]
    assert classes.tolist() == [0] and scores == pytest.approx([0.9])


def test_compare_counts_text_pixels_and_boxes_kept_missed_and_added() -> None:
    ref = _map()
    cand = ref.copy()
    cand[4:10, 5:12] = 0.2  # the line loses its left part: box (12, 4, 30, 10), IoU 18/25, still found
    cand[12:20, 34:44] = 0.8  # a text box FP32 does not have
    comparison = Comparison(Path("."), None, 0.3, DetectorHead.db)
    batch = Batch(np.zeros((1, 3, 32, 48), np.float32), (Path("a.jpg"),))
    comparison.update(batch, {"map": ref[None, None]}, {"map": cand[None, None]})
    (metrics,), _, _, count = comparison.result()
    text = 6 * 25 + 10 * 10 + 2 * 38  # FP32's pixels above 0.3
    assert count == 1 and metrics.detections == text
    assert metrics.detection_recall == pytest.approx((text - 6 * 7) / text)
    assert (metrics.boxes, metrics.boxes_found, metrics.boxes_extra) == (1, 1, 1)
    cand[4:10, 5:25] = 0.2  # now only (25, 4, 30, 10) is left of it: missed, and one more extra
    again = Comparison(Path("."), None, 0.3, DetectorHead.db)
    again.update(batch, {"map": ref[None, None]}, {"map": cand[None, None]})
    (metrics,), _, _, _ = again.result()
    assert (metrics.boxes, metrics.boxes_found, metrics.boxes_extra) == (1, 0, 2)


def test_a_map_is_probabilities_of_one_channel() -> None:
    assert is_probability_map(_map()[None, None]) and is_probability_map(_map()[None])
    assert not is_probability_map(np.stack([_map(), _map()])[None])  # two channels
    assert not is_probability_map(_map()[None, None] * 3.0)  # logits, not a sigmoid's
    assert not is_probability_map(np.zeros((1, 1, 1, 40), np.float32))


class _Maps:
    """A stand-in session: returns a fixed map per batch index, whatever the input."""

    def __init__(self, maps: list[np.ndarray]) -> None:
        self.maps = maps

    def run_batch(self, data: np.ndarray) -> dict[str, np.ndarray]:
        return {"map": self.maps[int(data[0, 0])][None, None]}


def test_the_budget_counts_text_boxes_and_text_pixels() -> None:
    second = np.full((32, 48), 0.01, np.float32)
    second[20:28, 8:40] = 0.7
    ref = [_map(), second]
    lost = [_map(), np.full((32, 48), 0.01, np.float32)]  # the second image's box is gone

    def batches() -> list[Batch]:
        return [Batch(np.full((1, 1), k, np.float32), (Path(f"{k}.jpg"),)) for k in range(2)]

    boxes = Validator(_Maps(ref), batches, BudgetMetric.auto, Path("."), None, 0.3, DetectorHead.db)
    assert boxes.metric is BudgetMetric.boxes
    assert boxes.drop(_Maps(ref)) == 0.0
    assert boxes.drop(_Maps(lost)) == pytest.approx(50.0)  # 1 of FP32's 2 boxes
    pixels = Validator(_Maps(ref), batches, BudgetMetric.recall, Path("."), None, 0.3, DetectorHead.db)
    text = 6 * 25 + 10 * 10 + 2 * 38 + 8 * 32
    assert pixels.drop(_Maps(lost)) == pytest.approx(100 * 8 * 32 / text)


def _text_detector(path: Path, shift: float) -> Path:
    """input [1, 3, 32, 32] -> Sigmoid(8 * (channel 0 - 0.5) + shift) [1, 1, 32, 32]: a map with the
    image's bright parts as text."""
    weight = np.zeros((1, 3, 1, 1), np.float32)
    weight[0, 0] = 8.0
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["map"]),
        ],
        "db",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("map", TensorProto.FLOAT, [1, 1, 32, 32])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array([shift - 4.0], np.float32), "b"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_cli_compare_reads_a_text_detectors_boxes_or_says_why_not(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _text_detector(tmp_path / "db.onnx", 0.0)
    blind = _text_detector(tmp_path / "blind.onnx", -40.0)  # every pixel near 0: no text found
    flags = ["--images", str(image_dir), "--runs", "0", "--preset", "unit", "--resize", "squash"]
    flags += ["--detector", "db"]
    for candidate, found in ((model, None), (blind, 0)):
        report = tmp_path / f"{candidate.stem}.json"
        code, _, err = run(["compare", str(model), str(candidate), *flags, "--json", str(report)], capsys)
        assert code == 0, err
        output = json.loads(report.read_text())["outputs"][0]
        assert output["boxes"] > 0 and output["detections"] > 0
        assert output["boxes_found"] == (output["boxes"] if found is None else found)
        assert output["detection_recall"] == (1.0 if found is None else 0.0)
    plain = tmp_path / "plain.onnx"
    m = onnx.load(model)
    m.graph.node.pop()  # the logits as output: no probability map
    m.graph.output[0].name = "logits"
    onnx.save(m, plain)
    code, _, err = run(["compare", str(plain), str(plain), *flags], capsys)
    assert_one_line_error(code, err, "--detector db needs an output shaped [N, 1, H, W] with every value")


def _db_head(wide: float, background: float) -> onnx.ModelProto:
    """x -> Conv (8 channels; channel 0 `wide` times the others, unread by the logits: coarse int8 steps for
    the rest) -> Relu -> 1x1 Conv (bias -background) -> logits -> Sigmoid -> y, a text map's shape."""
    from tests.conftest import conv_params, make_model, rng

    p = conv_params(8, 3)
    p["w"][0] *= wide
    head = (rng(1).normal(0, 1, (1, 8, 1, 1)) * 3.0).astype(np.float32)
    head[0, 0] = 0.0
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["f"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["f"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["logits"], name="c2"),
        helper.make_node("Sigmoid", ["logits"], ["y"], name="prob"),
    ]
    weights = {"w1": p["w"], "b1": p["b"], "w2": head, "b2": np.full(1, -background, np.float32)}
    return make_model(nodes, weights)


def test_int8_holds_a_map_with_foreground_to_its_own_values(image_dir: Path, tmp_path: Path) -> None:
    """Judged by its logits alone (their power: the confident background), PP-OCRv4's text detector was
    written at 3.2 dB on its map (18.4 dB on its logits) and lost half its text pixels and boxes on
    held-out photos. Where the samples show foreground, INT8 is held to the map beside its logits: here
    the samples measure 7.0 dB with every layer int8; the layers the map needs stay float."""
    from quantkit.planner.fallback import measured_reference
    from tests.conftest import rng
    from tests.helpers import quantize

    model = _db_head(100.0, 8.0)
    summary, out = quantize(model, tmp_path, image_dir)
    assert summary.smoke_sqnr_db["y"] >= 10.0  # the INT8 floor, on the map itself
    # c2 writes the logits, float by rule (range_plan.score_tensors); the map needs c1 float too
    assert [step.node for step in summary.fallback] == ["c1"]
    assert any("and 'y' by its own values too" in note for note in summary.notes)
    samples = rng(2).normal(0, 1, (2, 3, 16, 16)).astype(np.float32)
    fp32, int8 = (
        ort.InferenceSession(m, providers=["CPUExecutionProvider"])
        for m in (model.SerializeToString(), out.read_bytes())
    )
    want, got = (s.run(["y"], {"x": samples})[0] for s in (fp32, int8))
    assert np.sum((want - got) ** 2) < 0.1 * np.sum(want**2)  # the file itself: above 10 dB
    assert sorted(measured_reference(model, samples)[0]) == ["logits", "y"]
    no_text = _db_head(60.0, 500.0)  # every logit far below 0: a map of ~0, read at its logits alone
    assert sorted(measured_reference(no_text, samples)[0]) == ["logits"]
