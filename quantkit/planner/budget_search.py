"""The fewest layers to keep float so that a measured drop stays within a budget. Pure search: the caller
measures (it builds and runs the model for a set of float layers).

Layers are tried in ranking order (most recovery first): k = start (0 unless the caller's ranking leads
with a set that stays float in every trial, such as the layers --min-sqnr keeps float in the plan convert
writes without a budget), then doubling (0, 1, 2, 4, 8, ... from 0) until the budget is met, then a
bisection between the last miss and the first hit, then each kept layer past the first `start` is
dropped again if the budget still holds without it. Every measurement counts as a trial; the search
stops at max_trials or the deadline (past the first trial) and returns the best set found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetTrial:
    layers: tuple[str, ...]
    drop: float  # points below FP32


@dataclass(frozen=True)
class BudgetResult:
    layers: tuple[str, ...] | None  # None: no set within the budget was found
    trials: tuple[BudgetTrial, ...]
    stopped: str | None  # why the search stopped early: "trials" or "timeout"


def fewest_layers(
    ranked: list[str],
    drop_of: Callable[[tuple[str, ...]], float],
    max_drop: float,
    max_trials: int,
    deadline: float,
    on_trial: Callable[[BudgetTrial], None] | None = None,
    start: int = 0,
) -> BudgetResult:
    trials: list[BudgetTrial] = []
    measured: dict[tuple[str, ...], float] = {}

    class _Stop(Exception):
        pass

    def measure(layers: tuple[str, ...]) -> float:
        if layers in measured:
            return measured[layers]
        if len(trials) >= max_trials:
            raise _Stop("trials")
        if trials and time.monotonic() > deadline:  # the first always runs (hunt40 F3: a --timeout spent
            raise _Stop("timeout")  # ranking the layers left no trial, and an internal error)
        drop = drop_of(layers)
        measured[layers] = drop
        trials.append(BudgetTrial(layers, drop))
        if on_trial is not None:
            on_trial(trials[-1])
        return drop

    best: tuple[str, ...] | None = None
    stopped = None
    try:
        start = min(start, len(ranked))
        lo, hi, k = start - 1, None, start  # the first `start` layers stay float in every trial
        while k <= len(ranked):
            if measure(tuple(ranked[:k])) <= max_drop:
                hi = k
                break
            lo = k
            k = max(1, min(2 * k, len(ranked))) if k < len(ranked) else len(ranked) + 1
        if hi is not None:
            best = tuple(ranked[:hi])
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if measure(tuple(ranked[:mid])) <= max_drop:
                    hi, best = mid, tuple(ranked[:mid])
                else:
                    lo = mid
            for layer in reversed(best[start:]):
                fewer = tuple(n for n in best if n != layer)
                if measure(fewer) <= max_drop:
                    best = fewer
    except _Stop as stop:
        stopped = str(stop)
    return BudgetResult(best, tuple(trials), stopped)
