"""`quantkit calibrate`: the FP32 model over the images, each observed tensor into a calibration table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantkit import __version__
from quantkit.calib import table as table_io
from quantkit.calib.collect import collect
from quantkit.config import (
    CalibrateConfig,
    Preprocess,
)
from quantkit.errors import (
    ImageError,
)
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.files import check_output, write_set
from quantkit.graph import model_io
from quantkit.graph.augment import observed_tensors, with_outputs
from quantkit.graph.prepare import prepare
from quantkit.images import ImageLoader, resolve_preprocess, select_images, shortfall
from quantkit.pipeline.loading import require_quantizable, table_paths
from quantkit.pipeline.progress import Progress, no_progress
from quantkit.pipeline.writing import SMOKE_SAMPLES
from quantkit.results import (
    CalibrationTable,
)
from quantkit.runtime import Session, versions


@dataclass(frozen=True)
class CalibrateSummary:
    table: Path
    arrays: Path
    images_used: int
    images_skipped: tuple[tuple[str, str], ...]
    tensors: int
    seconds: float
    preprocess: Preprocess
    notes: tuple[str, ...] = ()  # what was changed on the way in (opset upgrade, Constant weights)
    reference_findings: tuple[str, ...] = ()  # signs that FP32 itself is fed wrongly (evaluate.sanity)
    warnings: tuple[str, ...] = ()  # e.g. --num-images beyond the folder


def calibrate(
    model_path: Path, table_path: Path, config: CalibrateConfig, progress: Progress = no_progress
) -> CalibrateSummary:
    json_path, npz_path = table_paths(table_path)
    for out in (json_path, npz_path):
        check_output(out, model_path)
    started = time.perf_counter()
    model = model_io.load_model(model_path)
    require_quantizable(model, model_path)
    spec = model_io.image_input(model)
    preprocess = resolve_preprocess(config.preprocess, spec)
    prepared = prepare(model, size=(preprocess.height, preprocess.width))
    observed = observed_tensors(prepared.model)
    paths = select_images(config.images)
    size = spec.shape[0] or config.batch_size  # the batch the model fixes, else the requested one
    loader = ImageLoader(paths, preprocess, size)
    session = Session.of(with_outputs(prepared.model, list(observed)))
    samples: list[np.ndarray] = []

    def batches() -> Iterator[np.ndarray]:
        for batch in loader:
            if len(samples) < SMOKE_SAMPLES:
                samples.extend(batch.data[: SMOKE_SAMPLES - len(samples)])
            yield batch.data

    check = ReferenceCheck()
    graph_outputs = [o.name for o in prepared.model.graph.output]

    def watch(batch: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        check.update(batch, {n: outputs[n] for n in graph_outputs if n in outputs})

    stats, _ = collect(session, observed, batches(), config.bins, progress("calibrating", len(paths)), watch)
    used = len(paths) - len(loader.skipped)
    _check_enough_images(used, len(paths), loader.skipped)
    meta = {
        "producer": "quantkit",
        "quantkit_version": __version__,
        "model_file": model_path.name,
        "model_sha256": model_io.file_sha256(model_path),
        "input": spec.name,
        "preprocess": preprocess.to_dict(),
        "images": {
            "count": used,
            "unique": len(set(paths)),
            "skipped": len(loader.skipped),
            "seed": config.images.seed,
            "requested": config.images.num_images,
            "list_sha256": loader.content_hash,
        },
        "bins": config.bins,
        "batch_size": size,
        "versions": versions(),
    }
    table = CalibrationTable(meta=meta, stats=stats, samples=np.stack(samples))
    json_bytes, npz_bytes = table_io.serialize(table)
    write_set([(npz_path, npz_bytes), (json_path, json_bytes)])
    return CalibrateSummary(
        table=json_path,
        arrays=npz_path,
        images_used=used,
        images_skipped=tuple((str(p), why) for p, why in loader.skipped),
        tensors=len(stats),
        seconds=time.perf_counter() - started,
        preprocess=preprocess,
        notes=prepared.notes(),
        reference_findings=check.findings(),
        warnings=tuple(w for w in (shortfall(config.images, paths),) if w),
    )


def _check_enough_images(used: int, total: int, skipped: list[tuple[Path, str]]) -> None:
    """Calibration fails only when fewer than half of the selected images could be read."""
    if used == 0 or used * 2 < total:
        first = "; ".join(f"{p.name}: {why}" for p, why in skipped[:3])
        raise ImageError(
            f"only {used} of {total} images could be read (first failures: {first}); "
            "remove or replace the broken files"
        )
