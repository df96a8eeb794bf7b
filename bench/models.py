"""The bench's models and data: which images calibrate each model and which evaluate it.

Calibration and evaluation images never overlap: the classifiers calibrate on coco-calib and are
evaluated on imagenet-dev; the detector calibrates on a seeded half of coco-calib (its pool, copied to a
work folder) and is evaluated on the other half; the ViT calibrates on seeded subsets of mnist-test and
is evaluated on the digits that no subset holds. A count above the pool's size cycles the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantkit.config import PreprocessOptions, Preset, ResizeMode

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
RESNET = "resnet50_random"


@dataclass(frozen=True)
class BenchModel:
    name: str
    calibration: str  # folder under assets/images
    evaluation: str | None  # None: no accuracy figures (random weights)
    labels: str | None  # file under assets/labels: top-1 against labels
    preprocess: PreprocessOptions
    detector: bool = False
    pool: int | None = None  # calibrate from a seeded subset of this many images only

    def path(self, work: Path) -> Path:
        return work / f"{RESNET}.onnx" if self.name == RESNET else ASSETS / "models" / f"{self.name}.onnx"


IMAGENET = PreprocessOptions()
MODELS = {
    m.name: m
    for m in (
        BenchModel("squeezenet1.1", "coco-calib", "imagenet-dev", "synset.txt", IMAGENET),
        BenchModel("mobilenetv2", "coco-calib", "imagenet-dev", "synset.txt", IMAGENET),
        BenchModel(
            "yolox_nano",
            "coco-calib",
            "coco-calib",
            None,
            PreprocessOptions(preset=Preset.raw, bgr=True, resize=ResizeMode.letterbox),
            detector=True,
            pool=50,
        ),
        BenchModel(
            "vit_mnist",
            "mnist-test",
            "mnist-test",
            "mnist_classes.txt",
            PreprocessOptions(mean=(33.33,), std=(78.57,), resize=ResizeMode.squash),
        ),
        BenchModel(RESNET, "coco-calib", None, None, IMAGENET),
    )
}


def preprocess_spec(options: PreprocessOptions) -> dict[str, object]:
    """The JSON form bench.quantize reads back (see bench.quantize.preprocess_from)."""
    return {
        "preset": (options.preset or Preset.imagenet).value,
        "mean": list(options.mean) if options.mean else None,
        "std": list(options.std) if options.std else None,
        "bgr": options.bgr,
        "resize": options.resize.value,
    }
