"""`quantkit convert --to int8`: table + model -> plan -> QDQ model, with the measured fallback and budget."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import onnx

from quantkit.calib import table as table_io
from quantkit.config import (
    AccuracyBudget,
    CalibMethod,
    ConvertConfig,
    Target,
)
from quantkit.evaluate.speed import measure as measure_speed
from quantkit.files import check_output, write_set
from quantkit.graph import compact as compact_graph
from quantkit.graph import model_io, subnormal
from quantkit.graph.augment import COMPUTE_OPS, large_activations
from quantkit.graph.fold_shapes import fills_as_nodes
from quantkit.graph.output_kinds import class_counts
from quantkit.graph.prepare import Prepared
from quantkit.graph.widen import narrow, redeclare, stored_half, widen
from quantkit.image_folders import images_of
from quantkit.outcomes import ConvertSummary, SpeedPlan
from quantkit.parallel import ONE_PROCESS, Parallel
from quantkit.pipeline import convert_notes, speed_memory, speed_refine, speed_step, tensorrt_parity
from quantkit.pipeline.budget_run import check_detector_head, check_validation, search_budget
from quantkit.pipeline.loading import (
    load_for_int8,
    model_bytes,
    require_model_path,
    resolve_weight_range,
    runs_as_given,
    table_samples,
)
from quantkit.pipeline.openvino_smoke import OpenVinoRefusal, openvino_gap
from quantkit.pipeline.progress import Progress, Rounds, no_progress, stoppable
from quantkit.pipeline.run_check import findings as target_findings
from quantkit.pipeline.trial_jobs import Spread
from quantkit.pipeline.writing import (
    INT8_FLOOR_DB,
    Floor,
    measurement_notes,
    plan_record,
    stamp,
    write_checked,
)
from quantkit.planner import at_output, corrections_choice, fallback, fallback_notes
from quantkit.planner import budget_search as budget_search
from quantkit.planner import plan as make_plan
from quantkit.planner.int8_model import FALLBACK_FORMATS, quantized_model, runnable
from quantkit.results import CalibrationTable, Corrections, FallbackStep, QuantPlan, Runs, feed_rows
from quantkit.runtime import lean_sessions, versions

FP8_OPSET = 19  # QuantizeLinear / DequantizeLinear take float8 types from opset 19
OPENVINO_RETRIES = 8  # layers OpenVINO refuses, kept float one conversion at a time, before giving up


def convert(
    model_path: Path,
    table_path: Path,
    output: Path,
    config: ConvertConfig,
    progress: Progress = no_progress,
    budget: AccuracyBudget | None = None,
    parallel: Parallel = ONE_PROCESS,
) -> ConvertSummary:
    """The INT8 model of `model_path` with the table's ranges, searched (--min-sqnr, --max-drop), checked
    before it is written. `parallel`: where the trials run and validation images are scored (same result)."""
    check_output(output, model_path, table_path, table_io.arrays_path(table_path))
    require_model_path(output)
    speed_memory.start_run()  # this run's (unkept_warning)
    if budget is not None:  # read before any work (hunt32: an empty one was found after converting)
        images_of(budget.validation, "--validation")
    low = FALLBACK_FORMATS.get(config.fallback)
    upgrade = (low.min_opset, f"{low.name} layers need {low.min_opset}") if low else (0, "")
    if config.fp8:
        upgrade = (FP8_OPSET, "float8 Q/DQ need 19")
    model, table, prepared = load_for_int8(model_path, table_path, *upgrade)
    shared: tuple[str, ...] = ()  # where --validation images are calibration images (hq95 F2), or too few
    if budget is not None:  # its images, labels, head and metric read before the corrections and timing
        shared = check_validation(budget, table, class_counts(model))
        check_detector_head(model, table, budget.detection_threshold, budget.detector, budget)
    with lean_sessions(large_activations(prepared.model, table_samples(table))):  # IS-Net at 1024x1024
        paths = (model_path, table_path, output)
        refused: tuple[str, ...] = ()
        while True:
            try:
                summary = _converted(paths, config, progress, budget, parallel, (model, table, prepared))
            except OpenVinoRefusal as exc:  # hunt54 B2: LYT-Net's attention blocks, refused one by one
                if not exc.layers or len(refused) >= OPENVINO_RETRIES:
                    raise
                refused += exc.layers
                config = dataclasses.replace(config, exclude_nodes=(*config.exclude_nodes, *exc.layers))
                continue
            note = (f"kept float where OpenVINO's low-precision passes refused them: {', '.join(refused)}",)
            unkept = speed_memory.unkept_warning()  # hq100 F10: bytes that may differ, said
            warned = summary.warnings + shared + ((unkept,) if unkept else ())
            return dataclasses.replace(
                summary, notes=summary.notes + (note if refused else ()), warnings=warned
            )


def _converted(
    paths: tuple[Path, Path, Path],
    config: ConvertConfig,
    progress: Progress,
    budget: AccuracyBudget | None,
    parallel: Parallel,
    loaded: tuple[onnx.ModelProto, CalibrationTable, Prepared],
) -> ConvertSummary:
    (model_path, table_path, output), (model, table, prepared) = paths, loaded
    inferred = subnormal.flushed(prepared.model)[0]  # hunt48 B1: their cost was timed as int8's gain
    config = resolve_weight_range(config)
    advance = progress("converting", 4)
    steps: list[FallbackStep] = []
    start_db = None
    parity: tensorrt_parity.Parity | None = None
    search_db = config.min_sqnr  # the --min-sqnr search's target: --target tensorrt may raise it
    budget_report = None
    cache: dict[str, tuple[float, float]] = {}
    samples = table_samples(table, prepared)
    given, ran_as = runs_as_given(model, prepared.model, samples)  # or prepared, where onnxruntime fails
    running = progress("running FP32 on the table's samples", 1)
    reference = fallback.measured_reference(inferred, samples)  # FP32 on the table's samples
    running(1)
    measured = fallback.SqnrMemo()  # models built again (the floor's second search) are not run again
    measures = (reference, samples, measured)
    requested = config
    choosing = progress(
        "choosing the corrections: range cap, rebalancing, rounding, bias", corrections_choice.PHASES
    )
    resolved = corrections_choice.resolve(inferred, table, config, reference, cache, measured, choosing)
    config, alphas, rounded = resolved.config, resolved.alphas, resolved.rounded
    corrections = resolved.corrections
    spread = Spread(parallel, inferred, table_path, reference, alphas, rounded)
    shape = None
    # --max-drop's first trial: the plan convert writes without one (for tensorrt, without its target)
    if budget is not None:
        if config.min_sqnr > 0:
            _, base, first = _search_fallback(
                inferred, table, config, progress, alphas, cache, reference, measured, spread
            )
        else:
            base, first = make_plan(inferred, table, config, {}, cache, alphas, rounded), []
        fallen = _fallen(base, first)
        timing = progress("timing the INT8 model's ops on this CPU", 1)
        shape = speed_step.trial_shape(inferred, table, config, base, fallen, cache, alphas, measures)
        timing(1)
        plan, budget_report = search_budget(
            inferred,
            table,
            config,
            budget,
            progress,
            alphas,
            cache,
            reference,
            spread,
            shape,
            tuple(fallen),
            base.cut_paths,
        )
    elif config.min_sqnr == 0:
        plan = make_plan(inferred, table, config, range_cache=cache, alphas=alphas, rounded=rounded)
    else:
        by = None
        if tensorrt_parity.applies(config):  # what symmetric int8 costs, bought back with float layers
            parity = tensorrt_parity.measure(
                inferred, table, config, alphas, rounded, reference, samples, measured
            )
            if parity is not None and parity.target_db > search_db:
                search_db, by = parity.target_db, tensorrt_parity.BY
            else:  # --min-sqnr's floor is the higher target (YOLOX-Nano's 12 dB): its search, its words
                parity = None
        start_db, plan, steps = _search_fallback(
            inferred, table, config, progress, alphas, cache, reference, measured, spread, (search_db, by)
        )
    advance(1)
    quantized = quantized_model(inferred, plan, config)
    # every output at the floor (not their mean: SLANet's token logits at 9.9 dB measured 11.8 dB beside
    # its boxes at 15.5, and its written model agreed on 53 % of held-out tokens)
    worst_db = fallback.output_sqnr(runnable(quantized, config), reference, samples, measured, worst=True)
    guarded_note: tuple[str, ...] = ()
    floor_kept: tuple[str, ...] = ()
    if budget is None and not worst_db >= INT8_FLOOR_DB:
        # broken, not coarse: keep layers float until it works, however many that takes
        layers = sum(n.op_type in COMPUTE_OPS for n in inferred.graph.node)
        guarded = dataclasses.replace(config, min_sqnr=INT8_FLOOR_DB, max_float_layers=layers)
        start_db, plan, steps = _search_fallback(
            inferred, table, guarded, progress, alphas, cache, reference, measured, spread, worst=True
        )
        parity, search_db = None, config.min_sqnr  # the floor's search replaced the target's
        reached = steps[-1].sqnr_db if steps else start_db
        guarded_note = (
            f"the {INT8_FLOOR_DB:g} dB floor judges each output: the worst measured {worst_db:.2f} dB on the "
            f"calibration samples; {len(steps)} layer(s) kept float for it (the floor ignores "
            f"--max-float-layers); with their input paths {convert_notes.left_int8(inferred, plan)} "
            f"({reached:.2f} dB; the floor's line gives the worst output's figure at each step)",
        )
        quantized = quantized_model(inferred, plan, config)
    parity_note = (
        (
            tensorrt_parity.note(
                parity,
                start_db,
                steps[-1].sqnr_db if steps else start_db,
                len(steps),
                convert_notes.left_int8(inferred, plan),
            ),
        )
        if parity is not None and start_db is not None and start_db < parity.target_db
        else ()  # the ViT's symmetric activations measured above its uint8 ones: nothing to say
    )
    emulated = runnable(quantized, config) is not quantized  # bfloat16: an emulation's speed is not its own
    timed = speed_step.timed(config, quantized)
    refined: speed_refine.Refined | None = None
    before = plan  # taken: what the speed step takes out of int8, as the file records it
    if timed and budget is None:  # --max-drop measured its choice: a new plan would not be the one it kept
        fallen = _fallen(plan, steps)
        timing = progress("timing the INT8 model's ops on this CPU", 1)
        refined, floor_kept = speed_step.refined(
            inferred, table, config, (plan, quantized), fallen, cache, alphas, measures
        )
        timing(1)
        if refined is not None:
            plan, quantized = refined.plan, refined.model
    elif budget is None:  # --prefer accuracy: a transformer's plan measured with Q/DQ on its layers' inputs
        refined = speed_step.more_accurate(inferred, config, (plan, quantized), measures)
        plan, quantized = (refined.plan, refined.model) if refined is not None else (plan, quantized)
    taken = tuple(sorted(set(before.quantized_nodes) - set(plan.quantized_nodes)))
    speed_plan = refined.report if refined is not None else shape.report if shape is not None else None
    if not convert_notes.quantizes_a_layer(plan):  # hunt49 C1: --max-drop floated
        speed_plan = None  # every layer: the INT8 plan's speed line spoke of a model not written
    floor = Floor(
        INT8_FLOOR_DB,
        f"the {('INT8', 'FP8')[config.fp8]} model, with {len(steps)} layer(s) kept float by the fallback,",
        floor_fix(config, budget is not None),
        each_output=True,
    )
    inputs = (model_path, table_path, table_io.arrays_path(table_path))

    def written(
        plan: QuantPlan,
        quantized: onnx.ModelProto,
        advance: Callable[[int], None],
        done: Corrections | None,
        timed_plan: SpeedPlan | None,
    ) -> tuple[onnx.ModelProto, list[tuple[Path, bytes]], dict[str, float]]:
        if config.compact:
            quantized = compact_graph.compact(quantized, keep=reference[0] if reference else ())
        else:
            quantized = compact_graph.share_weights(quantized)
        quantized = narrow(quantized, prepared.interface)  # a float16 interface, as the model was fed
        if prepared.widened[0]:  # float16 weights: the layers left float keep them so (exact)
            quantized, halves[0] = stored_half(quantized)
        quantized = redeclare(quantized, prepared.declared)  # the shapes the file declared
        quantized = fills_as_nodes(quantized)  # a repeated value stored as the node that computes it
        record = plan_record(plan, done, timed_plan, taken)
        stamp(quantized, config.to_dict(), table_path, table, conversion=record)
        run = runnable(quantized, config)
        stored, smoke = write_checked(
            quantized, given, samples, reference, floor, output, inputs, advance, measured, run, write=False
        )
        return quantized, stored, smoke

    halves = [0]  # float weights stored in float16 as the model stored them, in the model written
    int8, stored, smoke = written(plan, quantized, advance, corrections, speed_plan)
    # FP32 timed as the network it is: not slowed by weights listed as inputs, nor by 16-bit insides
    fp32, flushed = subnormal.flushed(widen(given).model)  # counted in the file, as compare counts
    fp32, listed = model_io.weights_fixed(fp32)
    here = speed_step.runs_here(config, quantized) and bool(plan.quantized_nodes)  # else noise
    speed = measure_speed(fp32, int8, samples) if here else None  # --prefer accuracy: reported alone
    slow, speed = speed_memory.too_slow(speed, config.prefer, fp32, int8, samples, speed_plan)
    if slow is not None:  # int8 does not pay here: the output is the model in float
        why = (
            f"int8 ran {slow.speedup:.2f}x FP32 on this CPU (1 thread, measured twice); kept float "
            f"(--prefer {config.prefer.value}; --prefer accuracy writes the INT8 model)"
        )
        keep = {n.name: why for n in inferred.graph.node if n.op_type in COMPUTE_OPS}
        plan = make_plan(inferred, table, config, keep_float=keep, range_cache=cache, alphas=alphas)
        floated = quantized_model(inferred, plan, config)
        int8, stored, smoke = written(plan, floated, lambda _: None, None, None)
        speed, corrections, speed_plan = None, None, None  # every op float: none was kept float for speed
        if budget_report is not None:  # its choice is not the model written: say so beside it
            budget_report = dataclasses.replace(budget_report, not_written=f"every layer is float: {why}")
    summary = _convert_summary(inferred, plan, model_path, sum(len(d) for _, d in stored), prepared, smoke)
    sizes = (summary.bytes_before, summary.bytes_after)
    checked = target_findings(int8, model_io.infer_shapes(int8), config.target)
    if config.target is Target.openvino:
        checked += openvino_gap(model, int8, samples, smoke)
    itself = fallback.foreground_maps(inferred, reference)
    run_int8 = runnable(int8, config)
    judged, warned = measurement_notes(  # subnormal weights flushed above: nothing inflated to warn of
        inferred, run_int8, reference, samples, smoke, itself, model, flushed=True
    )
    none = convert_notes.nothing_quantized(plan, timed, budget_report, config.fallback, config.fp8, sizes)
    # once nothing is left to decide or measure: an interrupted convert, or one that fails in the target's
    # checks (hunt51 A1: OpenVINO's, with the model already written), leaves no file
    advance(1)  # before the write: a cancel raised by the bar leaves no file (hq72 11)
    write_set(stored)
    return dataclasses.replace(
        summary,
        notes=summary.notes
        + convert_notes.settings(config, emulated, speed_step.in_float16(config, int8))
        + corrections_choice.notes(resolved, requested, table)
        + judged
        + guarded_note
        + parity_note
        + at_output.judged_by_mean(run_int8, inferred, reference, samples, measured, config.min_sqnr)
        + at_output.sigmoid_read(reference, bool(steps))
        + floor_kept
        + convert_notes.elsewhere(config)
        + convert_notes.shifted(plan)
        + convert_notes.weights_listed(listed if speed is not None else 0)
        + subnormal.flushed_note(flushed, speed is not None)
        + convert_notes.stored_half(halves[0])
        + convert_notes.inputs_changed(model, int8)
        + convert_notes.shared_weights(inferred, plan)
        + convert_notes.made_elsewhere(table.meta.get("versions", {}), versions())
        + ran_as,
        speed=speed,
        fallback=tuple(steps),
        fallback_start_db=start_db,
        fallback_target_db=search_db,
        fallback_target_whose=convert_notes.searched_by(bool(guarded_note), parity is not None),
        budget=budget_report,
        corrections=corrections,
        target_findings=checked,
        speed_plan=speed_plan,
        prepared_fewer=sum(n.op_type != "Constant" for n in model.graph.node) - len(inferred.graph.node),
        # below the --min-sqnr asked for (or its default) a warning, kept under --quiet: hunt34's PP-OCRv4
        # detector was written at 10.1 dB against 12 with the figure among a dozen notes, and exit 0
        warnings=none
        + (() if none else convert_notes.gained_nothing(*sizes, speed, config.prefer))
        + fallback_notes.short_of_target(
            config.min_sqnr,
            config.max_float_layers,
            start_db,
            steps,
            smoke,
            # the floor's figures are the worst output's; --min-sqnr judges the mean (hunt56 B1), and a
            # search ended short is judged on its own measure (hq120 F3: fp8 at 10.20 dB against 12 went
            # unsaid, the smoke test's 14.05 dB pooling each output's values)
            fallback.output_sqnr(run_int8, reference, samples, measured)
            if guarded_note or convert_notes.searched_short(config.min_sqnr, start_db, steps)
            else None,
            speed_plan.placement if speed_plan is not None else None,
        )
        + convert_notes.coarse_budget(budget_report)
        + warned,
        samples=feed_rows(samples),
    )


def _fallen(plan: QuantPlan, steps: list[FallbackStep]) -> dict[str, str]:
    """node -> why, for the layers the fallback's `steps` kept float in `plan`."""
    kept = {step.node for step in steps}
    return {s.node: s.reason for s in plan.skipped if s.node in kept}


