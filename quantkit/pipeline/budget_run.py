"""convert's --max-drop: the fewest layers kept float that hold the metric within budget on the
validation images, searched with each candidate's corrections planned anew."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from quantkit.config import AccuracyBudget, BudgetMetric, ConvertConfig, DetectorHead
from quantkit.errors import ConfigError, ConversionError
from quantkit.evaluate.budget_units import grain, points_lost
from quantkit.evaluate.budget_validator import Validator, summed
from quantkit.evaluate.compare import Comparison
from quantkit.evaluate.labels import read_classes, require_labelled
from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.output_kinds import label_outputs, value_outputs
from quantkit.graph.query import GraphIndex
from quantkit.image_folders import select_images, shortfall
from quantkit.images import file_digest, list_digest
from quantkit.outcomes import BudgetReport
from quantkit.parallel import InProcess, pool_for, threads_per_worker
from quantkit.pipeline import held_out
from quantkit.pipeline.loading import table_preprocess
from quantkit.pipeline.progress import Progress
from quantkit.pipeline.shards import sendable
from quantkit.pipeline.speed_step import Shape
from quantkit.pipeline.trial_jobs import Spread
from quantkit.pipeline.validation_chunks import chunk_batches, pooled_counts
from quantkit.planner import budget_search, fallback, targets
from quantkit.planner import plan as make_plan
from quantkit.planner import rounding_plan as rounding
from quantkit.planner.int8_model import quantized_model, runnable
from quantkit.results import Batch, CalibrationTable, QuantPlan, Runs, feed_take
from quantkit.runtime import Session


def search_budget(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    budget: AccuracyBudget,
    progress: Progress,
    alphas: Mapping[str, float] | None,
    cache: dict[str, tuple[float, float]],
    sample_reference: Runs,
    spread: Spread,
    shape: Shape | None = None,
    first: tuple[str, ...] = (),
    first_cut: frozenset[str] = frozenset(),
) -> tuple[QuantPlan, BudgetReport]:
    """The fewest layers kept float (ranked by their output recovery on the table's samples) that hold
    the metric within budget.max_drop points of FP32 on the validation images; each trial shaped as
    `shape` (the speed-aware plan's float ops or placement; None: as planned). first: layers that lead the
    ranking, tried first as a set (the fallback's, in the plan convert writes without a budget); first_cut:
    those of them whose input path the fallback cut (planner.cut_paths)."""
    deadline = time.monotonic() + budget.timeout_s
    preprocess = table_preprocess(table, "--max-drop's validation images", model)
    paths = list(dict.fromkeys(select_images(budget.validation)))  # a count above the folder's: each once
    reference = Session.of(model)
    size = reference.fixed_batch or 8
    classes = read_classes(budget.labels) if budget.labels else None
    validator = Validator(
        reference,
        chunk_batches(paths, preprocess, size),
        budget.metric,
        budget.validation.folder,
        classes,
        budget.detection_threshold,
        budget.detector,
        (preprocess.height, preprocess.width),
        value_outputs(model, budget.output_kind),
        label_outputs(model),
    )
    rounded = spread.rounded
    base = make_plan(model, table, config, range_cache=cache, alphas=alphas, rounded=rounded)
    layers = [n.name for n in model.graph.node if n.name in base.quantized_nodes and n.op_type in COMPUTE_OPS]
    advance = progress("ranking layers by output recovery", len(layers))
    runs = len(sample_reference)  # the ranking measures every sample: no screening
    with spread.trials(config) as many:
        scores = fallback.layer_recovery(
            model,
            table,
            config,
            sample_reference,
            base,
            advance,
            cache,
            alphas,
            many=many and many(runs),
            rounded=rounded,
        )
    ranked = [*first, *(n for n in sorted(scores, key=lambda n: (-scores[n], n)) if n not in first)]
    plans: dict[tuple[str, ...], QuantPlan] = {}
    units: dict[tuple[str, ...], int] = {}  # each trial's total: what one point counts

    parallel = spread.parallel
    threads = threads_per_worker(parallel.threads, parallel.workers)
    why = f"kept float by --max-drop {budget.max_drop:g} ({validator.metric.value})"  # hq125 F5: not "auto"
    with pool_for(parallel) as pool:

        def drop_of(kept: tuple[str, ...]) -> float:
            lost, units[kept] = tally(kept)
            return points_lost(lost, units[kept])

        def tally(kept: tuple[str, ...]) -> tuple[int, int]:
            keep = dict.fromkeys(kept, why)
            slower = None if shape is None else shape.slower
            cut = first_cut & set(kept)
            if kept == first:  # the plan convert writes without a budget: its integers as solved (hunt40 F1)
                planned = make_plan(model, table, config, keep, cache, alphas, rounded, slower, cut)
            else:
                planned = rounding.replanned(model, table, config, keep, cache, alphas, rounded, slower, cut)
            inputs_only = shape is not None and shape.inputs_only
            plans[kept] = targets.inputs_only(planned, GraphIndex(model)) if inputs_only else planned
            candidate = runnable(quantized_model(model, plans[kept], config), config)
            if isinstance(pool, InProcess):
                return validator.tally(Session.of(candidate, threads))
            blob = sendable(candidate, "each candidate model", "validated")
            return summed(pooled_counts(pool, blob, validator.references, paths, preprocess, size, threads))

        advance = progress(f"searching within --max-drop {budget.max_drop:g}", budget.max_trials)
        found = budget_search.fewest_layers(
            ranked, drop_of, budget.max_drop, budget.max_trials, deadline, lambda _: advance(1), len(first)
        )
    trials = tuple((t.layers, t.drop) for t in found.trials)
    if found.layers is None:
        best = min(found.trials, key=lambda t: t.drop)
        raise ConversionError(
            f"--max-drop {budget.max_drop:g} ({validator.metric.value}) was not met: the best of "
            f"{len(found.trials)} trial(s) lost {best.drop:.2f} points with {len(best.layers)} layer(s) "
            f"float{' before the ' + found.stopped + ' limit' if found.stopped else ''}"
            f"{grain(budget.max_drop, units.get(best.layers, 0), validator.metric.value)}; raise --max-drop, "
            "--max-trials or --timeout. Nothing was written"
        )
    chosen_drop = dict(trials)[found.layers]
    report = BudgetReport(
        metric=validator.metric.value,
        max_drop=budget.max_drop,
        validation_images=len(validator.read),  # hunt39 F9: '29 validation images' where 26 were read
        trials=trials,
        chosen=found.layers,
        chosen_drop=chosen_drop,
        stopped=found.stopped,
        placed=_placed(shape, first, config.min_sqnr),
        units=units.get(found.layers, 0),
        unread=tuple(str(p) for p in sorted(set(paths) - set(validator.read))),
    )
    return plans[found.layers], report


def _placed(shape: Shape | None, first: tuple[str, ...], min_sqnr: float) -> str:
    """How the trials were made, where not as the plan alone: BudgetReport.placed."""
    led = f"the first is the plan convert writes without --max-drop ({len(first)} layer(s) float for"
    notes = [f"{led} --min-sqnr {min_sqnr:g}, float in every trial)"] if first else []
    return "; ".join([*notes, *([shape.note] if shape is not None else [])])


def check_detector_head(
    model: onnx.ModelProto,
    table: CalibrationTable,
    threshold: float,
    detector: DetectorHead | None,
    budget: AccuracyBudget | None = None,
) -> None:
    """Refuse, before the conversion, a --detector whose head no output has, as compare reads them (FP32
    against itself on the table's first sample): a YOLOX with NMS inside (one [n, 7] output) was refused
    by shrink's compare after 85 s of calibrating and converting (hunt36 F8), and a PicoDet without its
    sigmoids by convert --max-drop after its corrections and op timing (hq60 F3: 108 s). budget: convert's
    --max-drop, whose metric is read off that sample too, as its validation reads it (hq63b F4: --metric
    recall on a model without a detector head was refused after 15 s); not --labels' top-1, which needs
    the validation images' names."""
    if table.samples is None:
        return
    sample = feed_take(table.samples, 0, 1)
    session = Session.of(model)
    outputs = session.run_batch(sample)
    recorded = table.meta.get("preprocess")
    side = (recorded["height"], recorded["width"]) if recorded else None
    one = Batch(sample, (Path("sample-0"),))
    if detector is not None:
        itself = Comparison(Path("."), None, threshold, detector, side)
        itself.update(one, outputs, outputs)
        itself.result()  # raises where --detector reads no output
    if budget is None or budget.metric is BudgetMetric.top1 or budget.labels is not None:
        return
    values = value_outputs(model, budget.output_kind)
    chunk = [one]
    Validator(
        session,
        lambda: chunk,
        budget.metric,
        Path("."),
        None,
        threshold,
        detector,
        side,
        values,
        label_outputs(model),
        counted=False,
    )


def check_validation(
    budget: AccuracyBudget, table: CalibrationTable, classes: Sequence[int]
) -> tuple[str, ...]:
    """Refuse, from the file lists before any model runs, validation images that are the calibration
    images, or that the labels file fits no output of or names none of (evaluate.labels.require_labelled):
    hq68 5, each was found after the corrections and the op timing. The warnings where some of them are
    calibration images (held_out.validation_line), or fewer than asked (image_folders.shortfall)."""
    paths = list(dict.fromkeys(select_images(budget.validation)))  # a count above the folder's: each once
    digests = [file_digest(path) for path in paths]  # each file read once, for both checks below
    found = [d for d in digests if d is not None]
    same = list_digest(paths, digests) == table.meta.get("images", {}).get("list_sha256")
    if same or held_out.all_calibrated(table.meta, found):  # the same files, or their copies
        raise ConfigError(
            "the --validation images are the calibration images; hold some apart for validation"
        )
    if budget.labels is not None:
        require_labelled(budget.labels, classes, paths, budget.validation.folder, "validation image")
    # hq125 F9: --validation-images past the folder's count used all of them without a word
    said = (shortfall(budget.validation, paths), held_out.validation_line(table.meta, found))
    return tuple(w for w in said if w)
