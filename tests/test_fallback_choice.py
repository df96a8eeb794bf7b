"""planner.fallback_choice: which screened layers a fallback round measures, and which one it keeps float."""

from __future__ import annotations

import math

import onnx
import pytest

from quantkit.planner.fallback_choice import (
    FINALIST_SHARE,
    Finals,
    best_finite,
    chosen,
    detour,
    finalists,
)

INF = math.inf


def test_an_fp32_copy_sets_no_bar_for_the_other_finalists() -> None:
    # hunt52 B1: the inf trial's gain made every finite one fall short of FINALIST_SHARE of it
    screened = {"copy": INF, "b": 12.0, "c": 11.5, "d": 10.2, "e": 9.0}
    assert finalists(screened, 10.0) == ["b", "c", "copy"]  # d's 0.2 dB is under half of b's 2.0
    assert 0.2 < FINALIST_SHARE * 2.0 <= 1.5
    assert finalists({"copy": INF, "other": INF}, 10.0) == ["copy"]  # one copy, by name
    assert finalists({"b": 9.0}, 10.0) == []  # none above the floor


def test_a_layer_whose_input_path_is_most_of_the_model_sets_no_bar_either() -> None:
    """hunt54 B1: BlazeFace-back's depthwise_conv2d_30, its input path 66 of the 69 layers, measured
    36.99 dB (finite), and its 27 dB gain left its score head (10.08 dB, 64 layers int8) out."""
    screened = {"drag": 36.99, "head": 10.08, "other": 10.0}
    drags = {"drag": True, "head": False, "other": False}.__getitem__
    assert finalists(screened, 9.96) == ["drag"]  # as before: its gain sets the bar
    assert finalists(screened, 9.96, drags) == ["head", "drag"]  # other lifts under half of head


def test_a_detour_is_tried_where_the_choice_keeps_most_of_the_model_float() -> None:
    counts = {"drag": 3, "head": 64, "tail": 40, "weak": 68}
    pick = counts.__getitem__
    names, scores = ["drag", "head", "tail", "weak"], [36.99, 11.5, 11.8, 9.97]
    best = chosen(Finals(names, scores, 9.96, 12.0, 0.1, pick))
    assert best == (36.99, "drag")  # the only one reaching 12
    assert detour(Finals(names, scores, 9.96, 12.0, 0.1, pick), best) == (11.8, "tail")  # weak lifts < 0.1 dB
    assert detour(Finals(names, scores, 9.96, 11.0, 0.1, pick), (11.5, "head")) is None  # head reached it
    few = {**counts, "tail": 5, "head": 5}.__getitem__  # the others leave barely more quantized
    assert detour(Finals(names, scores, 9.96, 12.0, 0.1, few), best) is None


def test_a_round_keeps_the_finalist_that_reaches_the_target_with_most_layers_int8() -> None:
    counts = {"copy": 0, "long": 3, "short": 60, "weak": 68}
    pick = counts.__getitem__
    scores = [INF, 37.0, 10.2, 9.97]
    names = ["copy", "long", "short", "weak"]
    assert chosen(Finals(names, scores, 9.96, 10.0, 0.1, pick)) == (10.2, "short")
    # only the copy reaches 12: it is kept (one layer a round on small lifts could run through them all)
    assert chosen(Finals(["copy", "weak", "short"], [INF, 10.1, 11.0], 9.96, 12.0, 0.1, pick)) == (
        INF,
        "copy",
    )
    # none reaches it: the highest score
    assert chosen(Finals(["weak", "short"], [10.1, 11.0], 9.96, 12.0, 0.1, pick)) == (11.0, "short")
    # nothing lifts the start by 0.1 dB nor reaches the target
    assert chosen(Finals(["weak"], [9.97], 9.96, 12.0, 0.1, pick)) is None


def test_equal_counts_fall_back_to_the_higher_score() -> None:
    assert chosen(Finals(["a", "b"], [13.0, 14.0], 10.0, 12.0, 0.1, lambda _: 5)) == (14.0, "b")
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
    assert chosen(Finals(candidates, scores, 9.96, 10.0, MIN_GAIN_DB, quantized.__getitem__)) == (10.5, helps)


def test_the_search_takes_the_detour_that_reaches_the_target_with_more_layers_int8() -> None:
    """hunt54 B1 at the search's level: keeping `drag` float reaches 12 dB with one layer of ten still
    int8; the two heads, 0.6 dB each, reach it together with eight. Without a detour the first round keeps
    `drag`; with one, the two heads."""
    from quantkit.planner.cut_paths import untoken
    from quantkit.planner.fallback import _Path, _Rounds

    layers = ["drag", "h1", "h2", *(f"L{i}" for i in range(7))]

    def score(keep: list[str]) -> float:
        names = set(untoken(keep)[0])
        return 40.0 if "drag" in names else 11.0 + 0.6 * len(names & {"h1", "h2"})

    class Trials:
        def screen(self, keep: list[str]) -> float:
            return score(keep)

        def full(self, keep: list[str]) -> float:
            return score(keep)

        def screen_all(self, sets: list[list[str]]) -> list[float]:
            return [score(s) for s in sets]

        full_all = screen_all

        def quantized(self, keep: list[str]) -> int:
            names = set(untoken(keep)[0])
            return 1 if "drag" in names else len(layers) - len(names)

    def reason(gain: float, alone: bool, cut: bool, dragged: int) -> str:
        return "float"

    model = onnx.ModelProto()
    model.graph.node.extend(onnx.helper.make_node("Conv", ["x", "w"], [n], name=n) for n in layers)
    rounds = _Rounds(Trials(), model, layers, 12.0, reason)  # type: ignore[arg-type]
    start = _Path({}, [], [], 11.0)
    assert rounds.run(start, 8).held == ["drag"]
    found = rounds.run(start, 8, ahead=3)
    assert sorted(found.held) == ["h1", "h2"] and found.score == pytest.approx(12.2)
