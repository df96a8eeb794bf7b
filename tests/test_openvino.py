"""compare --runtime openvino: the one-line error without the extra, and (where openvino is installed)
both runtimes agreeing on tiny models. The default test run never needs openvino."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from quantkit.config import CompareConfig, ImageSelection, Runtime
from quantkit.errors import ConfigError
from quantkit.runtime_openvino import INSTALL, layer_precisions
from tests.conftest import conv_params, make_model, save, tiny_cnn
from tests.helpers import assert_one_line_error, run

NO_OPENVINO = "--runtime openvino needs OpenVINO, which is not installed; install it with"


def test_without_openvino_compare_says_how_to_install_in_one_line(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    model = tiny_cnn(tmp_path / "cnn.onnx")
    code, _, err = run(
        ["compare", str(model), str(model), "--images", str(image_dir), "--runtime", "openvino"], capsys
    )
    assert_one_line_error(code, err, NO_OPENVINO, "pip install 'openvino>=2024.0'")
    assert INSTALL == "pip install 'openvino>=2024.0'"


def test_without_openvino_the_api_raises_the_same_error(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import quantkit

    monkeypatch.setitem(sys.modules, "openvino", None)
    model = tiny_cnn(tmp_path / "cnn.onnx")
    with pytest.raises(ConfigError, match=r"needs OpenVINO.*pip install 'openvino>=2024\.0'$"):
        quantkit.compare(model, model, data=image_dir, runtime="openvino", runs=0)


def test_an_unknown_runtime_is_named_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="--runtime must be one of onnxruntime, openvino; got 'tvm'"):
        CompareConfig(images=ImageSelection(Path(".")), runtime="tvm")  # type: ignore[arg-type]
    assert CompareConfig(images=ImageSelection(Path("."))).runtime is Runtime.onnxruntime


def test_layer_precisions_count_each_onnx_linear_node_once_where_openvino_runs_it() -> None:
    layers = [
        {"layerType": "Convolution", "runtimePrecision": "u8", "originalLayersNames": "c1/WithoutBiases,c1"},
        {"layerType": "Convolution", "runtimePrecision": "f32", "originalLayersNames": "c2/WithoutBiases,c2"},
        {"layerType": "Eltwise", "runtimePrecision": "f32", "originalLayersNames": "fc_out,add"},
        {"layerType": "FullyConnected", "runtimePrecision": "f32", "originalLayersNames": "Mul_3,fc_out"},
        {"layerType": "Pooling", "runtimePrecision": "u8", "originalLayersNames": "pool"},
        {"layerType": "MatMul", "runtimePrecision": "i8", "originalLayersNames": "mm"},
        {"layerType": "Subgraph", "runtimePrecision": "f32", "originalLayersNames": "qk,softmax,av"},
    ]
    names = {"c1": "c1", "c2": "c2", "fc_out": "fc", "mm": "mm", "qk": "qk", "av": "av", "gone": "gone"}
    found = layer_precisions(layers, names)
    assert (found.linear, found.integer) == (7, 2)
    assert found.to_dict()["float_held_by"] == {
        "c2": "Convolution f32",
        "fc": "FullyConnected f32",  # the linear layer, not the Eltwise that also names it
        "qk": "Subgraph f32",
        "av": "Subgraph f32",
        "gone": "not in the runtime model",
    }
    plain = layer_precisions(layers)  # no names: the runtime model's own linear layers
    assert (plain.linear, plain.integer, plain.float_layers) == (4, 2, ("c2", "Mul_3"))


# ---- with openvino installed -------------------------------------------------------------------------


def _two_outputs(path: Path) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul, and the Conv's map as a second output."""
    p = conv_params(4, 3, 3, seed=3)
    w = np.random.default_rng(4).normal(0, 0.5, (4, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "m"], ["y"], name="fc"),
    ]
    return save(make_model(nodes, {**p, "m": w}, outputs=["y", "r"]), path)


