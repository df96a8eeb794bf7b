"""What every configuration module shares."""

from __future__ import annotations

import os
from enum import Enum
from typing import TypeVar

from quantkit.errors import ConfigError

E = TypeVar("E", bound=Enum)


def as_enum(kind: type[E], value: object, option: str) -> E:
    """value as a member of `kind` (members and their string values are accepted)."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise ConfigError(f"{option} must be one of {choices}; got {value!r}") from None


# Threads per core an inference may ask for. `--threads 10000` made onnxruntime start 10000 threads on a
# 2-core machine: calibrate ran 15 minutes before it was killed.
THREADS_PER_CORE = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container or taskset limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: int, automatic: bool) -> None:
    """Refuse more threads than THREADS_PER_CORE per usable core here (automatic: 0 means all cores)."""
    cores = usable_cores()
    most = THREADS_PER_CORE * cores
    if threads > most:
        raise ConfigError(
            f"--threads {threads} is more than {THREADS_PER_CORE} per core of the {cores} here; "
            f"give at most {most}{', or 0 for all cores' if automatic else ''}"
        )
