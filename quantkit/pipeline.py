"""calibrate / convert / compare as functions. Owns paths and what is written (through quantkit.files);
the only module that composes the layers below it. Raises QuantkitError; never prints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit import __version__
from quantkit.calib import table as table_io
from quantkit.calib.collect import collect
from quantkit.config import (
    AccuracyBudget,
    CalibrateConfig,
    CompareConfig,
    ConvertConfig,
    FallbackPrecision,
    Float16Config,
    ImageSelection,
    Preprocess,
    WeightRange,
)
from quantkit.errors import (
    CalibrationError,
    ConfigError,
    ConversionError,
    ImageError,
    ModelError,
    OutputError,
)
from quantkit.evaluate.budget import Validator
from quantkit.evaluate.compare import compare_outputs, read_classes
from quantkit.evaluate.metrics import OutputErrors, OutputNoise, latency_stats
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.files import check_output, write_set
from quantkit.graph import compact as compact_graph
from quantkit.graph import fp16 as fp16_graph
from quantkit.graph import model_io
from quantkit.graph.augment import COMPUTE_OPS, observed_tensors, with_outputs
from quantkit.graph.prepare import Prepared, prepare
from quantkit.graph.qdq import WeightMemo, apply_plan
from quantkit.graph.query import is_quantized_op, measured_outputs
from quantkit.graph.samples import synthetic_samples
from quantkit.images import ImageLoader, list_digest, resolve_preprocess, select_images, shortfall
from quantkit.planner import budget as budget_search
from quantkit.planner import fallback, fp16_checks, smoothing
from quantkit.planner import fp16 as fp16_planner
from quantkit.planner import plan as make_plan
from quantkit.planner import sensitivity as sens
from quantkit.results import (
    Batch,
    BudgetReport,
    CalibrationTable,
    ComparisonResult,
    ConvertSummary,
    Corrections,
    FallbackStep,
    Float16Summary,
    LayerSensitivity,
    OutputMetrics,
    QuantPlan,
    SensitivityReport,
)
from quantkit.runtime import Session, cpu_info, int8_saturates, interleaved_latency, versions

# start(label, total) -> advance(n): how the CLI draws progress bars without the pipeline knowing rich.
Progress = Callable[[str, int], Callable[[int], None]]
SMOKE_SAMPLES = 8  # stored in the table: convert's smoke test and --min-sqnr measure on them
# Below these output SQNRs (all outputs, smoke-test samples) a conversion is broken, not coarse: healthy INT8
# models measure 14-34 dB, float16 ones 38-70 dB. Such a model is never written.
INT8_FLOOR_DB = 10.0
FP16_FLOOR_DB = 30.0
# Synthetic inputs are not the user's images (YOLOX's float16 model: 38 dB on photos, 42 dB on the
# synthetic patches, 21 dB on white noise). Without a table, only a conversion below this is broken.
FP16_SYNTHETIC_FLOOR_DB = 20.0
META_PREFIX = "quantkit."


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


# ---------------------------------------------------------------- checks shared by the commands


def _require_float(model: onnx.ModelProto, path: Path) -> None:
    """Refuse a model that is quantized already (QDQ or QOperator): its float original is what converts."""
    found = Counter(n.op_type for n in model.graph.node if is_quantized_op(n.op_type))
    if found:
        ops = ", ".join(
            f"{count} {op}" for op, count in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        raise ModelError(
            f"{path.name} is quantized already ({ops}); quantkit converts float models: give it the FP32 "
            "original"
        )


def _require_quantizable(model: onnx.ModelProto, path: Path) -> None:
    _require_float(model, path)
    if not any(node.op_type in COMPUTE_OPS for node in model.graph.node):
        raise ModelError(
            f"{path.name} has no op quantkit quantizes ({', '.join(sorted(COMPUTE_OPS))}); "
            "there is nothing to convert to INT8"
        )


def _require_table_of(table: CalibrationTable, table_path: Path, sha: str, hint: str = "") -> None:
    """The table was made for the model whose file hashes to `sha`, or this raises."""
    if table.model_sha256 != sha:
        raise CalibrationError(
            f"{table_path.name} was made for another model (sha256 {table.model_sha256[:12]}..., this model "
            f"is {sha[:12]}...); run `quantkit calibrate` on this model{hint}"
        )


def _load_for_int8(model_path: Path, table_path: Path) -> tuple[onnx.ModelProto, CalibrationTable, Prepared]:
    """(model as loaded, its table, the model prepared as calibrate prepared it: opset >= 13, weights as
    initializers, named nodes, inferred shapes)."""
    table = table_io.load(table_path)
    model = model_io.load_model(model_path)
    _require_quantizable(model, model_path)
    _require_table_of(table, table_path, model_io.file_sha256(model_path))
    pre = Preprocess.from_dict(table.meta["preprocess"])
    return model, table, prepare(model, size=(pre.height, pre.width))


def _table_paths(table: Path) -> tuple[Path, Path]:
    if table.suffix.lower() != ".json":
        raise OutputError(
            f"the calibration table must be a .json path (got {table.name}); arrays go beside it"
        )
    return table, table_io.arrays_path(table)


# ---------------------------------------------------------------- calibrate


@dataclass(frozen=True)
class CalibrateSummary:
    table: Path
    arrays: Path
    images_used: int
    images_skipped: tuple[tuple[str, str], ...]
    tensors: int
    seconds: float
    preprocess: Preprocess
    notes: tuple[str, ...] = ()  # what was changed on the way in (opset upgrade, Constant weights)
    reference_findings: tuple[str, ...] = ()  # signs that FP32 itself is fed wrongly (evaluate.sanity)
    warnings: tuple[str, ...] = ()  # e.g. --num-images beyond the folder


def calibrate(
    model_path: Path, table_path: Path, config: CalibrateConfig, progress: Progress = _no_progress
) -> CalibrateSummary:
    json_path, npz_path = _table_paths(table_path)
    for out in (json_path, npz_path):
        check_output(out, model_path)
    started = time.perf_counter()
    model = model_io.load_model(model_path)
    _require_quantizable(model, model_path)
    spec = model_io.image_input(model)
    preprocess = resolve_preprocess(config.preprocess, spec)
    prepared = prepare(model, size=(preprocess.height, preprocess.width))
    observed = observed_tensors(prepared.model)
    paths = select_images(config.images)
    size = spec.shape[0] or config.batch_size  # the batch the model fixes, else the requested one
    loader = ImageLoader(paths, preprocess, size)
    session = Session.of(with_outputs(prepared.model, list(observed)))
    samples: list[np.ndarray] = []

    def batches() -> Iterator[np.ndarray]:
        for batch in loader:
            if len(samples) < SMOKE_SAMPLES:
                samples.extend(batch.data[: SMOKE_SAMPLES - len(samples)])
            yield batch.data

    check = ReferenceCheck()
    graph_outputs = [o.name for o in prepared.model.graph.output]

    def watch(batch: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        check.update(batch, {n: outputs[n] for n in graph_outputs if n in outputs})

    stats, _ = collect(session, observed, batches(), config.bins, progress("calibrating", len(paths)), watch)
    used = len(paths) - len(loader.skipped)
    _check_enough_images(used, len(paths), loader.skipped)
    meta = {
        "producer": "quantkit",
        "quantkit_version": __version__,
        "model_file": model_path.name,
        "model_sha256": model_io.file_sha256(model_path),
        "input": spec.name,
        "preprocess": preprocess.to_dict(),
        "images": {
            "count": used,
            "unique": len(set(paths)),
            "skipped": len(loader.skipped),
            "seed": config.images.seed,
            "requested": config.images.num_images,
            "list_sha256": loader.content_hash,
        },
        "bins": config.bins,
        "batch_size": size,
        "versions": versions(),
    }
    table = CalibrationTable(meta=meta, stats=stats, samples=np.stack(samples))
    json_bytes, npz_bytes = table_io.serialize(table)
    write_set([(npz_path, npz_bytes), (json_path, json_bytes)])
    return CalibrateSummary(
        table=json_path,
        arrays=npz_path,
        images_used=used,
        images_skipped=tuple((str(p), why) for p, why in loader.skipped),
        tensors=len(stats),
        seconds=time.perf_counter() - started,
        preprocess=preprocess,
        notes=prepared.notes(),
        reference_findings=check.findings(),
        warnings=tuple(w for w in (shortfall(config.images, paths),) if w),
    )


def _check_enough_images(used: int, total: int, skipped: list[tuple[Path, str]]) -> None:
    """Calibration fails only when fewer than half of the selected images could be read."""
    if used == 0 or used * 2 < total:
        first = "; ".join(f"{p.name}: {why}" for p, why in skipped[:3])
        raise ImageError(
            f"only {used} of {total} images could be read (first failures: {first}); "
            "remove or replace the broken files"
        )


# ---------------------------------------------------------------- convert


def convert(
    model_path: Path,
    table_path: Path,
    output: Path,
    config: ConvertConfig,
    progress: Progress = _no_progress,
    budget: AccuracyBudget | None = None,
) -> ConvertSummary:
    check_output(output, model_path, table_path, table_io.arrays_path(table_path))
    model, table, prepared = _load_for_int8(model_path, table_path)
    inferred = prepared.model
    config = resolve_weight_range(config)
    advance = progress("converting", 4)
    steps: list[FallbackStep] = []
    start_db = None
    budget_report = None
    cache: dict[str, tuple[float, float]] = {}
    samples = _table_samples(table)
    reference = fallback.measured_reference(inferred, samples)  # FP32 on the table's samples
    alphas, corrections = smoothing.resolve(inferred, table, config, reference, cache)
    if budget is not None:
        plan, budget_report = _search_budget(
            inferred, table, config, budget, progress, alphas, cache, reference
        )
    elif config.min_sqnr == 0:
        plan = make_plan(inferred, table, config, range_cache=cache, alphas=alphas)
    else:
        start_db, plan, steps = _search_fallback(inferred, table, config, progress, alphas, cache, reference)
    advance(1)
    quantized = _quantized_model(inferred, plan, config)
    searched = steps[-1].sqnr_db if steps else start_db  # what the fallback search measured last
    if (
        budget is None
        and not (searched if searched is not None else fallback.output_sqnr(quantized, reference, samples))
        >= INT8_FLOOR_DB
    ):
        # broken, not coarse: keep layers float until it works, however many that takes
        layers = sum(n.op_type in COMPUTE_OPS for n in inferred.graph.node)
        guarded = dataclasses.replace(config, min_sqnr=INT8_FLOOR_DB, max_float_layers=layers)
        start_db, plan, steps = _search_fallback(inferred, table, guarded, progress, alphas, cache, reference)
        quantized = _quantized_model(inferred, plan, config)
    if config.compact:
        quantized = compact_graph.compact(quantized)
    _stamp(quantized, config.to_dict(), table_path, table, conversion=_conversion_record(plan, corrections))
    floor = Floor(
        INT8_FLOOR_DB,
        f"the INT8 model, with {len(steps)} layer(s) kept float by the fallback,",
        "keep layers float with --exclude-nodes, or try --method minmax",
    )
    inputs = (model_path, table_path, table_io.arrays_path(table_path))
    stored, smoke = _write_checked(quantized, model, samples, reference, floor, output, inputs, advance)
    size = sum(len(data) for _, data in stored)
    summary = _convert_summary(inferred, plan, model_path, size, prepared, smoke)
    reduced = (
        (
            "int8 weights on [-63, 63] (--weight-range reduced): full-range products saturate the int8 "
            "kernels of x86 CPUs without VNNI",
        )
        if config.weight_range is WeightRange.reduced
        else ()
    )
    return dataclasses.replace(
        summary,
        notes=summary.notes + reduced,
        fallback=tuple(steps),
        fallback_start_db=start_db,
        budget=budget_report,
        corrections=corrections,
    )


def resolve_weight_range(config: ConvertConfig) -> ConvertConfig:
    """config with weight_range auto decided for this machine's onnxruntime kernels."""
    if config.weight_range is not WeightRange.auto:
        return config
    chosen = WeightRange.reduced if int8_saturates() else WeightRange.full
    return dataclasses.replace(config, weight_range=chosen)


