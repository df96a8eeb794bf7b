"""Speed-aware plans (issue 17, point 3): measured op times -> the ops kept float (planner.speed_cut),
kernel names -> nodes (evaluate.op_times), and convert keeping a refined plan only where it measured
faster (pipeline.speed_refine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.config import ConvertConfig, Prefer
from quantkit.evaluate.op_times import PassCost, node_times, pass_cost
from quantkit.evaluate.profiler import KernelTime, side_by_side
from quantkit.graph.query import GraphIndex
from quantkit.outcomes import Speed
from quantkit.pipeline import run_convert, speed_memory, speed_refine
from quantkit.pipeline.written_records import conversion_record
from quantkit.planner.speed_cut import FLOAT_MARGIN, Cut, cheapest
from quantkit.results import QuantPlan
from tests.conftest import conv_params, make_model
from tests.helpers import op_counts, optimized_graph, quantize

N = helper.make_node
FREE = PassCost(0.0, 0.0)


def _silu_chain() -> onnx.ModelProto:
    """x -> conv0 -> relu0 -> conv1 -> Sigmoid sig / Mul mul (SiLU) -> conv2 -> y."""
    inits = {}
    for i in range(3):
        p = conv_params(3, 3, seed=i)
        inits[f"w{i}"], inits[f"b{i}"] = p["w"], p["b"]
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        N("Relu", ["c0"], ["r0"], name="relu0"),
        N("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("Sigmoid", ["c1"], ["s1"], name="sig"),
        N("Mul", ["c1", "s1"], ["m1"], name="mul"),
        N("Conv", ["m1", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    return make_model(nodes, inits)


def _plan(quantized: list[str], folds: dict[str, str] | None = None) -> QuantPlan:
    return QuantPlan({}, (), dict.fromkeys(quantized, "Op"), folds or {}, ())


UNITS = ["conv0", "conv1", "sig", "mul", "conv2"]


def test_an_op_slower_in_int8_goes_float_where_conversions_are_free() -> None:
    index = GraphIndex(_silu_chain())
    fast = dict.fromkeys(UNITS, 10.0)
    int8 = {**dict.fromkeys(UNITS, 5.0), "sig": 30.0}
    cut = cheapest(index, _plan(UNITS), fast, int8, {}, FREE)
    assert cut.float_nodes == ("sig",)
    assert cut.int8_us == pytest.approx(5 * 4 + 30) and cut.cut_us == pytest.approx(5 * 4 + 11)


def test_conversions_keep_an_island_int8_and_a_whole_chain_goes_float_together() -> None:
    """sig alone saves 19 us but needs two passes of 15 us (c1 -> sig and s1 -> mul): it stays int8.
    When mul is slower too, the pair goes float together: the pass between them is no longer paid."""
    index = GraphIndex(_silu_chain())
    elements = dict.fromkeys(["x", "c0", "r0", "c1", "s1", "m1", "y"], 1000.0)
    passes = PassCost(15.0, 0.0)  # 15 us per pass of 1000 elements
    fast = {**dict.fromkeys(UNITS, 10.0), "conv0": 100.0, "conv1": 100.0, "conv2": 100.0}
    int8 = {**dict.fromkeys(UNITS, 5.0), "sig": 30.0}
    plan = _plan(UNITS, {"relu0": "r0"})
    cut = cheapest(index, plan, fast, int8, elements, passes)
    assert cut.float_nodes == () and cut.int8_us == pytest.approx(5 * 4 + 30 + 15)  # x converts
    int8["mul"] = 60.0  # sig + mul: 90 us int8 against 22 float; c1 (read twice) and m1 convert: 45 us
    cut = cheapest(index, plan, fast, int8, elements, passes)
    assert cut.float_nodes == ("mul", "sig") and cut.cut_us == pytest.approx(15 + 3 * 5 + 22 + 45)


def test_ties_and_the_margin_stay_int8() -> None:
    """float must beat int8 by the margin (10 %): 10 us float against 10.5 us int8 stays int8."""
    index = GraphIndex(_silu_chain())
    fast = dict.fromkeys(UNITS, 10.0)
    assert cheapest(index, _plan(UNITS), fast, dict.fromkeys(UNITS, 10.0), {}, FREE).float_nodes == ()
    assert cheapest(index, _plan(UNITS), fast, dict.fromkeys(UNITS, 10.5), {}, FREE).float_nodes == ()
    assert cheapest(index, _plan(UNITS), fast, dict.fromkeys(UNITS, 12.0), {}, FREE).float_nodes == tuple(
        sorted(UNITS)
    )


def test_a_folded_relu_goes_with_the_layer_it_is_folded_into() -> None:
    """relu0 runs inside conv0's int8 kernel (0 us) and in FP32 beside it: its float time counts for
    conv0's unit, and the cut names only the quantized node."""
    index = GraphIndex(_silu_chain())
    plan = _plan(UNITS, {"relu0": "r0"})
    fast = {**dict.fromkeys(UNITS, 10.0), "relu0": 0.0}
    int8 = {**dict.fromkeys(UNITS, 5.0), "conv0": 40.0}
    assert cheapest(index, plan, fast, int8, {}, FREE).float_nodes == ("conv0",)
    fast["relu0"] = 40.0  # conv0 + relu0 in float (50) cost more than conv0 int8 with relu folded (40)
    assert cheapest(index, plan, fast, int8, {}, FREE).float_nodes == ()


