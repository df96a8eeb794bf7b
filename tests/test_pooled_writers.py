"""A layer kept float whose input is written by a layer reading an SPP block: that writer is kept float
with its input path (planner.placement.pooled_writers), where onnxruntime would run the block's pools in
plain NCHW between Q/DQ pairs (YOLOX-Nano: 0.63x FP32 with Conv_181 kept float, 0.91x so)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper

from quantkit import pipeline
from quantkit.calib import table as table_io
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection, Target
from quantkit.graph import model_io
from quantkit.planner import plan
from quantkit.planner.placement import SLOW_POOL_AREA
from tests.conftest import conv_params, make_model, save


def _spp(kernel: int) -> onnx.ModelProto:
    """a -> c1 -> MaxPool(kernel) -> Concat(c1, pool) -> c2 -> c3 -> y: c2 reads the block, c3 reads c2."""
    p1, p2, p3 = conv_params(4, 3, seed=1), conv_params(4, 8, seed=2), conv_params(4, 4, seed=3)
    pad = kernel // 2
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["a"], ["p"], name="pool", kernel_shape=[kernel, kernel], pads=[pad] * 4),
        helper.make_node("Concat", ["a", "p"], ["cat"], name="cat", axis=1),
        helper.make_node("Conv", ["cat", "w2", "b2"], ["b"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "w3", "b3"], ["y"], name="c3", pads=[1, 1, 1, 1]),
    ]
    weights = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"], "w3": p3["w"], "b3": p3["b"]}
    return make_model(nodes, weights)


@pytest.mark.parametrize("kernel", [5, 3])
def test_the_writer_reading_an_spp_block_is_kept_float_with_the_layer(
    kernel: int, tmp_path: Path, image_dir: Path
) -> None:
    path = save(_spp(kernel), tmp_path / "spp.onnx")
    table_path = tmp_path / "spp.calib.json"
    pipeline.calibrate(path, table_path, CalibrateConfig(ImageSelection(image_dir, 8)))
    model = model_io.infer_shapes(onnx.load(str(path)))
    table = table_io.load(table_path)
    kept = plan(model, table, ConvertConfig(), keep_float={"c3": "measuring"})
    reasons = {s.node: s.reason for s in kept.skipped}
    if kernel * kernel >= SLOW_POOL_AREA:  # 5x5: c2 float with its input path (pool, concat) float
        assert reasons["c2"].startswith("kept float with c3, whose input it writes: it reads MaxPool pool")
        assert "cat" not in kept.activations and "p" not in kept.activations
    else:  # 3x3: c2 as before (float for its output, reading its input through a Q/DQ pair)
        assert not reasons.get("c2", "").startswith("kept float with c3")
        assert "cat" in kept.activations
    other = plan(model, table, ConvertConfig(target=Target.tensorrt), keep_float={"c3": "measuring"})
    assert "c2" in other.quantized_nodes  # TensorRT runs an int8 layer with a float output as one kernel
