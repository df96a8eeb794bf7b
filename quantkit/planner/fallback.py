"""Accuracy fallback: keep the fewest layers in float that bring the model's output SQNR, measured on the
calibration table's samples, up to a target.

Per-layer errors measured in isolation miss what breaks real models: on YOLOX every layer quantized alone
keeps >= 25 dB while the whole model keeps 8 dB, because layers that cancel a large bias amplify the noise
they receive. So the unit of measurement is the model output: a layer is judged by how much output SQNR
comes back when it is kept float (with its input path, see planner.plan) on top of the layers already
kept float. Round by round the one that lifts the output most is kept (layers interact: one dominant
layer masks the others, which show their worth only once it is float).

A round does not build one model per layer: that is a planned, rewritten and loaded model per layer, 0.3
to 0.6 s before it runs at all (113 of them on YOLOX-Nano). The remaining layers are screened in groups
of about sqrt(n) consecutive layers kept float together, and only the layers of the best groups are
measured one by one (keeping more layers float seldom lowers the output SQNR, so a group that recovers
little holds no layer that recovers much). Screening runs on the first samples only where they are
expensive (a per-trial budget of multiply-adds: a 640x640 text detector gets 2 of its 8); the best few
it finds are then measured on every sample, and that measurement decides and is reported.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from quantkit.config import ConvertConfig
from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.qdq import WeightMemo
from quantkit.planner import fallback_choice
from quantkit.planner.at_output import SqnrMemo as SqnrMemo
from quantkit.planner.at_output import foreground_maps as foreground_maps
from quantkit.planner.at_output import measured_reference as measured_reference
from quantkit.planner.at_output import output_sqnr as output_sqnr
from quantkit.planner.at_output import output_sqnrs
from quantkit.planner.core import plan
from quantkit.planner.cut_paths import preferred, token, untoken
from quantkit.planner.fallback_blocks import end_block
from quantkit.planner.fallback_choice import DRAG_SHARE
from quantkit.planner.int8_model import measured_model
from quantkit.planner.screening import (
    FIRST_ROUND_GROUPS,
    LATER_ROUND_GROUPS,
    screen_layers,
    screening_runs,
)
from quantkit.results import CalibrationTable, FallbackStep, Feed, QuantPlan, Runs, feed_rows, feed_take

# A round keeps its best layer float only where it lifts the output SQNR this much (or reaches the target):
# below it a float layer costs speed for what the samples cannot tell from noise. PP-OCRv4's text detector
# at 640x640 took Conv.36, .37 and .40 for +0.01, +0.03 and +0.03 dB (three rounds, 7 s) before the
# floor's block of 19 layers lifted it 6.3 dB.
MIN_GAIN_DB = 0.1
# A block of layers at one end (fallback_blocks) is kept for --min-sqnr where it reaches the target or lifts
# the output this much (for the floor, any lift): PP-OCRv5's text detector (hunt44) stalled at 13.9 dB
# with no single layer lifting it, where 8 Convs at its output end reach 20.9 dB.
BLOCK_GAIN_DB = 1.0
# Rounds a search may take from a finalist that keeps most of the model quantized, where the round's own
# choice reaches the target only by keeping most of it float (_Rounds.run)
AHEAD_ROUNDS = 3


def layer_recovery(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    reference: Runs,
    base_plan: QuantPlan,
    progress: Callable[[int], None] | None = None,
    cache: dict[str, tuple[float, float]] | None = None,
    alphas: Mapping[str, float] | None = None,
    memo: WeightMemo | None = None,
    measured: SqnrMemo | None = None,
    many: MeasureMany | None = None,
    rounded: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """node -> output SQNR with only that layer (and its input path) kept float; base_plan quantizes all.
    many: measures them all as one batch elsewhere (Trials.full of each, on workers)."""
    assert table.samples is not None
    cache = {} if cache is None else cache
    memo = WeightMemo() if memo is None else memo
    samples = table.samples
    nodes = _quantized_layers(model, base_plan)
    if many is not None:
        found = dict(zip(nodes, many([(True, (node,)) for node in nodes]), strict=True))
        if progress is not None:
            progress(len(nodes))
        return found
    scores = {}
    for node in nodes:
        keep = {node: "measuring"}
        trial = plan(model, table, config, keep_float=keep, range_cache=cache, alphas=alphas, rounded=rounded)
        scores[node] = output_sqnr(measured_model(model, trial, config, memo), reference, samples, measured)
        if progress is not None:
            progress(1)
    return scores


Trial = tuple[bool, tuple[str, ...]]  # (on every sample, not the screening runs; layers kept float)
MeasureMany = Callable[[Sequence[Trial]], list[float]]  # output SQNR of each, as Trials measures it


@dataclass
class Trials:
    """Builds the model that keeps a set of layers float (one planner.plan and measured_model each) and
    measures its output SQNR on the first `runs` runs or on every sample; a set asked for again is not
    built again (scores kept by set; SqnrMemo spares the runs of a model built again). `many`, where set,
    measures a batch's trials (`screen_all`, `full_all`) on workers holding the same Trials: same scores."""

    model: onnx.ModelProto
    table: CalibrationTable
    config: ConvertConfig
    reference: Runs
    samples: Feed
    measured: SqnrMemo
    runs: int
    cache: dict[str, tuple[float, float]]
    alphas: Mapping[str, float] | None
    memo: WeightMemo = field(default_factory=WeightMemo)
    scores: dict[tuple[bool, frozenset[str]], float] = field(default_factory=dict)
    threads: int = 0
    many: MeasureMany | None = None
    rounded: Mapping[str, np.ndarray] | None = None
    worst: bool = False  # score the worst output (output_sqnr's `worst`), not the mean over them
    plans: dict[tuple[str, ...], QuantPlan] = field(default_factory=dict)  # by the layers kept float

    @classmethod
    def of(
        cls,
        model: onnx.ModelProto,
        table: CalibrationTable,
        config: ConvertConfig,
        reference: Runs,
        runs: int,
        alphas: Mapping[str, float] | None,
        threads: int = 0,
        rounded: Mapping[str, np.ndarray] | None = None,
    ) -> Trials:
        """A worker's Trials: fresh caches, the table's samples."""
        assert table.samples is not None
        return cls(
            model,
            table,
            config,
            reference,
            table.samples,
            SqnrMemo(),
            runs,
            {},
            alphas,
            threads=threads,
            rounded=rounded,
        )

    def build(self, keep: Iterable[str]) -> onnx.ModelProto:
        return measured_model(self.model, self._planned(keep), self.config, self.memo)

    def _planned(self, keep: Iterable[str]) -> QuantPlan:
        """The plan keeping `keep` float (trial names: planner.cut_paths), planned once per set."""
        key = tuple(keep)
        if key not in self.plans:
            names, cut = untoken(key)
            keep_float = dict.fromkeys(names, "measuring")
            config, cache = self.config, self.cache
            self.plans[key] = plan(
                self.model, self.table, config, keep_float, cache, self.alphas, self.rounded, cut=cut
            )
        return self.plans[key]

    def quantized(self, keep: Iterable[str]) -> int:
        """How many linear layers the plan keeping `keep` float quantizes (planned, not measured)."""
        done = self._planned(keep).quantized_nodes
        return sum(n.op_type in COMPUTE_OPS and n.name in done for n in self.model.graph.node)

    def full(self, keep: Iterable[str]) -> float:
        key = (True, frozenset(keep))
        if key not in self.scores:
            self.scores[key] = self._scored(key[1], self.reference, self.samples, self.measured)
        return self.scores[key]

    def screen(self, keep: Iterable[str]) -> float:
        if self.runs >= len(self.reference):
            return self.full(keep)
        key = (False, frozenset(keep))
        if key not in self.scores:
            reference, samples = self.reference[: self.runs], feed_take(self.samples, 0, self.runs)
            self.scores[key] = self._scored(key[1], reference, samples, self.measured.first(self.runs))
        return self.scores[key]

    def _scored(self, keep: frozenset[str], reference: Runs, samples: Feed, memo: SqnrMemo) -> float:
        """The set's score, from `memo` where a search with the same plan inputs measured it."""
        key = self.plan_key(keep)
        memo.pin(self.model, self.table, self.rounded)
        if key not in memo.planned:
            memo.planned[key] = output_sqnrs(self.build(sorted(keep)), reference, samples, memo, self.threads)
        both = memo.planned[key]
        return both[1] if self.worst else both[0]

    def plan_key(self, keep: frozenset[str]) -> Hashable:
        """What decides the model `build` makes: the objects it plans from (one convert's), the settings
        but the search's own target and limit, and the set kept float."""
        config = dataclasses.replace(self.config, min_sqnr=0.0, max_float_layers=0)
        alphas = tuple(sorted(self.alphas.items())) if self.alphas else None
        return (id(self.model), id(self.table), config, alphas, id(self.rounded), keep)

    def screen_all(self, keeps: Sequence[Iterable[str]]) -> list[float]:
        """screen() of each set; the ones not measured yet in one batch on `many`."""
        return self._all(keeps, self.runs >= len(self.reference))

    def full_all(self, keeps: Sequence[Iterable[str]]) -> list[float]:
        """full() of each set; the ones not measured yet in one batch on `many`."""
        return self._all(keeps, True)

    def _all(self, keeps: Sequence[Iterable[str]], full: bool) -> list[float]:
        keys = [(full, frozenset(keep)) for keep in keeps]
        missing = [key for key in dict.fromkeys(keys) if key not in self.scores]
        if self.many is not None and len(missing) > 1:
            found = self.many([(f, tuple(sorted(keep))) for f, keep in missing])
            self.scores.update(zip(missing, found, strict=True))
        return [self.full(keep) if f else self.screen(keep) for f, keep in keys]


