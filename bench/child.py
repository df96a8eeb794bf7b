"""Run one quantizer in its own child process: wall time, peak resident memory, and a memory guard.

Each quantizer runs alone in a fresh interpreter so that its peak RSS is its own (read from the kernel's
rusage of that child) and so that a peer that keeps every activation in memory is stopped at a limit
instead of taking the machine down: that stop is recorded as its result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.2


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


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(job: dict[str, Any], memory_limit: int, timeout: float) -> ChildResult:
    """Run `python -m bench.quantize JOB` and measure it; stop it past memory_limit bytes or timeout s."""
    command = [sys.executable, "-m", "bench.quantize", json.dumps(job)]
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=errors)
        stopped: str | None = None
        while True:  # wait4, not Popen.poll: only wait4 returns the child's own rusage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.perf_counter() - started
            if _rss_bytes(proc.pid) > memory_limit:
                stopped = f"stopped at the {memory_limit / 2**30:.0f} GiB memory limit after {elapsed:.0f} s"
            elif elapsed > timeout:
                stopped = f"stopped at the {timeout:.0f} s time limit"
            if stopped:
                proc.send_signal(signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read()
    peak_mb = usage.ru_maxrss / 1024  # Linux reports kilobytes
    if stopped:
        return ChildResult(seconds, peak_mb, stopped)
    if proc.returncode != 0:
        return ChildResult(seconds, peak_mb, _last_line(stderr) or f"exit code {proc.returncode}")
    return ChildResult(seconds, peak_mb)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[-1].split())[:300] if lines else ""
