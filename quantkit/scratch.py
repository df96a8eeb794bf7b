"""Scratch folders that a killed run does not leave behind for good.

Every other exit removes a run's scratch folder (a `finally`, a finalizer), but SIGKILL, the OOM killer or a
CI job's hard timeout end the process with no code run at all. hq85 F10: each killed `shrink` left a hidden
`.quantkit-shrink-*` folder holding a whole model in --output-dir, forever; spilled outputs (up to GBs)
and the workers' model copies stayed in the system's temporary folder the same way.

So each folder holds a lock while its process lives: an flock on a file inside it, taken before the file
has its name, which the kernel releases however the process ends. The next run that makes a folder of the
same kind in the same place removes those whose lock file is there and free. A folder without that file is
never touched, whatever its name and age (hq91 F1: a folder of the user's named like one went, files and
all, once a day old); so a run killed in the instant between making its folder and naming its lock, and
a quantkit from before this one, leave theirs. Where locks are not available (no fcntl; a file system that
refuses flock) no lock file is made: a folder is only ever removed when its owner is known to be gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, nothing taken for abandoned
    fcntl = None  # type: ignore[assignment]

LOCK = ".quantkit-held"  # the lock file inside every scratch folder


class Scratch:
    """A new folder named `prefix`XXXXXXXX in `parent` (the system's temporary folder by default), held
    until remove() or the end of the process; making one first removes the abandoned folders of the same
    prefix in that place."""

    def __init__(self, prefix: str, parent: Path | None = None) -> None:
        place = Path(tempfile.gettempdir()) if parent is None else parent
        drop_abandoned(place, prefix)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=place))
        self._fd = _hold(self.path)

    def remove(self) -> None:
        """The folder and everything in it removed; the lock released after (no one else removes it)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


TEMPORARY = "quantkit-temp-"  # the kind of a `with` block's temporary folder (held)


@contextlib.contextmanager
def held(prefix: str = TEMPORARY) -> Iterator[str]:
    """A scratch folder for a `with` block, its path as text: tempfile.TemporaryDirectory's use, swept by
    the next run where a SIGKILL left it (hq100 F9: onnxruntime's copies of a model, a whole model each,
    stayed in the temporary folder for good)."""
    folder = Scratch(prefix)
    try:
        yield str(folder.path)
    finally:
        folder.remove()


def contents(folder: Path) -> list[Path]:
    """What a scratch folder holds, its lock file left out."""
    return [path for path in folder.iterdir() if path.name != LOCK]


def drop_abandoned(place: Path, prefix: str) -> None:
    """Remove every folder `prefix`* in `place` that no live process holds (see the module's text)."""
    try:
        found = [path for path in place.iterdir() if path.name.startswith(prefix)]
    except OSError:
        return
    found = [path for path in found if path.is_dir() and not path.is_symlink()]
    for folder in found:
        if _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)


def _hold(folder: Path) -> int | None:
    """A descriptor holding an flock on folder/LOCK, the file locked before it has that name (a sweeping
    run never sees it unlocked); None where locks are not available."""
    if fcntl is None:  # pragma: no cover
        return None
    fd, temp = tempfile.mkstemp(prefix=".quantkit-lock.", dir=folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(temp, folder / LOCK)
    except OSError:  # a file system without flock: the folder is never taken for abandoned
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        return None
    return fd


def _abandoned(folder: Path) -> bool:
    """Whether `folder` is a scratch folder no live process holds: its lock file is there and free."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # none (not ours), another user's, or gone
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its run is alive (or the file system has no locks)
        return False
    finally:
        os.close(fd)
    return True