@dataclass(frozen=True)
class Floor:
    """The output SQNR below which a conversion is broken, and what to say if it is."""

    db: float
    what: str  # "the INT8 model, with 3 layer(s) kept float by the fallback,"
    fix: str


def _write_checked(
    converted: onnx.ModelProto,
    original: onnx.ModelProto,
    samples: np.ndarray,
    reference: list[dict[str, np.ndarray]],
    floor: Floor,
    output: Path,
    inputs: tuple[Path, ...],
    advance: Callable[[int], None],
) -> tuple[list[tuple[Path, bytes]], dict[str, float]]:
    """Write `converted` to `output` (and its external data beside it) only if it passes onnx.checker,
    loads and runs finite in onnxruntime, and measures at least floor.db against `reference` (FP32's
    measured outputs on samples). Returns (what was written, SQNR per output against `original`)."""
    try:
        model_io.check(converted)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(f"the converted model fails onnx.checker ({exc}); nothing was written") from exc
    stored = [(output.parent / name, data) for name, data in model_io.serialize_files(converted, output.name)]
    for path, _ in stored[1:]:  # an external-data file beside the output: never over an input either
        check_output(path, *inputs)
    advance(1)
    smoke = _smoke_test(original, converted, samples)
    measured = fallback.output_sqnr(converted, reference, samples)
    if not measured >= floor.db:
        raise ConversionError(
            f"{floor.what} measures {measured:.1f} dB output SQNR on the smoke-test samples, below the "
            f"{floor.db:g} dB that a working conversion reaches; nothing was written. To fix: {floor.fix}"
        )
    advance(1)
    write_set(stored)
    advance(1)
    return stored, smoke


