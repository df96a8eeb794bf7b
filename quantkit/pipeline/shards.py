"""What every sharded command shares: the chunks an image list is cut into, and each worker process's
sessions of the models it was sent.

Chunks are fixed by the image list and the batch size alone, never by the number of workers: each is
computed from scratch and results add up chunk by chunk in list order, which is what makes any number of
workers give the bytes one process gives.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast, overload

import numpy as np
import onnx

from quantkit.config import Runtime
from quantkit.errors import ConfigError, ImageError
from quantkit.parallel import InProcess, Parallel, pool_for
from quantkit.results import Batch, Feed, feed_rows, feed_take, fits_with
from quantkit.runtime import Runner, Session, fits_one_message
from quantkit.runtime_openvino import OpenVinoSession

CHUNK_IMAGES = 32  # small enough to spread 200 images evenly over a few workers
T = TypeVar("T")
R = TypeVar("R")
Shared = tuple[bytes | str | np.ndarray, ...]  # what a task gets of the models: see parallel.Pool.share


class Job(Protocol):
    @property
    def paths(self) -> tuple[Path, ...]: ...


J = TypeVar("J", bound=Job)

# this thread's sessions, by the model's key, threads and runtime: a worker process runs one thread, and
# in process each API call's own (hq113 F1, F3, F4: a service's second thread replaced a running compare's
# candidate session, so that it scored its last images on another model, and emptied the store at its end)
_LOCAL = threading.local()


def per_thread(name: str) -> dict[str, Any]:
    """This thread's store `name` (made empty on first use): the sessions here, sensitivity's state and
    --max-drop's trials in their modules."""
    found: dict[str, Any] | None = getattr(_LOCAL, name, None)
    if found is None:
        found = {}
        setattr(_LOCAL, name, found)
    return found


def _sessions() -> dict[str, Runner]:
    return per_thread("sessions")


