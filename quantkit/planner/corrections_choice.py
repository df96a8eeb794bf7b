"""The corrections convert applies, each measured at the model output on the table's samples.

The range cap (planner.range_plan.capped) is decided first, on plans without rebalancing or compensated
rounding: kept only where the model measures at least MARGIN_DB better with it on the samples and no
worse on the table's stress images (the images with the most extreme activations, which the cap clips).
With 100 coco-calib photos (this CPU), samples / stress images, capped against not: MobileNetV2 22.17 /
19.17 against 17.98 / 17.29 dB, kept (--prefer accuracy on 500 held-out imagenet-dev photos: 21.73 dB /
97.2 % against 18.70 dB / 95.6 %); SqueezeNet 24.31 / 21.24 against 34.28 / 32.42 and YOLOX-Nano 6.66 /
6.49 against 9.16 / 8.56, not kept. A toy CNN whose images differ 5x in brightness measured +1.4 dB on
its samples and lost 9 dB over all its images: the stress images are what turned it down.

Rebalancing (planner.smoothquant_search) and compensated rounding (planner.rounding_plan) are kept where
they measure better; so is bias correction: the corrections are resolved once with it and once without
(rebalancing and rounding chosen again for each, since they interact: on MobileNetV2 the rebalancing
measured no better and the rounding worse with bias correction on, both better without; the rounding's
integers are solved once for each rebalancing, and kept or not for each setting), and bias
correction is dropped where the model without it measures at least MARGIN_DB better. Held-out images
agreed on the four shared models (this AVX-512/VNNI CPU, calibration 100 photos): MobileNetV2 19.35
against 18.43 dB on the samples, 18.38 dB / 97.2 % against 17.68 dB / 95.4 % on 500 imagenet-dev
photos; SqueezeNet (34.39 with, 34.37 without) and YOLOX-Nano (8.82 / 8.79) keep it, held out 34.37
against 33.94 dB and 14.50 against 13.80 dB; vit_mnist measures the same either way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quantkit.config import CalibMethod, ConvertConfig
from quantkit.graph.qdq import apply_plan
from quantkit.planner import rounding_plan as rounding
from quantkit.planner import smoothquant_search as smoothing
from quantkit.planner.at_output import SqnrMemo, measured_reference, output_sqnr
from quantkit.planner.core import plan as make_plan
from quantkit.results import CalibrationTable, Corrections, Feed, Runs

MARGIN_DB = 0.1  # what must measure this much better: the model without bias correction, with the range cap


@dataclass(frozen=True)
class CapMeasure:
    """Output SQNR (dB) of plain plans with the range cap and without, on the table's samples and on its
    stress images (None: not measured, the samples having turned the cap down)."""

    capped_db: float
    uncapped_db: float
    stress_capped_db: float | None = None
    stress_uncapped_db: float | None = None

    @property
    def gains(self) -> bool:
        """At least MARGIN_DB better on the samples (never where the plain plan is exact already: inf dB,
        nothing to gain)."""
        return math.isfinite(self.uncapped_db) and self.capped_db >= self.uncapped_db + MARGIN_DB

    @property
    def better(self) -> bool:
        """gains, and no worse on the stress images."""
        stress = self.stress_capped_db, self.stress_uncapped_db
        return self.gains and stress[0] is not None and stress[1] is not None and stress[0] >= stress[1]


@dataclass(frozen=True)
class Resolved:
    """config: the settings the rest of convert plans with (bias_correction False where it was dropped);
    alphas, rounded: planner.plan's; corrections: what they changed on the samples; dropped_bias: (output
    SQNR with bias correction, without) where it was dropped, else None."""

    config: ConvertConfig
    alphas: Mapping[str, float] | None
    rounded: dict[str, np.ndarray]
    corrections: Corrections | None
    dropped_bias: tuple[float, float] | None = None
    range_cap: CapMeasure | None = None  # None: not measured (off, --method other than mse, old table)


# resolve's phases, for a progress count: the range cap, the corrections with bias correction, without it,
# and the two compared (an 88 MB ISNet at 1024x1024 spent 7 minutes here with no word: hunt50 C1)
PHASES = 4


def resolve(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    reference: Runs,
    cache: dict[str, tuple[float, float]],
    memo: SqnrMemo,
    advance: Callable[[int], None] | None = None,
) -> Resolved:
    """The corrections for `model` (prepared), each kept where it measures better at the output. advance:
    called with the PHASES done, as each is (all of them by the return)."""
    done = [0]

    def phase(count: int = 1) -> None:
        done[0] += count
        if advance is not None:
            advance(count)

    config, capping = range_cap(model, table, config, reference, cache, memo)
    phase()
    solved: dict[object, dict[str, np.ndarray]] = {}  # rounding_plan.resolve's, shared by both settings

    def resolved(settings: ConvertConfig) -> Resolved:
        alphas, corrections = smoothing.resolve(model, table, settings, reference, cache, memo)
        rounded, nearest_db, rounded_db = rounding.resolve(
            model, table, settings, alphas, reference, cache, memo, solved
        )
        if nearest_db is not None:
            corrections = dataclasses.replace(
                corrections or Corrections({}, nearest_db, None, None, None),
                sqnr_nearest_db=nearest_db,
                sqnr_rounded_db=rounded_db,
                rounded_layers=len(rounded),
            )
        return Resolved(settings, alphas, rounded, corrections, range_cap=capping)

    chosen = resolved(config)
    phase()
    samples = table.samples
    if not config.bias_correction or samples is None:
        phase(PHASES - done[0])
        return chosen
    without = resolved(dataclasses.replace(config, bias_correction=False))
    phase()
    with_db = _final_db(model, table, chosen, reference, samples, cache, memo)
    without_db = _final_db(model, table, without, reference, samples, cache, memo)
    phase()
    if math.isfinite(with_db) and without_db >= with_db + MARGIN_DB:  # inf: exact either way
        return dataclasses.replace(without, dropped_bias=(with_db, without_db))
    return chosen


def notes(resolved: Resolved, requested: ConvertConfig, table: CalibrationTable) -> tuple[str, ...]:
    """What the summary says of the choices: the range cap kept or not as measured (nothing where it was
    not asked for), bias correction dropped."""
    said: tuple[str, ...] = ()
    cap = resolved.range_cap
    if cap is not None and math.isinf(cap.capped_db) and math.isinf(cap.uncapped_db):
        pass  # exact either way: nothing quantized read 'inf dB with it against inf dB without' (hunt44)
    elif cap is not None:
        measured = (
            f"{cap.capped_db:.2f} dB with it against {cap.uncapped_db:.2f} dB without on the calibration "
            "samples"
        )
        if cap.stress_capped_db is not None and cap.stress_uncapped_db is not None:
            measured += (
                f", {cap.stress_capped_db:.2f} against {cap.stress_uncapped_db:.2f} dB on the images with "
                "the most extreme activations"
            )
        kept = resolved.config.range_cap
        said = (
            f"activation ranges capped at the calibration images' mean extremes: {measured}"
            if kept
            else f"activation ranges not capped (--range-cap): {measured}",
        )
    elif requested.range_cap and not resolved.config.range_cap and isinstance(table.samples, dict):
        said = (  # hunt44: a two-input model calibrated from a folder was told to calibrate on a folder
            "activation ranges not capped: the calibration table of a model of several inputs records no "
            "per-image extremes and outlier images, which --range-cap measures",
        )
    elif requested.range_cap and not resolved.config.range_cap:
        said = (
            "activation ranges not capped: the calibration table has no per-image extremes and outlier "
            "images (arrays given as a one-pass iterator, or an earlier quantkit); calibrate on images, a "
            "folder or a list of arrays to measure --range-cap",
        )
    return said + _bias_dropped(resolved)


def _bias_dropped(resolved: Resolved) -> tuple[str, ...]:
    if resolved.dropped_bias is None:
        return ()
    with_db, without_db = resolved.dropped_bias
    return (
        f"bias correction not applied: the model measured {without_db:.2f} dB without it against "
        f"{with_db:.2f} dB with it on the calibration samples (rebalancing and rounding chosen for each)",
    )


def range_cap(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    reference: Runs | None = None,
    cache: dict[str, tuple[float, float]] | None = None,
    memo: SqnrMemo | None = None,
) -> tuple[ConvertConfig, CapMeasure | None]:
    """(config with range_cap off unless the cap measured better, what was measured or None).

    Plain plans (no rebalancing, rounding to nearest) with and without the cap, on the table's samples
    and on its stress images (the most extreme activations: the images the cap clips): kept where the
    samples measure at least MARGIN_DB better and the stress images no worse. The stress images are
    measured only where the samples gain (three runs of them: PP-OCRv4's text detector at 640x640 spent
    1.5 s of a 35 s convert there, turned down by the samples)."""
    samples, stress = table.samples, table.stress
    if not config.range_cap or config.method is not CalibMethod.mse or samples is None:
        return config, None
    if reference is None:  # a caller that measures the INT8 model otherwise (sensitivity)
        reference = measured_reference(model, samples)
    uncapped = dataclasses.replace(config, range_cap=False)
    if stress is None or not any(s.image_max_mean is not None for s in table.stats.values()):
        return uncapped, None  # array data, or a table from before they were recorded
    cache = {} if cache is None else cache
    memo = SqnrMemo() if memo is None else memo

    def measured(ref: Runs, feed: Feed, cases: SqnrMemo) -> tuple[float, float]:
        return (
            _final_db(model, table, Resolved(config, None, {}, None), ref, feed, cache, cases),
            _final_db(model, table, Resolved(uncapped, None, {}, None), ref, feed, cache, cases),
        )

    found = CapMeasure(*measured(reference, samples, memo))
    if found.gains:
        stress_db = measured(measured_reference(model, stress), stress, SqnrMemo())
        found = CapMeasure(found.capped_db, found.uncapped_db, *stress_db)
    return (config if found.better else uncapped), found


def _final_db(
    model: onnx.ModelProto,
    table: CalibrationTable,
    resolved: Resolved,
    reference: Runs,
    samples: Feed,
    cache: dict[str, tuple[float, float]],
    memo: SqnrMemo,
) -> float:
    """The output SQNR on the table's samples of the plan these corrections make (memo: most are measured
    already by the searches)."""
    config, alphas, rounded = resolved.config, resolved.alphas, resolved.rounded
    plan = make_plan(model, table, config, range_cache=cache, alphas=alphas, rounded=rounded)
    return output_sqnr(apply_plan(model, plan), reference, samples, memo)
