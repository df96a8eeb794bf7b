"""planner.fallback_choice: which screened layers a fallback round measures, and which one it keeps float."""

from __future__ import annotations

import math

from quantkit.planner.fallback_choice import FINALIST_SHARE, best_finite, chosen, finalists

INF = math.inf


def test_an_fp32_copy_sets_no_bar_for_the_other_finalists() -> None:
    # hunt52 B1: the inf trial's gain made every finite one fall short of FINALIST_SHARE of it
    screened = {"copy": INF, "b": 12.0, "c": 11.5, "d": 10.2, "e": 9.0}
    assert finalists(screened, 10.0) == ["b", "c", "copy"]  # d's 0.2 dB is under half of b's 2.0
    assert 0.2 < FINALIST_SHARE * 2.0 <= 1.5
    assert finalists({"copy": INF, "other": INF}, 10.0) == ["copy"]  # one copy, by name
    assert finalists({"b": 9.0}, 10.0) == []  # none above the floor


def test_a_round_keeps_the_finalist_that_reaches_the_target_with_most_layers_int8() -> None:
    counts = {"copy": 0, "long": 3, "short": 60, "weak": 68}
    pick = counts.__getitem__
    scores = [INF, 37.0, 10.2, 9.97]
    names = ["copy", "long", "short", "weak"]
    assert chosen(names, scores, 9.96, 10.0, 0.1, pick) == (10.2, "short")
    # only the copy reaches 12: it is kept (one layer a round on small lifts could run through them all)
    assert chosen(["copy", "weak", "short"], [INF, 10.1, 11.0], 9.96, 12.0, 0.1, pick) == (INF, "copy")
    # none reaches it: the highest score
    assert chosen(["weak", "short"], [10.1, 11.0], 9.96, 12.0, 0.1, pick) == (11.0, "short")
    # nothing lifts the start by 0.1 dB nor reaches the target
    assert chosen(["weak"], [9.97], 9.96, 12.0, 0.1, pick) is None


def test_equal_counts_fall_back_to_the_higher_score() -> None:
    assert chosen(["a", "b"], [13.0, 14.0], 10.0, 12.0, 0.1, lambda _: 5) == (14.0, "b")
    assert best_finite({"a": INF, "b": 3.0, "c": 7.5}) == 7.5
    assert best_finite({"a": INF}) == -INF


def test_groups_holding_an_fp32_copy_do_not_take_every_slot_of_the_screening() -> None:
    """review54 M4: 30 layers screened in groups of 6, two layers' paths an FP32 copy (inf): their groups
    took both slots of the first round, and the group whose layer reaches the target alone (L27) was never
    screened; the copy was kept."""
    from quantkit.planner.fallback import MIN_GAIN_DB
    from quantkit.planner.screening import screen_layers

    names = [f"L{i:02d}" for i in range(30)]
    copies, helps = {"L00", "L07"}, "L27"

    def score(keep: list[str]) -> float:
        if copies & set(keep):
            return INF
        return 9.96 + (0.54 if helps in keep else 0.0) + 0.01 * len([k for k in keep if k != helps])

    class Trials:
        def screen_all(self, sets: list[list[str]]) -> list[float]:
            return [score(s) for s in sets]

    screened = screen_layers(Trials(), [], names, 9.96, 2, None)
    assert screened[helps] == 10.5
    candidates = finalists(screened, 9.96)
    scores = [score([n]) for n in candidates]
    quantized = {n: 0 if n in copies else 29 for n in candidates}
    assert chosen(candidates, scores, 9.96, 10.0, MIN_GAIN_DB, quantized.__getitem__) == (10.5, helps)