def _quantized_model(model: onnx.ModelProto, plan: QuantPlan, config: ConvertConfig) -> onnx.ModelProto:
    """The plan applied; with --fallback fp16, what it leaves float then runs in float16."""
    quantized = apply_plan(model, plan)
    if config.fallback is FallbackPrecision.fp32:
        return quantized
    inferred = model_io.infer_shapes(quantized)
    keep = fp16_planner.int8_float32_nodes(inferred, set(plan.quantized_nodes))
    return fp16_graph.rewrite(inferred, keep).model


def _search_budget(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    budget: AccuracyBudget,
    progress: Progress,
    alphas: Mapping[str, float] | None,
    cache: dict[str, tuple[float, float]],
    sample_reference: list[dict[str, np.ndarray]],
) -> tuple[QuantPlan, BudgetReport]:
    """The fewest layers kept float (ranked by their output recovery on the table's samples) that hold
    the metric within budget.max_drop points of FP32 on the validation images."""
    deadline = time.monotonic() + budget.timeout_s
    preprocess = Preprocess.from_dict(table.meta["preprocess"])
    paths = list(dict.fromkeys(select_images(budget.validation)))  # a count above the folder's: each once
    if list_digest(paths) == table.meta.get("images", {}).get("list_sha256"):
        raise ConfigError(
            "the --validation images are the calibration images; hold some apart for validation"
        )
    reference = Session.of(model)
    size = reference.fixed_batch or 8

    def batches() -> Iterator[Batch]:
        return iter(ImageLoader(paths, preprocess, size))

    classes = read_classes(budget.labels) if budget.labels else None
    validator = Validator(
        reference,
        batches,
        budget.metric,
        budget.validation.folder,
        classes,
        budget.detection_threshold,
        budget.detector,
        (preprocess.height, preprocess.width),
    )
    base = make_plan(model, table, config, range_cache=cache, alphas=alphas)
    layers = [n.name for n in model.graph.node if n.name in base.quantized_nodes and n.op_type in COMPUTE_OPS]
    advance = progress("ranking layers by output recovery", len(layers))
    scores = fallback.layer_recovery(model, table, config, sample_reference, base, advance, cache, alphas)
    ranked = sorted(scores, key=lambda n: (-scores[n], n))
    plans: dict[tuple[str, ...], QuantPlan] = {}

    def drop_of(kept: tuple[str, ...]) -> float:
        keep = dict.fromkeys(kept, f"kept float by --max-drop {budget.max_drop:g} ({budget.metric.value})")
        plans[kept] = make_plan(model, table, config, keep_float=keep, range_cache=cache, alphas=alphas)
        return validator.drop(Session.of(_quantized_model(model, plans[kept], config)))

    advance = progress(f"searching within --max-drop {budget.max_drop:g}", budget.max_trials)
    found = budget_search.fewest_layers(
        ranked, drop_of, budget.max_drop, budget.max_trials, deadline, lambda _: advance(1)
    )
    trials = tuple((t.layers, t.drop) for t in found.trials)
    if found.layers is None:
        best = min(found.trials, key=lambda t: t.drop)
        raise ConversionError(
            f"--max-drop {budget.max_drop:g} ({validator.metric.value}) was not met: the best of "
            f"{len(found.trials)} trial(s) lost {best.drop:.2f} points with {len(best.layers)} layer(s) "
            f"float{' before the ' + found.stopped + ' limit' if found.stopped else ''}; raise --max-drop, "
            "--max-trials or --timeout. Nothing was written"
        )
    chosen_drop = dict(trials)[found.layers]
    report = BudgetReport(
        metric=validator.metric.value,
        max_drop=budget.max_drop,
        validation_images=len(paths),
        trials=trials,
        chosen=found.layers,
        chosen_drop=chosen_drop,
        stopped=found.stopped,
    )
    return plans[found.layers], report


