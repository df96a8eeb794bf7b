"""The speed-aware plan's inputs-only candidate (planner.targets.inputs_only, pipeline.speed_refine): on a
model led by MatMuls, the plan with Q/DQ on the weighted layers' inputs only, so that onnxruntime runs
them as MatMulIntegerToFloat and every op between them in float; and the rule that an INT8 convert keeps
a plan that stores int8 weights where one runs at least as fast as FP32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.evaluate.profiler import KernelTime
from quantkit.pipeline import speed_memory, speed_refine
from quantkit.pipeline.written_records import conversion_record
from quantkit.planner import targets
from tests.conftest import SIZE, make_model, rng
from tests.helpers import op_counts, optimized_graph, output_sqnr, quantize

N = helper.make_node


def _attention_like(logit_scale: float = 0.3) -> onnx.ModelProto:
    """x [N, 3, 16, 16] -> 1x1 Conv (a patch embedding) -> tokens [N, 48, 16] -> MatMul fc1 + bias ->
    Softmax -> MatMul fc2 + bias -> residual Add -> mean over the tokens [N, 16] -> MatMul head + bias ->
    y [N, 10] (a ViT's head: 2-D). logit_scale: fc1's weights' std (an attention's logits: std 2-8)."""
    g = rng(3)
    inits = {
        "shape": np.array([0, 3 * SIZE, SIZE], np.int64),
        "wc": g.normal(0, 0.5, (3, 3, 1, 1)).astype(np.float32),
        "bc": g.normal(0, 0.1, (3,)).astype(np.float32),
        "w1": g.normal(0, logit_scale, (SIZE, 32)).astype(np.float32),
        "b1": g.normal(0, 0.1, (32,)).astype(np.float32),
        "w2": g.normal(0, 0.3, (32, SIZE)).astype(np.float32),
        "b2": g.normal(0, 0.1, (SIZE,)).astype(np.float32),
        "w3": g.normal(0, 0.3, (SIZE, 10)).astype(np.float32),
        "b3": g.normal(0, 0.1, (10,)).astype(np.float32),
    }
    nodes = [
        N("Conv", ["x", "wc", "bc"], ["c"], name="patches"),
        N("Reshape", ["c", "shape"], ["t"], name="tokens"),
        N("MatMul", ["t", "w1"], ["h1"], name="fc1"),
        N("Add", ["h1", "b1"], ["a1"], name="fc1_bias"),
        N("Softmax", ["a1"], ["s1"], name="softmax", axis=-1),
        N("MatMul", ["s1", "w2"], ["h2"], name="fc2"),
        N("Add", ["h2", "b2"], ["a2"], name="fc2_bias"),
        N("Add", ["a2", "t"], ["r"], name="residual"),
        N("ReduceMean", ["r"], ["p"], name="pool", axes=[1], keepdims=0),
        N("MatMul", ["p", "w3"], ["h3"], name="head"),
        N("Add", ["h3", "b3"], ["y"], name="head_bias"),
    ]
    return make_model(nodes, inits)


def _stub_timing(monkeypatch: pytest.MonkeyPatch, plain: float, placed: float) -> list[int]:
    """No kernel profiles slower in int8 (no round is tried); interleaved timing measures FP32 at 1 ms,
    the plain model at `plain` ms, the inputs-only one at `placed` ms. Returns the models timed per call."""
    timed: list[int] = []

    def profiles(models: list[onnx.ModelProto], *_: object) -> list[list[KernelTime]]:
        return [[] for _ in models]

    def confirm(sessions: list[object], *_: object) -> np.ndarray:
        timed.append(len(sessions))
        return np.array([[1.0, plain, placed]] * 5)

    monkeypatch.setattr(speed_refine, "side_by_side", profiles)
    monkeypatch.setattr(speed_refine, "interleaved_rounds", confirm)
    monkeypatch.setattr(speed_refine, "INPUTS_ONLY", True)
    return timed


def test_a_matmul_model_keeps_the_inputs_only_plan_where_it_measures_faster(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed = _stub_timing(monkeypatch, plain=1.25, placed=0.9)
    summary, out = quantize(_attention_like(), tmp_path, image_dir)
    assert timed == [3]  # FP32, the plain plan and the inputs-only one, side by side
    plan = summary.speed_plan
    assert plan is not None and plan.placement == speed_refine.INPUTS and plan.floated == ()
    assert plan.plain_speedup == pytest.approx(0.8) and plan.refined_speedup == pytest.approx(1 / 0.9)
    model = onnx.load(str(out))
    # the layers' data inputs and the Conv's output (no integer Conv writes float); the 2-D head, which
    # onnxruntime fuses with its bias Add into a Gemm, gets that bias int32 and runs as QGemm
    # (planner.gemm_bias; before, its output kept a Q/DQ pair and it ran as QLinearMatMul)
    assert set(summary.plan.activations) == {"x", "c", "t", "s1", "p"}
    assert op_counts(model)["QuantizeLinear"] == 5
    fused = op_counts(optimized_graph(out, tmp_path))
    assert fused["MatMulIntegerToFloat"] == 2 and fused["QGemm"] == 1 and fused["QLinearAdd"] == 0
    assert fused["QLinearConv"] == 1
    assert fused["MatMul"] == fused["Gemm"] == fused["Conv"] == 0  # nothing float on dequantized weights
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 30.0
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert reasons["softmax"] == reasons["residual"] == targets.INPUTS_ONLY
    record = conversion_record(model)
    assert record is not None and record["kept_float_for_speed"]["placement"] == "inputs-only"


def test_the_plain_plan_stands_where_the_inputs_only_one_is_slower(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed = _stub_timing(monkeypatch, plain=0.8, placed=0.9)
    summary, out = quantize(_attention_like(), tmp_path, image_dir)
    assert timed == [3] and summary.speed_plan is not None and summary.speed_plan.refined_speedup is None
    assert summary.speed_plan.placement == speed_refine.INPUTS  # what was tried, for the summary
    assert op_counts(optimized_graph(out, tmp_path))["QLinearMatMul"] >= 1


def test_prefer_accuracy_writes_the_inputs_only_plan_where_it_measures_more_accurate(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq150 F4: --prefer accuracy wrote a transformer's full plan, its residual Adds and LayerNorm / GELU
    arithmetic quantized: 6-23 dB below the default (vit_mnist 25.7 against 32.3 dB). It times nothing
    (the same bytes on any machine) but measures both placements on the calibration samples."""
    from quantkit.config import ConvertConfig, Prefer
    from quantkit.pipeline import speed_step
    from quantkit.reports import console
    from tests.test_golden import _render

    timed = _stub_timing(monkeypatch, plain=1.25, placed=0.9)
    accurate = ConvertConfig(prefer=Prefer.accuracy)
    summary, out = quantize(_attention_like(logit_scale=0.6), tmp_path, image_dir, accurate)
    plan = summary.speed_plan
    assert timed == [] and plan is not None and plan.placement == speed_step.ACCURATE
    assert plan.plain_speedup is None and plan.sqnr_db is not None
    full, kept = plan.sqnr_db
    assert kept >= full + speed_refine.TIED_GAIN_DB
    assert set(summary.plan.activations) == {"x", "c", "t", "s1", "p"}
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert reasons["softmax"] == reasons["residual"] == targets.INPUTS_ONLY_ACCURATE
    record = conversion_record(onnx.load(str(out)))
    assert record is not None and "kept_float_for_speed" not in record
    assert record["placed_for_accuracy"]["sqnr_db_kept"] == round(kept, 3)
    text = " ".join(_render(console.convert_table(summary, str(out)), 200).split())
    assert (
        f"{kept:.2f} dB on the calibration samples, against {full:.2f} dB with Q/DQ around every op" in text
    )
    again = tmp_path / "again.onnx"
    from quantkit import pipeline

    pipeline.convert(
        tmp_path / "model.onnx", tmp_path / "model.calib.json", again, ConvertConfig(prefer=Prefer.accuracy)
    )
    assert again.read_bytes() == out.read_bytes()
    assert output_sqnr(tmp_path / "model.onnx", out, image_dir) > 40.0


