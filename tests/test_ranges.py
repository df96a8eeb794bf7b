"""Range selection from histograms: each method does what it says on known distributions."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.calib.observers import TensorObserver
from quantkit.config import CalibMethod, ConvertConfig
from quantkit.graph.query import GraphIndex
from quantkit.planner.range_plan import (
    SURE_LOGIT,
    HardActivation,
    becomes_probability,
    capped,
    hard_consumer,
    is_bounded,
    range_stats,
    saturated_outside,
    select_range,
)
from quantkit.qmath.range_math import (
    entropy_range,
    minmax_range,
    mse_range,
    percentile_range,
    silu,
    without_zeros,
)
from quantkit.results import CalibrationTable, TensorStats
from tests.conftest import conv_params, make_model


def stats_of(x: np.ndarray) -> TensorStats:
    """Statistics of x seen as 100 images' worth of values: every value is binned (observers sample
    about 2**15 values per image of a larger tensor), so the tests see the range math alone."""
    observer = TensorObserver(2048)
    observer.update(x.astype(np.float32).reshape(100, -1) if x.size % 100 == 0 else x.astype(np.float32))
    return observer.result()


@pytest.fixture(scope="module")
def gauss() -> TensorStats:
    return stats_of(np.random.default_rng(0).normal(0, 1, 400_000))


def test_minmax_is_the_observed_range_widened_to_zero() -> None:
    assert minmax_range(1.0, 5.0) == (0.0, 5.0)
    assert minmax_range(-3.0, -1.0) == (-3.0, 0.0)


def test_percentile_matches_quantiles(gauss: TensorStats) -> None:
    lo, hi = percentile_range(gauss.hist, gauss.hist_lo, gauss.hist_hi, 99.0)
    # 0.5% in each tail of a standard normal: +-2.576
    assert lo == pytest.approx(-2.576, abs=0.03) and hi == pytest.approx(2.576, abs=0.03)


def test_percentile_of_non_negative_data_cuts_only_the_top() -> None:
    s = stats_of(np.abs(np.random.default_rng(1).normal(0, 1, 200_000)))
    lo, hi = percentile_range(s.hist, s.hist_lo, s.hist_hi, 99.0)
    assert lo == 0.0 and hi == pytest.approx(2.576, abs=0.03)


def test_entropy_keeps_most_of_a_clean_gaussian(gauss: TensorStats) -> None:
    lo, hi = entropy_range(gauss.hist, gauss.hist_lo, gauss.hist_hi, "uint8")
    # with 128 levels per side, KL keeps a clean Gaussian's tails: threshold above 3.5 sigma
    assert 3.5 < hi <= gauss.maximum and lo == max(gauss.hist_lo, -hi)


def test_entropy_clips_a_lone_outlier() -> None:
    x = np.r_[np.random.default_rng(2).laplace(0, 1, 200_000), [60.0]]
    s = stats_of(x)
    _, hi = entropy_range(s.hist, s.hist_lo, s.hist_hi)
    assert hi < 20.0 and s.maximum == pytest.approx(60.0)


def test_entropy_on_the_largest_histogram_takes_what_the_default_one_does() -> None:
    """hq132 F3: a table calibrated with --bins 2**20 (accepted) made --method entropy run for hours a tensor,
    its search quadratic in the bins. It searches at most ENTROPY_BINS of |x|, re-binned exactly."""
    x = np.random.default_rng(2).laplace(0, 1, 200_000).astype(np.float32)
    small, large = TensorObserver(2048), TensorObserver(2**20)
    for observer in (small, large):
        observer.update(x.reshape(100, -1))
    coarse, fine = small.result(), large.result()
    _, hi_fine = entropy_range(fine.hist, fine.hist_lo, fine.hist_hi)  # hours a tensor before
    _, hi_coarse = entropy_range(coarse.hist, coarse.hist_lo, coarse.hist_hi)
    assert 0.8 * hi_coarse < hi_fine < 1.25 * hi_coarse  # 12.05 and 10.33 here: the grids differ


def test_exact_zeros_do_not_drag_the_entropy_threshold_down() -> None:
    g = np.random.default_rng(3)
    relu = np.maximum(g.normal(0, 1, 300_000), 0.0)  # half exact zeros
    s = stats_of(relu)
    assert s.zeros > 0.47 * s.hist.sum() and s.count == 300_000  # zeros among the values sampled
    with_spike = entropy_range(s.hist, s.hist_lo, s.hist_hi)[1]
    without_spike = entropy_range(without_zeros(s.hist, s.hist_lo, s.hist_hi, s.zeros), s.hist_lo, s.hist_hi)[
        1
    ]
    assert without_spike > 1.5 * with_spike and without_spike > 2.5


def test_mse_searches_each_end_on_its_own() -> None:
    g = np.random.default_rng(4)
    x = np.r_[g.laplace(0, 1, 200_000), [40.0]]  # one far outlier on the positive side only
    s = stats_of(x)
    lo, hi = mse_range(s.hist, s.hist_lo, s.hist_hi)
    assert -12 < lo < -5  # the negative side keeps its own (short) tail
    assert hi < 40


def test_mse_after_silu_ignores_the_flat_negative_side() -> None:
    x = np.random.default_rng(5).normal(-20, 15, 200_000)
    s = stats_of(x)
    plain = mse_range(s.hist, s.hist_lo, s.hist_hi)
    after = mse_range(s.hist, s.hist_lo, s.hist_hi, transform=silu)
    assert plain[0] < -50 and after[0] > -12  # SiLU is ~0 below -10: no range is spent there
    assert after[1] >= plain[1] * 0.9


@pytest.mark.parametrize("transform", [None, "silu", "sigmoid"])
def test_the_mse_errors_by_prefix_sums_are_those_of_each_candidate_range_directly(
    transform: str | None,
) -> None:
    """range_errors sums the error of every candidate range from prefix sums; here each candidate's
    clipping error and rounding noise are computed directly over the bins, as the search defines them."""
    from quantkit.qmath import range_math

    g = {None: lambda x: x, "silu": silu, "sigmoid": range_math.sigmoid}[transform]
    random = np.random.default_rng(3)
    edges = np.linspace(-3.0, 40.0, 2049)
    centres = (edges[:-1] + edges[1:]) / 2
    weights = random.poisson(random.exponential(4.0, 2048) * (random.random(2048) < 0.4)).astype(np.float64)
    half = (edges[1] - edges[0]) / 2
    slope2 = ((g(centres + half) - g(centres - half)) / (2 * half)) ** 2
    fractions = np.linspace(1.0, 1 / 200, 200)
    for los, his in ((np.full(200, -3.0), 40.0 * fractions), (-3.0 * fractions, np.full(200, 40.0))):
        clipped = np.clip(centres[None, :], los[:, None], his[:, None])
        clip = ((g(centres)[None, :] - g(clipped)) ** 2) @ weights
        within = (centres[None, :] >= los[:, None]) & (centres[None, :] <= his[:, None])
        step = (his - los) / 255
        direct = clip + (within @ (weights * slope2)) * step * step / 12.0
        fast = range_math.range_errors(centres, weights, slope2, g, los, his, 255)
        np.testing.assert_allclose(fast, direct, rtol=1e-9, atol=1e-12 * direct.max())
        assert np.argmin(fast) == np.argmin(direct)


def test_every_method_contains_zero_and_stays_inside_the_histogram(gauss: TensorStats) -> None:
    for lo, hi in (
        percentile_range(gauss.hist, gauss.hist_lo, gauss.hist_hi, 99.99),
        entropy_range(gauss.hist, gauss.hist_lo, gauss.hist_hi),
        mse_range(gauss.hist, gauss.hist_lo, gauss.hist_hi),
    ):
        assert lo <= 0.0 <= hi
        assert gauss.hist_lo - 1e-9 <= lo and hi <= gauss.hist_hi + 1e-9


def test_a_bounded_output_keeps_its_observed_range_under_every_method() -> None:
    # Scores: nearly all background (~0), a few detections near 1. Entropy would cut the detections off.
    g = np.random.default_rng(7)
    scores = np.concatenate([g.exponential(0.005, 200_000).clip(0, 0.02), g.uniform(0.5, 0.99, 50)])
    s = stats_of(scores)
    for method in CalibMethod:
        lo, hi = select_range(s, ConvertConfig(method=method), bounded=True)
        assert (lo, hi) == (0.0, pytest.approx(scores.max(), rel=1e-6))
    assert select_range(s, ConvertConfig(method=CalibMethod.entropy))[1] < 0.5


def test_score_sigmoids_are_bounded_but_silu_gates_are_not() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["gate"]),
        helper.make_node("Mul", ["c1", "gate"], ["act"]),
        helper.make_node("Conv", ["act", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["score"]),
        helper.make_node("Concat", ["c2", "score"], ["y"], axis=1),
    ]
    params = {f"{k}1": v for k, v in conv_params(4, 3).items()} | {
        f"{k}2": v for k, v in conv_params(2, 4, seed=1).items()
    }
    index = GraphIndex(make_model(nodes, params))
    assert is_bounded(index, "score")
    assert not is_bounded(index, "gate")
    assert not is_bounded(index, "act")
    # hunt53 A1: a TFLite SSD's Sigmoid -> Relu (folded into the Q, whose range is the Relu output's):
    # chosen by MSE, its class scores topped at 0.485 and no detection reached 0.5
    nodes[-1] = helper.make_node("Relu", ["score"], ["kept"])
    nodes.append(helper.make_node("Clip", ["kept", "zero", "one"], ["y"]))
    bounds = {"zero": np.array(0.0, np.float32), "one": np.array(1.0, np.float32)}
    index = GraphIndex(make_model(nodes, params | bounds))
    assert is_bounded(index, "kept") and is_bounded(index, "y")
    assert not is_bounded(index, "act")  # a Relu of what is not bounded stays so


def test_the_cap_only_narrows_each_end_and_keeps_zero() -> None:
    base = TensorStats(-8.0, 20.0, np.zeros(2048, np.int64), -8.0, 20.0, 100)
    at = dataclasses.replace(base, image_min_mean=-2.0, image_max_mean=5.0)
    assert capped(-6.0, 12.0, at) == (-2.0, 5.0)
    assert capped(-1.0, 3.0, at) == (-1.0, 3.0)  # the MSE range is already inside
    positive = dataclasses.replace(base, image_min_mean=0.5, image_max_mean=5.0)  # every image above 0
    assert capped(0.0, 12.0, positive) == (0.0, 5.0)
    assert capped(-6.0, 12.0, base) == (-6.0, 12.0)  # no per-image extremes in the table: unchanged


def test_plans_cap_with_mse_only_and_never_a_bounded_output() -> None:
    from quantkit.planner.planning_state import Planning

    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["r"], ["s"], name="sig")]
    index = GraphIndex(make_model(nodes, {}, output="s"))
    wide = stats_of(np.random.default_rng(7).normal(0, 1, 100_000))
    stats = dataclasses.replace(wide, image_min_mean=-0.5, image_max_mean=0.5)
    table = CalibrationTable(meta={}, stats={"x": stats, "s": stats})
    mse = select_range(stats, ConvertConfig())
    ranges = {
        (cap, method): Planning(index, table, ConvertConfig(method=method, range_cap=cap)).range_of("x")
        for cap in (True, False)
        for method in (CalibMethod.mse, CalibMethod.minmax)
    }
    assert ranges[True, CalibMethod.mse] == (-0.5, 0.5) and ranges[False, CalibMethod.mse] == mse
    assert (
        ranges[True, CalibMethod.minmax]
        == ranges[False, CalibMethod.minmax]
        == (stats.minimum, stats.maximum)
    )
    bounded = Planning(index, table, ConvertConfig()).range_of("s")  # a Sigmoid's output: observed range
    assert bounded == (min(stats.minimum, 0.0), stats.maximum)


def test_logits_that_become_scores_are_never_capped() -> None:
    """A detector's class logits, concatenated with its boxes and reshaped before their Sigmoid, are
    negative on most images: capped at the images' mean maximum (below 0) no score passed 0.5 (PyPI's
    YOLOv8 DocLayNet detector lost all 18 of its detections). A SiLU's input is capped as before."""
    from quantkit.planner.planning_state import Planning

    nodes = [
        helper.make_node("Abs", ["x"], ["t"]),
        helper.make_node("Neg", ["x"], ["logits"]),
        helper.make_node("Sigmoid", ["t"], ["gate"]),
        helper.make_node("Mul", ["t", "gate"], ["act"]),
        helper.make_node("Concat", ["act", "logits"], ["both"], axis=1),
        helper.make_node("Reshape", ["both", "shape"], ["rows"]),
        helper.make_node("Slice", ["rows", "start", "end", "axis"], ["picked"]),
        helper.make_node("Sigmoid", ["picked"], ["scores"]),
    ]
    constants = {
        "shape": np.array([0, -1], np.int64),
        "start": np.array([0], np.int64),
        "end": np.array([4], np.int64),
        "axis": np.array([1], np.int64),
    }
    index = GraphIndex(make_model(nodes, constants, output="scores"))
    assert becomes_probability(index, "logits") and becomes_probability(index, "both")
    assert not becomes_probability(index, "t")  # a SiLU's gate is no score
    wide = stats_of(np.random.default_rng(8).normal(-4, 2, 100_000))
    rare = dataclasses.replace(wide, image_min_mean=-9.0, image_max_mean=-1.9)
    table = CalibrationTable(meta={}, stats={"t": rare, "logits": rare})
    planning = Planning(index, table, ConvertConfig())
    # hunt54 A1: nor clipped below their calibration maximum by MSE (an SSD's head logits cut at 0.147,
    # 0.550 seen, capped every score at 0.537: none of FP32's 23 detections above 0.7 was left)
    lo, hi = select_range(rare, ConvertConfig())
    assert hi < rare.maximum and planning.range_of("logits") == (lo, max(rare.maximum, SURE_LOGIT))
    assert planning.range_of("t")[1] == 0.0  # capped at the images' mean maximum, kept at 0


