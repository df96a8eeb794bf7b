"""Bias correction, like rebalancing and compensated rounding, is kept only where it measures better at
the model output on the table's samples (planner.corrections_choice)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper

from quantkit.config import ConvertConfig, Prefer
from quantkit.planner import corrections_choice
from tests.conftest import conv_params, make_model
from tests.helpers import quantize

N = helper.make_node
UNTIMED = ConvertConfig(prefer=Prefer.accuracy)


def _cnn() -> onnx.ModelProto:
    p0, p1 = conv_params(8, 3, seed=3), conv_params(4, 8, seed=4)
    inits = {"w0": p0["w"], "b0": p0["b"], "w1": p1["w"], "b1": p1["b"]}
    nodes = [
        N("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        N("Relu", ["c0"], ["r0"], name="relu0"),
        N("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("Relu", ["c1"], ["y"], name="relu1"),
    ]
    return make_model(nodes, inits)


def _measured(monkeypatch: pytest.MonkeyPatch, with_db: float, without_db: float) -> None:
    def final_db(model: object, table: object, resolved: corrections_choice.Resolved, *_: object) -> float:
        return with_db if resolved.config.bias_correction else without_db

    monkeypatch.setattr(corrections_choice, "_final_db", final_db)


def test_bias_correction_is_dropped_where_the_model_measures_better_without(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _measured(monkeypatch, 20.0, 20.5)
    summary, _ = quantize(_cnn(), tmp_path, image_dir, UNTIMED)
    assert not summary.plan.input_means  # no layer bias-corrected
    assert (
        "bias correction not applied: the model measured 20.50 dB without it against 20.00 dB with it on the "
        "calibration samples (rebalancing and rounding chosen for each)"
    ) in summary.notes


@pytest.mark.parametrize("without_db", [20.0, 20.05, 19.0])
def test_bias_correction_stays_within_the_margin_or_where_it_measures_better(
    without_db: float, tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _measured(monkeypatch, 20.0, without_db)
    summary, _ = quantize(_cnn(), tmp_path, image_dir, UNTIMED)
    assert summary.plan.input_means and not any("bias correction not" in n for n in summary.notes)


def test_off_is_never_measured_against(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []

    def final_db(model: object, table: object, resolved: corrections_choice.Resolved, *_: object) -> float:
        calls.append(resolved.config.bias_correction)
        return 0.0

    monkeypatch.setattr(corrections_choice, "_final_db", final_db)
    config = ConvertConfig(prefer=Prefer.accuracy, bias_correction=False)
    summary, _ = quantize(_cnn(), tmp_path, image_dir, config)
    assert calls == [] and not summary.plan.input_means