def convert_float16(
    model_path: Path,
    table_path: Path | None,
    output: Path,
    config: Float16Config,
    progress: Progress = _no_progress,
) -> Float16Summary:
    """Weights and compute in float16; unsafe ops, weights beyond float16, activations beyond its range on
    the samples (the table's, else synthetic) and nodes onnxruntime refuses in float16 stay float32."""
    inputs = (model_path, *((table_path, table_io.arrays_path(table_path)) if table_path else ()))
    check_output(output, *inputs)
    table = table_io.load(table_path) if table_path else None
    model = model_io.load_model(model_path)
    _require_float(model, model_path)
    sha = model_io.file_sha256(model_path)
    if table is not None and table_path is not None:
        _require_table_of(table, table_path, sha, "; or leave --calibration out (no range check then)")
    advance = progress("converting to float16", 4)
    prepared = prepare(model, minimum=0, size=config.input_size)  # float16 needs no opset upgrade
    inferred = prepared.model
    samples, described = (
        (_table_samples(table), "calibration samples")
        if table is not None
        else (synthetic_samples(inferred, config.input_size), "synthetic inputs")
    )
    measured = measured_outputs(inferred)
    tensors = sorted(set(measured.values()))
    peaks, runs = fp16_checks.activation_peaks(inferred, samples, tensors)
    reference = [{t: run[t] for t in tensors} for run in runs]
    decided = fp16_planner.plan(inferred, table, config.exclude_nodes, config.exclude_op_types, peaks)
    first = {name: runs[0][name] for name in measured}
    attempt = fp16_checks.attempt_for(inferred, samples[:1], first, config.keep_io_types)
    decided = fp16_checks.runnable(inferred, decided, attempt)
    advance(1)
    floor = min(FP16_FLOOR_DB if table is not None else FP16_SYNTHETIC_FLOOR_DB, config.min_sqnr)
    target = config.min_sqnr if table is not None else floor  # on synthetic inputs: only what is broken
    planned = len(decided.kept)
    if target > 0:
        decided = _float16_fallback(inferred, decided, samples, reference, target, config, progress)
    rewritten = fp16_graph.rewrite(inferred, (k.node for k in decided.kept), config.keep_io_types)
    converted = compact_graph.compact(rewritten.model) if config.compact else rewritten.model
    _stamp(converted, {"to": "fp16", **config.to_dict()}, table_path, table, sha)
    checked = Floor(
        floor,
        f"the float16 model, with {len(decided.kept) - planned} layer(s) kept float32 by the fallback,",
        "raise --max-float-layers or keep op types float32 with --exclude-op-types",
    )
    stored, smoke = _write_checked(converted, inferred, samples, reference, checked, output, inputs, advance)
    kept_names = {k.node for k in decided.kept}
    return Float16Summary(
        float16_by_type=dict(
            sorted(Counter(n.op_type for n in inferred.graph.node if n.name not in kept_names).items())
        ),
        kept_float32=tuple((k.node, k.op_type, k.reason) for k in decided.kept),
        checked_tensors=decided.checked_tensors,
        overflowing_weights=decided.overflowing_weights,
        casts=rewritten.casts,
        bytes_before=_model_bytes(model_path),
        bytes_after=sum(len(data) for _, data in stored),
        smoke_sqnr_db=smoke,
        smoke_input=described,
        notes=prepared.notes(),
    )


