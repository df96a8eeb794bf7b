"""convert's --min-sqnr search (and --max-drop's ranking) on workers: one job per trial, the INT8 model
that keeps a set of layers float, measured on the table's samples.

A worker builds the trial itself from what it was sent once (the prepared model, the table's two files,
FP32's outputs on the samples and the integers planner.rounding_plan chose), with the same
planner.fallback.Trials the driver uses, so a trial's SQNR is the one process's and the search takes the
same path, keeps the same layers and writes the same model for any number of workers.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit.calib import table as table_io
from quantkit.config import ConvertConfig
from quantkit.parallel import Parallel, Pool, pool_for, threads_per_worker
from quantkit.pipeline.shards import Shared, blob_of, blobs_key, per_thread, sendable
from quantkit.planner.cut_paths import untoken
from quantkit.planner.fallback import MeasureMany, Trial, Trials
from quantkit.results import Runs

Reference = Runs


@dataclass(frozen=True)
class TrialJob:
    """One trial: `keep` float, on every sample (`full`) or on the first `runs` runs."""

    index: int
    full: bool
    keep: tuple[str, ...]
    runs: int
    config: ConvertConfig
    alphas: tuple[tuple[str, float], ...] | None
    key: str
    threads: int


def describe(job: TrialJob) -> str:
    names, cut = untoken(job.keep)  # a cut path's layer by its name (planner.cut_paths' token has NULs)
    kept = (
        ", ".join(n + (" (its input path cut)" if n in cut else "") for n in names) if names else "no layer"
    )
    return f"trial {job.index + 1} of the accuracy fallback ({kept} kept float)"


def reference_bytes(reference: Reference) -> bytes:
    """FP32's outputs per run as one .npz (keys run/tensor, in order): they travel once, as the driver
    computed them."""
    arrays: dict[str, Any] = {
        f"{k}/{name}": value for k, run in enumerate(reference) for name, value in run.items()
    }
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def arrays_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Named arrays as one .npz, in name order."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **dict(sorted(arrays.items())))
    return buffer.getvalue()


def _arrays_of(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of an .npz, in the order they were written."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _reference_of(blob: bytes) -> Reference:
    runs: dict[int, dict[str, np.ndarray]] = {}
    for key, value in _arrays_of(blob).items():  # written in order: runs, and tensors within a run, keep it
        run, name = key.split("/", 1)
        runs.setdefault(int(run), {})[name] = value
    return [runs[k] for k in sorted(runs)]


def run_trial(shared: Shared, job: TrialJob, progress: Callable[[int], None] | None = None) -> float:
    """A worker's task: the trial's output SQNR, from this process's Trials for the search."""
    state = f"{job.key}:{job.config!r}:{job.alphas!r}:{job.runs}"
    # this thread's, by TrialJob.key plus the config and alphas (a worker process runs one thread; in
    # process, each API call its own: another thread's search cleared it mid-use, hq113 F3, F4)
    held: dict[str, Trials] = per_thread("trials")
    if state not in held:
        held.clear()
        model = onnx.load_from_string(blob_of(shared[0]))
        table = table_io.loads(blob_of(shared[1]), blob_of(shared[2]))
        reference = _reference_of(blob_of(shared[3]))
        alphas = dict(job.alphas) if job.alphas is not None else None
        rounded = _arrays_of(blob_of(shared[4]))
        held[state] = Trials.of(model, table, job.config, reference, job.runs, alphas, job.threads, rounded)
    trials = held[state]
    return trials.full(job.keep) if job.full else trials.screen(job.keep)


class PooledTrials:
    """A MeasureMany for planner.fallback.search that runs each batch of trials on a pool; a context
    manager that opens the pool once for the whole search."""

    def __init__(
        self,
        parallel: Parallel,
        model: onnx.ModelProto,
        table_files: tuple[bytes, bytes],
        reference: Reference,
        config: ConvertConfig,
        alphas: Mapping[str, float] | None,
        rounded: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.blobs = [
            sendable(model, "the model", "searched"),
            *table_files,
            reference_bytes(reference),
            arrays_bytes(rounded or {}),
        ]
        self.key = blobs_key(self.blobs)
        self.pool: Pool = pool_for(parallel)
        self.threads = threads_per_worker(parallel.threads, parallel.workers)
        self.config = config
        self.alphas = tuple(sorted(alphas.items())) if alphas is not None else None
        self.shared: Any = None

    def __enter__(self) -> PooledTrials:
        self.pool.__enter__()
        self.shared = self.pool.share(self.blobs)
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.__exit__(*exc)

    def measure(self, runs: int) -> MeasureMany:
        """The batch measure for a search that screens on the first `runs` runs."""

        def many(trials: Sequence[Trial]) -> list[float]:
            jobs = [
                TrialJob(k, full, keep, runs, self.config, self.alphas, self.key, self.threads)
                for k, (full, keep) in enumerate(trials)
            ]
            return list(self.pool.run(run_trial, self.shared, jobs, describe))

        return many


class Spread:
    """Where convert's searches measure their trials: here (one process), or on the pool `parallel`
    names, opened per search."""

    def __init__(
        self,
        parallel: Parallel,
        model: onnx.ModelProto,
        table_path: Path,
        reference: Reference,
        alphas: Mapping[str, float] | None,
        rounded: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.parallel, self.model, self.table_path = parallel, model, table_path
        self.reference, self.alphas, self.rounded = reference, alphas, rounded

    @contextmanager
    def trials(self, config: ConvertConfig) -> Iterator[Callable[[int], MeasureMany] | None]:
        """For planner.fallback.search's `many` (None here): given the screening runs, a MeasureMany."""
        if self.parallel.in_process:
            yield None
            return
        files = (self.table_path.read_bytes(), table_io.arrays_path(self.table_path).read_bytes())
        pooled = PooledTrials(
            self.parallel, self.model, files, self.reference, config, self.alphas, self.rounded
        )
        with pooled:
            yield pooled.measure
