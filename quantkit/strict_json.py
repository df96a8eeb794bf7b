"""Strict JSON for the records quantkit writes (compare's, shrink's, check's, the models' metadata):
no bare Infinity or NaN, and paths under the user's home written as ~/... ."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def json_safe(value: Any, home: str = "") -> Any:
    """value with every non-finite float as its text ('inf', '-inf', 'nan'), in dicts, lists and tuples at
    any depth: JSON has no Infinity or NaN (Python writes them bare, and a CI script's JSON.parse fails
    exactly where a conversion was lossless: hunt31's compare record, `worst_kind` of 'inf' dB). home: a
    folder whose paths are written as ~/... (a report shared as a CI artifact named the user's home:
    hq107 F10)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v, home) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, home) for v in value]
    if home and isinstance(value, str) and value.startswith(home.rstrip(os.sep) + os.sep):
        return "~" + value[len(home.rstrip(os.sep)) :]
    return value


def home_folder() -> str:
    """The user's home folder, for json_safe ('' where it cannot be told or is the root)."""
    try:
        found = str(Path.home())
    except (RuntimeError, KeyError):
        return ""
    return "" if found in ("", os.sep) else found


def home_short(path: str) -> str:
    """`path` as the reports write it: under the user's home as ~/... (hq145 F8: report.json wrote
    '~/p/m.onnx' and report.md, the step summary, the whole home path)."""
    shown: str = json_safe(path, home_folder())
    return shown


def json_text(record: Any, indent: int = 1) -> str:
    """record (a JSON-ready record: compare's, shrink's, check's) as strict JSON text, one trailing
    newline; non-finite numbers as json_safe writes them."""
    return json.dumps(json_safe(record), indent=indent, allow_nan=False) + "\n"
