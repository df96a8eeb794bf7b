"""Tensors after an op onnx knows no schema for (onnxruntime's com.microsoft contrib ops, as its transformer
optimizer writes them) are typed as the float they are, so they are observed, planned and measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit import pipeline
from quantkit.config import ConvertConfig, Float16Config, Prefer
from quantkit.graph.contrib_types import guessed_types
from quantkit.graph.model_io import infer_shapes
from tests.conftest import SIZE, conv_params, make_model
from tests.helpers import output_sqnr, quantize


def _convs_around(
    middle: list[onnx.NodeProto],
    extra: dict[str, np.ndarray],
    seeds: tuple[int, int, int],
    opsets: list[onnx.OperatorSetIdProto],
    ir_version: int,
) -> onnx.ModelProto:
    """conv1 (writing c) -> the `middle` nodes (reading c, writing g; their weights `extra`) -> conv2 ->
    Relu (writing r2) -> conv3, the convs' weights drawn with `seeds`."""
    shapes = ((8, 3), (8, 8), (4, 8))
    a, b, c = (conv_params(o, i, 3, seed) for (o, i), seed in zip(shapes, seeds, strict=True))
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        *middle,
        helper.make_node("Conv", ["g", "wb", "bb"], ["d"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "wc", "bc"], ["y"], name="conv3", pads=[1, 1, 1, 1]),
    ]
    weights = {"wa": a["w"], "ba": a["b"], **extra, "wb": b["w"], "bb": b["b"], "wc": c["w"], "bc": c["b"]}
    graph = helper.make_graph(
        nodes,
        "convs_around",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, SIZE, SIZE])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    return model


def _with_contrib_gelu() -> onnx.ModelProto:
    """conv1 -> com.microsoft Gelu -> conv2 -> Relu -> conv3: conv2's input, and all after it, come out of
    onnx's inference untyped."""
    gelu = helper.make_node("Gelu", ["c"], ["g"], name="gelu", domain="com.microsoft")
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    return _convs_around([gelu], {}, (41, 42, 43), opsets, 8)


def test_outputs_of_an_op_of_no_schema_are_typed_as_the_float_it_reads() -> None:
    inferred = infer_shapes(_with_contrib_gelu())
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert types["g"] == types["d"] == types["r2"] == TensorProto.FLOAT  # g guessed, the rest onnx's
    # nothing to guess in a standard graph: an untyped tensor there is onnx's to explain
    standard = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {})
    assert guessed_types(infer_shapes(standard)) == {}
    # a contrib op's integer output is not guessed a float, nor is what an op reading integers first writes
    ops = [
        helper.make_node("FastGelu", ["x"], ["f"], domain="com.microsoft"),
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], domain="com.microsoft"),
        helper.make_node("MatMulIntegerToFloat", ["q", "q", "s", "s"], ["m"], domain="com.microsoft"),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("x", "s")]
    inputs.append(helper.make_tensor_value_info("z", TensorProto.UINT8, []))
    graph = helper.make_graph(ops, "contrib", inputs, [])
    assert guessed_types(helper.make_model(graph)) == {"f": TensorProto.FLOAT}
    # hq69 F5: a QOperator kernel writes the type of its output zero point, not its float scale's
    concat = helper.make_node(
        "QLinearConcat", ["s", "z", "q", "s", "z"], ["c"], domain="com.microsoft", axis=0
    )
    pool = helper.make_node(
        "QLinearGlobalAveragePool", ["c", "s", "z", "s", "z"], ["p"], domain="com.microsoft"
    )
    graph = helper.make_graph([ops[1], concat, pool], "qoperator", inputs, [])
    assert guessed_types(helper.make_model(graph)) == dict.fromkeys(("c", "p"), TensorProto.UINT8)


def test_a_model_with_a_contrib_op_converts_every_layer(tmp_path: Path, image_dir: Path) -> None:
    """hunt35: a ViT through onnxruntime's transformer optimizer (SkipLayerNormalization, BiasGelu) was
    calibrated on 265 of its tensors, kept 60 of its 72 weight MatMuls float with 'recalibrate', and its
    float16 convert stopped on 'internal error (KeyError ...)'."""
    model = _with_contrib_gelu()
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy, min_sqnr=0))
    assert {"conv1", "conv2"} <= set(summary.plan.quantized_nodes), summary.float_by_reason
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0
    half = pipeline.convert_float16(
        tmp_path / "model.onnx", tmp_path / "model.calib.json", tmp_path / "h.onnx", Float16Config()
    )
    assert (tmp_path / "h.onnx").exists() and half.smoke_sqnr_db["y"] > 40.0


def _with_group_norm() -> onnx.ModelProto:
    """conv1 -> Relu -> GroupNormalization (opset 21) -> conv2 -> Relu -> conv3: onnx 1.23's inference
    types nothing after the GroupNormalization."""
    middle = [
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GroupNormalization", ["r", "gs", "gb"], ["g"], name="gn", num_groups=2),
    ]
    norm = {"gs": np.full(8, 1.5, np.float32), "gb": conv_params(8, 3, 3, 44)["b"]}
    return _convs_around(middle, norm, (44, 45, 46), [helper.make_opsetid("", 21)], 10)


def test_an_op_whose_inference_types_nothing_is_typed_by_its_schema(tmp_path: Path, image_dir: Path) -> None:
    """hq78 F1: calibrate observed nothing after an opset-21 GroupNormalization (onnx leaves its output
    untyped), and convert kept every layer after it float with 'no calibration statistics; recalibrate',
    which recalibrating never changed."""
    model = _with_group_norm()
    assert "g" not in {v.name for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    types = {v.name: v.type.tensor_type.elem_type for v in infer_shapes(model).graph.value_info}
    assert types["g"] == TensorProto.FLOAT
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy, min_sqnr=0))
    assert "conv2" in summary.plan.quantized_nodes, summary.float_by_reason
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_a_loops_outputs_are_not_typed_as_its_first_carried_value() -> None:
    """hq81 R2: a Loop carrying [an int64 counter, a float map] through a GroupNormalization (which onnx
    leaves untyped) had its float output typed int64 by the schema's 'V' (one variable for values of
    mixed types), and onnxruntime refused the model."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["n_in", "one"], ["n_out"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("GroupNormalization", ["m_in", "gs", "gb"], ["m_out"], num_groups=2),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("n_in", TensorProto.INT64, []),
            helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [1, 8, 4, 4]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("n_out", TensorProto.INT64, []),
            onnx.ValueInfoProto(name="m_out"),
        ],
        [
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.ones(8, np.float32), "gs"),
            numpy_helper.from_array(np.zeros(8, np.float32), "gb"),
        ],
    )
    loop = helper.make_node("Loop", ["trip", "cond", "n0", "x"], ["n", "m"], name="loop", body=body)
    graph = helper.make_graph(
        [loop, helper.make_node("Relu", ["m"], ["y"], name="relu")],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])],
        [
            numpy_helper.from_array(np.array(2, np.int64), "trip"),
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(np.array(0, np.int64), "n0"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    guessed = guessed_types(onnx.shape_inference.infer_shapes(model))
    assert guessed.get("n") in (None, TensorProto.INT64) and guessed.get("m") in (None, TensorProto.FLOAT)
