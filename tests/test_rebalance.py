"""Rebalancing keeps the FP32 function, pays where channels are unbalanced; bias correction; the
accuracy fallback keeps layers float until the output SQNR target is met."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit import pipeline
from quantkit.calib.table import load
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection
from quantkit.graph import model_io
from quantkit.graph.query import name_nodes, topological_order
from quantkit.graph.rebalance import apply_rebalances
from quantkit.planner import plan
from quantkit.qmath.smooth import rebalanced_range, smoothing_scales
from quantkit.runtime import Session
from tests.conftest import make_model
from tests.helpers import output_sqnr

N = helper.make_node


def unbalanced_model() -> onnx.ModelProto:
    """Conv -> ReLU -> depthwise Conv -> ReLU -> Conv, where the first conv's output channels span 1000x
    (as BatchNorm folding leaves them) and the depthwise weights compensate: per-tensor quantization of
    the middle activation starves the small channels."""
    g = np.random.default_rng(11)
    gains = np.array([300.0, 0.3, 100.0, 0.5, 50.0, 0.2, 1.0, 0.4], np.float32)
    w1 = g.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32) * gains[:, None, None, None]
    b1 = np.abs(g.normal(0, 0.1, 8)).astype(np.float32) * gains
    dw = g.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32) / gains[:, None, None, None]
    w3 = g.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1] * 4),
        N("Relu", ["a"], ["r1"], name="relu1"),
        N("Conv", ["r1", "dw", "bdw"], ["d"], name="dw", pads=[1] * 4, group=8),
        N("Relu", ["d"], ["r2"], name="relu2"),
        N("Conv", ["r2", "w3", "b3"], ["y"], name="c3"),
    ]
    inits = {
        "w1": w1,
        "b1": b1,
        "dw": dw,
        "bdw": np.zeros(8, np.float32),
        "w3": w3,
        "b3": np.zeros(4, np.float32),
    }
    return make_model(nodes, inits)


def calibrated(tmp: Path, model: onnx.ModelProto, images: Path) -> tuple[Path, Path]:
    src, table = tmp / "model.onnx", tmp / "model.calib.json"
    onnx.save(model, str(src))
    pipeline.calibrate(src, table, CalibrateConfig(images=ImageSelection(images)))
    return src, table


def test_smoothing_scales_equalise_and_keep_dead_channels() -> None:
    x = np.array([100.0, 1.0, 0.0])
    w = np.array([0.01, 1.0, 2.0])
    s = smoothing_scales(x, w, 0.5)
    assert s[2] == 1.0  # an all-zero channel is left alone
    np.testing.assert_allclose(x[:2] / s[:2], w[:2] * s[:2])  # alpha 0.5 meets in the middle
    assert rebalanced_range(np.array([0.0, -1.0]), np.array([100.0, 1.0]), np.array([100.0, 1.0])) == (
        -1.0,
        1.0,
    )


def test_rebalanced_float_graph_matches_the_original(tmp_path: Path, image_dir: Path) -> None:
    src, table = calibrated(tmp_path, unbalanced_model(), image_dir)
    model = model_io.infer_shapes(model_io.load_model(src))
    name_nodes(model)
    for setting in ("auto", "0.5"):
        decided = plan(model, load(table), ConvertConfig(smoothquant=setting))
        assert decided.rebalances, setting
        rebalanced = onnx.ModelProto()
        rebalanced.CopyFrom(model)
        apply_rebalances(rebalanced, decided.rebalances)
        ordered = topological_order(
            rebalanced.graph.node,
            [i.name for i in rebalanced.graph.input] + [t.name for t in rebalanced.graph.initializer],
        )
        del rebalanced.graph.node[:]
        rebalanced.graph.node.extend(ordered)
        samples = load(table).samples
        assert samples is not None
        a = Session(model_io.serialize(model)).run(samples)["y"]
        b = Session(model_io.serialize(rebalanced)).run(samples)["y"]
        assert np.max(np.abs(a - b)) / np.max(np.abs(a)) < 1e-4


def test_auto_rebalancing_folds_into_the_producer_and_pays(tmp_path: Path, image_dir: Path) -> None:
    src, table = calibrated(tmp_path, unbalanced_model(), image_dir)
    results = {}
    for setting in ("off", "auto"):
        out = tmp_path / f"{setting}.onnx"
        summary = pipeline.convert(
            src, table, out, ConvertConfig(smoothquant=setting, bias_correction=False, min_sqnr=0)
        )
        results[setting] = output_sqnr(src, out, image_dir)
        if setting == "auto":
            rebalance = next(r for r in summary.plan.rebalances if r.tensor == "r1")
            assert rebalance.producer == "c1" and rebalance.consumers == ("dw",)  # exact through ReLU
            assert all(r.producer is not None for r in summary.plan.rebalances)  # auto never inserts a Mul
    assert results["auto"] > results["off"] + 6.0, results


def test_fixed_alpha_inserts_a_float_mul_where_nothing_can_absorb(tmp_path: Path, image_dir: Path) -> None:
    model = unbalanced_model()
    model.graph.node[1].op_type = "Sigmoid"  # not scale-invariant: 1/s cannot fold into c1
    src, table = calibrated(
        tmp_path,
        make_model(
            list(model.graph.node), {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        ),
        image_dir,
    )
    out = tmp_path / "mul.onnx"
    summary = pipeline.convert(src, table, out, ConvertConfig(smoothquant="0.5", min_sqnr=0))
    mul = [r for r in summary.plan.rebalances if r.tensor == "r1"]
    assert mul and mul[0].producer is None
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Mul" in ops
    assert output_sqnr(src, out, image_dir) > 20


def test_bias_correction_removes_the_mean_shift(tmp_path: Path, image_dir: Path) -> None:
    g = np.random.default_rng(5)
    # few taps and coarse weights: rounding shifts each channel's mean noticeably
    w1 = g.normal(0, 1.0, (16, 3, 1, 1)).astype(np.float32)
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["a"], name="c1"),
        N("Relu", ["a"], ["r"], name="relu"),
        N("Conv", ["r", "w2", "b2"], ["y"], name="c2"),
    ]
    w2 = (g.normal(0, 1.0, (8, 16, 1, 1)) * np.array([1.0] * 15 + [40.0])[None, :, None, None]).astype(
        np.float32
    )
    inits = {"w1": w1, "b1": np.full(16, 2.0, np.float32), "w2": w2, "b2": np.zeros(8, np.float32)}
    src, table = calibrated(tmp_path, make_model(nodes, inits), image_dir)
    scores = {}
    for on in (False, True):
        out = tmp_path / f"bc{on}.onnx"
        summary = pipeline.convert(
            src, table, out, ConvertConfig(bias_correction=on, smoothquant="off", min_sqnr=0)
        )
        assert bool(summary.plan.input_means) is on
        scores[on] = output_sqnr(src, out, image_dir)
    assert scores[True] > scores[False], scores


def test_fallback_keeps_the_fewest_layers_float_to_reach_the_target(tmp_path: Path, image_dir: Path) -> None:
    src, table = calibrated(tmp_path, unbalanced_model(), image_dir)
    plain = pipeline.convert(
        src, table, tmp_path / "plain.onnx", ConvertConfig(smoothquant="off", min_sqnr=0)
    )
    start = plain.smoke_sqnr_db["y"]
    target = start + 10.0
    out = tmp_path / "fallback.onnx"
    summary = pipeline.convert(
        src, table, out, ConvertConfig(smoothquant="off", min_sqnr=target, max_float_layers=3)
    )
    assert summary.fallback_start_db == pytest.approx(start, abs=0.5)
    assert 1 <= len(summary.fallback) <= 3
    assert summary.fallback[-1].sqnr_db >= target or len(summary.fallback) == 3
    kept = {s.node for s in summary.fallback}
    reasons = {r for (op, r) in summary.float_by_reason if op == "Conv"}
    assert any("--min-sqnr" in r for r in reasons) and kept <= {"c1", "dw", "c3"}
