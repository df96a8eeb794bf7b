"""What every converting command does last: stamp provenance, smoke-test against the floors, write."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit.cpu import cpu_info
from quantkit.errors import ConversionError
from quantkit.evaluate.figure_warnings import BROKEN_BELOW_DB
from quantkit.evaluate.output_errors import OutputErrors
from quantkit.evaluate.output_noise import OutputNoise
from quantkit.files import check_output, write_set
from quantkit.graph import model_io
from quantkit.graph.augment import with_outputs
from quantkit.graph.model_inputs import shaped_by_data
from quantkit.graph.query import (
    SQUASHING_OPS,
    GraphIndex,
    measured_outputs,
    selection_ordered,
)
from quantkit.graph.subnormal import subnormal_warning
from quantkit.ort_quirks import has_float8
from quantkit.outcomes import SpeedPlan
from quantkit.pipeline import held_out
from quantkit.pipeline.sample_figures import (
    saturated_note,
    selection_lines,
    sparse_foreground,
    steady_outputs,
)
from quantkit.planner import fallback
from quantkit.planner.at_output import output_noise
from quantkit.planner.foreground import has_foreground
from quantkit.results import CalibrationTable, Corrections, Feed, QuantPlan, Runs, feed_rows, feed_take
from quantkit.runtime import Session, versions
from quantkit.strict_json import json_safe
from quantkit.version import __version__

# Below these output SQNRs (all outputs, smoke-test samples) a conversion is broken, not coarse: healthy INT8
# models measure 14-34 dB, float16 ones 38-70 dB. Such a model is never written.
INT8_FLOOR_DB = BROKEN_BELOW_DB  # compare's warning on other images reads the same floor
FP16_FLOOR_DB = 30.0
# Synthetic inputs are not the user's images (YOLOX's float16 model: 38 dB on photos, 42 dB on the
# synthetic patches, 21 dB on white noise). Without a table, only a conversion below this is broken.
FP16_SYNTHETIC_FLOOR_DB = 20.0
# bfloat16 keeps 8 significant bits to float16's 11: 3 bits, 18 dB less rounding SNR, and the floor with a
# table lowered by as much (emulated, on their calibration samples: SqueezeNet 46.8 dB, MobileNetV2 31.0,
# ViT 45.9, YOLOX-Nano 20.6 and 21.8 with 8 layers float32); on synthetic inputs INT8's 10 dB
BF16_FLOOR_DB = FP16_FLOOR_DB - 18.0
BF16_SYNTHETIC_FLOOR_DB = 10.0
META_PREFIX = "quantkit."


@dataclass(frozen=True)
class Floor:
    """The output SQNR below which a conversion is broken, and what to say if it is."""

    db: float
    what: str  # "the INT8 model, with 3 layer(s) kept float by the fallback,"
    fix: str
    each_output: bool = False  # every output at db, not only their mean (INT8's)


def write_checked(
    converted: onnx.ModelProto,
    original: onnx.ModelProto,
    samples: Feed,
    reference: Runs,
    floor: Floor,
    output: Path,
    inputs: tuple[Path, ...],
    advance: Callable[[int], None],
    memo: fallback.SqnrMemo | None = None,
    runnable: onnx.ModelProto | None = None,
    write: bool = True,
) -> tuple[list[tuple[Path, bytes]], dict[str, float]]:
    """Write `converted` to `output` (and its external data beside it) only if it passes onnx.checker,
    loads and runs finite in onnxruntime, and measures at least floor.db against `reference` (FP32's
    measured outputs on samples; memo: what the search measured on them). runnable: what onnxruntime
    runs in its place when it has no kernels for it (a bfloat16 model's float32 emulation): the smoke
    test and the floor measure that. write=False: checked, not written (the caller writes what it
    returns with write_set once nothing is left to decide). Returns (the files, each as (path, bytes),
    that are or are to be written; SQNR per output against `original`)."""
    try:
        model_io.check_like(converted, original)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(f"the converted model fails onnx.checker ({exc}); nothing was written") from exc
    stored = [(output.parent / name, data) for name, data in model_io.serialize_files(converted, output.name)]
    for path, _ in stored[1:]:  # an external-data file beside the output: never over an input either
        check_output(path, *inputs)
    advance(1)
    run = converted if runnable is None else runnable
    smoke = _smoke_test(original, run, samples)
    measured = fallback.output_sqnr(run, reference, samples, memo, worst=floor.each_output)
    if not measured >= floor.db:
        raise ConversionError(
            f"{floor.what} measures {measured:.1f} dB output SQNR on the smoke-test samples"
            f"{_worst(run, reference, samples)}, below the {floor.db:g} dB that a working conversion "
            f"reaches; nothing was written. To fix: {floor.fix}"
        )
    advance(1)
    if write:
        advance(1)  # before: a cancel raised by the bar leaves no file (hq72 11: it came after the write)
        write_set(stored)
    return stored, smoke


def measurement_notes(
    model: onnx.ModelProto,
    converted: onnx.ModelProto,
    reference: Runs,
    samples: Feed,
    smoke: dict[str, float],
    itself: tuple[str, ...],
    loaded: onnx.ModelProto,
    synthetic: bool = False,
    flushed: bool = False,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(notes, warnings). Where the floors and the fallback measure other tensors than the outputs
    (query.measured_outputs of the shape-inferred `model`), so that no figure reads as the outputs' own: a
    line for each output that a TopK / NonMaxSuppression chose and ordered (its smoke-test figure compares
    rows that noise reorders; both figures), and one naming the outputs judged by their logits (and those in
    `itself` by their own values too: float16's). The warnings: squashed outputs far below their logits
    (_squashed_warnings), FP32 weights that are subnormal (graph.subnormal), counted in the model as
    `loaded` (the file's own, as compare counts, not the BatchNormalization-folded one's: hunt33), and
    outputs whose figure hides what changes between the samples (steady_outputs; not on `synthetic` ones,
    nor the note of a squashed figure far above its logits', sample_figures.saturated_note).
    reference: FP32's measured tensors on samples (fallback.measured_reference); flushed: the subnormal
    weights were flushed in what was converted and timed (graph.subnormal.flushed): no warning."""
    subnormal = None if flushed else subnormal_warning(loaded)
    slow: tuple[str, ...] = (subnormal,) if subnormal else ()
    measured = OutputNoise()  # each measured tensor's noise on the samples, from steady_outputs' run
    # synthetic inputs vary too little to judge:
    slow += () if synthetic else steady_outputs(converted, reference, samples, measured)
    ordered = selection_ordered(model)
    scored = sorted(
        (output, tensors[0])
        for output, tensors in measured_outputs(model).items()
        if output not in ordered and tensors != (output,)
    )
    writers = {out: node.op_type for node in model.graph.node for out in node.output}
    squashed = [(output, logits) for output, logits in scored if writers.get(output) in SQUASHING_OPS]
    picked = [(output, scores) for output, scores in scored if writers.get(output) not in SQUASHING_OPS]
    sigmoids = {output for output, _ in squashed if writers[output] == "Sigmoid"}
    notes = selection_lines(converted, ordered, reference, samples, smoke)
    if picked:
        named = ", ".join(f"{output!r} by {scores!r}" for output, scores in picked[:3])
        notes += (
            f"labels an ArgMax / ArgMin picks are judged by the scores it picks from ({named}): every SQNR "
            "figure on calibration samples is the scores'; compare gives the labels' agreement",
        )
    if squashed:
        named = ", ".join(f"{output!r} by {logits!r}" for output, logits in squashed[:3])
        more = f" and {len(squashed) - 3} more" if len(squashed) > 3 else ""
        also = [output for output, _ in squashed if output in itself]
        notes += (
            (
                f"outputs made by a Softmax or Sigmoid are judged by their logits ({named}{more}), and "
                f"{', '.join(repr(o) for o in also)} by its own values too, each pair at the worse of the two"
            )
            if also
            else (
                f"outputs made by a Softmax or Sigmoid are judged by their logits ({named}{more}): every "
                "SQNR figure on calibration samples but the smoke test's is the logits'"
            ),
        )
        warned = _squashed_warnings(converted, squashed, sigmoids, reference, samples, smoke)
        # a Sigmoid with no logit above 0 on any sample: its scores sit near 0 (hq162 F2: not a Softmax's
        # close calls, which the note called 'near 0 on every sample')
        quiet = {o for o, lg in squashed if o in sigmoids and not has_foreground(True, lg, reference)}
        notes += saturated_note(squashed, measured, smoke, quiet)
        sparse = sparse_foreground(squashed, sigmoids, reference)  # hq97 F1: 1 of 8 samples showed text
        return notes, (*warned, *sparse, *slow)
    return notes, slow


# A squashed output is flagged where it measures this far below its logits, under SQUASHED_FLOOR_DB.
SQUASHED_GAP_DB = 6.0
SQUASHED_FLOOR_DB = 15.0


def _squashed_warnings(
    converted: onnx.ModelProto,
    squashed: list[tuple[str, str]],
    sigmoids: set[str],
    reference: Runs,
    samples: Feed,
    smoke: dict[str, float],
) -> tuple[str, ...]:
    """squashed: (output, its logits) of Softmax and Sigmoid outputs, those in `sigmoids` a Sigmoid's.
    A warning for each Softmax output, and each Sigmoid output with foreground in the samples (a logit
    above 0), whose own smoke-test SQNR is far below its logits': the logits' power sits in confident
    values no threshold sees (PP-OCRv4's DBNet: background logits near -32), while the output's error
    sits where it is uncertain (its text pixels). At 640x640 its logits measured 19.5 dB and its
    probability map 3.0 dB, and 86 % of the text pixels were lost on held-out photos; a VGG16 tumour
    classifier's logits 12.65 dB (just above --min-sqnr) and its softmax 5.0 dB, 87.5 % top-1 agreement.
    (A map with no foreground, all ~1e-8, is what the logits are read for: no warning.)"""
    present = {name for node in converted.graph.node for name in node.output}
    lines = []
    for output, logits in squashed:
        own = smoke.get(output)
        if own is None or logits not in present or own >= SQUASHED_FLOOR_DB:
            continue
        if not has_foreground(output in sigmoids, logits, reference):
            continue
        judged = fallback.output_sqnr(converted, [{logits: r[logits]} for r in reference], samples)
        if own < judged - SQUASHED_GAP_DB:
            lines.append(
                f"output {output!r} measures {own:.1f} dB on the calibration samples where its "
                f"logits measure {judged:.1f} dB: its uncertain values (a detector's or segmenter's "
                "foreground, a classifier's or recogniser's close calls) move more than the logits show; "
                "check it on your task's metric (quantkit compare; --detector db for a text detector's "
                "boxes), and where it falls short, quantkit sensitivity for the layers to keep float"
            )
    return tuple(lines)


def _worst(model: onnx.ModelProto, reference: Runs, samples: Feed) -> str:
    """' (worst: <tensor> <x> dB)' where more than one tensor is measured: which one to look at."""
    noise = output_noise(model, list(reference[0]) if reference else (), feed_rows(samples))
    fallback.output_sqnr(model, reference, samples, noise=noise)
    worst = noise.worst() if len(noise.powers) > 1 else None
    return "" if worst is None else f" (worst: {worst[0]!r} {worst[1]:.1f} dB)"


def _smoke_test(reference: onnx.ModelProto, candidate: onnx.ModelProto, samples: Feed) -> dict[str, float]:
    """The converted model loads and gives finite outputs on samples [K, ...]: SQNR per float output (an
    integer output's SQNR is of label numbers: compare gives their agreement)."""
    ref_session = Session.of(reference)
    try:
        cand_session = Session.of(candidate)
    except Exception as exc:
        raise ConversionError(
            f"onnxruntime cannot load the converted model ({exc}); nothing was written"
        ) from exc
    errors = {name: OutputErrors(name) for name in ref_session.output_names}
    unequal: set[str] = set()
    filled: set[str] = set()
    shaped: set[str] | None = None  # the outputs whose shapes can follow the data, read where one differs
    rows = zip(ref_session.iter_samples(samples), cand_session.iter_samples(samples), strict=True)
    for k, (ref, cand) in enumerate(rows):
        for name, acc in errors.items():
            if not np.isfinite(cand[name]).all() and np.isfinite(ref[name]).all():
                raise ConversionError(
                    f"the converted model gives NaN/Inf in output {name!r}"
                    f"{_where_nonfinite(candidate, feed_take(samples, k, k + 1))}; nothing was written"
                )
            if ref[name].shape != cand[name].shape:  # the boxes an NMS kept, a TopK of a K from the data
                shaped = shaped_by_data(reference) if shaped is None else shaped  # NMS, TopK, ... picks too
                if name not in shaped:  # hq147 F1: float16's 2052 for 2051
                    shapes = f"shape {list(cand[name].shape)} where FP32's has {list(ref[name].shape)}"
                    raise ConversionError(  # the nodes computing it are the user's to keep float
                        f"the converted model's output {name!r} has {shapes}: a size it computes changed; "
                        "nothing was written (keep the nodes computing that size float: --exclude-nodes)"
                    )
                unequal.add(name)
                continue
            acc.update(ref[name], cand[name])
            filled.update([name] if ref[name].size else [])
    return {
        name: acc.result().sqnr_db
        for name, acc in errors.items()
        if not acc.labels and name in filled - unequal  # not label ids, nor no rows or other boxes' rows
    }


def _where_nonfinite(candidate: onnx.ModelProto, sample: Feed) -> str:
    """', first at <op> <node> (reading <layers>' outputs as int8): keep them float with --exclude-nodes'
    for the first node whose output is not finite on `sample` [1, ...], with the quantized layers it reads
    (each input through DequantizeLinear, back to the node that wrote the quantized tensor), or the node
    itself where it writes float16; '' if none is found (or the model cannot run with them as outputs)."""
    index = GraphIndex(candidate)
    probe = with_outputs(candidate, [o for node in index.nodes for o in node.output if o], typed=False)
    try:
        values = Session.of(probe).run(sample)
    except Exception:  # a diagnosis only: the error is raised without it
        return ""
    for node in index.nodes:
        bad = [o for o in node.output if _nonfinite(values.get(o))]
        if not bad or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        layers = sorted({w for i in node.input if (w := _quantized_writer(index, i))})
        read = f" (reading {', '.join(layers)}'s output as int8)" if layers else ""
        fix = f": keep {'them' if len(layers) > 1 else 'it'} float with --exclude-nodes {','.join(layers)}"
        if not layers and any(getattr(values.get(o), "dtype", None) == np.float16 for o in bad):  # hq79 F2
            read, fix, layers = "", f": keep it float32 with --exclude-nodes {node.name}", [node.name]
        return f", first at {node.op_type} {node.name!r}{read}{fix if layers else ''}"
    return ""


def _nonfinite(value: object) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f" and not bool(np.isfinite(value).all())


def _quantized_writer(index: GraphIndex, tensor: str) -> str | None:
    """The node whose output reaches `tensor` through QuantizeLinear -> DequantizeLinear, if any."""
    dq = index.producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = index.producer.get(dq.input[0])
    writer = index.producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
    return writer.name if writer is not None else None


def stamp(
    model: onnx.ModelProto,
    settings: dict[str, Any],
    table_path: Path | None,
    table: CalibrationTable | None,
    source_sha256: str = "",
    conversion: dict[str, Any] | None = None,
) -> None:
    """Provenance in metadata_props: producer, version, settings, calibration hash, preprocessing, and
    what an INT8 conversion rebalanced and corrected (conversion; `compare` shows it); for float8 Q/DQ,
    the onnxruntime level that computes them right."""
    model.producer_name = "quantkit"
    model.producer_version = __version__
    props = {"version": __version__, "settings": json.dumps(json_safe(settings), sort_keys=True)}
    props["versions"] = json.dumps(versions(), sort_keys=True)  # onnx, onnxruntime, numpy (hq107 F8)
    if conversion is not None:
        props["conversion"] = json.dumps(json_safe(conversion), sort_keys=True, allow_nan=False)
    if table_path is not None and table is not None:
        props["calibration_sha256"] = hashlib.sha256(table_path.read_bytes()).hexdigest()
        props["source_model_sha256"] = table.model_sha256
        props["preprocess"] = json.dumps(table.meta.get("preprocess", {}), sort_keys=True)
        if any(n.op_type == "QuantizeLinear" for n in model.graph.node):  # not an fp16 one (hq91 F11)
            props.update(held_out.stamped(table.meta))  # compare warns on images that calibrated it
    else:
        props["source_model_sha256"] = source_sha256
    if has_float8(model):  # said in the file too (hq63b: a default session gave an RFB 2 of 340 faces)
        props["onnxruntime_level"] = (
            "ORT_ENABLE_BASIC: onnxruntime's default level miscomputes or refuses float8 Q/DQ"
        )
    kept = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value


def plan_record(
    plan: QuantPlan,
    corrections: Corrections | None,
    speed_plan: SpeedPlan | None = None,
    taken: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """What rebalancing and bias correction did, as plain JSON for the model's metadata; with what the
    speed-aware plan kept float on which CPU (the bytes then depend on what that machine's timing chose).
    The speedups timed are the summary's, not the file's, and the nodes kept float are those the plan
    before the speed step quantized and the written one does not (taken; default the ops the timing
    floated): two cold-cache converts that wrote one graph recorded different timings, and one the ops a
    timing floated, the other the same ops, one floated for its neighbours (hq57 A2)."""
    record: dict[str, Any] = {
        "rebalanced": [
            {"tensor": r.tensor, "alpha": r.alpha, "folded_into": r.producer} for r in plan.rebalances
        ],
        "bias_corrected_layers": len(plan.input_means),
        "rounded_layers": len(plan.rounded),
    }
    if plan.shifts:  # --target tensorrt: tensor -> c, quantized as tensor + c (planner.tensorrt_shift)
        record["shifted"] = {tensor: shift for tensor, shift in sorted(plan.shifts.items())}
    if speed_plan is not None and speed_plan.plain_speedup is None and speed_plan.sqnr_db is not None:
        every, kept = (round(db, 3) for db in speed_plan.sqnr_db)  # --prefer accuracy's placement
        record["placed_for_accuracy"] = {
            "placement": speed_plan.placement,
            "sqnr_db_every_op": every,
            "sqnr_db_kept": kept,
        }
    if speed_plan is not None and speed_plan.refined_speedup is not None:
        record["kept_float_for_speed"] = {
            "nodes": list(speed_plan.floated if taken is None else taken),
            "cpu": cpu_info(),
        }
        if speed_plan.placement is not None:  # Q/DQ on the weighted layers' inputs only
            record["kept_float_for_speed"]["placement"] = speed_plan.placement
        if speed_plan.sqnr_db is not None:  # kept over the fastest refined plan as more accurate
            record["kept_float_for_speed"]["sqnr_db_fastest"] = round(speed_plan.sqnr_db[0], 3)
            record["kept_float_for_speed"]["sqnr_db_kept"] = round(speed_plan.sqnr_db[1], 3)
    if corrections is not None:
        record["calibration_sqnr_db"] = {
            "plain": corrections.sqnr_plain_db,
            "bias_correction": corrections.sqnr_corrected_db,
            "rebalancing": corrections.sqnr_rebalanced_db,
            "both": corrections.sqnr_both_db,
            "rounding_nearest": corrections.sqnr_nearest_db,
            "rounding_compensated": corrections.sqnr_rounded_db,
        }
    return record
