"""Configuration of how images become model inputs: normalisation presets, resizing, layout, the resolved
preprocessing and which images of a folder to use."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from quantkit.config.base import as_count, as_enum, as_floats, as_number, as_size, set_switches
from quantkit.config.fixed_inputs import FixedInput, given_values
from quantkit.errors import ConfigError


class Preset(str, Enum):
    """Named normalisations, in 0-255 pixel units."""

    imagenet = "imagenet"
    inception = "inception"
    unit = "unit"
    raw = "raw"


PRESETS: dict[Preset, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    Preset.imagenet: ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    Preset.inception: ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    Preset.unit: ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    Preset.raw: ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


class ResizeMode(str, Enum):
    crop = "crop"  # shorter side to size/0.875, center crop
    squash = "squash"  # resize to size, ignoring aspect ratio
    letterbox = "letterbox"  # keep aspect ratio, pad (114, --pad) at the bottom/right (YOLOX convention)
    letterbox_center = "letterbox-center"  # the same, the image centred (Ultralytics YOLOv5/v8/11)


class Layout(str, Enum):
    NCHW = "NCHW"
    NHWC = "NHWC"


CROP_FRACTION = 0.875
LETTERBOX_PAD = 114.0


# pixels an input image may have: PIL refuses to make larger images (a decompression bomb), and one
# 8192x8192 RGB sample is 805 MB in float32 before the model's activations
MAX_INPUT_PIXELS = 8192 * 8192


def check_pad(pad: float) -> None:
    """A whole 0-255 pixel value: the fill is drawn in 8-bit pixels (hq129 F13: 114.5 was recorded as
    given and fed as 114, 0.5 as 0, 1.5 as 2)."""
    if not (math.isfinite(pad) and 0.0 <= pad <= 255.0 and pad == int(pad)):
        raise ConfigError(
            f"--pad takes a whole pixel value from 0 to 255 (the letterbox's fill); got {pad:g}"
        )


FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes one model input sample. Fully resolved: every field is known."""

    height: int
    width: int
    channels: int = 3
    layout: Layout = Layout.NCHW
    mean: tuple[float, ...] = PRESETS[Preset.imagenet][0]
    std: tuple[float, ...] = PRESETS[Preset.imagenet][1]
    bgr: bool = False
    resize: ResizeMode = ResizeMode.crop
    pad: float = LETTERBOX_PAD  # the letterbox's fill, a 0-255 pixel value (rapid-table pads with 0)
    image: str = ""  # the input the images feed; named where others get fixed values
    fixed: tuple[FixedInput, ...] = ()  # the model's other inputs, each one value for every sample

    def __post_init__(self) -> None:
        check_pad(self.pad)
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"input size {self.height}x{self.width} is not positive; pass --input-size HxW")
        if self.height * self.width > MAX_INPUT_PIXELS:
            raise ConfigError(
                f"input size {self.height}x{self.width} is {self.height * self.width} pixels an image, more "
                f"than the {MAX_INPUT_PIXELS} (8192x8192) quantkit feeds; pass a smaller --input-size HxW"
            )
        if self.channels not in (1, 3):
            raise ConfigError(f"models with {self.channels} input channels are not supported; use 1 or 3")
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise ConfigError(
                    f"--{label} has {len(values)} values but the model takes {self.channels} channel(s); "
                    f"give 1 or {self.channels}"
                )
        for label, values in (("mean", self.mean), ("std", self.std)):
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"--{label} takes finite numbers; got {','.join(str(v) for v in values)}")
        if any(s == 0 for s in self.std):
            raise ConfigError("--std has a zero; every std must be non-zero")
        # the samples are float32: (255 - mean) / std must stay within it (hq114 F7: --std 1e-300 and
        # --mean 1e300 passed, then numpy warned 8-24 lines and a NaN/Inf error named neither option)
        reach = max(abs(m) for m in self.mean) + 255.0
        extremes = (*self.mean, *self.std)  # each one held by float32 too (hq117 F2: --std 1e39 read as inf)
        if reach / min(abs(s) for s in self.std) > FLOAT32_MAX or max(abs(v) for v in extremes) > FLOAT32_MAX:
            raise ConfigError(
                f"--mean / --std put the samples past float32's range (about 3.4e38): mean "
                f"{','.join(f'{v:g}' for v in self.mean)}, std {','.join(f'{v:g}' for v in self.std)} "
                "(0-255 units); give values a model's input can hold"
            )
        # hunt55 C3: a typo flipped one channel's sign in silence; every std negative inverts the image,
        # as trueocr's page classifier reads it (--mean 255 --std -255: 1 - x/255)
        if any(s < 0 for s in self.std) and any(s > 0 for s in self.std):
            raise ConfigError(
                f"--std mixes signs ({','.join(f'{v:g}' for v in self.std)}): a negative one flips that "
                "channel alone; give every std positive, or every one negative to invert the image"
            )

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """One preprocessed sample's shape: (C, H, W) or (H, W, C) by the layout."""
        side = (self.height, self.width)
        return (self.channels, *side) if self.layout is Layout.NCHW else (*side, self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "layout": self.layout.value,
            "mean": list(self.mean),
            "std": list(self.std),
            "bgr": self.bgr,
            "resize": self.resize.value,
            "pad": self.pad,
        } | ({"image": self.image, "fixed_inputs": [f.to_dict() for f in self.fixed]} if self.fixed else {})

    def feed(self, images: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """What the model is fed for a batch of preprocessed images [N, ...]: the images, or, where other
        inputs have fixed values, {input name: [N, ...]} with each value once per image."""
        if not self.fixed:
            return images
        return {self.image: images} | {f.name: f.rows(len(images)) for f in self.fixed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        try:
            return cls(
                height=int(data["height"]),
                width=int(data["width"]),
                channels=int(data["channels"]),
                layout=Layout(data["layout"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                bgr=bool(data["bgr"]),
                resize=ResizeMode(data["resize"]),
                pad=float(data.get("pad", LETTERBOX_PAD)),  # tables before --pad: 114
                image=str(data.get("image", "")),
                fixed=tuple(FixedInput.from_dict(f) for f in data.get("fixed_inputs", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the recorded preprocessing is malformed ({exc}); recalibrate") from exc


# PreprocessOptions' fields that shape images (model-ready arrays are fed as they are)
IMAGE_OPTIONS = ("preset", "mean", "std", "bgr", "resize", "input_size", "pad")


@dataclass(frozen=True)
class PreprocessOptions:
    """What the user asked for; the model's input fills in the rest (see images.resolve_preprocess)."""

    preset: Preset | None = None  # None: imagenet for a float input, raw for uint8 pixels
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool = False
    resize: ResizeMode = ResizeMode.crop
    input_size: tuple[int, int] | None = None
    pad: float | None = None  # None: LETTERBOX_PAD
    # other inputs' values, (name, values) pairs (the API also takes {name: values}): config.fixed_inputs
    input_values: tuple[tuple[str, tuple[float, ...]], ...] = ()
    # the fields given (by keyword or position), which compare takes over the preprocessing a model
    # records, as the CLI's flags (hq157 F1: the API's Preprocess(bgr=False) replaced it all)
    asked: ClassVar[frozenset[str]] = frozenset()

    if TYPE_CHECKING:  # what the API takes (the README's strings and lists), for a user's type checker

        def __init__(
            self,
            preset: Preset | str | None = None,
            mean: Sequence[float] | npt.NDArray[Any] | float | str | None = None,
            std: Sequence[float] | npt.NDArray[Any] | float | str | None = None,
            bgr: bool | str = False,
            resize: ResizeMode | str = ResizeMode.crop,
            input_size: tuple[int, int] | Sequence[int] | str | None = None,
            pad: float | str | None = None,
            input_values: Mapping[str, Sequence[float] | float | str]
            | Sequence[tuple[str, Sequence[float] | float | str]] = (),
        ) -> None: ...

    else:

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            """The dataclass's own __init__, recording which fields were given (`asked`)."""
            names = [f.name for f in fields(self)]
            unknown = sorted(set(kwargs) - set(names))
            if unknown:  # hq144: Python's TypeError, where the API's calls say it in one line
                near = difflib.get_close_matches(unknown[0], names, 1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(
                    f"quantkit.Preprocess has no option {unknown[0]!r}{hint}; it takes {', '.join(names)}"
                )
            if len(args) > len(names) or set(names[: len(args)]) & set(kwargs):
                raise ConfigError(f"quantkit.Preprocess takes its options {', '.join(names)} once each")
            given = dict(zip(names, args, strict=False)) | kwargs
            for f in fields(self):
                object.__setattr__(self, f.name, given.get(f.name, f.default))
            self.__post_init__()
            # every field given: dataclasses.replace, or a copy; the fields set apart from their defaults
            # then (hq160 F2: replace(Preprocess(), bgr=False) read as all given, ImageNet's over a ViT's)
            every = len(given) == len(names)
            asked = {f.name for f in fields(self) if getattr(self, f.name) != f.default} if every else given
            object.__setattr__(self, "asked", frozenset(asked))

    def __post_init__(self) -> None:
        """Strings for the choices and lists for the numbers are accepted (the Python API)."""
        object.__setattr__(self, "input_values", given_values(self.input_values))
        if self.preset is not None:
            object.__setattr__(self, "preset", as_enum(Preset, self.preset, "--preset"))
        object.__setattr__(self, "resize", as_enum(ResizeMode, self.resize, "--resize"))
        set_switches(self, "bgr")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, as_floats(values, f"--{name}"))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", as_size(self.input_size))
        if self.pad is not None:  # hq103 F3: pad="abc" raised float()'s ValueError, pad=[114] a TypeError
            object.__setattr__(self, "pad", as_number(self.pad, "--pad"))
            check_pad(self.pad)
            if self.resize not in (ResizeMode.letterbox, ResizeMode.letterbox_center):  # hunt48 C2: unread
                raise ConfigError(
                    f"--pad fills a letterbox's border; --resize {self.resize.value} has none: add --resize "
                    "letterbox (or letterbox-center), or leave --pad out"
                )

    @property
    def fixed_names(self) -> tuple[str, ...]:
        """The inputs --input-value gives a value, in the order given."""
        return tuple(name for name, _ in self.input_values)

    def refuse_for_arrays(self) -> None:
        """Raise ConfigError where an option that shapes images is set (not its default) beside model-ready
        arrays, which are fed as they are (hq146 F1: --inputs took --mean, --bgr, --input-size 64x64 on a
        32x32 model and read none of them)."""
        default = PreprocessOptions()
        set_ = [f"--{n.replace('_', '-')}" for n in IMAGE_OPTIONS if getattr(self, n) != getattr(default, n)]
        if set_:
            raise ConfigError(
                f"{', '.join(set_)} shape images; model-ready arrays (--inputs, the API's arrays) are fed as "
                "they are: leave them out, or give images"
            )


# help(quantkit.Preprocess) shows the options, not the recording __init__'s (*args, **kwargs) (hq160 F6)
setattr(  # noqa: B010 (a function's attribute mypy does not know)
    PreprocessOptions.__init__,
    "__signature__",
    inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *(
                inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default)
                for f in fields(PreprocessOptions)
            ),
        ]
    ),
)


@dataclass(frozen=True)
class ImageSelection:
    """Which images of a folder to use: all (sorted), or a seeded subset; never an image twice (asking
    for more than the folder holds uses all of them, with a warning)."""

    folder: Path
    num_images: int | None = None
    seed: int = 0
    option: str = "--num-images"  # the flag that set num_images, for messages
    files: tuple[Path, ...] | None = None  # a list of image files instead of all under folder (the API)

    def __post_init__(self) -> None:
        if self.num_images is not None:
            object.__setattr__(self, "num_images", as_count(self.num_images, self.option))
        object.__setattr__(self, "seed", as_count(self.seed, "--seed"))
        if self.seed < 0:  # hq57 B1: numpy's default_rng raised an internal error
            raise ConfigError(f"--seed must be 0 or more, got {self.seed}")
        if self.num_images is not None and self.num_images < 1:
            raise ConfigError(f"{self.option} must be at least 1, got {self.num_images}")


def shape_text(shape: Sequence[int | None]) -> str:
    """[?,3,48,?]: a model input's shape as the messages print it (? for a dynamic dimension)."""
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def check_fixed_sides(
    size: tuple[int, int], fixed: tuple[int | None, int | None], shape: Sequence[int | None]
) -> None:
    """Refuse an --input-size (H, W) whose height or width differs from one the model fixes (`fixed`:
    its (H, W), None where dynamic; `shape`: its whole input, for the message)."""
    for side, asked, known in (("height", size[0], fixed[0]), ("width", size[1], fixed[1])):
        if known is not None and asked != known:
            raise ConfigError(
                f"--input-size {size[0]}x{size[1]} does not match the model's fixed {side} {known} "
                f"(its input is {shape_text(shape)}); leave --input-size out, or give a model exported with "
                "that size"  # hq146 F8(c): no fix, where calibrate's line gave one
            )
