"""Which input path a layer the accuracy fallback keeps float takes with it, by measurement.

A layer kept float takes its input path float (planner.plan): back to the linear layers before it, so that
it computes on exact values. Where that path runs through a tensor other layers read too (a ResNet's
residual stream), it takes every layer reading or writing that tensor float as well: a ResNet's final Gemm
kept float by `--min-sqnr 40` de-quantized all 11 Convs (hunt47 B2), and the summary credited one Gemm
with an FP32 copy's "inf dB". The cut path (placement.input_path's `cut`) stops at such tensors and keeps
them quantized. Neither is better everywhere: cut everywhere, PP-OCR's direction classifier measured
45.8 dB held out with full paths against 27.9 with cut ones (session 38). So the fallback keeps a layer's
full path as before, and takes the cut one only where it is measured to serve the target with fewer
layers float (`preferred`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# A layer kept float with its input path cut is named in a trial by this prefix before its name, so that
# the trials, their memo keys and the workers measuring them (pipeline.trial_jobs) hold one string each.
CUT_PREFIX = "\x00cut\x00"


def token(node: str, cut: bool) -> str:
    """The trial's name for `node` kept float with its full or its cut input path."""
    return CUT_PREFIX + node if cut else node


def untoken(keep: Iterable[str]) -> tuple[list[str], frozenset[str]]:
    """(the layers a trial keeps float, those of them whose input path is cut)."""
    names, cut = [], set()
    for name in keep:
        if name.startswith(CUT_PREFIX):
            name = name[len(CUT_PREFIX) :]
            cut.add(name)
        names.append(name)
    return names, frozenset(cut)


@dataclass(frozen=True)
class Choice:
    """A round's layer with its path chosen: the output SQNR, whether the path is cut, and how many layers
    besides itself the path takes float."""

    score: float
    cut: bool
    dragged: int


def preferred(
    held: Sequence[str],
    node: str,
    full_score: float,
    before: float,
    target_db: float,
    full: Callable[[list[str]], float],
    quantized: Callable[[list[str]], int],
    min_gain_db: float,
) -> Choice:
    """`node`, chosen by a round on top of `held` (trial names) for `full_score` with its full path, kept
    with its cut path instead where that leaves more layers quantized and either both paths reach target_db
    or the full one leaves no layer quantized (an FP32 copy) while the cut one lifts the round's starting
    SQNR (`before`) by min_gain_db. full: a trial's output SQNR on every sample; quantized: how many linear
    layers a trial leaves quantized. The cut path is measured only where it could be chosen."""
    left = quantized(list(held))
    with_full = quantized([*held, node])
    choice = Choice(full_score, False, max(left - with_full - 1, 0))
    cut = token(node, True)
    with_cut = quantized([*held, cut])
    if with_cut <= with_full or not (full_score >= target_db or with_full == 0):
        return choice
    cut_score = full([*held, cut])
    enough = cut_score >= before + min_gain_db if with_full == 0 else cut_score >= target_db
    return Choice(cut_score, True, max(left - with_cut - 1, 0)) if enough else choice
