"""Declared inner shapes (value_info) that the graph contradicts are dropped on the way in: onnxruntime
runs such a model (it warns and merges leniently), and quantkit read only the tensors before the wrong
declaration, then failed to convert (hunt42 F5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantkit import pipeline
from quantkit.config import CalibrateConfig, ConvertConfig, Float16Config, ImageSelection
from quantkit.graph.value_info import stale_declarations, without_declarations
from quantkit.runtime import Session
from tests.conftest import tiny_cnn
from tests.helpers import output_sqnr


def _declared(path: Path, *values: onnx.ValueInfoProto) -> onnx.ModelProto:
    model = onnx.load(str(path))
    model.graph.value_info.extend(values)
    return model


def test_contradicted_declarations_are_found_and_the_rest_kept(tmp_path: Path) -> None:
    wrong_shape = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 7, 5, 5])
    wrong_rank = helper.make_tensor_value_info("g", TensorProto.FLOAT, [2, 3])
    wrong_type = helper.make_tensor_value_info("h", TensorProto.INT64, None)
    right = helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 4, 16, 16])
    vague = helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", "C", 1, 1])  # symbols: no conflict
    model = _declared(tiny_cnn(tmp_path / "m.onnx"), wrong_shape, wrong_rank, right)
    before = model.SerializeToString()
    assert stale_declarations(model) == ("a", "g")
    assert model.SerializeToString() == before  # the caller's model is given back as it was
    kept = without_declarations(model, ("a", "g"))
    assert [v.name for v in kept.graph.value_info] == ["r"] and len(model.graph.value_info) == 3
    assert stale_declarations(_declared(tiny_cnn(tmp_path / "t.onnx"), wrong_type)) == ("h",)
    plain = _declared(tiny_cnn(tmp_path / "v.onnx"), vague)
    assert stale_declarations(plain) == () and without_declarations(plain, ()) is plain


def test_a_model_with_a_wrong_declaration_calibrates_every_tensor_and_converts(
    tmp_path: Path, image_dir: Path
) -> None:
    clean = tiny_cnn(tmp_path / "clean.onnx")
    wrong = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 7, 5, 5])
    path = tmp_path / "declared.onnx"
    onnx.save(_declared(clean, wrong), str(path))
    config = CalibrateConfig(images=ImageSelection(image_dir))
    expected = pipeline.calibrate(clean, tmp_path / "clean.calib.json", config).tensors
    table = tmp_path / "model.calib.json"
    summary = pipeline.calibrate(path, table, config)
    assert summary.tensors == expected
    assert any(
        n.startswith("1 declared inner shape(s) that the graph contradicts dropped") for n in summary.notes
    )
    out = tmp_path / "declared.int8.onnx"
    converted = pipeline.convert(path, table, out, ConvertConfig())
    assert converted.plan.quantized_nodes and output_sqnr(path, out, image_dir) > 20.0
    half = tmp_path / "declared.fp16.onnx"
    pipeline.convert_float16(path, table, half, Float16Config())
    assert output_sqnr(path, half, image_dir) > 40.0


def test_an_output_declared_without_a_shape_is_given_the_inferred_one(
    tmp_path: Path, image_dir: Path
) -> None:
    """onnx's checker refuses a graph output typed without a shape ('Field shape of type is required'),
    which onnxruntime runs (hunt43 F4): it is given the shape inference finds, and converts."""
    model = onnx.load(str(tiny_cnn(tmp_path / "m.onnx")))
    model.graph.output[0].type.tensor_type.ClearField("shape")
    path = tmp_path / "shapeless.onnx"
    onnx.save(model, str(path))
    table = tmp_path / "model.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(images=ImageSelection(image_dir)))
    out = tmp_path / "shapeless.int8.onnx"
    pipeline.convert(path, table, out, ConvertConfig())
    assert output_sqnr(path, out, image_dir) > 20.0


def test_a_fused_node_before_an_output_declared_without_a_shape_is_read(tmp_path: Path) -> None:
    """hq134 F4: the shape was inferred on the model as given, where onnx knows no com.microsoft FusedConv:
    the model was refused as 'saved after onnxruntime's graph optimizations', though quantkit writes the
    FusedConv out as the Conv and Clip it fuses."""
    from tests.conftest import conv_params

    p = conv_params(6, 3, 1, 7)
    node = helper.make_node(
        "FusedConv",
        ["x", "w", "b"],
        ["y"],
        domain="com.microsoft",
        activation="Clip",
        activation_params=[0.0, 0.5],
    )
    graph = helper.make_graph(
        [node],
        "fused",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(v, k) for k, v in p.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    model.graph.output[0].type.tensor_type.ClearField("shape")
    path, out = tmp_path / "fused.onnx", tmp_path / "fused.fp16.onnx"
    onnx.save(model, str(path))
    pipeline.convert_float16(path, None, out, Float16Config())
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    got, want = (Session.of(onnx.load(str(f))).run(x)["y"] for f in (out, path))
    np.testing.assert_allclose(got, want, atol=2e-3)


def _interface(path: Path) -> list[list[object]]:
    graph = onnx.load(str(path)).graph
    values = [*graph.input, *graph.output]
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


def test_the_written_model_declares_the_shapes_its_file_declared(tmp_path: Path, image_dir: Path) -> None:
    """hunt44 F3: PP-OCRv5's text map, declared [d0, d1, d2, d3], was written [d0, 1, d2, d3] (shape
    inference made the named channel concrete): the interface written is the file's own."""
    model = onnx.load(str(tiny_cnn(tmp_path / "m.onnx")))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    for axis, dim in enumerate(model.graph.output[0].type.tensor_type.shape.dim):
        dim.dim_param = f"out_d{axis}"  # the channels too, which shape inference knows
    path = tmp_path / "named.onnx"
    onnx.save(model, str(path))
    table = tmp_path / "model.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(images=ImageSelection(image_dir)))
    for out, convert in [
        (tmp_path / "named.int8.onnx", lambda o: pipeline.convert(path, table, o, ConvertConfig())),
        (tmp_path / "named.fp16.onnx", lambda o: pipeline.convert_float16(path, table, o, Float16Config())),
    ]:
        convert(out)
        assert _interface(out) == _interface(path)
        assert output_sqnr(path, out, image_dir) > 20.0


def test_a_fused_node_missing_its_input_before_a_shapeless_output_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq138 F4: writing the fused node out to infer the output's shape read its missing input: an
    internal error (IndexError) where onnx's checker refusal stood."""
    from tests.helpers import assert_one_line_error, run

    nodes = [
        helper.make_node("Gelu", [], ["g"], domain="com.microsoft"),
        helper.make_node("Add", ["x", "g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    model.graph.output[0].type.tensor_type.ClearField("shape")
    path = tmp_path / "gelu.onnx"
    onnx.save(model, str(path))
    code, _, err = run(["convert", str(path), "--to", "fp16", "-o", str(tmp_path / "h.onnx")], capsys)
    assert_one_line_error(code, err, "gelu.onnx fails onnx.checker")
