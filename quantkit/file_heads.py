"""What an existing file holds, by its first bytes: a calibration table, an image, a NumPy array. A report
is never written over one of them (files.refuse_over_artifact)."""

from __future__ import annotations

import re
from pathlib import Path

# what a calibration table's JSON holds near its start, however it is spaced (results.TABLE_FORMAT)
TABLE_MARK = b'"quantkit-calibration"'


# how the data files users keep begin: a report written over one of them (hq98 F7: `compare --json
# photo.jpg` replaced a photo with JSON, exit 0) is refused as a report over a model is
DATA_MAGIC = (
    (b"\xff\xd8\xff", "an image (JPEG)"),
    (b"\x89PNG\r\n\x1a\n", "an image (PNG)"),
    (b"GIF8", "an image (GIF)"),
    (b"II*\x00", "an image (TIFF)"),
    (b"MM\x00*", "an image (TIFF)"),
    (b"\x93NUMPY", "a NumPy array"),
    (b"PK\x03\x04", "a ZIP archive (a NumPy .npz, say)"),  # hq105 F1: model-ready samples went
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "an image (JPEG 2000)"),
    (b"\xffO\xffQ", "an image (JPEG 2000)"),
    (b"%PDF-", "a PDF document"),
)
# ISO base media brands of still images (AVIF, HEIF): `....ftyp<brand>`
IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1")


PNM = re.compile(rb"P[1-6]\s+[#\d]|P7\s+[#A-Z]")  # PAM (P7) goes on with WIDTH, HEIGHT, ...


def holds_data(path: Path) -> str:
    """What kind of data file `path` holds by its first bytes (DATA_MAGIC, WebP's RIFF header), or ''."""
    head = _first_bytes(path, 16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "an image (WebP)"
    if head[:2] == b"BM" and head[6:10] == bytes(4):  # its two reserved words: not a note that begins "BM"
        return "an image (BMP)"
    if head[4:8] == b"ftyp" and head[8:12] in IMAGE_BRANDS:
        return "an image (AVIF / HEIF)"
    if PNM.match(head):  # PBM, PGM, PPM, PAM: P1-P7, space, then a width or a comment (hq108 F9: a
        return "an image (PNM)"  # note beginning 'P6 is the plan' was refused as one)
    return next((kind for magic, kind in DATA_MAGIC if head.startswith(magic)), "")


def holds_table(path: Path) -> bool:
    """Whether a file's first 64 KB hold a calibration table's format (its keys sorted put it second; a
    rewritten table may put it later)."""
    return TABLE_MARK in _first_bytes(path, 1 << 16)


def _first_bytes(path: Path, size: int) -> bytes:
    """The first `size` bytes of a regular file; b'' for anything else (a pipe's open would wait for a
    writer) or what cannot be read (nothing of ours to keep)."""
    if not path.is_file():
        return b""
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError:
        return b""
