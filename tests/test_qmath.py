"""Quantization math: properties, and agreement with onnx.reference's QuantizeLinear/DequantizeLinear."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from quantkit.qmath.histogram import grown_range, histogram_counts, rebin
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


@settings(max_examples=40)
@given(
    counts=arrays(np.int64, 64, elements=st.integers(0, 1000)),
    grow_lo=st.floats(0, 10),
    grow_hi=st.floats(0, 10),
)
def test_rebin_preserves_mass_and_cdf(counts: np.ndarray, grow_lo: float, grow_hi: float) -> None:
    out = rebin(counts, -1.0, 2.0, -1.0 - grow_lo, 2.0 + grow_hi)
    assert out.sum() == np.float64(counts.sum()) or abs(out.sum() - counts.sum()) < 1e-6 * max(
        1, counts.sum()
    )
    assert np.all(out >= 0)


def test_grown_range_doubles_so_creeping_ranges_rebin_rarely() -> None:
    lo, hi = 0.0, 1.0
    rebins = 0
    for top in np.linspace(1.01, 100, 1000):
        if top > hi:
            lo, hi = grown_range(lo, hi, 0.0, float(top))
            rebins += 1
    assert hi >= 100 and rebins <= 8


def test_histogram_counts_all_values() -> None:
    x = np.linspace(-1, 1, 1001)
    counts = histogram_counts(x, -1.0, 1.0, 2048)
    assert counts.sum() == 1001 and counts[0] == 1 and counts[-1] == 1


def test_qranges() -> None:
    assert QRANGE["uint8"] == (0, 255) and QRANGE["int8"] == (-128, 127)