def floor_fix(config: ConvertConfig, budget: bool = False) -> str:
    """What to try when the INT8 model measures below INT8_FLOOR_DB (never the method already used: SLANet,
    refused with --method minmax, was told to try --method minmax). budget: --max-drop chose the plan,
    and the floor's own search does not run after it (hunt56: YOLOX-Nano with --min-sqnr 0)."""
    minmax = config.method is CalibMethod.minmax or config.fp8  # fp8 ranges are the observed amax already
    other = "convert --to fp16" if minmax else "try --method minmax"
    searched = (
        f"; under --max-drop, --min-sqnr's layers (at {config.min_sqnr:g} dB now) stay float in every trial: "
        "raise it"
        if budget
        else ""
    )
    return f"keep layers float with --exclude-nodes (quantkit sensitivity ranks them), or {other}{searched}"


def _search_fallback(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    progress: Progress,
    alphas: Mapping[str, float] | None,
    cache: dict[str, tuple[float, float]],
    reference: Runs,
    measured: fallback.SqnrMemo,
    spread: Spread,
    target: tuple[float, str | None] | None = None,
    worst: bool = False,
) -> tuple[float, QuantPlan, list[FallbackStep]]:
    """fallback.search to config.min_sqnr, with a block of layers at one end where no single one helps
    (for --min-sqnr, from the floor up: below it the floor's search tries one); worst: the floor's (each
    output at it). target: (dB, whose target it is: fallback.search's `by`) in config.min_sqnr's place."""
    target_db, by = target or (config.min_sqnr, None)
    total = sum(n.op_type in COMPUTE_OPS for n in model.graph.node)
    advance, finish = stoppable(progress, "measuring each layer's recovery", total)
    whose = by.format(target_db) if by else f"for --min-sqnr {target_db:g}"
    label = f"choosing more layers to keep float {whose}"
    rounds = Rounds(progress, label, max(config.max_float_layers, 1))
    with spread.trials(config) as many:
        plan, steps, start = fallback.search(
            model,
            table,
            config,
            target_db,
            config.max_float_layers,
            advance,
            alphas,
            cache,
            reference,
            measured,
            many,
            spread.rounded,
            blocks=-math.inf if worst else INT8_FLOOR_DB,  # below the floor, its own search tries them
            worst=worst,
            rounds=rounds.advance,
            by=by,
        )
    finish()
    rounds.finish()
    return start, plan, steps


def _convert_summary(
    model: onnx.ModelProto,
    plan: QuantPlan,
    model_path: Path,
    size_after: int,
    prepared: Prepared,
    smoke: dict[str, float],
) -> ConvertSummary:
    op_of = {n.name: n.op_type for n in model.graph.node}
    return ConvertSummary(
        quantized_by_type=dict(sorted(Counter(plan.quantized_nodes.values()).items())),
        folded_by_type=dict(sorted(Counter(op_of[n] for n in plan.folds).items())),
        float_by_reason=dict(sorted(Counter((s.op_type, s.reason) for s in plan.skipped).items())),
        bytes_before=model_bytes(model_path),
        bytes_after=size_after,
        opset_before=prepared.opset_before,
        opset_after=prepared.opset_after,
        smoke_sqnr_db=smoke,
        plan=plan,
        notes=prepared.notes(),
    )
