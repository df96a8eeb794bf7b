"""Where shards of work run: in this process, in local worker processes, or as Ray tasks.

Every pool runs `fn(shared, job)` for each job and yields the results in job order, whatever order the
workers finish in, so callers merge them exactly as one process would. `shared` is what `share()` made
of a large blob (a model): the blob itself in process, a file every local worker reads once, an object
in Ray's store; `share` takes several blobs and hands each task one tuple of them. Jobs and results must
pickle. A job whose worker dies is run once more on another worker; a job that fails twice raises
WorkerError naming it (`describe(job)`). An exception that `fn` raises itself is deterministic and is
raised at once, as in one process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from quantkit.config.base import as_count, check_threads
from quantkit.errors import ConfigError

J = TypeVar("J")
R = TypeVar("R")


MAX_LOCAL_WORKERS = 256  # local worker processes, at most


@dataclass(frozen=True)
class Parallel:
    """Where the work runs: `workers` local processes, or Ray tasks on the cluster at `ray` (an address
    ray.init accepts); `threads` inference threads each (0: onnxruntime's choice for one worker, an equal
    share of the cores for several). Results do not depend on any of these."""

    workers: int = 1
    ray: str | None = None
    threads: int = 0

    def __post_init__(self) -> None:
        if self.ray is not None and not isinstance(self.ray, str):  # hq113 F6: AttributeError, TypeError
            raise ConfigError(
                f"--ray takes a cluster's address as text (host:port, ray://...); got {self.ray!r}"
            )
        object.__setattr__(self, "workers", as_count(self.workers, "--workers"))
        object.__setattr__(self, "threads", as_count(self.threads, "--threads"))
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.ray is None and self.workers > MAX_LOCAL_WORKERS:  # hq114 F5: 2**63 overflowed, 1e10 ran out
            raise ConfigError(  # of memory and blamed --batch-size; each worker holds a model session
                f"--workers {self.workers} is more than the {MAX_LOCAL_WORKERS} local processes quantkit "
                "starts; give fewer (one per core is the most that helps)"
            )
        if self.threads < 0:
            raise ConfigError(f"--threads must be 0 (automatic) or more, got {self.threads}")
        if self.ray is None:  # a cluster's nodes have their own cores
            check_threads(self.threads, automatic=True)

    @property
    def in_process(self) -> bool:
        """Whether the work stays in this process (one worker, no Ray)."""
        return self.workers == 1 and self.ray is None


ONE_PROCESS = Parallel()


class Pool(Protocol):
    """Runs shards; a context manager that releases its workers on exit."""

    workers: int

    def share(self, blobs: Sequence[bytes]) -> Any: ...

    def run(
        self,
        fn: Callable[[Any, J], R],
        shared: Any,
        jobs: Sequence[J],
        describe: Callable[[J], str],
    ) -> Iterator[R]: ...

    def __enter__(self) -> Pool: ...

    def __exit__(self, *exc: object) -> None: ...


class InProcess:
    """Shards one after the other in this process: the reference every other pool must reproduce."""

    workers = 1

    def share(self, blobs: Sequence[bytes]) -> Any:
        return tuple(blobs)

    def run(
        self,
        fn: Callable[[Any, J], R],
        shared: Any,
        jobs: Sequence[J],
        describe: Callable[[J], str],
    ) -> Iterator[R]:
        for job in jobs:
            yield fn(shared, job)

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def pool_for(parallel: Parallel) -> Pool:
    """The pool for --workers N (local processes) or --ray ADDRESS (also RAY_ADDRESS; see ray_pool)."""
    if parallel.ray is not None:
        from quantkit.parallel.ray_pool import RayPool

        return RayPool(parallel.ray)
    if parallel.workers == 1 or multiprocessing.current_process().daemon:
        # a daemonic process (a multiprocessing.Pool's worker) may start none: the same result here
        # (hq159 F2: Python's 'daemonic processes are not allowed to have children', an internal error)
        return InProcess()
    from quantkit.parallel.local import LocalPool

    return LocalPool(parallel.workers)


def threads_per_worker(threads: int, workers: int) -> int:
    """Inference threads of each worker: `threads` when given (>0); else onnxruntime's choice (0) for one
    worker, and an equal share of this machine's cores for several, so they do not fight over cores."""
    if threads > 0 or workers == 1:
        return threads
    return max(1, (os.cpu_count() or 1) // workers)
