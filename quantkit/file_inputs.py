"""The input files an output must never land on, checked again at the rename that puts it in place.

files.check_output refuses an output path that names an input before any work starts; but a folder can
change while a command runs. hq100 F2: the output's folder replaced by a link to the model's folder
mid-run, and convert renamed its INT8 model over the FP32 input, exit 0. So the check records each
input's identity (device, inode, modification time) and every write asks again, just before its rename,
whether the path now names one of them.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterable
from pathlib import Path

# ((device, inode, mtime in ns), path) of the inputs the latest output check named, in this thread or
# task: each command's check replaces those of the one before (a later command may well write over an
# earlier command's input); the time tells a file that took a deleted input's inode from the input.
_GUARDED: contextvars.ContextVar[tuple[tuple[tuple[int, int, int], Path], ...]] = contextvars.ContextVar(
    "quantkit_guarded_inputs", default=()
)


def guard(inputs: Iterable[Path]) -> None:
    """Remember `inputs` (those that exist) as the files this command's writes must not land on."""
    found = []
    for path in inputs:
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.append((_identity(st), path))
    if found:
        _GUARDED.set(tuple(found))


def landing_on_input(path: Path) -> str | None:
    """Why renaming onto `path` would replace a guarded input (`path`'s folder now leads to the input's;
    the name's own link, if any, would be replaced, not followed, so it is not followed here), or None."""
    guarded = _GUARDED.get()
    if not guarded:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    for identity, source in guarded:
        if _identity(st) == identity:
            return (
                f"the output {path} now names the input {source} (its folder changed while quantkit ran); "
                "nothing was written over it: keep the output's folder in place and run again"
            )
    return None


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns


def file_state(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, modification time in ns, size) of the file `path` leads to; None where there is
    none: two states differ where another process wrote or replaced the file between them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (*_identity(st), st.st_size)
