"""The commands as functions: each owns its paths and what it writes (through quantkit.files) and is the
only place that composes the layers below it. Raises QuantkitError; never prints.

One module per command (`run_calibrate`, `run_convert`, `run_fp16`, `run_compare`, `run_sensitivity`,
`run_shrink`); `loading` and `writing` hold what they share on the way in and out.

The names below load on first use: a worker process that imports one module (`calib_chunks`) does not
pay for every command's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quantkit.pipeline.loading import resolve_weight_range
    from quantkit.pipeline.progress import Progress
    from quantkit.pipeline.run_calibrate import CalibrateSummary, calibrate
    from quantkit.pipeline.run_check import check
    from quantkit.pipeline.run_compare import compare
    from quantkit.pipeline.run_convert import convert
    from quantkit.pipeline.run_fp16 import convert_float16
    from quantkit.pipeline.run_sensitivity import layer_errors, sensitivity
    from quantkit.pipeline.run_shrink import shrink

_LAZY = {
    "CalibrateSummary": "run_calibrate",
    "Progress": "progress",
    "calibrate": "run_calibrate",
    "check": "run_check",
    "compare": "run_compare",
    "convert": "run_convert",
    "convert_float16": "run_fp16",
    "layer_errors": "run_sensitivity",
    "resolve_weight_range": "loading",
    "sensitivity": "run_sensitivity",
    "shrink": "run_shrink",
}
__all__ = [
    "CalibrateSummary",
    "Progress",
    "calibrate",
    "check",
    "compare",
    "convert",
    "convert_float16",
    "layer_errors",
    "resolve_weight_range",
    "sensitivity",
    "shrink",
]


def __getattr__(name: str) -> Any:
    """A command (or a submodule, as `from quantkit.pipeline import run_shrink` asks) on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"quantkit.pipeline.{_LAZY[name]}"), name)
    else:
        try:
            value = importlib.import_module(f"quantkit.pipeline.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'quantkit.pipeline' has no attribute {name!r}") from None
    globals()[name] = value
    return value
