"""`quantkit sensitivity`: each quantized layer's own error, and what keeping it float recovers."""

from __future__ import annotations

import time
from pathlib import Path

import onnx

from quantkit.config import (
    ConvertConfig,
    ImageSelection,
    Preprocess,
)
from quantkit.errors import (
    ImageError,
    ModelError,
)
from quantkit.evaluate.metrics import OutputNoise
from quantkit.graph.qdq import WeightMemo
from quantkit.images import ImageLoader, select_images
from quantkit.outcomes import LayerSensitivity, SensitivityReport
from quantkit.pipeline.loading import load_for_int8, table_preprocess, table_samples
from quantkit.pipeline.progress import Progress, no_progress
from quantkit.pipeline.run_convert import resolve_weight_range
from quantkit.planner import sensitivity as sens
from quantkit.results import CalibrationTable, feed_rows
from quantkit.runtime import Session


def sensitivity(
    model_path: Path,
    table_path: Path,
    images: ImageSelection,
    config: ConvertConfig,
    cumulative: int = 5,
    progress: Progress = no_progress,
) -> SensitivityReport:
    """Each quantized layer's own error and the output error that keeping it float recovers, streamed
    over the images (memory bounded by the number of layers, not of images)."""
    started = time.perf_counter()
    _, table, prepared = load_for_int8(model_path, table_path)
    inferred = prepared.model
    config = resolve_weight_range(config)
    probes, _ = sens.probes(inferred, table, config)
    if not probes.layers:
        raise ModelError(f"{model_path.name} has no layer that convert would quantize")
    preprocess = table_preprocess(table, "sensitivity's --images")
    paths = select_images(images)
    cache: dict[str, tuple[float, float]] = {}
    memo = WeightMemo()
    advance = progress("preparing one model per layer", len(probes.layers))
    recovery_models = []
    for node, _ in probes.layers:
        recovery_models.append(sens.with_float(inferred, table, config, [node], cache, memo))
        advance(1)
    names = [node for node, _ in probes.layers]
    # dozens of sessions take turns on every batch: idle workers must not spin on the next one's cores
    fp32, int8, local = (Session.of(m, spin=False) for m in (inferred, probes.base, probes.local))
    recovery = [Session.of(m, spin=False) for m in recovery_models]
    del recovery_models
    local_errors = {node: OutputNoise() for node in names}
    int8_noise = OutputNoise()
    layer_noise = [OutputNoise() for _ in names]
    count = 0
    advance = progress("measuring", len(paths))
    for batch in ImageLoader(paths, preprocess, fp32.fixed_batch or 8):
        reference = fp32.run_batch(batch.data)
        int8_noise.update(reference, int8.run_batch(batch.data))
        for noise, session in zip(layer_noise, recovery, strict=True):
            noise.update(reference, session.run_batch(batch.data))
        probed = local.run_batch(batch.data)
        for node in names:
            ref_name, local_name = probes.local_outputs[node]
            local_errors[node].update({ref_name: probed[ref_name]}, {ref_name: probed[local_name]})
        count += feed_rows(batch.data)
        advance(feed_rows(batch.data))
    if count == 0:
        raise ImageError(f"none of the {len(paths)} images could be read; check the folder")
    rows = sorted(
        (
            LayerSensitivity(
                node=node,
                op_type=op,
                local_sqnr_db=local_errors[node].sqnr_db,
                output_sqnr_db=noise.sqnr_db,
                recovered=int8_noise.recovered_by(noise),
            )
            for (node, op), noise in zip(probes.layers, layer_noise, strict=True)
        ),
        key=lambda r: (-r.recovered, r.node),
    )
    steps = _cumulative(
        inferred,
        fp32,
        table,
        config,
        [r.node for r in rows[:cumulative]],
        paths,
        preprocess,
        cache,
        int8_noise,
        progress,
        memo,
    )
    return SensitivityReport(
        layers=tuple(rows),
        int8_output_sqnr_db=int8_noise.sqnr_db,
        cumulative=tuple(steps),
        num_images=count,
        seconds=time.perf_counter() - started,
        settings={
            **sens.measured_config(config).to_dict(),
            "images": str(images.folder),
            "seed": images.seed,
        },
    )


def layer_errors(
    model_path: Path, table_path: Path, config: ConvertConfig
) -> tuple[tuple[str, str, float], ...]:
    """(node, op type, SQNR in dB of its output when only it is quantized) per quantized linear layer, in
    graph order, on the table's samples: one run of the local probe (rebalancing off, as sensitivity)."""
    _, table, prepared = load_for_int8(model_path, table_path)
    inferred = prepared.model
    probes, _ = sens.probes(inferred, table, resolve_weight_range(config))
    noise = {node: OutputNoise() for node, _ in probes.layers}
    for probed in Session.of(probes.local).run_samples(table_samples(table)):
        for node, (ref_name, local_name) in probes.local_outputs.items():
            noise[node].update({ref_name: probed[ref_name]}, {ref_name: probed[local_name]})
    return tuple((node, op, noise[node].sqnr_db) for node, op in probes.layers)


def _cumulative(
    model: onnx.ModelProto,
    fp32: Session,
    table: CalibrationTable,
    config: ConvertConfig,
    ranked: list[str],
    paths: list[Path],
    preprocess: Preprocess,
    cache: dict[str, tuple[float, float]],
    int8_noise: OutputNoise,
    progress: Progress,
    memo: WeightMemo,
) -> list[tuple[int, float, float]]:
    """(k, output SQNR, share of the INT8 noise recovered) with the top k layers float together."""
    sessions = [
        Session.of(sens.with_float(model, table, config, ranked[:k], cache, memo), spin=False)
        for k in range(1, len(ranked) + 1)
    ]
    noises = [OutputNoise() for _ in sessions]
    advance = progress("measuring the top layers together", len(paths))
    for batch in ImageLoader(paths, preprocess, fp32.fixed_batch or 8):
        reference = fp32.run_batch(batch.data)
        for noise, session in zip(noises, sessions, strict=True):
            noise.update(reference, session.run_batch(batch.data))
        advance(feed_rows(batch.data))
    return [(k + 1, n.sqnr_db, int8_noise.recovered_by(n)) for k, n in enumerate(noises)]
