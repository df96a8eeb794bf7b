"""Activation patterns of modern backbones (MobileNetV3, EfficientNet, YOLO, ViT) between integer layers.

Each pattern sits between seeded random convolutions: x -> Conv -> act -> Conv -> act -> Conv -> Flatten.
After onnxruntime's fusions every Conv must be a QLinearConv, the hard-swish / hard-sigmoid family must
run on integer kernels alone (no float op, no DequantizeLinear before the last layer), the output must stay
close to FP32, and the integer kernels must compute what the Q/DQ graph says (the same model run without
onnxruntime's fusions, i.e. op by op on dequantized values, gives the same output).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from quantkit.config import ActivationType, ConvertConfig
from quantkit.evaluate.metrics import sqnr_db
from quantkit.pipeline.run_check import check
from quantkit.planner import planning_state
from tests.conftest import make_model
from tests.helpers import op_counts, optimized_graph, output_sqnr, quantize

N = helper.make_node
C = 8  # channels between the layers

Pattern = Callable[[str, str, str, dict[str, np.ndarray]], list[onnx.NodeProto]]


def _scalar(inits: dict[str, np.ndarray], name: str, value: float) -> str:
    inits[name] = np.array(value, np.float32)
    return name


def hardswish(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    return [N("HardSwish", [x], [y], name=f"{p}_hardswish")]


def hardsigmoid_mul(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """As Paddle2ONNX and PyTorch before opset 14 export hard-swish."""
    return [
        N("HardSigmoid", [x], [f"{p}_g"], name=f"{p}_hardsigmoid", alpha=1.0 / 6, beta=0.5),
        N("Mul", [x, f"{p}_g"], [y], name=f"{p}_mul"),
    ]


def paddle_hardsigmoid_mul(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """Paddle's hard_sigmoid default slope 0.2 (onnx's default alpha)."""
    return [
        N("HardSigmoid", [x], [f"{p}_g"], name=f"{p}_hardsigmoid"),
        N("Mul", [x, f"{p}_g"], [y], name=f"{p}_mul"),
    ]


def scaled_hardsigmoid_mul(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """x * (2 * HardSigmoid(x)): a scale fold after the rewritten HardSigmoid (the factors multiply)."""
    two = _scalar(inits, f"{p}_two", 2.0)
    return [
        N("HardSigmoid", [x], [f"{p}_g"], name=f"{p}_hardsigmoid", alpha=1.0 / 6, beta=0.5),
        N("Mul", [two, f"{p}_g"], [f"{p}_g2"], name=f"{p}_scale"),
        N("Mul", [x, f"{p}_g2"], [y], name=f"{p}_mul"),
    ]


def _relu6_of_x_plus_3(x: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    three, zero, six = (_scalar(inits, f"{p}_{k}", v) for k, v in (("three", 3), ("zero", 0), ("six", 6)))
    return [
        N("Add", [x, three], [f"{p}_a"], name=f"{p}_add"),
        N("Clip", [f"{p}_a", zero, six], [f"{p}_c"], name=f"{p}_clip"),
    ]


def decomposed_div(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """x * (relu6(x + 3) / 6)."""
    return [
        *_relu6_of_x_plus_3(x, p, inits),
        N("Div", [f"{p}_c", f"{p}_six"], [f"{p}_g"], name=f"{p}_div"),
        N("Mul", [x, f"{p}_g"], [y], name=f"{p}_mul"),
    ]


def decomposed_mul(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """x * (relu6(x + 3) * (1/6))."""
    sixth = _scalar(inits, f"{p}_sixth", 1.0 / 6)
    return [
        *_relu6_of_x_plus_3(x, p, inits),
        N("Mul", [f"{p}_c", sixth], [f"{p}_g"], name=f"{p}_scale"),
        N("Mul", [f"{p}_g", x], [y], name=f"{p}_mul"),
    ]


def decomposed_mul_then_div(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """x * relu6(x + 3) / 6, as PyTorch exports the expression."""
    return [
        *_relu6_of_x_plus_3(x, p, inits),
        N("Mul", [x, f"{p}_c"], [f"{p}_m"], name=f"{p}_mul"),
        N("Div", [f"{p}_m", f"{p}_six"], [y], name=f"{p}_div"),
    ]


def silu(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    return [
        N("Sigmoid", [x], [f"{p}_s"], name=f"{p}_sigmoid"),
        N("Mul", [x, f"{p}_s"], [y], name=f"{p}_mul"),
    ]


def gelu_erf(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    root2, one, half = (_scalar(inits, f"{p}_{k}", v) for k, v in (("r2", 2**0.5), ("one", 1), ("half", 0.5)))
    return [
        N("Div", [x, root2], [f"{p}_d"], name=f"{p}_div"),
        N("Erf", [f"{p}_d"], [f"{p}_e"], name=f"{p}_erf"),
        N("Add", [f"{p}_e", one], [f"{p}_a"], name=f"{p}_add"),
        N("Mul", [x, f"{p}_a"], [f"{p}_m"], name=f"{p}_mul"),
        N("Mul", [f"{p}_m", half], [y], name=f"{p}_half"),
    ]


def gelu_tanh(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    k, c, one, half = (
        _scalar(inits, f"{p}_{n}", v)
        for n, v in (("k", (2 / np.pi) ** 0.5), ("c", 0.044715), ("one", 1), ("half", 0.5))
    )
    return [
        N("Mul", [x, x], [f"{p}_x2"], name=f"{p}_sq"),
        N("Mul", [f"{p}_x2", x], [f"{p}_x3"], name=f"{p}_cube"),
        N("Mul", [f"{p}_x3", c], [f"{p}_cx3"], name=f"{p}_coef"),
        N("Add", [x, f"{p}_cx3"], [f"{p}_in"], name=f"{p}_inner"),
        N("Mul", [f"{p}_in", k], [f"{p}_u"], name=f"{p}_scale"),
        N("Tanh", [f"{p}_u"], [f"{p}_t"], name=f"{p}_tanh"),
        N("Add", [f"{p}_t", one], [f"{p}_a"], name=f"{p}_add"),
        N("Mul", [x, half], [f"{p}_h"], name=f"{p}_halfx"),
        N("Mul", [f"{p}_h", f"{p}_a"], [y], name=f"{p}_mul"),
    ]


def mish(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    return [
        N("Softplus", [x], [f"{p}_sp"], name=f"{p}_softplus"),
        N("Tanh", [f"{p}_sp"], [f"{p}_t"], name=f"{p}_tanh"),
        N("Mul", [x, f"{p}_t"], [y], name=f"{p}_mul"),
    ]


def _conv(
    name: str, x: str, y: str, c_out: int, c_in: int, k: int, inits: dict[str, np.ndarray]
) -> onnx.NodeProto:
    g = np.random.default_rng(sum(map(ord, name)))
    inits[f"{name}_w"] = g.normal(0, (2.0 / (c_in * k * k)) ** 0.5, (c_out, c_in, k, k)).astype(np.float32)
    inits[f"{name}_b"] = g.normal(0, 0.2, c_out).astype(np.float32)
    return N("Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name, pads=[k // 2] * 4)


def squeeze_excite(gate: Pattern | None) -> Pattern:
    """x -> act -> [GlobalAveragePool -> Conv -> Relu -> Conv -> gate -> Mul(x, gate)]; gate: HardSigmoid
    (MobileNetV3) when None, else Sigmoid-like pattern output used as the gate."""

    def build(x: str, y: str, p: str, inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
        nodes = hardswish(x, f"{p}_h", p, inits)
        nodes += [
            N("GlobalAveragePool", [f"{p}_h"], [f"{p}_pool"], name=f"{p}_pool"),
            _conv(f"{p}_fc1", f"{p}_pool", f"{p}_s1", 4, C, 1, inits),
            N("Relu", [f"{p}_s1"], [f"{p}_r"], name=f"{p}_relu"),
            _conv(f"{p}_fc2", f"{p}_r", f"{p}_s2", C, 4, 1, inits),
        ]
        if gate is None:
            nodes.append(N("HardSigmoid", [f"{p}_s2"], [f"{p}_g"], name=f"{p}_gate", alpha=1.0 / 6, beta=0.5))
        else:
            nodes.append(N("Sigmoid", [f"{p}_s2"], [f"{p}_g"], name=f"{p}_gate"))
        nodes.append(N("Mul", [f"{p}_h", f"{p}_g"], [y], name=f"{p}_excite"))
        return nodes

    return build


def network(pattern: Pattern) -> onnx.ModelProto:
    """x -> Conv(3->8) -> act -> Conv(8->8) -> act -> Conv(8->4) -> Flatten -> y (every Conv between
    quantized tensors: its output feeds an integer op)."""
    inits: dict[str, np.ndarray] = {}
    nodes = [
        _conv("c1", "x", "c1_out", C, 3, 3, inits),
        *pattern("c1_out", "a1", "act1", inits),
        _conv("c2", "a1", "c2_out", C, C, 3, inits),
        *pattern("c2_out", "a2", "act2", inits),
        _conv("c3", "a2", "c3_out", 4, C, 1, inits),
        N("Flatten", ["c3_out"], ["y"], name="flatten"),
    ]
    return make_model(nodes, inits, opset=14)  # HardSwish


# Output SQNR every pattern keeps (measured 28-31 dB; 24.7-28.6 dB where weights use the full int8 range)
MIN_SQNR = 22.0
# ... and at most this much below the same conversion with the activation's nodes kept float (GELU and
# squeeze-excite measured 0.4-0.7 dB below on the first 8 images' samples, 1.6-1.7 dB on 8 spread ones: the
# float-activation conversion gained 1 dB there, the integer one the same within 0.15 dB)
MAX_LOSS_DB = 2.0

# pattern -> (builder, float ops allowed between the integer layers)
PATTERNS: dict[str, tuple[Pattern, frozenset[str]]] = {
    "hardswish": (hardswish, frozenset()),
    "hardsigmoid_mul": (hardsigmoid_mul, frozenset()),
    "paddle_hardsigmoid_mul": (paddle_hardsigmoid_mul, frozenset()),
    "scaled_hardsigmoid_mul": (scaled_hardsigmoid_mul, frozenset()),
    "decomposed_div": (decomposed_div, frozenset()),
    "decomposed_mul": (decomposed_mul, frozenset()),
    "decomposed_mul_then_div": (decomposed_mul_then_div, frozenset()),
    "squeeze_excite": (squeeze_excite(None), frozenset()),
    "squeeze_excite_sigmoid": (squeeze_excite(silu), frozenset()),
    "silu": (silu, frozenset()),
    "gelu_erf": (gelu_erf, frozenset({"Erf"})),
    "gelu_tanh": (gelu_tanh, frozenset({"Tanh", "Mul", "Add"})),
    "mish": (mish, frozenset({"Softplus", "Tanh"})),
}


def _run(path: Path, level: ort.GraphOptimizationLevel, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_between_integer_convolutions(name: str, tmp_path: Path, image_dir: Path) -> None:
    pattern, float_ops = PATTERNS[name]
    model = network(pattern)
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(min_sqnr=0))
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert summary.quantized_by_type["Conv"] == convs, summary.float_by_reason
    assert not summary.fallback
    runtime = optimized_graph(out, tmp_path)
    ops = op_counts(runtime)
    assert ops["QLinearConv"] == convs and ops["Conv"] == 0, ops
    floats = {op for op in ops if not op.startswith("QLinear")} - {
        "QuantizeLinear",
        "DequantizeLinear",
        "Flatten",
    }
    assert floats <= float_ops, ops
    if not float_ops:  # all integer: one Q at the input, one DQ before the float model output
        assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1, ops
    sqnr = output_sqnr(tmp_path / "model.onnx", out, image_dir)
    activation = tuple(n.name for n in model.graph.node if n.name.startswith("act") and n.op_type != "Conv")
    floating = tmp_path / "float_activation"
    floating.mkdir()
    _, reference = quantize(model, floating, image_dir, ConvertConfig(min_sqnr=0, exclude_nodes=activation))
    assert sqnr > MIN_SQNR and sqnr > output_sqnr(tmp_path / "model.onnx", reference, image_dir) - MAX_LOSS_DB
    # Q/DQ semantics: the integer kernels compute what the Q/DQ graph does op by op
    x = np.random.default_rng(3).normal(0, 1, (4, 3, 16, 16)).astype(np.float32)
    fused = _run(out, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, x)
    plain = _run(out, ort.GraphOptimizationLevel.ORT_DISABLE_ALL, x)
    assert sqnr_db(float(np.sum(plain.astype(np.float64) ** 2)), float(np.sum((plain - fused) ** 2))) > 30.0


def test_scale_fold_q_scale_is_the_dq_scale_over_k(tmp_path: Path, image_dir: Path) -> None:
    """Conv -> Relu -> Mul(0.25) -> Conv: the Mul is gone; the Q node divides by 0.25 in its scale. (A
    Mul right after a Conv is folded into its weights when the model is prepared: the Relu keeps it.)"""
    inits: dict[str, np.ndarray] = {"k": np.array(0.25, np.float32)}
    nodes = [
        _conv("c1", "x", "r", C, 3, 3, inits),
        N("Relu", ["r"], ["a"], name="relu"),
        N("Mul", ["a", "k"], ["b"], name="scale"),
        _conv("c2", "b", "c", 4, C, 1, inits),
        N("Flatten", ["c"], ["y"], name="flatten"),
    ]
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir, ConvertConfig(min_sqnr=0))
    assert summary.folded_by_type == {"Relu": 1, "Mul": 1}
    model = onnx.load(str(out))
    assert not any(n.op_type == "Mul" for n in model.graph.node)
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "b")
    q = producers[dq.input[0]]
    assert float(values[q.input[1]]) == pytest.approx(float(values[dq.input[1]]) / 0.25, rel=1e-6)
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > MIN_SQNR


def test_negative_constant_is_not_folded(tmp_path: Path, image_dir: Path) -> None:
    """A negative k would flip the range: the Mul stays (as QLinearMul). (After a Relu: one right after
    the Conv is folded into its weights when the model is prepared.)"""
    inits: dict[str, np.ndarray] = {"k": np.array(-0.5, np.float32)}
    nodes = [
        _conv("c1", "x", "r", C, 3, 3, inits),
        N("Relu", ["r"], ["a"], name="relu"),
        N("Mul", ["a", "k"], ["b"], name="scale"),
        _conv("c2", "b", "c", 4, C, 1, inits),
        N("Flatten", ["c"], ["y"], name="flatten"),
    ]
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir, ConvertConfig(min_sqnr=0))
    assert summary.quantized_by_type.get("Mul") == 1 and "Mul" not in summary.folded_by_type
    assert op_counts(optimized_graph(out, tmp_path))["QLinearMul"] == 1
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > MIN_SQNR


def test_scaled_read_is_a_second_dq_of_the_same_integers(tmp_path: Path, image_dir: Path) -> None:
    """Conv -> a; Add(a, a / 4): a keeps its Q/DQ for the Add, and the Div becomes a DequantizeLinear of
    a's integers with a quarter of its scale (no float op, no extra integer op)."""
    inits: dict[str, np.ndarray] = {"k": np.array(4.0, np.float32)}
    nodes = [
        _conv("c1", "x", "a", C, 3, 3, inits),
        N("Div", ["a", "k"], ["b"], name="scale"),
        N("Add", ["a", "b"], ["s"], name="sum"),
        _conv("c2", "s", "c", 4, C, 1, inits),
        N("Flatten", ["c"], ["y"], name="flatten"),
    ]
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir, ConvertConfig(min_sqnr=0))
    assert summary.folded_by_type == {"Div": 1}
    model = onnx.load(str(out))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    dqs = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert dqs["a"].input[0] == dqs["b"].input[0]  # the same integers
    assert float(values[dqs["b"].input[1]]) == pytest.approx(float(values[dqs["a"].input[1]]) / 4, rel=1e-6)
    ops = op_counts(optimized_graph(out, tmp_path))
    assert ops["QLinearAdd"] == 1 and ops["Div"] == 0, ops
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > MIN_SQNR


