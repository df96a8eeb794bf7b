"""Whether compare's images are held out: the INT8 model records which images calibrated it.

compare on the very images a model was calibrated on measures how well the ranges fit those images, not
how the model does on the next photo: hq84's English PP-OCRv3 detector measured 14.0 dB in-sample and
8.1 dB held out, and compare said nothing (shrink did: it knows both folders). So calibrate keeps a short
content digest of each image it used (the table's images.contents: the first 8 bytes of each file's
sha256, sorted, up to CONTENTS_KEPT images), convert writes them into the model's metadata
(quantkit.calibration_images), and compare counts its images found there. By content: a copy under
another name or folder is the same image.
"""

from __future__ import annotations

import onnx

CONTENTS_KEPT = 4096  # more calibration images than this are not recorded (17 bytes each in the model)
NAME = "calibration_images"  # writing.stamp adds its META_PREFIX: quantkit.calibration_images
IN_SAMPLE = "calibrated the model"  # in compare's warning; shrink says it its own way (held_out)


def contents(digests: list[bytes]) -> list[str] | None:
    """The table's images.contents: each image's digest (sha256 of its bytes) cut to 8 bytes, hex,
    sorted and unique; None where there are more than CONTENTS_KEPT."""
    short = sorted({digest[:8].hex() for digest in digests})
    return short if len(short) <= CONTENTS_KEPT else None


def stamped(meta: dict[str, object]) -> dict[str, str]:
    """The model's metadata entry (writing.stamp prefixes it) for a table's meta that lists its images."""
    images = meta.get("images")
    listed = images.get("contents") if isinstance(images, dict) else None
    if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
        return {}
    return {NAME: " ".join(listed)}


def in_sample_line(candidate: onnx.ModelProto, digests: list[bytes]) -> str | None:
    """A warning where images compared (their sha256 digests) calibrated `candidate`."""
    recorded = next((p.value for p in candidate.metadata_props if p.key == f"quantkit.{NAME}"), "")
    calibrated = set(recorded.split())
    used = sum(1 for digest in digests if digest[:8].hex() in calibrated)
    if not used:
        return None
    return (
        f"{used} of the {len(digests)} images compared {IN_SAMPLE}: the figures are not held out (they "
        "measure the fit to those images); compare on images apart from the calibration set"
    )
