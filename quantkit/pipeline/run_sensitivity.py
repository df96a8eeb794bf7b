"""`quantkit sensitivity`: each quantized layer's own error, and what keeping it float recovers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
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
from quantkit.pipeline.loading import load_for_int8, read_ahead, table_preprocess, table_samples
from quantkit.pipeline.progress import Progress, no_progress
from quantkit.pipeline.run_convert import resolve_weight_range
from quantkit.planner import sensitivity as sens
from quantkit.results import Feed, feed_rows, feed_take
from quantkit.runtime import Session

REPLAY_BYTES = 256 << 20  # image batches and FP32 outputs kept for the passes; beyond, read again


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
    names = [node for node, _ in probes.layers]
    replay = _Replay(Session.of(inferred, spin=False), paths, preprocess)
    advance = progress("running FP32 on the images", len(paths))
    count = replay.first_pass(advance)
    if count == 0:
        raise ImageError(f"none of the {len(paths)} images could be read; check the folder")
    # one model at a time, each over every batch: a session's weights and buffers live for its pass only
    advance = progress("measuring one model per layer", len(names) + 2)
    int8_noise = replay.noise(probes.base)
    advance(1)
    local_errors = {node: OutputNoise() for node in names}
    local = Session.of(probes.local, spin=False)
    for feed, _ in replay.passes():
        for probed in _per_sample(local, feed):
            for node in names:
                ref_name, local_name = probes.local_outputs[node]
                local_errors[node].update({ref_name: probed[ref_name]}, {ref_name: probed[local_name]})
    del local
    advance(1)
    layer_noise = []
    for node in names:
        model = sens.with_float(inferred, table, config, [node], cache, memo)
        layer_noise.append(replay.noise(model))
        del model
        advance(1)
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
    ranked = [r.node for r in rows[:cumulative]]
    advance = progress("measuring the top layers together", len(ranked))
    steps = []
    for k in range(1, len(ranked) + 1):
        noise = replay.noise(sens.with_float(inferred, table, config, ranked[:k], cache, memo))
        steps.append((k, noise.sqnr_db, int8_noise.recovered_by(noise)))
        advance(1)
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
    for probed in Session.of(probes.local).iter_samples(table_samples(table)):
        for node, (ref_name, local_name) in probes.local_outputs.items():
            noise[node].update({ref_name: probed[ref_name]}, {ref_name: probed[local_name]})
    return tuple((node, op, noise[node].sqnr_db) for node, op in probes.layers)


class _Replay:
    """The image batches and FP32's outputs on them, replayed once per measured model. Kept in memory up
    to REPLAY_BYTES (32 images at 224x224 take 19 MB); beyond that each pass reads the images and runs
    FP32 again, so memory never grows with --num-images."""

    def __init__(self, fp32: Session, paths: list[Path], preprocess: Preprocess) -> None:
        self.fp32: Session | None = fp32
        self.loader = ImageLoader(paths, preprocess, fp32.fixed_batch or 8)
        self.kept: list[tuple[Feed, dict[str, np.ndarray]]] | None = []

    def first_pass(self, advance: Callable[[int], None]) -> int:
        """Read every batch once; the number of images read."""
        count = held = 0
        for feed, reference in self._stream():
            count += feed_rows(feed)
            if self.kept is not None:
                held += _feed_bytes(feed) + sum(v.nbytes for v in reference.values())
                if held <= REPLAY_BYTES:
                    self.kept.append((feed, reference))
                else:
                    self.kept = None
            advance(feed_rows(feed))
        if self.kept is not None:
            self.fp32 = None  # every pass replays what is kept
        return count

    def passes(self) -> Iterator[tuple[Feed, dict[str, np.ndarray]]]:
        """(batch, FP32's outputs on it), in the same order on every pass."""
        return iter(self.kept) if self.kept is not None else self._stream()

    def noise(self, model: onnx.ModelProto) -> OutputNoise:
        """The model's output noise against FP32 over every batch."""
        session = Session.of(model, spin=False)  # the FP32 session may take turns with it
        noise = OutputNoise()
        for feed, reference in self.passes():
            noise.update(reference, session.run_batch(feed))
        return noise

    def _stream(self) -> Iterator[tuple[Feed, dict[str, np.ndarray]]]:
        fp32 = self.fp32
        assert fp32 is not None
        for batch in read_ahead(self.loader):
            yield batch.data, fp32.run_batch(batch.data)


def _per_sample(session: Session, feed: Feed) -> Iterator[dict[str, np.ndarray]]:
    """The session's outputs on a batch, one sample at a time: a probe with every layer's output twice
    holds one sample's worth, not a batch's (per-sample sums of squares add up to the batch's)."""
    if session.fixed_batch is not None:
        yield session.run_batch(feed)
        return
    for row in range(feed_rows(feed)):
        yield session.run(feed_take(feed, row, row + 1))


def _feed_bytes(feed: Feed) -> int:
    return feed.nbytes if isinstance(feed, np.ndarray) else sum(v.nbytes for v in feed.values())
