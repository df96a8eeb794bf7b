"""write_set's undo: the earlier files of a set put back and its staged files removed, from what is on
disk, every step tried even where interrupts keep cutting them short (quantkit.files)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

NAME_KEPT = 64  # bytes of an output's name, in the names of its staged and aside files beside it
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
MARK = "quantkit-"  # in the names of the files a write keeps beside its output: .NAME.quantkit-PID-...


def own_prefix(path: Path) -> str:
    """The start of the names of what a write of `path` keeps beside it: `.NAME.quantkit-`, the name cut
    to NAME_KEPT bytes (hq57 D(f): a legal 250-character name made a temporary one too long; hq105 F11:
    cut by characters, 59 emoji were 236 bytes, and the pid pushed the name past 255)."""
    kept = os.fsdecode(os.fsencode(path.name)[:NAME_KEPT])  # any bytes: the cut encodes back to them
    return f".{kept}.{MARK}"


def staged_name(path: Path, token: str) -> str:
    """The staged copy of `path` this process writes: .NAME.quantkit-PID-TOKEN.tmp (TOKEN 8 hex digits)."""
    return f"{own_prefix(path)}{os.getpid()}-{token}.tmp"


def aside_name(path: Path, k: int) -> str:
    """Where the k-th file of a set is kept aside while the set goes in: .NAME.quantkit-PID-K.old."""
    return f"{own_prefix(path)}{os.getpid()}-{k}.old"


def sweep_stale(path: Path) -> None:
    """What a run killed while it wrote `path` (SIGKILL, power loss) left beside it: its staged copy (a
    whole model's size: hq100 F4) and the earlier file kept aside as a second link to what `path` still
    holds, removed where their names are exactly ours (staged_name, aside_name: hq105 F2, a user's
    `.out.onnx.2024.draft.tmp` went), process PID has ended and the file has not changed for STALE_S (a
    process of that number in another container writing to a shared folder would still be writing). An
    aside that is not a link to `path`'s file stays: it may be the only copy."""
    prefix = own_prefix(path)
    ours = re.compile(re.escape(prefix) + r"([0-9]{1,9})-(?:[0-9a-f]{8}\.tmp|[0-9]{1,6}\.old)")
    try:
        entries = [entry for entry in os.scandir(path.parent) if entry.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        found = ours.fullmatch(entry.name)
        if found is None or int(found.group(1)) == os.getpid():
            continue
        try:
            changed = entry.stat(follow_symlinks=False).st_ctime
        except OSError:
            continue
        if time.time() - changed < STALE_S or running(int(found.group(1))):
            continue
        if entry.name.endswith(".tmp") or one_file(entry.path, path):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def running(pid: int) -> bool:
    """Whether process `pid` exists (another user's, or one that cannot be asked, counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or one that cannot be asked: running
        return True
    return True
