"""GitHub's step summary ($GITHUB_STEP_SUMMARY), which shrink appends its report.md to: refused before
any work where it cannot be appended to, and appended to without ever blocking."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from quantkit.errors import OutputError
from quantkit.files import refuse_over_artifact


def require_step_summary(path: Path | None) -> None:
    """Refuse, before any work, a step summary that cannot be appended to (hq71 F3: found after
    calibrating, converting and comparing)."""
    # a pipe no one reads blocked the append, after all the work, for ever (hq98 F2); one read (a tee) is
    # appended to (hq101 F3), and a terminal
    unread = path is not None and (path.is_socket() or (path.is_fifo() and not read_end(path)))
    if path is not None and (path.is_dir() or not path.parent.is_dir() or unread):
        what = (
            "is a folder"
            if path.is_dir()
            else "is a pipe no process reads, or a socket"
            if unread
            else "is in a folder that does not exist"
        )
        raise OutputError(f"$GITHUB_STEP_SUMMARY {path} {what}; unset it or point it at a file to append to")
    if path is not None:  # hq73 2: markdown appended to a released model or table, exit 0
        refuse_over_artifact("$GITHUB_STEP_SUMMARY", path)


def read_end(fifo: Path) -> bool:
    """Whether a process holds `fifo` open for reading: an open for writing that would block says no."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        return False
    return True


def append_text(path: Path, text: str) -> None:
    """Append `text` to `path` whole or not at all: a pipe whose reader left since the check fails
    (OSError), never blocks; a file a failed write leaves cut (a full disk: hq122 F6, half a report
    appended under the warning 'cannot append') is cut back to where it ended."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)  # as open("a")
    try:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        data = memoryview(text.encode("utf-8"))
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:
            if stat.S_ISREG(st.st_mode):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, st.st_size)
            raise
    finally:
        os.close(fd)
