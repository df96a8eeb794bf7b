"""The console script (`quantkit`, `python -m quantkit`): a Ctrl-C or SIGTERM while the command line's
libraries load (typer, rich, onnxruntime: about a second) ends in one line, as one later does.

hq73 6: an interrupt in that second printed a 15-60 line traceback from inside the imports, and
sometimes exit 1 (onnxruntime's module interrupted as it initialised). Only the standard library is
imported here before the handlers are in place; cli.entry.main installs its own once loaded.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from types import FrameType


def _stopped(signum: int, frame: FrameType | None) -> None:
    """Nothing has run yet: say so and leave at once (no interpreter teardown of half-imported modules)."""
    word = "interrupted" if signum == signal.SIGINT else "hung up" if signum == _HUP else "terminated"
    try:
        sys.stderr.write(f"{word} while starting; nothing was written\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def main() -> None:
    # a signal the caller ignores stays ignored (hq76 3: a script's background job, `quantkit ... &`, has
    # SIGINT ignored and ran to its end before; a handler here made it stop)
    stopping = dict.fromkeys((signal.SIGINT, signal.SIGTERM, _HUP))
    kept = [s for s in stopping if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, _stopped) for s in kept}
    from quantkit.cli.entry import main as run

    if not _TEARDOWN:  # the run has ended and said so: its exit code stands through the interpreter's
        _TEARDOWN.append(True)  # teardown (hq85 F7: a signal there killed it with no line, its outputs
        atexit.register(_ignored, tuple(previous))  # written); a caller's own later runs keep Ctrl-C
    try:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        run()
    except KeyboardInterrupt:  # in the instant before cli.entry.main's own handler is in place
        _stopped(signal.SIGINT, None)


_TEARDOWN: list[bool] = []  # whether _ignored is registered
_HUP = getattr(signal, "SIGHUP", signal.SIGTERM)  # the terminal closed (hq100 F5); none on Windows


def _ignored(signals: tuple[int, ...]) -> None:
    for signum in signals:
        signal.signal(signum, signal.SIG_IGN)
