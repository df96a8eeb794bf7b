"""--detector ssd: SSD-style split heads (class scores [N, A, C] beside decoded boxes [N, A, 4]) read as
boxes in compare and in --max-drop's budget, and their per-anchor agreement refused as a gate (hq63b F1: an
RFB face detector's 4420 anchors agreed at 99.98 % where 68 of 340 faces were lost)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.config import BudgetMetric, DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.budget_validator import Validator
from quantkit.evaluate.compare import Comparison
from quantkit.evaluate.ssd import ssd_head, ssd_rows
from quantkit.results import Batch
from tests.conftest import checked_model
from tests.helpers import assert_one_line_error, run

ANCHORS = 64  # an 8 x 8 grid of priors over a 16 x 16 input


def _priors() -> np.ndarray:
    """Corners [A, 4] in fractions of the image: a 3/8-wide box at each cell of an 8 x 8 grid."""
    cy, cx = np.meshgrid((np.arange(8) + 0.5) / 8, (np.arange(8) + 0.5) / 8, indexing="ij")
    centres = np.stack([cx.ravel(), cy.ravel()], axis=1)
    return np.concatenate([centres - 3 / 16, centres + 3 / 16], axis=1).astype(np.float32)


def _outputs(faces: dict[int, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Ultra-Light's two outputs for one image: softmax scores [1, A, 2] (background first), low but at
    the anchors in `faces` (their face probability), and the priors' corners a little moved."""
    g = np.random.default_rng(seed)
    face = g.uniform(0.0, 0.05, ANCHORS)
    for anchor, p in faces.items():
        face[anchor] = p
    scores = np.stack([1 - face, face], axis=-1)[None].astype(np.float32)
    boxes = (_priors() + g.normal(0, 0.005, (ANCHORS, 4)))[None].astype(np.float32)
    return {"scores": scores, "boxes": boxes}


def test_an_ssd_head_reads_as_boxes_past_its_background() -> None:
    outputs = _outputs({10: 0.9})
    head = ssd_head(outputs)
    assert (head.scores, head.boxes, head.background) == ("scores", "boxes", 0)
    rows = ssd_rows(outputs, head)
    assert rows.shape == (1, ANCHORS, 6)  # cx, cy, w, h, objectness, the face class
    corners = outputs["boxes"][0, 10].astype(np.float64)
    np.testing.assert_allclose(
        rows[0, 10, :4], [*(corners[:2] + corners[2:]) / 2, *(corners[2:] - corners[:2])]
    )
    assert rows[0, 10, 4] == 1.0 and rows[0, 10, 5] == pytest.approx(0.9)
    sigmoid = {"scores": np.full((1, ANCHORS, 3), 0.2, np.float32), "boxes": outputs["boxes"]}
    assert ssd_head(sigmoid).background is None  # no softmax: every column a class
    with pytest.raises(ConfigError, match=r"--detector ssd reads class scores \[N, A, C\]"):
        ssd_head({"scores": outputs["scores"]})


def test_the_background_is_the_class_most_anchors_pick() -> None:
    """A review: column 0 was dropped whatever it held; mmdetection's softmax SSD heads put the background
    last, and 2995 of 3000 anchors read as detections."""
    first = _outputs({10: 0.9})
    last = {"scores": first["scores"][..., ::-1].copy(), "boxes": first["boxes"]}
    head = ssd_head(last)
    assert head.background == 1
    np.testing.assert_allclose(ssd_rows(last, head), ssd_rows(first, ssd_head(first)))


def test_four_classes_and_a_second_box_output_still_pair_up() -> None:
    """A review: scores of 4 classes were taken for boxes, and another [N, A, 4] output (the priors, raw
    offsets) made two pairs: --detector ssd was refused, and --max-drop gated on anchors again."""
    g = np.random.default_rng(2)
    logits = g.normal(0, 1, (1, ANCHORS, 4))
    scores = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    scores[..., 0] += 3.0  # the background most anchors pick
    scores /= scores.sum(-1, keepdims=True)
    outputs = {"scores": scores, "boxes": _outputs({})["boxes"]}
    outputs["offsets"] = g.normal(0, 1, (1, ANCHORS, 4)).astype(np.float32)  # not corners
    head = ssd_head(outputs)
    assert (head.scores, head.boxes, head.background) == ("scores", "boxes", 0)
    with pytest.raises(ConfigError, match="would count the top-1 of 'scores'"):
        Validator(_Runs([outputs]), lambda: _batches()[:1], BudgetMetric.agreement, Path("."), None, 0.5)


