"""`quantkit calibrate`: the FP32 model over the images, each observed tensor into a calibration table."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from quantkit.array_files import ArrayFiles, Sample
from quantkit.calib import table as table_io
from quantkit.calib.collect import GROUP_BYTES, check_finite, fetch_groups, rows_per_run
from quantkit.calib.table import SMOKE_SAMPLES
from quantkit.config import CalibrateConfig, ImageSelection, Preprocess
from quantkit.config.fixed_inputs import OPTION
from quantkit.data import ArrayStream, feed_side
from quantkit.errors import CalibrationError, ConfigError, ImageError, ModelError
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.files import check_output, refuse_foreign_arrays, write_set
from quantkit.graph import model_inputs, model_io
from quantkit.graph.augment import (
    observed_tensors,
    sample_bytes,
    seen_through_clips,
    tensor_bytes,
    with_sample_shapes,
)
from quantkit.graph.observe_parts import group_model, in_graph_order, last_first
from quantkit.graph.output_kinds import value_outputs
from quantkit.graph.prepare import prepare
from quantkit.graph.query import measured_in_place, selection_ordered
from quantkit.image_folders import select_images, shortfall
from quantkit.images import entries_hash, resolve_preprocess
from quantkit.parallel import ONE_PROCESS, Parallel, threads_per_worker
from quantkit.pipeline import held_out
from quantkit.pipeline.calib_chunks import (
    ChunkJob,
    Merged,
    describe,
    observe_chunk,
    run_chunk,
    spread,
)
from quantkit.pipeline.calib_warnings import (
    copies,
    few,
    kept_few,
    lone_extreme,
    narrow_16_bit_of,
    noise_like,
    placeholder_size,
    presized,
    raw_pixels,
)
from quantkit.pipeline.loading import require_half_fits, require_quantizable, table_paths, too_few_read
from quantkit.pipeline.progress import Progress, no_progress
from quantkit.pipeline.shards import blobs_key, chunk_size, chunks, model_key, prime, run_jobs
from quantkit.pipeline.table_samples import read_again, refilled, sample_shapes, stress_samples
from quantkit.results import Batch, CalibrationTable, Feed, feed_shapes, fixed_batch_of
from quantkit.runtime import Session, fits_one_message, versions
from quantkit.version import __version__


@dataclass(frozen=True)
class CalibrateSummary:
    """What calibrate wrote and saw. `images_used` counts the samples of array data too; `preprocess`
    is None for arrays (they are model-ready). `table` and `arrays` are absolute, and `table_sha256` is
    what the table held when written: given as a calibration=, the summary stands for that table wherever
    the process has moved since, and one replaced since (another calibrate to that path) is refused
    (hq103 F1: a relative path read another folder's table of that name after os.chdir, silently)."""

    table: Path
    arrays: Path
    images_used: int
    images_skipped: tuple[tuple[str, str], ...]
    tensors: int
    seconds: float
    preprocess: Preprocess | None
    notes: tuple[str, ...] = ()  # what was changed on the way in (opset upgrade, Constant weights)
    reference_findings: tuple[str, ...] = ()  # signs that FP32 itself is fed wrongly (evaluate.sanity)
    warnings: tuple[str, ...] = ()  # e.g. --num-images beyond the folder
    table_sha256: str = ""  # of the table's JSON as written ("": not checked)

    def __fspath__(self) -> str:
        """The table's path: the summary stands for the table wherever a calibration= path is taken
        (hq72 15: convert took it, sensitivity and shrink's table refused it)."""
        return str(self.table)

    def current_table(self) -> Path:
        """The table's path, where it still holds what this run wrote (config.base.as_path asks)."""
        if self.table_sha256:
            try:
                held = hashlib.sha256(self.table.read_bytes()).hexdigest()
            except OSError as exc:
                raise CalibrationError(
                    f"the calibration table {self.table} this summary stands for cannot be read "
                    f"({exc.strerror}); calibrate again"
                ) from exc
            if held != self.table_sha256:
                raise CalibrationError(
                    f"the calibration table {self.table} was replaced after this summary was made (another "
                    "calibrate to that path?); pass the table's path, or calibrate again"
                )
        return self.table

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, the preprocessing as the table records it."""
        return {
            "table": str(self.table),
            "arrays": str(self.arrays),
            "samples": self.images_used,
            "skipped": [{"file": f, "why": why} for f, why in self.images_skipped],
            "tensors": self.tensors,
            "seconds": self.seconds,
            "preprocess": self.preprocess.to_dict() if self.preprocess else None,
            "notes": list(self.notes),
            "reference_findings": list(self.reference_findings),
            "warnings": list(self.warnings),
        }


def size_hint(error: ModelError, size: tuple[int, int] | None) -> ModelError:
    """A run that failed at an --input-size the user chose: say that the model may not take that size (a
    text detector whose strides need a multiple of 32 failed at 650x650 in a broadcast of 41 by 40)."""
    if size is None or "failed to run" not in str(error):
        return error
    return ModelError(
        f"{error}; the model may not take {size[0]}x{size[1]} inputs: pass the --input-size it was exported "
        "for, or one its strides divide (often a multiple of 32)"
    )


def calibrate(
    model_path: Path,
    table_path: Path,
    config: CalibrateConfig,
    progress: Progress = no_progress,
    arrays: Iterable[Sample] | None = None,
    parallel: Parallel = ONE_PROCESS,
) -> CalibrateSummary:
    """Calibrate on config.images, or, when `arrays` is given, on those model-ready samples (streamed:
    see quantkit.data; config.images and config.preprocess are then not used). `parallel` says where
    the images' chunks run; the table does not depend on it."""
    json_path, npz_path = table_paths(table_path)
    for out in (json_path, npz_path):
        check_output(out, model_path)
    refuse_foreign_arrays(json_path, npz_path)
    started = time.perf_counter()
    model = model_io.load_model(model_path)
    require_quantizable(model, model_path)
    specs = model_inputs.float_inputs(model)
    given = config.preprocess.fixed_names
    if given and arrays is not None:
        raise ConfigError(f"{OPTION} gives inputs' values beside images; model-ready arrays name every input")
    if arrays is not None:
        config.preprocess.refuse_for_arrays()
    # images need the one image input (the others given values); arrays feed every input (dicts for several)
    spec = model_inputs.image_input(model, given) if arrays is None or len(specs) <= 1 else specs[0]
    fed = specs if (arrays is not None and len(specs) > 1) or given else (spec,)
    # the model's batch, else the requested; one sample a run where the model computes across the batch
    # (a reduction over axis 0 saw 8 images' sum as one value, the range 8x what one image gives)
    fixed = fixed_batch_of([s.batch_dim for s in fed])
    coupling = None if fixed else model_inputs.batch_coupled(model)
    size = fixed or (1 if coupling else config.batch_size)
    preprocess: Preprocess | None = None
    paths: list[Path] = []
    source: ArrayStream | None = None
    side: tuple[int, int] | None
    stream: Iterator[Batch] = iter(())
    first_data: Feed | None = None  # the first arrays' (their shapes size the observed tensors)
    placeholder = None
    if arrays is None:
        preprocess = resolve_preprocess(config.preprocess, spec, specs)
        placeholder = placeholder_size(model, preprocess, spec)  # hq88 F1
        paths = select_images(config.images)
        total, side = len(paths), (preprocess.height, preprocess.width)
    else:
        if not parallel.in_process:
            raise ConfigError(
                "--workers and --ray read images from a folder; model-ready arrays (--inputs, or arrays "
                "in memory) are observed in this process: leave --workers and --ray out"
            )
        source = ArrayStream(arrays, spec if len(specs) <= 1 else specs, size)
        total = len(arrays) if isinstance(arrays, Sized) else 0
        stream = iter(source)
        first = next(stream, None)
        if first is None:
            raise ConfigError("the data holds no sample; give at least one array")
        side = feed_side(first.data)
        first_data = first.data
        stream = itertools.chain([first], stream)
    try:
        prepared = prepare(model, size=side)
    except ModelError as exc:  # the opset upgrade's check runs the model at that size first
        raise size_hint(exc, config.preprocess.input_size) from exc
    wanted = observed_tensors(prepared.model)
    through = seen_through_clips(prepared.model, wanted)
    observed = {name: axis for name, axis in wanted.items() if name not in through}
    shapes = _sample_shapes_of(preprocess, spec.name, first_data)
    ordered = in_graph_order(prepared.model, list(observed))
    sizes = tensor_bytes(with_sample_shapes(prepared.model, shapes), ordered)
    found = fetch_groups(sizes, GROUP_BYTES) if fits_one_message(prepared.model) else None
    groups = last_first(found) if found else None  # graph.observe_parts: each part computes its own
    per_run = max(sum(sizes[n] or 0 for n in group) for group in groups) if groups else None
    parts = groups or (tuple(observed),)
    augmented = [group_model(prepared.model, group, carries_outputs=k == 0) for k, group in enumerate(parts)]
    job = ChunkJob(
        index=0,
        paths=(),
        preprocess=preprocess,
        batch_size=size,
        observed=tuple(observed.items()),
        outputs=tuple(o.name for o in prepared.model.graph.output),
        bins=config.bins,
        threads=threads_per_worker(parallel.threads, parallel.workers),
        keep=SMOKE_SAMPLES,
        run_rows=rows_per_run(per_run or sample_bytes(prepared.model, list(observed)), size),
        model_sha256="",
        groups=groups,
        # an output a TopK / NonMaxSuppression chose holds no image's class scores (hunt53 C1: a one-class
        # detector's class ids, all 0, read as 'FP32 gives class 0 ... its input is likely wrong')
        values=value_outputs(prepared.model, config.output_kind)
        | frozenset(selection_ordered(prepared.model)),
        logits=measured_in_place(prepared.model),
    )
    tick = progress("calibrating", total)
    notes = prepared.notes()
    if coupling and config.batch_size > 1:  # hq148 F5: --batch-size 8 was recorded as 1 without a word
        notes += (
            f"run one sample at a time: {coupling} computes across the batch axis, which a batch of several "
            "would change (--batch-size does not apply)",
        )
    halves = [name for name, kind in prepared.interface if kind == onnx.TensorProto.FLOAT16]
    # Only the augmented model runs: the loaded and prepared protos go before onnxruntime makes its own
    # copy of the weights, and the augmented one once serialised (ResNet-50, 100 MB: 727 -> 436 MB peak).
    del model, prepared
    if arrays is None:
        blobs, job = _serialised(augmented, job, parallel)
        del augmented
        try:
            merged = _observe_images(blobs, paths, job, parallel, tick)
        except ModelError as exc:
            raise size_hint(exc, config.preprocess.input_size) from exc
    else:
        sessions = [Session.of(one, job.threads, observing=True, arena=not groups) for one in augmented]
        del augmented
        merged = _observe_arrays(sessions[0] if len(sessions) == 1 else sessions, stream, job, tick)
    masked = merged.check.fixed_infinities() if merged.check else frozenset()
    unobserved = merged.check.nonfinite_outputs() if merged.check else frozenset()
    notes += check_finite(merged.partials, job.outputs, masked, unobserved, [s.name for s in fed])
    stats = {name: part.stats() for name, part in merged.partials.items()}
    stats.update({name: stats[view] for name, view in through.items()})  # the table sorts them
    seen, check, kept = merged.seen, merged.check or ReferenceCheck(), merged.samples
    meta: dict[str, Any] = {
        "producer": "quantkit",
        "quantkit_version": __version__,
        "model_file": model_path.name,
        "model_sha256": model_io.file_sha256(model_path),
        "input": spec.name if len(specs) <= 1 or arrays is None else [s.name for s in specs],
        "preprocess": preprocess.to_dict() if preprocess else None,
    }
    if arrays is None:
        used = len(paths) - len(merged.skipped)
        _check_enough_images(used, len(paths), merged.skipped, config.images)
        meta["images"] = {
            "count": used,
            "unique": len({entry[-32:] for entry in merged.entries}),  # distinct contents among those used
            "skipped": len(merged.skipped),
            "seed": config.images.seed,
            "requested": config.images.num_images,
            "list_sha256": entries_hash(merged.entries),
            "contents": held_out.contents([entry[-32:] for entry in merged.entries]),
        }
    else:
        used = seen
        assert isinstance(source, ArrayStream)
        meta["inputs"] = {
            "count": seen,
            "sha256": source.content_hash,
            **(sample_shapes(kept) if kept is not None else {}),
        }
    meta.update(
        {
            "bins": config.bins,
            "batch_size": size,
            "chunk_size": chunk_size(size),
            "versions": versions(),
        }
    )
    if arrays is None:
        stress = stress_samples(merged, preprocess) if preprocess is not None else None
        kept = refilled(merged, preprocess) if preprocess is not None else kept
    else:
        kept, stress = read_again(merged, arrays, spec) if len(specs) <= 1 else (kept, None)
        meta["inputs"].update(sample_shapes(kept) if kept is not None else {})  # the most common shape's
    for name in (h for h in halves if h in stats):  # data a float16 input cannot hold, refused here
        require_half_fits(name, max(abs(stats[name].minimum), abs(stats[name].maximum)))
    findings = check.findings(coupling=coupling)  # before the write: nothing is written where a step fails
    if placeholder:  # shrink's reports say it too (hq92 F8: not among the findings compare says itself)
        meta["placeholder"] = placeholder
    if findings:  # shrink's reports say them too, from a cached table as from a fresh one (hq82 3)
        meta["reference_findings"] = list(findings)
    table = CalibrationTable(meta=meta, stats=stats, samples=kept, stress=stress)
    json_bytes, npz_bytes = table_io.serialize(table)
    write_set([(npz_path, npz_bytes), (json_path, json_bytes)])
    return CalibrateSummary(
        table=json_path.absolute(),
        arrays=npz_path.absolute(),
        table_sha256=hashlib.sha256(json_bytes).hexdigest(),
        images_used=used,
        images_skipped=tuple((str(p), why) for p, why in merged.skipped),
        tensors=len(stats),
        seconds=time.perf_counter() - started,
        preprocess=preprocess,
        notes=notes,
        reference_findings=findings,
        warnings=tuple(
            w
            for w in (
                few(used, "image" if arrays is None else "sample"),
                None if arrays is None else kept_few(kept, seen),
                *(() if arrays is not None else (shortfall(config.images, paths), copies(meta))),
                None if arrays is not None else narrow_16_bit_of(merged.observed),
                None if preprocess is None else presized(merged.observed, preprocess),
                raw_pixels(source),
                noise_like(kept),
                lone_extreme(
                    merged.partials,
                    [s.name for s in fed],
                    _namer(merged, arrays),
                    "image" if arrays is None else "sample",
                ),
                placeholder,
            )
            if w
        ),
    )


def _namer(merged: Merged, arrays: Iterable[Sample] | None) -> Callable[[int], str]:
    """An image's (or sample's) name by its index among those read: its path, or a file's where each file
    holds one sample, else 'sample K'."""
    if arrays is None:
        return lambda k: str(merged.observed[k]) if k < len(merged.observed) else f"image {k}"
    if isinstance(arrays, ArrayFiles) and len(arrays.paths) == merged.seen:
        return arrays.label
    return lambda k: f"sample {k}"


def _serialised(
    augmented: list[onnx.ModelProto], job: ChunkJob, parallel: Parallel
) -> tuple[list[bytes], ChunkJob]:
    """The augmented models' bytes (one a group of job.groups) and the job keyed by them; a model over
    protobuf's 2 GB (never grouped) has none: its session is made here, for this process (the only pool
    it can run on)."""
    if all(fits_one_message(one) for one in augmented):
        blobs = [one.SerializeToString(deterministic=True) for one in augmented]
        return blobs, replace(job, model_sha256=blobs_key(blobs) if job.groups else model_key(blobs[0]))
    if not parallel.in_process:
        raise ConfigError("--workers and --ray take models under 2 GB; calibrate this one in one process")
    job = replace(job, model_sha256="large")
    prime(job.model_sha256, job.threads, Session.of(augmented[0], job.threads, observing=True))
    return [b""], job


def _sample_shapes_of(
    preprocess: Preprocess | None, name: str, first: Feed | None
) -> dict[str, tuple[int, ...]]:
    """Input name -> one sample's shape: the preprocessed image's (and its fixed inputs'), or the first
    arrays'."""
    if first is None:
        assert preprocess is not None
        return {name: preprocess.sample_shape} | {f.name: f.shape for f in preprocess.fixed}
    return feed_shapes(first, name)


def _observe_images(
    blobs: list[bytes],
    paths: list[Path],
    job: ChunkJob,
    parallel: Parallel,
    tick: Callable[[int], None],
) -> Merged:
    """The images in chunks, on the pool `parallel` names, merged in list order (blob: _serialised)."""
    picks = spread(paths, job.keep)
    jobs = [
        replace(job, index=k, paths=part, keep=job.keep if mine else 0, picks=mine)
        for k, part in enumerate(chunks(paths, job.batch_size))
        for mine in [picks.intersection(part)]
    ]
    merged = Merged()
    for result in run_jobs(parallel, blobs, run_chunk, jobs, describe, tick):
        merged.add(result)
    return merged


def _observe_arrays(
    session: Session | list[Session], stream: Iterator[Batch], job: ChunkJob, tick: Callable[[int], None]
) -> Merged:
    """Model-ready samples (an iterable the caller owns: one process), in the same chunks as images."""
    per_chunk = chunk_size(job.batch_size) // job.batch_size
    merged = Merged()
    while True:
        batches = list(itertools.islice(stream, per_chunk))
        if not batches:
            return merged
        keep = job.keep if merged.seen < job.keep else 0
        merged.add(observe_chunk(session, batches, replace(job, keep=keep), tick))


def _check_enough_images(
    used: int, total: int, skipped: list[tuple[Path, str]], selection: ImageSelection
) -> None:
    """Calibration fails only when fewer than half of the selected images could be read."""
    if used == 0 or used * 2 < total:
        raise ImageError(too_few_read(used, total, skipped, selection))