def test_kernel_names_map_back_to_the_nodes_they_came_from() -> None:
    """The four ways onnxruntime names a kernel after a node; its own Reorder / Q/DQ nodes map nowhere."""
    model = _silu_chain()
    kernels = [
        KernelTime("conv0", "QLinearConv", 3.0, 0),
        KernelTime("conv1_token_7_token_9", "QLinearConv", 4.0, 0),
        KernelTime("mul/QuickGeluFusion/", "QuickGelu", 5.0, 0),
        KernelTime("y_nchwc", "Conv", 6.0, 0),  # the NCHWc Conv writing y: conv2
        KernelTime("ReorderOutput", "ReorderOutput", 7.0, 0),
        KernelTime("c1_QuantizeLinear", "QuantizeLinear", 8.0, 0),
    ]
    names = [n.name for n in model.graph.node]
    assert node_times(names, model, kernels) == {"conv0": 3.0, "conv1": 4.0, "mul": 5.0, "conv2": 6.0}


def test_the_pass_rate_is_measured_on_large_conversions() -> None:
    kernels = [
        KernelTime("a", "QuantizeLinear", 1.0 + 20.0, 100_000),  # 0.2 ns per element
        KernelTime("b", "DequantizeLinear", 1.0 + 40.0, 100_000),  # 0.4
        KernelTime("c", "DequantizeLinear", 1.0 + 30.0, 100_000),  # 0.3
        KernelTime("d", "DequantizeLinear", 50.0, 100),  # too small to measure a rate on
        KernelTime("e", "Conv", 500.0, 100_000),
    ]
    assert pass_cost(kernels).ns_per_element == pytest.approx(0.3)
    assert pass_cost(kernels[3:]).ns_per_element == 0.5  # none large enough: the default


def test_onnxruntime_profiles_every_kernel_of_a_real_model() -> None:
    model = _silu_chain()
    kernels = side_by_side([model], np.zeros((1, 3, 16, 16), np.float32), runs=3)[0]
    times = node_times([n.name for n in model.graph.node], model, kernels)
    assert {"conv1", "conv2"} <= set(times) and all(t > 0 for t in times.values())
    assert {"conv0", "relu0"} & set(times)  # Conv + Relu fused: named after either
    assert all(k.out_elements >= 3 * 16 * 16 for k in kernels if k.op_type == "Conv")  # NCHWc pads C


