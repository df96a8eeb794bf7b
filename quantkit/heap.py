"""Freed memory handed back to the operating system in loops whose large buffers change from run to run.

glibc's malloc keeps what a process frees for reuse, and raises its mmap threshold to the size of the
largest block freed, so the next blocks of that size come from the heap, where long-lived small
allocations made between them keep the space from being reused: calibrating PaddleOCR's 4.8 MB seal
detector at 736x992 (467 observed tensors, run in groups) grew by 140 MB an image, to 3.9 GB after 24
images where 1.0 GB was in use. `HeapWatch.check` asks malloc to return its free pages once the resident
set has grown by GROWTH since it last did (or since it started): a few calls a run, not one a batch
(trimming after every batch cost that calibration 40 % more time in page faults). Elsewhere than glibc it
does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable

GROWTH = 512 << 20  # bytes of resident growth that trigger a trim


@functools.cache
def _trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def resident_bytes() -> int | None:
    """This process's resident set size, or None where /proc does not give it."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapWatch:
    """Trims the heap once the resident set has grown by `growth` bytes since the last trim."""

    def __init__(self, growth: int = GROWTH) -> None:
        self.growth = growth
        self.mark = resident_bytes()

    def check(self) -> None:
        resident = resident_bytes()
        trim = _trim()
        if resident is None or self.mark is None or trim is None or resident - self.mark < self.growth:
            return
        trim(0)
        self.mark = resident_bytes()
