"""`quantkit sensitivity`: each quantized layer's own error, and what keeping it float recovers."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import onnx

from quantkit.calib import table as table_io
from quantkit.config import ConvertConfig, ImageSelection
from quantkit.errors import ModelError
from quantkit.evaluate.output_noise import OutputNoise
from quantkit.graph import model_io
from quantkit.image_folders import select_images, shortfall
from quantkit.outcomes import LayerSensitivity, SensitivityReport
from quantkit.parallel import ONE_PROCESS, Parallel, threads_per_worker
from quantkit.pipeline.compare_chunks import images_identity
from quantkit.pipeline.loading import load_for_int8, resolve_weight_range, table_preprocess, table_samples
from quantkit.pipeline.progress import Progress, no_progress
from quantkit.pipeline.sensitivity_jobs import (
    BASE,
    LOCAL,
    SensitivityJob,
    describe,
    prime,
    release,
    run_job,
    sensitivity_key,
)
from quantkit.pipeline.shards import run_jobs, sendable
from quantkit.planner import corrections_choice
from quantkit.planner import sensitivity as sens
from quantkit.runtime import Session, versions

DEFAULT_IMAGES = 32  # the CLI's and the API's --num-images
FEW_IMAGES = 8  # fewer images than this rank layers by noise, not by the data (a warning)


def sensitivity(
    model_path: Path,
    table_path: Path,
    images: ImageSelection,
    config: ConvertConfig,
    cumulative: int = 5,
    progress: Progress = no_progress,
    parallel: Parallel = ONE_PROCESS,
) -> SensitivityReport:
    """Each quantized layer's own error and the output error that keeping it float recovers, streamed
    over the images (memory bounded by the number of layers, not of images). `parallel` says where the
    measured models run, one model over every image per job; the report does not depend on it."""
    started = time.perf_counter()
    _, table, prepared = load_for_int8(model_path, table_path)
    inferred = prepared.model
    config, _ = corrections_choice.range_cap(inferred, table, resolve_weight_range(config))  # as convert
    layers, base = sens.layers(inferred, table, config)
    if not layers:
        raise ModelError(f"{model_path.name} has no layer that convert would quantize")
    preprocess = table_preprocess(table, "sensitivity's --images", inferred)
    paths = tuple(select_images(images))
    blobs = _shared(inferred, table_path, parallel)
    key = sensitivity_key(blobs, paths, preprocess)
    threads = threads_per_worker(parallel.threads, parallel.workers)
    job = SensitivityJob(0, BASE, (), paths, preprocess, config, key, threads)
    try:
        if parallel.in_process:  # FP32 over the images here, with its bar
            prime(job, inferred, table, progress("running FP32 on the images", len(paths)))
        names = [node for node, _ in layers]
        jobs = [job, replace(job, index=1, kind=LOCAL)] + [
            replace(job, index=2 + k, kind="", floated=(node,)) for k, node in enumerate(names)
        ]
        advance = progress("measuring one model per layer", len(jobs))
        results = list(run_jobs(parallel, blobs, run_job, jobs, describe, lambda _: advance(1)))
        int8_noise, local, count = results[0].noise, results[1].local, results[0].images
        assert int8_noise is not None and local is not None
        layer_noise = [r.noise for r in results[2:]]
        cache: dict[str, tuple[float, float]] = {}
        rows = sorted(
            (
                LayerSensitivity(
                    node=node,
                    op_type=op,
                    local_sqnr_db=local[node].sqnr_db,
                    output_sqnr_db=noise.sqnr_db,
                    recovered=int8_noise.recovered_by(noise),
                    with_it=sens.floated_with(inferred, table, config, (node,), cache, base),
                )
                for (node, op), noise in zip(layers, layer_noise, strict=True)
                if noise is not None
            ),
            key=lambda r: (-r.recovered, r.node),
        )
        ranked = [r.node for r in rows[:cumulative]]
        advance = progress("measuring the top layers together", len(ranked))
        together = [
            replace(job, index=k, kind="", floated=tuple(ranked[:k])) for k in range(1, len(ranked) + 1)
        ]
        steps = []
        measured = run_jobs(parallel, blobs, run_job, together, describe, lambda _: advance(1))
        for top, result in zip(together, measured, strict=True):
            assert result.noise is not None
            steps.append((len(top.floated), result.noise.sqnr_db, int8_noise.recovered_by(result.noise)))
    finally:
        release()
    return SensitivityReport(
        layers=tuple(rows),
        int8_output_sqnr_db=int8_noise.sqnr_db,
        cumulative=tuple(steps),
        num_images=count,
        seconds=time.perf_counter() - started,  # a timing: the one field two runs differ in
        settings={  # what it ranked, named (hq107 F5: the model, the table and the images were not)
            **sens.measured_config(config).to_dict(),
            "images": str(images.folder),
            "model_sha256": model_io.file_sha256(model_path),
            "table_sha256": model_io.file_sha256(table_path),
            **images_identity(images, paths),
            "versions": versions(),
        },
        warnings=_read_warnings(images, paths, count),
    )


def _read_warnings(images: ImageSelection, paths: tuple[Path, ...], count: int) -> tuple[str, ...]:
    """What calibrate and compare say of the images, said here too (hunt39 F8: a ranking from 26 of 29
    files, or from 1 photo where --num-images asked 32, came with no word)."""
    unread = len(paths) - count
    if images.num_images == DEFAULT_IMAGES:  # hq68 12, hq70 4: true typed or not
        images = replace(images, option="the default --num-images")
    lines = (
        shortfall(images, paths),
        f"{unread} of the {len(paths)} images could not be read and were left out (quantkit compare on the "
        "folder names them)"
        if unread > 0
        else None,
        f"the ranking rests on {count} image(s): rank on a few dozen like the ones the model will see"
        if count < FEW_IMAGES
        else None,
    )
    return tuple(line for line in lines if line)


def _shared(inferred: onnx.ModelProto, table_path: Path, parallel: Parallel) -> list[bytes]:
    """What every job reads: the prepared model's and the table's files' bytes (in one process, the
    model stays in memory: it may not fit one message)."""
    table_files = [table_path.read_bytes(), table_io.arrays_path(table_path).read_bytes()]
    if parallel.in_process:
        return [b"", *table_files]  # prime() hands the jobs the model itself
    return [sendable(inferred, "the model", "measured"), *table_files]


def layer_errors(
    model_path: Path, table_path: Path, config: ConvertConfig
) -> tuple[tuple[str, str, float], ...]:
    """(node, op type, SQNR in dB of its output when only it is quantized) per quantized linear layer, in
    graph order, on the table's samples: one run of the local probe (rebalancing off, as sensitivity)."""
    _, table, prepared = load_for_int8(model_path, table_path)
    inferred = prepared.model
    config, _ = corrections_choice.range_cap(inferred, table, resolve_weight_range(config))  # as convert
    probes, _ = sens.probes(inferred, table, config)
    noise = {node: OutputNoise(features=False) for node, _ in probes.layers}
    for probed in Session.of(probes.local).iter_samples(table_samples(table)):
        for node, (ref_name, local_name) in probes.local_outputs.items():
            noise[node].update({ref_name: probed[ref_name]}, {ref_name: probed[local_name]})
    return tuple((node, op, noise[node].sqnr_db) for node, op in probes.layers)