def _fake_profile(
    monkeypatch: pytest.MonkeyPatch, slow_node: str, refined_time: float, plain_time: float = 1.0
) -> list[int]:
    """Every op profiles at 10 us float and 5 us int8, `slow_node` at 500 us int8; interleaved timing
    measures FP32 at 1 ms, the plain model at `plain_time`, the refined one at `refined_time`. Returns
    the number of models in each interleaved timing."""
    builds: list[int] = []

    def times(
        models: list[onnx.ModelProto], batch: object, runs: int, seconds: float
    ) -> list[list[KernelTime]]:
        return [profile(model) for model in models]

    def profile(model: onnx.ModelProto) -> list[KernelTime]:
        quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
        out = []
        for node in model.graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            int8 = node.output[0] in quantized  # an op whose output a Q node reads runs on integers
            us = (500.0 if node.name == slow_node else 5.0) if int8 else 10.0
            out.append(KernelTime(node.name, node.op_type, us, 0))
        return out

    def confirm(sessions: list[object], batch: object, runs: int, seconds: float) -> np.ndarray:
        builds.append(len(sessions))
        return np.array([[1.0, plain_time] + [refined_time] * (len(sessions) - 2)] * 5)

    monkeypatch.setattr(speed_refine, "side_by_side", times)
    monkeypatch.setattr(speed_refine, "interleaved_rounds", confirm)
    monkeypatch.setattr(speed_refine, "MIN_SAVING_US", 0.0)
    return builds


