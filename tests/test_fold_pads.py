"""graph.fold_pads: a Pad by zeros before a Conv is the Conv's own padding, exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from quantkit.graph.fold_pads import fold_pads
from quantkit.graph.prepare import prepare
from tests.conftest import conv_params, make_model, rng

PADS = np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64)  # Keras' ZeroPadding2D before a stride-2 conv


def _padded(
    pad: onnx.NodeProto, extra: dict[str, np.ndarray] | None = None, opset: int = 13, **conv: object
) -> onnx.ModelProto:
    params = conv_params(4, 3, seed=2)
    nodes = [pad, helper.make_node("Conv", ["p", "w", "b"], ["y"], name="conv", strides=[2, 2], **conv)]
    weights = {"w": params["w"], "b": params["b"], **(extra or {})}
    return make_model(nodes, weights, input_shape=(1, 3, 9, 9), opset=opset)


def _same(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    x = rng(1).normal(0, 1, (1, 3, 9, 9)).astype(np.float32)
    (ref,) = ReferenceEvaluator(before).run(None, {"x": x})
    (new,) = ReferenceEvaluator(after).run(None, {"x": x})
    np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("pad", "extra", "opset"),
    [
        (helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"), {"pads": PADS}, 13),
        (
            helper.make_node("Pad", ["x", "pads", "zero"], ["p"], name="pad", mode="constant"),
            {"pads": PADS, "zero": np.array(0.0, np.float32)},
            13,
        ),
        (helper.make_node("Pad", ["x"], ["p"], name="pad", pads=[int(v) for v in PADS]), {}, 10),
    ],
)
def test_a_zero_pad_becomes_the_convs_pads(
    pad: onnx.NodeProto, extra: dict[str, np.ndarray], opset: int
) -> None:
    model = _padded(pad, extra, opset, pads=[1, 1, 1, 1])
    folded, count = fold_pads(model)
    assert count == 1
    assert [n.op_type for n in folded.graph.node] == ["Conv"]
    (conv,) = folded.graph.node
    assert conv.input[0] == "x"
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads")) == [2, 1, 3, 2]
    assert not {"pads", "zero"} & {t.name for t in folded.graph.initializer}
    _same(model, folded)


@pytest.mark.parametrize(
    ("pad", "extra", "conv"),
    [
        # padded with ones, or by reflection: not what a Conv pads with
        (
            helper.make_node("Pad", ["x", "pads", "one"], ["p"], name="pad"),
            {"pads": PADS, "one": np.array(1.0, np.float32)},
            {},
        ),
        (helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="reflect"), {"pads": PADS}, {}),
        # channels padded, or cropped (negative pads)
        (
            helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"),
            {"pads": np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64)},
            {},
        ),
        (
            helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"),
            {"pads": np.array([0, 0, -1, 0, 0, 0, 0, 0], np.int64)},
            {},
        ),
        # the Conv pads by itself
        (
            helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"),
            {"pads": PADS},
            {"auto_pad": "SAME_UPPER"},
        ),
    ],
)
def test_what_a_conv_cannot_pad_is_left(
    pad: onnx.NodeProto, extra: dict[str, np.ndarray], conv: dict[str, object]
) -> None:
    model = _padded(pad, extra, **conv)
    assert fold_pads(model) == (model, 0)


def test_a_pad_read_twice_or_overridable_is_left() -> None:
    model = _padded(helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"), {"pads": PADS})
    model.graph.node.append(helper.make_node("Relu", ["p"], ["r"], name="other"))
    model.graph.output.append(helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, [1, 3, 10, 12]))
    assert fold_pads(model) == (model, 0)
    model = _padded(helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"), {"pads": PADS})
    model.graph.input.append(helper.make_tensor_value_info("pads", onnx.TensorProto.INT64, [8]))
    assert fold_pads(model) == (model, 0)


def test_prepare_folds_it_and_says_so() -> None:
    model = _padded(helper.make_node("Pad", ["x", "pads"], ["p"], name="pad"), {"pads": PADS})
    prepared = prepare(model)
    assert prepared.pads_folded == 1
    assert "1 Pad node(s) by zeros folded into the Conv after them (exact)" in prepared.notes()
    _same(model, prepared.model)
