"""convert --compact: fewer bytes, the same outputs bit for bit, inputs, outputs and node names kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quantkit.graph.compact import compact
from tests.conftest import ASSETS, conv_params, requires_assets, rng
from tests.helpers import run


def _model() -> onnx.ModelProto:
    """Two convs with the same weights (stored twice), default attributes spelled out, a bias that is also
    an overridable graph input, and an If whose branches read an outer tensor."""
    p = conv_params(4, 3, k=3, seed=1)
    window = {"strides": [1, 1], "dilations": [1, 1], "pads": [1, 1, 1, 1], "group": 1}
    nodes = [
        helper.make_node("Conv", ["x", "w_first", "b_first"], ["long_name_a"], name="conv_a", **window),
        helper.make_node("Conv", ["x", "w_second", "b_input"], ["long_name_b"], name="conv_b", **window),
        helper.make_node("Add", ["long_name_a", "long_name_b"], ["long_name_sum"], name="add"),
        helper.make_node("ReduceSum", ["long_name_sum"], ["total"], name="total", keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"], name="greater"),
        helper.make_node(
            "If",
            ["positive"],
            ["y"],
            name="branch",
            then_branch=_branch("then", "long_name_sum", 1.0),
            else_branch=_branch("else", "long_name_sum", -1.0),
        ),
    ]
    inits = {
        "w_first": p["w"],
        "w_second": p["w"].copy(),
        "b_first": p["b"],
        "b_input": p["b"].copy(),
        "zero": np.zeros((), np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "m",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("b_input", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _branch(name: str, outer: str, sign: float) -> onnx.GraphProto:
    """The then branch names its constant "0" and its output "1": new outer names must not shadow them."""
    constant, result = ("0", "1") if name == "then" else (f"{name}_sign", f"{name}_out")
    return helper.make_graph(
        [helper.make_node("Mul", [outer, constant], [result])],
        name,
        [],
        [helper.make_tensor_value_info(result, TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.array(sign, np.float32), constant)],
    )


def _outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def test_compact_keeps_every_output_bit_and_every_fixed_name() -> None:
    model = _model()
    small = compact(model)
    onnx.checker.check_model(small, full_check=True)
    x = rng(0).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    bias = rng(1).normal(0, 1, 4).astype(np.float32)
    for feeds in ({"x": x}, {"x": x, "b_input": bias}):
        for a, b in zip(_outputs(model, feeds), _outputs(small, feeds), strict=True):
            np.testing.assert_array_equal(a, b)
        reference = ReferenceEvaluator(small).run(None, feeds)[0]
        np.testing.assert_allclose(reference, _outputs(model, feeds)[0], rtol=1e-5, atol=1e-5)
    assert small.ByteSize() < model.ByteSize()
    assert [n.name for n in small.graph.node] == [n.name for n in model.graph.node]
    assert [i.name for i in small.graph.input] == ["x", "b_input"] and small.graph.output[0].name == "y"


def test_compact_shares_weights_drops_defaults_and_shortens_inner_names() -> None:
    small = compact(_model())
    inits = {i.name for i in small.graph.initializer}
    assert "b_input" in inits  # a graph input may be fed: never merged with its twin b_first
    assert len(inits) == 4  # w_second is w_first
    conv_a, conv_b = small.graph.node[:2]
    assert conv_a.input[1] == conv_b.input[1]
    assert [a.name for a in conv_a.attribute] == ["pads"]  # pads 1 is not the default
    assert "long_name_sum" in small.graph.node[5].attribute[0].g.node[0].input  # read by the If branches
    assert conv_a.output[0].isdigit() and conv_a.input[2].isdigit()
    outer = {name for node in small.graph.node for name in [*node.input, *node.output]}
    assert not outer & {"0", "1"}  # the then branch's own constant and output


def _softmax_head(path: Path) -> Path:
    """The model at `path` with a Softmax after its output: convert measures the logits under it, an
    inner tensor that --compact would rename (it failed: 'Graph output ... does not exist')."""
    model = onnx.load(str(path))
    (head,) = [n for n in model.graph.node if "y" in n.output]
    head.output[0] = "logits"
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1))
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("to", ["fp16", "int8"])
@pytest.mark.parametrize("softmax", [False, True])
def test_cli_compact_writes_fewer_bytes_with_the_same_outputs(
    to: str, softmax: bool, cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if softmax:
        cnn = _softmax_head(cnn)
    table = tmp_path / "t.json"
    code, _, err = run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)
    assert code == 0, err
    outputs = []
    for flag in ([], ["--compact"]):
        out = tmp_path / f"m{len(flag)}.onnx"
        code, _, err = run(["convert", str(cnn), "--to", to, "-c", str(table), "-o", str(out), *flag], capsys)
        assert code == 0, err
        outputs.append(out)
    plain, small = (onnx.load(p) for p in outputs)
    assert outputs[1].stat().st_size < outputs[0].stat().st_size
    x = rng(2).normal(0, 1, (2, *[d.dim_value for d in plain.graph.input[0].type.tensor_type.shape.dim][1:]))
    feeds = {plain.graph.input[0].name: x.astype(np.float32)}
    np.testing.assert_array_equal(_outputs(plain, feeds)[0], _outputs(small, feeds)[0])


@requires_assets()
@pytest.mark.assets
@pytest.mark.parametrize("name", ["vit_mnist", "yolox_nano", "squeezenet1.1"])
def test_compact_fp16_halves_small_real_models(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Names and attributes are up to 5 % of a small float16 file; --compact brings the ratio to 1.99x."""
    model = ASSETS / "models" / f"{name}.onnx"
    out = tmp_path / "m.onnx"
    code, _, err = run(["convert", str(model), "--to", "fp16", "--compact", "-o", str(out)], capsys)
    assert code == 0, err
    assert model.stat().st_size / out.stat().st_size >= 1.99
    io_types = {
        v.type.tensor_type.elem_type for v in [*onnx.load(out).graph.input, *onnx.load(out).graph.output]
    }
    assert io_types == {TensorProto.FLOAT}