def test_convert_keeps_float_an_op_profiled_slower_when_the_model_measures_faster(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    summary, out = quantize(_silu_chain(), tmp_path, image_dir)
    assert "conv1" not in summary.plan.quantized_nodes and "conv0" in summary.plan.quantized_nodes
    reasons = {s.node: s.reason for s in summary.plan.skipped}
    assert reasons["conv1"] == speed_refine.REASON
    assert "sig" not in summary.plan.quantized_nodes  # nothing integer around it any more
    assert summary.speed_plan is not None and summary.speed_plan.floated == ("conv1",)
    assert summary.speed_plan.refined_speedup == pytest.approx(2.0)
    fused = op_counts(optimized_graph(out, tmp_path))
    assert fused["QLinearConv"] == 1 and fused["QLinearSigmoid"] == 0 and fused["QLinearMul"] == 0
    record = conversion_record(onnx.load(str(out)))  # provenance: what timing decided, and where
    assert record is not None and record["kept_float_for_speed"]["nodes"] == [
        "conv1",
        "mul",
        "sig",
    ]  # what int8 lost
    assert record["kept_float_for_speed"]["cpu"]["cpu"]
    assert "speedup_after" not in record["kept_float_for_speed"]  # timings: the summary's, not the bytes


def test_convert_keeps_the_plan_when_the_refined_model_is_slower(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slower as a whole: the graph is the one of --prefer accuracy (no measurement at all)."""
    _fake_profile(monkeypatch, "conv1", refined_time=1.25)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    summary, out = quantize(_silu_chain(), tmp_path / "a", image_dir)
    assert "conv1" in summary.plan.quantized_nodes
    assert summary.speed_plan is not None and summary.speed_plan.refined_speedup is None
    assert op_counts(optimized_graph(out, tmp_path))["QLinearConv"] == 2
    accuracy = ConvertConfig(prefer=Prefer.accuracy)
    plain, reference = quantize(_silu_chain(), tmp_path / "b", image_dir, accuracy)
    graphs = [onnx.load(str(p)).graph.SerializeToString(deterministic=True) for p in (out, reference)]
    assert graphs[0] == graphs[1] and plain.speed_plan is None


def test_no_round_starts_once_the_rounds_have_taken_their_time(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow model's rounds stop at ROUNDS_SECONDS (the profiles found conv1 slower, as above): with the
    time spent before the first, none is made or timed and the plan is the plain one."""
    builds = _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    monkeypatch.setattr(speed_refine, "ROUNDS_SECONDS", -1.0)
    summary, _ = quantize(_silu_chain(), tmp_path, image_dir)
    assert builds == [] and summary.speed_plan is None
    assert "conv1" in summary.plan.quantized_nodes


def test_a_slow_model_tries_its_first_round_whatever_the_estimate(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An estimate under MIN_SAVING_US tries nothing on a fast model; on one whose INT8 kernels take
    MIN_TIMED_US a run the first round is made and timed (MobileNetV2's estimate of 25 us was 250 us)."""
    builds = _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    monkeypatch.setattr(speed_refine, "MIN_SAVING_US", 1e9)
    (tmp_path / "fast").mkdir()
    summary, _ = quantize(_silu_chain(), tmp_path / "fast", image_dir)
    assert builds == [] and summary.speed_plan is None
    monkeypatch.setattr(speed_refine, "MIN_TIMED_US", 100.0)  # the stub's kernels: over 500 us a run
    (tmp_path / "slow").mkdir()
    summary, _ = quantize(_silu_chain(), tmp_path / "slow", image_dir)
    assert len(builds) == 1  # one round: the second is held to the estimate again
    assert summary.speed_plan is not None and summary.speed_plan.floated == ("conv1",)


def test_a_tied_refined_plan_larger_than_the_size_slack_leaves_it_int8(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Equal times: the refined plan (conv1 float) is more accurate, but its model is larger than
    SIZE_SLACK allows (quantkit demo's digit CNN was written all float, 1.05x the FP32 file, when accuracy
    broke such a tie without a bound): the INT8 model asked for stays. Within the bound it is kept."""
    _fake_profile(monkeypatch, "conv1", refined_time=1.0)
    monkeypatch.setattr(speed_refine, "SIZE_SLACK", 0.5)  # (this tiny model's refined form is no larger)
    summary, _ = quantize(_silu_chain(), tmp_path, image_dir)
    assert summary.speed_plan is not None and summary.speed_plan.refined_speedup is None
    assert "conv1" in summary.plan.quantized_nodes
    monkeypatch.setattr(speed_refine, "SIZE_SLACK", 2.0)
    monkeypatch.setattr(speed_refine, "TIED_GAIN_DB", -100.0)  # any accuracy gain: only the size decides
    (tmp_path / "slack").mkdir()
    summary, _ = quantize(_silu_chain(), tmp_path / "slack", image_dir)
    assert summary.speed_plan is not None and summary.speed_plan.floated == ("conv1",)
    assert "conv1" not in summary.plan.quantized_nodes


@pytest.mark.parametrize(
    ("ratios", "scores", "expected"),
    [
        ([1.00, 1.05], None, (1, None)),  # faster beyond the tie: no accuracy asked
        ([1.00, 1.01], [20.0, 25.0], (1, (20.0, 25.0))),  # tied with the plain plan and more accurate
        ([1.00, 1.01], [20.0, 20.5], (0, None)),  # ... by less than TIED_GAIN_DB: the plain plan stands
        ([1.00, 0.90], [20.0, 30.0], (0, None)),  # slower: never
        ([1.70, 1.65], [34.3, 35.7], (1, (34.3, 35.7))),  # 3 % slower: within ACCURATE_SLACK, +1.4 dB
        ([1.70, 1.65], [34.3, 34.8], (0, None)),  # ... gaining less than TIED_GAIN_DB: the plain plan
        ([1.02, 0.98], [20.0, 30.0], (0, None)),  # ... but slower than FP32: never
        ([1.27, 1.17], [14.8, 25.0], (1, (14.8, 25.0))),  # 8 % slower, +10.2 dB: within 2 % per dB
        ([2.20, 2.00], [15.55, 21.9], (1, (15.55, 21.9))),  # 10 % slower, +6.35 dB: within 12.7 %
        ([1.27, 1.17], [14.8, 17.0], (0, None)),  # ... +2.2 dB: ACCURATE_SLACK, and it is beyond
        ([1.30, 1.12], [10.0, 40.0], (0, None)),  # 16 % slower: beyond MAX_SLACK whatever the gain
        ([1.00, 1.10, 1.09], [20.0, 21.0, 23.0], (2, (21.0, 23.0))),  # plain not tied: the most accurate
        ([1.00, 1.10, 1.09], [20.0, 21.0, 21.05], (1, None)),  # ... where it gains MIN_GAIN_DB
        ([1.00, 1.10, 1.09], None, (1, None)),  # no accuracy: the fastest
        ([1.00, 1.20, 1.12], [20.0, 21.0, 31.0], (2, (21.0, 31.0))),  # 7 % slower for +10 dB: within slack
        ([1.00, 1.20, 1.12], [20.0, 21.0, 23.0], (1, None)),  # ... for +2 dB: beyond the 5 % floor
        ([1.00, 1.20, 1.16], [20.0, 21.0, 22.0], (2, (21.0, 22.0))),  # 3 % slower for +1 dB: the floor
        ([1.00, 1.20, 1.16], [20.0, 21.0, 21.5], (1, None)),  # ... but less than TIED_GAIN_DB off the tie
    ],
)
def test_chosen_breaks_ties_on_speed_by_accuracy(
    ratios: list[float], scores: list[float] | None, expected: tuple[int, object]
) -> None:
    asked: list[int] = []

    def accuracy(k: int) -> float:
        asked.append(k)
        assert scores is not None
        return scores[k]

    assert speed_refine.chosen(ratios, accuracy if scores else None) == expected
    # only plans near the fastest are measured
    assert all(ratios[k] * speed_refine.MAX_SLACK >= max(ratios) for k in asked)


def test_a_tied_plan_much_larger_than_the_plain_one_never_replaces_it() -> None:
    """A tiny CNN's all-float plan ties with its int8 one and is more accurate, but the INT8 model asked
    for would be no smaller: a tied plan replaces the plain one only within SIZE_SLACK of its bytes."""
    scores = [20.0, 30.0, 25.0]
    ratios = [1.00, 1.01, 1.00]
    assert speed_refine.chosen(ratios, scores.__getitem__, [100, 400, 120]) == (2, (20.0, 25.0))
    assert speed_refine.chosen(ratios, scores.__getitem__, [100, 400, 400]) == (0, None)


def test_the_summary_names_the_accuracy_choice() -> None:
    import dataclasses

    from quantkit.outcomes import SpeedPlan
    from quantkit.reports import console
    from tests.test_golden import _render, _summary

    chose = dataclasses.replace(_summary(), speed_plan=SpeedPlan(("a",), 0.88, 1.03, (21.8, 25.1)))
    text = _render(console.convert_table(chose, "model.int8.onnx"), 200)
    assert (
        "(0.88x -> 1.03x FP32; kept over the fastest plan, more accurate at nearly its speed: 21.8 -> "
        "25.1 dB on the calibration" in text
    )


def test_the_summary_says_what_was_kept_float_and_timeless_reports_drop_it() -> None:
    """Both speed lines are timing (they differ run to run); the rest of the summary must not."""
    import dataclasses

    from quantkit.outcomes import SpeedPlan
    from quantkit.reports import console
    from tests.helpers import timeless
    from tests.test_golden import _render, _summary

    base = _summary()
    kept = dataclasses.replace(base, speed_plan=SpeedPlan(("a", "b"), 0.87, 1.02))
    text = _render(console.convert_table(kept, "model.int8.onnx"), 200)
    assert (
        "speed on this CPU: 2 op(s) kept float where their int8 form profiled slower (0.87x -> 1.02x" in text
    )
    tried = dataclasses.replace(base, speed_plan=SpeedPlan((), 1.70, None))
    text_tried = _render(console.convert_table(tried, "model.int8.onnx"), 200)
    assert "tried in float, not faster as a whole (1.70x FP32 as planned" in text_tried
    plain = timeless(_render(console.convert_table(base, "model.int8.onnx"), 200))
    assert timeless(text) == timeless(text_tried) == plain


def test_a_model_kept_all_float_records_no_op_kept_float_for_speed(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--prefer speed keeps the whole model float when int8 measures slower: the speed plan's ops are then
    no longer the reason anything is float, in the summary or in the model's metadata."""
    _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    monkeypatch.setattr(run_convert, "measure_speed", lambda *_: Speed(0.5, 10, 1.0, 2.0))
    monkeypatch.setattr(speed_memory.speed, "measure", lambda *_: Speed(0.5, 10, 1.0, 2.0))
    summary, out = quantize(_silu_chain(), tmp_path, image_dir, ConvertConfig(prefer=Prefer.speed))
    assert not summary.plan.quantized_nodes and summary.speed_plan is None
    record = conversion_record(onnx.load(str(out)))
    assert record is not None and "kept_float_for_speed" not in record


def test_a_fast_model_slower_than_fp32_as_a_whole_tries_its_first_round(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under MIN_TIMED_US with an estimate under MIN_SAVING_US, the plain plan is timed whole beside
    FP32: as fast, nothing is tried; slower (vit_mnist: 0.80x while the estimate said 7 us), the first
    round is made, and the confirmation keeps it where it measures faster."""
    builds = _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    monkeypatch.setattr(speed_refine, "MIN_SAVING_US", 1e9)
    monkeypatch.setattr(speed_refine, "WHOLE_SLOWER_BELOW", 1.0)
    (tmp_path / "as-fast").mkdir()
    summary, _ = quantize(_silu_chain(), tmp_path / "as-fast", image_dir)
    assert builds == [2] and summary.speed_plan is None  # timed whole once, nothing made
    builds = _fake_profile(monkeypatch, "conv1", refined_time=0.5, plain_time=1.25)
    monkeypatch.setattr(speed_refine, "MIN_SAVING_US", 1e9)
    (tmp_path / "slower").mkdir()
    summary, _ = quantize(_silu_chain(), tmp_path / "slower", image_dir)
    assert builds == [2, 3]  # timed whole, then the plain and the refined plan confirmed
    assert summary.speed_plan is not None and summary.speed_plan.floated == ("conv1",)
    assert summary.speed_plan.plain_speedup == pytest.approx(0.8)


def test_where_the_first_cut_has_nothing_the_near_ties_are_tried(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first cut (float counted FLOAT_MARGIN more) floats nothing; the one with float counted
    TIE_MARGIN less is made and timed, and kept only where the confirmation keeps it (MobileNetV2's stem:
    within 1 % either way in the profiles, 1.8 dB more accurate)."""
    margins: list[float] = []

    def cut(*args: object) -> Cut:  # index, plan, float_us, int8_us, elements, passes[, margin]
        margin = float(args[6]) if len(args) > 6 else FLOAT_MARGIN  # type: ignore[arg-type]
        margins.append(margin)
        return Cut(("conv1",) if margin < 0 else (), 100.0, 100.0)

    builds = _fake_profile(monkeypatch, "conv1", refined_time=1.25)
    monkeypatch.setattr(speed_refine, "cheapest", cut)
    monkeypatch.setattr(speed_refine, "TIE_MARGIN", -0.1)
    (tmp_path / "slower").mkdir()
    summary, _ = quantize(_silu_chain(), tmp_path / "slower", image_dir)
    assert margins[:2] == [FLOAT_MARGIN, -0.1] and builds == [3]  # tried, timed beside the plain plan
    assert summary.speed_plan is not None and summary.speed_plan.refined_speedup is None
    assert "conv1" in summary.plan.quantized_nodes  # 25 % slower: the plain plan stands
    builds = _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    (tmp_path / "faster").mkdir()
    summary, _ = quantize(_silu_chain(), tmp_path / "faster", image_dir)
    assert summary.speed_plan is not None and summary.speed_plan.floated == ("conv1",)
    monkeypatch.setattr(speed_refine, "TIE_MARGIN", None)
    builds.clear()
    (tmp_path / "off").mkdir()
    summary, _ = quantize(_silu_chain(), tmp_path / "off", image_dir)
    assert builds == [] and summary.speed_plan is None


def test_the_confirming_timing_holds_the_sessions_its_activations_allow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each timing session keeps its arena (its largest run's memory): six alive at once took hunt29's
    AGLLNet (749 MB of activations a sample at 256x256) to 2.29 GB. Models whose activations pass
    BATCH_ACTIVATION_BYTES together are timed in groups, each interleaved with FP32; the ratios in order."""
    made: list[object] = []
    timed: list[int] = []

    def session(model: object, **_: object) -> object:
        made.append(model)
        return model

    def rounds(sessions: list[object], *_: object) -> np.ndarray:
        timed.append(len(sessions))
        return np.array([[10.0, *(float(m) for m in sessions[1:])]])  # type: ignore[arg-type]

    monkeypatch.setattr(speed_refine.Session, "of", session)
    monkeypatch.setattr(speed_refine, "interleaved_rounds", rounds)
    models = [5.0, 2.0, 4.0]
    small = speed_refine.confirmed("fp32", models, None, 1 << 20)  # type: ignore[arg-type]
    assert small == [2.0, 5.0, 2.5] and timed == [4]
    timed.clear()
    large = speed_refine.confirmed("fp32", models, None, speed_refine.BATCH_ACTIVATION_BYTES // 2 + 1)  # type: ignore[arg-type]
    assert large == [2.0, 5.0, 2.5] and timed == [2, 2, 2]
