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


def _expanded_slopes() -> onnx.ModelProto:
    """Conv(3 -> 8) -> PRelu whose slope [1, 8, 1, 1] is expanded to the map's [1, 8, H, W] (tflite2onnx's
    form) -> Conv(8 -> 8)."""
    p, q = conv_params(8, 3), conv_params(8, 8, seed=1)
    slope = rng(2).uniform(0.05, 0.3, (1, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Expand", ["slope", "map_shape"], ["slopes"], name="expand"),
        helper.make_node("PRelu", ["c", "slopes"], ["p"], name="prelu"),
        helper.make_node("Conv", ["p", "w2", "b2"], ["y"], name="last", pads=[1, 1, 1, 1]),
    ]
    shape = np.array([1, 8, 2 * SIZE, 2 * SIZE], np.int64)  # a broadcast too: the map is SIZE x SIZE
    weights = {"w1": p["w"], "b1": p["b"], "w2": q["w"], "b2": q["b"], "slope": slope, "map_shape": shape}
    return make_model(nodes, weights, input_shape=(1, 3, 2 * SIZE, 2 * SIZE))


@pytest.mark.parametrize("to", ["int8", "fp16"])
def test_a_broadcast_weight_is_stored_as_what_it_broadcasts(tmp_path: Path, image_dir: Path, to: str) -> None:
    """hq133 F1: PRelu slopes expanded to each map (folded as weights, or stored so by the exporter) made
    BlazePalm's INT8 file 1.98x and its FP16 1.18x the FP32 one; a toy 21x and 11x. Written as the Expand
    of the smallest array they broadcast, exactly."""
    model = _expanded_slopes()
    src = tmp_path / "model.onnx"
    if to == "int8":
        _, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy))
    else:
        out = tmp_path / "model.fp16.onnx"
        onnx.save(model, str(src))
        pipeline.convert_float16(src, None, out, Float16Config())
    written = onnx.load(str(out))
    assert max(numpy_helper.to_array(t).size for t in written.graph.initializer) < 8 * (2 * SIZE) ** 2
    assert out.stat().st_size < 8 * (2 * SIZE) ** 2 * 4  # the expanded slopes alone would take more
    x = rng(3).standard_normal((1, 3, 2 * SIZE, 2 * SIZE)).astype(np.float32)
    reference, got = (Session(onnx.load(str(p)).SerializeToString()).run({"x": x})["y"] for p in (src, out))
    assert 10 * np.log10(np.sum(reference**2) / np.sum((reference - got) ** 2)) > 15
    # exactly what it computed, where the exporter stored the slopes expanded
    stored = _expanded_slopes()
    slopes = np.broadcast_to(numpy_helper.to_array(stored.graph.initializer[4]), (1, 8, 2 * SIZE, 2 * SIZE))
    stored.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(slopes), "slopes"))
    del stored.graph.node[1]
    stored.graph.node[0].name = "slopes_expand"  # hq135 F1: a name the rewrite would take
    stored.graph.node.append(helper.make_node("Identity", ["y"], ["slopes_compact"], name="slopes_shape"))
    compacted = fills_as_nodes(onnx.load_from_string(stored.SerializeToString()))
    onnx.checker.check_model(compacted, full_check=True)
    names = [n.name for n in compacted.graph.node]
    assert "Expand" in {n.op_type for n in compacted.graph.node} and len(set(names)) == len(names)
    before, after = (Session(m.SerializeToString()).run({"x": x})["y"] for m in (stored, compacted))
    np.testing.assert_array_equal(after, before)