@dataclass
class _Path:
    """A search's layers float so far: with reasons, as trials name them (cut_paths), as steps; its SQNR."""

    kept: dict[str, str]
    held: list[str]
    steps: list[FallbackStep]
    score: float


@dataclass(frozen=True)
class _Rounds:
    """The rounds of one search: what they measure with and aim at."""

    trials: Trials
    model: onnx.ModelProto
    layers: list[str]
    target_db: float
    reason: Callable[[float, bool, bool, int], str]  # (gain, alone, cut, dragged) -> why it is float

    def run(
        self,
        path: _Path,
        max_layers: int,
        progress: Callable[[int], None] | None = None,
        rounds: Callable[[int], None] | None = None,
        ahead: int = 0,
    ) -> _Path:
        """`path` with a layer more float each round until target_db, max_layers or no lift (search).
        ahead: the rounds a search from a detour (fallback_choice.detour) may take to reach target_db with
        more layers quantized than the round's choice (hunt54 B1: BlazeFace's one layer whose input path
        is 66 of its 69, where its two score heads reach the floor with 33 quantized)."""
        while path.score < self.target_db and len(path.steps) < max_layers:
            if path.kept and rounds is not None:  # the round before settled a layer
                rounds(1)
            finals = self._finals(path, progress)
            best = fallback_choice.chosen(finals)
            if best is None:
                break
            taken = self._taken(path, best)
            other = fallback_choice.detour(finals, best) if ahead > 0 else None
            if other is not None:
                tried = self.run(self._taken(path, other), min(max_layers, len(path.steps) + 1 + ahead))
                reached = tried.score >= self.target_db
                if reached and self.trials.quantized(tried.held) > self.trials.quantized(taken.held):
                    taken = tried
            path = taken
        return path

    def _finals(self, path: _Path, progress: Callable[[int], None] | None) -> fallback_choice.Finals:
        """A round's finalists on top of `path` (screen_layers, fallback_choice.finalists), measured."""
        remaining = [n for n in self.layers if n not in path.kept]
        floor = self.trials.screen(path.held)
        first = not path.kept
        expand = FIRST_ROUND_GROUPS if first else LATER_ROUND_GROUPS
        screened = screen_layers(
            self.trials, path.held, remaining, floor, expand, progress if first else None
        )
        quantized = functools.partial(_quantized_with, self.trials, tuple(path.held))
        left = self.trials.quantized(path.held)
        found = fallback_choice.finalists(screened, floor, lambda n: quantized(n) <= DRAG_SHARE * left)
        scores = self.trials.full_all([[*path.held, n] for n in found])
        return fallback_choice.Finals(found, scores, path.score, self.target_db, MIN_GAIN_DB, quantized)

    def _taken(self, path: _Path, best: tuple[float, str]) -> _Path:
        """`path` with `best` (score, layer) float: its input path full, or cut (planner.cut_paths)."""
        score, node = best
        on = (self.target_db, self.trials.full, self.trials.quantized, MIN_GAIN_DB)
        chosen = preferred(path.held, node, score, path.score, *on)
        why = self.reason(chosen.score - path.score, not path.kept, chosen.cut, chosen.dragged)
        step = FallbackStep(node, _op_type(self.model, node), chosen.score, chosen.cut)
        held = [*path.held, token(node, chosen.cut)]
        return _Path({**path.kept, node: why}, held, [*path.steps, step], chosen.score)