def _float16_fallback(
    model: onnx.ModelProto,
    decided: fp16_planner.Float16Plan,
    samples: np.ndarray,
    reference: list[dict[str, np.ndarray]],
    target: float,
    config: Float16Config,
    progress: Progress,
) -> fp16_planner.Float16Plan:
    """Below target dB on the samples (the table's: --min-sqnr; synthetic: the floor): keep float32, one at
    a time, the linear layers that recover the most output SQNR alone (ranked once), until it is met or
    max_float32_layers are kept. reference: FP32's outputs on the samples (Session.run_samples)."""
    why = (
        f"--min-sqnr {target:g}"
        if target == config.min_sqnr
        else f"the {target:g} dB floor on synthetic inputs"
    )

    def sqnr(kept: set[str]) -> float:
        return fallback.output_sqnr(
            fp16_graph.rewrite(model, kept, config.keep_io_types).model, reference, samples
        )

    kept = {k.node for k in decided.kept}
    start = sqnr(kept)
    if start >= target or config.max_float32_layers == 0:
        return decided
    layers = [n for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name not in kept]
    advance = progress("measuring each layer in float32", len(layers))
    scores = {}
    for node in layers:
        scores[node.name] = sqnr(kept | {node.name})
        advance(1)
    ranked = sorted(scores, key=lambda n: (-scores[n], n))
    added: list[fp16_planner.KeptFloat32] = []
    score = start
    for name in ranked[: config.max_float32_layers]:
        if score >= target:
            break
        kept.add(name)
        score = sqnr(kept)
        op = next(n.op_type for n in layers if n.name == name)
        reason = f"kept float32 by {why} (output {start:.1f} -> {score:.1f} dB)"
        added.append(fp16_planner.KeptFloat32(name, op, reason))
    return dataclasses.replace(decided, kept=decided.kept + tuple(added))


def _search_fallback(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    progress: Progress,
    alphas: Mapping[str, float] | None,
    cache: dict[str, tuple[float, float]],
    reference: list[dict[str, np.ndarray]],
) -> tuple[float, QuantPlan, list[FallbackStep]]:
    advance = progress(
        "measuring each layer's recovery", sum(n.op_type in COMPUTE_OPS for n in model.graph.node)
    )
    plan, steps, start = fallback.search(
        model, table, config, config.min_sqnr, config.max_float_layers, advance, alphas, cache, reference
    )
    return start, plan, steps


