"""Quantization math: properties, and agreement with onnx.reference's QuantizeLinear/DequantizeLinear."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from quantkit.qmath.histogram import grid_counts, grid_for, regrid
from quantkit.qmath.params import (
    QRANGE,
    asymmetric_params,
    bias_int32,
    dequantize,
    per_channel_weight,
    quantize,
    symmetric_params,
)

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@given(lo=finite, hi=finite)
def test_asymmetric_params_scale_positive_zero_point_in_range_zero_exact(lo: float, hi: float) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    scale, zp = asymmetric_params(lo, hi, "uint8")
    assert scale > 0
    assert 0 <= zp <= 255
    zero = quantize(np.zeros(1, np.float32), scale, np.asarray(zp, np.uint8), "uint8")
    assert dequantize(zero, scale, np.asarray(zp, np.uint8))[0] == 0.0


def test_min_equal_max_gives_scale_one() -> None:
    assert asymmetric_params(0.0, 0.0)[0] == 1.0
    assert symmetric_params(np.zeros(3)).tolist() == [1.0, 1.0, 1.0]


@settings(max_examples=60)
@given(x=arrays(np.float32, st.integers(1, 64), elements=st.floats(-50, 50, width=32)))
def test_round_trip_within_half_a_step(x: np.ndarray) -> None:
    scale, zp = asymmetric_params(float(x.min()), float(x.max()), "uint8")
    q = quantize(x, scale, np.asarray(zp, np.uint8), "uint8")
    back = dequantize(q, scale, np.asarray(zp, np.uint8))
    assert np.all(np.abs(back - x) <= scale / 2 + 1e-5 * max(1.0, float(np.abs(x).max())))


def _reference_qdq(
    x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None
) -> tuple[np.ndarray, np.ndarray]:
    attrs = {} if axis is None else {"axis": axis}
    elem = helper.np_dtype_to_tensor_dtype(zp.dtype)
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [
            helper.make_tensor_value_info("q", elem, list(x.shape)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape)),
        ],
        [onnx.numpy_helper.from_array(scale, "s"), onnx.numpy_helper.from_array(zp, "z")],
    )
    # onnx.reference implements Q/DQ from opset 19 on; their uint8/int8 semantics are those of opset 13
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    q, y = ReferenceEvaluator(model).run(None, {"x": x})
    return q, y


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float32, (2, 3, 4), elements=st.floats(-30, 30, width=32)),
    lo=st.floats(-20, 0, width=32),
    hi=st.floats(0.0625, 20, width=32),
)
def test_per_tensor_matches_onnx_reference(x: np.ndarray, lo: float, hi: float) -> None:
    scale, zp = asymmetric_params(lo, hi, "uint8")
    s, z = np.asarray(scale, np.float32), np.asarray(zp, np.uint8)
    ref_q, ref_y = _reference_qdq(x, s, z, None)
    ours = quantize(x, s, z, "uint8")
    np.testing.assert_array_equal(ours, ref_q)  # rounding half to even and saturation, bit for bit
    np.testing.assert_array_equal(dequantize(ours, s, z), ref_y)


@settings(max_examples=30, deadline=None)
@given(w=arrays(np.float32, (4, 3, 2, 2), elements=st.floats(-5, 5, width=32)))
def test_per_channel_weights_match_onnx_reference(w: np.ndarray) -> None:
    q, scale = per_channel_weight(w, 0)
    zp = np.zeros(4, np.int8)
    assert q.dtype == np.int8 and scale.shape == (4,) and np.all(scale > 0)
    assert q.min() >= -127  # symmetric: -128 is never used
    ref_q, ref_y = _reference_qdq(w, scale, zp, 0)
    np.testing.assert_array_equal(q, ref_q)
    np.testing.assert_allclose(dequantize(q, scale, zp, 0), ref_y)
    step = scale.reshape(4, 1, 1, 1)
    assert np.all(np.abs(ref_y - w) <= step / 2 + 1e-6)


def test_half_to_even_rounding() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32)
    q = quantize(x, np.float32(1.0), np.asarray(0, np.int8), "int8")
    assert q.tolist() == [0, 2, 2, 0, -2]


def test_saturation() -> None:
    q = quantize(np.array([-1e9, 1e9], np.float32), np.float32(1.0), np.asarray(128, np.uint8), "uint8")
    assert q.tolist() == [0, 255]


def test_bias_scale_is_input_times_weight_scale() -> None:
    bias = np.array([0.5, -1.25, 3.0], np.float32)
    w_scale = np.array([0.01, 0.02, 0.04], np.float32)
    q, scale = bias_int32(bias, 0.1, w_scale)
    np.testing.assert_allclose(scale, 0.1 * w_scale, rtol=1e-6)
    assert q.dtype == np.int32
    np.testing.assert_allclose(q * scale, bias, atol=float(scale.max()) / 2)


def test_weight_zero_channel_gets_scale_one() -> None:
    w = np.zeros((2, 1, 1, 1), np.float32)
    w[1] = 3.0
    q, scale = per_channel_weight(w, 0)
    assert scale[0] == 1.0 and q[0].sum() == 0
    assert q[1].max() == 127


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(np.float32, 300, elements=st.floats(-1e4, 1e4, width=32)),
    cuts=st.lists(st.integers(0, 300), max_size=5),
    bins=st.sampled_from([2048, 3000, 4096]),
)
def test_grid_counts_merge_exactly_whatever_the_shards(
    values: np.ndarray, cuts: list[int], bins: int
) -> None:
    """Shards counted on their own grids and moved onto the union's grid give the counts of one pass,
    which are the exact floor((x - lo) / width) bins."""
    whole = grid_for(min(float(values.min()), 0.0), max(float(values.max()), 0.0), bins)
    direct, zeros = grid_counts(values, whole)
    assert zeros >= int(np.sum(values == 0))  # and positives that underflow float32 scaling
    edges = sorted({0, 300, *cuts})
    merged = np.zeros(bins, np.int64)
    for a, b in itertools.pairwise(edges):
        part = values[a:b]
        if part.size:
            grid = grid_for(min(float(part.min()), 0.0), max(float(part.max()), 0.0), bins)
            merged += regrid(grid_counts(part, grid)[0], grid, whole)
    np.testing.assert_array_equal(merged, direct)
    exact = (np.floor(values.astype(np.float64) / whole.width) + whole.offset).astype(np.int64)
    np.testing.assert_array_equal(direct, np.bincount(exact, minlength=bins))


def test_grid_for_is_the_smallest_aligned_grid_holding_the_values_strictly() -> None:
    grid = grid_for(0.0, 6.0, 2048)  # a Clip(0, 6) output: 2048 * 2**-8 = 8 > 6, 2048 * 2**-9 = 4
    assert (grid.step, grid.lo, grid.hi, grid.signed) == (-8, 0.0, 8.0, False)
    top = grid_for(0.0, 1.0, 2048)  # a Sigmoid's 1.0 must not sit on the top edge
    assert top.hi == 2.0 and grid_counts(np.ones(3, np.float32), top)[0][1024] == 3
    signed = grid_for(-0.5, 3.0, 2048)
    assert signed.lo == -signed.hi and signed.hi > 3.0 >= signed.hi / 2 and signed.offset == 1024
    assert grid_for(0.0, 0.0, 2048).lo == 0.0
    with pytest.raises(ValueError, match="coarser"):
        regrid(np.zeros(2048, np.int64), grid, top)


def test_qranges() -> None:
    assert QRANGE["uint8"] == (0, 255) and QRANGE["int8"] == (-128, 127)


def test_sample_strides_are_primes_that_sample_about_the_budget_per_image() -> None:
    from quantkit.qmath.histogram import SAMPLES_PER_IMAGE, sample_stride

    per_image = 256 * 56 * 56  # 803k values
    stride = sample_stride(2 * per_image, 2)
    assert stride == 197  # the first prime at or past 802,816 / 4096 = 196
    assert 0.9 * SAMPLES_PER_IMAGE <= per_image / stride <= SAMPLES_PER_IMAGE
    assert sample_stride(2 * 100, 2) == 1  # small tensors: every value
    assert sample_stride(2 * 3 * SAMPLES_PER_IMAGE, 2) == 3


def _heavy_tailed(rng: np.random.Generator, size: int) -> np.ndarray:
    """An asymmetric activation: most values small and positive, a long tail each way."""
    body = np.maximum(rng.standard_normal(size), -0.2)
    spikes = rng.standard_t(2, size) * (rng.random(size) < 0.002)
    return (body + 3 * spikes - 4 * (rng.random(size) < 0.001)).astype(np.float32)


def _observed(x: np.ndarray) -> tuple[np.ndarray, int]:
    """x's histogram (and zeros) as calibration records it, x seen as one image."""
    from quantkit.calib.observers import TensorObserver

    observer = TensorObserver(2048)
    observer.update(x)
    stats = observer.result()
    assert stats.count == x.size
    return stats.hist, stats.zeros


