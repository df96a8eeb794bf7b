"""FP16 beside BF16 on the shared models: output SQNR against FP32 on held-out images, top-1 agreement
and file size. The BF16 model is run as its float32 emulation (graph.emulate: bfloat16 storage, float32
arithmetic inside each op), since onnxruntime's CPU provider has no bfloat16 kernels; with openvino
importable, also as OpenVINO runs the bfloat16 file itself.

    python -m bench.float_formats WORK   # WORK holds <key>.calib.json, <key>.fp16.onnx, <key>.bf16.onnx

Held out: the classifiers calibrate on coco-calib and are measured on imagenet-dev; the detector on
imagenet-dev photos too (it calibrates on coco-calib); the ViT on mnist-test images outside its seeded
calibration subset (the table's --num-images, seed 0). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench.models import ASSETS
from quantkit.calib.table import load
from quantkit.config import ImageSelection, Preprocess
from quantkit.graph.emulate import emulate, stored_as
from quantkit.image_folders import find_images, select_images
from quantkit.images import ImageLoader
from quantkit.runtime import Session

BFLOAT16 = onnx.TensorProto.BFLOAT16
# key: (model file, evaluation folder, images measured, calibration subset of the same folder or 0)
MODELS = {
    "sq": ("squeezenet1.1", "imagenet-dev", 200, 0),
    "mb": ("mobilenetv2", "imagenet-dev", 200, 0),
    "yx": ("yolox_nano", "imagenet-dev", 50, 0),
    "vit": ("vit_mnist", "mnist-test", 500, 200),
}


def held_out(folder: Path, count: int, calibrated: int) -> list[Path]:
    """`count` images of the folder (seeded, seed 1) outside the seed-0 calibration subset."""
    taken = set(select_images(ImageSelection(folder, calibrated, 0))) if calibrated else set()
    pool = [p for p in find_images(folder) if p not in taken]
    keep = np.sort(np.random.default_rng(1).choice(len(pool), size=min(count, len(pool)), replace=False))
    return [pool[i] for i in keep]


class Noise:
    def __init__(self) -> None:
        self.signal = self.noise = 0.0
        self.agree = self.total = 0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        self.signal += float(np.sum(ref64**2))
        self.noise += float(np.sum((ref64 - got64) ** 2))
        if ref.ndim == 2:
            self.agree += int(np.sum(ref.argmax(1) == got.argmax(1)))
            self.total += ref.shape[0]

    def row(self) -> str:
        db = 10 * np.log10(self.signal / self.noise) if self.noise else float("inf")
        agreement = f"{100 * self.agree / self.total:.1f}%" if self.total else "-"
        return f"{db:.1f} dB | {agreement}"


def bf16_emulation(model: onnx.ModelProto) -> onnx.ModelProto:
    """What onnxruntime runs for a bfloat16 model: its float32 emulation (graph.emulate: bfloat16 storage,
    float32 arithmetic inside each op); the model itself where it stores nothing in bfloat16."""
    stored = stored_as(model, BFLOAT16)
    return emulate(model, stored, BFLOAT16) if stored else model


def write_bf16_emulation(path: Path) -> Path:
    """The emulation of the bfloat16 model at `path`, written beside it (<stem>.emulated.onnx)."""
    target = path.with_name(path.stem + ".emulated.onnx")
    onnx.save(bf16_emulation(onnx.load(str(path))), str(target))
    return target


def _openvino(path: Path) -> Any:
    ov: Any = importlib.import_module("openvino")  # optional: not a dependency
    return ov.Core().compile_model(str(path), "CPU")


def measure(work: Path, key: str) -> str:
    name, folder, count, calibrated = MODELS[key]
    fp32_path = ASSETS / "models" / f"{name}.onnx"
    fp16_path, bf16_path = work / f"{key}.fp16.onnx", work / f"{key}.bf16.onnx"
    pre = Preprocess.from_dict(load(work / f"{key}.calib.json").meta["preprocess"])
    fp16, emulated = Session(fp16_path), Session.of(bf16_emulation(onnx.load(str(bf16_path))))
    runs: dict[str, Callable[[np.ndarray], dict[str, np.ndarray]]] = {
        "fp16": lambda x: fp16.run(x),
        "bf16 emulated": lambda x: emulated.run(x),
    }
    if importlib.util.find_spec("openvino") is not None:
        compiled = _openvino(bf16_path)
        runs["bf16 OpenVINO"] = lambda x: {"out": next(iter(compiled([x]).values()))}
    fp32 = Session(fp32_path)
    noise = {k: Noise() for k in runs}
    fixed = fp32.fixed_batch
    for batch in ImageLoader(held_out(ASSETS / "images" / folder, count, calibrated), pre, fixed or 8):
        data = np.asarray(batch.data)
        for x in [data[i : i + 1] for i in range(len(data))] if fixed else [data]:
            ref = next(iter(fp32.run(x).values()))
            for k, run in runs.items():
                noise[k].add(ref, next(iter(run(x).values())))
    sizes = [p.stat().st_size / 1e6 for p in (fp32_path, fp16_path, bf16_path)]
    cells = " | ".join(noise[k].row() for k in runs)
    return f"| {name} | {count} | {sizes[0]:.2f} | {sizes[1]:.2f} | {sizes[2]:.2f} | {cells} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    ov = importlib.util.find_spec("openvino") is not None
    columns = ["FP16", "BF16 emulated"] + (["BF16 OpenVINO"] if ov else [])
    head = " | ".join(f"{c} SQNR | {c} agree" for c in columns)
    print(f"| model | images | FP32 MB | FP16 MB | BF16 MB | {head} |")
    print("|" + "---|" * (5 + 2 * len(columns)))
    for key in args.models.split(","):
        print(measure(args.work, key))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