def _stamp(
    model: onnx.ModelProto,
    settings: dict[str, Any],
    table_path: Path | None,
    table: CalibrationTable | None,
    source_sha256: str = "",
    conversion: dict[str, Any] | None = None,
) -> None:
    """Provenance in metadata_props: producer, version, settings, calibration hash, preprocessing, and
    what an INT8 conversion rebalanced and corrected (conversion; `compare` shows it)."""
    model.producer_name = "quantkit"
    model.producer_version = __version__
    props = {"version": __version__, "settings": json.dumps(settings, sort_keys=True)}
    if conversion is not None:
        props["conversion"] = json.dumps(conversion, sort_keys=True)
    if table_path is not None and table is not None:
        props["calibration_sha256"] = hashlib.sha256(table_path.read_bytes()).hexdigest()
        props["source_model_sha256"] = table.model_sha256
        props["preprocess"] = json.dumps(table.meta.get("preprocess", {}), sort_keys=True)
    else:
        props["source_model_sha256"] = source_sha256
    kept = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value


def _conversion_record(plan: QuantPlan, corrections: Corrections | None) -> dict[str, Any]:
    """What rebalancing and bias correction did, as plain JSON for the model's metadata."""
    record: dict[str, Any] = {
        "rebalanced": [
            {"tensor": r.tensor, "alpha": r.alpha, "folded_into": r.producer} for r in plan.rebalances
        ],
        "bias_corrected_layers": len(plan.input_means),
    }
    if corrections is not None:
        record["calibration_sqnr_db"] = {
            "plain": corrections.sqnr_plain_db,
            "bias_correction": corrections.sqnr_corrected_db,
            "rebalancing": corrections.sqnr_rebalanced_db,
            "both": corrections.sqnr_both_db,
        }
    return record


def conversion_record(model: onnx.ModelProto) -> dict[str, Any] | None:
    """What quantkit recorded of an INT8 conversion in a model's metadata; None if absent or malformed
    (hand-edited, another version): it is shown, never trusted."""
    for prop in model.metadata_props:
        if prop.key == META_PREFIX + "conversion":
            try:
                record = json.loads(prop.value)
            except ValueError:
                return None
            return record if _well_formed(record) else None
    return None


def _well_formed(record: object) -> bool:
    if not isinstance(record, dict):
        return False
    rebalanced, layers = record.get("rebalanced"), record.get("bias_corrected_layers")
    db = record.get("calibration_sqnr_db", {})
    number = (int, float)
    return (
        isinstance(rebalanced, list)
        and all(isinstance(r, dict) and isinstance(r.get("alpha"), number) for r in rebalanced)
        and isinstance(layers, int)
        and isinstance(db, dict)
        and all(v is None or isinstance(v, number) for v in db.values())
    )


def _table_samples(table: CalibrationTable) -> np.ndarray:
    if table.samples is None or table.samples.size == 0:
        raise CalibrationError("the calibration table holds no sample inputs; recalibrate with this version")
    return table.samples


def _smoke_test(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, samples: np.ndarray
) -> dict[str, float]:
    """The converted model loads and gives finite outputs on samples [K, ...]: SQNR per output."""
    ref_session = Session.of(reference)
    try:
        cand_session = Session.of(candidate)
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime cannot load the converted model ({exc}); nothing was written"
        ) from exc
    errors = {name: OutputErrors(name) for name in ref_session.output_names}
    for ref, cand in zip(ref_session.run_samples(samples), cand_session.run_samples(samples), strict=True):
        for name, acc in errors.items():
            if not np.isfinite(cand[name]).all() and np.isfinite(ref[name]).all():
                raise ConversionError(
                    f"the converted model gives NaN/Inf in output {name!r}; nothing was written. "
                    "Try --method minmax or exclude the failing layers"
                )
            acc.update(ref[name], cand[name])
    return {name: acc.result().sqnr_db for name, acc in errors.items()}


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
        bytes_before=_model_bytes(model_path),
        bytes_after=size_after,
        opset_before=prepared.opset_before,
        opset_after=prepared.opset_after,
        smoke_sqnr_db=smoke,
        plan=plan,
        notes=prepared.notes(),
    )


def _model_bytes(path: Path) -> int:
    """The file's size plus the external data files it names."""
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return total + sum(
        (path.parent / loc).stat().st_size for loc in locations if (path.parent / loc).is_file()
    )


# ---------------------------------------------------------------- sensitivity


