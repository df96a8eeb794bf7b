"""The boxes a selection carries (graph.carried) are judged by how they move between the samples
(OutputNoise's `centred`): hq93 F1, a detector with NonMaxSuppression inside, placed for TensorRT, read
27.7 dB on its boxes (mostly where its anchors sit) while what moves measured 4.5 dB; it kept 15 of
FP32's 33 final boxes held out, and convert wrote it with no word."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from quantkit.evaluate.output_noise import OutputNoise
from quantkit.evaluate.variation import FEW_IMAGES
from quantkit.graph.carried import carried
from tests.conftest import nms_head


def _nms_model(grid_step: float = 2.0) -> onnx.ModelProto:
    """Conv features -> boxes [1, 16, 4] (a regression plus each anchor's place, grid_step apart) and
    class scores [1, 2, 16] -> NonMaxSuppression -> the boxes it keeps, y [K, 4]."""
    nodes, weights = nms_head("bt")
    weights |= {"two": np.array(2, np.int64), "zero": np.array([0], np.int64)}
    weights["grid"] = np.arange(64, dtype=np.float32).reshape(1, 16, 4) * grid_step
    nodes += [
        helper.make_node("Add", ["bt", "grid"], ["boxes"], name="anchors"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "most", "iou", "least"], ["sel"]),
        helper.make_node("Gather", ["sel", "two"], ["idx"], name="pick_idx", axis=1),
        helper.make_node("Squeeze", ["boxes", "zero"], ["b2"], name="squeeze"),
        helper.make_node("Gather", ["b2", "idx"], ["y"], name="picked", axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "nms_boxes",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["K", 4])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _through_qdq(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """`model` with a QuantizeLinear / DequantizeLinear pair between `tensor` and its readers."""
    qdq = [
        helper.make_node("QuantizeLinear", [tensor, "qs", "qz"], [f"{tensor}_q"]),
        helper.make_node("DequantizeLinear", [f"{tensor}_q", "qs", "qz"], [f"{tensor}_dq"]),
    ]
    for node in model.graph.node:
        node.input[:] = [f"{tensor}_dq" if name == tensor else name for name in node.input]
    model.graph.node.extend(qdq)
    model.graph.initializer.extend(
        [numpy_helper.from_array(np.float32(0.1), "qs"), numpy_helper.from_array(np.uint8(128), "qz")]
    )
    return model


def test_carried_are_the_boxes_a_selection_keeps_not_the_scores_it_ranks() -> None:
    model = _nms_model()
    names = ["boxes", "b2", "scores", "cs", "r"]
    assert carried(model, names) == {"boxes", "b2"}
    # a converted form: the Q/DQ pairs pass values on like any other op
    assert carried(_through_qdq(_nms_model(), "boxes"), names) == {"boxes", "b2"}
    assert carried(_through_qdq(_nms_model(), "scores"), names) == {"boxes", "b2"}
    # a TopK's indices gathering boxes: the boxes are carried, the scores it ranks are not
    topk = [
        helper.make_node("TopK", ["s", "k"], ["v", "i"], name="top", axis=1),
        helper.make_node("Gather", ["bx", "i"], ["kept"], name="keep", axis=1),
    ]
    graph = helper.make_graph(
        topk,
        "topk",
        [
            helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [1, 16]),
            helper.make_tensor_value_info("bx", onnx.TensorProto.FLOAT, [1, 16, 4]),
        ],
        [helper.make_tensor_value_info("kept", onnx.TensorProto.FLOAT, [1, 3, 4])],
        [numpy_helper.from_array(np.array([3], np.int64), "k")],
    )
    assert carried(helper.make_model(graph), ["s", "bx"]) == {"bx"}
    # no selection: nothing carried
    model.graph.node.pop()  # the Gather that reads the NonMaxSuppression's picks
    del model.graph.node[-4:]  # the NonMaxSuppression and its readers
    assert carried(model, names) == frozenset()


def test_a_centred_output_is_judged_by_what_moves_between_samples() -> None:
    rng = np.random.default_rng(0)
    anchors = np.arange(64, dtype=np.float64).reshape(1, 16, 4)  # [1, 16, 4] fixed part
    moving = rng.normal(0.0, 1.0, (8, 16, 4))  # what each sample changes
    noise = rng.normal(0.0, 0.5, (8, 16, 4))
    pooled, centred = OutputNoise(), OutputNoise(centred=["b"], rows=8)
    unbatched, still = OutputNoise(centred=["b"], rows=16), OutputNoise(centred=["b"], rows=8)
    for k in range(8):
        ref = {"b": (anchors + moving[k : k + 1]).astype(np.float32)}
        got = {"b": ref["b"] + noise[k : k + 1].astype(np.float32)}
        pooled.update(ref, got)
        centred.update(ref, got)
        unbatched.update(ref, got)  # 8 rows where 16 samples were run: no row per sample, not centred
        frame = {"b": (anchors + 1e-3 * moving[k : k + 1]).astype(np.float32)}  # one still scene
        still.update(frame, {"b": frame["b"] + noise[k : k + 1].astype(np.float32)})
    ref32 = (anchors + moving).astype(np.float32)
    ref_all, got_all = ref32.astype(np.float64), (ref32 + noise.astype(np.float32)).astype(np.float64)
    # the box coordinates are one kind of feature (not scores in [0, 1]): their noise over the power of
    # each element's deviation from its mean over the 8 samples
    deviation = ref_all - ref_all.mean(axis=0)
    expected = 10.0 * math.log10((deviation**2).sum() / ((got_all - ref_all) ** 2).sum())
    assert centred.sqnr_db == pytest.approx(expected, rel=1e-9)
    assert pooled.sqnr_db > centred.sqnr_db + 25.0  # the anchors' power hid the noise
    assert centred.centred_names() == ["b"] and unbatched.centred_names() == still.centred_names() == []
    assert unbatched.sqnr_db == pooled.sqnr_db
    # hq101 F2: frames of one still scene move their boxes by 1e-3 (-65 dB of their power): nothing to
    # judge by there, and every layer went float for boxes 0.3 px off; read pooled
    assert still.sqnr_db > 30.0
    # on fewer samples than FEW_IMAGES a mean is mostly the samples: the pooled figure
    few, plain = OutputNoise(centred=["b"], rows=FEW_IMAGES - 1), OutputNoise()
    for k in range(FEW_IMAGES - 1):
        ref = {"b": (anchors + moving[k : k + 1]).astype(np.float32)}
        got = {"b": ref["b"] + noise[k : k + 1].astype(np.float32)}
        few.update(ref, got)
        plain.update(ref, got)
    assert few.sqnr_db == plain.sqnr_db


def test_convert_judges_the_boxes_a_selection_carries_by_how_they_move(
    tmp_path: Path, image_dir: Path
) -> None:
    """convert's note names the boxes it judged by how they move between the samples, and does not warn
    that they barely change (it judges them on that already); the math and its limits: the tests above."""
    from quantkit.config import ConvertConfig, Prefer
    from tests.helpers import quantize

    summary, _ = quantize(_nms_model(), tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy))
    (note,) = [n for n in summary.notes if "entering the selection" in n]
    # 'b2', the boxes squeezed to [16, 4], holds no row per sample: judged pooled
    assert "('boxes' by how they move between the samples), and those are what the floors" in note, note
    assert not [w for w in summary.warnings if "barely change" in w]
