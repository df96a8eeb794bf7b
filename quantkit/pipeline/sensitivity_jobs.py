"""Sensitivity as jobs: one measured model per job, each over every image in the same order.

A job is a layer (or the top layers together) kept float, the all-INT8 model, or the local probe; it
runs over all of the images, so its figure is computed exactly as one process computes it, whichever
worker runs it, and the report is the same bytes for any number of workers. A worker keeps what every
job needs once per process (`_Measuring`): the prepared model and table it was sent, the images' batches
and FP32's outputs on them (`Replay`), and the range and weight caches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from quantkit.calib import table as table_io
from quantkit.config import ConvertConfig, Preprocess
from quantkit.errors import ImageError
from quantkit.evaluate.output_noise import OutputNoise
from quantkit.graph.augment import fitting_batch, with_outputs
from quantkit.graph.qdq import WeightMemo
from quantkit.graph.query import measured_outputs, measured_tensors
from quantkit.images import ImageLoader
from quantkit.pipeline.loading import read_ahead, too_few_read
from quantkit.pipeline.shards import Shared, blob_of, blobs_key, per_thread
from quantkit.planner import sensitivity as sens
from quantkit.results import CalibrationTable, Feed, feed_rows, feed_take
from quantkit.runtime import Session

REPLAY_BYTES = 256 << 20  # image batches and FP32 outputs kept for the passes; beyond, read again
BASE = "int8"  # job kinds besides a tuple of layers kept float
LOCAL = "local"


@dataclass(frozen=True)
class SensitivityJob:
    """One model to measure over every image: BASE, LOCAL, or the INT8 model with `floated` kept float."""

    index: int
    kind: str
    floated: tuple[str, ...]
    paths: tuple[Path, ...]
    preprocess: Preprocess
    config: ConvertConfig
    key: str  # what a worker's `_Measuring` was built from (sensitivity_key)
    threads: int = 0  # inference threads (parallel.threads_per_worker)


@dataclass(frozen=True)
class JobResult:
    """A job's output noise (BASE, floated layers), or each layer's local noise (LOCAL); images read."""

    noise: OutputNoise | None
    local: dict[str, OutputNoise] | None
    images: int


def describe(job: SensitivityJob) -> str:
    what = {BASE: "the INT8 model", LOCAL: "the local probe"}.get(job.kind)
    return f"sensitivity of {what or ', '.join(job.floated) + ' kept float'} ({len(job.paths)} images)"


def sensitivity_key(blobs: Sequence[bytes], paths: Sequence[Path], preprocess: Preprocess) -> str:
    """A digest of everything a worker's measuring state depends on but the job's config."""
    digest = hashlib.sha256(blobs_key(blobs).encode())
    digest.update(json.dumps([str(p) for p in paths]).encode())
    digest.update(json.dumps(dataclasses.asdict(preprocess), sort_keys=True, default=str).encode())
    return digest.hexdigest()


class Replay:
    """The image batches and FP32's outputs on them, replayed once per measured model. Kept in memory up
    to REPLAY_BYTES (32 images at 224x224 take 19 MB); beyond that each pass reads the images and runs
    FP32 again, so memory never grows with --num-images."""

    def __init__(
        self,
        fp32: Session,
        paths: Sequence[Path],
        preprocess: Preprocess,
        batch: int = 8,
        measured: Sequence[str] = (),
    ) -> None:
        """batch: images a run, where the model does not fix it. measured: the tensors judged (convert's
        query.measured_outputs: a Softmax's logits in its output's place), which `fp32` outputs; empty:
        the outputs."""
        self.fp32: Session | None = fp32
        self.measured = list(measured)
        self.threads = fp32.threads
        self.loader = ImageLoader(list(paths), preprocess, fp32.fixed_batch or batch)
        self.kept: list[tuple[Feed, dict[str, np.ndarray]]] | None = []

    def first_pass(self, advance: Callable[[int], None] | None = None) -> int:
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
            if advance is not None:
                advance(feed_rows(feed))
        if self.kept is not None:
            self.fp32 = None  # every pass replays what is kept
        return count

    def passes(self) -> Iterator[tuple[Feed, dict[str, np.ndarray]]]:
        """(batch, FP32's outputs on it), in the same order on every pass."""
        return iter(self.kept) if self.kept is not None else self._stream()

    def noise(self, model: onnx.ModelProto) -> OutputNoise:
        """The model's output noise against FP32 over every batch."""
        augmented = with_outputs(model, self.measured, typed=False) if self.measured else model
        session = Session.of(augmented, self.threads, spin=False)  # the FP32 session may take turns with it
        noise = OutputNoise()
        for feed, reference in self.passes():
            noise.update(reference, self._judged(session.run_batch(feed)))
        return noise

    def _judged(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {t: outputs[t] for t in self.measured} if self.measured else outputs

    def _stream(self) -> Iterator[tuple[Feed, dict[str, np.ndarray]]]:
        fp32 = self.fp32
        assert fp32 is not None
        for batch in read_ahead(self.loader):
            yield batch.data, self._judged(fp32.run_batch(batch.data))


@dataclass
class _Measuring:
    """What one process keeps for every job of a sensitivity run."""

    model: onnx.ModelProto
    table: CalibrationTable
    replay: Replay
    images: int
    cache: dict[str, tuple[float, float]] = field(default_factory=dict)
    memo: WeightMemo = field(default_factory=WeightMemo)
    probes: sens.Probes | None = None


def _states() -> dict[str, _Measuring]:
    """This thread's, by sensitivity_key; one at a time (a worker process runs one thread; in process, each
    API call its own: hq113 F4, two sensitivity() threads cleared each other's and 4 of 12 failed)."""
    return per_thread("sensitivity")


def measuring(shared: Shared, job: SensitivityJob) -> _Measuring:
    """This process's state for the job's run, made on its first job: the model and table parsed from
    the shared bytes, and FP32 run over the images. Raises ImageError when none can be read."""
    states = _states()
    if job.key not in states:
        states.clear()
        model = onnx.load_from_string(blob_of(shared[0]))
        table = table_io.loads(blob_of(shared[1]), blob_of(shared[2]))
        states[job.key] = _state(model, table, job, None)
    return states[job.key]


def prime(
    job: SensitivityJob,
    model: onnx.ModelProto,
    table: CalibrationTable,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Make this process's state for the job's run from the model and table in memory (the in-process
    run: no copy, and a model over 2 GB needs none); FP32 runs over the images here."""
    _states().clear()
    _states()[job.key] = _state(model, table, job, advance)


def _state(
    model: onnx.ModelProto,
    table: CalibrationTable,
    job: SensitivityJob,
    advance: Callable[[int], None] | None,
) -> _Measuring:
    # judged as convert judges it: a Softmax's or Sigmoid's logits (hunt48 B4: nsfw's ranking read its
    # saturated probabilities, 48.3 dB where its logits measure 29)
    tensors = measured_tensors(measured_outputs(model))
    fp32 = Session.of(with_outputs(model, tensors, typed=False), job.threads, spin=False)
    # PaddleOCR's seal detector at 736x992 held 2.1-3.4 GB through its trials in batches of 8
    batch = fitting_batch(model, {fp32.input_name: job.preprocess.sample_shape}, 8)
    replay = Replay(fp32, job.paths, job.preprocess, batch, tensors)
    images = replay.first_pass(advance)
    if images == 0:
        raise ImageError(too_few_read(0, len(job.paths), replay.loader.skipped))
    return _Measuring(model, table, replay, images)


def release() -> None:
    """Drop this thread's state (the driver's, once sensitivity is done)."""
    _states().clear()


def run_job(shared: Shared, job: SensitivityJob, progress: Callable[[int], None] | None = None) -> JobResult:
    """A worker's task: measure the job's model over every image."""
    state = measuring(shared, job)
    if job.kind == LOCAL:
        result = JobResult(None, _local_noise(state, job.config), state.images)
    elif job.kind == BASE:
        result = JobResult(state.replay.noise(_probes(state, job.config).base), None, state.images)
    else:
        model = sens.with_float(
            state.model, state.table, job.config, list(job.floated), state.cache, state.memo
        )
        result = JobResult(state.replay.noise(model), None, state.images)
    if progress is not None:
        progress(1)
    return result


def _probes(state: _Measuring, config: ConvertConfig) -> sens.Probes:
    if state.probes is None:
        state.probes, _ = sens.probes(state.model, state.table, config)
    return state.probes


def _local_noise(state: _Measuring, config: ConvertConfig) -> dict[str, OutputNoise]:
    """Each layer's own noise: the local probe's pairs of outputs, one sample at a time."""
    probes = _probes(state, config)
    errors = {node: OutputNoise(features=False) for node, _ in probes.layers}
    local = Session.of(probes.local, state.replay.threads, spin=False)
    for feed, _ in state.replay.passes():
        for probed in _per_sample(local, feed):
            for node, (ref_name, local_name) in probes.local_outputs.items():
                errors[node].update({ref_name: probed[ref_name]}, {ref_name: probed[local_name]})
    return errors


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