def test_the_tail_is_counted_exactly_on_both_sides_and_the_body_is_unbiased() -> None:
    from quantkit.qmath.histogram import TAIL_SHARE, sample_stride, tails_of

    x = _heavy_tailed(np.random.default_rng(0), 400_000)
    grid = grid_for(float(x.min()), float(x.max()), 2048)
    exact, _ = grid_counts(x, grid)
    sample = x[:: sample_stride(x.size)]
    lows, highs, middle, tail = tails_of(x[None], sample[None], nonnegative=False)
    low, high = float(lows[0]), float(highs[0])
    assert low < 0 < high and np.array_equal(middle, sample[(sample >= low) & (sample <= high)])
    assert np.array_equal(np.sort(tail), np.sort(x[(x < low) | (x > high)]))  # every tail value, once
    assert 0.5 * x.size / TAIL_SHARE < tail.size < 4 * x.size / TAIL_SHARE
    counts, zeros = _observed(x)
    edges = grid.lo + grid.width * np.arange(grid.bins + 1)
    outside = (edges[1:] <= low) | (edges[:-1] > high)  # bins wholly in the tail: exact
    assert outside.sum() > 10 and np.array_equal(counts[outside], exact[outside])
    assert abs(int(counts.sum()) - x.size) < 0.01 * x.size and zeros == 0
    relu = np.maximum(x, 0)
    counts, zeros = _observed(relu)
    assert abs(zeros - int((relu == 0).sum())) < 0.05 * zeros  # the zeros of the sample, weighted
    small = x[:3000]  # under the sample budget: every value binned once
    assert np.array_equal(
        _observed(small)[0], grid_counts(small, grid_for(float(small.min()), float(small.max()), 2048))[0]
    )


