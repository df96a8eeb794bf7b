"""An image's pixels in 8 bits: palette, alpha, CMYK, 16-bit, integer and float modes as RGB or grey, their
range judged by their values; and the peak of 16-bit images, for calibrate's warning on narrow data."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from quantkit.errors import ImageError

# catch_warnings swaps one process-wide list: two threads at once left 'ignore' in it (hq72 2)
WARNINGS = threading.Lock()
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit; larger images are refused, not decoded


@contextlib.contextmanager
def decoding() -> Iterator[None]:
    """One decode at a time (WARNINGS), its decoder's warnings said nowhere (a damaged TIFF tag's
    UserWarning reached the terminal: hq68 2, hq89 F6), and Pillow's process-wide limits quantkit's while
    it lasts (no truncated file filled in grey, no image past MAX_PIXELS), the host's own put back after:
    hq129 F4, set once at import, they undid a library caller's settings, and a caller's later
    LOAD_TRUNCATED_IMAGES = True (torch scripts set it) had half-missing JPEGs calibrated on, their bottom
    rows grey."""
    with WARNINGS, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, MAX_PIXELS
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = kept


def peak_16_bit(path: Path) -> tuple[float, float] | None:
    """(largest value, level: range_level, what to_mode reads its range by) of a 16-bit image (I;16, or I or
    F past 255: read over 0-65535, or wider where its level is), else None. A 16-bit colour image (a
    48- or 64-bit PNG or TIFF), which Pillow reads as each value's high byte, by that byte: at most
    (high + 1) x 256 - 1 (hq61: 12-bit data in 48-bit PNGs arrived at 15 of 255 with no word)."""
    try:
        with decoding(), Image.open(path) as image:
            return _peak(image)
    except MemoryError:
        raise
    except Exception:  # whatever a decoder raises on damaged data: the file's, skipped where it is read
        return None


def stored_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the file stores the image (its header alone, nothing decoded), or None where
    it cannot be opened."""
    try:
        with decoding(), Image.open(path) as image:
            return int(image.width), int(image.height)
    except MemoryError:
        raise
    except Exception:  # whatever a decoder raises on damaged data: the file's, skipped where it is read
        return None


def _peak(image: ImageFile.ImageFile) -> tuple[float, float] | None:
    wide = any(";16" in str(tile.args) for tile in image.tile)  # not a BMP's 16-bit RGB565
    colour = image.mode in ("RGB", "RGBA") and image.format in ("PNG", "TIFF") and wide
    if not (image.mode.startswith("I;16") or image.mode in ("I", "F") or colour):
        return None
    array = np.asarray(image, dtype=np.float64)
    if colour:
        peak = (float(np.max(array)) + 1.0) * 256.0 - 1.0
        return peak, peak
    peak = float(np.max(array))  # not past 255 in I or F: read over 0-255 (or 0-1); NaN: skipped
    sixteen = _sixteen_bit(image) or peak > 255
    return (peak, range_level(array)) if sixteen and np.isfinite(array).all() else None


def _sixteen_bit(image: Image.Image) -> bool:
    """Whether the image stores 16-bit samples: Pillow's I;16 modes, and a PGM of maxval past 255, which
    Pillow opens as mode I on 0-65535 (hq129 F1: a dark 16-bit PGM, 0..200 of 65535, was judged by its
    own values and fed 257x brighter than the same pixels saved as a 16-bit PNG, without a word)."""
    return image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PPM")


