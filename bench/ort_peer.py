"""Quantize a model with onnxruntime.quantization.quantize_static, the peer quantkit is measured against.

Uses quantkit's own image loader and preprocessing so both tools see exactly the same calibration
tensors. onnxruntime.quantization is a benchmark peer only: quantkit's convert never imports it.

    python -m bench.ort_peer MODEL --images DIR --output OUT.onnx [--config minmax]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from quantkit.graph.model_inputs import image_input
from quantkit.image_folders import select_images
from quantkit.images import ImageLoader, resolve_preprocess


@dataclass(frozen=True)
class OrtConfig:
    """One way of calling quantize_static. All write QDQ; `defaults` passes nothing else."""

    label: str
    options: dict[str, Any] = field(default_factory=dict)


_PER_CHANNEL = {
    "per_channel": True,
    "activation_type": QuantType.QUInt8,
    "weight_type": QuantType.QInt8,
}
CONFIGS = {
    "defaults": OrtConfig("onnxruntime defaults"),
    "minmax": OrtConfig(
        "onnxruntime per-channel MinMax",
        {**_PER_CHANNEL, "calibrate_method": CalibrationMethod.MinMax},
    ),
    "percentile": OrtConfig(
        "onnxruntime per-channel Percentile",
        {**_PER_CHANNEL, "calibrate_method": CalibrationMethod.Percentile},
    ),
    "entropy": OrtConfig(
        "onnxruntime per-channel Entropy",
        {**_PER_CHANNEL, "calibrate_method": CalibrationMethod.Entropy},
    ),
}


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, name: str, loader: ImageLoader) -> None:
        self.name = name
        self.batches = iter(loader)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        if batch is None:
            return None
        assert isinstance(batch.data, np.ndarray)  # images: one input
        return {self.name: batch.data}


def quantize_with_ort(
    model: Path,
    images: Path,
    output: Path,
    num_images: int,
    options: PreprocessOptions,
    config: str,
    seed: int = 0,
    preprocess_model: bool = True,
) -> None:
    """quantize_static in QDQ format with one of CONFIGS, fed the same tensors quantkit calibrates on
    (the same seeded selection of images, the same preprocessing)."""
    proto = onnx.load(str(model))
    spec = image_input(proto)
    pre = resolve_preprocess(options, spec)
    loader = ImageLoader(select_images(ImageSelection(images, num_images, seed)), pre, 1)
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
            **CONFIGS[config].options,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="minmax")
    parser.add_argument("--preset", choices=[p.value for p in Preset], default="imagenet")
    parser.add_argument("--bgr", action="store_true")
    parser.add_argument("--resize", choices=[r.value for r in ResizeMode], default="crop")
    args = parser.parse_args()
    options = PreprocessOptions(preset=Preset(args.preset), bgr=args.bgr, resize=ResizeMode(args.resize))
    quantize_with_ort(args.model, args.images, args.output, args.num_images, options, args.config)


if __name__ == "__main__":
    main()