def sensitivity(
    model_path: Path,
    table_path: Path,
    images: ImageSelection,
    config: ConvertConfig,
    cumulative: int = 5,
    progress: Progress = _no_progress,
) -> SensitivityReport:
    """Each quantized layer's own error and the output error that keeping it float recovers, streamed
    over the images (memory bounded by the number of layers, not of images)."""
    started = time.perf_counter()
    _, table, prepared = _load_for_int8(model_path, table_path)
    inferred = prepared.model
    config = resolve_weight_range(config)
    probes, _ = sens.probes(inferred, table, config)
    if not probes.layers:
        raise ModelError(f"{model_path.name} has no layer that convert would quantize")
    preprocess = Preprocess.from_dict(table.meta["preprocess"])
    paths = select_images(images)
    cache: dict[str, tuple[float, float]] = {}
    memo = WeightMemo()
    advance = progress("preparing one model per layer", len(probes.layers))
    recovery_models = []
    for node, _ in probes.layers:
        recovery_models.append(sens.with_float(inferred, table, config, [node], cache, memo))
        advance(1)
    names = [node for node, _ in probes.layers]
    # dozens of sessions take turns on every batch: idle workers must not spin on the next one's cores
    fp32, int8, local = (Session.of(m, spin=False) for m in (inferred, probes.base, probes.local))
    recovery = [Session.of(m, spin=False) for m in recovery_models]
    del recovery_models
    local_errors = {node: OutputNoise() for node in names}
    int8_noise = OutputNoise()
    layer_noise = [OutputNoise() for _ in names]
    count = 0
    advance = progress("measuring", len(paths))
    for batch in ImageLoader(paths, preprocess, fp32.fixed_batch or 8):
        reference = fp32.run_batch(batch.data)
        int8_noise.update(reference, int8.run_batch(batch.data))
        for noise, session in zip(layer_noise, recovery, strict=True):
            noise.update(reference, session.run_batch(batch.data))
        probed = local.run_batch(batch.data)
        for node in names:
            ref_name, local_name = probes.local_outputs[node]
            local_errors[node].update({ref_name: probed[ref_name]}, {ref_name: probed[local_name]})
        count += batch.data.shape[0]
        advance(batch.data.shape[0])
    if count == 0:
        raise ImageError(f"none of the {len(paths)} images could be read; check the folder")
    rows = sorted(
        (
            LayerSensitivity(
                node=node,
                op_type=op,
                local_sqnr_db=local_errors[node].sqnr_db,
                output_sqnr_db=noise.sqnr_db,
                recovered=int8_noise.recovered_by(noise),
            )
            for (node, op), noise in zip(probes.layers, layer_noise, strict=True)
        ),
        key=lambda r: (-r.recovered, r.node),
    )
    steps = _cumulative(
        inferred,
        fp32,
        table,
        config,
        [r.node for r in rows[:cumulative]],
        paths,
        preprocess,
        cache,
        int8_noise,
        progress,
        memo,
    )
    return SensitivityReport(
        layers=tuple(rows),
        int8_output_sqnr_db=int8_noise.sqnr_db,
        cumulative=tuple(steps),
        num_images=count,
        seconds=time.perf_counter() - started,
        settings={
            **sens.measured_config(config).to_dict(),
            "images": str(images.folder),
            "seed": images.seed,
        },
    )


def layer_errors(
    model_path: Path, table_path: Path, config: ConvertConfig
) -> tuple[tuple[str, str, float], ...]:
    """(node, op type, SQNR in dB of its output when only it is quantized) per quantized linear layer, in
    graph order, on the table's samples: one run of the local probe (rebalancing off, as sensitivity)."""
    _, table, prepared = _load_for_int8(model_path, table_path)
    inferred = prepared.model
    probes, _ = sens.probes(inferred, table, resolve_weight_range(config))
    noise = {node: OutputNoise() for node, _ in probes.layers}
    for probed in Session.of(probes.local).run_samples(_table_samples(table)):
        for node, (ref_name, local_name) in probes.local_outputs.items():
            noise[node].update({ref_name: probed[ref_name]}, {ref_name: probed[local_name]})
    return tuple((node, op, noise[node].sqnr_db) for node, op in probes.layers)


def _cumulative(
    model: onnx.ModelProto,
    fp32: Session,
    table: CalibrationTable,
    config: ConvertConfig,
    ranked: list[str],
    paths: list[Path],
    preprocess: Preprocess,
    cache: dict[str, tuple[float, float]],
    int8_noise: OutputNoise,
    progress: Progress,
    memo: WeightMemo,
) -> list[tuple[int, float, float]]:
    """(k, output SQNR, share of the INT8 noise recovered) with the top k layers float together."""
    sessions = [
        Session.of(sens.with_float(model, table, config, ranked[:k], cache, memo), spin=False)
        for k in range(1, len(ranked) + 1)
    ]
    noises = [OutputNoise() for _ in sessions]
    advance = progress("measuring the top layers together", len(paths))
    for batch in ImageLoader(paths, preprocess, fp32.fixed_batch or 8):
        reference = fp32.run_batch(batch.data)
        for noise, session in zip(noises, sessions, strict=True):
            noise.update(reference, session.run_batch(batch.data))
        advance(batch.data.shape[0])
    return [(k + 1, n.sqnr_db, int8_noise.recovered_by(n)) for k, n in enumerate(noises)]


# ---------------------------------------------------------------- compare


def recorded_preprocess(model: onnx.ModelProto) -> Preprocess | None:
    """The preprocessing quantkit recorded in a converted model's metadata, if any."""
    for prop in model.metadata_props:
        if prop.key == META_PREFIX + "preprocess" and prop.value not in ("", "{}"):
            return Preprocess.from_dict(json.loads(prop.value))
    return None


