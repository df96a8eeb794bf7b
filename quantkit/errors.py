"""The errors quantkit raises. Every message says what is wrong and how to fix it, in one line."""

from __future__ import annotations


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


class WorkerError(QuantkitError):
    """A shard of the work failed on two workers (a crash, a lost node), or no worker could start."""
