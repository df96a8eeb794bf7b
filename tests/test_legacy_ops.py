"""Experimental ops of early opsets (ImageScaler, Crop, Affine, Scale, ScaledTanh) are written as the
standard ops they compute, so the model upgrades to opset 13: the ONNX model zoo's FNS-Candy (opset 7)
was refused with onnx's "Op '%s' has no registered schema" (hunt33)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
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


def test_ops_written_out_take_names_the_model_does_not_use() -> None:
    """hq134 F1, F2: the constants and tensors written for an op were named f"{node}_scale", f"{node}_alpha"
    whatever the model named its own: an ImageScaler 'pre' beside the model's weight 'pre_scale' was
    refused as failing onnx's checker, a QuickGelu 'q' beside a 'q_alpha' gave a prepared model 5 dB from
    the original, calibrated on with exit 0."""
    from quantkit.graph.unfuse import unfuse

    model = _legacy_model()
    model.graph.node[0].name = "pre"
    renamed = {"w": "pre_scale", "b": "pre_shift"}
    for node in model.graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
    for value in [*model.graph.input, *model.graph.initializer]:
        value.name = renamed.get(value.name, value.name)
    x = np.random.default_rng(3).normal(size=(1, 3, 16, 16)).astype(np.float32)
    written = write_out(model, 7).model
    onnx.checker.check_model(written)
    np.testing.assert_allclose(run_outputs(written, x)[0], run_outputs(model, x)[0], rtol=1e-6, atol=1e-6)
    p = conv_params(4, 3, 3, 22)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuickGelu", ["c"], ["d"], name="q", domain="com.microsoft", alpha=1.702),
        helper.make_node("Mul", ["d", "q_alpha"], ["q_scaled"], name="mul"),
        helper.make_node("Relu", ["q_scaled"], ["y"], name="relu"),
    ]
    weights = {**p, "q_alpha": np.array(-2.0, np.float32)}
    graph = helper.make_graph(
        nodes,
        "fused",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    fused = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    )
    unfused = unfuse(fused, 13).model
    onnx.checker.check_model(unfused)
    assert not any(n.op_type == "QuickGelu" for n in unfused.graph.node)
    np.testing.assert_allclose(run_outputs(unfused, x)[0], run_outputs(fused, x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("constant", [True, False])
def test_a_per_element_batchnorm_of_opset_7_is_written_out_and_upgrades(constant: bool) -> None:
    """hq134 F5: a BatchNormalization with spatial=0 (scale, B, mean, var of [C, H, W]) runs in onnxruntime
    at opset 7, but onnx's converter stopped int8 with "Attribute spatial must have value 1"."""
    from quantkit.graph.model_io import ensure_opset

    g = np.random.default_rng(0)
    stats = {
        "s": g.uniform(0.5, 2, (6, 8, 8)),
        "bb": g.normal(size=(6, 8, 8)),
        "m": g.normal(size=(6, 8, 8)),
        "v": g.uniform(0.5, 2, (6, 8, 8)),
    }
    w = onnx.numpy_helper.from_array(g.normal(size=(6, 4, 1, 1)).astype(np.float32), "w")
    inits = [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in stats.items()]
    norm = helper.make_node("BatchNormalization", ["c", *stats], ["y"], spatial=0, epsilon=1e-3)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    fed = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [6, 8, 8]) for k in stats]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), norm],
        "bn",
        [x] if constant else [x, *fed],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])],
        [w, *inits] if constant else [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    written = write_out(model, 7)
    assert dict(written.counts) == {"BatchNormalization": 1}
    upgraded = ensure_opset(written.model, 13)
    feed = {"x": g.normal(size=(1, 4, 8, 8)).astype(np.float32)}
    if not constant:
        feed |= {k: v.astype(np.float32) for k, v in stats.items()}
    expected = _session(model).run(None, feed)[0]
    np.testing.assert_allclose(_session(upgraded).run(None, feed)[0], expected, rtol=1e-5, atol=1e-5)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_a_per_channel_batchnorm_marked_spatial_0_stays_a_batchnorm() -> None:
    """hq149 F4: spatial=0 with one value per channel ([C]), which onnxruntime runs as spatial=1, was
    written as a Mul by [C], broadcast along W: onnxruntime refused quantkit's own node."""
    from quantkit.graph.model_io import ensure_opset

    g = np.random.default_rng(1)
    stats = [g.uniform(0.5, 2, 6), g.normal(size=6), g.normal(size=6), g.uniform(0.5, 2, 6)]
    inits = [
        onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in zip("sbmv", stats, strict=True)
    ]
    inits.append(onnx.numpy_helper.from_array(g.normal(size=(6, 4, 1, 1)).astype(np.float32), "w"))
    nodes = [  # onnxruntime runs it fused into the Conv (its kernel alone wants [C, H, W] statistics)
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], spatial=0),
    ]
    graph = helper.make_graph(
        nodes,
        "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 4
    written = write_out(model, 8)
    assert [n.op_type for n in written.model.graph.node] == ["Conv", "BatchNormalization"]
    feed = {"x": g.normal(size=(1, 4, 8, 8)).astype(np.float32)}
    expected = _session(model).run(None, feed)[0]
    upgraded = ensure_opset(written.model, 13)
    np.testing.assert_allclose(_session(upgraded).run(None, feed)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_a_hardmax_before_opset_13_is_written_out_and_upgrades(axis: int) -> None:
    """hq155 F6: a Hardmax of opset 11 is one-hot over all the axes from `axis` (its input coerced to
    2-D), of opset 13 over `axis` alone; onnx's converter kept the node as it was, the upgraded model
    differed (relative error 2.4) and calibrate refused it with 're-export the model at opset 13'."""
    from quantkit.graph.model_io import ensure_opset

    node = helper.make_node("Hardmax", ["x"], ["y"], name="hm", axis=axis)
    graph = helper.make_graph(
        [node],
        "hardmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    written = write_out(model, 11)
    assert dict(written.counts) == {"Hardmax": 1}
    upgraded = ensure_opset(written.model, 13)
    x = np.random.default_rng(axis + 5).normal(size=(2, 3, 4, 5)).astype(np.float32)
    expected = _session(model).run(None, {"x": x})[0]  # onnxruntime's opset-11 kernel
    assert expected.sum() == 2 * (3 * 4 * 5 // int(np.prod((3, 4, 5)[axis % 4 - 1 :])))
    np.testing.assert_array_equal(_session(upgraded).run(None, {"x": x})[0], expected)
    assert write_out(model, 13).model is model  # opset 13 takes one axis: nothing to write
