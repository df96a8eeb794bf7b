"""convert measures its output's speed against FP32 and says so, loudly where it is slower."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.config import ConvertConfig
from quantkit.evaluate.speed import interleaved_rounds, measure, speedups
from quantkit.outcomes import SLOWER_BELOW, Speed
from quantkit.pipeline import run_convert, speed_memory
from quantkit.reports import console
from quantkit.runtime import Session
from tests.conftest import conv_params, make_model
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
    assert "warning: the INT8 model runs slower than FP32 here: int8 does not pay for this model" in text
    assert "--prefer speed keeps it float" in text


def _slow(calls: list[int]) -> Callable[..., Speed]:
    def measured(*_: object) -> Speed:
        calls.append(1)
        return Speed(0.5, 10, 1.0, 2.0)

    return measured


@pytest.mark.parametrize("prefer", ["balanced", "speed", "accuracy"])
def test_prefer_decides_what_a_measured_slowdown_does(
    prefer: str, tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The measurement is stubbed (0.5x FP32): balanced writes the INT8 model and reports it, speed
    measures again and keeps the model float with the figure as the reason, accuracy measures nothing."""
    calls: list[int] = []
    monkeypatch.setattr(run_convert, "measure_speed", _slow(calls))
    monkeypatch.setattr(speed_memory.speed, "measure", _slow(calls))  # --prefer speed's second measure
    p = conv_params(8, 3, seed=1)
    conv = N("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1])
    model = make_model([conv, N("Relu", ["c"], ["y"], name="relu")], p)  # a Conv writing y stays float
    summary, out = quantize(model, tmp_path, image_dir, ConvertConfig(prefer=prefer))
    written = op_counts(onnx.load(str(out)))
    if prefer == "speed":
        assert calls == [1, 1] and summary.speed is None
        assert "QuantizeLinear" not in written and not summary.plan.quantized_nodes
        reasons = {s.node: s.reason for s in summary.plan.skipped}
        assert reasons["conv"] == (
            "int8 ran 0.50x FP32 on this CPU (1 thread, measured twice); kept float (--prefer speed; "
            "without it the INT8 model is written)"
        )
        assert summary.warnings == (NOTHING_QUANTIZED,)
    else:
        assert written["QuantizeLinear"] >= 1 and summary.plan.quantized_nodes == {"conv": "Conv"}
        assert calls == ([1] if prefer == "balanced" else [])
        assert (summary.speed is not None) == (prefer == "balanced")
