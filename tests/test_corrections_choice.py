"""Bias correction and the range cap, like rebalancing and compensated rounding, are kept only where they
measure better at the model output on the table's samples (planner.corrections_choice)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest
from onnx import helper

from quantkit import pipeline
from quantkit.calib import table as table_io
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection, Prefer
from quantkit.planner import corrections_choice
from quantkit.results import CalibrationTable
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


def test_an_exact_model_keeps_its_bias_setting_without_a_note(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing quantized (every layer excluded, or int8 not paying): both settings measure inf dB, and
    convert said "bias correction not applied: ... inf dB without it against inf dB with it"."""
    _measured(monkeypatch, float("inf"), float("inf"))
    summary, _ = quantize(_cnn(), tmp_path, image_dir, UNTIMED)
    assert not any("bias correction not" in n for n in summary.notes)


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
    config = ConvertConfig(prefer=Prefer.accuracy, bias_correction=False, range_cap=False)
    summary, _ = quantize(_cnn(), tmp_path, image_dir, config)
    assert calls == [] and not summary.plan.input_means


def _cap_measured(
    monkeypatch: pytest.MonkeyPatch,
    capped_db: float,
    uncapped_db: float,
    stress: tuple[float, float] | None = None,
) -> list[bool]:
    """Stub the measure: capped_db for plans with the range cap, uncapped_db without, on the samples; on
    the stress images `stress` (capped, uncapped; default the same). Returns the range cap setting of
    every plan measured."""
    seen: list[bool] = []

    def final_db(
        model: object,
        table: CalibrationTable,
        resolved: corrections_choice.Resolved,
        _: object,
        feed: object,
        *__: object,
    ) -> float:
        seen.append(resolved.config.range_cap)
        capped, uncapped = stress if stress is not None and feed is table.stress else (capped_db, uncapped_db)
        return capped if resolved.config.range_cap else uncapped

    monkeypatch.setattr(corrections_choice, "_final_db", final_db)
    return seen


def test_the_range_cap_is_kept_where_it_measures_better_and_narrows_ranges(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("capped", "uncapped"):
        (tmp_path / name).mkdir()
    measured = _cap_measured(monkeypatch, 21.0, 20.0)
    capped, _ = quantize(_cnn(), tmp_path / "capped", image_dir, UNTIMED)
    assert measured[:4] == [True, False, True, False]  # samples, then stress images: capped, uncapped
    seen = _cap_measured(monkeypatch, 20.05, 20.0)  # within the margin: the table's own ranges
    uncapped, _ = quantize(_cnn(), tmp_path / "uncapped", image_dir, UNTIMED)
    assert seen == [True, False, False, False]  # the samples turned it down: no stress image measured
    assert (
        "activation ranges capped at the calibration images' mean extremes: 21.00 dB with it against "
        "20.00 dB without on the calibration samples, 21.00 against 20.00 dB on the images with the most "
        "extreme activations"
    ) in capped.notes
    assert (
        "activation ranges not capped (--range-cap): 20.05 dB with it against 20.00 dB without on the "
        "calibration samples"
    ) in uncapped.notes
    narrow, wide = capped.plan.ranges, uncapped.plan.ranges
    common = narrow.keys() & wide.keys()  # rebalancing, measured on each, may differ at the input
    assert {"r0", "c1"} <= common
    assert all(wide[t][0] <= narrow[t][0] <= 0.0 <= narrow[t][1] <= wide[t][1] for t in common)
    assert any(narrow[t] != wide[t] for t in common)


def test_the_range_cap_needs_a_finite_gain(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure = corrections_choice.CapMeasure
    assert measure(20.2, 20.0, 19.0, 19.0).better and not measure(20.05, 20.0, 25.0, 19.0).better
    assert measure(20.2, 20.0).gains and not measure(20.2, 20.0).better  # the stress images not measured
    inf = float("inf")
    _cap_measured(monkeypatch, inf, inf)  # a plain plan exact with and without: nothing to gain
    summary, _ = quantize(_cnn(), tmp_path, image_dir, UNTIMED)
    # exact either way: not said ('inf dB with it against inf dB without' tells nothing: hunt44)
    assert not any(n.startswith("activation ranges") for n in summary.notes), summary.notes


def test_the_range_cap_is_dropped_where_the_stress_images_measure_worse(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cap_measured(monkeypatch, 30.0, 20.0, stress=(19.9, 20.0))
    summary, _ = quantize(_cnn(), tmp_path, image_dir, UNTIMED)
    assert (
        "activation ranges not capped (--range-cap): 30.00 dB with it against 20.00 dB without on the "
        "calibration samples, 19.90 against 20.00 dB on the images with the most extreme activations"
    ) in summary.notes


def test_calibrate_keeps_the_images_with_the_most_extreme_activations(
    tmp_path: Path, image_dir: Path
) -> None:
    src, table = tmp_path / "model.onnx", tmp_path / "model.calib.json"
    onnx.save(_cnn(), str(src))
    pipeline.calibrate(src, table, CalibrateConfig(images=ImageSelection(image_dir)))
    loaded = table_io.load(table)
    assert loaded.stress is not None and loaded.samples is not None
    assert 1 <= loaded.stress.shape[0] <= 4 and loaded.stress.shape[1:] == loaded.samples.shape[1:]
    # they are among the images calibrated on, and reach further than an average image on the input
    peaks = loaded.stress.reshape(loaded.stress.shape[0], -1).max(axis=1)
    assert peaks.mean() >= loaded.stats["x"].image_max_mean  # type: ignore[operator]


def test_a_table_without_image_extremes_is_not_capped_and_says_so(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _cap_measured(monkeypatch, 30.0, 20.0)
    src, table = tmp_path / "model.onnx", tmp_path / "model.calib.json"
    onnx.save(_cnn(), str(src))
    pipeline.calibrate(src, table, CalibrateConfig(images=ImageSelection(image_dir)))
    old = table_io.load(table)  # as an earlier quantkit wrote it: no per-image extremes
    stripped = {
        k: dataclasses.replace(s, image_min_mean=None, image_max_mean=None) for k, s in old.stats.items()
    }
    json_bytes, npz_bytes = table_io.serialize(dataclasses.replace(old, stats=stripped, stress=None))
    table.write_bytes(json_bytes)
    table_io.arrays_path(table).write_bytes(npz_bytes)
    summary = pipeline.convert(src, table, tmp_path / "out.onnx", UNTIMED)
    assert seen == [False, False]  # only the bias correction's choice measured, both uncapped
    assert (
        "activation ranges not capped: the calibration table has no per-image extremes and outlier images "
        "(arrays given as a one-pass iterator, or an earlier quantkit); calibrate on images, a folder or "
        "a list of arrays to measure --range-cap"
    ) in summary.notes


def test_the_range_cap_is_not_measured_when_off_or_for_other_methods(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _cap_measured(monkeypatch, 30.0, 20.0)
    for name in ("off", "minmax"):
        (tmp_path / name).mkdir()
    for name, config in {
        "off": dataclasses.replace(UNTIMED, range_cap=False),
        "minmax": dataclasses.replace(UNTIMED, method="minmax"),
    }.items():
        summary, _ = quantize(_cnn(), tmp_path / name, image_dir, config)
        assert not any("activation ranges" in n for n in summary.notes)
    assert len(seen) == 4  # each conversion measured bias correction's choice only (with, without)
