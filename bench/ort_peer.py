"""Quantize a model with onnxruntime.quantization.quantize_static, the peer quantkit is measured against.

Uses quantkit's own image loader and preprocessing so both tools see exactly the same calibration
tensors. onnxruntime.quantization is a benchmark peer only: quantkit's convert never imports it.

    python bench/ort_peer.py MODEL --images DIR --output OUT.onnx [--per-channel] [--method minmax]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from quantkit.config import ImageSelection, PreprocessOptions, Preset, ResizeMode
from quantkit.graph.model_io import image_input
from quantkit.images import ImageLoader, resolve_preprocess, select_images

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, name: str, loader: ImageLoader) -> None:
        self.name = name
        self.batches = iter(loader)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch.data}


def quantize_with_ort(
    model: Path,
    images: Path,
    output: Path,
    num_images: int,
    options: PreprocessOptions,
    per_channel: bool,
    method: str,
    preprocess_model: bool = True,
) -> None:
    proto = onnx.load(str(model))
    spec = image_input(proto)
    pre = resolve_preprocess(options, spec)
    loader = ImageLoader(select_images(ImageSelection(images, num_images)), pre, 1)
    with tempfile.TemporaryDirectory() as tmp:
        source = model
        if preprocess_model:  # as onnxruntime's documentation advises before quantize_static
            source = Path(tmp) / "pre.onnx"
            quant_pre_process(str(model), str(source))
        quantize_static(
            str(source),
            str(output),
            _Reader(spec.name, loader),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[method],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--method", choices=sorted(METHODS), default="minmax")
    parser.add_argument("--preset", choices=[p.value for p in Preset], default="imagenet")
    parser.add_argument("--bgr", action="store_true")
    parser.add_argument("--resize", choices=[r.value for r in ResizeMode], default="crop")
    args = parser.parse_args()
    options = PreprocessOptions(preset=Preset(args.preset), bgr=args.bgr, resize=ResizeMode(args.resize))
    quantize_with_ort(
        args.model, args.images, args.output, args.num_images, options, args.per_channel, args.method
    )


if __name__ == "__main__":
    main()