def test_compare_matches_the_faces_each_model_keeps() -> None:
    reference = _outputs({10: 0.9, 40: 0.8})
    candidate = _outputs({10: 0.9, 40: 0.1, 50: 0.7})  # one face lost, one added
    comparison = Comparison(Path("."), None, 0.5, DetectorHead.ssd, (16, 16))
    comparison.update(Batch(np.zeros((1, 3, 16, 16), np.float32), (Path("a.jpg"),)), reference, candidate)
    metrics = {m.name: m for m in comparison.result()[0]}
    head = metrics["scores"]
    assert (head.boxes, head.boxes_found, head.boxes_extra) == (2, 1, 1)
    assert metrics["boxes"].boxes is None


def test_compare_warns_of_anchor_agreement_only_where_the_scores_are_probabilities() -> None:
    """A review: the warning read shapes alone, and sent a DETR's raw logits [N, 100, 92] beside boxes
    [N, 100, 4] to --detector ssd, which refuses them."""
    from quantkit.evaluate.figure_warnings import anchors_agreement

    batch = Batch(np.zeros((1, 3, 16, 16), np.float32), (Path("a.jpg"),))
    ssd = Comparison(Path("."), None, None, DetectorHead.yolo, (16, 16))
    ssd.update(batch, _outputs({10: 0.9}), _outputs({10: 0.8}))
    said = anchors_agreement(ssd.result()[0], ssd.anchors, ssd.seen_shapes)
    assert said is not None and said.startswith("'scores' [1, 64, 2] beside boxes 'boxes' [1, 64, 4]")
    logits = np.random.default_rng(3).normal(0, 3, (1, ANCHORS, 92)).astype(np.float32)
    detr = {"logits": logits, "boxes": _outputs({})["boxes"]}
    raw = Comparison(Path("."), None, None, DetectorHead.yolo, (16, 16))
    raw.update(batch, detr, detr)
    assert raw.anchors is None and anchors_agreement(raw.result()[0], raw.anchors, raw.seen_shapes) is None
    # hq84 F3: a table recogniser's decoding steps (a softmax over 30 tokens, most steps picking token 28)
    # beside their cells' boxes: no anchors of background, and --detector ssd refuses them
    tokens = np.full((1, ANCHORS, 30), 0.1 / 29, np.float32)
    tokens[..., 28] = 0.9
    steps = {"tokens": tokens, "boxes": _outputs({})["boxes"]}
    decoded = Comparison(Path("."), None, None, DetectorHead.yolo, (16, 16))
    decoded.update(batch, steps, steps)
    assert decoded.anchors is None
    with pytest.raises(ConfigError, match="most anchors of 'tokens' pick class 28"):
        ssd_head(steps)


def test_a_head_of_offsets_from_its_priors_is_refused() -> None:
    outputs = _outputs({10: 0.9})
    outputs["boxes"] = np.random.default_rng(1).normal(0, 1, (1, ANCHORS, 4)).astype(np.float32)
    outputs["boxes"][0, 10] = [0.5, 0.5, 0.2, 0.2]  # x1 < x0: not corners
    comparison = Comparison(Path("."), None, 0.5, DetectorHead.ssd, (16, 16))
    with pytest.raises(ConfigError, match="--detector ssd reads decoded boxes"):
        comparison.update(Batch(np.zeros((1, 3, 16, 16), np.float32), (Path("a.jpg"),)), outputs, outputs)


class _Runs:
    """A stand-in session: the outputs of batch k, whatever the input."""

    def __init__(self, runs: list[dict[str, np.ndarray]]) -> None:
        self.runs = runs

    def run_batch(self, data: np.ndarray) -> dict[str, np.ndarray]:
        return self.runs[int(data[0, 0])]


