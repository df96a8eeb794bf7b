"""--max-drop's validation in chunks: a candidate model scored on one chunk of the validation images
against FP32's summary of that chunk, as integer counts that add up to the one-process figure.

The validation images are cut into the chunks of pipeline.shards (whole batches, the same for any number
of workers), and FP32's summaries are taken chunk by chunk in the driver, so a worker reading its chunk
sees the very batches the summaries were taken on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from quantkit.config import Preprocess
from quantkit.evaluate.budget_validator import ChunkReference, Counts
from quantkit.images import ImageLoader
from quantkit.parallel import Pool
from quantkit.pipeline.loading import read_ahead
from quantkit.pipeline.shards import Shared, chunks, model_key, require_visible, session_for
from quantkit.results import Batch


@dataclass(frozen=True)
class ValidationJob:
    """One chunk of the validation images, FP32's summary of it, and the candidate's session key."""

    index: int
    paths: tuple[Path, ...]
    preprocess: Preprocess
    batch_size: int
    reference: ChunkReference
    key: str
    threads: int


def describe(job: ValidationJob) -> str:
    return (
        f"validation chunk {job.index + 1} ({len(job.paths)} images, {job.paths[0]} to {job.paths[-1].name})"
    )


def chunk_batches(
    paths: Sequence[Path], preprocess: Preprocess, batch_size: int
) -> list[Callable[[], Iterable[Batch]]]:
    """Each chunk's batches, read anew on every call (Validator's chunks)."""

    def reader(chunk: tuple[Path, ...]) -> Callable[[], Iterable[Batch]]:
        return lambda: iter(ImageLoader(list(chunk), preprocess, batch_size))

    return [reader(chunk) for chunk in chunks(list(paths), batch_size)]


def run_validation_chunk(
    shared: Shared, job: ValidationJob, progress: Callable[[int], None] | None = None
) -> Counts:
    """A worker's task: the candidate over the chunk's images, (points lost, out of) per output scored."""
    require_visible(job.paths, worker=progress is None)
    candidate = session_for(shared[0], job.key, job.threads)
    return job.reference.counts(
        candidate, read_ahead(ImageLoader(list(job.paths), job.preprocess, job.batch_size))
    )


def pooled_counts(
    pool: Pool,
    candidate: bytes,
    references: Sequence[ChunkReference],
    paths: Sequence[Path],
    preprocess: Preprocess,
    batch_size: int,
    threads: int,
) -> Iterator[Counts]:
    """Each chunk's counts for `candidate` (the model's bytes) from the pool's workers, in chunk order."""
    shared = pool.share([candidate])
    key = model_key(candidate)
    jobs = [
        ValidationJob(k, chunk, preprocess, batch_size, reference, key, threads)
        for k, (chunk, reference) in enumerate(zip(chunks(list(paths), batch_size), references, strict=True))
    ]
    yield from pool.run(run_validation_chunk, shared, jobs, describe)
