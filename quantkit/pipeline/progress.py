"""How the pipeline reports progress without knowing rich: start(label, total) -> advance(n)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from quantkit.errors import ConfigError

# start(label, total) -> advance(n): how the CLI draws progress bars without the pipeline knowing rich.
Progress = Callable[[str, int], Callable[[int], None]]


def no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def as_progress(progress: object) -> Progress:
    """The API's progress= as a Progress: None draws nothing; anything not callable is refused (hq72 10:
    progress=True raised "'bool' object is not callable" from inside the run)."""
    if progress is None:
        return no_progress
    shape = "a callable start(label, total) -> advance(n)"
    if not callable(progress):
        raise ConfigError(f"progress takes {shape}; got {type(progress).__name__}")
    try:  # hq144 F9: a start of another shape failed deep inside the run, Python's TypeError
        inspect.signature(progress).bind("label", 1)
    except TypeError:
        raise ConfigError(f"progress takes {shape}; {progress!r} does not take (label, total)") from None
    except ValueError:  # a builtin without a signature: called as it is
        pass
    user: Callable[[str, int], Callable[[int], None]] = progress

    def start(label: str, total: int) -> Callable[[int], None]:
        advance = user(label, total)
        if advance is None:  # a start that only logs the step (print): nothing to advance (hq149 F6)
            return lambda n: None
        if not callable(advance):
            raise ConfigError(f"progress takes {shape}; start returned {type(advance).__name__}")
        return advance

    return start


def stoppable(progress: Progress, label: str, total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(advance, finish) of a step that may stop early (the fallback's search, once its target is met):
    finish adds the steps not taken. A step left unfinished stays the CLI's "still working" line (it names
    the latest step not done): hunt29's AGLLNet showed "measuring each layer's recovery, 0 of 126 step(s)
    done" for the minutes the speed plan took after that search had ended."""
    started, done = progress(label, total), [0]

    def advance(n: int) -> None:
        done[0] += n
        started(n)

    return advance, lambda: started(max(total - done[0], 0))


class Rounds:
    """The fallback's rounds after the first (which has its own count, per layer) as a step of their
    own, started when the second round starts and counted up to `total` rounds (--max-float-layers);
    finish fills the rounds not taken."""

    def __init__(self, progress: Progress, label: str, total: int) -> None:
        self.progress, self.label, self.total = progress, label, total
        self.step: tuple[Callable[[int], None], Callable[[], None]] | None = None

    def advance(self, n: int) -> None:
        if self.step is None:
            self.step = stoppable(self.progress, self.label, self.total)
        self.step[0](n)

    def finish(self) -> None:
        if self.step is not None:
            self.step[1]()
