"""convert --to fp16 | bf16's fallback: the fewest linear layers kept float32 that lift the output SQNR
on the samples to --min-sqnr (with a table) or the floor (on synthetic inputs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import onnx

from quantkit.config import Float16Config
from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.float_formats import FloatFormat
from quantkit.pipeline.progress import Progress
from quantkit.planner import fallback, fp16_checks, screening
from quantkit.planner import fp16_plan as fp16_planner
from quantkit.planner.suffix_screen import SuffixScreen
from quantkit.results import Feed, Runs, feed_take

# What a layer kept float32 must hold of the output SQNR (measured by taking it out again, so that two layers
# whose errors cancel stay together). A transformer's 8 MatMuls were kept for 37.44 -> 37.45 dB (its error
# sits in its LayerNorms and Softmax): 1.59x smaller instead of 2x.
KEEP_GAIN_DB = 0.1


def float16_fallback(
    model: onnx.ModelProto,
    decided: fp16_planner.Float16Plan,
    samples: Feed,
    reference: Runs,
    target: float,
    config: Float16Config,
    progress: Progress,
    memo: fallback.SqnrMemo,
    kind: FloatFormat,
    screen: int,
) -> tuple[fp16_planner.Float16Plan, tuple[str, ...]]:
    """Below target dB on the samples (the table's: --min-sqnr; synthetic: the floor): keep float32, one at
    a time, the linear layers that recover the most output SQNR alone (ranked once), until it is met or
    max_float32_layers are kept. reference: FP32's outputs on the samples (Session.run_samples); the
    layers are ranked (those of the best groups where more than 20: screening.screen_layers; nucseg's 95
    layers at 1024x1024 took 8 min one by one) on its first `screen` runs (planner.screening: PP-OCRv4's
    text detector at 640x640 took 69 s ranking on 8 samples), each trial running only the layers it
    changes and what follows (planner.suffix_screen: 18 s -> 10 s there), and the plan measured whole on
    all. With the plan, the summary's line of what it measured and whether the target was met."""
    why = (
        f"--min-sqnr {target:g}"
        if target == config.min_sqnr_db
        else f"the {target:g} dB floor on synthetic inputs"
    )

    def built(kept: set[str]) -> onnx.ModelProto:
        return fp16_checks.runnable_form(model, kept, config.keep_io_types, kind)

    def sqnr(kept: set[str]) -> float:
        return fallback.output_sqnr(built(kept), reference, samples, memo)

    kept = {k.node for k in decided.kept}
    base = built(kept)
    start = fallback.output_sqnr(base, reference, samples, memo)
    on = "calibration samples" if target == config.min_sqnr_db else "synthetic inputs"
    if start >= target:
        reached = f"{why}: output SQNR on {on} {start:.2f} dB (at least {why}: the search kept none float32)"
        return decided, (reached,)
    layers = [n for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name not in kept]
    if config.max_float32_layers == 0:
        layers = []  # nothing may be kept: nothing to rank
    advance = progress("measuring each layer in float32", len(layers))
    ranking = reference[:screen], samples if screen >= len(reference) else feed_take(samples, 0, screen)
    trials = _Float32Trials(built, kept, SuffixScreen(base, (n.name for n in layers), *ranking), ranking)
    floor = start if screen >= len(reference) else fallback.output_sqnr(base, *ranking, memo.first(screen))
    names = [n.name for n in layers]
    groups = -(-config.max_float32_layers // screening.group_size(len(names)))  # enough to fill the limit
    expand = max(screening.FIRST_ROUND_GROUPS, groups)
    scores = screening.screen_layers(trials, [], names, floor, expand, advance)
    ranked = sorted(scores, key=lambda n: (-scores[n], n))
    added: list[fp16_planner.KeptFloat32] = []
    score = start
    chosen: list[str] = []
    for name in ranked[: config.max_float32_layers]:
        if score >= target:
            break
        kept.add(name)
        chosen.append(name)
        score = sqnr(kept)
    for name in reversed(chosen):  # one that holds nothing the others do not goes back to float16
        without = sqnr(kept - {name})
        if without >= score - KEEP_GAIN_DB and (without >= target or score < target):
            kept.discard(name)
            score = without
    for name in (n for n in chosen if n in kept):
        op = next(n.op_type for n in layers if n.name == name)
        reason = f"kept float32 by {why} (output {start:.1f} -> {score:.1f} dB)"
        added.append(fp16_planner.KeptFloat32(name, op, reason))
    line = (
        f"{why}: output SQNR on {on} {start:.2f} dB -> {score:.2f} dB with {len(added)} layer(s) kept float32"
    )
    if score < target and len(added) < len(chosen):  # some did not help
        line += (
            f"; short of {target:g} dB: {len(chosen) - len(added)} layer(s) tried in float32 held less than "
            f"{KEEP_GAIN_DB:g} dB each and stay float16 (the error is in other ops: keep their op types "
            "float32 with --exclude-op-types)"
        )
    elif score < target and len(chosen) < config.max_float32_layers:  # no more layer measured a gain
        line += (
            f"; short of {target:g} dB: no other layer measured a gain in float32 (the error is in other "
            "ops: keep their op types float32 with --exclude-op-types)"
        )
    elif score < target:
        line += (
            f"; short of {target:g} dB: --max-float-layers allows {config.max_float32_layers} (raise it, or "
            "keep op types float32 with --exclude-op-types)"
        )
    return dataclasses.replace(decided, kept=decided.kept + tuple(added)), (line,)


class _Float32Trials:
    """The float16 fallback's trials for screening.screen_layers: `kept` and a set of layers float32, each
    measured on the ranking runs by running only what it changes where it can (planner.suffix_screen)."""

    def __init__(
        self,
        built: Callable[[set[str]], onnx.ModelProto],
        kept: set[str],
        suffixes: SuffixScreen,
        ranking: tuple[Runs, Feed],
    ) -> None:
        self.built, self.kept, self.suffixes, self.ranking = built, set(kept), suffixes, ranking

    def screen_all(self, keeps: Sequence[Iterable[str]]) -> list[float]:
        return [self._sqnr(set(keep)) for keep in keeps]

    def _sqnr(self, keep: set[str]) -> float:
        candidate = self.built(self.kept | keep)
        found = self.suffixes.sqnr(candidate)
        return fallback.output_sqnr(candidate, *self.ranking) if found is None else found
