"""The commands as functions: each owns its paths and what it writes (through quantkit.files) and is the
only place that composes the layers below it. Raises QuantkitError; never prints.

One module per command (`run_calibrate`, `run_convert`, `run_fp16`, `run_compare`, `run_sensitivity`,
`run_shrink`); `loading` and `writing` hold what they share on the way in and out."""

from __future__ import annotations

from quantkit.pipeline.progress import Progress
from quantkit.pipeline.run_calibrate import CalibrateSummary, calibrate
from quantkit.pipeline.run_compare import compare
from quantkit.pipeline.run_convert import convert, resolve_weight_range
from quantkit.pipeline.run_fp16 import convert_float16
from quantkit.pipeline.run_sensitivity import layer_errors, sensitivity
from quantkit.pipeline.run_shrink import shrink

__all__ = [
    "CalibrateSummary",
    "Progress",
    "calibrate",
    "compare",
    "convert",
    "convert_float16",
    "layer_errors",
    "resolve_weight_range",
    "sensitivity",
    "shrink",
]