def range_level(array: np.ndarray) -> float:
    """The value an image's range is judged by: its 99.9th percentile, not its maximum (one pixel at
    1.0005 made a [0, 1] photo read as [0, 255], black, hunt39 F12; a nodata 2^31 - 1 in 16-bit data
    would read it over 31 bits). Values beyond are clipped."""
    return float(np.percentile(array, 99.9)) if array.size else 0.0


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """RGB (or L for one-channel models) from any mode: palette, CMYK, alpha, 16-bit, float (values in
    [0, 1] as such: a float TIFF of a photo was fed as a black image, hunt33), the range judged by
    range_level."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.array(image, dtype=np.float64)
        if image.mode == "F" and not np.isfinite(array).all():  # hq61: a NaN pixel made its range NaN
            raise ImageError("some of its pixels are not finite (NaN or inf); fill them or leave it out")
        if _wrapped(image):  # uint32 read as int32 by Pillow: values past 2^31 back where they were
            array[array < 0] += 2.0**32  # (hq94 F3: a 2^32 - 1 fill pixel refused the image)
        # a 16-bit image is read over 0-65535 whatever its level (hq68 14: the percentile's sorted copy
        # took a 9000 x 9000 grey PNG to 2.2 GB); the arithmetic in place, in the same order
        sixteen = _sixteen_bit(image)
        level = 0.0 if sixteen else range_level(array)
        unit = image.mode == "F" and level <= UNIT_SLACK
        top = 65535.0 if sixteen or level > 255 else 1.0 if unit else 255.0
        if level > 65535:  # wider data over its bit depth: 0..255,000 was clipped to white (hq57 A4)
            top = float(2 ** int(level).bit_length() - 1)
        _refuse_negative(array, top)
        if getattr(image, "tag_v2", {}).get(PHOTOMETRIC) == 0:  # hq89 F2: Pillow inverts 8-bit alone
            np.subtract(top, array, out=array)
        for step, value in ((np.divide, top), (np.multiply, 255.0), (np.add, 0.5)):
            step(array, value, out=array)
        image = Image.fromarray(np.clip(array, 0, 255, out=array).astype(np.uint8), "L")
    if image.mode == "PA" or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode in ("LAB", "HSV"):  # Pillow converts these to RGB alone (hq89 F8: LAB to L failed)
        image = image.convert("RGB")
    return image.convert("L" if channels == 1 else "RGB")


PHOTOMETRIC = 262  # a TIFF's PhotometricInterpretation: 0 is MinIsWhite (0 is white)


# a float image whose level is at most this is read over 0-1, its values past 1 clipped: a [0, 1] photo with
# noise (hq91 F9: level 1.03), highlights or an exposure past 1 (hq94 F1: 1.25, 1.4; a depth map to 1.3 m)
# was read over 0-255, black; a 0-255 frame this dark (all of it under 2 of 255: hq92 F2) reads bright
UNIT_SLACK = 2.0


def _wrapped(image: Image.Image) -> bool:
    """A TIFF of unsigned 32-bit samples, which Pillow reads as int32: a value past 2^31 arrives negative."""
    tags = getattr(image, "tag_v2", {})
    bits, form = (_first(tags.get(tag, 1)) for tag in (BITS_PER_SAMPLE, SAMPLE_FORMAT))
    return image.mode == "I" and bits == 32 and form == 1


def _first(value: object) -> object:
    """A TIFF tag's value, its first where it holds one per channel."""
    return value[0] if isinstance(value, tuple) and value else value


BITS_PER_SAMPLE, SAMPLE_FORMAT = 258, 339  # TIFF tags


def _refuse_negative(array: np.ndarray, top: float) -> None:
    """Refuse an image whose values reach far below 0 (its 0.1th percentile under a tenth of its range
    below 0: noise, a black level or a stray pixel under 0 is clipped, hq91 F6): signed data (int16, a
    float in [-1, 1]) was fed as black (hq89 F2)."""
    low = float(np.percentile(array, 0.1)) if array.size and array.min() < 0 else 0.0
    if low < -0.1 * top:
        raise ImageError(
            f"it holds negative pixel values (down to {float(array.min()):g}; signed data): "
            "quantkit reads pixels from 0 up; save it unsigned (8 or 16 bits, or float 0-1), or give "
            "model-ready arrays"
        )
