"""Models written as calls of model-local functions (torch.onnx's dynamo exporter) convert: the functions
are inlined and the Ifs on a tensor's rank folded (hunt41 F2: BlazeFace refused as '10 custom op
types'); sequences between float16 ops are not rounded by Casts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit import pipeline
from quantkit.config import Float16Config
from quantkit.graph.functions import inline_functions
from tests.conftest import conv_params, make_model
from tests.helpers import assert_one_line_error, op_counts, output_sqnr, quantize, run, run_outputs

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


def _leaky_function_model(ir: int = 9) -> onnx.ModelProto:
    """A Conv and a LeakyRelu whose alpha is the function's attribute, default 0.5, called without it."""
    leaky = N("LeakyRelu", ["c"], ["o"])
    leaky.attribute.append(helper.make_attribute_ref("alpha", onnx.AttributeProto.FLOAT))
    body = [N("Conv", ["a", "w"], ["c"], pads=[1, 1, 1, 1]), leaky]
    function = helper.make_function(
        DOMAIN, "ConvLeaky", ["a", "w"], ["o"], body, [helper.make_opsetid("", 17)], attributes=[]
    )
    function.attribute_proto.append(helper.make_attribute("alpha", 0.5))
    graph = helper.make_graph(
        [N("ConvLeaky", ["x", "w1"], ["y"], domain=DOMAIN, name="call")],
        "defaults",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])],
        [numpy_helper.from_array(conv_params(4, 3, seed=3)["w"], "w1")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=[function])
    model.ir_version = ir
    return model


def test_a_functions_attribute_default_is_kept_where_the_call_leaves_it_out() -> None:
    """hq110 F1: onnx.inliner drops FunctionProto.attribute_proto defaults: the LeakyRelu ran at 0.01,
    not 0.5, and every format was written at 7 dB against the file, exit 0."""
    model = _leaky_function_model()
    inlined = inline_functions(model)[0]
    alphas = [a.f for n in inlined.graph.node if n.op_type == "LeakyRelu" for a in n.attribute]
    assert alphas == [0.5]
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_outputs(inlined, x)[0], run_outputs(model, x)[0], rtol=1e-5, atol=1e-5)


def test_an_inlining_that_changes_the_outputs_is_refused(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever rewrite of functions goes wrong, its model is checked against the file's on synthetic
    inputs (as onnxruntime runs the functions) and never converted: here the defaults' fix undone."""
    from quantkit.graph import functions

    onnx.save(_leaky_function_model(), tmp_path / "m.onnx")
    monkeypatch.setattr(functions, "_with_defaults", lambda model: model)
    argv = ["calibrate", str(tmp_path / "m.onnx"), "--images", str(image_dir), "-o", str(tmp_path / "t.json")]
    code, _, err = run(argv, capsys)
    assert_one_line_error(
        code, err, "inlining the model's local functions changed output 'y' (relative error"
    )
    assert not (tmp_path / "t.json").exists()


def test_a_branch_is_chosen_by_the_rank_the_tensor_has_not_the_one_declared() -> None:
    """hq110 F2: value_info declaring a rank-4 tensor [N, 8] folded the If on its rank the other way
    than onnxruntime takes it (-4.3 dB, exit 0)."""
    model = _called()
    model.graph.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 4]))
    inlined, _, ifs = inline_functions(model)
    assert ifs == 2 and op_counts(inlined) == {"Conv": 2, "Relu": 1}


def test_a_condition_read_from_an_overridable_input_is_not_folded() -> None:
    """hq110 F9: a flag the graph lists as an input, with an initializer as its default, was taken as a
    constant: its default branch baked in and the input removed, so feeding it failed."""
    flag = helper.make_tensor_value_info("flip", TensorProto.BOOL, [])
    then = helper.make_graph(
        [N("Neg", ["x"], ["t"])], "neg", [], [helper.make_tensor_value_info("t", 1, None)]
    )
    other = helper.make_graph(
        [N("Identity", ["x"], ["e"])], "id", [], [helper.make_tensor_value_info("e", 1, None)]
    )
    graph = helper.make_graph(
        [
            N("Block", ["x", "w1", "b1"], ["a"], domain=DOMAIN),
            N("If", ["flip"], ["y"], then_branch=then, else_branch=other),
        ],
        "flag",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16]), flag],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [
            numpy_helper.from_array(np.array(False), "flip"),
            *(
                numpy_helper.from_array(v, k)
                for k, v in {"w1": conv_params(3, 3)["w"], "b1": conv_params(3, 3)["b"]}.items()
            ),
        ],
    )
    graph.node[1].input[0] = "flip"
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
        functions=[_block()],
    )
    model.ir_version = 8
    inlined, _, ifs = inline_functions(model)
    assert ifs == 1  # the block's rank test only
    assert "If" in op_counts(inlined) and "flip" in [i.name for i in inlined.graph.input]


def test_each_overload_keeps_its_own_default() -> None:
    """hq116 F3: two overloads of one function (IR 10) with defaults 0.5 and 0.1: the call of overload 'a'
    was filled with the last one's default, and the inlined model refused as changed."""
    leaky = N("LeakyRelu", ["x"], ["y"])
    leaky.attribute.append(helper.make_attribute_ref("alpha", onnx.AttributeProto.FLOAT))
    overloads = []
    for name, alpha in (("a", 0.5), ("b", 0.1)):
        function = helper.make_function(DOMAIN, "F", ["x"], ["y"], [leaky], [helper.make_opsetid("", 17)], [])
        function.attribute_proto.append(helper.make_attribute("alpha", alpha))
        function.overload = name
        overloads.append(function)
    call = N("F", ["c"], ["y"], domain=DOMAIN)
    call.overload = "a"
    graph = helper.make_graph(
        [N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), call],
        "overloads",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])],
        [numpy_helper.from_array(conv_params(4, 3, seed=5)["w"], "w")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, functions=overloads)
    model.ir_version = 10
    inlined = inline_functions(model)[0]
    assert [a.f for n in inlined.graph.node if n.op_type == "LeakyRelu" for a in n.attribute] == [0.5]