def chunk_size(batch_size: int) -> int:
    """Images per chunk: CHUNK_IMAGES rounded up to whole batches, so batches never straddle chunks."""
    return -(-CHUNK_IMAGES // batch_size) * batch_size


def chunks(items: Sequence[T], batch_size: int) -> list[tuple[T, ...]]:
    step = chunk_size(batch_size)
    return [tuple(items[start : start + step]) for start in range(0, len(items), step)]


def model_key(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def blobs_key(blobs: Sequence[bytes]) -> str:
    """One digest of several shared blobs (what a worker's cached state was built from)."""
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(hashlib.sha256(blob).digest())
    return digest.hexdigest()


def sendable(model: onnx.ModelProto, what: str, done: str) -> bytes:
    """The model's bytes for the workers. One over protobuf's 2 GB cannot travel as one message: one
    line saying the work (`done`: "measured", "searched"...) stays in one process."""
    if not fits_one_message(model):
        raise ConfigError(
            f"--workers and --ray send {what} as one message; a model over 2 GB is {done} in one "
            "process: leave --workers and --ray out"
        )
    return model.SerializeToString(deterministic=True)


@overload
def session_for(
    model: bytes | str | np.ndarray,
    key: str,
    threads: int,
    *,
    observing: bool = False,
    arena: bool = True,
    keep: int = 2,
) -> Session: ...


@overload
def session_for(
    model: bytes | str | np.ndarray, key: str, threads: int, runtime: Runtime, *, observing: bool = False
) -> Runner: ...


def session_for(
    model: bytes | str | np.ndarray,
    key: str,
    threads: int,
    runtime: Runtime = Runtime.onnxruntime,
    *,
    observing: bool = False,
    arena: bool = True,
    keep: int = 2,
) -> Runner:
    """This process's session of `model` (its bytes in process, a file for local workers, an array from
    Ray's object store) in `runtime`, made once per process; at most `keep` are kept (compare's pair;
    calibration's groups, collect.observe). observing, arena: runtime.Session's (onnxruntime only)."""
    name = _session_name(key, threads, runtime)
    held = _sessions()
    if name not in held:
        while len(held) >= max(keep, 1):
            held.pop(next(iter(held)))
        held[name] = open_session(runtime, blob_of(model), threads, observing=observing, arena=arena)
    return held[name]


def open_session(
    runtime: Runtime,
    model: bytes | Path,
    threads: int = 0,
    spin: bool = True,
    observing: bool = False,
    arena: bool = True,
) -> Runner:
    """A session of the model in onnxruntime or OpenVINO (spin, observing, arena: runtime.Session's;
    OpenVINO has no such switches)."""
    if runtime is Runtime.openvino:
        return OpenVinoSession(model, threads)
    return Session(model, threads, spin=spin, observing=observing, arena=arena)


def _session_name(key: str, threads: int, runtime: Runtime) -> str:
    return f"{key}:{threads}" if runtime is Runtime.onnxruntime else f"{key}:{threads}:{runtime.value}"


def blob_of(shared: bytes | str | np.ndarray) -> bytes:
    """The bytes of one shared blob, however the pool handed it over (parallel.Pool.share): the bytes
    themselves in process, a file's path for local workers, an array from Ray's object store."""
    if isinstance(shared, str):
        return Path(shared).read_bytes()
    if isinstance(shared, np.ndarray):
        return shared.tobytes()
    return shared


def prime(key: str, threads: int, session: Runner, runtime: Runtime = Runtime.onnxruntime) -> None:
    """Make `session` this process's session for that key (a model too large to pass as bytes)."""
    _sessions()[_session_name(key, threads, runtime)] = session


def release() -> None:
    """Drop this thread's sessions (the in-process pool's, once a command is done)."""
    _sessions().clear()


def require_visible(paths: Sequence[Path], worker: bool) -> None:
    """A worker's check that it sees the images the driver listed: a node without the folder is one
    clear error, not a chunk of silently skipped files. worker False (a chunk run in this process, which
    run_jobs gives a progress callback): no check, a file removed since the listing is skipped and named
    as any unreadable one (hq122 F5: it was blamed on workers and NFS)."""
    missing = [p for p in paths if worker and not os.path.lexists(p)]  # a link loop is there: skipped
    if missing:
        raise ImageError(
            f"{socket.gethostname()} cannot see {missing[0]} ({len(missing)} of {len(paths)} images of its "
            "chunk): workers need the images on a path every node reads (NFS, a mounted bucket, or the "
            "same copy at the same path on each node)"
        )


def keeping(
    batches: Iterable[Batch], keep: int, kept: list[Feed], picks: frozenset[Path] = frozenset()
) -> Iterator[Batch]:
    """The batches, unchanged; on the way, their first `keep` samples appended to `kept` (calibrate's
    smoke-test samples, compare's timing sample), those of the first batch's shapes (fits_with); with
    `picks`, only the samples of those files (calibrate's, spread over the list: calib_chunks.spread)."""
    for batch in batches:
        held = sum(feed_rows(k) for k in kept)
        if held >= keep or not fits_with(kept, batch.data):
            pass
        elif not picks:
            kept.append(feed_take(batch.data, 0, keep - held))
        else:
            rows = [k for k, path in enumerate(batch.paths) if path in picks][: keep - held]
            kept.extend(feed_take(batch.data, k, k + 1) for k in rows)
        yield batch


def run_jobs(
    parallel: Parallel,
    blobs: Sequence[bytes],
    task: Callable[[Any, J, Callable[[int], None] | None], R],
    jobs: Sequence[J],
    describe: Callable[[J], str],
    tick: Callable[[int], None],
) -> Iterator[R]:
    """Each job's result, in job order, from the pool `parallel` names; `tick` counts images (per batch
    in this process, per chunk from workers). Sessions made in this process are dropped at the end."""
    try:
        with pool_for(parallel) as pool:
            shared = pool.share(blobs)
            if isinstance(pool, InProcess):
                for job in jobs:
                    yield task(shared, job, tick)
            else:
                for job, result in zip(
                    jobs, pool.run(cast(Callable[[Any, J], R], task), shared, jobs, describe), strict=True
                ):
                    tick(len(job.paths))
                    yield result
    finally:
        release()