def test_a_transpose_of_a_scaled_read_runs_on_its_integers(tmp_path: Path, image_dir: Path) -> None:
    """An attention's scaled query: Split -> Mul by 1/8 (a scaled read: the Split's integers through a
    second DequantizeLinear) -> Transpose -> MatMul. The Transpose takes the read's params, so onnxruntime
    moves the integers; with params of its own it ran in float between a DequantizeLinear and a
    QuantizeLinear and `quantkit check` failed convert's own model (hq118: isbnx_det's attention)."""
    inits: dict[str, np.ndarray] = {"k": np.array(0.125, np.float32), "sp": np.array([4, 4], np.int64)}
    nodes = [
        _conv("c1", "x", "c", 2 * 4, 3, 3, inits),
        N("Split", ["c", "sp"], ["q", "v"], name="split", axis=1),
        N("Mul", ["q", "k"], ["m"], name="scale"),
        N("Transpose", ["m"], ["t"], name="turn", perm=[0, 1, 3, 2]),
        N("MatMul", ["v", "t"], ["a"], name="attend"),
        _conv("c2", "a", "y", 4, 4, 1, inits),
    ]
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir, ConvertConfig(min_sqnr=0))
    assert summary.folded_by_type == {"Mul": 1} and summary.quantized_by_type.get("Transpose") == 1
    model = onnx.load(str(out))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes_by_io = {(n.op_type, n.output[0]): n for n in model.graph.node}
    read, moved = nodes_by_io["DequantizeLinear", "m"], nodes_by_io["QuantizeLinear", "t_quantized"]
    assert [values[n] for n in read.input[1:]] == [values[n] for n in moved.input[1:]]
    ops = op_counts(optimized_graph(out, tmp_path))
    assert ops["Transpose"] == 1 and ops["QuantizeLinear"] + ops["DequantizeLinear"] < 6, ops
    assert check(out).findings == ()
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > MIN_SQNR