def test_scores_keep_what_calibration_never_saw() -> None:
    """A pet SSD calibrated on 32 COCO photos saw its class logits reach 1.17 and its Sigmoid -> Relu
    scores 0.764: both ranges ended there, and of the 13 pet photos FP32 scores above 0.8, INT8 kept none.
    Scores span their bound (1, or a Clip's c), and their logits a sure score's (SURE_SCORE); a
    squeeze-excitation gate and its logits keep the ranges calibration measured."""
    from quantkit.planner.planning_state import Planning

    nodes = [
        helper.make_node("Neg", ["x"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Relu", ["scores"], ["kept"]),
        helper.make_node("Clip", ["kept", "zero", "half"], ["low"]),
        helper.make_node("Abs", ["x"], ["t"]),
        helper.make_node("Sigmoid", ["t"], ["gate"]),
        helper.make_node("Mul", ["x", "gate"], ["excited"]),
        helper.make_node("Concat", ["kept", "low", "excited"], ["y"], axis=1),
    ]
    bounds = {"zero": np.array(0.0, np.float32), "half": np.array(0.5, np.float32)}
    index = GraphIndex(make_model(nodes, bounds))
    g = np.random.default_rng(9)
    drawn = g.normal(-6, 2, 100_000).clip(None, 1.17)
    probabilities = 1 / (1 + np.exp(-drawn))
    small = np.abs(drawn).clip(0, 1.0)
    seen = {"logits": drawn, "t": small, "scores": probabilities, "kept": probabilities}
    seen |= {"low": probabilities.clip(0, 0.2), "gate": 1 / (1 + np.exp(-small))}
    table = CalibrationTable(meta={}, stats={n: stats_of(v) for n, v in seen.items()})
    planning = Planning(index, table, ConvertConfig())
    assert planning.range_of("logits")[1] == pytest.approx(SURE_LOGIT)
    assert planning.range_of("kept") == (0.0, 1.0) and planning.range_of("scores") == (0.0, 1.0)
    assert planning.range_of("low") == (0.0, 0.5)
    assert planning.range_of("gate")[1] == pytest.approx(table.stats["gate"].maximum)  # a gate, no score
    assert planning.range_of("t")[1] < SURE_LOGIT


def _hard_graph(nodes: list[onnx.NodeProto]) -> GraphIndex:
    """x -> Conv -> c -> NODES -> ... (the nodes read c; y is the graph output)."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    return GraphIndex(make_model([conv, *nodes], conv_params(4, 3), opset=14))


def test_a_range_stops_where_every_consumer_saturates() -> None:
    """HardSwish reads every x <= -3 as 0 and HardSigmoid(0.2, 0.5) every x <= -2.5 as 0 and x >= 2.5 as 1:
    a range reaching further spends steps on values that all give the same output."""
    swish = _hard_graph([helper.make_node("HardSwish", ["c"], ["y"])])
    assert saturated_outside(swish, "c") == (-3.0, math.inf)
    sigmoid = _hard_graph([helper.make_node("HardSigmoid", ["c"], ["y"])])
    assert saturated_outside(sigmoid, "c") == (-2.5, 2.5)
    paddle = _hard_graph(  # hard-swish as Paddle2ONNX writes it: x * HardSigmoid(x)
        [
            helper.make_node("HardSigmoid", ["c"], ["g"], alpha=1.0 / 6, beta=0.5),
            helper.make_node("Mul", ["c", "g"], ["y"]),
        ]
    )
    hard = hard_consumer(paddle, "c")
    assert hard is not None and hard.gated and hard.alpha == pytest.approx(1.0 / 6) and hard.beta == 0.5
    assert saturated_outside(paddle, "c") == (pytest.approx(-3.0), math.inf)
    three, six, sixth = (
        helper.make_node("Constant", [], [n], value_float=v)
        for n, v in (("k", 3.0), ("h", 6.0), ("s", 1 / 6))
    )
    zero = helper.make_node("Constant", [], ["z"], value_float=0.0)
    relu6 = [
        three,
        six,
        zero,
        helper.make_node("Add", ["c", "k"], ["a"]),
        helper.make_node("Clip", ["a", "z", "h"], ["g"]),
    ]
    for tail in (  # hard-swish written out, as PyTorch before opset 14 and Paddle2ONNX export it
        [helper.make_node("Div", ["g", "h"], ["g6"]), helper.make_node("Mul", ["c", "g6"], ["y"])],
        [sixth, helper.make_node("Mul", ["g", "s"], ["g6"]), helper.make_node("Mul", ["g6", "c"], ["y"])],
        [helper.make_node("Mul", ["c", "g"], ["m"]), helper.make_node("Div", ["m", "h"], ["y"])],
    ):
        written = _hard_graph(relu6 + tail)
        assert saturated_outside(written, "c") == (pytest.approx(-3.0), math.inf), tail
    shifted = _hard_graph(  # the Mul reads another tensor than the Clip's output: not a hard-swish
        [*relu6, helper.make_node("Mul", ["c", "a"], ["y"])]
    )
    assert saturated_outside(shifted, "c") == (-math.inf, math.inf)
    also_read = _hard_graph(  # c feeds an Add too: every value of it counts
        [helper.make_node("HardSwish", ["c"], ["h"]), helper.make_node("Add", ["c", "h"], ["y"])]
    )
    assert saturated_outside(also_read, "c") == (-math.inf, math.inf)
    x = np.random.default_rng(8).normal(-4, 6, 200_000)
    s = stats_of(x)
    for method in CalibMethod:  # exact, so under every method
        lo, hi = select_range(s, ConvertConfig(method=method), live=saturated_outside(sigmoid, "c"))
        assert -2.5 <= lo < 0.0 < hi <= 2.5, method
    lo, hi = select_range(s, ConvertConfig(), HardActivation(True, 1.0 / 6, 0.5).transform())
    assert lo > -3.5 and hi > 10.0  # MSE after hard-swish: no range below -3, the positive side kept


def test_a_tensor_a_maxpool_reads_is_ranged_on_what_the_pool_passes_on() -> None:
    """A ReLU whose peaks carry a text line's strokes, read by a MaxPool: MSE on the ReLU's own values
    clips the peaks as rare (a CTC reader kept 112.6 of 153, every line's peak above it); on the pool's
    output, where the peaks are what is left, it keeps more of them. Through a Relu folded into the range
    too; not where the tensor has other readers (the pool's output would not be what they see)."""
    g = np.random.default_rng(5)
    relu = np.maximum(g.normal(0, 1, (100, 8, 16, 16)), 0).astype(np.float32)
    relu[:, :, 3, 5] *= 40.0  # one strong stroke per image
    pooled = relu.reshape(100, 8, 8, 2, 8, 2).max(axis=(3, 5))
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w2", "b2"], ["y"], name="conv2"),
    ]
    params = {**conv_params(8, 3), **{k + "2": v for k, v in conv_params(8, 8, k=1).items()}}
    index = GraphIndex(make_model(nodes, params))
    table = {"c": stats_of(relu), "r": stats_of(relu), "p": stats_of(pooled)}
    assert range_stats(index, table, "r") is table["p"]
    assert range_stats(index, table, "c") is table["p"]  # its Relu folded into the range
    assert range_stats(index, table, "p") is table["p"]
    config = ConvertConfig(method=CalibMethod.mse)
    own = select_range(table["r"], config)[1]
    seen = select_range(range_stats(index, table, "r"), config)[1]
    assert seen > 1.05 * own  # more of the peaks kept
    nodes.append(helper.make_node("Relu", ["r"], ["r2"], name="other"))
    two_readers = GraphIndex(make_model(nodes, params, outputs=["y", "r2"]))
    assert range_stats(two_readers, table, "r") is table["r"]
    del table["p"]  # a table from before the pools' outputs were observed
    assert range_stats(index, table, "r") is table["r"]
