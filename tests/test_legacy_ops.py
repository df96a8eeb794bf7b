"""Experimental ops of early opsets (ImageScaler, Crop, Affine, Scale, ScaledTanh) are written as the
standard ops they compute, so the model upgrades to opset 13: the ONNX model zoo's FNS-Candy (opset 7)
was refused with onnx's "Op '%s' has no registered schema" (hunt33)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantkit.graph.legacy_ops import write_out
from tests.conftest import conv_params, save
from tests.helpers import run, run_outputs


def _legacy_model() -> onnx.ModelProto:
    """Opset 7, IR 3: ImageScaler, Conv, Crop (borders), Affine, Crop (scale), ScaledTanh, Scale."""
    p = conv_params(4, 3, 3, 21)
    nodes = [
        helper.make_node("ImageScaler", ["x"], ["s"], scale=0.5, bias=[-1.0, 0.5, 2.0]),
        helper.make_node("Conv", ["s", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Crop", ["c"], ["k"], border=[1, 2, 3, 1]),
        helper.make_node("Affine", ["k"], ["a"], alpha=0.7, beta=0.1),
        helper.make_node("Crop", ["a"], ["k2"], border=[2, 1, 0, 0], scale=[9, 7]),
        helper.make_node("ScaledTanh", ["k2"], ["t"], alpha=2.0, beta=0.3),
        helper.make_node("Scale", ["t"], ["y"], scale=1.5),
    ]
    graph = helper.make_graph(
        nodes,
        "legacy",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, list(p["w"].shape)),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, list(p["b"].shape)),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 9, 7])],
        [onnx.numpy_helper.from_array(p["w"], "w"), onnx.numpy_helper.from_array(p["b"], "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    return model


def test_each_legacy_op_computes_what_it_did() -> None:
    model = _legacy_model()
    written = write_out(model, 7)
    assert dict(written.counts) == {"Affine": 1, "Crop": 2, "ImageScaler": 1, "Scale": 1, "ScaledTanh": 1}
    left = {n.op_type for n in written.model.graph.node}
    assert not {"ImageScaler", "Crop", "Affine", "Scale", "ScaledTanh"} & left
    assert written.model.ir_version == 4  # its new constants are no graph inputs, which IR 3 wants
    x = np.random.default_rng(3).normal(size=(1, 3, 16, 16)).astype(np.float32)
    expected = run_outputs(model, x)[0]  # onnxruntime's own kernels of the experimental ops
    assert expected.shape == (1, 4, 9, 7)
    np.testing.assert_allclose(run_outputs(written.model, x)[0], expected, rtol=1e-6, atol=1e-6)
    assert write_out(written.model, 7).model is written.model  # nothing left to write


def test_a_legacy_model_converts(tmp_path: Path, image_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """... and onnx's checker prints no 'Model contains experimental ops' beside quantkit's note (hunt34)."""
    capsys = capfd
    model = save(_legacy_model(), tmp_path / "candy.onnx")
    before = model.read_bytes()
    table, int8 = tmp_path / "t.json", tmp_path / "candy.int8.onnx"
    argv = ["calibrate", str(model), "--images", str(image_dir), "--output", str(table), "--preset", "unit"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    code, out, err = run(["convert", str(model), "--calibration", str(table), "--output", str(int8)], capsys)
    assert code == 0, err
    assert "1 Affine, 2 Crop, 1 ImageScaler, 1 Scale, 1 ScaledTanh" in " ".join(out.split())
    assert "experimental ops:" not in out + err
    assert onnx.load(str(int8)).opset_import[0].version >= 13
    assert model.read_bytes() == before


def test_an_experimental_op_not_written_out_is_named(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """onnx's converter says 'Op '%s' has no registered schema' for an op it has no schema for: the
    refusal names it."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("ParametricSoftplus", ["c"], ["y"], alpha=1.0, beta=1.0),
    ]
    graph = helper.make_graph(
        nodes,
        "softplus",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 14, 14])],
        [onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 4
    path = save(model, tmp_path / "softplus.onnx")
    code, _, err = run(
        ["calibrate", str(path), "--images", str(image_dir), "-o", str(tmp_path / "t.json")], capsys
    )
    assert code == 2 and "'%s'" not in err
    assert "could not take opset 7 to 13 (it knows no schema for ParametricSoftplus)" in err
