"""Why --max-drop cannot gate some outputs, and what to give instead: one line each."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from quantkit.errors import ConfigError
from quantkit.evaluate.ssd import background_pairs

FLOOR = "--min-sqnr DB for a floor on the output's SQNR"  # convert's gate on SQNR; shrink gives its own


def shape_refusal(metric: str, shape: str) -> str:
    """--max-drop's metric finds no output it reads: the line, with the way on (hq93 F2: an NMS-in-graph
    detector's [K, 7] rows, refused by the agreement auto chose, with none)."""
    return (
        f"--metric {metric} needs an output shaped {shape}; none has that shape: gate on the output's SQNR "
        "with --min-sqnr instead (convert keeps layers float until it is reached)"
    )


def values_refusal(option: str, values: frozenset[str], floor: str = FLOOR) -> str:
    """Why `option` cannot gate a model whose outputs the graph computes as features (graph.output_kinds),
    and what to give instead (`floor`: the command's own figure for such outputs)."""
    names = ", ".join(repr(n) for n in sorted(values))
    return (
        f"{option} needs class scores to agree on, and the model's output {names} holds values (the graph "
        "computes it with a rectifier or a normalisation: an embedding or a regression), whose top-1 says "
        f"nothing: give {floor} instead, or --output-kind classes (or --labels) if it holds a classifier's "
        "scores"
    )


def refuse_anchors(
    option: str, outputs: Mapping[str, np.ndarray], floor: str = FLOOR, gated: str | None = None
) -> None:
    """Refuse `option` on an SSD-style head's per-anchor class scores (evaluate.ssd.background_pairs; gated:
    only where they are that output): nearly every anchor is background and agrees, and the boxes beside
    them are not read (hq63b F1: 99.98 % agreement where 68 of 340 faces were lost). floor: the command's
    own gate on the outputs' SQNR."""
    pairs = [pair for pair in background_pairs(outputs) if gated is None or gated == pair[0]]
    if not pairs:
        return
    scores, boxes = pairs[0]
    raise ConfigError(
        f"{option} would count the top-1 of {scores!r} {list(outputs[scores].shape)} anchor by anchor, "
        f"nearly all of them background, beside boxes {boxes!r} {list(outputs[boxes].shape)} it does not "
        f"read: give --detector ssd to count the detections kept, or {floor}"
    )
