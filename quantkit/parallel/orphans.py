"""A worker process that outlives the run which started it ends itself.

Workers are children of the fork server, not of the run, so the kernel's parent-death signal
(PR_SET_PDEATHSIG) would watch the wrong process. Each worker instead watches the run's process: a
SIGKILL of the run (the OOM killer, a CI hard timeout) used to leave the fork server, the resource
tracker and every worker, each holding a model session, asleep for ever (hq100 F8).
"""

from __future__ import annotations

import os
import select
import threading

from quantkit.file_undo import running

POLL_S = 1.0  # where the platform has no process descriptors: how often a worker looks


def watch(run_pid: int) -> None:
    """Worker initializer: end this process (exit 1, nothing flushed) once `run_pid` has ended."""
    threading.Thread(target=_wait_then_exit, args=(run_pid,), name="quantkit-run-watch", daemon=True).start()


def _wait_then_exit(run_pid: int) -> None:
    _wait_for_end(run_pid)
    os._exit(1)


def _wait_for_end(pid: int) -> None:
    """Return once process `pid` has ended (a process descriptor where Linux offers one, else polling)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            descriptor = pidfd_open(pid)
        except ProcessLookupError:
            return  # already gone
        except OSError:
            pass  # an old kernel, or refused: poll instead
        else:
            try:
                select.select([descriptor], [], [])  # readable once the process has ended
            finally:
                os.close(descriptor)
            return
    while running(pid):
        threading.Event().wait(POLL_S)
