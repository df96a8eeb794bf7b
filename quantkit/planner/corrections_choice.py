"""The corrections convert applies, each measured at the model output on the table's samples.

Rebalancing (planner.smoothquant_search) and compensated rounding (planner.rounding_plan) are kept where
they measure better; so is bias correction: the corrections are resolved once with it and once without
(rebalancing and rounding chosen again for each, since they interact: on MobileNetV2 the rebalancing
measured no better and the rounding worse with bias correction on, both better without), and bias
correction is dropped where the model without it measures at least MARGIN_DB better. Held-out images
agreed on the four shared models (this AVX-512/VNNI CPU, calibration 100 photos): MobileNetV2 19.35
against 18.43 dB on the samples, 18.38 dB / 97.2 % against 17.68 dB / 95.4 % on 500 imagenet-dev
photos; SqueezeNet (34.39 with, 34.37 without) and YOLOX-Nano (8.82 / 8.79) keep it, held out 34.37
against 33.94 dB and 14.50 against 13.80 dB; vit_mnist measures the same either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quantkit.config import ConvertConfig
from quantkit.graph.qdq import apply_plan
from quantkit.planner import rounding_plan as rounding
from quantkit.planner import smoothquant_search as smoothing
from quantkit.planner.core import plan as make_plan
from quantkit.planner.fallback import SqnrMemo, output_sqnr
from quantkit.results import CalibrationTable, Corrections, Feed

MARGIN_DB = 0.1  # without bias correction must measure this much better to drop it


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


def resolve(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    reference: list[dict[str, np.ndarray]],
    cache: dict[str, tuple[float, float]],
    memo: SqnrMemo,
) -> Resolved:
    """The corrections for `model` (prepared), each kept where it measures better at the output."""

    def resolved(settings: ConvertConfig) -> Resolved:
        alphas, corrections = smoothing.resolve(model, table, settings, reference, cache, memo)
        rounded, nearest_db, rounded_db = rounding.resolve(
            model, table, settings, alphas, reference, cache, memo
        )
        if nearest_db is not None:
            corrections = dataclasses.replace(
                corrections or Corrections({}, nearest_db, None, None, None),
                sqnr_nearest_db=nearest_db,
                sqnr_rounded_db=rounded_db,
                rounded_layers=len(rounded),
            )
        return Resolved(settings, alphas, rounded, corrections)

    chosen = resolved(config)
    samples = table.samples
    if not config.bias_correction or samples is None:
        return chosen
    without = resolved(dataclasses.replace(config, bias_correction=False))
    with_db = _final_db(model, table, chosen, reference, samples, cache, memo)
    without_db = _final_db(model, table, without, reference, samples, cache, memo)
    if without_db >= with_db + MARGIN_DB:
        return dataclasses.replace(without, dropped_bias=(with_db, without_db))
    return chosen


def _final_db(
    model: onnx.ModelProto,
    table: CalibrationTable,
    resolved: Resolved,
    reference: list[dict[str, np.ndarray]],
    samples: Feed,
    cache: dict[str, tuple[float, float]],
    memo: SqnrMemo,
) -> float:
    """The output SQNR on the table's samples of the plan these corrections make (memo: most are measured
    already by the searches)."""
    config, alphas, rounded = resolved.config, resolved.alphas, resolved.rounded
    plan = make_plan(model, table, config, range_cache=cache, alphas=alphas, rounded=rounded)
    return output_sqnr(apply_plan(model, plan), reference, samples, memo)
