"""A Resize given `axes` (opset 18) between integer Convs: written with scales or sizes for every axis, it
computes what it did and its Q/DQ model runs in onnxruntime (hq78 F2: refused, naming a Gather)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.config import ConvertConfig, Prefer
from quantkit.graph.resize_axes import resize_all_axes
from tests.conftest import SIZE, conv_params
from tests.helpers import output_sqnr, quantize


def _resize_between_convs(variant: str, batch: int | str = 1) -> onnx.ModelProto:
    """conv1 -> Relu -> Resize(axes=[2, 3] or [-2, -1]) -> conv2 -> Relu -> conv3, opset 18."""
    a, b, c = conv_params(8, 3, 3, 51), conv_params(8, 8, 3, 52), conv_params(4, 8, 3, 53)
    weights = {"wa": a["w"], "ba": a["b"], "wb": b["w"], "bb": b["b"], "wc": c["w"], "bc": c["b"]}
    if variant == "scales":
        resize = helper.make_node("Resize", ["r", "", "s"], ["m"], name="rs", mode="nearest", axes=[2, 3])
        weights["s"] = np.array([2.0, 2.0], np.float32)
    else:
        axes = [-1, -2]  # negative, out of order
        resize = helper.make_node("Resize", ["r", "", "", "s"], ["m"], name="rs", mode="linear", axes=axes)
        weights["s"] = np.array([3 * SIZE, 2 * SIZE], np.int64)  # W, then H
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        resize,
        helper.make_node("Conv", ["m", "wb", "bb"], ["d"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["e"], name="relu2"),
        helper.make_node("Conv", ["e", "wc", "bc"], ["y"], name="conv3", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "resize_axes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, "H", "W"])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


@pytest.mark.parametrize(("variant", "batch"), [("scales", 1), ("sizes", 1), ("sizes", "N")])
def test_a_resize_with_axes_is_listed_for_every_axis_exactly(variant: str, batch: int | str) -> None:
    model = _resize_between_convs(variant, batch)
    rewritten, count = resize_all_axes(model)
    assert count == 1
    resize = next(n for n in rewritten.graph.node if n.op_type == "Resize")
    assert not any(a.name == "axes" for a in resize.attribute)
    x = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    if batch == 1:
        x = x[:1]
    np.testing.assert_array_equal(_run(rewritten, x), _run(model, x))
    assert resize_all_axes(rewritten) == (rewritten, 0)


@pytest.mark.parametrize("variant", ["scales", "sizes"])
def test_a_resize_with_axes_between_integer_convs_converts(
    variant: str, tmp_path: Path, image_dir: Path
) -> None:
    model = _resize_between_convs(variant, "N")
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy, min_sqnr=0))
    assert {"conv1", "rs", "conv2"} <= set(summary.plan.quantized_nodes), summary.float_by_reason
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0
    assert any("Resize node(s) given axes" in note for note in summary.notes), summary.notes


def test_a_resize_with_axes_and_a_roi_is_left_as_exported() -> None:
    """hq81 R1: tf_crop_and_resize's roi lists the same axes (2 x len(axes) values); its scales widened
    to every axis and its roi not, onnxruntime refused the model ('roi array should be 2 * N')."""
    model = _resize_between_convs("scales")
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    resize.input[1] = "roi"
    resize.attribute.extend([helper.make_attribute("coordinate_transformation_mode", "tf_crop_and_resize")])
    model.graph.initializer.append(numpy_helper.from_array(np.array([0.1, 0.1, 0.9, 0.9], np.float32), "roi"))
    assert resize_all_axes(model) == (model, 0)
