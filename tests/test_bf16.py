"""convert --to bf16: bfloat16 weights at opset 22, float32 edges, ops whose schema does not admit
bfloat16 kept float32, and every figure measured on the float32 emulation (onnxruntime's CPU provider has
no bfloat16 Conv, MatMul, Add or Relu): its rounding is onnxruntime's Cast, bit for bit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import quantkit
from quantkit import pipeline
from quantkit.config import Float16Config
from quantkit.errors import ConversionError, ModelError, QuantkitError
from quantkit.evaluate.metrics import sqnr_db
from quantkit.graph import fp16_rewrite
from quantkit.graph.emulate import emulate, stored_as
from quantkit.graph.float_formats import BFLOAT16
from quantkit.graph.prepare import prepare
from quantkit.planner import fp16_plan
from quantkit.qmath.bfloat16 import round_to_bfloat16
from quantkit.runtime import Session
from tests.conftest import ASSETS, SIZE, conv_params, make_model, requires_assets, rng, save
from tests.helpers import assert_one_line_error, run

BF16 = TensorProto.BFLOAT16
# one rounding to 8 significant bits: the noise of a value in [2^e, 2^(e+1)) is ulp^2/12 with ulp 2^(e-7),
# so its SQNR lies in [10 log10(12 * 4^7), 10 log10(12 * 4^8)) = [52.9, 59.0) dB. An output that is
# itself stored in bfloat16 cannot measure above that; a model that measures more was not rounded.
ONE_ROUNDING_DB = 10 * math.log10(12 * 4.0**BFLOAT16.significand_bits)


def _x(seed: int = 0) -> np.ndarray:
    return rng(seed).normal(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)


def _convert(model: Path, out: Path, **options: object) -> onnx.ModelProto:
    pipeline.convert_float16(model, None, out, Float16Config(to="bf16", **options))  # type: ignore[arg-type]
    return onnx.load(str(out))


def _emulation(model: onnx.ModelProto) -> onnx.ModelProto:
    return emulate(model, stored_as(model, BF16), BF16)


def _sqnr(reference: Path, candidate: onnx.ModelProto, x: np.ndarray) -> float:
    ref, cand = Session(reference).run(x), Session.of(candidate).run(x)
    (name,) = ref
    noise = float(np.sum((ref[name].astype(np.float64) - cand[name]) ** 2))
    return sqnr_db(float(np.sum(ref[name].astype(np.float64) ** 2)), noise)


def test_cnn_in_bfloat16_with_float32_edges(cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "cnn.bf16.onnx"
    model = _convert(cnn, out)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 22  # Conv and GlobalAveragePool admit bfloat16 from 22
    assert {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]} == {
        TensorProto.FLOAT
    }
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert weights == dict.fromkeys(("w1", "b1", "w2", "b2"), BF16)
    stored = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w1"))
    original = onnx.numpy_helper.to_array(
        next(i for i in onnx.load(str(cnn)).graph.initializer if i.name == "w1")
    )
    assert np.array_equal(stored.astype(np.float32), round_to_bfloat16(original))
    assert len([n for n in model.graph.node if n.op_type == "Cast"]) == 2
    with pytest.raises(ModelError):  # the fact the emulation exists for: no bfloat16 Conv kernel
        Session.of(model)
    sqnr = _sqnr(cnn, _emulation(model), _x())
    assert 30.0 < sqnr < ONE_ROUNDING_DB  # coarse as 8 bits are, and never finer than one rounding


def _celu_model() -> onnx.ModelProto:
    """Conv -> Celu (no bfloat16 in its schema, at any opset) -> Conv."""
    a, b = conv_params(4, 3, seed=2), conv_params(4, 4, seed=3)
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["c"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Celu", ["c"], ["e"], name="celu"),
        helper.make_node("Conv", ["e", "wb", "bb"], ["y"], name="conv_b", pads=[1, 1, 1, 1]),
    ]
    return make_model(nodes, {"wa": a["w"], "ba": a["b"], "wb": b["w"], "bb": b["b"]})


def test_ops_whose_schema_lacks_bfloat16_stay_float32(tmp_path: Path) -> None:
    path = save(_celu_model(), tmp_path / "m.onnx")
    summary = pipeline.convert_float16(path, None, tmp_path / "o.onnx", Float16Config(to="bf16"))
    assert summary.kept_float32 == (("celu", "Celu", "Celu does not admit bfloat16 at ai.onnx opset 22"),)
    assert summary.float16_by_type == {"Conv": 2} and summary.target == "bfloat16"
    model = onnx.load(str(tmp_path / "o.onnx"))
    onnx.checker.check_model(model, full_check=True)
    celu = next(n for n in model.graph.node if n.name == "celu")
    assert celu.input[0].endswith("_fp32")  # a Cast back to float32 in front of it


def test_below_opset_22_the_planner_keeps_conv_float32() -> None:
    """The rule itself, at the model's opset 13 (convert upgrades first, so it never meets this)."""
    model = prepare(_celu_model(), minimum=0).model
    kept = fp16_plan.plan(model, None, target=BFLOAT16).kept
    assert (kept[0].node, kept[0].reason) == (
        "conv_a",
        "Conv does not admit bfloat16 at ai.onnx opset 13",
    )
    assert {k.node for k in fp16_plan.plan(model, None).kept} == {"celu"}  # float16: Celu alone


