"""Room to write: whether a write that a library reports only as failed (onnxruntime's optimized graph or
profile) failed for want of disk space or for the shell's file size limit (`ulimit -f`)."""

from __future__ import annotations

import errno
import os
import shutil


def short_of_room(folder: str | os.PathLike[str], size: int) -> int:
    """Why writing a file of about `size` bytes into `folder` may fail for want of room, as an errno:
    EFBIG where the process may write files of less than twice that (`ulimit -f`), ENOSPC where its disk
    has less than twice that free; 0 where there is room. Tells a full disk from a model that fails to
    serialise, where a library says only that it could not write (onnxruntime's 'Protobuf serialization
    failed': also a graph over 2 GB)."""
    wanted = 2 * size
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            return errno.EFBIG
    except (ImportError, OSError, ValueError):  # no such limit on this platform
        pass
    try:
        return errno.ENOSPC if shutil.disk_usage(folder).free < wanted else 0
    except OSError:
        return errno.ENOSPC