def _batches() -> list[Batch]:
    return [Batch(np.full((1, 1), k, np.float32), (Path(f"{k}.jpg"),)) for k in range(2)]


def test_the_budget_counts_faces_and_refuses_per_anchor_agreement() -> None:
    reference = [_outputs({10: 0.9}), _outputs({20: 0.8, 44: 0.7}, seed=1)]
    candidate = [reference[0], _outputs({20: 0.8, 44: 0.2}, seed=1)]  # one face of three lost
    validator = Validator(
        _Runs(reference), _batches, BudgetMetric.auto, Path("."), None, 0.5, DetectorHead.ssd
    )
    assert validator.metric is BudgetMetric.boxes and validator.output == "scores"
    assert validator.drop(_Runs(reference)) == 0.0
    assert validator.drop(_Runs(candidate)) == pytest.approx(100 / 3)  # one of FP32's three faces lost
    with pytest.raises(
        ConfigError, match="would count the top-1 of 'scores' \\[1, 64, 2\\] anchor by anchor"
    ):
        Validator(_Runs(reference), _batches, BudgetMetric.agreement, Path("."), None, 0.5)


def _ssd_model(path: Path) -> Path:
    """A small Ultra-Light-shaped model over a 16 x 16 input: per 2 x 2 cell a Conv to two class logits
    and their Softmax, and a Conv to four offsets added to the priors' corners (decoded in the model)."""
    g = np.random.default_rng(0)
    inits = {
        "cw": g.normal(0, 0.8, (2, 3, 2, 2)).astype(np.float32),
        "cb": np.array([1.5, -1.5], np.float32),
        "bw": g.normal(0, 0.002, (4, 3, 2, 2)).astype(np.float32),
        "shape": np.array([1, -1, ANCHORS], np.int64),
        "priors": _priors()[None],
    }
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], strides=[2, 2]),
        helper.make_node("Reshape", ["c", "shape"], ["cf"]),
        helper.make_node("Transpose", ["cf"], ["logits"], perm=[0, 2, 1]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
        helper.make_node("Conv", ["x", "bw"], ["b"], strides=[2, 2]),
        helper.make_node("Reshape", ["b", "shape"], ["bf"]),
        helper.make_node("Transpose", ["bf"], ["offsets"], perm=[0, 2, 1]),
        helper.make_node("Add", ["priors", "offsets"], ["boxes"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ssd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, ANCHORS, 2]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, ANCHORS, 4]),
        ],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return checked_model(graph, path)


def test_cli_reads_an_ssd_head_and_refuses_its_anchors_as_a_gate(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _ssd_model(tmp_path / "ssd.onnx")
    table = tmp_path / "t.calib.json"
    code, _, err = run(
        ["calibrate", str(model), "--images", str(image_dir / "cats"), "-o", str(table)], capsys
    )
    assert code == 0, err
    out = tmp_path / "o.onnx"
    code, _, err = run(["convert", str(model), "-c", str(table), "-o", str(out)], capsys)
    assert code == 0, err
    report = tmp_path / "r.json"
    compare = ["compare", str(model), str(out), "--images", str(image_dir / "dogs"), "--runs", "0"]
    code, _, err = run([*compare, "--detector", "ssd", "--json", str(report)], capsys)
    assert code == 0, err
    rows = {o["name"]: o for o in json.loads(report.read_text())["outputs"]}
    assert rows["scores"]["boxes"] > 0 and rows["boxes"]["boxes"] is None
    code, printed, err = run(compare, capsys)  # no --detector: its agreement is per anchor, and says so
    assert code == 0, err
    assert "reads as an SSD-style head" in " ".join((printed + err).split())
    shrink = [
        "shrink",
        str(model),
        "--images",
        str(image_dir / "cats"),
        "--eval-images",
        str(image_dir / "dogs"),
    ]
    code, _, err = run(
        [*shrink, "--output-dir", str(tmp_path / "s"), "--runs", "0", "--max-drop", "1"], capsys
    )
    assert_one_line_error(
        code, err, "--max-drop would count the top-1 of 'scores' [1, 64, 2] anchor by anchor"
    )
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
