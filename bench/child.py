"""Run one quantizer in its own child process: wall time, peak resident memory, and a memory guard.

Each quantizer runs alone in a fresh interpreter so that its peak RSS is its own (its VmHWM) and so that
a peer that keeps every activation in memory is stopped at a limit instead of taking the machine down:
that stop is recorded as its result.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.2
PEAK_PREFIX = "peak_rss_mb="


@dataclass(frozen=True)
class ChildResult:
    seconds: float
    peak_mb: float
    error: str | None = None  # why it produced no model: its own error, or the limit that stopped it


def memory_total_bytes() -> int:
    """Physical memory of this machine (from /proc/meminfo; 16 GiB where that is unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 16 * 2**30


def _status_kb(pid: int | str, field: str) -> int:
    """A `VmRSS:`-style line of /proc/PID/status, in kB; 0 where unreadable (the process has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def own_peak_mb() -> float:
    """This process's peak RSS since its exec (VmHWM). Not getrusage's ru_maxrss: Linux carries the
    parent's peak across fork and exec into it, so every child of a 700 MB parent would read 700 MB."""
    return _status_kb("self", "VmHWM") / 1024


def run_child(
    job: dict[str, Any], memory_limit: int, timeout: float, module: str = "bench.quantize"
) -> ChildResult:
    """Run `python -m MODULE JOB` (bench.quantize, or bench.floor) and measure it; stop it past
    memory_limit bytes or timeout s. Peak RSS: the child's own VmHWM, which it prints as its last line
    of stdout; for a child stopped here, the largest VmHWM read while it ran."""
    command = [sys.executable, "-m", module, json.dumps(job)]
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryFile("w+") as output, tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=root, stdout=output, stderr=errors)
        stopped: str | None = None
        polled_kb = 0
        while proc.poll() is None:
            elapsed = time.perf_counter() - started
            polled_kb = max(polled_kb, _status_kb(proc.pid, "VmHWM"))
            if _status_kb(proc.pid, "VmRSS") * 1024 > memory_limit:
                stopped = f"stopped at the {memory_limit / 2**30:.0f} GiB memory limit after {elapsed:.0f} s"
            elif elapsed > timeout:
                stopped = f"stopped at the {timeout:.0f} s time limit"
            if stopped:
                proc.kill()
                proc.wait()
                break
            # returns as soon as the child exits: its wall time is not rounded up to a poll
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL_SECONDS)
        seconds = time.perf_counter() - started
        output.seek(0)
        errors.seek(0)
        reported, stderr = _peak_line(output.read()), errors.read()
    peak_mb = reported if reported is not None else polled_kb / 1024
    if stopped:
        return ChildResult(seconds, peak_mb, stopped)
    if proc.returncode != 0:
        return ChildResult(seconds, peak_mb, _last_line(stderr) or f"exit code {proc.returncode}")
    return ChildResult(seconds, peak_mb)


def _peak_line(stdout: str) -> float | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith(PEAK_PREFIX):
            return float(line[len(PEAK_PREFIX) :])
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[-1].split())[:300] if lines else ""
