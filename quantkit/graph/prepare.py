"""The model every command works on: one form, made the same way by calibrate, convert and sensitivity so
that tensor names agree between the table and the plan.

0. A declared dimension of -1 (Paddle exports; ONNX defines none) gets a name (model_io.symbolic_dims);
   the 16-bit floats inside a model with float32 inputs and outputs (a mixed-precision export) are read
   as float32 (graph.widen).
1. Below opset 13 (per-channel Q/DQ), upgraded with onnx's version converter (its Resize from opset 10 or
   earlier given back the sampling it had: `resize_as_before`), then checked against the original on
   seeded synthetic inputs: outputs equal within float tolerance, or the upgrade is refused.
2. Weights held in Constant nodes or read through Identity become initializers, Casts to the type their
   input has already are dropped (graph.normalize);
   onnxruntime's fused CPU nodes (FusedConv, FusedGemm, QuickGelu) the standard ops they fuse (graph.unfuse),
   and before the upgrade the ops of early opsets the converter cannot upgrade (ImageScaler, Crop...)
   theirs (legacy_ops).
3. Every node named; Transposes that cancel through layout-free ops taken out (graph.transposes: NHWC
   exports whose converter left a pair around every Conv), checked equal on synthetic inputs; a Pad by
   zeros before a Conv folded into its pads (graph.fold_pads); a BatchNormalization after a Conv folded
   into it, and so are a Mul and an Add by per-channel constants (graph.fold_bn); shapes inferred.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from quantkit.errors import ModelError, QuantkitError
from quantkit.graph import model_io
from quantkit.graph.fold_bn import fold_batchnorms, fold_scale_shift
from quantkit.graph.fold_pads import fold_pads
from quantkit.graph.fold_shapes import fold_weight_shapes
from quantkit.graph.functions import inline_functions
from quantkit.graph.gemm_scales import fold_gemm_scales
from quantkit.graph.legacy_ops import write_out
from quantkit.graph.normalize import dense_sparse, normalize, same_type_casts
from quantkit.graph.pad_axes import pad_all_axes
from quantkit.graph.query import GraphIndex, name_nodes
from quantkit.graph.resize_axes import resize_all_axes
from quantkit.graph.samples import synthetic_samples
from quantkit.graph.transposes import cancel_transposes
from quantkit.graph.unfuse import unfuse
from quantkit.graph.value_info import stale_declarations, without_declarations
from quantkit.graph.widen import declared_shapes, widen
from quantkit.runtime import Session

# An upgraded graph computes what the original did: outputs agree to float32 rounding (relative to each
# output's scale; the converter may reorder arithmetic, e.g. BatchNormalization's spatial form)
UPGRADE_RTOL = 1e-4


@dataclass(frozen=True)
class Prepared:
    model: onnx.ModelProto  # opset >= minimum, normalized, nodes named, shapes inferred
    opset_before: int
    opset_after: int
    constants_folded: int  # Constant nodes made initializers
    identities_dropped: int
    sparse_stored_dense: int = 0  # sparse initializers and Constant sparse_values made dense ones
    casts_dropped: int = 0  # Casts to the type their input has already (graph.normalize.same_type_casts)
    batchnorms_folded: int = 0  # BatchNormalization nodes folded into the Conv before them
    affines_folded: int = 0  # Mul/Add by per-channel constants folded into the Conv before them
    transposes_cancelled: int = 0  # Transposes that cancel through layout-free ops (graph.transposes)
    pads_folded: int = 0  # zero Pads folded into the Conv after them (graph.fold_pads)
    resizes_listed: int = 0  # Resizes given axes, their scales/sizes listed for every axis (resize_axes)
    pads_listed: int = 0  # Pads given axes, their pads listed for every axis (pad_axes)
    gemms_scaled: int = 0  # Gemms with alpha / beta or a one-value bias folded (graph.gemm_scales)
    upgrade_reason: str = "per-channel weights need 13"  # why the opset was raised, for the note
    dims_made_symbolic: int = 0  # declared dimensions of -1 given names (model_io.symbolic_dims)
    widened: tuple[int, int] = (0, 0)  # 16-bit weights, and Casts to 16 bits, made float32 (graph.widen)
    interface: tuple[tuple[str, int], ...] = ()  # float16 inputs/outputs made float32 (widen.narrow: back)
    declared: tuple[tuple[str, bytes], ...] = ()  # the file's input/output shapes (widen.redeclare: back)
    stale: tuple[str, ...] = ()  # value_info entries the graph contradicts, dropped (graph.value_info)
    inlined: tuple[int, int] = (0, 0)  # local functions inlined, If nodes they fixed folded (graph.functions)
    weights_computed: tuple[tuple[str, int], ...] = ()  # (op type, count) folded (graph.fold_shapes)
    unfused: tuple[tuple[str, int], ...] = ()  # (onnxruntime fused op, count) written out (graph.unfuse)
    legacy: tuple[tuple[str, int], ...] = ()  # (experimental op, count) written out (graph.legacy_ops)

    def notes(self) -> tuple[str, ...]:
        """What was changed on the way in, for the summary."""
        found = []
        if self.opset_after != self.opset_before:
            found.append(
                f"opset {self.opset_before} -> {self.opset_after} ({self.upgrade_reason}; outputs "
                "checked equal on synthetic inputs)"
            )
        if self.unfused:
            ops = ", ".join(f"{count} {op}" for op, count in self.unfused)
            found.append(
                f"onnxruntime's fused nodes ({ops}) written as the standard ops they fuse (the model was "
                "saved after onnxruntime's optimizations; the same outputs)"
            )
        if self.legacy:
            ops = ", ".join(f"{count} {op}" for op, count in self.legacy)
            found.append(
                f"ops of early opsets ({ops}) written as the standard ops they compute (onnx's version "
                "converter cannot upgrade them, or not as they compute; outputs checked equal to "
                "onnxruntime's own)"
            )
        if self.dims_made_symbolic:
            found.append(
                f"{self.dims_made_symbolic} declared dimension(s) of -1 given names (ONNX defines no -1 "
                "size; shape inference refuses a model written with them)"
            )
        if any(self.widened):
            weights, casts = self.widened
            found.append(
                f"mixed precision read as float32: {weights} float16/bfloat16 weight(s) and {casts} "
                "Cast(s) to 16 bits made float32 (exact for the weights; activations are no longer rounded "
                "to 16 bits, nor made Inf past float16's 65504: quantkit measures against this float32 form)"
            )
        if self.inlined[0]:
            functions, ifs = self.inlined
            found.append(
                f"{functions} model-local function(s) inlined (as torch.onnx exports modules) and {ifs} If "
                "node(s) whose condition the graph fixes (a tensor's rank) replaced by the branch taken"
            )
        if self.stale:
            named = ", ".join(repr(name) for name in self.stale[:3]) + (
                ", ..." if len(self.stale) > 3 else ""
            )
            found.append(
                f"{len(self.stale)} declared inner shape(s) that the graph contradicts dropped (value_info "
                f"{named}): they declare what the ops do not compute; onnx's shape inference stops at them"
            )
        if self.interface:
            edges = ", ".join(repr(name) for name, _ in self.interface)
            found.append(
                f"float16 inputs/outputs ({edges}) read and written through Casts to and from float32: "
                "the model computes in float32 inside, and is fed and read as the original"
            )
        if self.constants_folded or self.identities_dropped:
            found.append(
                f"{self.constants_folded} Constant node(s) and {self.identities_dropped} Identity of a "
                "weight read as initializers"
            )
        if self.sparse_stored_dense:
            found.append(f"{self.sparse_stored_dense} sparse weight(s) read as dense ones")
        if self.casts_dropped:
            found.append(
                f"{self.casts_dropped} Cast node(s) to the type their input has already, or to a wider one "
                "and back, dropped (exact)"
            )
        if self.weights_computed:
            ops = ", ".join(f"{count} {op}" for op, count in self.weights_computed)
            found.append(f"weights computed by {ops} node(s) stored as the initializers they compute (exact)")
        if self.transposes_cancelled:
            found.append(
                f"{self.transposes_cancelled} Transpose node(s) that cancel through layout-free ops taken "
                "out (an NHWC export whose converter left them; outputs checked equal on synthetic inputs)"
            )
        if self.resizes_listed:
            found.append(
                f"{self.resizes_listed} Resize node(s) given axes written with scales or sizes for every "
                "axis (exact; onnxruntime's layout optimizer breaks the former between integer Convs)"
            )
        if self.pads_listed:
            found.append(
                f"{self.pads_listed} Pad node(s) given axes written with pads for every axis (exact; "
                "onnxruntime's layout optimizer breaks the former between integer Convs)"
            )
        if self.gemms_scaled:
            found.append(
                f"{self.gemms_scaled} Gemm node(s) with alpha or beta other than 1, or a bias of one value, "
                "written with them in their weight and bias (onnxruntime's QGemm takes neither)"
            )
        if self.pads_folded:
            found.append(f"{self.pads_folded} Pad node(s) by zeros folded into the Conv after them (exact)")
        if self.batchnorms_folded:
            found.append(
                f"{self.batchnorms_folded} BatchNormalization node(s) folded into the Conv before them"
            )
        if self.affines_folded:
            found.append(
                f"{self.affines_folded} Mul/Add node(s) by per-channel constants folded into the Conv "
                "before them"
            )
        return tuple(found)


def prepare(
    model: onnx.ModelProto,
    minimum: int = model_io.PER_CHANNEL_OPSET,
    size: tuple[int, int] | None = None,
    reason: str = "per-channel weights need 13",
) -> Prepared:
    """model: as loaded by model_io.load_model. minimum: the opset to upgrade to when below it (0: keep the
    model's own). size: HxW for the synthetic check of a model with dynamic spatial size. reason: why
    `minimum`, for the note."""
    before = model_io.opset_version(model)
    model, sparse = dense_sparse(model)
    inlined, functions, ifs = inline_functions(model)
    if functions:
        check_inlined(model, inlined, size)
    model = inlined
    model, symbolic = model_io.symbolic_dims(model)
    declared = declared_shapes(model)
    stale = stale_declarations(model)
    model = without_declarations(model, stale)
    widened = widen(model)
    model = widened.model
    unfused = unfuse(model, before)  # onnxruntime's fused CPU nodes: the standard ops they fuse, exactly
    loaded = unfused.model
    legacy = write_out(loaded, before)  # experimental ops of early opsets: the standard ops they compute
    model = legacy.model
    upgraded = resize_as_before(model_io.ensure_opset(model, minimum), before) if minimum else model
    if upgraded is not model:
        upgraded = empty_resize_inputs(upgraded)
    if upgraded is not model:
        check_upgrade(loaded, upgraded, before, size, (minimum, reason))  # against the legacy ops' kernels
    normalized = normalize(upgraded)
    uncast, casts = same_type_casts(normalized.model)
    uncast, resizes = resize_all_axes(uncast)
    named, computed = fold_weight_shapes(uncast)
    named, gemms = fold_gemm_scales(named)
    _require_unique_names(named)
    name_nodes(named)
    named, transposes = _transposes_cancelled(named, size)
    named, listed = pad_all_axes(named)
    named, pads = fold_pads(named)
    folded, batchnorms = fold_batchnorms(named)
    folded, affines = fold_scale_shift(folded)
    return Prepared(
        model=model_io.infer_shapes(folded),
        opset_before=before,
        opset_after=model_io.opset_version(named),
        constants_folded=normalized.constants,
        identities_dropped=normalized.identities,
        sparse_stored_dense=sparse,
        casts_dropped=casts,
        weights_computed=tuple(sorted(computed.items())),
        batchnorms_folded=batchnorms,
        affines_folded=affines,
        transposes_cancelled=transposes,
        pads_folded=pads,
        resizes_listed=resizes,
        pads_listed=listed,
        gemms_scaled=gemms,
        upgrade_reason=reason,
        dims_made_symbolic=symbolic,
        widened=(widened.weights, widened.casts),
        interface=widened.interface,
        declared=declared,
        stale=stale,
        inlined=(functions, ifs),
        unfused=unfused.counts,
        legacy=legacy.counts,
    )


def _require_unique_names(model: onnx.ModelProto) -> None:
    """Raise ModelError where two nodes share a name: onnxruntime refuses such a model (onnx's checker does
    not), and the rewrites that find nodes by name would mistake one for the other (hq131 F1: an internal
    error where a Transpose was to cancel)."""
    seen: set[str] = set()
    for node in model.graph.node:
        if node.name and node.name in seen:
            raise ModelError(
                f"the model has two nodes named {node.name!r}, which onnxruntime refuses to load; give each "
                "node its own name (or none) and export again"
            )
        seen.add(node.name)


def _transposes_cancelled(
    model: onnx.ModelProto, size: tuple[int, int] | None
) -> tuple[onnx.ModelProto, int]:
    """(model with the Transposes that cancel through layout-free ops taken out, how many), checked to
    give model's outputs on synthetic inputs; (model, 0) where none cancel or the check fails (the
    rewrite is exact: a failure is a bug, and the model is used as exported)."""
    rewritten, count = cancel_transposes(model)
    if not count:
        return model, 0
    try:
        samples = synthetic_samples(model, size, count=2, exact=False)
        # both as ONNX defines them: onnxruntime's optimizer is no reference (hq64a F2: its transpose
        # optimizer broke an opset-18 Pad with axes between Transposes, which the rewrite takes out)
        before = Session.of(model, optimize=False, spin=False).run_samples(samples)
        after = Session.of(rewritten, optimize=False, spin=False).run_samples(samples)
    except QuantkitError:  # no sample to check on (a size to give), or the rewrite fails to run: as exported
        return model, 0
    return (model, 0) if _first_changed(before, after) else (rewritten, count)


def resize_as_before(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """model (converted from opset `version`) with each Resize that came from opset 10 or earlier told to
    sample as onnxruntime ran it there. Upsample (to opset 9) and Resize-10 map output pixel x to input
    pixel x / scale (asymmetric), nearest taking the floor (the ceiling where every resized axis shrinks);
    from opset 11 a Resize without attributes maps it to (x + 0.5) / scale - 0.5 (half_pixel) and rounds.
    onnx 1.23's converter adds no attribute: a tf2onnx DeepLabV3 at opset 9 (bilinear Upsample) came out
    with a relative error of 0.073 and was refused. A nearest Resize whose axes both grow and shrink keeps
    the floor, which check_upgrade then refuses if it differs. Changed in place; the same model returned."""
    if version > 10 or model_io.opset_version(model) < 11:
        return model
    index = GraphIndex(model)
    for node in model.graph.node:
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
            continue
        named = {a.name for a in node.attribute}
        if "coordinate_transformation_mode" not in named:
            node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        if "nearest_mode" not in named:
            scales = index.constant(node.input[2]) if len(node.input) > 2 else None
            shrinks = scales is not None and _all_shrink(scales)
            node.attribute.append(helper.make_attribute("nearest_mode", "ceil" if shrinks else "floor"))
    return model


def empty_resize_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """model (upgraded to opset 13 or later) with each Resize's roi, and its scales beside sizes, made
    absent ('') where an empty initializer gives them: opset 11 had them present and empty; from 13 a
    weight the graph lists as an input may be fed, and onnxruntime refuses a Resize given both scales and
    sizes (hq130 F1: a torch 1.7 NanoDet-m, its weights listed as inputs, was refused). Exact: empty is
    absent. Changed in place; the same model returned."""
    if model_io.opset_version(model) < 13:
        return model
    empty = {t.name for t in model.graph.initializer if 0 in t.dims}
    for node in model.graph.node:
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
            continue
        sized = len(node.input) > 3 and bool(node.input[3])
        for k in (1, 2) if sized else (1,):
            if k < len(node.input) and node.input[k] in empty:
                node.input[k] = ""
    return model


def _all_shrink(scales: np.ndarray) -> bool:
    """Every resized axis of scales (float [rank]) shrinks."""
    resized = scales[scales != 1.0]
    return bool(resized.size) and bool((resized < 1.0).all())


def check_upgrade(
    original: onnx.ModelProto,
    upgraded: onnx.ModelProto,
    version: int,
    size: tuple[int, int] | None,
    target: tuple[int, str] = (model_io.PER_CHANNEL_OPSET, "per-channel weights need 13"),
) -> None:
    """Raise ModelError unless the upgraded model gives the original's outputs on synthetic inputs. The
    original runs first: where it fails too (cycle_center_net at an --input-size of 33x47, a broadcast of
    8 by 9), its own error is raised, not the conversion blamed. target: the opset upgraded to, and why."""
    samples = synthetic_samples(original, size, count=2, exact=False)
    before = Session.of(original, spin=False).run_samples(samples)
    try:
        after = Session.of(upgraded, spin=False).run_samples(samples)
    except ModelError as exc:
        opset, why = target
        if version >= model_io.PER_CHANNEL_OPSET:  # hq60 B: a RoiAlign at 16 was told to re-export at 13
            raise ModelError(
                f"the model upgraded from opset {version} to {opset} ({why}) fails to run in onnxruntime "
                f"({exc}): convert it to a format its opset allows (int8, fp16)"
            ) from exc
        raise ModelError(
            f"the model converted from opset {version} fails to run in onnxruntime ({exc}); re-export it at "
            f"opset {model_io.PER_CHANNEL_OPSET} or later"
        ) from exc
    if changed := _first_changed(before, after):
        raise ModelError(
            f"converting opset {version} changed output {changed[0]!r} (relative error {changed[1]:.2g}); "
            f"re-export the model at opset {model_io.PER_CHANNEL_OPSET} or later"
        )


def check_inlined(original: onnx.ModelProto, inlined: onnx.ModelProto, size: tuple[int, int] | None) -> None:
    """Raise ModelError unless the model with its functions inlined (and the Ifs they fix folded) gives
    the original's outputs on synthetic inputs, as onnxruntime runs the functions: a rewrite that changes
    what the network computes is never converted (hq110 F1, F2: a lost attribute default, a branch folded
    from a wrong declared rank, every format written at 7 dB or -4 dB, exit 0). Where the original
    itself does not run on synthetic inputs, there is nothing to hold the rewrite to."""
    samples = synthetic_samples(original, size, count=2, exact=False)
    try:
        before = Session.of(original, spin=False).run_samples(samples)
    except ModelError:
        return
    fix = "export it again with torch.onnx.export(..., dynamo=False) or run onnxscript's optimizer on it"
    try:
        after = Session.of(inlined, spin=False).run_samples(samples)
    except ModelError as exc:
        raise ModelError(f"the model with its local functions inlined fails to run ({exc}); {fix}") from exc
    if changed := _first_changed(before, after):
        raise ModelError(
            f"inlining the model's local functions changed output {changed[0]!r} (relative error "
            f"{changed[1]:.2g}); {fix}"
        )


def _first_changed(
    before: list[dict[str, np.ndarray]], after: list[dict[str, np.ndarray]]
) -> tuple[str, float] | None:
    """(output, relative error) of the first output of the first run that a rewrite changed past
    UPGRADE_RTOL, or None: runs of the model before and after it on the same synthetic inputs."""
    for ref, new in zip(before, after, strict=True):
        for name, value in ref.items():
            error = _relative_error(value, new[name])
            if error > UPGRADE_RTOL:
                return name, error
    return None


def _relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """max |a - b| / max |a| over one output ([...], any shape); inf when the shapes differ."""
    if reference.shape != candidate.shape:
        return float("inf")
    if not np.issubdtype(reference.dtype, np.floating):
        return 0.0 if np.array_equal(reference, candidate) else float("inf")
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(cand)):
        return float("inf")
    scale = float(np.max(np.abs(ref[finite]), initial=0.0)) or 1.0
    return float(np.max(np.abs(ref[finite] - cand[finite]), initial=0.0)) / scale
