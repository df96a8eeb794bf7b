"""The choices convert offers, as enums: range methods, activation and fallback types, weight range,
rounding, what to prefer, the target runtime and the precision; and the combinations a target refuses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum

from quantkit.config.base import as_enum, as_switch
from quantkit.errors import ConfigError


class CalibMethod(str, Enum):
    minmax = "minmax"
    percentile = "percentile"
    entropy = "entropy"
    mse = "mse"


class ActivationType(str, Enum):
    uint8 = "uint8"  # asymmetric; the fast path of onnxruntime on x86 CPUs
    int8 = "int8"  # symmetric; for TensorRT-style targets


class FallbackPrecision(str, Enum):
    fp32 = "fp32"  # layers left float run in float32 (CPUs)
    fp16 = "fp16"  # layers left float run in float16 (targets with float16 kernels: GPUs, ARM)
    bf16 = "bf16"  # layers left float run in bfloat16 (accelerators with bfloat16 kernels); opset 22


class WeightRange(str, Enum):
    """Integer range of the int8 weights. x86 CPUs without VNNI multiply u8 x s8 with vpmaddubsw, which
    adds two products in int16 and saturates: measured on SqueezeNet, 13.4 dB output SQNR there against
    33.5 dB in exact arithmetic. 7-bit weights ([-63, 63]) cannot saturate it."""

    auto = "auto"  # reduced where this machine's onnxruntime kernels saturate, else full
    full = "full"  # [-127, 127]: CPUs with VNNI (avx512_vnni, avx_vnni, amx), ARM, GPUs
    reduced = "reduced"  # [-63, 63]: any x86 CPU, with or without VNNI


class Rounding(str, Enum):
    """How the int8 weights are chosen on their per-channel grid (planner.rounding_plan)."""

    compensated = "compensated"  # for the layer's output error on the samples (GPTQ), where measured better
    nearest = "nearest"  # each weight to its nearest step


class Prefer(str, Enum):
    """What convert does with the speed of its INT8 model measured on the machine it runs on (--target
    ort-cpu only: pipeline.speed_refine, evaluate.speed). Acting on timing makes the output bytes depend
    on this machine: --prefer accuracy is the reproducible choice (and the one for another kind of CPU)."""

    balanced = "balanced"  # ops profiled slower in int8 kept float; still twice below 0.97x FP32: all float
    speed = "speed"  # the same, with all float below 1.0x FP32 measured twice
    accuracy = "accuracy"  # not measured: the INT8 model as planned


class Target(str, Enum):
    """The runtime an INT8 model is placed for (planner.targets; quantkit/docs/targets.md)."""

    ort_cpu = "ort-cpu"  # onnxruntime's CPU kernels: uint8 activations, Q/DQ where it fuses QLinear ops
    tensorrt = "tensorrt"  # int8 symmetric, Q/DQ on weighted layers' inputs and residual Adds, float bias
    openvino = "openvino"  # the same placement with uint8 activations (OpenVINO's CPU plugin)


class Precision(str, Enum):
    int8 = "int8"
    fp16 = "fp16"
    fp8 = "fp8"  # E4M3FN Q/DQ in TensorRT's placement (ConvertConfig.fp8)
    bf16 = "bf16"  # bfloat16: float32's range, 8 significant bits (accelerators with bfloat16 kernels)


def check_target(
    target: Target,
    activations: ActivationType,
    fp8: bool,
    fallback: FallbackPrecision = FallbackPrecision.fp32,
) -> None:
    """Refuse what --target openvino would otherwise change without a word (hunt37 F3, F5), or write in a
    form OpenVINO does not fuse (hq90 F2): none is ever a default, so each was asked for."""
    if target is Target.openvino and fallback is not FallbackPrecision.fp32:
        raise ConfigError(
            f"--fallback {fallback.value} with --target openvino: the Casts around such layers stop "
            "OpenVINO's int8 layers beside them fusing, and OpenVINO runs float layers at its own precision "
            "(bf16 where the CPU has it) anyway; leave --fallback out"
        )
    if target is Target.openvino and fp8:
        raise ConfigError(
            "--to fp8 is placed for TensorRT (OpenVINO's CPU plugin has no float8 kernels); leave --target "
            "out, or convert --to int8 --target openvino"
        )
    if target is Target.openvino and activations is ActivationType.int8:
        raise ConfigError(
            "--target openvino quantizes activations uint8 (signed int8 activations measured 4-11 dB in "
            "OpenVINO 2026.4 where onnxruntime measured 14-30 dB on the same files): leave --activations out"
        )


# --to fp8 fixes these: E4M3FN symmetric activations and weights, each range its observed amax (hq75 1:
# --method, --percentile and --range-cap shaped nothing and were recorded as applied), no rebalancing,
# rounding to nearest
FP8_FIXED = (
    "method",
    "percentile",
    "range_cap",
    "activations",
    "weight_range",
    "rounding",
    "smoothquant",
    "prefer",
)


def refuse_replaced(given: Mapping[str, object], fp8: bool, flag: Callable[[str], str]) -> None:
    """Refuse what --to fp8 or --target tensorrt would replace, where it was given: `given` maps the
    options set (flags on the command line, keywords to the API) to their values; flag(name) names one
    as its caller spells it. hunt38 F2: the API wrote such models with the value replaced, saying nothing."""
    fixed = [flag(name) for name in FP8_FIXED if name in given] if fp8 else []
    if fixed:
        verb = "applies" if len(fixed) == 1 else "apply"
        raise ConfigError(
            f"{', '.join(fixed)} only {verb} to --to int8 (--to fp8 fixes them); leave them out"
        )
    refuse_unread(given, flag)
    target = as_enum(Target, given["target"], flag("target")) if "target" in given else None
    if fp8 and target is Target.ort_cpu:
        why = "onnxruntime's CPU has no float8 kernels"
        raise ConfigError(f"--to fp8 is placed for TensorRT ({why}); leave {flag('target')} out")
    activations = given.get("activations")
    kind = None if activations is None else as_enum(ActivationType, activations, flag("activations"))
    if target is Target.tensorrt and kind is ActivationType.uint8:
        raise ConfigError(
            f"TensorRT's Q/DQ are int8 symmetric: leave {flag('activations')} out with --target tensorrt"
        )


def refuse_unread(given: Mapping[str, object], flag: Callable[[str], str]) -> None:
    """A percentile without the percentile method, or the range cap asked for with another method than mse:
    nothing would read it (hq76 6: the API took both in silence, where the command line refuses them)."""
    method = as_enum(CalibMethod, given.get("method", CalibMethod.mse), flag("method"))
    if "percentile" in given and method is not CalibMethod.percentile:
        raise ConfigError(
            f"{flag('percentile')} sets method percentile's range; add {flag('method')} percentile or "
            "leave it out"
        )
    if (
        "range_cap" in given
        and as_switch(given["range_cap"], flag("range_cap"))
        and method is not CalibMethod.mse
    ):
        raise ConfigError(
            f"{flag('range_cap')} caps method mse's ranges; leave it out with method {method.value}"
        )
