"""--target tensorrt: one-sided activations shifted onto the symmetric int8 grid (planner.tensorrt_shift)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from quantkit import pipeline
from quantkit.calib.table import load
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection, Target
from quantkit.evaluate.metrics import sqnr_db
from quantkit.graph import model_io
from quantkit.graph.prepare import prepare
from quantkit.planner import tensorrt_shift
from quantkit.planner.core import smoothing_candidates
from quantkit.qmath.params import dequantize
from tests.conftest import conv_params, make_model
from tests.helpers import output_sqnr, quantize

N = helper.make_node
# every layer int8 (the parity target would keep layers float), biases as they are (the exactness check
# below rebuilds the float model from the written weights), no rebalancing (a rebalanced tensor, X / s,
# is another tensor: planner.tensorrt_shift leaves it on the plain grid)
TRT = ConvertConfig(target=Target.tensorrt, max_float_layers=0, bias_correction=False, smoothquant="off")


def _net(padded_reader: bool) -> onnx.ModelProto:
    """x -> Conv 3x3 -> Relu -> a -> Conv 1x1 -> Relu -> r -> Conv 1x1 (no bias) -> y; padded_reader: a
    padded 3x3 Conv reads a too, and its output is added to y."""
    inits: dict[str, np.ndarray] = {}
    p0, p1, p2 = conv_params(8, 3, 3, seed=1), conv_params(8, 8, 1, seed=2), conv_params(4, 8, 1, seed=3)
    inits.update(w0=p0["w"], b0=p0["b"], w1=p1["w"], b1=p1["b"], w2=p2["w"])
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        N("Relu", ["c0"], ["a"], name="relu0"),
        N("Conv", ["a", "w1", "b1"], ["c1"], name="conv1"),
        N("Relu", ["c1"], ["r"], name="relu1"),
        N("Conv", ["r", "w2"], ["y" if not padded_reader else "y0"], name="conv2", pads=[0, 0, 0, 0]),
    ]
    if padded_reader:
        p3 = conv_params(4, 8, 3, seed=4)
        inits.update(w3=p3["w"], b3=p3["b"])
        nodes += [
            N("Conv", ["a", "w3", "b3"], ["y3"], name="conv3", pads=[1, 1, 1, 1]),
            N("Add", ["y0", "y3"], ["y"], name="sum"),
        ]
    return make_model(nodes, inits)


def _shift_adds(model: onnx.ModelProto) -> dict[str, float]:
    """The tensors shifted -> c: graph.shift_rewrite's Adds of a scalar initializer named <tensor>_shift
    (wherever they sit: before the Q, or up on a Concat's or MaxPool's inputs)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[1].removesuffix("_shift"): float(inits[n.input[1]])
        for n in model.graph.node
        if n.op_type == "Add"
        and n.input[1].endswith("_shift")
        and inits.get(n.input[1], np.zeros(2)).size == 1
    }