def search(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    target_db: float,
    max_layers: int,
    progress: Callable[[int], None] | None = None,
    alphas: Mapping[str, float] | None = None,
    cache: dict[str, tuple[float, float]] | None = None,
    reference: Runs | None = None,
    measured: SqnrMemo | None = None,
    many: Callable[[int], MeasureMany] | None = None,
    rounded: Mapping[str, np.ndarray] | None = None,
    blocks: float | None = None,
    worst: bool = False,
    rounds: Callable[[int], None] | None = None,
    by: str | None = None,
) -> tuple[QuantPlan, list[FallbackStep], float]:
    """(final plan, the layers kept float in order, output SQNR before any). model: as for planner.plan;
    reference: its outputs on table.samples where the caller has them already; measured: trials measured
    by an earlier search on the same model, reference and samples; many: given the screening runs, a
    MeasureMany that measures batches of trials elsewhere (pipeline.trial_jobs, on workers); rounded:
    the weights' integers where planner.rounding_plan chose them; worst: target_db is each output's
    (output_sqnr's `worst`; measured here, never by `many`).

    Each round screens the remaining layers on top of those already float (screen_layers), measures the best
    few on every sample and keeps the best (_Rounds.run), until the output SQNR on the samples reaches
    target_db, max_layers are float, or no layer lifts it MIN_GAIN_DB; then, where it is at least `blocks`
    (None: never), a block of layers at one end of the network (planner.fallback_blocks) that reaches
    target_db or lifts it BLOCK_GAIN_DB (any lift where `worst`: convert's floor). progress: advanced once per
    layer the first round settles; rounds: once per round settled, as the next one starts (later rounds
    screen far fewer trials, but took 40 s of PP-OCRv4's 640x640 text detector's 70 s convert where no
    count moved). by: whose target target_db is, for the reasons ("by X", X's {} the dB; None: --min-sqnr's
    or, where `worst`, convert's floor).
    """
    if table.samples is None or feed_rows(table.samples) == 0:
        return plan(model, table, config, alphas=alphas, rounded=rounded), [], float("nan")
    samples = table.samples
    reference = measured_reference(model, samples) if reference is None else reference
    cache = {} if cache is None else cache
    current = plan(model, table, config, range_cache=cache, alphas=alphas, rounded=rounded)
    measured = SqnrMemo() if measured is None else measured
    runs = screening_runs(model, table, reference)
    trials = Trials(
        model, table, config, reference, samples, measured, runs, cache, alphas, rounded=rounded, worst=worst
    )
    trials.many = many(runs) if many is not None and not worst else None
    built = measured_model(model, current, config, trials.memo)
    base = output_sqnr(built, reference, samples, measured, worst=worst)
    trials.scores[True, frozenset()] = base
    steps: list[FallbackStep] = []
    if base >= target_db or max_layers == 0:
        return current, steps, base
    layers = _quantized_layers(model, current)

    def reason(gain: float, alone: bool, cut: bool, dragged: int) -> str:
        return _reason(target_db, gain, alone, worst, cut, dragged, by)

    rounds_of = _Rounds(trials, model, layers, target_db, reason)
    path = rounds_of.run(_Path({}, [], [], base), max_layers, progress, rounds, AHEAD_ROUNDS)
    kept, held, steps, score = path.kept, path.held, path.steps, path.score
    stalled = blocks is not None and blocks <= score < target_db  # no single layer lifts it further
    if stalled and len(steps) < max_layers:
        remaining = [n for n in layers if n not in kept]
        block = end_block(trials.full_all, held, remaining, target_db, max_layers - len(steps))
        lift = 0.0 if worst else min(target_db - score, BLOCK_GAIN_DB)
        if block is not None and block[1] > score and block[1] >= score + lift:
            nodes, score = block
            whose = _by(target_db, worst, by)
            why = f"kept float {whose} (one of {len(nodes)} layers at one end of the model)"
            kept.update(dict.fromkeys(nodes, why))
            steps.extend(FallbackStep(node, _op_type(model, node), score) for node in nodes)
    if kept:
        cut = frozenset(s.node for s in steps if s.cut)
        current = plan(model, table, config, kept, cache, alphas, rounded, cut=cut)
    return current, steps, base


