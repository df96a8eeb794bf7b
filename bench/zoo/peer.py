"""onnxruntime.quantization's per-channel QDQ model of one corpus model, in its own process.

    python -m bench.zoo.peer MODEL --images DIR --num-images N --config minmax --output OUT.onnx
                             [-- quantkit preprocessing flags]

The same images, selection and preprocessing as `quantkit calibrate` (bench.ort_peer feeds
quantize_static through quantkit's own image loader). Given onnxruntime its best chance, as a
careful user would: a model below opset 13 is first upgraded with onnx's version converter
(per-channel QDQ needs 13), and when onnxruntime's recommended quant_pre_process fails on the
model, quantize_static runs on it without that step. Each such step is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

from bench.ort_peer import CONFIGS, quantize_with_ort
from bench.zoo.flags import preprocess_options
from quantkit.errors import ModelError
from quantkit.graph import model_io


def upgraded(model: Path, folder: Path) -> Path:
    """The model itself when at opset 13 or later, else its opset-13 conversion (when onnx can), made by
    the converter quantkit itself uses (model_io.ensure_opset)."""
    proto = onnx.load(str(model))
    opset = model_io.opset_version(proto)
    try:
        converted = model_io.ensure_opset(proto, model_io.PER_CHANNEL_OPSET)
    except ModelError as exc:
        print(f"{exc}; using opset {opset}")
        return model
    if converted is proto:
        return model
    out = folder / "upgraded.onnx"
    onnx.save(converted, str(out))
    print(f"opset {opset} -> {model_io.PER_CHANNEL_OPSET} with onnx's version converter")
    return out


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    flags: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, flags = args_in[:cut], args_in[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="minmax")
    args = parser.parse_args(args_in)
    options = preprocess_options(tuple(flags))
    with tempfile.TemporaryDirectory(dir=args.output.parent) as tmp:
        source = upgraded(args.model, Path(tmp))
        try:
            quantize_with_ort(source, args.images, args.output, args.num_images, options, args.config)
        except Exception as exc:
            print(f"with quant_pre_process: {type(exc).__name__}: {exc}; retrying without it")
            quantize_with_ort(
                source,
                args.images,
                args.output,
                args.num_images,
                options,
                args.config,
                preprocess_model=False,
            )
    print(f"wrote {args.output} ({CONFIGS[args.config].label})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
