"""`quantkit compare`: both models over the same images, accuracy, error, latency and size."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from quantkit import runtime_openvino
from quantkit.array_files import Sample
from quantkit.config import CompareConfig, LatencyConfig, Preprocess, PreprocessOptions, ResizeMode, Runtime
from quantkit.cpu import cpu_info
from quantkit.data import ArrayStream, sample_side
from quantkit.errors import ConfigError, ImageError
from quantkit.evaluate.compare import Comparison, compare_batches
from quantkit.evaluate.figure_warnings import (
    anchors_agreement,
    broken_output,
    few_runs,
    image_hidden,
    kind_hidden,
    noise_hidden,
    same_model,
    scattered_timing,
    swapped,
    unrelated,
)
from quantkit.evaluate.labels import read_classes, require_labelled
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.evaluate.speed import latency_stats
from quantkit.file_inputs import file_state
from quantkit.graph import model_inputs, model_io
from quantkit.graph.augment import fitting_batch
from quantkit.graph.layouts import channel_axes
from quantkit.graph.output_kinds import class_counts, label_outputs, map_outputs, value_outputs
from quantkit.graph.query import SELECTING_OPS, selection_ordered
from quantkit.image_folders import select_images, shortfall
from quantkit.images import resolve_preprocess
from quantkit.ort_quirks import has_float8
from quantkit.outcomes import ComparisonResult, OutputMetrics
from quantkit.parallel import ONE_PROCESS, Parallel, threads_per_worker
from quantkit.pipeline import held_out
from quantkit.pipeline.calib_warnings import narrow_16_bit_of, presized, raw_pixels
from quantkit.pipeline.compare_chunks import (
    CompareChunk,
    CompareJob,
    copies_line,
    describe,
    identity,
    merge_chunks,
    model_hashes,
    preprocess_source,
    require_unchanged,
    run_compare_chunk,
    run_versions,
    runtime_settings,
    shown_names,
)
from quantkit.pipeline.compare_notes import (
    FLOAT8_LEVEL,
    FLOAT16_CPU,
    computes_in_float16,
    maps_unscored,
    nchwc_crash_line,
    overridable_weights,
    selected_note,
    subnormal_cost,
)
from quantkit.pipeline.loading import model_bytes, refuse_bfloat16, too_few_read
from quantkit.pipeline.progress import Progress, no_progress
from quantkit.pipeline.shards import chunks, keeping, model_key, open_session, prime, run_jobs, sendable
from quantkit.pipeline.written_records import conversion_record, placed_elsewhere, recorded_preprocess
from quantkit.reports.formats import skipped_line
from quantkit.results import Feed, InputSpec, feed_repeat, fixed_batch_of
from quantkit.runtime import interleaved_latency


def compare(
    reference_path: Path,
    candidate_path: Path,
    config: CompareConfig,
    given: frozenset[str] | bool,
    progress: Progress = no_progress,
    arrays: Iterable[Sample] | None = None,
    parallel: Parallel = ONE_PROCESS,
) -> ComparisonResult:
    """Both models over config.images (or the model-ready `arrays`, streamed), then their latency on the
    first sample, interleaved here. `parallel`: where the images' chunks run. given: the preprocessing
    options given (PREPROCESS_OPTIONS' names; True / False: all / none), over what the models record."""
    given = PREPROCESS_OPTIONS if given is True else frozenset() if given is False else given
    if config.runtime is Runtime.openvino:
        runtime_openvino.load_openvino()  # not installed: the one-line error before any work
    states = {path: file_state(path) for path in (reference_path, candidate_path)}  # checked at the end
    reference = model_io.load_model(reference_path)
    candidate = model_io.load_model(candidate_path)
    if config.runtime is Runtime.onnxruntime:  # OpenVINO runs bfloat16 (hunt51 C2)
        refuse_bfloat16((reference_path, reference), (candidate_path, candidate))
    if arrays is not None:
        config.preprocess.refuse_for_arrays()
    specs = model_inputs.float_inputs(reference)
    several = arrays is not None and len(specs) > 1  # arrays feed every input; images the one image input
    recorded = recorded_preprocess(candidate) or recorded_preprocess(reference)
    bound = _fixed_names(config.preprocess, recorded, specs) if arrays is None else ()
    spec = specs[0] if several else model_inputs.image_input(reference, bound)
    other = model_inputs.float_inputs(candidate)[0] if several else model_inputs.image_input(candidate, bound)
    model_inputs.require_same_form((reference_path.name, spec), (candidate_path.name, other))
    classes = read_classes(config.labels) if config.labels else None
    fed = (specs, model_inputs.float_inputs(candidate)) if several or bound else ((spec,), (other,))
    fixed = {d for d in (fixed_batch_of([s.batch_dim for s in one]) for one in fed) if d is not None}
    if len(fixed) > 1:
        raise ConfigError(f"the models fix different batch sizes ({sorted(fixed)}); export them alike")
    fixed_batch = fixed.pop() if fixed else None
    # the reference's own, which its outputs' steadiness is put down to (hq160 F1: not a candidate's
    # DynamicQuantizeLinear, which left FP32's input unblamed); each model read once (shape inference)
    coupled = None if fixed_batch else model_inputs.batch_coupled(reference)
    coupling = coupled or (None if fixed_batch else model_inputs.batch_coupled(candidate))
    size = fixed_batch or (1 if coupling else config.batch_size)
    preprocess: Preprocess | None = None
    paths: list[Path] = []
    side: tuple[int, int] | None
    values, maps = value_outputs(reference, config.output_kind), map_outputs(reference, config.output_kind)
    # outputs a TopK / NMS ordered: no agreement figures, a warning; inferred only where one is (seconds)
    selects = any(n.op_type in SELECTING_OPS for n in reference.graph.node)
    inferred = model_io.infer_shapes(reference) if selects else None
    ordered = frozenset(selection_ordered(inferred)) if inferred is not None else frozenset()
    labels = label_outputs(reference)
    axes = channel_axes(reference, [o.name for o in reference.graph.output])
    empty = Comparison(
        config.images.folder,
        tuple(classes) if classes else None,
        config.detection_threshold,
        config.detector,
        values=values,
        maps=maps,
        ordered=ordered,
        labels=labels,
        axes=axes,
        one_image=fixed_batch == 1,
    )
    tick = progress("evaluating", 0)
    hashes = model_hashes(reference_path, candidate_path)  # the files measured, not those there at the end
    if arrays is None:
        preprocess = over_recorded(config.preprocess, given, recorded, spec, specs)
        if fixed_batch is None:
            size = fitting_batch(reference, {spec.name: preprocess.sample_shape}, size)
        paths, source = select_images(config.images), None
        if config.labels is not None:  # hq68 5: found after running both models
            require_labelled(config.labels, class_counts(reference), paths, config.images.folder, "image")
        side = (preprocess.height, preprocess.width)
        tick = progress("evaluating", len(paths))
        jobs = [
            CompareJob(
                k,
                part,
                preprocess,
                size,
                config.images.folder,
                empty.classes,
                config.detection_threshold,
                config.detector,
                side,
                ("", ""),
                threads_per_worker(parallel.threads, parallel.workers),
                config.runtime,
                values,
                maps,
                ordered,
                labels,
                tuple(sorted(axes.items())),
                fixed_batch == 1,
            )
            for k, part in enumerate(chunks(paths, size))
        ]
        ran = _run_chunks(reference_path, candidate_path, jobs, parallel, tick, config.runtime)
        done = merge_chunks(ran, empty)
    else:
        if classes is not None:
            raise ConfigError("--labels reads each image's class from its folder or name: compare images")
        if not parallel.in_process:
            raise ConfigError(
                "--workers and --ray read images from a folder; model-ready arrays (--inputs, or arrays "
                "in memory) are compared in this process: leave --workers and --ray out"
            )
        source = ArrayStream(arrays, specs if several else spec, size)
        tick = progress("evaluating", len(arrays) if isinstance(arrays, Sized) else 0)
        known = None not in spec.shape[1:] and not several
        side = sample_side(tuple(d or 0 for d in spec.shape[1:])) if known else None
        done = _compare_arrays(
            reference_path,
            candidate_path,
            source,
            Comparison(
                config.images.folder,
                None,
                config.detection_threshold,
                config.detector,
                side,
                values,
                maps,
                ordered,
                labels,
                axes,
                fixed_batch == 1,
            ),
            tick,
            config.runtime,
        )
    outputs, ref_acc, cand_acc, count = done.comparison.result()
    unordered = [m for m in outputs if m.name not in ordered]  # no TopK / NMS chose their rows
    check, first = done.check, done.first
    if count == 0 or first is None:
        what = too_few_read(0, len(paths), done.skipped, config.images) if arrays is None else ""
        raise ImageError(what or "the data holds no sample; give at least one array")
    latency_batch = fixed_batch or 1  # batch 1 unless a model fixes another batch size
    timing_input = feed_repeat(first, latency_batch)
    lat = config.latency
    # a reference slowed by weights it lists as graph inputs is timed as its network (_overridable_weights)
    plain = overridable_weights(reference, candidate) is not None and config.runtime is Runtime.onnxruntime
    timed_model = model_io.weights_fixed(reference)[0] if plain else reference
    timed_reference = timed_model.SerializeToString() if plain else reference_path
    samples = (
        _timed(timed_reference, candidate_path, timing_input, lat, progress, config.runtime)
        if lat.runs
        else None
    )
    latency_samples = (tuple(map(float, samples[0])), tuple(map(float, samples[1]))) if samples else ()
    timed_here = bool(lat.runs) and config.runtime is Runtime.onnxruntime  # what onnxruntime's kernels cost
    result = ComparisonResult(
        reference=str(reference_path),
        candidate=str(candidate_path),
        num_images=count,
        outputs=tuple(outputs),
        reference_accuracy=ref_acc,
        candidate_accuracy=cand_acc,
        reference_latency=latency_stats(samples[0]) if samples else None,
        candidate_latency=latency_stats(samples[1]) if samples else None,
        reference_bytes=model_bytes(reference_path),
        candidate_bytes=model_bytes(candidate_path),
        settings={
            "threads": lat.threads,
            "warmup": lat.warmup,
            "runs": lat.runs,
            "batch_size_latency": latency_batch,
            "images": str(config.images.folder) if arrays is None else "arrays",
            "images_requested": config.images.num_images,
            "images_skipped": len(done.skipped),
            "labels": str(config.labels) if config.labels else None,
            "detection_score_threshold": config.detection_threshold,
            "detector": config.detector.value if config.detection_threshold is not None else None,
            "preprocess": preprocess.to_dict() if preprocess else None,
            "preprocess_source": preprocess_source(
                preprocess is None, recorded is not None, given, PREPROCESS_OPTIONS
            ),
            **runtime_settings(config.runtime, candidate, candidate_path),
            **identity(hashes, config.images, paths),
        },
        environment={**cpu_info(), "versions": run_versions(config.runtime)},
        candidate_conversion=conversion_record(candidate),
        latency_samples_ms=latency_samples,
        reference_findings=check.findings(
            ref_acc.top1 if ref_acc else None,
            len(classes) if classes else 0,
            _detections(outputs),
            config.detection_threshold,
            coupled,
        ),
        warnings=tuple(
            w
            for w in (
                shortfall(config.images, paths) if arrays is None else None,
                narrow_16_bit_of(paths) if arrays is None else raw_pixels(source),
                presized(paths, preprocess) if arrays is None and preprocess is not None else None,
                skipped_line(done.skipped) if done.skipped else None,
                copies_line(done.digests),
                held_out.in_sample_line(candidate, done.digests),
                swapped(reference, candidate, reference_path, candidate_path),
                same_model(reference, candidate, reference_path, candidate_path),
                selected_note(  # a split head's scores and labels were matched with its boxes
                    inferred,
                    ordered,
                    {m.name for m in outputs if m.boxes is not None} | set(done.comparison.split or ()),
                ),
                maps_unscored(reference, config.output_kind, done.comparison.seen_shapes, side),
                # onnxruntime's alone: OpenVINO reads such inputs as constants (hunt52 C7)
                overridable_weights(reference, candidate)
                if config.latency.runs and config.runtime is Runtime.onnxruntime
                else None,
                FLOAT8_LEVEL if has_float8(candidate) and config.runtime is Runtime.onnxruntime else None,
                FLOAT16_CPU
                if computes_in_float16(candidate) and config.runtime is Runtime.onnxruntime
                else None,
                nchwc_crash_line(((reference_path.name, reference), (candidate_path.name, candidate)))
                if config.runtime is Runtime.onnxruntime
                else None,
                subnormal_cost(timed_model, timing_input) if timed_here else None,  # hq96 F2: timed
                few_runs(config.latency.runs),
                scattered_timing(latency_samples),
                placed_elsewhere(candidate, config.runtime.value, config.latency.runs),
                unrelated(outputs),
                anchors_agreement(outputs, done.comparison.anchors, done.comparison.seen_shapes),
                *done.comparison.unequal_rows(),
                *done.comparison.steady(),
                *done.comparison.signs_moved(),
                done.comparison.unmatched(),
                *(noise_hidden(m) for m in outputs),
                *(image_hidden(m, shown_names(paths, done.skipped, config.images.folder)) for m in unordered),
                *(broken_output(m, config.detection_threshold is not None) for m in unordered),  # hq81 H2
                *(kind_hidden(m) for m in outputs),
            )
            if w
        ),
    )
    require_unchanged(states)
    return result


def _timed(
    reference_path: Path | bytes,
    candidate_path: Path,
    feed: Feed,
    lat: LatencyConfig,
    progress: Progress,
    runtime: Runtime,
) -> list[np.ndarray]:
    """Both models' latency samples (ms), interleaved on one feed."""
    timed = [open_session(runtime, p, lat.threads, spin=False) for p in (reference_path, candidate_path)]
    return interleaved_latency(timed, feed, lat.warmup, lat.runs, progress("timing", lat.runs))


def _run_chunks(
    reference_path: Path,
    candidate_path: Path,
    jobs: list[CompareJob],
    parallel: Parallel,
    tick: Callable[[int], None],
    runtime: Runtime,
) -> Iterator[CompareChunk]:
    """The chunks' figures in list order: in this process on sessions opened from the files (external
    weights included), or on workers sent both models' bytes."""
    if parallel.in_process:
        keys = (str(reference_path), str(candidate_path))
        threads = jobs[0].threads if jobs else 0
        for key, path in zip(keys, (reference_path, candidate_path), strict=True):
            prime(key, threads, open_session(runtime, path, threads), runtime)
        blobs = [b"", b""]
    else:  # a model with its weights in external files travels with them inside (hq128 F1: refused)
        blobs = [
            path.read_bytes()
            if model_bytes(path) == path.stat().st_size
            else sendable(model_io.load_model(path), f"{path.name} (its external weights inside)", "compared")
            for path in (reference_path, candidate_path)
        ]
        keys = (model_key(blobs[0]), model_key(blobs[1]))
    jobs = [replace(job, keys=keys) for job in jobs]
    yield from run_jobs(parallel, blobs, run_compare_chunk, jobs, describe, tick)


def _compare_arrays(
    reference_path: Path,
    candidate_path: Path,
    source: ArrayStream,
    empty: Comparison,
    tick: Callable[[int], None],
    runtime: Runtime,
) -> CompareChunk:
    """Model-ready samples (an iterable the caller owns): one pass in this process."""
    reference, candidate = open_session(runtime, reference_path), open_session(runtime, candidate_path)
    check = ReferenceCheck(inputs_from_images=False, values=empty.values | empty.ordered)
    first: list[Feed] = []

    comparison = compare_batches(reference, candidate, keeping(source, 1, first), empty, tick, check)
    return CompareChunk(comparison, check, source.skipped, first[0] if first else None)


def _detections(outputs: Sequence[OutputMetrics]) -> int | None:
    """FP32's detections above the score over every detector output; None without --detector."""
    counts = [m.detections for m in outputs if m.detections is not None]
    return sum(counts) if counts else None


PREPROCESS_OPTIONS = frozenset(
    {"preset", "mean", "std", "bgr", "resize", "input_size", "pad", "input_values"}
)


def _fixed_names(
    options: PreprocessOptions, recorded: Preprocess | None, inputs: Sequence[InputSpec]
) -> tuple[str, ...]:
    """The inputs given a value for every image: as the models record, each overridden by --input-value;
    a recorded one the reference does not have is refused in words that say where it comes from (hq67
    F8: 'names s' of a flag never given)."""
    names = [i.name for i in inputs]
    given = set(options.fixed_names)
    for fixed in recorded.fixed if recorded is not None else ():
        if fixed.name not in names and fixed.name not in given:
            known = ", ".join(repr(n) for n in names)
            raise ConfigError(
                f"the candidate records a value for input {fixed.name!r} (calibrated with --input-value), "
                f"which the reference has not (inputs: {known}); compare a model with its own converted one"
            )
    return tuple(name for name, _ in _fixed_values(options, recorded))


def _fixed_values(
    options: PreprocessOptions, recorded: Preprocess | None
) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The values the models record, each --input-value given in their place (hq67 F6: one given threw
    the other recorded ones away)."""
    values = {f.name: f.values for f in recorded.fixed} if recorded is not None else {}
    return tuple((values | dict(options.input_values)).items())


def over_recorded(
    options: PreprocessOptions,
    given: frozenset[str],
    recorded: Preprocess | None,
    spec: InputSpec,
    inputs: Sequence[InputSpec] = (),
) -> Preprocess:
    """The options given over the preprocessing a model records: `compare --input-size 640x640` on a
    model recorded at 320x320 with a letterbox and 0-1 scaling kept the letterbox and the scaling (one
    flag threw all of it away for the ImageNet defaults). A preset replaces the recorded mean and std."""
    if recorded is None or not given:
        return recorded if recorded is not None else resolve_preprocess(options, spec, inputs)
    scale = "preset" in given

    def kept(name: str, value: Any) -> Any:
        return getattr(options, name) if name in given else value

    # the recorded pad only under a letterbox (zoo, session 40: refused as "--pad with --resize squash")
    boxed = kept("resize", recorded.resize) in (ResizeMode.letterbox, ResizeMode.letterbox_center)
    return resolve_preprocess(
        PreprocessOptions(
            preset=options.preset,
            mean=kept("mean", None if scale else recorded.mean),
            std=kept("std", None if scale else recorded.std),
            bgr=kept("bgr", recorded.bgr),
            resize=kept("resize", recorded.resize),
            input_size=kept("input_size", (recorded.height, recorded.width)),
            pad=kept("pad", recorded.pad if boxed else None),
            input_values=_fixed_values(options, recorded),
        ),
        spec,
        inputs,
    )
