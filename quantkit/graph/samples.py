"""Seeded synthetic inputs for checks that need no data: an opset upgrade's equivalence, the float16 smoke
test without a calibration table.

The size: --input-size when given, else the model's fixed size, else the first of DEFAULT_SIDES (square)
that the model runs on. The values: image-like, not noise: flat patches of BLOCK x BLOCK pixels, uniform
in [0, 1], normalised with ImageNet's mean and std (about -2 to 2.4). White noise excites a network as no
photo does: YOLOX-Nano's float16 conversion measures 21 dB on standard-normal noise against 42 dB on
these patches and 38 dB on COCO photos; MobileNetV2 46 / 48 / 45 dB. A model that expects 0-255 pixels
sees a dark image, which still exercises every layer.
"""

from __future__ import annotations

import numpy as np
import onnx

from quantkit.errors import ModelError
from quantkit.graph.model_io import image_input
from quantkit.runtime import Session

DEFAULT_SIDES = (224, 256, 320, 416, 512, 640, 32, 28)
DEFAULT_CHANNELS = 3
SAMPLES = 4
SEED = 0
BLOCK = 8
MEAN, STD = 0.45, 0.226  # ImageNet's, averaged over the channels


def synthetic_samples(
    model: onnx.ModelProto, size: tuple[int, int] | None = None, count: int = SAMPLES
) -> np.ndarray:
    """`count` seeded samples [count, ...] of the model's one input, without its batch dimension."""
    spec = image_input(model)
    dims = list(spec.shape[1:])
    last = len(dims) == 3 and dims[0] not in (1, 3) and dims[2] in (1, 3)  # NHWC, as images.py reads it
    channel, height, width = (2, 0, 1) if last else (0, 1, 2)
    if len(dims) == 3 and dims[channel] is None:
        dims[channel] = DEFAULT_CHANNELS
    dynamic = [k for k, d in enumerate(dims) if d is None]
    if size is not None and len(dims) == 3:
        dims[height], dims[width] = size
    if not dynamic or size is not None:
        if any(d is None for d in dims):
            raise ModelError(f"input {spec.name!r} has dynamic dimensions {list(spec.shape)} besides H and W")
        return _draw([int(d) for d in dims if d is not None], count, last)
    session = Session.of(model, spin=False)
    for side in DEFAULT_SIDES:
        shape = [side if d is None else int(d) for d in dims]
        samples = _draw(shape, count, last)
        try:
            session.run_samples(samples[:1])
        except ModelError:
            continue
        return samples
    sides = ", ".join(str(s) for s in DEFAULT_SIDES)
    raise ModelError(
        f"input {spec.name!r} has dynamic size {list(spec.shape)} and the model runs on none of the sides "
        f"{sides}; pass --input-size HxW"
    )


def _draw(shape: list[int], count: int, channels_last: bool = False) -> np.ndarray:
    """[count, *shape]: patches over H and W of an image-like input ([C, H, W], or [H, W, C] when
    channels_last), standard normal otherwise."""
    rng = np.random.default_rng(SEED)
    if len(shape) != 3:
        return rng.standard_normal([count, *shape]).astype(np.float32)
    channels, height, width = (shape[2], shape[0], shape[1]) if channels_last else shape
    coarse = rng.uniform(0.0, 1.0, (count, channels, -(-height // BLOCK), -(-width // BLOCK)))
    pixels = np.repeat(np.repeat(coarse, BLOCK, axis=2), BLOCK, axis=3)[:, :, :height, :width]
    images = ((pixels - MEAN) / STD).astype(np.float32)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1)) if channels_last else images
