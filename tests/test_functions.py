"""Models written as calls of model-local functions (torch.onnx's dynamo exporter) convert: the functions
are inlined and the Ifs on a tensor's rank folded (hunt41 F2: BlazeFace refused as '10 custom op
types'); sequences between float16 ops are not rounded by Casts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit import pipeline
from quantkit.config import Float16Config
from quantkit.graph.functions import inline_functions
from tests.conftest import conv_params, make_model
from tests.helpers import op_counts, output_sqnr, quantize, run_outputs

N = helper.make_node
DOMAIN = "pkg.test"


def _block() -> onnx.FunctionProto:
    """Conv(X, W, B) unless X is not of rank 4, as onnxscript's torch_lib writes aten_convolution."""
    rank = [
        N("Shape", ["X"], ["shape"]),
        N("Size", ["shape"], ["rank"]),
        N("Constant", [], ["four"], value=helper.make_tensor("four", TensorProto.INT64, [], [4])),
        N("Equal", ["rank", "four"], ["is4"]),
        N("Not", ["is4"], ["batchless"]),
    ]
    out = helper.make_tensor_value_info("y_", TensorProto.FLOAT, None)
    then = helper.make_graph([N("Identity", ["X"], ["y_"])], "unbatched", [], [out])
    other = helper.make_tensor_value_info("z_", TensorProto.FLOAT, None)
    conv = N("Conv", ["X", "W", "B"], ["z_"], pads=[1, 1, 1, 1])
    otherwise = helper.make_graph([conv], "batched", [], [other])
    branch = N("If", ["batchless"], ["Y"], then_branch=then, else_branch=otherwise)
    opsets = [helper.make_opsetid("", 17)]
    return helper.make_function(DOMAIN, "Block", ["X", "W", "B"], ["Y"], [*rank, branch], opsets)


def _called() -> onnx.ModelProto:
    p1, p2 = conv_params(4, 3, seed=1), conv_params(4, 4, seed=2)
    nodes = [
        N("Block", ["x", "w1", "b1"], ["a"], domain=DOMAIN, name="block1"),
        N("Relu", ["a"], ["r"], name="relu"),
        N("Block", ["r", "w2", "b2"], ["y"], domain=DOMAIN, name="block2"),
    ]
    weights = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]}
    graph = helper.make_graph(
        nodes,
        "calls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[_block()])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_functions_are_inlined_and_the_ifs_on_a_rank_folded() -> None:
    model = _called()
    inlined, functions, ifs = inline_functions(model)
    assert (functions, ifs) == (1, 2) and not inlined.functions
    assert op_counts(inlined) == {"Conv": 2, "Relu": 1}  # the rank tests, nothing reads them, are gone
    assert [o.domain for o in inlined.opset_import] == [""]
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_outputs(inlined, x)[0], run_outputs(model, x)[0], rtol=1e-5, atol=1e-5)
    assert inline_functions(make_model([N("Relu", ["x"], ["y"])], {}))[1:] == (0, 0)


def test_a_model_of_function_calls_converts(tmp_path: Path, image_dir: Path) -> None:
    summary, out = quantize(_called(), tmp_path, image_dir)
    said = "1 model-local function(s) inlined (as torch.onnx exports modules) and 2 If node(s)"
    assert any(n.startswith(said) for n in summary.notes)
    assert summary.quantized_by_type.get("Conv", 0) >= 1  # a Conv once inside a function body
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0
    half = tmp_path / "model.fp16.onnx"
    pipeline.convert_float16(tmp_path / "model.onnx", tmp_path / "model.calib.json", half, Float16Config())
    assert output_sqnr(tmp_path / "model.onnx", half, image_dir) > 40.0


def test_a_sequence_between_float16_ops_is_not_rounded_by_a_cast(tmp_path: Path) -> None:
    """BlazeFace's torch_lib cat went through SequenceConstruct -> ConcatFromSequence; the float16
    emulation put a Cast on the sequence and onnxruntime refused the model."""
    p1, p2 = conv_params(4, 3, seed=3), conv_params(4, 8, seed=4)
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        N("SequenceConstruct", ["a", "a"], ["seq"], name="pack"),
        N("ConcatFromSequence", ["seq"], ["cat"], name="cat", axis=1),
        N("Conv", ["cat", "w2", "b2"], ["y"], name="c2", pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]})
    source = tmp_path / "seq.onnx"
    onnx.save(model, str(source))
    summary = pipeline.convert_float16(source, None, tmp_path / "seq.fp16.onnx", Float16Config())
    assert min(summary.smoke_sqnr_db.values()) > 40.0
