"""A tensor of one repeated value is written as the ConstantOfShape that computes it, never stored: tf2onnx
pads channels with Concat(x, ConstantOfShape(shape)), and the zeros folded as weights made BlazeFace-front's
INT8 file larger than its FP32 one (hunt52 C8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from quantkit import pipeline
from quantkit.config import ConvertConfig, Float16Config, Prefer
from quantkit.graph.fold_shapes import MIN_FILL_BYTES, fills_as_nodes
from quantkit.runtime import Session
from tests.conftest import SIZE, conv_params, make_model, rng
from tests.helpers import quantize


def _padded() -> onnx.ModelProto:
    """Conv(3 -> 4) -> Relu -> Concat with 12 channels of zeros (ConstantOfShape) -> Conv(16 -> 8)."""
    p, q = conv_params(4, 3), conv_params(8, 16, 1, seed=1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ConstantOfShape", ["pad_shape"], ["zeros"], name="pad"),
        helper.make_node("Concat", ["r", "zeros"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w2", "b2"], ["y"], name="last"),
    ]
    shape = np.array([1, 12, SIZE, SIZE], np.int64)
    weights = {"w1": p["w"], "b1": p["b"], "w2": q["w"], "b2": q["b"], "pad_shape": shape}
    return make_model(nodes, weights, input_shape=(1, 3, SIZE, SIZE))


def _repeated(model: onnx.ModelProto) -> list[str]:
    """The initializers of MIN_FILL_BYTES or more that hold one value."""
    found = []
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.nbytes >= MIN_FILL_BYTES and (array == array.flat[0]).all():
            found.append(tensor.name)
    return found


def test_a_repeated_value_becomes_the_node_that_computes_it_and_outputs_are_the_same() -> None:
    w = np.full((64, 16, 1, 1), 0.5, np.float32)  # one value, but a layer's weight: stays stored
    nodes = [
        helper.make_node("Concat", ["x", "ones"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w"], ["y"], name="conv"),
    ]
    ones = np.ones((1, 13, SIZE, SIZE), np.float32)
    model = make_model(nodes, {"ones": ones, "w": w}, input_shape=(1, 3, SIZE, SIZE))
    x = rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    before = Session(model.SerializeToString()).run({"x": x})["y"]
    filled = fills_as_nodes(model)
    onnx.checker.check_model(filled, full_check=True)
    assert [n.op_type for n in filled.graph.node] == ["ConstantOfShape", "Concat", "Conv"]
    assert _repeated(filled) == ["w"]
    np.testing.assert_array_equal(Session(filled.SerializeToString()).run({"x": x})["y"], before)
    small = make_model(nodes, {"ones": ones[:, :, :4, :4], "w": w}, input_shape=(1, 3, 4, 4))
    assert [n.op_type for n in fills_as_nodes(small).graph.node] == ["Concat", "Conv"]  # too small to pay


@pytest.mark.parametrize("to", ["int8", "fp16", "bf16"])
def test_converted_files_store_no_repeated_value(tmp_path: Path, image_dir: Path, to: str) -> None:
    model = _padded()
    if to == "int8":
        _, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy))
    else:
        src, out = tmp_path / "model.onnx", tmp_path / "model.fp16.onnx"
        onnx.save(model, str(src))
        pipeline.convert_float16(src, None, out, Float16Config(to=to))  # type: ignore[arg-type]
    written = onnx.load(str(out))
    assert _repeated(written) == []  # bfloat16 too: ConstantOfShape takes it from opset 20 (hunt56 C1)
    assert "ConstantOfShape" in {n.op_type for n in written.graph.node}
    assert out.stat().st_size < 12 * SIZE * SIZE * 4  # the zeros alone would take more
