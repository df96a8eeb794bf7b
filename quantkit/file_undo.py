"""write_set's undo: the earlier files of a set put back and its staged files removed, from what is on
disk, every step tried even where interrupts keep cutting them short (quantkit.files)."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

NAME_KEPT = 64  # of an output's name, in the names of its staged and aside files beside it
SETTLE_TRIES = 5  # times a step of write_set's undo is run where interrupts keep cutting it short


def undo(moves: list[tuple[Path, str, str | None]]) -> None:
    """Put back what write_set replaced, from what is on disk: an earlier file (or link) put aside goes
    back over whatever is at its path; a path that had none loses the staged file placed there; staged
    files not placed are removed. Every step is tried, even when one is interrupted (raised after)."""
    steps: list[Callable[[], None]] = []
    for path, temp, aside in reversed(moves):
        if aside is not None:
            steps.append(functools.partial(_put_back, aside, path))
        else:
            steps.append(functools.partial(_take_placed, temp, path))
        steps.append(functools.partial(_remove, temp))
    settle_steps(steps)


def _put_back(aside: str, path: Path) -> None:
    if not os.path.lexists(aside):
        return
    if one_file(aside, path):  # the new file never went in: a rename between two links does nothing
        os.unlink(aside)
    else:
        os.replace(aside, path)


def one_file(a: str, b: Path) -> bool:
    """Whether `a` and `b` are links to one file (lstat: a symbolic link itself, not what it names)."""
    try:
        first, second = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _take_placed(temp: str, path: Path) -> None:
    """The staged file `temp` was renamed to `path` (it is gone from its own name): remove it there."""
    if not os.path.lexists(temp) and path.exists():
        path.unlink()


def _remove(name: str) -> None:
    Path(name).unlink(missing_ok=True)


def settle(asides: Iterable[str]) -> None:
    """The earlier files a finished set put aside, removed; every one, even when one is interrupted."""
    settle_steps([functools.partial(_remove, aside) for aside in asides])


def settle_steps(steps: Sequence[Callable[[], None]]) -> None:
    """Run every step; an OSError is passed over, an interrupt raised once all have run. A step an
    interrupt cut short is run again (each one looks at the disk first: hq77 2, a second Ctrl-C during
    the undo left the earlier file aside)."""
    pending: BaseException | None = None
    for step in steps:
        for _ in range(SETTLE_TRIES):
            try:
                step()
            except OSError:
                pass
            except BaseException as exc:  # Ctrl-C, SIGTERM: finish the undo first
                pending = pending or exc
                continue
            break
    if pending is not None:
        raise pending


STALE_S = 15 * 60  # a staged or aside file a dead run left is swept once it is this old (changed last)


def sweep_stale(path: Path) -> None:
    """What a run killed while it wrote `path` (SIGKILL, power loss) left beside it: its staged copy
    (`.NAME.PID.xxxx.tmp`, a whole model's size: hq100 F4) and the earlier file kept aside as a second
    link to what `path` still holds (`.NAME.PID.K.old`), removed where process PID has ended and the file
    has not changed for STALE_S (a process of that number in another container writing to a shared folder
    would still be writing). An aside that is not a link to `path`'s file stays: it may be the only copy."""
    prefix = f".{path.name[:NAME_KEPT]}."
    try:
        entries = [entry for entry in os.scandir(path.parent) if entry.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        pid, _, rest = entry.name[len(prefix) :].partition(".")
        if not pid.isdigit() or int(pid) == os.getpid() or not rest.endswith((".tmp", ".old")):
            continue
        try:
            changed = entry.stat(follow_symlinks=False).st_ctime
        except OSError:
            continue
        if time.time() - changed < STALE_S or _running(int(pid)):
            continue
        if rest.endswith(".tmp") or one_file(entry.path, path):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or a platform that cannot tell: taken as running
        return True
    return True
