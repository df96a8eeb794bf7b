"""Calibration in chunks: the unit of work one worker runs, and the in-order merge of their results.

The image list is cut into chunks (pipeline.shards) whatever the number of workers; each chunk is
observed from scratch and the chunks' statistics are merged in list order.
Histograms merge exactly (aligned grids) and float sums always add chunk by chunk in that order, so
the table is byte-for-byte the same on one process, N processes or a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantkit.calib.collect import observe
from quantkit.calib.observers import Partial
from quantkit.calib.table import SMOKE_SAMPLES
from quantkit.config import Preprocess
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.images import ImageLoader
from quantkit.pipeline.loading import read_ahead
from quantkit.pipeline.shards import keeping, require_visible, session_for
from quantkit.results import Batch, Feed, feed_concat, feed_rows, feed_take, fits_with
from quantkit.runtime import Session


def spread(paths: Sequence[Path], count: int) -> frozenset[Path]:
    """`count` of the files evenly spaced over the list (the middle of each of `count` equal parts), or all
    of them: the samples a table keeps for convert's smoke test, --min-sqnr and rounding. The first files
    by name were often one class (hunt39 F11: a folder sorted by class kept 8 photos of the first)."""
    if len(paths) <= count:
        return frozenset(paths)
    return frozenset(paths[k] for k in spread_positions(len(paths), count))


def spread_positions(total: int, count: int) -> list[int]:
    """The positions of `count` of `total` items (count < total), the middle of each of `count` equal
    parts, in order."""
    return [(2 * k + 1) * total // (2 * count) for k in range(count)]


@dataclass(frozen=True)
class ChunkJob:
    """One chunk's work: its images and everything a fresh worker needs to observe them."""

    index: int
    paths: tuple[Path, ...]
    preprocess: Preprocess | None  # None: model-ready arrays
    batch_size: int
    observed: tuple[tuple[str, int | None], ...]
    outputs: tuple[str, ...]  # the model's own outputs, for the reference check
    bins: int
    threads: int
    keep: int  # smoke-test samples to return
    run_rows: int | None  # samples per run (calib.collect.rows_per_run; None: measured on the first)
    model_sha256: str
    groups: tuple[tuple[str, ...], ...] | None = None  # observed in groups, a model each (collect.observe)
    values: frozenset[str] = frozenset()  # outputs graph.output_kinds reads as features: no classes
    picks: frozenset[Path] = frozenset()  # the files whose samples to keep (spread); empty: the first
    logits: tuple[str, ...] = ()  # measured in the outputs' place (query.measured_in_place): reference check


def describe(job: ChunkJob) -> str:
    first, last = job.paths[0], job.paths[-1]
    return f"calibration chunk {job.index + 1} ({len(job.paths)} images, {first} to {last.name})"


@dataclass
class ChunkResult:
    """What one chunk saw: per-tensor partials, samples run, skipped files, content-hash entries."""

    partials: dict[str, Partial]
    seen: int
    check: ReferenceCheck
    samples: Feed | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    observed: list[Path] = field(default_factory=list)  # the files of the samples observed, in order


def observe_chunk(
    session: Session | Sequence[Session],
    batches: Iterable[Batch],
    job: ChunkJob,
    progress: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Observe one chunk's batches with fresh observers."""
    check = ReferenceCheck(inputs_from_images=bool(job.paths), values=job.values)
    kept: list[Feed] = []
    observed: list[Path] = []

    def watch(batch: Feed, outputs: dict[str, np.ndarray]) -> None:
        logits = {n: outputs[n] for n in job.logits if n in outputs}
        check.update(batch, {n: outputs[n] for n in job.outputs if n in outputs}, logits)

    def feeds() -> Iterable[Feed]:
        for batch in keeping(batches, job.keep, kept, job.picks):
            observed.extend(batch.paths)
            yield batch.data

    partials, seen = observe(
        session, dict(job.observed), feeds(), job.bins, progress, watch, job.run_rows, job.groups
    )
    return ChunkResult(partials, seen, check, feed_concat(kept) if kept else None, observed=observed)


def run_chunk(
    shared: tuple[bytes | str | np.ndarray, ...], job: ChunkJob, progress: Callable[[int], None] | None = None
) -> ChunkResult:
    """A worker's task: decode the chunk's images (overlapping inference) and observe them."""
    if job.preprocess is None:
        raise ValueError("an image chunk needs its preprocessing")
    require_visible(job.paths, worker=progress is None)
    loader = ImageLoader(job.paths, job.preprocess, job.batch_size)
    result = observe_chunk(
        chunk_sessions(shared, job),
        read_ahead(loader),
        job,
        progress,
    )
    result.skipped = loader.skipped
    result.entries = loader.entries
    if progress is not None and loader.skipped:
        progress(len(loader.skipped))
    return result


def chunk_sessions(shared: tuple[bytes | str | np.ndarray, ...], job: ChunkJob) -> Session | list[Session]:
    """This process's observing session of the augmented model, or one per group of job.groups (shared:
    their models in order), each freeing its memory after every run."""
    if not job.groups:
        return session_for(shared[0], job.model_sha256, job.threads, observing=True)
    count = len(job.groups)
    return [
        session_for(blob, f"{job.model_sha256}/{k}", job.threads, observing=True, arena=False, keep=count)
        for k, blob in enumerate(shared)
    ]


@dataclass
class Merged:
    """Chunk results folded in order."""

    partials: dict[str, Partial] = field(default_factory=dict)
    seen: int = 0
    check: ReferenceCheck | None = None
    kept: list[Feed] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    observed: list[Path] = field(default_factory=list)

    def add(self, result: ChunkResult) -> None:
        """Fold the next chunk (in list order) in."""
        for name, part in result.partials.items():
            self.partials[name] = self.partials[name] + part if name in self.partials else part
        self.seen += result.seen
        if self.check is None:
            self.check = result.check
        else:
            self.check.merge(result.check)
        held = sum(feed_rows(k) for k in self.kept)
        if result.samples is not None and held < SMOKE_SAMPLES and fits_with(self.kept, result.samples):
            self.kept.append(feed_take(result.samples, 0, SMOKE_SAMPLES - held))
        self.skipped.extend(result.skipped)
        self.entries.extend(result.entries)
        self.observed.extend(result.observed)

    @property
    def samples(self) -> Feed | None:
        return feed_concat(self.kept) if self.kept else None
