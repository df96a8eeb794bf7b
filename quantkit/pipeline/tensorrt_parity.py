"""--target tensorrt's accuracy target: what symmetric int8 activations cost, bought back with float layers.

TensorRT's Q/DQ are int8 with zero point 0. On a non-negative tensor (every ReLU's output) that leaves half
of the 256 levels unused: one bit less than onnxruntime's and OpenVINO's asymmetric uint8, about 6 dB of
that tensor's noise. Measured on the calibration samples, the TensorRT placement of SqueezeNet 1.1 read
29.5 dB where the same placement with uint8 activations read 37.3, MobileNetV2 19.2 against 24.3. A layer
without Q/DQ runs in FP16 in an engine built with FP16 enabled, cheaply on the GPUs TensorRT serves, so
--target tensorrt has the --min-sqnr search keep layers float until the output is within PARITY_DB of what
the same model measures planned for onnxruntime's CPU (uint8 activations, the same corrections, no
fallback and no timed speed plan): held out (500 imagenet-dev photos) SqueezeNet 29.61 -> 35.12 dB with 2
of 26 Convs float, MobileNetV2 20.21 -> 22.17 dB with 2 of 52. `--min-sqnr` stays a floor under it;
`--min-sqnr 0` or `--max-float-layers 0` keeps every layer int8.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx

from quantkit.config import ActivationType, ConvertConfig, Target
from quantkit.planner import at_output
from quantkit.planner import plan as make_plan
from quantkit.planner.fallback import SqnrMemo
from quantkit.planner.int8_model import quantized_model, runnable
from quantkit.results import CalibrationTable, Feed, Runs

PARITY_DB = 0.5
# whose target a layer is kept float for (fallback.search's `by`; {} the target in dB)
BY = f"by --target tensorrt's {{:.2f}} dB (within {PARITY_DB:g} dB of uint8 activations)"


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
) -> Parity:
    """The output SQNR of `model` planned for onnxruntime's CPU (no fallback: min_sqnr 0) with the same
    corrections (alphas, rounded: the TensorRT plan's) on the samples, as the fallback measures its trials.
    model: as for planner.plan."""
    cpu = dataclasses.replace(config, target=Target.ort_cpu, activations=ActivationType.uint8, min_sqnr=0.0)
    plan = make_plan(model, table, cpu, {}, {}, alphas, rounded)
    built = runnable(quantized_model(model, plan, cpu), cpu)
    return Parity(at_output.output_sqnr(built, reference, samples, measured))


def note(parity: Parity, start_db: float, reached_db: float, layers: int) -> str:
    """The summary's line on what the target did, where TensorRT's int8 measured below it (start_db)."""
    kept = (
        f"{layers} layer(s) kept float for {reached_db:.2f} dB (TensorRT runs them in FP16 in an engine "
        "built with FP16 enabled; --max-float-layers 0 keeps every layer int8)"
        if layers
        else f"no layer lifted it ({reached_db:.2f} dB)"
    )
    return (
        f"--target tensorrt: symmetric int8 activations measured {start_db:.2f} dB on the calibration "
        f"samples against {parity.asymmetric_db:.2f} dB with onnxruntime's uint8 ones; held to within "
        f"{PARITY_DB:g} dB of that: {kept}"
    )
