"""Whether compare's images are held out: the INT8 model records which images calibrated it.

compare on the very images a model was calibrated on measures how well the ranges fit those images, not
how the model does on the next photo: hq84's English PP-OCRv3 detector measured 14.0 dB in-sample and
8.1 dB held out, and compare said nothing (shrink did: it knows both folders). So calibrate keeps a short
digest of each image's bytes, convert writes them into the model's metadata (quantkit.calibration_images),
and compare counts its images found there. By content: a copy under another name or folder is the same
image.

The record stays small whatever the calibration set (a 30 KB model must not double in size): the first
PREFIX bytes of each image's sha256, at most SAMPLED of them, the smallest (a uniform sample of a large
set, as a bottom-k sketch keeps one), with the number of distinct images. Up to SAMPLED images the count
compare gives is exact; past it, compare judges by its own images whose digests fall in the sampled range
and says "about". Metadata: "<distinct images> <base64 of the sorted digests>"; 1.6 KB for 200 images.
"""

from __future__ import annotations

import base64
import binascii

import onnx

# bytes of each image's sha256 kept: 3 made a false warning likely on large held-out sets (hq91 F5: 11 of
# 20 trials of 50,000 photos against 200 calibration ones); at 6, 256 digests meet 50,000 others by chance
# once in 20 billion
PREFIX = 6
SAMPLED = 256  # digests kept at most (2 KB of metadata)
NAME = "calibration_images"  # writing.stamp adds its META_PREFIX: quantkit.calibration_images
IN_SAMPLE = "calibrated the model"  # in compare's warning; shrink says it its own way (held_out)


def contents(digests: list[bytes]) -> list[str]:
    """The table's images.contents: the SAMPLED smallest distinct digests (sha256 of each image's bytes)
    cut to PREFIX bytes, hex, sorted."""
    return sorted({digest[:PREFIX].hex() for digest in digests})[:SAMPLED]


def stamped(meta: dict[str, object]) -> dict[str, str]:
    """The model's metadata entry (writing.stamp prefixes it) for a table's meta that lists its images."""
    images = meta.get("images")
    listed = images.get("contents") if isinstance(images, dict) else None
    distinct = images.get("unique") if isinstance(images, dict) else None
    if not isinstance(listed, list) or not isinstance(distinct, int) or not listed:
        return {}
    try:
        packed = b"".join(bytes.fromhex(str(h)) for h in listed)
    except ValueError:
        return {}
    return {NAME: f"{distinct} {base64.b64encode(packed).decode()}"}


def in_sample_line(candidate: onnx.ModelProto, digests: list[bytes]) -> str | None:
    """A warning where images compared (their sha256 digests) calibrated `candidate`."""
    recorded = next((p.value for p in candidate.metadata_props if p.key == f"quantkit.{NAME}"), "")
    used, about = _calibrated(recorded, digests)
    if not used:
        return None
    return (
        f"{about}{used} of the {len(digests)} images compared {IN_SAMPLE}: the figures are not held out "
        "(they measure the fit to those images); compare on images apart from the calibration set"
    )


def validation_line(meta: dict[str, object], digests: list[bytes]) -> str | None:
    """A warning where --validation images (their sha256 digests) calibrated the table of `meta` (hq95
    F2: only a list equal to the calibration one was refused; 16 of 32 shared went unsaid)."""
    used, about = _calibrated(stamped(meta).get(NAME, ""), digests)
    if not used:
        return None
    share = "partly" if used < len(digests) else "only"  # hq125 F1: 'partly' said of all of them
    return (
        f"{about}{used} of the {len(digests)} --validation images are calibration images: --max-drop's "
        f"search measured its budget {share} on them; hold validation images apart from --images"
    )


def all_calibrated(meta: dict[str, object], digests: list[bytes]) -> bool:
    """Whether the --validation images (their digests) are the calibration images of the table of `meta`,
    by content: each one of them, as many, as exactly known (hq125 F1: renamed copies of the calibration
    images passed as validation, where the originals were refused). A subset of them is warned of
    (validation_line), as before."""
    recorded = stamped(meta).get(NAME, "")
    used, about = _calibrated(recorded, digests)
    return bool(digests) and not about and used == len(digests) == len(set(digests)) == _count(recorded)


def _count(recorded: str) -> int:
    """The distinct calibration images a record "<distinct> <base64>" counts (0: none readable)."""
    distinct = recorded.partition(" ")[0]
    return int(distinct) if distinct.isdigit() else 0


def _calibrated(recorded: str, digests: list[bytes]) -> tuple[int, str]:
    """(how many of `digests` the record "<distinct> <base64>" lists, '' or 'about ' where estimated)."""
    distinct, _, packed = recorded.partition(" ")
    try:
        raw = base64.b64decode(packed, validate=True)
        total = int(distinct)
    except (ValueError, binascii.Error):
        return 0, ""
    sample = {raw[k : k + PREFIX] for k in range(0, len(raw) - PREFIX + 1, PREFIX)}
    if not sample or not digests or len(raw) % PREFIX:  # none, or another length's record
        return 0, ""
    ours = [digest[:PREFIX] for digest in digests]
    if total <= len(sample):  # every calibration image is recorded: the count is exact
        return sum(1 for d in ours if d in sample), ""
    judged = [d for d in ours if d <= max(sample)]  # ours in the sampled range: a bottom-k estimate
    found = sum(1 for d in judged if d in sample)
    return (round(found / len(judged) * len(ours)) if found else 0), "about "