def _float_twin(written: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """The original float model with each weight replaced by the written model's dequantized one."""
    inits = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer}
    writers = {o: n for n in written.graph.node for o in n.output}
    twin = onnx.ModelProto()
    twin.CopyFrom(original)
    by_name = {i.name: i for i in twin.graph.initializer}
    layers = {n.name: n for n in original.graph.node}
    for node in written.graph.node:
        dq = writers.get(node.input[1]) if len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        value = dequantize(inits[dq.input[0]], inits[dq.input[1]], inits[dq.input[2]], axis)
        name = layers[node.name].input[1]
        by_name[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    return twin


def _without_activation_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every activation Q -> DQ pair taken out (the DQ's readers read the Q's input)."""
    inits = {i.name for i in model.graph.initializer}
    nodes = model.graph.node
    sources = {
        n.output[0]: n.input[0] for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    }
    reads = {
        n.output[0]: sources[n.input[0]]
        for n in nodes
        if n.op_type == "DequantizeLinear" and n.input[0] in sources
    }
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [n for n in out.graph.node if n.output[0] not in sources and n.output[0] not in reads]
    for node in keep:
        node.input[:] = [reads.get(i, i) for i in node.input]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_relu_outputs_read_by_unpadded_convs_are_shifted_and_the_biases_absorb_it_exactly(
    tmp_path: Path, image_dir: Path
) -> None:
    original = _net(padded_reader=False)
    _, out = quantize(original, tmp_path, image_dir, TRT)
    written = onnx.load(str(out))
    shifts = _shift_adds(written)
    # a (read by the 1x1 conv1) and r (by the 1x1 conv2, which had no bias) are shifted; x is read padded
    assert sorted(shifts) == ["a", "r"] and all(c < 0 for c in shifts.values())
    # float16 values: --fallback fp16 may run the Add in float16, the biases absorbed the same c
    assert all(float(np.float16(c)) == c for c in shifts.values())
    # every Q/DQ still int8 with zero point 0: what TensorRT reads
    inits = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer}
    zero_points = [inits[n.input[2]] for n in written.graph.node if n.op_type == "DequantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    # without its activation Q/DQ the written model is the float model on the written weights: the
    # biases took the shift exactly (conv2 gained one)
    x = np.random.default_rng(0).uniform(-2, 2, (2, 3, 16, 16)).astype(np.float32)
    want = _run(_float_twin(written, original), x)
    got = _run(_without_activation_qdq(written), x)
    assert sqnr_db(float(np.sum(want**2)), float(np.sum((got - want) ** 2))) > 100.0


def _head_net() -> onnx.ModelProto:
    """x -> Conv 1x1 -> Relu -> GlobalAveragePool -> Flatten -> f -> Gemm (transB, alpha 0.5, beta 2)
    -> Relu -> h -> MatMul -> Add(bias) -> y: a classifier's head, f and h one-sided."""
    g = np.random.default_rng(9)
    p0 = conv_params(16, 3, 1, seed=10)
    inits = {
        "w0": p0["w"],
        "b0": p0["b"],
        "wg": g.normal(0, 0.3, (12, 16)).astype(np.float32),
        "cg": g.normal(0, 0.1, (12,)).astype(np.float32),
        "wm": g.normal(0, 0.3, (12, 5)).astype(np.float32),
        "bm": g.normal(0, 0.1, (1, 5)).astype(np.float32),
    }
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0"),
        N("Relu", ["c0"], ["a"], name="relu0"),
        N("GlobalAveragePool", ["a"], ["p"], name="pool"),
        N("Flatten", ["p"], ["f"], name="flatten"),
        N("Gemm", ["f", "wg", "cg"], ["e"], name="gemm", transB=1, alpha=0.5, beta=2.0),
        N("Relu", ["e"], ["h"], name="relu1"),
        N("MatMul", ["h", "wm"], ["m"], name="matmul"),
        N("Add", ["m", "bm"], ["y"], name="bias"),
    ]
    model = make_model(nodes, inits)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5]))
    return model


def test_a_gemm_and_a_matmul_with_its_bias_add_absorb_a_shift_exactly(
    tmp_path: Path, image_dir: Path
) -> None:
    original = _head_net()
    _, out = quantize(original, tmp_path, image_dir, TRT)
    written = onnx.load(str(out))
    assert sorted(_shift_adds(written)) == ["f", "h"]
    x = np.random.default_rng(1).uniform(-2, 2, (2, 3, 16, 16)).astype(np.float32)
    want = _run(_float_twin(written, prepare(original).model), x)  # the Gemm's alpha, beta in its weights
    got = _run(_without_activation_qdq(written), x)
    assert sqnr_db(float(np.sum(want**2)), float(np.sum((got - want) ** 2))) > 100.0
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 25.0


