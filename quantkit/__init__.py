"""quantkit: post-training INT8 and float16 quantization for ONNX vision models.

The public API (everything else is private and may change):

    calibrate(model, data, output=..., preprocess=Preprocess(...))  -> CalibrateSummary
    convert(model, to="int8" | "fp8" | "fp16" | "bf16", calibration=..., output=..., **options)
                                                   -> ConvertSummary | Float16Summary
    compare(reference, candidate, data=..., labels=...)              -> ComparisonResult
    shrink(model, data=..., output_dir=..., max_drop=...)            -> ShrinkResult
    check(model, target="ort-cpu" | "tensorrt" | "openvino")         -> CheckReport
    sensitivity(model, calibration=..., data=...)                    -> SensitivityReport
    Preprocess(preset=, mean=, std=, bgr=, resize=, input_size=, pad=)  how images become inputs
        (input_values={"orig_target_sizes": [640, 640]}: other inputs' value for every image)
    QuantkitError (and ModelError, ImageError, CalibrationError, ConversionError, ConfigError,
    OutputError, WorkerError, DownloadError): every problem with the input, with a one-line message
    that says how to fix it.

`data=` takes an image folder, a list of image files, an iterable of numpy arrays or of
{input_name: array} dicts. Results are frozen dataclasses; `.to_dict()` gives the JSON the CLI writes.

>>> import quantkit
>>> quantkit.Preprocess(preset="imagenet").mean is None  # the preset's mean applies
True
>>> sorted(quantkit.__all__)[:4]
['CalibrateSummary', 'CalibrationError', 'CheckReport', 'ComparisonResult']

See quantkit.api for a complete, runnable example.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from quantkit.version import __version__

if TYPE_CHECKING:  # the real names for type checkers; at run time they load on first use
    from quantkit.api import Preprocess, calibrate, check, compare, convert, sensitivity, shrink
    from quantkit.errors import (
        CalibrationError,
        ConfigError,
        ConversionError,
        DownloadError,
        ImageError,
        ModelError,
        OutputError,
        QuantkitError,
        WorkerError,
    )
    from quantkit.outcomes import (
        CheckReport,
        ComparisonResult,
        ConvertSummary,
        Float16Summary,
        SensitivityReport,
        ShrinkResult,
    )
    from quantkit.pipeline.run_calibrate import CalibrateSummary

_PUBLIC = {
    "calibrate": "quantkit.api",
    "check": "quantkit.api",
    "convert": "quantkit.api",
    "compare": "quantkit.api",
    "shrink": "quantkit.api",
    "sensitivity": "quantkit.api",
    "Preprocess": "quantkit.api",
    "QuantkitError": "quantkit.errors",
    "ModelError": "quantkit.errors",
    "ImageError": "quantkit.errors",
    "CalibrationError": "quantkit.errors",
    "ConversionError": "quantkit.errors",
    "ConfigError": "quantkit.errors",
    "OutputError": "quantkit.errors",
    "WorkerError": "quantkit.errors",  # hq157 F6: raised by workers= and ray=, and not importable here
    "DownloadError": "quantkit.errors",
    "CalibrateSummary": "quantkit.pipeline.run_calibrate",
    "ConvertSummary": "quantkit.outcomes",
    "CheckReport": "quantkit.outcomes",
    "Float16Summary": "quantkit.outcomes",
    "ComparisonResult": "quantkit.outcomes",
    "ShrinkResult": "quantkit.outcomes",
    "SensitivityReport": "quantkit.outcomes",
}
__all__ = [
    "CalibrateSummary",
    "CalibrationError",
    "CheckReport",
    "ComparisonResult",
    "ConfigError",
    "ConversionError",
    "ConvertSummary",
    "DownloadError",
    "Float16Summary",
    "ImageError",
    "ModelError",
    "OutputError",
    "Preprocess",
    "QuantkitError",
    "SensitivityReport",
    "ShrinkResult",
    "WorkerError",
    "__version__",
    "calibrate",
    "check",
    "compare",
    "convert",
    "sensitivity",
    "shrink",
]


def __getattr__(name: str) -> Any:
    """Load a public name on first use: `import quantkit` (and the CLI's --help) stays instant."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'quantkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
