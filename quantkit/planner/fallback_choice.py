"""Which screened layer a round of the accuracy fallback (planner.fallback) measures in full, and which of
those it keeps float: reaching the target with the most layers still quantized, an FP32 copy only where no
other layer reaches it.

A layer kept float takes its input path with it (planner.placement.input_path); through a residual stream
that path can hold every layer of the model. That trial is an FP32 copy, and measures inf: ranked by the
SQNR alone it beat every other layer, and its infinite gain set the bar the others had to reach. MediaPipe's
BlazeFace (hunt52 B1), 0.04 dB under convert's 10 dB floor, came out with 0 of 69 Convs int8, where keeping
its two score heads float reaches 10.2 dB.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

FINALISTS = 3  # screened layers measured on every sample, those within FINALIST_SHARE of the best's gain
FINALIST_SHARE = 0.5
# a choice that leaves at most this share of what another finalist leaves quantized is worth a detour
DRAG_SHARE = 0.5


def best_finite(scores: Mapping[str, float]) -> float:
    """The highest finite score (-inf where there is none): what a screened layer has to beat."""
    return max((s for s in scores.values() if math.isfinite(s)), default=-math.inf)


def finalists(
    screened: Mapping[str, float], floor: float, drags: Callable[[str], bool] = lambda _: False
) -> list[str]:
    """The FINALISTS best screened layers above floor whose gain is within FINALIST_SHARE of the best
    finite one's, then the first of those that measure inf (an FP32 copy) and the first that `drags`
    (its input path takes most of the model float), if any: their gains set no bar. drags is asked of the
    best-ranked only."""
    ranked = sorted((n for n in screened if screened[n] > floor), key=lambda n: (-screened[n], n))
    copies = [n for n in ranked if not math.isfinite(screened[n])][:1]
    dragging: list[str] = []
    finite: list[str] = []
    for n in (n for n in ranked if math.isfinite(screened[n])):
        if len(finite) == FINALISTS:
            break
        if drags(n):
            dragging = dragging or [n]
        else:
            finite.append(n)
    top = screened[finite[0]] - floor if finite else 0.0
    return [n for n in finite if screened[n] - floor >= FINALIST_SHARE * top] + dragging + copies


@dataclass(frozen=True)
class Finals:
    """A round's finalists as measured: their names and scores (output SQNR on every sample), the round's
    starting SQNR, the target, the least lift a layer must give, and how many layers each one's trial
    leaves quantized."""

    candidates: Sequence[str]
    scores: Sequence[float]
    start: float
    target_db: float
    min_gain_db: float
    quantized: Callable[[str], int]

    def useful(self) -> list[tuple[float, str]]:
        """(score, layer) of each finalist that reaches target_db or lifts `start` by min_gain_db."""
        pairs = zip(self.candidates, self.scores, strict=True)
        return [(s, n) for n, s in pairs if s >= self.target_db or s >= self.start + self.min_gain_db]


def chosen(finals: Finals) -> tuple[float, str] | None:
    """(score, layer) of the finalist a round keeps float, or None where none lifts the start by
    min_gain_db or reaches target_db. Of those that reach target_db, the one leaving the most layers
    quantized, then the higher score: an FP32 copy (no layer left quantized) only where no other one
    reaches it. Where none reaches it, the highest score. (Where a copy reaches the target and the others
    only lift the output, the copy is kept, as before: one layer a round on small lifts instead can run
    through every layer, and the floor's search has no --max-float-layers to stop it; fallback._Rounds
    tries a detour for a few rounds.)"""
    useful = finals.useful()
    if not useful:
        return None
    counts = {node: finals.quantized(node) for _, node in useful}
    reaching = [pair for pair in useful if pair[0] >= finals.target_db]
    if reaching:
        return max(reaching, key=lambda pair: (counts[pair[1]], pair[0]))
    return max(useful, key=lambda pair: pair[0])


def detour(finals: Finals, best: tuple[float, str]) -> tuple[float, str] | None:
    """(score, layer) of the finalist worth searching on from instead of `best` (chosen's), or None:
    where best reaches target_db leaving at most DRAG_SHARE of the layers another finalist leaves
    quantized, the highest-scoring such finalist that lifts the start by min_gain_db (an output's head,
    where best's input path takes most of the model float)."""
    if best[0] < finals.target_db:
        return None
    left = finals.quantized(best[1])
    lifts = [(s, n) for s, n in finals.useful() if s < finals.target_db and n != best[1]]
    return max(((s, n) for s, n in lifts if left < DRAG_SHARE * finals.quantized(n)), default=None)
