"""Error-compensating weight rounding: the math against round-to-nearest and the Conv definition, and
convert's --rounding end to end (integers on the same grid, measured at the output, off by option)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quantkit import pipeline
from quantkit.calib.table import load
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection, PreprocessOptions, Rounding
from quantkit.graph.qdq import apply_plan
from quantkit.graph.query import GraphIndex
from quantkit.pipeline.loading import load_for_int8
from quantkit.planner import plan, rounding_plan
from quantkit.qmath.rounding import (
    MAX_POSITIONS,
    compensated_round,
    conv_rows,
    matmul_rows,
    output_error,
    position_spacing,
    second_moment_update,
)
from tests.conftest import conv_params, make_model

N = helper.make_node


def _correlated(groups: int, rows: int, k: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    mix = g.normal(size=(k, k)) * 0.5 + np.eye(k)
    return g.normal(size=(groups, rows, k)) @ mix


def _nearest(w: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    return np.clip(np.rint(w / scale[:, :, None]), -qmax, qmax)


@pytest.mark.parametrize("qmax", [63, 127])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compensated_rounding_lowers_the_output_error_on_correlated_inputs(qmax: int, seed: int) -> None:
    g = np.random.default_rng(seed)
    x = _correlated(2, 600, 40, seed)
    w = g.normal(size=(2, 12, 40))
    h = np.zeros((2, 40, 40))
    second_moment_update(h, x)
    scale = (np.abs(w).max(axis=2) / qmax).astype(np.float32)
    q = compensated_round(w, h, scale, qmax)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert np.abs(q.astype(int)).max() <= qmax
    nearest = output_error(w, _nearest(w, scale, qmax) * scale[:, :, None], h)
    chosen = output_error(w, q * scale[:, :, None], h)
    assert chosen < 0.8 * nearest
    # the error is what the layer's output shows on the inputs H came from
    direct = sum(np.sum((x[i] @ (q[i] * scale[i][:, None] - w[i]).T) ** 2) for i in range(2))
    assert direct == pytest.approx(chosen, rel=1e-6)


def test_the_inverse_factor_is_upper_triangular_and_gives_the_inverse() -> None:
    from quantkit.qmath.rounding import _inverse_cholesky_upper

    rows = np.random.default_rng(5).normal(size=(3, 200, 40))
    h = rows.transpose(0, 2, 1) @ rows + 0.1 * np.eye(40)
    upper = _inverse_cholesky_upper(h)
    assert np.array_equal(upper, np.triu(upper)) and (np.diagonal(upper, axis1=1, axis2=2) > 0).all()
    np.testing.assert_allclose(upper.transpose(0, 2, 1) @ upper, np.linalg.inv(h), rtol=1e-9, atol=1e-12)


def test_uncorrelated_inputs_round_to_nearest() -> None:
    """With a diagonal H no column can compensate another: the integers are round-to-nearest's."""
    g = np.random.default_rng(3)
    w = g.normal(size=(1, 8, 30))
    h = np.diag(g.uniform(0.5, 2.0, 30))[None]
    scale = (np.abs(w).max(axis=2) / 127).astype(np.float32)
    assert np.array_equal(compensated_round(w, h, scale, 127), _nearest(w, scale, 127))


def test_inputs_never_seen_keep_nearest() -> None:
    """Columns whose input was always 0 (H diagonal 0) learn nothing: nearest, and no NaN anywhere."""
    g = np.random.default_rng(4)
    x = _correlated(1, 300, 20, 4)
    x[:, :, 5] = 0.0
    w = g.normal(size=(1, 6, 20))
    h = np.zeros((1, 20, 20))
    second_moment_update(h, x)
    scale = (np.abs(w).max(axis=2) / 63).astype(np.float32)
    q = compensated_round(w, h, scale, 63)
    assert np.array_equal(q[:, :, 5], _nearest(w, scale, 63)[:, :, 5])


def test_a_solve_that_breaks_down_rounds_to_nearest() -> None:
    """An H of NaN (inputs whose squares overflowed) gave integers from NaN casts: nearest instead."""
    g = np.random.default_rng(5)
    w = g.normal(size=(1, 4, 9))
    scale = (np.abs(w).max(axis=2) / 127).astype(np.float32)
    with np.errstate(all="ignore"):
        q = compensated_round(w, np.full((1, 9, 9), np.nan), scale, 127)
    assert np.array_equal(q, _nearest(w, scale, 127))


