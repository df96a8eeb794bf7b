"""How the pipeline reports progress without knowing rich: start(label, total) -> advance(n)."""

from __future__ import annotations

from collections.abc import Callable

# start(label, total) -> advance(n): how the CLI draws progress bars without the pipeline knowing rich.
Progress = Callable[[str, int], Callable[[int], None]]


def no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None
