"""Imported by the fork server that local workers are forked from, first of the modules it preloads
(parallel.local._start_forkserver): points the server's stderr, and so its workers', at /dev/null, where
the caller's own stderr is never touched. Workers say what happens through their results and the caller's
lines; QUANTKIT_DEBUG keeps their stderr. hq159 F3: the caller's fd 2 itself was pointed at /dev/null
while the server started, and another thread of a long-lived process lost 2 of its 1268 log lines."""

from __future__ import annotations

import os

if not os.environ.get("QUANTKIT_DEBUG"):
    _null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(_null, 2)
    os.close(_null)