def _quantized_with(trials: Trials, held: tuple[str, ...], node: str) -> int:
    return trials.quantized([*held, node])


def _reason(
    target_db: float,
    gain_db: float,
    alone: bool,
    worst: bool = False,
    cut: bool = False,
    dragged: int = 0,
    by: str | None = None,
) -> str:
    """Why the fallback keeps a layer float; cut, dragged: planner.cut_paths.Choice's."""
    recovers = f"recovers {gain_db:.1f} dB {'alone' if alone else 'more with the layers before it'}"
    if dragged > 0:  # hunt47 B2: "recovers inf dB alone" credited one Gemm with a whole ResNet kept float
        recovers += f", with its input path taking {dragged} more layer(s) float"
    if cut:
        recovers += "; its input path ends where other layers read it too"
    return f"kept float {_by(target_db, worst, by)} ({recovers})"


def _by(target_db: float, worst: bool, by: str | None = None) -> str:
    """Whose target a layer is kept float for: --min-sqnr's, or convert's floor on each output (worst),
    which hunt37 saw named '--min-sqnr 10' beside a --min-sqnr of 12; or `by`'s, with the dB in its {}."""
    if by is not None:
        return by.format(target_db)
    return f"for convert's {target_db:g} dB floor on each output" if worst else f"by --min-sqnr {target_db:g}"


def _op_type(model: onnx.ModelProto, node: str) -> str:
    return next(n.op_type for n in model.graph.node if n.name == node)


def _quantized_layers(model: onnx.ModelProto, current: QuantPlan) -> list[str]:
    done = current.quantized_nodes
    return [n.name for n in model.graph.node if n.name in done and n.op_type in COMPUTE_OPS]
