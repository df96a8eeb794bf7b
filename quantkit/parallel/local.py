"""Shards on local worker processes (the standard library's process pools, started by a fork server).

Each worker is its own one-process pool, so a worker that dies is known exactly: its job runs once more
on a replacement process, and only a job that has killed two workers is reported.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from quantkit.errors import WorkerError
from quantkit.parallel.orphans import watch
from quantkit.scratch import Scratch

J = TypeVar("J")
R = TypeVar("R")

SHUTDOWN_WAIT = 5.0  # seconds an interrupted pool's manager thread is waited for, twice
ATTEMPTS = 2  # a job runs at most this many times when its worker dies


def _forget_forkserver() -> None:
    """In a child forked from a process that ran local workers, the forkserver it inherited is not its
    own (hq113 F5: every --workers call there raised a bare ChildProcessError from os.waitpid): the child
    starts one of its own when it needs one. A fresh lock too: the fork may have caught it held."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None:
        server._forkserver_pid = server._forkserver_address = server._forkserver_alive_fd = None
        server._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_forkserver)


class LocalPool:
    """`workers` processes on this machine; shared blobs go through one temporary file."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._folder: Scratch | None = None
        self._shared = 0  # blobs written to the folder
        self._slots: list[ProcessPoolExecutor | None] = [None] * workers
        self._context = multiprocessing.get_context("forkserver")
        self._start_method = multiprocessing.get_start_method(allow_none=True)  # the caller's, or None

    def share(self, blobs: Sequence[bytes]) -> Any:
        if self._folder is None:
            self._folder = Scratch("quantkit-workers-")
        paths = []
        for blob in blobs:
            path = self._folder.path / f"shared-{self._shared}.bin"
            self._shared += 1
            path.write_bytes(blob)
            paths.append(str(path))
        return tuple(paths)

    def _slot(self, index: int, module: str) -> ProcessPoolExecutor:
        executor = self._slots[index]
        if executor is None:
            # workers fork from a server that has imported the task's module once: fast starts, and no
            # copy of this process's threads or sessions
            self._context.set_forkserver_preload([module])
            _start_forkserver()
            executor = ProcessPoolExecutor(
                max_workers=1, mp_context=self._context, initializer=watch, initargs=(os.getpid(),)
            )
            self._slots[index] = executor
        return executor

    def run(
        self,
        fn: Callable[[Any, J], R],
        shared: Any,
        jobs: Sequence[J],
        describe: Callable[[J], str],
    ) -> Iterator[R]:
        pending = deque(range(len(jobs)))
        failures = [0] * len(jobs)
        running: dict[Future[R], tuple[int, int]] = {}
        done: dict[int, R] = {}
        emitted = 0
        while emitted < len(jobs):
            busy = {slot for slot, _ in running.values()}
            for slot in range(self.workers):
                if slot not in busy and pending:
                    index = pending.popleft()
                    future = self._slot(slot, fn.__module__).submit(fn, shared, jobs[index])
                    running[future] = (slot, index)
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                slot, index = running.pop(future)
                try:
                    done[index] = future.result()
                except BrokenProcessPool as exc:
                    failures[index] += 1
                    self._retire(slot)
                    if failures[index] >= ATTEMPTS:
                        raise WorkerError(
                            f"{describe(jobs[index])} failed {ATTEMPTS} times: its worker process died "
                            f"({exc}); check memory (a worker holds one model session) or run with fewer "
                            f"--workers{_guard_hint()}"
                        ) from None
                    pending.appendleft(index)
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1

    def _retire(self, slot: int) -> None:
        executor = self._slots[slot]
        self._slots[slot] = None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for slot, executor in enumerate(self._slots):
            if executor is None:
                continue
            if exc[0] is not None:  # interrupted or failed: no worker outlives the run
                for process in list(getattr(executor, "_processes", {}).values()):
                    process.kill()
                _shut_down(executor)
            else:
                executor.shutdown(wait=True, cancel_futures=True)
            self._slots[slot] = None
        if self._folder is not None:
            self._folder.remove()
            self._folder = None
        if self._start_method is None:  # hq90 F5: the standard library's pools fix the process-wide
            # default start method as a side effect (popen_forkserver asks for it), and a caller's later
            # set_start_method('spawn') raised 'context has already been set': left unset, as it was
            default = getattr(multiprocessing.context, "_default_context", None)
            if getattr(default, "_actual_context", None) is not None:
                default._actual_context = None


QUIET_STDERR = "quantkit.parallel.quiet_stderr"  # the server imports it first: its stderr on /dev/null


def _start_forkserver() -> None:
    """Start the fork server (if it is not running) with Ctrl-C ignored, as its workers then are, and its
    stderr (theirs) on /dev/null (QUIET_STDERR, preloaded for this start alone): workers say what happens
    through their results and this process's lines. hq122 F3: the terminal's SIGINT reaches the whole
    process group, and the server caught importing the task's module printed a KeyboardInterrupt
    traceback around the one line; a worker forked as this process stopped printed FileNotFoundError's
    from unpickling a semaphore already gone. An ignored signal stays ignored across the server's exec; a
    handler would not. From the main thread only (a signal handler is set there alone)."""
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        return
    server = getattr(forkserver, "_forkserver", None)
    preloaded = list(getattr(server, "_preload_modules", ["__main__"]))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.set_forkserver_preload([QUIET_STDERR, *preloaded])
        forkserver.ensure_running()
    finally:
        forkserver.set_forkserver_preload(preloaded)
        signal.signal(signal.SIGINT, previous)


def _shut_down(executor: ProcessPoolExecutor) -> None:
    """Shut a pool whose workers were killed down without waiting for ever: an interrupt that lands while
    a worker is being forked leaves the pool's manager thread reading a pipe nobody closes (hq113 F2: the
    call never returned, 2 of 8 tries). Woken, it sees its workers gone; if not, the run ends anyway."""
    executor.shutdown(wait=False, cancel_futures=True)
    manager = getattr(executor, "_executor_manager_thread", None)
    for _ in range(2):
        if manager is None or not manager.is_alive():
            return
        manager.join(SHUTDOWN_WAIT)
        wakeup = getattr(executor, "_executor_manager_thread_wakeup", None)
        if wakeup is not None:
            with contextlib.suppress(OSError, ValueError):
                wakeup.wakeup()


def _guard_hint() -> str:
    """Where the running script has no `if __name__ == "__main__":` guard, that it needs one: each worker
    imports it again and starts its own workers, and dies (hunt32: 165 lines of tracebacks, then this
    error pointing at memory)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        text = Path(path).read_text(errors="replace") if path else "__main__"
    except OSError:
        return ""
    if "__main__" in text:
        return ""
    return '; a script that starts workers needs its calls under `if __name__ == "__main__":`'