def test_both_runtimes_give_the_same_outputs_on_a_tiny_model(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from quantkit.runtime import Session
    from quantkit.runtime_openvino import OpenVinoSession

    model = _two_outputs(tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(0, 1, (3, 3, 16, 16)).astype(np.float32)
    ort, ov = Session(model), OpenVinoSession(model, threads=1)
    assert ov.output_names == ort.output_names == ["y", "r"] and ov.fixed_batch is None
    expected, got = ort.run_batch(x), ov.run_batch(x)
    for name in ("y", "r"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5)
    assert ov.timed(x[:1]) > 0
    layers = ov.layers({"conv": "conv", "fc": "fc", "y": "fc"})
    assert (layers.linear, layers.integer) == (2, 0) and set(layers.float_layers) == {"conv", "fc"}


def test_openvino_pads_a_short_batch_for_a_fixed_batch_model(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from quantkit.runtime_openvino import OpenVinoSession

    p = conv_params(4, 3, 3, seed=1)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    model = save(make_model([node], p, input_shape=(4, 3, 16, 16)), tmp_path / "fixed.onnx")
    session = OpenVinoSession(model)
    assert session.fixed_batch == 4
    x = np.random.default_rng(1).normal(0, 1, (3, 3, 16, 16)).astype(np.float32)
    assert session.run_batch(x)["y"].shape == (3, 4, 16, 16)


def test_compare_in_openvino_reports_the_runtime_and_int8_layers(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino")
    model = tiny_cnn(tmp_path / "cnn.onnx")
    table, int8 = tmp_path / "t.json", tmp_path / "cnn.int8.onnx"
    assert run(["calibrate", str(model), "--images", str(image_dir), "-o", str(table), "-q"], capsys)[0] == 0
    assert run(["convert", str(model), "-c", str(table), "-o", str(int8), "-q"], capsys)[0] == 0
    records = []
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / f"{runtime}.json"
        argv = ["compare", str(model), str(int8), "--images", str(image_dir), "--runs", "3"]
        code, text, err = run([*argv, "--warmup", "1", "--runtime", runtime, "--json", str(out)], capsys)
        assert code == 0, err
        records.append(json.loads(out.read_text()))
    ort, ov = records
    assert ort["settings"]["runtime"] == "onnxruntime" and "openvino" not in ort["environment"]["versions"]
    assert ov["settings"]["runtime"] == "openvino" and ov["environment"]["versions"]["openvino"]
    assert ov["settings"]["openvino"]["precision_hint"] == "f32"
    layers = ov["settings"]["openvino"]["candidate_layers"]
    assert layers["linear"] == 2 and layers["int8"] + len(layers["float"]) == 2
    assert "runtime OpenVINO" in text and "latency, ms, OpenVINO" in text
    # the two runtimes' INT8 kernels round alike but not identically: the same model, about the same error
    assert abs(ov["outputs"][0]["sqnr_db"] - ort["outputs"][0]["sqnr_db"]) < 6


def test_compare_in_openvino_on_workers_gives_the_figures_of_one_process(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino")
    model, other = tiny_cnn(tmp_path / "a.onnx"), tiny_cnn(tmp_path / "b.onnx", seed=5)
    figures = []
    for extra in ([], ["--workers", "2"]):
        out = tmp_path / f"w{len(figures)}.json"
        argv = ["compare", str(model), str(other), "--images", str(image_dir), "--runs", "0"]
        code, _, err = run([*argv, "--runtime", "openvino", "--json", str(out), *extra], capsys)
        assert code == 0, err
        figures.append(json.loads(out.read_text())["outputs"])
    assert figures[0] == figures[1]


def test_compare_in_openvino_takes_arrays_from_the_api(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    import quantkit

    model = _two_outputs(tmp_path / "m.onnx")
    samples = list(np.random.default_rng(2).normal(0, 1, (5, 3, 16, 16)).astype(np.float32))
    result = quantkit.compare(model, model, data=samples, runtime="openvino", runs=2, warmup=0)
    assert result.num_images == 5 and result.settings["runtime"] == "openvino"
    assert all(m.sqnr_db == float("inf") for m in result.outputs)  # the same model, the same runtime
    assert result.candidate_latency is not None


def test_linear_nodes_names_each_layer_also_by_the_bias_and_output_openvino_may_name_it_after() -> None:
    from quantkit.runtime_openvino import linear_nodes

    w = np.ones((6, 4), np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "b"], ["biased"], name="bias"),
        helper.make_node("Identity", ["biased"], ["y"], name="out"),
    ]
    model = make_model(nodes, {"w": w, "b": np.zeros(4, np.float32)}, input_shape=("N", 6, 1, 1))
    assert linear_nodes(model) == {
        "fc": "fc",
        "mm": "fc",
        "bias": "fc",
        "biased": "fc",
        "out": "fc",
        "y": "fc",
    }


def test_a_port_is_named_by_the_models_declared_output() -> None:
    """OpenVINO may name an output port after the tensor before an op it moved (YuNet's cls_8 =
    Sigmoid(Reshape(...)) came back as '291': hunt51 A1, a KeyError in convert --target openvino)."""
    from quantkit.runtime_openvino import port_name

    assert port_name({"291", "cls_8"}, "291", ["cls_8", "obj_8"]) == "cls_8"
    assert port_name({"y"}, "y", ["y"]) == "y"
    assert port_name({"internal"}, "internal", ["y"]) == "internal"  # nothing declared: its own name


def test_an_output_openvino_renames_keeps_its_onnx_name(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from quantkit.runtime_openvino import OpenVinoSession

    p = conv_params(1, 3, 3, seed=3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c"], ["t"], name="transpose", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["291"], name="reshape"),
        helper.make_node("Sigmoid", ["291"], ["cls_8"], name="sigmoid"),
    ]
    shape = np.array([1, -1, 1], np.int64)
    model = save(
        make_model(nodes, {**p, "shape": shape}, output="cls_8", input_shape=(1, 3, 16, 16)),
        tmp_path / "m.onnx",
    )
    session = OpenVinoSession(model)
    assert session.output_names == ["cls_8"]
    x = np.random.default_rng(4).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    assert session.run(x)["cls_8"].shape == (1, 256, 1)


def test_openvinos_error_keeps_the_node_it_names() -> None:
    """hunt52 B2: the one line cut off where OpenVINO named the node, after three source-file prefixes."""
    from quantkit.runtime_openvino import openvino_reason

    nested = (
        "Exception from src/inference/src/cpp/core.cpp:117:\n"
        "Exception from src/inference/src/dev/plugin.cpp:54: "
        "Exception from src/core/src/pass/graph_rewrite.cpp:298: [ReshapeTransformation] END: node: "
        "opset1::Reshape model/dense_56/Tensordot (opset1::Multiply MatMul_60) -> (f32[?,30,40,16])"
    )
    assert openvino_reason(nested) == (
        "[ReshapeTransformation] END: node: opset1::Reshape model/dense_56/Tensordot (opset1::Multiply "
        "MatMul_60) -> (f32[?,30,40,16])"
    )


def test_convert_for_openvino_says_where_openvino_did_not_check_it() -> None:
    import importlib.util

    from quantkit.config import ConvertConfig
    from quantkit.pipeline.convert_notes import elsewhere

    said = " ".join(elsewhere(ConvertConfig(target="openvino")))
    unchecked = "not compiled nor run in OpenVINO here (not installed: pip install 'openvino>=2024.0'"
    assert (unchecked in said) == (importlib.util.find_spec("openvino") is None)
    assert "OpenVINO here" not in " ".join(elsewhere(ConvertConfig(target="tensorrt")))
