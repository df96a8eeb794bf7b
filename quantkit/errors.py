"""The errors quantkit raises. Every message says what is wrong and how to fix it, in one line."""

from __future__ import annotations

import re


class QuantkitError(Exception):
    """Base class: a problem with the user's input or environment, reported as one line, exit code 2."""

    exit_code = 2


class ModelError(QuantkitError):
    """The model file cannot be used (missing, corrupt, unsupported input or opset)."""


class ImageError(QuantkitError):
    """The image folder cannot be used (missing, empty, no decodable images)."""


class CalibrationError(QuantkitError):
    """The calibration table is missing, corrupt, or made for another model."""


class ConversionError(QuantkitError):
    """The converted model failed a check (checker, load, finite outputs) and was not written."""


class ConfigError(QuantkitError):
    """An option has a value that cannot work (bad size, mean/std length, unknown node names)."""


class OutputError(QuantkitError):
    """An output path cannot be written (same as the input, missing folder, not writable)."""


class DownloadError(QuantkitError):
    """A model could not be downloaded (no network, server error) or failed its pinned checksum."""


def shorten(text: str, limit: int = 200) -> str:
    """text on one line, cut at a word boundary to at most `limit` characters, with '...' where cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 3].rsplit(" ", 1)[0]
    return cut + "..."


_ORT_NOISE = (
    (re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : "), ""),
    (
        re.compile(
            r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: "
        ),
        r"\1 '\2': ",
    ),
    # a source file, then the C++ signature after it: an optional return type, a name with "::", its
    # parameters (never the message's own words, which hold no "::" name)
    (
        re.compile(
            r"\S*onnxruntime\S*\.(?:h|cc|cpp|hpp):\d+ (?:(?:[\w:<>,*]+ )?[\w<>]+(?:::[\w<>~]+)+\([^)]*\)"
            r"(?: const)? )?"
        ),
        "",
    ),
)


def ort_reason(text: str) -> str:
    """onnxruntime's error message without what says nothing to a user (its error code prefix, the
    source file and C++ signature), so that the reason fits one line: "Add 'Add.178': axis == 1 ||
    axis == largest was false. Attempting to broadcast an axis by a dimension other than 1. 41 by 40"
    instead of a cut "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code ... element_wise_ops.h:563..."."""
    reason = " ".join(text.split())
    for pattern, replacement in _ORT_NOISE:
        reason = pattern.sub(replacement, reason)
    return shorten(reason)


class WorkerError(QuantkitError):
    """A shard of the work failed on two workers (a crash, a lost node), or no worker could start."""


def load_reason(text: str) -> str:
    """onnxruntime's reason for refusing a model, with the fix where its words give none (hq110 F8: 'two
    nodes with same node name', which onnx.checker accepts)."""
    reason = ort_reason(text)
    if "two nodes with same node name" in reason:
        reason += "; give each node its own name (or none) and export again"
    return reason
