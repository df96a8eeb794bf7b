"""graph.pad_axes: a Pad given axes (opset 18) written with pads for every axis, exactly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from quantkit.graph.pad_axes import listed_pads, pad_all_axes
from tests.conftest import conv_params, make_model, rng
from tests.helpers import output_sqnr, quantize


def _padded(value: float | None, readers: list[onnx.NodeProto]) -> onnx.ModelProto:
    """x -> Conv(3->8) -> Pad(axes [-1, 2], pads (1, 2, 2, 0), constant `value`) -> readers -> y."""
    p1, p2 = conv_params(8, 3, seed=1), conv_params(4, 8, seed=2)
    inputs = ["c1", "pads", "value" if value is not None else "", "axes"]
    inits = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]}
    inits |= {"pads": np.array([1, 2, 2, 0], np.int64), "axes": np.array([-1, 2], np.int64)}
    if value is not None:
        inits["value"] = np.array(value, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Pad", inputs, ["p"], name="pad"),
        *readers,
    ]
    return make_model(nodes, inits, opset=18)


def _conv_relu() -> list[onnx.NodeProto]:
    return [
        helper.make_node("Conv", ["p", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"], name="relu"),
    ]


def test_listed_pads_place_each_axis_pair_on_its_axis() -> None:
    full = listed_pads(np.array([1, 2, 3, 4]), np.array([-1, 1]), 4)
    assert full is not None
    assert full.tolist() == [0, 2, 0, 1, 0, 4, 0, 3]
    assert listed_pads(np.array([1, 2]), np.array([1, 1]), 4) is None  # repeated
    assert listed_pads(np.array([1, 2]), np.array([4]), 4) is None  # out of range
    assert listed_pads(np.array([1, 2, 3]), np.array([1]), 4) is None  # lengths disagree


@pytest.mark.parametrize("value", [None, 0.5])
def test_a_pad_given_axes_computes_the_same_with_every_axis_listed(value: float | None) -> None:
    model = _padded(value, [helper.make_node("Relu", ["p"], ["y"], name="relu")])
    listed, count = pad_all_axes(model)
    assert count == 1
    pad = next(n for n in listed.graph.node if n.op_type == "Pad")
    assert len(pad.input) == 3 and not any(i.name == "axes" for i in listed.graph.initializer)
    onnx.checker.check_model(listed, full_check=True)
    x = rng(3).normal(0, 1, (2, 3, 16, 16)).astype(np.float32)
    before = ReferenceEvaluator(model).run(None, {"x": x})[0]
    after = ReferenceEvaluator(listed).run(None, {"x": x})[0]
    assert before.shape == (2, 8, 18, 19)
    np.testing.assert_array_equal(before, after)


def test_a_pad_given_axes_between_int8_convs_converts(tmp_path: Path, image_dir: Path) -> None:
    """onnxruntime's layout transformer permuted the Pad's four pads as if they were eight between the
    two int8 Convs: 'Gather: indices element out of data bounds', convert refused the model. Listed for
    every axis, the zero Pad also folds into the Conv after it."""
    summary, out = quantize(_padded(None, _conv_relu()), tmp_path, image_dir)
    assert summary.quantized_by_type["Conv"] == 2
    written = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert written["Pad"] == 0
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_a_pad_of_a_value_given_axes_stays_between_int8_convs(tmp_path: Path, image_dir: Path) -> None:
    summary, out = quantize(_padded(0.5, _conv_relu()), tmp_path, image_dir)
    assert summary.quantized_by_type["Conv"] == 2
    pad = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "Pad")
    assert len(pad.input) == 3
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0
