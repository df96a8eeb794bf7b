"""FP32 weights that are subnormal make the FP32 model's CPU runs slow, and every speedup against it
mean little: compare and convert say so (graph.subnormal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from quantkit.graph.subnormal import subnormal_warning, subnormal_weights
from tests.conftest import tiny_cnn
from tests.helpers import run

Capsys = pytest.CaptureFixture[str]


def _with_subnormal_weights(path: Path) -> Path:
    """PFLD's case (hunt30: 60 % of its weights subnormal), on the tiny CNN: every other weight of each
    float32 initializer of rank 4 set to 1e-40."""
    model = onnx.load(str(path))
    for k, init in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(init).copy()
        if values.ndim == 4:
            values.reshape(-1)[::2] = np.float32(1e-40)
            model.graph.initializer[k].CopyFrom(numpy_helper.from_array(values, init.name))
    out = path.with_name("subnormal.onnx")
    onnx.save(model, str(out))
    return out


def test_subnormal_weights_are_counted_and_named(tmp_path: Path, image_dir: Path, capsys: Capsys) -> None:
    plain = tiny_cnn(tmp_path / "cnn.onnx")
    assert subnormal_warning(onnx.load(str(plain))) is None
    slow = _with_subnormal_weights(plain)
    found, total = subnormal_weights(onnx.load(str(slow)))
    assert 0 < found < total and found >= total // 3
    line = subnormal_warning(onnx.load(str(slow)))
    assert line is not None and line.startswith(f"{found:,} of the FP32 model's {total:,} weights")
    table, half = tmp_path / "t.json", tmp_path / "h.onnx"
    assert run(["calibrate", str(slow), "--images", str(image_dir), "-o", str(table), "-q"], capsys)[0] == 0
    code, _, err = run(["convert", str(slow), "--to", "fp16", "-c", str(table), "-o", str(half)], capsys)
    assert code == 0 and "are subnormal (nonzero, below 1.2e-38)" in " ".join(err.split())
    code, _, err = run(["compare", str(slow), str(half), "--images", str(image_dir), "--runs", "0"], capsys)
    assert code == 0 and "subnormal" not in err  # no latency measured: nothing inflated


@pytest.mark.parametrize("slower", [3.0, 1.0])
def test_compare_times_what_subnormal_weights_cost_before_it_warns(
    tmp_path: Path, image_dir: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch, slower: float
) -> None:
    """hq96 F2: compare said PFLD's subnormal weights made it "many times slower" from their count alone;
    an AMD EPYC ran it at the same speed with them flushed. It times the flushed copy against the model
    now (here the timing is set, as this CPU's would be either) and warns only where it is slower."""
    from quantkit.evaluate import speed
    from quantkit.outcomes import Speed

    timed: list[tuple[int, int]] = []

    def measure(fp32: onnx.ModelProto, flushed: onnx.ModelProto, *args: object, **kwargs: object) -> Speed:
        timed.append((subnormal_weights(fp32)[0], subnormal_weights(flushed)[0]))
        return Speed(slower, 20, 10.0 * slower, 10.0)

    slow = _with_subnormal_weights(tiny_cnn(tmp_path / "cnn.onnx"))
    monkeypatch.setattr(speed, "measure", measure)
    code, _, err = run(["compare", str(slow), str(slow), "--images", str(image_dir), "--runs", "2"], capsys)
    assert (
        code == 0 and len(timed) == 1 and timed[0][0] > 0 and timed[0][1] == 0
    )  # the model, its flushed copy
    said = " ".join(err.split())
    if slower > 1.0:
        assert (
            "this CPU computes with them slowly: 30.00 ms against 10.00 ms with them flushed to zero (3.0x"
            in said
        )
        assert "any speedup against it, is inflated by that" in said
    else:
        assert "are subnormal" not in said


def test_convert_counts_the_files_own_weights(tmp_path: Path, image_dir: Path, capsys: Capsys) -> None:
    """hunt33: on PFLD convert said '249,547 of the FP32 model's 724,730 weights' (after folding its
    BatchNormalizations) and compare '447,229 of 741,192' (the file's): one count, the file's."""
    from onnx import helper

    from tests.conftest import conv_params, make_model

    p = conv_params(4, 3, 3, 5)
    weights = p["w"].copy()
    weights.reshape(-1)[::2] = np.float32(1e-40)
    bn = {"s": np.full(4, 1e10, np.float32), "t": np.zeros(4, np.float32), "m": np.zeros(4, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["y"], name="relu"),
    ]
    model = make_model(nodes, {"w": weights, "b": p["b"], **bn, "v": np.ones(4, np.float32)})
    path = tmp_path / "bn.onnx"
    onnx.save(model, str(path))
    line = subnormal_warning(model)
    assert line is not None
    table, int8 = tmp_path / "t.json", tmp_path / "i.onnx"
    assert run(["calibrate", str(path), "--images", str(image_dir), "-o", str(table), "-q"], capsys)[0] == 0
    code, out, err = run(
        ["convert", str(path), "-c", str(table), "-o", str(int8), "--prefer", "accuracy"], capsys
    )
    assert code == 0, err
    assert "subnormal" not in err  # convert times FP32 flushed: nothing inflated to warn of
    found = line.split(" of the FP32")[0]  # the file's count, not the folded model's
    assert f"{found} subnormal FP32 weight(s)" in " ".join(out.split())


def test_convert_flushes_subnormal_weights_in_what_it_times_and_writes(
    tmp_path: Path, image_dir: Path
) -> None:
    """hunt48 B1: PP-OCRv3's recognizer holds 35 % subnormal weights; its FP32 ran 2.9x slower for them,
    and convert credited INT8 with 4.98x (1.97x against the same FP32 flushed, bit-identical outputs).
    convert flushes them in the model it converts and in the FP32 it times against, and says so."""
    from quantkit import pipeline
    from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection
    from quantkit.graph.subnormal import flushed

    slow = _with_subnormal_weights(tiny_cnn(tmp_path / "cnn.onnx"))
    found, _ = subnormal_weights(onnx.load(str(slow)))
    same, count = flushed(onnx.load(str(slow)))
    assert count == found and subnormal_weights(same)[0] == 0
    assert flushed(same) == (same, 0)
    table, int8 = tmp_path / "t.json", tmp_path / "i.onnx"
    pipeline.calibrate(slow, table, CalibrateConfig(ImageSelection(image_dir)))
    config = ConvertConfig(exclude_nodes=("c1",), prefer="accuracy")
    summary = pipeline.convert(slow, table, int8, config)
    (note,) = [n for n in summary.notes if "flushed to zero" in n]
    assert note.startswith(f"{found:,} subnormal FP32 weight(s)")
    assert not any("subnormal" in w for w in summary.warnings)
    assert subnormal_weights(onnx.load(str(int8)))[0] == 0  # c1, kept float, no longer holds them


def test_weights_held_in_constant_nodes_are_counted_and_flushed() -> None:
    """PP-OCRv3's recognizer (Paddle2ONNX) holds its weights in Constant nodes: its 35 % subnormal went
    uncounted, and its FP32 timing unflushed."""
    from onnx import helper

    from quantkit.graph.subnormal import flushed
    from tests.conftest import conv_params, make_model

    p = conv_params(4, 3, 3, 6)
    weights = p["w"].copy()
    weights.reshape(-1)[::3] = np.float32(-3e-39)
    nodes = [
        helper.make_node("Constant", [], ["w"], name="w_c", value=numpy_helper.from_array(weights, "w")),
        helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, {"b": p["b"]})
    found, total = subnormal_weights(model)
    assert found == weights[np.abs(weights) < 1e-38].size and total == weights.size + 4
    same, count = flushed(model)
    assert count == found and subnormal_weights(same) == (0, total)
    kept = numpy_helper.to_array(same.graph.node[0].attribute[0].t)
    np.testing.assert_array_equal(kept, np.where(np.abs(weights) < 1e-38, 0, weights))
    assert subnormal_weights(model)[0] == found  # the model given is not changed


def test_weights_inside_a_loop_or_if_body_are_counted_and_flushed() -> None:
    """A table recognizer's GRU decoder (SLANet, Paddle2ONNX) holds its weights in a Loop body: the count
    and the flush read only the top-level graph."""
    from onnx import TensorProto, helper

    from quantkit.graph.subnormal import flushed

    tiny = np.array([1e-40, 0.5, -2e-39, 0.0], np.float32)
    held = np.array([3e-39, 1.0], np.float32)
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["t"], value=numpy_helper.from_array(tiny, "t"))],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["e_w"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(held, "e_w")],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert subnormal_weights(model) == (3, 6)
    same, count = flushed(model)
    assert count == 3 and subnormal_weights(same) == (0, 6)
    body = same.graph.node[0].attribute
    branches = {a.name: a.g for a in body}
    np.testing.assert_array_equal(
        numpy_helper.to_array(branches["then_branch"].node[0].attribute[0].t), [0.0, 0.5, 0.0, 0.0]
    )
    np.testing.assert_array_equal(numpy_helper.to_array(branches["else_branch"].initializer[0]), [0.0, 1.0])
