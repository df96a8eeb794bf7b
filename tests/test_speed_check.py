"""convert measures its output's speed against FP32 and says so, loudly where it is slower."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.config import ConvertConfig, Prefer
from quantkit.evaluate import speed
from quantkit.evaluate.speed import interleaved_rounds, measure, speedups
from quantkit.outcomes import SLOWER_BELOW, Speed
from quantkit.pipeline import run_convert, speed_memory
from quantkit.reports import console
from quantkit.runtime import Session
from tests.conftest import conv_params, make_model, tiny_cnn
from tests.helpers import NOTHING_QUANTIZED, op_counts, quantize
from tests.test_golden import _render, _summary

N = helper.make_node


def _convs(layers: int) -> onnx.ModelProto:
    """x [N, 3, 16, 16] -> `layers` 3->3 3x3 Convs -> y."""
    nodes, inits, x = [], {}, "x"
    for i in range(layers):
        p = conv_params(3, 3, seed=i)
        inits[f"w{i}"] = p["w"]
        out = "y" if i == layers - 1 else f"c{i}"
        nodes.append(N("Conv", [x, f"w{i}"], [out], name=f"conv{i}", pads=[1, 1, 1, 1]))
        x = out
    return make_model(nodes, inits)


def test_a_model_twenty_times_longer_measures_slower() -> None:
    """The ratio is FP32's time over the candidate's: a candidate doing 20x the work measures far below
    1 (and is reported slower); the same model against itself measures about 1."""
    samples = np.zeros((4, 3, 16, 16), np.float32)
    slow = measure(_convs(1), _convs(20), samples, runs=12, seconds=2.0)
    assert slow.speedup < 0.5 and slow.slower and slow.rounds >= 5
    assert slow.candidate_ms > slow.fp32_ms
    same = measure(_convs(3), _convs(3), samples, runs=12, seconds=2.0)
    assert 0.5 < same.speedup < 2.0


def test_round_orders_never_run_a_session_twice_in_a_row_and_share_the_positions() -> None:
    """Alternating forward and back ran the first and the last session twice in a row at every turn,
    warm: 2-3 % faster than a copy of the same model in the middle."""
    import itertools

    from quantkit.runtime import round_orders

    rounds = list(itertools.islice(round_orders(3), 600))
    assert all(sorted(r) == [0, 1, 2] for r in rounds)
    sequence = [k for r in rounds for k in r]
    assert all(a != b for a, b in itertools.pairwise(sequence))
    firsts = np.bincount([r[0] for r in rounds], minlength=3)
    lasts = np.bincount([r[-1] for r in rounds], minlength=3)
    assert firsts.min() > 150 and lasts.min() > 150  # each session first and last about a third of the time
    assert list(itertools.islice(round_orders(2), 4)) in ([[0, 1]] * 4, [[1, 0]] * 4)
    assert list(itertools.islice(round_orders(1), 2)) == [[0], [0]]
    assert rounds[:20] == list(itertools.islice(round_orders(3), 20))  # seeded: the same order every time


def test_rounds_interleave_and_stop_at_runs() -> None:
    sessions = [Session.of(_convs(1), threads=1, spin=False), Session.of(_convs(2), threads=1, spin=False)]
    times = interleaved_rounds(sessions, np.zeros((1, 3, 16, 16), np.float32), runs=7, seconds=60.0)
    assert times.shape == (7, 2) and (times > 0).all()
    assert speedups(np.array([[2.0, 1.0], [4.0, 1.0], [3.0, 1.0]])) == [3.0]


def test_convert_summary_prints_the_speed_and_warns_when_slower() -> None:
    import dataclasses

    text = _render(console.convert_table(_summary(), "model.int8.onnx"), 200)  # 1.98x
    assert "speed on this CPU: 1.98x FP32 (8.10 -> 4.09 ms, 1 thread, median of 40 interleaved runs" in text
    assert "warning" not in text
    slow = dataclasses.replace(_summary(), speed=Speed(SLOWER_BELOW - 0.01, 40, 1.0, 1.04))
    text = _render(console.convert_table(slow, "model.int8.onnx"), 200)
    assert "speed on this CPU: 0.96x FP32" in text  # its warning is the summary's (slower_kept, below)
    assert "warning" not in text


def _measured(calls: list[float], *speedups: float) -> Callable[..., Speed]:
    """A stub of the speed measurement returning `speedups` in turn (the last one from then on)."""

    def measured(*_: object) -> Speed:
        value = speedups[min(len(calls), len(speedups) - 1)]
        calls.append(value)
        return Speed(value, 10, 1.0, 1.0 / value)

    return measured


def _one_conv() -> onnx.ModelProto:
    p = conv_params(8, 3, seed=1)
    conv = N("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])
    return make_model([conv, N("Relu", ["c"], ["y"], name="relu")], p)  # a Conv writing y stays float


@pytest.mark.parametrize(
    ("prefer", "speedups", "floated"),
    [
        ("balanced", (0.5,), True),
        ("speed", (0.5,), True),
        ("accuracy", (0.5,), False),
        ("accuracy", (0.98,), False),
        ("balanced", (0.98,), False),  # within the timing noise: the default writes int8
        ("speed", (0.98,), True),  # --prefer speed: int8 only where at least as fast as FP32
        ("balanced", (0.5, 1.1), False),  # slower once only: the second measurement is reported
    ],
)
def test_prefer_decides_what_a_measured_slowdown_does(
    prefer: str,
    speedups: tuple[float, ...],
    floated: bool,
    tmp_path: Path,
    image_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The measurement is stubbed. Below the preference's threshold twice (balanced 0.97x, speed 1.0x),
    the model is written float with the figure as the reason; above it, or above it the second time, the
    INT8 model is written and its last measurement reported; accuracy plans with no timing, measures the
    model written once, and warns where it ran slower than FP32 (hq166 F4: SCI written at 0.63x FP32 with
    no word)."""
    monkeypatch.setitem(speed.KEEP_FLOAT_BELOW, Prefer.balanced, SLOWER_BELOW)  # conftest turns it off
    calls: list[float] = []
    monkeypatch.setattr(run_convert, "measure_speed", _measured(calls, *speedups))
    monkeypatch.setattr(speed_memory.speed, "measure", _measured(calls, *speedups))
    summary, out = quantize(_one_conv(), tmp_path, image_dir, ConvertConfig(prefer=prefer))
    written = op_counts(onnx.load(str(out)))
    if prefer == "accuracy":
        assert calls == list(speedups) and summary.speed is not None and written["QuantizeLinear"] >= 1
        slower = (
            "the INT8 model ran 0.50x FP32 on this CPU (1 thread): --prefer accuracy keeps int8 the layers "
            "whose int8 form runs slower; the default, --prefer balanced, times them and keeps them float"
        )
        assert (slower in summary.warnings) == (speedups[0] < SLOWER_BELOW)
        return
    if floated:
        assert len(calls) == 2 and summary.speed is None
        assert "QuantizeLinear" not in written and not summary.plan.quantized_nodes
        reasons = {s.node: s.reason for s in summary.plan.skipped}
        assert reasons["conv"] == (
            f"int8 ran {min(calls):.2f}x FP32 on this CPU (1 thread, measured twice); kept float (--prefer "
            f"{prefer}; --prefer accuracy writes the INT8 model)"
        )
        assert summary.warnings == (NOTHING_QUANTIZED,)
        return
    assert written["QuantizeLinear"] >= 1 and summary.plan.quantized_nodes == {"conv": "Conv"}
    assert summary.speed is not None and summary.speed.speedup == calls[-1]
    assert len(calls) == (2 if speedups[0] < SLOWER_BELOW else 1)


