"""--smoothquant auto, measured: which activations to rebalance and how, from their consumers' output error
on the calibration table's samples; and what rebalancing and bias correction change at the model output.

Every rebalancing candidate (planner.smoothquant_plan) is tried at each alpha of ALPHAS. One probe run
(graph.probe.smoothing_probe) gives, for each, the squared error of the consumers' outputs when X / s and
W s are quantized, beside the error of X as planned without rebalancing. An activation is rebalanced
with its best alpha where that lowers the error below
FOLD_GAIN of it when 1/s folds into the producer (exact and free), or below MUL_GAIN when a float Mul
must be inserted (the Mul keeps X float and costs its producer the integer kernel). Layers interact, so
the whole model is then measured at its output with and without the chosen rebalancing, and the choice
is dropped unless it gains MIN_OUTPUT_GAIN_DB there: auto is never worse than off on the calibration data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quantkit.config import ConvertConfig
from quantkit.graph.probe import smoothing_probe
from quantkit.graph.qdq import apply_plan
from quantkit.planner.at_output import SqnrMemo, output_sqnr
from quantkit.planner.core import plan, smoothing_candidates
from quantkit.results import CalibrationTable, Corrections, Feed, Rebalance, Runs
from quantkit.runtime import Session

ALPHAS = (0.25, 0.5, 0.75)  # alpha 1 pins each channel at its calibration maximum: held-out data then clips
# A fold must cut its consumers' error by 20 %: smaller gains, measured on the table's 8 samples, did not
# hold on held-out images when calibrating on few (MobileNetV2 from 32 photos).
FOLD_GAIN = 0.8
MUL_GAIN = 0.5
# Rebalancing is kept when it lifts the output SQNR on the table's samples by this much: SqueezeNet
# measured +0.6 dB there and -0.5 dB on imagenet-dev; MobileNetV2 +1.5 dB there and +2.0 dB on imagenet-dev.
MIN_OUTPUT_GAIN_DB = 1.0
PROBE_BYTES = 64 << 20


@dataclass(frozen=True)
class Measured:
    """measure's result. chosen: activation -> its best choice, where it pays; ratios: activation -> its
    consumers' squared output error after / before; folded: the chosen activations whose 1/s folds."""

    chosen: dict[str, float]
    ratios: dict[str, float]
    folded: frozenset[str]


def resolve(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    reference: Runs,
    range_cache: dict[str, tuple[float, float]] | None = None,
    memo: SqnrMemo | None = None,
) -> tuple[dict[str, float] | None, Corrections | None]:
    """(the alphas for planner.plan under auto, else None; what the corrections changed, None when both
    are off). reference: the FP32 model's outputs on table.samples (Session.run_samples); memo: the
    models measured so far on them (the fallback's first model is one of these)."""
    if config.smoothquant == "off" and not config.bias_correction:
        return None, None
    assert table.samples is not None
    samples = table.samples
    cache = {} if range_cache is None else range_cache

    def sqnr(settings: ConvertConfig, alphas: Mapping[str, float] | None) -> float:
        decided = plan(model, table, settings, range_cache=cache, alphas=alphas)
        return output_sqnr(apply_plan(model, decided), reference, samples, memo)

    off = dataclasses.replace(config, smoothquant="off")
    no_correction = dataclasses.replace(config, bias_correction=False)
    plain = sqnr(dataclasses.replace(off, bias_correction=False), None)
    corrected = sqnr(off, None) if config.bias_correction else plain
    alphas: dict[str, float] | None = None
    ratios: dict[str, float] = {}
    dropped = False
    rebalanced = both = None
    if config.smoothquant == "auto":
        measured = measure(model, table, config, cache)
        alphas, ratios, both = _best_at_output(measured, corrected, lambda a: sqnr(config, a))
        dropped = bool(measured.chosen) and not alphas
        # `both` was measured there: the kept set with the configured bias correction (`corrected` if none)
        rebalanced = plain if config.bias_correction else both
        if alphas and config.bias_correction:
            rebalanced = sqnr(no_correction, alphas)
    elif config.smoothquant != "off":
        rebalanced = sqnr(no_correction, alphas)
        both = sqnr(config, alphas) if config.bias_correction else rebalanced
    report = Corrections(
        layer_error_ratio=ratios,
        sqnr_plain_db=plain,
        sqnr_corrected_db=corrected if config.bias_correction else None,
        sqnr_rebalanced_db=rebalanced,
        sqnr_both_db=both,
        dropped=dropped,
    )
    return alphas, report


