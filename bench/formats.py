"""Number formats beside INT8 in the bench: quantkit's FP16, BF16 and FP8 models and its INT8 placed for
TensorRT, made from the first image count's calibration table and measured with the INT8 rows.

Accuracy runs on the same held-out images as every other row (bench.measure.accuracy). What each one
runs as here, and whether its speed means anything on this CPU, is data (FORMATS): BF16 runs as its
float32 emulation (onnxruntime's CPU provider has no bfloat16 kernels), so it gets no latency; FP8 runs
in onnxruntime (runtime.Session, basic optimization level) but with no float8 kernels every layer
dequantizes to float32 and computes in float32, so timing it would time that, not FP8; FP16 and the
TensorRT placement run in onnxruntime's CPU kernels and are timed in the same interleaved loop as the
rest (the TensorRT one there, not in TensorRT).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.child import ChildResult, run_child
from bench.float_formats import write_bf16_emulation

TOOL = "quantkit-format"  # the rows' tool: apart from the INT8 variants' table


@dataclass(frozen=True)
class Format:
    label: str
    runs_as: str
    untimed: str | None  # why it gets no latency here; None: timed with the rest


FORMATS = {
    "fp16": Format("FP16 (`--to fp16`)", "onnxruntime CPU", None),
    "bf16": Format(
        "BF16 (`--to bf16`)",
        "float32 emulation (graph.emulate)",
        "emulated, no latency: onnxruntime CPU has no bf16 kernels",
    ),
    "fp8": Format(
        "FP8 E4M3FN (`--to fp8`)",
        "onnxruntime CPU, basic optimization level",
        "not timed: onnxruntime CPU has no float8 kernels (it would time float32 layers on dequantized "
        "values, not FP8)",
    ),
    "tensorrt": Format(
        "INT8 `--target tensorrt`",
        "onnxruntime CPU (placed for TensorRT; its speed here is not TensorRT's)",
        None,
    ),
}


def convert(
    model: Path, table: Path, work: Path, memory_limit: int, timeout: float
) -> list[tuple[str, Path, ChildResult]]:
    """Each format's model of `model` from `table`, converted in its own child process (bench.quantize):
    (variant, written path, cost)."""
    out = []
    for variant in FORMATS:
        target = work / f"{model.stem}.{variant}.onnx"
        job = {"kind": "quantkit-convert", "model": str(model), "table": str(table), "variant": variant}
        out.append((variant, target, run_child({**job, "output": str(target)}, memory_limit, timeout)))
    return out


def runnable(variant: str, path: Path) -> Path:
    """The file onnxruntime measures for a format's model: the BF16 model's emulation (written beside
    it), every other model itself."""
    return write_bf16_emulation(path) if variant == "bf16" else path


def timed(variant: str) -> bool:
    return FORMATS[variant].untimed is None


def notes(variant: str) -> dict[str, str]:
    """What the results file (and bench.report, from it) says of a format's row beside its numbers: its
    label, what it runs as here, and why it has no latency where it has none."""
    spec = FORMATS[variant]
    return {
        "label": spec.label,
        "runs_as": spec.runs_as,
        **({"latency_note": spec.untimed} if spec.untimed else {}),
    }