def test_a_max_drop_choice_written_float_says_so(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt33: convert --max-drop printed '8 Conv kept float (2.00 points lost) <- chosen', then wrote
    every layer float because int8 timed 0.72x FP32: the choice is marked not written, with why."""
    from tests.helpers import run

    monkeypatch.setitem(speed.KEEP_FLOAT_BELOW, Prefer.balanced, SLOWER_BELOW)
    calls: list[float] = []
    monkeypatch.setattr(run_convert, "measure_speed", _measured(calls, 0.5))
    monkeypatch.setattr(speed_memory.speed, "measure", _measured(calls, 0.5))
    model, table, out = tiny_cnn(tmp_path / "m.onnx"), tmp_path / "t.json", tmp_path / "m.int8.onnx"
    calibration = str(image_dir / "dogs")  # the cats held apart (dc28f23 refuses a calibration subset)
    code, _, err = run(["calibrate", str(model), "--images", calibration, "-o", str(table)], capsys)
    assert code == 0, err
    budget = ["--max-drop", "100", "--validation", str(image_dir / "cats")]
    code, shown, err = run(["convert", str(model), "-c", str(table), "-o", str(out), *budget], capsys)
    assert code == 0, err
    assert "<- chosen (not written)" in shown
    assert "not written: every layer is float: int8 ran 0.50x FP32 on this CPU" in shown
    assert "QuantizeLinear" not in op_counts(onnx.load(str(out)))


def test_a_tie_the_plans_profile_doubts_is_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """hq63a F1: an EfficientFormerV2 whose speed-aware plan profiled 0.96x measured 0.99x once and was
    written int8; every later timing gave 0.94x to 0.96x. A first figure under 1.0 where the profile put
    the plan below 0.97x is measured again, and the second decides."""
    monkeypatch.setitem(speed.KEEP_FLOAT_BELOW, Prefer.balanced, SLOWER_BELOW)  # conftest turns it off
    once = Speed(0.99, 40, 19.75, 19.72)

    def again(value: float) -> Callable[[], Speed]:
        calls.append(value)
        return lambda: Speed(value, 40, 17.3, 17.3 / value)

    calls: list[float] = []
    slow, reported = speed.too_slow(once, Prefer.balanced, again(0.96), expected=0.96)
    assert slow is not None and slow.speedup == 0.96 and reported.speedup == 0.96
    slow, reported = speed.too_slow(once, Prefer.balanced, again(0.99), expected=0.96)
    assert slow is None and reported.speedup == 0.99
    # no doubt without the profile, nor where the first figure is a gain: one measurement
    never = lambda: pytest.fail("measured again")  # noqa: E731
    assert speed.too_slow(once, Prefer.balanced, never) == (None, once)
    gain = Speed(1.02, 40, 20.0, 19.6)
    assert speed.too_slow(gain, Prefer.balanced, never, expected=0.96) == (None, gain)
    assert speed.too_slow(once, Prefer.accuracy, never, expected=0.5) == (None, once)


def test_the_speed_line_warns_where_the_timings_scattered() -> None:
    """hunt41 F3: on a loaded machine convert printed '0.99x FP32 (4.61 -> 5.94 ms)': the median of the
    per-run ratios beside medians that make 0.78x, with no word."""
    from quantkit.outcomes import Speed
    from quantkit.reports.formats import speed_line

    steady = speed_line(Speed(1.69, 40, 5.50, 3.27))
    assert steady.startswith("speed on this CPU: 1.69x FP32 (5.50 -> 3.27 ms") and "warning" not in steady
    busy = speed_line(Speed(0.99, 40, 4.61, 5.94)).splitlines()
    assert busy[1] == (
        "warning: the timings scattered (a busy CPU?): the runs' median ratio is 0.99x, their medians make "
        "0.78x; measure again on an idle machine (QUANTKIT_SPEED_CACHE=off)"
    )
    # hunt48 C5: within the scatter, but on either side of FP32's speed: the line is no verdict
    near = speed_line(Speed(1.03, 40, 15.30, 16.44)).splitlines()
    assert near[1] == (
        "warning: the timings scattered (a busy CPU?): the runs' median ratio is 1.03x, their medians make "
        "0.93x; whether it is faster than FP32 is within that scatter; measure again on an idle machine "
        "(QUANTKIT_SPEED_CACHE=off)"
    )
    # hq63b F3: ties on either side of 1 ('1.01x FP32 (11.13 -> 11.23 ms'): one line that says so
    (tie,) = speed_line(Speed(1.01, 40, 11.13, 11.23)).splitlines()
    assert tie.endswith("interleaved runs on a calibration sample; as fast as FP32 within their scatter)")


def test_compare_warns_where_its_timings_scattered(monkeypatch: pytest.MonkeyPatch) -> None:
    """hunt54 C2: compare's speedup (the ratio of the p50s) read 0.43x on a loaded machine and 1.05x the
    next run, with no word; convert's line had one. Run by run the ratio held near 1.05x."""
    from quantkit.evaluate import speed
    from quantkit.evaluate.figure_warnings import scattered_timing

    monkeypatch.setattr(speed, "SCATTER_MIN_RUNS", 2)  # conftest turns it off

    steady = ([5.0, 5.1, 4.9, 5.0, 5.2], [2.5, 2.5, 2.4, 2.6, 2.5])
    assert scattered_timing(steady) is None
    assert scattered_timing(([5.0], [2.5])) is None  # one run: few_runs says so
    # the candidate's runs fell when the machine was busy, FP32's when it was idle: each round's ratio
    # near 1.05x, their medians 0.21x
    reference = [2.0, 2.1, 2.0, 10.5, 10.4]
    candidate = [1.9, 2.0, 9.9, 9.9, 10.0]
    assert scattered_timing((reference, candidate)) == (
        "the timings scattered (a busy CPU?): the p50s make 0.21x, the interleaved runs' median ratio "
        "1.05x; whether it is faster than the reference is within that scatter; time again on an idle "
        "machine, or with more --runs"
    )


def test_an_int8_model_that_gains_nothing_is_said_to() -> None:
    """hunt48 C3: trueocr's text detector, 9 Convs int8, was written 1.01x larger at 0.98x FP32, exit 0,
    without a word."""
    from quantkit.outcomes import Speed
    from quantkit.pipeline.convert_notes import gained_nothing, slower_kept

    tied, slow, b = Speed(0.98, 40, 5.0, 5.1), Speed(0.55, 40, 5.0, 9.1), Prefer.balanced
    (line,) = gained_nothing(390_000, 394_000, tied, b)
    assert line.startswith(
        "the INT8 model gains nothing here: 1.01x the input's size, 0.98x FP32 on this CPU"
    )
    assert gained_nothing(390_000, 394_000, Speed(1.20, 40, 6.0, 5.0), b) == ()  # faster: worth it
    assert gained_nothing(390_000, 120_000, tied, b) == ()  # smaller: worth it
    assert gained_nothing(390_000, 394_000, None, b) == ()  # not timed: not judged
    # hq170 F6: slower than FP32, one line (slower_kept's), not two on one figure
    for prefer in Prefer:
        assert gained_nothing(390_000, 394_000, slow, prefer) == slower_kept(slow, prefer) != ()


def test_a_slower_model_written_is_said_by_its_preference() -> None:
    """The line convert gives a model written though it ran below 0.97x FP32: --prefer accuracy names the
    default (hq166 F4); the others kept it so only as an earlier run measured it (speed_memory)."""
    from quantkit.outcomes import Speed
    from quantkit.pipeline.convert_notes import slower_kept

    slow, tied = Speed(0.75, 40, 1.0, 1.33), Speed(0.98, 40, 1.0, 1.02)
    assert slower_kept(slow, Prefer.accuracy) == (
        "the INT8 model ran 0.75x FP32 on this CPU (1 thread): --prefer accuracy keeps int8 the layers whose "
        "int8 form runs slower; the default, --prefer balanced, times them and keeps them float",
    )
    assert (
        slower_kept(slow, Prefer.balanced)
        == slower_kept(slow, Prefer.speed)
        == (
            "the INT8 model ran 0.75x FP32 on this CPU (1 thread), kept int8 as an earlier run measured it: "
            "int8 does not pay for this model here (QUANTKIT_SPEED_CACHE=off measures again, and a model "
            "measured slower twice is written float)",
        )
    )
    assert slower_kept(tied, Prefer.accuracy) == slower_kept(None, Prefer.accuracy) == ()