def _best_at_output(
    measured: Measured, without_db: float, sqnr: Callable[[dict[str, float]], float]
) -> tuple[dict[str, float], dict[str, float], float]:
    """(the choices to keep, their layer error ratios, the output SQNR with them): every measured choice,
    or only those that fold into their producer (inserted Muls change the ranges downstream most),
    whichever gives the higher output SQNR; none (and `without_db`) where neither beats `without_db`, the
    SQNR without rebalancing, by MIN_OUTPUT_GAIN_DB."""
    folded = {t: a for t, a in measured.chosen.items() if t in measured.folded}
    options = [measured.chosen] + ([folded] if folded and len(folded) < len(measured.chosen) else [])
    scored = [(sqnr(option), option) for option in options if option]
    best_db, best = max(scored, key=lambda pair: pair[0], default=(without_db, {}))
    if best_db < without_db + MIN_OUTPUT_GAIN_DB:
        return {}, {}, without_db
    return best, {t: measured.ratios[t] for t in best}, best_db


def measure(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    range_cache: dict[str, tuple[float, float]] | None = None,
) -> Measured:
    """Each eligible activation's best choice by its consumers' output error on the table's samples."""
    assert table.samples is not None
    base, rebalancer = smoothing_candidates(model, table, config, range_cache)
    candidates: list[tuple[float, Rebalance]] = []
    for tensor in rebalancer.eligible():
        for alpha in ALPHAS:
            found = rebalancer.candidate(tensor, alpha)
            if found is not None:
                candidates.append((alpha, found))
    if not candidates:
        return Measured({}, {}, frozenset())
    plain: dict[str, float] = {}
    errors: list[float] = []
    for chunk in _chunks(model, candidates):
        probe, plain_outputs, outputs = smoothing_probe(model, base, [c for _, c in chunk])
        # observing: no memory pattern and no NCHWc reorders for the probe's many branches (CRAFT at
        # 384x512: 1.86 -> 1.15 GB peak here, 44 -> 32 s, the same choices)
        session = Session.of(probe, observing=True)
        totals = _summed(session, table.samples, [*plain_outputs.values(), *outputs])
        plain.update({tensor: totals[name] for tensor, name in plain_outputs.items()})
        errors.extend(totals[name] for name in outputs)
    best: dict[str, tuple[float, float, Rebalance]] = {}
    for (choice, candidate), error in zip(candidates, errors, strict=True):
        if candidate.tensor not in best or error < best[candidate.tensor][0]:
            best[candidate.tensor] = (error, choice, candidate)
    chosen: dict[str, float] = {}
    ratios: dict[str, float] = {}
    folded = set()
    for tensor, (error, choice, candidate) in sorted(best.items()):
        before = plain[tensor]
        ratio = error / before if before > 0 else 1.0
        if ratio < (FOLD_GAIN if candidate.producer is not None else MUL_GAIN):
            chosen[tensor], ratios[tensor] = choice, ratio
            if candidate.producer is not None:
                folded.add(tensor)
    return Measured(chosen, ratios, frozenset(folded))


def _chunks(
    model: onnx.ModelProto, candidates: list[tuple[float, Rebalance]]
) -> list[list[tuple[float, Rebalance]]]:
    """The candidates in groups (whole activations, in order) whose probe holds at most PROBE_BYTES of
    weight copies. ResNet-50's convert peaked at 2.2 GB with one probe for every activation and at 1.1 GB
    with 64 MB probes (0.93 GB with rebalancing off), for 18.6 s instead of 13.2 s."""
    sizes = {t.name: int(np.prod(t.dims)) * 4 for t in model.graph.initializer}
    consumers_of = {n.name: n.input[1] for n in model.graph.node if len(n.input) > 1}
    chunks: list[list[tuple[float, Rebalance]]] = []
    held = 0
    for tensor in dict.fromkeys(c.tensor for _, c in candidates):
        group = [pair for pair in candidates if pair[1].tensor == tensor]
        weights = sum(sizes.get(consumers_of.get(node, ""), 0) for node in group[0][1].consumers)
        cost = weights * (len(group) + 1)  # one copy per alpha and one as planned
        if not chunks or (held + cost > PROBE_BYTES and held > 0):
            chunks.append([])
            held = 0
        chunks[-1].extend(group)
        held += cost
    return chunks


def _summed(session: Session, samples: Feed, names: list[str]) -> dict[str, float]:
    """Each scalar output summed over the samples."""
    totals = dict.fromkeys(names, 0.0)
    for outputs in session.iter_samples(samples):
        for name in names:
            totals[name] += float(np.sum(outputs[name]))  # one value a run (results.batched: [1])
    return totals
