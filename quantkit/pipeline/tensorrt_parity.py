"""--target tensorrt's accuracy target: what symmetric int8 activations cost, bought back with float layers.

TensorRT's Q/DQ are int8 with zero point 0. On a non-negative tensor (every ReLU's output) that leaves half
of the 256 levels unused: one bit less than asymmetric uint8, about 6 dB of that tensor's noise. The same
TensorRT plan with uint8 activations (its twin: the same layers, placement and corrections, only the
activation format changed) measured on the calibration samples 34.9 dB where SqueezeNet 1.1's read 29.5,
MobileNetV2's 23.3 against 19.2. A layer without Q/DQ runs in FP16 in an engine built with FP16 enabled,
cheaply on the GPUs TensorRT serves, so --target tensorrt has the --min-sqnr search keep layers float until
the output is within PARITY_DB of its twin's: held out (500 imagenet-dev photos, the models written)
SqueezeNet 29.61 -> 35.12 dB with 2 of 26 Convs float, MobileNetV2 20.21 -> 22.65 dB with 3 of 52; with
one-sided activations shifted first (planner.tensorrt_shift) 35.65 dB with 1 float, 23.11 dB with 1.
`--min-sqnr` stays a floor under it; `--min-sqnr 0` or `--max-float-layers 0` turns it off (convert's 10 dB
floor on each output still holds); `--max-drop`'s budget decides alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import onnx

from quantkit.config import ConvertConfig, Target
from quantkit.errors import ModelError
from quantkit.pipeline.convert_notes import quantizes_a_layer
from quantkit.planner import at_output
from quantkit.planner import plan as make_plan
from quantkit.planner.fallback import MIN_GAIN_DB, SqnrMemo
from quantkit.planner.int8_model import quantized_model, runnable
from quantkit.results import CalibrationTable, Feed, Runs

PARITY_DB = 0.5
# whose target a layer is kept float for (fallback.search's `by`; {} the target in dB)
BY = f"by --target tensorrt's {{:.2f}} dB (within {PARITY_DB:g} dB of its plan with uint8 activations)"


@dataclasses.dataclass(frozen=True)
class Parity:
    """The asymmetric model's output SQNR on the samples (dB) and the target it sets (PARITY_DB below)."""

    asymmetric_db: float

    @property
    def target_db(self) -> float:
        return self.asymmetric_db - PARITY_DB


def applies(config: ConvertConfig) -> bool:
    """INT8 for TensorRT (not FP8, whose format is another), with the fallback on."""
    return (
        config.target is Target.tensorrt
        and not config.fp8
        and config.min_sqnr > 0
        and config.max_float_layers > 0
    )


def measure(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    alphas: Mapping[str, float] | None,
    rounded: Mapping[str, np.ndarray] | None,
    reference: Runs,
    samples: Feed,
    measured: SqnrMemo,
) -> Parity | None:
    """The output SQNR of the TensorRT plan's uint8 twin (ConvertConfig.with_uint8_activations, no
    fallback; corrections alphas and rounded as the TensorRT plan's) on the samples, as the fallback
    measures its trials; None where it sets no target: it quantizes no layer, measures no finite figure, or
    onnxruntime cannot run it. model: as for planner.plan."""
    twin = dataclasses.replace(config, min_sqnr=0.0).with_uint8_activations()
    plan = make_plan(model, table, twin, {}, {}, alphas, rounded)
    if not quantizes_a_layer(plan):
        return None
    try:
        db = at_output.output_sqnr(
            runnable(quantized_model(model, plan, twin), twin), reference, samples, measured
        )
    except ModelError:  # a reference only: the TensorRT model is measured on its own below
        return None
    return Parity(db) if math.isfinite(db) else None


def note(parity: Parity, start_db: float, reached_db: float, layers: int, left: str = "") -> str:
    """The summary's line on what the target did, where TensorRT's int8 measured below it (start_db).
    left: what the layers kept float left int8, their input paths with them (convert_notes.left_int8)."""
    paths = f" (with their input paths: {left})" if left else ""
    if layers and reached_db >= parity.target_db:
        kept = f"{layers} layer(s) kept float{paths} bring it to {reached_db:.2f} dB, within {PARITY_DB:g} dB"
    elif layers:
        kept = (
            f"{layers} layer(s) kept float{paths} bring it to {reached_db:.2f} dB, short of "
            f"{parity.target_db:.2f} (--max-float-layers, or no further layer lifted it)"
        )
    else:
        kept = f"no layer lifted it by {MIN_GAIN_DB:g} dB"
    float_layers = (
        "; TensorRT runs the layers kept float in FP16 in an engine built with FP16 enabled, and --max-float-"
        "layers 0 turns this off"
        if layers
        else ""
    )
    return (
        f"--target tensorrt: symmetric int8 activations measured {start_db:.2f} dB on the calibration "
        f"samples, the same plan with uint8 ones {parity.asymmetric_db:.2f} dB; {kept}{float_layers}"
    )