def test_inputs_past_float32s_squares_round_to_nearest_without_a_word(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq103 F6: std=1e-30 (accepted) fed inputs near 1e32; their squares overflowed and convert printed
    numpy's RuntimeWarnings (overflow in matmul, divide by zero, invalid cast) from library code."""
    import warnings

    src = tmp_path / "m.onnx"
    onnx.save(_wide_cnn(), src)
    table = tmp_path / "t.calib.json"
    pipeline.calibrate(src, table, CalibrateConfig(ImageSelection(image_dir), PreprocessOptions(std=[1e-30])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        summary = pipeline.convert(src, table, tmp_path / "q.onnx", ConvertConfig())
    assert summary.plan.rounded == {}  # nothing learnt: nearest


@pytest.mark.parametrize(
    ("c_in", "c_out", "group", "kernel", "strides", "pads", "dilations"),
    [
        (4, 6, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        (6, 6, 6, (3, 3), (2, 2), (0, 1, 1, 0), (1, 1)),
        (4, 8, 2, (3, 2), (1, 2), (1, 0, 2, 1), (2, 1)),
        (3, 5, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ],
)
def test_conv_rows_times_the_weight_is_the_conv(
    c_in: int,
    c_out: int,
    group: int,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
) -> None:
    g = np.random.default_rng(5)
    x = g.normal(size=(2, c_in, 9, 8)).astype(np.float32)
    w = g.normal(size=(c_out, c_in // group, *kernel)).astype(np.float32)
    node = N("Conv", ["x", "w"], ["y"], strides=strides, pads=pads, dilations=dilations, group=group)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("x", "w")],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    expected = ReferenceEvaluator(model).run(None, {"x": x, "w": w})[0]
    rows = conv_rows(x, kernel, strides, pads, dilations, group)  # [G, N*Ho*Wo, K]
    per_group = np.einsum("gpk,gok->gpo", rows, w.reshape(group, c_out // group, -1))
    n, _, ho, wo = expected.shape
    got = per_group.reshape(group, n, ho, wo, c_out // group).transpose(1, 0, 4, 2, 3)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-4)
    assert matmul_rows(x.transpose(0, 2, 3, 1)).shape == (1, n * 9 * 8, c_in)
    # at most `most` positions an image: every s-th row and column of the output grid, the same rows
    spacing = position_spacing(ho * wo, most=ho * wo // 4)
    assert spacing == 2
    strided = conv_rows(x, kernel, strides, pads, dilations, group, most=ho * wo // 4)
    full = rows.reshape(group, n, ho, wo, -1)[:, :, ::2, ::2].reshape(group, -1, rows.shape[-1])
    np.testing.assert_array_equal(strided, full)
    assert conv_rows(x, kernel, strides, pads, dilations, group, most=ho * wo).shape == rows.shape


def test_position_spacing_leaves_at_most_about_the_cap() -> None:
    assert position_spacing(128 * 128) == 1  # a 224x224 model's 112x112 layers: every position
    assert position_spacing(160 * 160) == 2  # 80x80 of them
    assert position_spacing(320 * 320) == 3  # 107x107
    assert [position_spacing(p, most=100) for p in (1, 100, 101, 400, 401, 10_000)] == [1, 1, 2, 2, 3, 10]


def _wide_cnn() -> onnx.ModelProto:
    """Conv 3->16 3x3, Relu, Conv 16->16 3x3 (inputs with correlated neighbours), Relu, Conv 16->16 1x1,
    GlobalAveragePool, Flatten, Gemm 16->4 (one row per sample)."""
    inits = {}
    for name, (c_out, c_in, k, seed) in {
        "c1": (16, 3, 3, 1),
        "c2": (16, 16, 3, 2),
        "c3": (16, 16, 1, 3),
    }.items():
        p = conv_params(c_out, c_in, k, seed=seed)
        inits[f"{name}_w"], inits[f"{name}_b"] = p["w"], p["b"]
    nodes = [
        N("Conv", ["x", "c1_w", "c1_b"], ["a"], name="c1", pads=[1] * 4),
        N("Relu", ["a"], ["ra"], name="r1"),
        N("Conv", ["ra", "c2_w", "c2_b"], ["b"], name="c2", pads=[1] * 4),
        N("Relu", ["b"], ["rb"], name="r2"),
        N("Conv", ["rb", "c3_w", "c3_b"], ["c"], name="c3"),
        N("GlobalAveragePool", ["c"], ["p"], name="gap"),
        N("Flatten", ["p"], ["f"], name="flat"),
        N("Gemm", ["f", "fc_w", "fc_b"], ["h"], name="fc", transB=1),
        N("Relu", ["h"], ["y"], name="r3"),
    ]
    g = np.random.default_rng(6)
    inits["fc_w"] = g.normal(0, 0.3, (4, 16)).astype(np.float32)
    inits["fc_b"] = g.normal(0, 0.1, 4).astype(np.float32)
    return make_model(nodes, inits)


def _table(tmp_path: Path, images: Path) -> tuple[Path, Path]:
    src = tmp_path / "model.onnx"
    onnx.save(_wide_cnn(), src)
    table = tmp_path / "model.calib.json"
    pipeline.calibrate(src, table, CalibrateConfig(images=ImageSelection(images)))
    return src, table


def _weights(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(path)
    return {
        t.name: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    }


def test_convert_rounds_for_the_output_and_says_so(tmp_path: Path, image_dir: Path) -> None:
    src, table = _table(tmp_path, image_dir)
    nearest = pipeline.convert(src, table, tmp_path / "n.onnx", ConvertConfig(rounding=Rounding.nearest))
    chosen = pipeline.convert(src, table, tmp_path / "c.onnx", ConvertConfig())
    c = chosen.corrections
    assert c is not None and c.sqnr_nearest_db is not None and c.sqnr_rounded_db is not None
    assert c.rounded_layers == len(chosen.plan.rounded) > 0
    assert c.sqnr_rounded_db >= c.sqnr_nearest_db
    assert chosen.smoke_sqnr_db["y"] == pytest.approx(c.sqnr_rounded_db, abs=0.05)
    assert nearest.plan.rounded == {} and nearest.corrections is not None
    assert nearest.corrections.sqnr_rounded_db is None
    before, after = _weights(tmp_path / "n.onnx"), _weights(tmp_path / "c.onnx")
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    for k in before:  # same grid: an integer moves by a step or two, never across the range
        assert np.abs(before[k].astype(int) - after[k].astype(int)).max() <= 3
    assert onnx.load(tmp_path / "c.onnx").metadata_props  # stamped like any conversion
    record = {p.key: p.value for p in onnx.load(tmp_path / "c.onnx").metadata_props}
    assert '"rounded_layers": ' + str(c.rounded_layers) in next(
        v for k, v in record.items() if k.endswith("conversion")
    )


def test_layers_that_saw_fewer_rows_than_inputs_round_to_nearest(tmp_path: Path, image_dir: Path) -> None:
    """A second moment from fewer rows than input columns is singular: such a layer is left out (the
    Gemm sees one row per sample: 8 samples for 16 inputs; with 64, 4 rows per input, it is rounded)."""
    src, table_path = _table(tmp_path, image_dir)
    model = load_for_int8(src, table_path)[2].model
    table = load(table_path)
    assert table.samples is not None and len(table.samples) == 8
    base = plan(model, table, ConvertConfig())
    assert "fc" in base.quantized_nodes
    assert set(rounding_plan.compensated(model, base, table.samples)) == {"c1", "c2", "c3"}
    more = np.concatenate([table.samples] * 8)
    assert set(rounding_plan.compensated(model, base, more)) == {"c1", "c2", "c3", "fc"}
    # the few rows show on the first batch: the Gemm's [1, K, K] moment is never held (a VGG16's first
    # Gemm, K = 25088, allocated 5 GB for 8 rows)
    index = GraphIndex(model)
    layers = rounding_plan._layers(index, base)
    quantized = apply_plan(model, base)
    feeds = {n.name: n.input[0] for n in quantized.graph.node if n.name in layers}
    moments, rows = rounding_plan._moments(quantized, index, layers, feeds, table.samples)
    assert rows["fc"] == 8 and "fc" not in moments and {"c1", "c2", "c3"} <= moments.keys()


def test_a_kept_float_layer_has_no_integers(tmp_path: Path, image_dir: Path) -> None:
    src, table_path = _table(tmp_path, image_dir)
    model = load_for_int8(src, table_path)[2].model
    table = load(table_path)
    assert table.samples is not None
    base = plan(model, table, ConvertConfig())
    rounded = rounding_plan.compensated(model, base, table.samples)
    trial = plan(model, table, ConvertConfig(), keep_float={"c2": "measuring"}, rounded=rounded)
    assert "c2" not in trial.quantized_nodes and "c3" in trial.quantized_nodes
    assert set(trial.rounded) == set(rounded) & set(trial.quantized_nodes)


def test_a_budget_trial_solves_its_integers_for_its_own_inputs(tmp_path: Path, image_dir: Path) -> None:
    """--max-drop's trials: with c2 float, c3's input carries less noise than in the all-INT8 plan, so
    its integers are solved again on what this trial feeds it (SqueezeNet, --max-drop 1 on agreement:
    13 float layers at a 0.8-point drop against 17 at 1.0 with the shared integers)."""
    src, table_path = _table(tmp_path, image_dir)
    model = load_for_int8(src, table_path)[2].model
    table = load(table_path)
    assert table.samples is not None
    config = ConvertConfig()
    shared = rounding_plan.compensated(model, plan(model, table, config), table.samples)
    keep = {"c2": "kept float by --max-drop"}
    trial = rounding_plan.replanned(model, table, config, keep, {}, None, shared)
    alone = plan(model, table, config, keep_float=keep)
    assert trial.rounded.keys() == {"c3"}  # c1 writes c2's float input: float too on onnxruntime
    for name, q in rounding_plan.compensated(model, alone, table.samples).items():
        np.testing.assert_array_equal(trial.rounded[name], q)
    assert not np.array_equal(trial.rounded["c3"], shared["c3"])  # c3 now reads c2's float output
    # nothing float, or nearest rounding chosen for the model: the shared integers as they are
    assert rounding_plan.replanned(model, table, config, {}, {}, None, shared).rounded.keys() == shared.keys()
    assert rounding_plan.replanned(model, table, config, keep, {}, None, {}).rounded == {}


def test_moments_past_the_budget_thin_the_positions_then_leave_the_costliest_to_nearest(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """U^2-Net-p's moments at 320x320 cost 608 G multiply-adds (36 s a solve here). Costs are per layer
    and per sample (G K^2 a position); past the budget a Conv takes fewer positions, and where even the
    fewest pass it the costliest layers round to nearest."""
    from quantkit.planner import rounding_budget as budget

    src, table_path = _table(tmp_path, image_dir)
    model = load_for_int8(src, table_path)[2].model
    table = load(table_path)
    assert table.samples is not None
    base = plan(model, table, ConvertConfig())
    layers = rounding_plan._layers(GraphIndex(model), base)
    costs = budget.costs(
        model, {n: (layer.groups, layer.columns) for n, layer in layers.items()}, table.samples
    )
    side = table.samples.shape[2:]
    bytes_a = 16 * side[0] * side[1] * 4  # c2 reads c1's 16 channels
    assert costs["c2"] == budget.MomentCost((16 * 9) ** 2, grid=(side[0], side[1]), input_bytes=bytes_a)
    assert costs["fc"] == budget.MomentCost(16 * 16, rows=1, input_bytes=16 * 4)
    # inputs past RUN_BYTES a run are read in another pass (czann's 95 layers read 861 MB a sample)
    sizes = {name: c.input_bytes for name, c in costs.items()}
    assert rounding_plan._chunks(layers, sizes) == [["c1", "c2", "c3", "fc"]]
    monkeypatch.setattr(rounding_plan, "RUN_BYTES", (sizes["c1"] or 0) + bytes_a)
    assert rounding_plan._chunks(layers, sizes) == [["c1", "c2"], ["c3", "fc"]]
    assert budget.within(costs, 8) == (MAX_POSITIONS, set())
    # a 320x320 layer of K = 1152 and a MatMul: thinning the Conv's grid does it, down to 64x64
    wide = {"up": budget.MomentCost(1152**2, grid=(320, 320)), "mm": budget.MomentCost(4096, rows=100)}
    assert wide["up"].macs(MAX_POSITIONS) == 107 * 107 * 1152**2  # every 3rd row and column
    most, skipped = budget.within(wide, 8, 8 * (70 * 70 * 1152**2 + 100 * 4096))
    assert (most, skipped) == (MAX_POSITIONS // 4, set()) and wide["up"].macs(most) == 64 * 64 * 1152**2
    assert budget.within(wide, 8, 8 * 1000 * 1152**2) == (budget.MIN_POSITIONS, {"up"})  # 32x32 too many
    assert budget.within(costs, 8, 8 * costs["fc"].macs(0)) == (budget.MIN_POSITIONS, {"c1", "c2", "c3"})
    more = np.concatenate([table.samples] * 8)  # 64 rows for the Gemm's 16 columns: it rounds
    monkeypatch.setattr(budget.within, "__defaults__", (64 * costs["fc"].macs(0),))
    assert set(rounding_plan.compensated(model, base, more)) == {"fc"}