def test_sampled_histograms_choose_the_ranges_of_the_full_ones() -> None:
    from quantkit.qmath.range_math import mse_range

    rng = np.random.default_rng(1)
    for x in (_heavy_tailed(rng, 600_000), np.maximum(_heavy_tailed(rng, 600_000), 0)):
        grid = grid_for(min(float(x.min()), 0.0), float(x.max()), 2048)
        lo, hi = mse_range(_observed(x)[0], grid.lo, grid.hi, "uint8")
        full_lo, full_hi = mse_range(grid_counts(x, grid)[0], grid.lo, grid.hi, "uint8")
        width = full_hi - full_lo
        assert abs(hi - full_hi) <= 0.01 * width and abs(lo - full_lo) <= 0.01 * width


def test_any_grouping_of_batches_bins_the_same_counts() -> None:
    from quantkit.calib import observers

    rng = np.random.default_rng(2)
    batches = [_heavy_tailed(rng, 50_000).reshape(1, -1) * scale for scale in (1.0, 3.0, 0.5, 8.0)]
    results = []
    for pending in (1, observers.PENDING_VALUES, 1 << 30):
        original, observers.PENDING_VALUES = observers.PENDING_VALUES, pending
        try:
            observer = observers.TensorObserver(2048)
            for batch in batches:
                observer.update(batch)
            results.append(observer.result())
        finally:
            observers.PENDING_VALUES = original
    assert all(np.array_equal(r.hist, results[0].hist) and r.hist_hi == results[0].hist_hi for r in results)
    assert all(r.zeros == results[0].zeros and r.count == results[0].count for r in results)