def compare(
    reference_path: Path,
    candidate_path: Path,
    config: CompareConfig,
    explicit_preprocess: bool,
    progress: Progress = _no_progress,
) -> ComparisonResult:
    reference = model_io.load_model(reference_path)
    candidate = model_io.load_model(candidate_path)
    spec = model_io.image_input(reference)
    recorded = recorded_preprocess(candidate) or recorded_preprocess(reference)
    preprocess = (
        recorded
        if recorded is not None and not explicit_preprocess
        else resolve_preprocess(config.preprocess, spec)
    )
    classes = read_classes(config.labels) if config.labels else None
    paths = select_images(config.images)
    fixed = {d for d in (spec.shape[0], model_io.image_input(candidate).shape[0]) if d is not None}
    if len(fixed) > 1:
        raise ConfigError(f"the models fix different batch sizes ({sorted(fixed)}); export them alike")
    fixed_batch = fixed.pop() if fixed else None
    size = fixed_batch or config.batch_size
    loader = ImageLoader(paths, preprocess, size)
    ref_session, cand_session = Session(reference_path), Session(candidate_path)
    check = ReferenceCheck()
    outputs, ref_acc, cand_acc, count = compare_outputs(
        ref_session,
        cand_session,
        loader,
        config.images.folder,
        classes,
        progress("evaluating", len(paths)),
        config.detection_threshold,
        config.detector,
        (preprocess.height, preprocess.width),
        check,
    )
    if count == 0:
        raise ImageError(f"none of the {len(paths)} images could be read; check the folder")
    latency_batch = fixed_batch or 1  # batch 1 unless a model fixes another batch size
    first = next(iter(ImageLoader(paths, preprocess, 1)))  # the first readable image (count > 0)
    timing_input = np.repeat(first.data, latency_batch, axis=0)
    lat = config.latency
    timed = [Session(p, threads=lat.threads, spin=False) for p in (reference_path, candidate_path)]
    samples = interleaved_latency(timed, timing_input, lat.warmup, lat.runs, progress("timing", lat.runs))
    latency_samples = (tuple(float(v) for v in samples[0]), tuple(float(v) for v in samples[1]))
    return ComparisonResult(
        reference=str(reference_path),
        candidate=str(candidate_path),
        num_images=count,
        outputs=tuple(outputs),
        reference_accuracy=ref_acc,
        candidate_accuracy=cand_acc,
        reference_latency=latency_stats(samples[0]),
        candidate_latency=latency_stats(samples[1]),
        reference_bytes=_model_bytes(reference_path),
        candidate_bytes=_model_bytes(candidate_path),
        settings={
            "threads": lat.threads,
            "warmup": lat.warmup,
            "runs": lat.runs,
            "batch_size_latency": latency_batch,
            "images": str(config.images.folder),
            "images_requested": config.images.num_images,
            "images_skipped": len(loader.skipped),
            "labels": str(config.labels) if config.labels else None,
            "detection_score_threshold": config.detection_threshold,
            "detector": config.detector.value if config.detection_threshold is not None else None,
            "preprocess": preprocess.to_dict(),
            # where the preprocessing came from: flags, a model's quantkit metadata, or the defaults
            "preprocess_source": "flags"
            if explicit_preprocess
            else "recorded"
            if recorded is not None
            else "defaults",
            "graph_optimization": "ORT_ENABLE_ALL",
        },
        environment={**cpu_info(), "versions": versions()},
        candidate_conversion=conversion_record(candidate),
        latency_samples_ms=latency_samples,
        reference_findings=check.findings(
            ref_acc.top1 if ref_acc else None,
            len(classes) if classes else 0,
            _detections(outputs),
        ),
        warnings=tuple(
            w
            for w in (
                shortfall(config.images, paths),
                _swapped(reference, candidate, reference_path, candidate_path),
            )
            if w
        ),
    )


def _detections(outputs: Sequence[OutputMetrics]) -> int | None:
    """FP32's detections above the score over every detector output; None without --detector."""
    counts = [m.detections for m in outputs if m.detections is not None]
    return sum(counts) if counts else None


REDUCED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)


def _reduced(model: onnx.ModelProto) -> bool:
    """Whether a model is quantized or float16 (Q/DQ or integer ops, float16 weights)."""
    if any(node.op_type in REDUCED_OPS for node in model.graph.node):
        return True
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def _swapped(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, reference_path: Path, candidate_path: Path
) -> str | None:
    """The hint when the reference looks quantized and the candidate float: the arguments swapped."""
    if _reduced(reference) and not _reduced(candidate):
        return (
            f"the reference {reference_path.name} looks quantized and the candidate {candidate_path.name} "
            "float: swapped? the order is `quantkit compare FP32_MODEL QUANTIZED_MODEL`"
        )
    return None