def test_a_conv_model_never_tries_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import tiny_cnn

    timed = _stub_timing(monkeypatch, plain=1.25, placed=0.5)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(4):
        Image.fromarray(rng(i).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(images / f"{i}.png")
    model = onnx.load(str(tiny_cnn(tmp_path / "cnn.onnx")))
    summary, _ = quantize(model, tmp_path, images)
    assert timed == [] and summary.speed_plan is None


def test_the_kept_placement_is_recalled_with_the_same_bytes(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(speed_memory.ENV, str(tmp_path / "memory"))
    timed = _stub_timing(monkeypatch, plain=1.25, placed=0.9)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, first = quantize(_attention_like(), tmp_path / "a", image_dir)
    summary, again = quantize(_attention_like(), tmp_path / "b", image_dir)
    assert timed == [3]  # the second convert timed nothing
    assert summary.speed_plan is not None and summary.speed_plan.recalled is not None
    assert summary.speed_plan.placement == speed_refine.INPUTS
    graphs = [onnx.load(str(p)).graph.SerializeToString(deterministic=True) for p in (first, again)]
    assert graphs[0] == graphs[1]


@pytest.mark.parametrize(
    ("ratios", "scores", "sizes", "expected"),
    [
        # the fastest plan stores float weights (400 of FP32's 420): an int8 one as fast as FP32 replaces it
        ([0.80, 1.10, 1.03], [29.0, 60.0, 35.0], [150, 400, 140], (2, None)),
        # ... not where it runs slower than FP32
        ([0.80, 1.10, 0.98], [29.0, 60.0, 35.0], [150, 400, 140], (1, None)),
        # ... nor where it is less accurate than the plain plan
        ([0.80, 1.10, 1.03], [29.0, 60.0, 28.0], [150, 400, 140], (1, None)),
        # the fastest stores int8 weights: the rule does not apply
        ([0.80, 1.10, 1.03], [29.0, 60.0, 35.0], [150, 300, 140], (1, None)),
        # of two int8 plans as fast as FP32, the most accurate within CONFIRM of the faster
        ([0.80, 1.10, 1.03, 1.04], [29.0, 60.0, 35.0, 33.0], [150, 400, 140, 150], (2, None)),
        ([0.80, 1.10, 1.03, 1.10], [29.0, 60.0, 35.0, 33.0], [150, 400, 140, 150], (3, None)),
        # the plain plan kept (the INT8 model asked for, however large a tiny model's is): it stands
        ([1.20, 1.00, 1.03], [29.0, 30.0, 35.0], [400, 400, 140], (0, None)),
    ],
)
def test_an_int8_convert_keeps_int8_weights_where_they_run_as_fast_as_fp32(
    ratios: list[float], scores: list[float], sizes: list[int], expected: tuple[int, object]
) -> None:
    assert speed_refine.chosen(ratios, scores.__getitem__, sizes, 420) == expected


def test_the_summary_says_where_the_q_dq_pairs_are() -> None:
    import dataclasses

    from quantkit.outcomes import SpeedPlan
    from quantkit.reports import console
    from tests.test_golden import _render, _summary

    placed = SpeedPlan((), 0.79, 1.06, placement=speed_refine.INPUTS)
    text = _render(console.convert_table(dataclasses.replace(_summary(), speed_plan=placed), "m.onnx"), 200)
    assert (
        "speed on this CPU: Q/DQ on the inputs of weighted layers only, every op between them float "
        "(inputs-only: 0.79x -> 1.06x FP32; 1 thread" in text
    )
    tried = SpeedPlan((), 1.25, None, placement=speed_refine.INPUTS)
    text = _render(console.convert_table(dataclasses.replace(_summary(), speed_plan=tried), "m.onnx"), 200)
    assert "Q/DQ on the inputs of weighted layers only was tried, not faster as a whole (1.25x FP32" in text