def _concat_pool_net() -> onnx.ModelProto:
    """x -> Conv 1x1 -> Relu -> a, x -> Conv 1x1 -> Relu -> b; Concat(a, b) -> MaxPool -> m -> Conv 1x1
    -> y: m is one-sided, and what it holds are a's and b's values."""
    p0, p1, p2 = conv_params(4, 3, 1, seed=11), conv_params(4, 3, 1, seed=12), conv_params(5, 8, 1, seed=13)
    inits = {"w0": p0["w"], "b0": p0["b"], "w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]}
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0"),
        N("Relu", ["c0"], ["a"], name="relu0"),
        N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        N("Relu", ["c1"], ["b"], name="relu1"),
        N("Concat", ["a", "b"], ["c"], name="concat", axis=1),
        N("MaxPool", ["c"], ["m"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        N("Conv", ["m", "w2", "b2"], ["y"], name="conv2"),
    ]
    return make_model(nodes, inits)


def test_the_shift_goes_up_through_a_maxpool_and_a_concat_to_the_activations(
    tmp_path: Path, image_dir: Path
) -> None:
    """TensorRT moves a Q up across a MaxPool or Concat into the int8 outputs of the layers before them
    and fuses an Add of a constant into a layer's activation: the Add goes on the Relus' outputs, the Q
    stays right after the MaxPool (review52 M3: an Add between them and the Q)."""
    original = _concat_pool_net()
    _, out = quantize(original, tmp_path, image_dir, TRT)
    written = onnx.load(str(out))
    assert list(_shift_adds(written)) == ["m"]
    writers = {o: n for n in written.graph.node for o in n.output}
    adds = [n for n in written.graph.node if n.op_type == "Add"]
    assert sorted(writers[n.input[0]].op_type for n in adds) == ["Relu", "Relu"]
    quantized = [
        writers[n.input[0]]
        for n in written.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in writers
    ]
    assert [n.op_type for n in quantized] == ["MaxPool"]  # and x, a graph input
    x = np.random.default_rng(2).uniform(-2, 2, (2, 3, 16, 16)).astype(np.float32)
    want = _run(_float_twin(written, original), x)
    got = _run(_without_activation_qdq(written), x)
    assert sqnr_db(float(np.sum(want**2)), float(np.sum((got - want) ** 2))) > 100.0


def test_the_shift_buys_back_the_bit_symmetric_int8_spends_on_a_relu_output(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _net(padded_reader=False)
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    _, shifted = quantize(original, tmp_path / "on", image_dir, TRT)
    monkeypatch.setattr(tensorrt_shift, "MIN_GAIN", float("inf"))
    _, plain = quantize(original, tmp_path / "off", image_dir, TRT)
    assert _shift_adds(onnx.load(str(plain))) == {}
    fp32 = tmp_path / "on" / "model.onnx"
    gained = output_sqnr(fp32, shifted, image_dir) - output_sqnr(fp32, plain, image_dir)
    assert gained > 2.0, gained


def test_a_tensor_a_padded_conv_also_reads_keeps_the_plain_grid(tmp_path: Path, image_dir: Path) -> None:
    _, out = quantize(_net(padded_reader=True), tmp_path, image_dir, TRT)
    assert sorted(_shift_adds(onnx.load(str(out)))) == ["r"]


@pytest.mark.parametrize("target", [Target.ort_cpu, Target.openvino])
def test_no_other_target_shifts(tmp_path: Path, image_dir: Path, target: Target) -> None:
    _, out = quantize(_net(padded_reader=False), tmp_path, image_dir, ConvertConfig(target=target))
    assert _shift_adds(onnx.load(str(out))) == {}


def test_a_tensor_it_shifts_is_no_rebalancing_candidate(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rebalancing a ReLU6 output puts a Mul before its Q/DQ and leaves it unshifted (MobileNetV2: 21.2 dB
    held out against 23.0 shifted): --target tensorrt offers rebalancing only the tensors it cannot shift."""
    model = _net(padded_reader=False)
    src, table = tmp_path / "model.onnx", tmp_path / "model.calib.json"
    onnx.save(model, str(src))
    pipeline.calibrate(src, table, CalibrateConfig(images=ImageSelection(image_dir)))
    model = model_io.infer_shapes(model_io.load_model(src))  # as the planner reads it
    config = ConvertConfig(target=Target.tensorrt, smoothquant="0.5")  # auto: candidates chosen apart
    _, rebalancer = smoothing_candidates(model, load(table), config)
    assert {"a", "r"}.isdisjoint(rebalancer.activations) and "x" in rebalancer.activations
    monkeypatch.setattr(tensorrt_shift, "MIN_GAIN", float("inf"))
    _, rebalancer = smoothing_candidates(model, load(table), config)
    assert {"a", "r", "x"} <= set(rebalancer.activations)


def test_a_bias_added_after_a_matmul_converts(tmp_path: Path, image_dir: Path) -> None:
    """The ort-style plan quantizes the constant operand of an Add after a MatMul (vit_mnist's biases):
    it has params but no statistics, and the rebalancing candidates' shift check read its range
    (vit_mnist --target tensorrt: internal error, KeyError)."""
    g = np.random.default_rng(7)
    inits = {
        "w": g.normal(0, 0.3, (16, 16)).astype(np.float32),
        "bias": g.normal(0, 0.1, (16,)).astype(np.float32),
        **{k + "1": v for k, v in conv_params(4, 3, 1, seed=8).items()},
    }
    nodes = [
        N("MatMul", ["x", "w"], ["m"], name="matmul"),
        N("Add", ["m", "bias"], ["s"], name="add"),
        N("Relu", ["s"], ["a"], name="relu"),
        N("Conv", ["a", "w1", "b1"], ["y"], name="conv1"),
    ]
    config = ConvertConfig(target=Target.tensorrt, max_float_layers=0, smoothquant="0.5")
    _, out = quantize(make_model(nodes, inits), tmp_path, image_dir, config)
    assert sorted(_shift_adds(onnx.load(str(out)))) == ["a"]


def test_each_layers_own_error_reads_a_shifted_input_as_its_reader_does(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shrink --html's per-layer SQNR (pipeline.layer_errors, graph.probe.local_probe) quantized a
    shifted tensor on its shifted grid without the shift: a ReLU output clipped at half its range, conv1
    and conv2 at 13-18 dB where they measure 37-39 (review52 M1). With the shift they measure at least
    what the plain symmetric grid gives them."""
    original = _net(padded_reader=False)
    quantize(original, tmp_path, image_dir, TRT)
    src, table = tmp_path / "model.onnx", tmp_path / "model.calib.json"
    shifted = {name: db for name, _, db in pipeline.layer_errors(src, table, TRT)}
    monkeypatch.setattr(tensorrt_shift, "MIN_GAIN", float("inf"))
    plain = {name: db for name, _, db in pipeline.layer_errors(src, table, TRT)}
    assert shifted["conv0"] == pytest.approx(plain["conv0"], abs=1e-6)  # reads x: not shifted
    assert all(shifted[n] > plain[n] + 2.0 for n in ("conv1", "conv2")), (shifted, plain)


def test_convert_says_what_it_shifted_and_records_it(tmp_path: Path, image_dir: Path) -> None:
    """The Adds and lowered biases are explained (review52 M4): a note and the model's metadata."""
    summary, out = quantize(_net(padded_reader=False), tmp_path, image_dir, TRT)
    said = [n for n in summary.notes if "one-sided activation(s)" in n]
    assert len(said) == 1 and said[0].startswith("2 one-sided activation(s) (ReLU, SiLU, GELU outputs)")
    record = json.loads(
        next(p.value for p in onnx.load(str(out)).metadata_props if p.key == "quantkit.conversion")
    )
    assert record["shifted"] == _shift_adds(onnx.load(str(out)))
    (tmp_path / "cpu").mkdir()
    _, plain = quantize(_net(padded_reader=False), tmp_path / "cpu", image_dir)
    assert "shifted" not in json.loads(
        next(p.value for p in onnx.load(str(plain)).metadata_props if p.key == "quantkit.conversion")
    )


@pytest.mark.parametrize(
    ("lo", "hi"), [(0.0, 6.0), (0.0, 3.7712), (-0.2785, 5.31), (-0.17, 11.9), (-4.2, 1.1), (2.0, 9.5)]
)
def test_the_shifted_grid_keeps_zero_exact_and_covers_the_range(lo: float, hi: float) -> None:
    """x = 0 (most of a ReLU output) on a grid point, as under a uint8 zero point: a centre off the grid
    put every zero half a step out (SqueezeNet 1.1 30.3 against 31.8 dB with bias correction)."""
    shift, scale = tensorrt_shift.grid(lo, hi)
    steps = shift / scale
    assert lo > 0 or (abs(steps - round(steps)) < 1e-5 and abs(round(steps)) <= 127)  # 0 in the range
    assert float(np.float16(shift)) == shift  # --fallback fp16's Add adds the value the biases absorbed
    assert 127 * scale >= max(abs(lo + shift), abs(hi + shift)) - scale / 2 - 1e-9
    assert 127 * scale <= (hi - lo) / 2 * 1.01  # every level in use: about half the plain grid's step