def _cancelling_model() -> onnx.ModelProto:
    """conv_a adds 1000 to a small signal, conv_b takes it off again: in bfloat16 the sum is stored on a
    grid of 4 (8 significant bits at 1000), so the signal drowns; float32 for both recovers it."""
    a, b = conv_params(4, 3, seed=8), conv_params(4, 4, k=1, seed=9)
    a["b"] = a["b"] + np.float32(1000.0)
    b["w"] = np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)
    b["b"] = np.full(4, -1000.0, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["big"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["big", "wb", "bb"], ["y"], name="conv_b"),
    ]
    return make_model(nodes, {"wa": a["w"], "ba": a["b"], "wb": b["w"], "bb": b["b"]})


def test_the_fallback_keeps_float32_what_bfloat16_precision_loses(tmp_path: Path) -> None:
    path = save(_cancelling_model(), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    summary = pipeline.convert_float16(path, None, out, Float16Config(to="bf16"))
    kept = {node: reason for node, _, reason in summary.kept_float32}
    assert set(kept) == {"conv_a", "conv_b"}
    assert all("dB floor on synthetic inputs" in reason for reason in kept.values())
    assert "emulation" in summary.measured_by
    plain = fp16_rewrite.rewrite(prepare(_cancelling_model(), minimum=22).model, [], True, BFLOAT16)
    assert _sqnr(path, emulate(plain.model, plain.stored, BF16), _x()) < 10.0  # what it fixed
    assert _sqnr(path, _emulation(onnx.load(str(out))), _x()) > 60.0


def test_an_int8_plan_with_a_bfloat16_fallback_is_not_timed_here(cnn: Path) -> None:
    """hq120 F2: --fallback bf16 under the default --prefer balanced timed the plan on this CPU; the ops
    the timing kept float were bfloat16, and convert failed 'onnxruntime cannot load the model (Could not
    find an implementation for Conv(22) ...)' on MobileNetV2, blaming the user's model."""
    from quantkit.config import ConvertConfig, FallbackPrecision
    from quantkit.pipeline.speed_step import timed

    model = onnx.load(str(cnn))
    assert timed(ConvertConfig(fallback=FallbackPrecision.fp32), model)
    assert not timed(ConvertConfig(fallback=FallbackPrecision.bf16), model)


def test_below_the_floor_nothing_is_written(tmp_path: Path) -> None:
    path = save(_cancelling_model(), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    with pytest.raises(ConversionError, match=r"bfloat16 model.*nothing was written"):
        pipeline.convert_float16(path, None, out, Float16Config(to="bf16", max_float32_layers=0))
    assert not out.exists()


def test_an_input_is_never_overwritten(cnn: Path) -> None:
    before = cnn.read_bytes()
    with pytest.raises(QuantkitError):
        pipeline.convert_float16(cnn, None, cnn, Float16Config(to="bf16"))
    assert cnn.read_bytes() == before


def test_cli_prints_what_was_measured_and_refuses_int8_options(
    cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.onnx"
    code, stdout, err = run(["convert", str(cnn), "--to", "bf16", "-o", str(out)], capsys)
    assert code == 0, err
    text = " ".join(stdout.split())
    assert "bfloat16" in text and "measured on its float32 emulation" in text
    assert "opset 13 -> 22" in text
    argv = ["convert", str(cnn), "--to", "bf16", "--method", "minmax", "-o", str(tmp_path / "p.onnx")]
    assert_one_line_error(*run(argv, capsys)[::2], "--method only applies to --to int8")


def test_compare_says_why_it_cannot_run_a_bfloat16_model(
    cnn: Path, tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.onnx"
    pipeline.convert_float16(cnn, None, out, Float16Config(to="bf16"))
    argv = ["compare", str(cnn), str(out), "--images", str(image_dir), "--runs", "0"]
    assert_one_line_error(
        *run(argv, capsys)[::2], "stores bfloat16", "float32 emulation", "--runtime openvino"
    )
    # hq69 F6: as the reference, onnxruntime's 'Could not find an implementation for Conv(22)'; shrink
    # calibrated and converted it first
    swapped = ["compare", str(out), str(cnn), *argv[3:]]
    assert_one_line_error(*run(swapped, capsys)[::2], "o.onnx stores bfloat16", "--runtime openvino")
    shrink = ["shrink", str(out), "--images", str(image_dir), "--output-dir", str(tmp_path / "s")]
    assert_one_line_error(*run(shrink, capsys)[::2], "o.onnx stores bfloat16", "give it the FP32 original")
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())
    # hq70 3: bfloat16 weights read through a Cast to float run in onnxruntime: compared, not refused
    cast = onnx.load(str(cnn))
    weight = next(t for t in cast.graph.initializer if t.name == "w1")
    stored = onnx.helper.make_tensor(
        "w1_bf16",
        onnx.TensorProto.BFLOAT16,
        weight.dims,
        onnx.numpy_helper.to_array(weight).flatten().tolist(),
    )
    cast.graph.initializer.remove(weight)
    cast.graph.initializer.append(stored)
    cast.graph.node.insert(0, onnx.helper.make_node("Cast", ["w1_bf16"], ["w1"], to=onnx.TensorProto.FLOAT))
    onnx.save(cast, str(tmp_path / "cast.onnx"))
    code, _, err = run(["compare", str(tmp_path / "cast.onnx"), str(cnn), *argv[3:]], capsys)
    assert code == 0, err
    # OpenVINO runs it, so compare does there (hunt51 C2: refused for onnxruntime's sake)
    pytest.importorskip("openvino")
    code, out_text, err = run([*argv, "--runtime", "openvino"], capsys)
    assert code == 0, err
    assert "runtime OpenVINO" in " ".join(out_text.split())


def test_api_converts_to_bf16(cnn: Path, tmp_path: Path) -> None:
    summary = quantkit.convert(cnn, output=tmp_path / "o.onnx", to="bf16", max_float32_layers=2)
    assert isinstance(summary, quantkit.Float16Summary) and summary.target == "bfloat16"
    assert (tmp_path / "o.onnx").stat().st_size == summary.bytes_after
    with pytest.raises(QuantkitError, match="has no option method"):
        quantkit.convert(cnn, output=tmp_path / "p.onnx", to="bf16", method="minmax")


@requires_assets()
@pytest.mark.parametrize("name", ["squeezenet1.1", "vit_mnist"])
def test_shared_models_in_bfloat16(name: str, tmp_path: Path) -> None:
    """Real weights, synthetic inputs (no table): half the bytes, bfloat16 weights, float32 edges, a
    checked file, and an emulated SQNR in bfloat16's range (measured 45 dB on both)."""
    src = ASSETS / "models" / f"{name}.onnx"
    out = tmp_path / f"{name}.bf16.onnx"
    summary = pipeline.convert_float16(src, None, out, Float16Config(to="bf16"))
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    floats = {i.data_type for i in model.graph.initializer} - {TensorProto.INT64}  # shapes, indices
    assert floats == {BF16}
    assert summary.bytes_before / summary.bytes_after > 1.9
    assert summary.kept_float32 == ()
    (sqnr,) = summary.smoke_sqnr_db.values()
    assert 35.0 < sqnr < ONE_ROUNDING_DB


@requires_assets()
def test_openvino_runs_the_bfloat16_file_close_to_the_emulation(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino", reason="openvino is not installed (the openvino extra)")
    src = ASSETS / "models" / "squeezenet1.1.onnx"
    out = tmp_path / "sq.bf16.onnx"
    pipeline.convert_float16(src, None, out, Float16Config(to="bf16"))
    x = rng(3).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    reference = next(iter(Session(src).run(x).values())).astype(np.float64)
    emulated = next(iter(Session.of(_emulation(onnx.load(str(out)))).run(x).values()))
    compiled = ov.Core().compile_model(str(out), "CPU")
    got = next(iter(compiled([x]).values())).astype(np.float64)

    def db(a: np.ndarray, b: np.ndarray) -> float:
        return sqnr_db(float(np.sum(a**2)), float(np.sum((a - b) ** 2)))

    assert db(reference, got) > 35.0  # OpenVINO's own arithmetic, from the same bfloat16 weights
    assert db(emulated.astype(np.float64), got) > 40.0  # it and the emulation agree far closer than bf16


def test_bfloat16_edges_and_compact_are_checked_too(cnn: Path, tmp_path: Path) -> None:
    """--no-keep-io-types: bfloat16 inputs and outputs (the emulation feeds float32 samples rounded);
    --compact renames inner tensors (the emulation reads which are bfloat16 from the file's types)."""
    edges = _convert(cnn, tmp_path / "e.onnx", keep_io_types=False)
    assert {v.type.tensor_type.elem_type for v in [*edges.graph.input, *edges.graph.output]} == {BF16}
    assert not [n for n in edges.graph.node if n.op_type == "Cast"]
    compact = _convert(cnn, tmp_path / "c.onnx", compact=True)
    plain = _convert(cnn, tmp_path / "p.onnx")
    x = _x(2)
    outputs = [Session.of(_emulation(m)).run(x)["y"] for m in (edges, compact, plain)]
    assert np.array_equal(outputs[1], outputs[2])  # compact: the same values
    assert np.array_equal(outputs[0], outputs[2])  # a rounded input is what the first Cast made
    assert 30.0 < _sqnr(cnn, _emulation(edges), x) < ONE_ROUNDING_DB


def test_an_upgrade_for_bfloat16_that_onnxruntime_cannot_run_is_not_blamed_on_the_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A RoiAlign model at opset 16, converted --to bf16, was told to 're-export it at opset 13 or later':
    the failure is quantkit's own upgrade to 22 (bfloat16 Conv needs it), which onnxruntime has no
    RoiAlign kernel for (hq60 B)."""
    from onnx import numpy_helper

    g = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(
            "RoiAlign", ["c", "rois", "batch"], ["y"], name="roi", output_height=2, output_width=2
        ),
    ]
    weights = {
        "w": g.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        "rois": np.array([[0, 0, 8, 8], [2, 2, 14, 14]], np.float32),
        "batch": np.zeros(2, np.int64),
    }
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 2, 2])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    code, _, err = run(["convert", str(path), "--to", "bf16", "-o", str(tmp_path / "b.onnx")], capsys)
    assert_one_line_error(
        code, err, "the model upgraded from opset 16 to 22 (bfloat16", "RoiAlign", "convert it to a format"
    )
    assert "re-export" not in err


def test_float16_edges_are_never_declared_bfloat16(cnn: Path, tmp_path: Path) -> None:
    """hq147 F4: a model fed and read in float16, --to bf16 --no-keep-io-types, was written with bfloat16
    edges (which quantkit's compare and convert then refused) while its summary said it was 'fed and read
    as the original'."""
    from quantkit.errors import ConfigError

    half = onnx.load(str(cnn))
    for value in [*half.graph.input, *half.graph.output]:
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    nodes = list(half.graph.node)
    first, last = nodes[0], nodes[-1]
    first.input[0], last.output[0] = "x32", "y32"
    casts = [
        helper.make_node("Cast", [half.graph.input[0].name], ["x32"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["y32"], [half.graph.output[0].name], to=TensorProto.FLOAT16),
    ]
    del half.graph.node[:]
    half.graph.node.extend([casts[0], *nodes, casts[1]])
    path = save(half, tmp_path / "half.onnx")
    with pytest.raises(ConfigError, match=r"are float16, which --no-keep-io-types would declare bfloat16"):
        pipeline.convert_float16(
            path, None, tmp_path / "b.onnx", Float16Config(to="bf16", keep_io_types=False)
        )
    kept = pipeline.convert_float16(path, None, tmp_path / "k.onnx", Float16Config(to="bf16"))
    written = onnx.load(str(tmp_path / "k.onnx"))
    assert kept is not None and {v.type.tensor_type.elem_type for v in written.graph.input} == {
        TensorProto.FLOAT16
    }
