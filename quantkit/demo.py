"""`quantkit demo`: shrink the embedded digits CNN on its held-out digits (offline), or a model from the
ONNX model zoo (downloaded once, checked against a pinned sha256) on the user's images."""

from __future__ import annotations

from pathlib import Path

from quantkit import zoo
from quantkit.config import (
    CalibrateConfig,
    CompareConfig,
    ConvertConfig,
    Gates,
    ImageSelection,
    LatencyConfig,
    PreprocessOptions,
    Preset,
    ResizeMode,
    ShrinkConfig,
)
from quantkit.errors import ConfigError
from quantkit.pipeline import Progress
from quantkit.results import ShrinkResult
from quantkit.shrink import shrink

EMBEDDED = Path(__file__).resolve().parent.parent / "calibration_data"
# The embedded model takes 24x24 greyscale digits scaled to [0, 1] (as calibration_data/quantkit.toml says).
DIGITS = PreprocessOptions(preset=Preset.unit, resize=ResizeMode.squash)
GATES = Gates(max_drop=1.0, max_size_ratio=0.5)


def embedded(
    output_dir: Path, cache_dir: Path, progress: Progress, step_summary: Path | None = None
) -> ShrinkResult:
    """cache_dir: quantkit's cache root (calibration tables go in calibration/ under it)."""
    model = EMBEDDED / "digits_cnn.onnx"
    folders = [EMBEDDED / "digits" / "calib", EMBEDDED / "digits" / "val", EMBEDDED / "labels.txt"]
    if not model.is_file() or not all(p.exists() for p in folders):
        raise ConfigError(
            f"the embedded demo model is not at {EMBEDDED}: it ships with a source checkout of quantkit "
            "(install with pip install -e .), or run `quantkit demo --zoo NAME --images DIR`"
        )
    calib, val, labels = folders
    config = ShrinkConfig(
        calibration=CalibrateConfig(ImageSelection(calib), DIGITS),
        convert=ConvertConfig(),
        evaluation=CompareConfig(ImageSelection(val), DIGITS, labels=labels, latency=LatencyConfig(runs=50)),
        gates=GATES,
        cache_dir=cache_dir / "calibration",
    )
    return shrink(model, output_dir, config, progress, step_summary)


def from_zoo(
    name: str,
    images: Path,
    eval_images: Path | None,
    labels: Path | None,
    output_dir: Path,
    cache_dir: Path,
    progress: Progress,
    step_summary: Path | None = None,
    base_url: str = zoo.ZOO_URL,
) -> ShrinkResult:
    model = zoo.fetch(zoo.lookup(name), cache_dir / "zoo", base_url)
    imagenet = PreprocessOptions()
    config = ShrinkConfig(
        calibration=CalibrateConfig(ImageSelection(images, 100), imagenet),
        convert=ConvertConfig(),
        evaluation=CompareConfig(
            ImageSelection(eval_images or images), imagenet, labels=labels, latency=LatencyConfig(runs=50)
        ),
        gates=Gates(max_drop=1.0 if labels else 5.0, max_size_ratio=0.5),
        cache_dir=cache_dir / "calibration",
    )
    return shrink(model, output_dir, config, progress, step_summary)