def test_int8_activations_keep_hard_ops_float_with_a_reason(tmp_path: Path, image_dir: Path) -> None:
    """Symmetric int8 has no zero point at the bottom of the range: the Q node cannot clip at 0."""
    config = ConvertConfig(min_sqnr=0, activations=ActivationType.int8)
    summary, out = quantize(network(hardswish), tmp_path, image_dir, config)
    assert summary.quantized_by_type["Conv"] == 3
    reasons = {r for (op, r) in summary.float_by_reason if op == "HardSwish"}
    assert reasons and all("uint8" in r for r in reasons), summary.float_by_reason
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > MIN_SQNR


def test_hardsigmoid_writing_the_model_output_stays_float(tmp_path: Path, image_dir: Path) -> None:
    inits: dict[str, np.ndarray] = {}
    nodes = [
        _conv("c1", "x", "a", C, 3, 3, inits),
        N("HardSigmoid", ["a"], ["y"], name="gate"),
    ]
    summary, out = quantize(make_model(nodes, inits), tmp_path, image_dir, ConvertConfig(min_sqnr=0))
    assert ("HardSigmoid", "its output is a model output (kept float)") in summary.float_by_reason
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > MIN_SQNR


def test_a_hardswish_input_is_not_quantized_past_minus_three(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-activations reaching far below -3 (PP-LCNet's reach -33) all read as 0 through HardSwish: their
    range stops at -3, so its steps go to the values that matter (PP-LCNet orientation classifier, 200
    held-out photos: 12.0 -> 15.9 dB without the fallback)."""
    model = network(hardswish)
    deep = {i.name: i for i in model.graph.initializer}
    for name in ("c1_b", "c2_b"):  # half the channels far negative, as BatchNorm-folded biases leave them
        bias = onnx.numpy_helper.to_array(deep[name]).copy()
        bias[::2] -= 12.0
        deep[name].CopyFrom(onnx.numpy_helper.from_array(bias, name))
    (tmp_path / "stop").mkdir()
    _, out = quantize(model, tmp_path / "stop", image_dir, ConvertConfig(min_sqnr=0))
    written = onnx.load(str(out))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in written.graph.initializer}
    for tensor in ("c1_out", "c2_out"):
        dq = next(n for n in written.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == tensor)
        scale, zero = float(values[dq.input[1]]), int(values[dq.input[2]])
        assert -3.0 - scale <= -zero * scale < 0.0, tensor  # the range's low end
    stopped = output_sqnr(tmp_path / "stop" / "model.onnx", out, image_dir)
    monkeypatch.setattr(planning_state, "saturated_outside", lambda index, name: (-np.inf, np.inf))
    monkeypatch.setattr(planning_state, "consumer_transform", lambda index, name: None)
    (tmp_path / "wide").mkdir()
    _, wide = quantize(model, tmp_path / "wide", image_dir, ConvertConfig(min_sqnr=0))
    assert stopped > output_sqnr(tmp_path / "wide" / "model.onnx", wide, image_dir) + 3.0  # 34.9 against 29.4
