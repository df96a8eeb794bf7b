"""Seeded synthetic inputs for checks that need no data: an opset upgrade's equivalence, the float16 smoke
test without a calibration table.

The size: --input-size when given, else the model's fixed size, else the first of DEFAULT_SIDES (square)
that the model runs on. The values: image-like, not noise: flat patches of BLOCK x BLOCK pixels, uniform
in [0, 1], normalised with ImageNet's mean and std (about -2 to 2.4). White noise excites a network as no
photo does: YOLOX-Nano's float16 conversion measures 21 dB on standard-normal noise against 42 dB on
these patches and 38 dB on COCO photos; MobileNetV2 46 / 48 / 45 dB. A float model that expects 0-255
pixels sees a dark image, which still exercises every layer; a uint8 input gets the patches as 0-255.
"""

from __future__ import annotations

import numpy as np
import onnx

from quantkit.config.preprocessing import check_fixed_sides
from quantkit.errors import ModelError
from quantkit.graph.model_inputs import float_inputs, image_input
from quantkit.results import Feed, InputSpec, feed_take
from quantkit.runtime import Session

DEFAULT_SIDES = (224, 256, 320, 416, 512, 640, 32, 28)
DEFAULT_CHANNELS = 3
SAMPLES = 4
SEED = 0
BLOCK = 8
MEAN, STD = 0.45, 0.226  # ImageNet's, averaged over the channels


def synthetic_samples(
    model: onnx.ModelProto, size: tuple[int, int] | None = None, count: int = SAMPLES, exact: bool = True
) -> Feed:
    """`count` seeded samples [count, ...] of the model's input, without its batch dimension; for a model
    with several inputs {name: [count, ...]}, image-like for 4-D inputs, standard normal for the others,
    each input seeded apart. exact: `size` must leave no dimension open (the user's --input-size); else
    the ones it leaves are searched (a size read from a table, for checks of the model's rewrites)."""
    specs = float_inputs(model)
    if len(specs) <= 1:
        specs = (image_input(model),)
    layouts = [_layout(spec) for spec in specs]
    dynamic = any(d is None for dims, _ in layouts for d in dims)
    if not dynamic or size is not None:
        for spec, (dims, last) in zip(specs, layouts, strict=True):
            if size is not None and len(dims) == 3:
                height, width = (0, 1) if last else (1, 2)
                check_fixed_sides(size, (dims[height], dims[width]), spec.shape)
                dims[height], dims[width] = size
        open_ = next((spec for spec, (dims, _) in zip(specs, layouts, strict=True) if None in dims), None)
        if open_ is None:
            return _feed(
                specs, [[int(d) for d in dims if d is not None] for dims, _ in layouts], layouts, count
            )
        if exact:
            raise ModelError(  # hq147 F9: it said nothing of what to do
                f"input {open_.name!r} has dynamic dimensions {list(open_.shape)} besides an image's H "
                "and W, which --input-size sets: leave --input-size out (quantkit picks sizes the model runs "
                "on), or give -c TABLE of the inputs it is fed (quantkit calibrate --inputs)"
            )
        # not exact: the other dims searched as a dynamic model's are (hq150 F1: a table's [N, 1, 1, S]
        # mask was read as the image's H x W, and fp8's opset check refused the model)
    session = Session.of(model, spin=False)
    for side in dict.fromkeys((*(size or ()), *DEFAULT_SIDES)):  # the table's sides first (its sequence)
        shapes = [[side if d is None else int(d) for d in dims] for dims, _ in layouts]
        samples = _feed(specs, shapes, layouts, count)
        try:
            session.run_samples(feed_take(samples, 0, 1))
        except ModelError:
            continue
        return samples
    sides = ", ".join(str(s) for s in DEFAULT_SIDES)
    what = (
        f"input {specs[0].name!r} has dynamic size {list(specs[0].shape)}"
        if len(specs) == 1
        else "inputs "
        + ", ".join(f"{spec.name!r} {list(spec.shape)}" for spec in specs)
        + " have dynamic sizes"
    )
    raise ModelError(f"{what} and the model runs on none of the sides {sides}; pass --input-size HxW")


def _layout(spec: InputSpec) -> tuple[list[int | None], bool]:
    """(the input's dims without the batch, a dynamic channel count filled in; whether it is NHWC)."""
    dims = list(spec.shape[1:])
    last = _channels_last(dims)
    if len(dims) == 3 and dims[2 if last else 0] is None:
        dims[2 if last else 0] = DEFAULT_CHANNELS
    return dims, last


def _channels_last(dims: list[int | None]) -> bool:
    """NHWC, as images.py reads it: [H, W, C] with C of 1 or 3 and a first dim that is no channel count;
    or C of 4 (RGBA, or RGB and a mask: M-LSD's [1,320,320,4], hunt52 B3, read as C 320, H 320, W 4,
    refused its own arrays' 320x320), which images cannot feed but arrays do."""
    return len(dims) == 3 and dims[0] not in (1, 3, 4) and dims[2] in (1, 3, 4)


def _feed(
    specs: tuple[InputSpec, ...],
    shapes: list[list[int]],
    layouts: list[tuple[list[int | None], bool]],
    count: int,
) -> Feed:
    """One input's samples as an array; several inputs' as {name: samples}, the k-th seeded with k."""
    drawn = [
        _draw(shape, count, last, k, spec.pixels)
        for k, (spec, shape, (_, last)) in enumerate(zip(specs, shapes, layouts, strict=True))
    ]
    return drawn[0] if len(specs) == 1 else {spec.name: d for spec, d in zip(specs, drawn, strict=True)}


def _draw(
    shape: list[int], count: int, channels_last: bool = False, stream: int = 0, pixels: bool = False
) -> np.ndarray:
    """[count, *shape]: patches over H and W of an image-like input ([C, H, W], or [H, W, C] when
    channels_last), standard normal otherwise. stream: which input of several (0: the first, or the one);
    pixels: the input takes uint8 pixels, so the patches are 0-255 (float32, integer-valued)."""
    rng = np.random.default_rng(SEED if stream == 0 else [SEED, stream])
    if len(shape) != 3:
        return rng.standard_normal([count, *shape]).astype(np.float32)
    channels, height, width = (shape[2], shape[0], shape[1]) if channels_last else shape
    coarse = rng.uniform(0.0, 1.0, (count, channels, -(-height // BLOCK), -(-width // BLOCK)))
    patches = np.repeat(np.repeat(coarse, BLOCK, axis=2), BLOCK, axis=3)[:, :, :height, :width]
    images = (np.rint(patches * 255.0) if pixels else (patches - MEAN) / STD).astype(np.float32)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)) if channels_last else images
