"""`quantkit demo`: shrink the embedded digits CNN on its held-out digits (offline), or a model from the
ONNX model zoo (downloaded once, checked against a pinned sha256) on the user's images."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from quantkit import zoo
from quantkit.config import (
    CalibrateConfig,
    CompareConfig,
    ConvertConfig,
    Gates,
    ImageSelection,
    LatencyConfig,
    Prefer,
    PreprocessOptions,
    Preset,
    ResizeMode,
    ShrinkConfig,
)
from quantkit.errors import ConfigError
from quantkit.outcomes import ShrinkResult
from quantkit.pipeline import Progress
from quantkit.pipeline.run_shrink import shrink

# The embedded demo is package data (quantkit/demo_data/, see its README.md), so it is there however
# quantkit was installed: from a wheel, `pip install .` or editable.
EMBEDDED = files("quantkit") / "demo_data"
# The embedded model takes 24x24 greyscale digits scaled to [0, 1] (as demo_data/quantkit.toml says).
DIGITS = PreprocessOptions(preset=Preset.unit, resize=ResizeMode.squash)
GATES = Gates(max_drop=1.0, max_size_ratio=0.5)


def embedded(
    output_dir: Path, cache_dir: Path, progress: Progress, step_summary: Path | None = None
) -> ShrinkResult:
    """cache_dir: quantkit's cache root (calibration tables go in calibration/ under it)."""
    # as_file: the folder itself when installed on disk (the usual case); extracted for the run where
    # quantkit is imported from a zip archive (Python 3.12 and later)
    with as_file(EMBEDDED) as root:
        model = root / "digits_cnn.onnx"
        calib, val, labels = root / "digits" / "calib", root / "digits" / "val", root / "labels.txt"
        if not model.is_file() or not calib.is_dir() or not val.is_dir() or not labels.is_file():
            raise ConfigError(
                f"the embedded demo model is not in {root}: this quantkit was installed without its package "
                "data; reinstall it (pip install --force-reinstall quantkit-*.whl, or pip install . from a "
                "clone), or run `quantkit demo --zoo NAME --images DIR`"
            )
        config = ShrinkConfig(
            calibration=CalibrateConfig(ImageSelection(calib), DIGITS),
            # the same INT8 model on every machine: a 20 us network's speed-aware plan (the default) follows
            # timing noise, and in one run of five kept it all float, 1.05x the FP32 file (the size gate)
            convert=ConvertConfig(prefer=Prefer.accuracy),
            evaluation=CompareConfig(
                ImageSelection(val), DIGITS, labels=labels, latency=LatencyConfig(runs=50)
            ),
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
