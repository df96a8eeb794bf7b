"""What a float16 or bfloat16 plan cannot see from the graph, found by running it: activation peaks in
FP32, and nodes whose 16-bit form onnxruntime refuses or that turn an output non-finite. A type that
onnxruntime cannot run (bfloat16) is checked by onnx.checker on the model as written and run as its
float32 emulation (graph.emulate): refusals are then the checker's, non-finite outputs the emulation's.

A refused node is named by onnxruntime's message where it names one of the float16 nodes; otherwise it is
found by bisection over the float16 nodes in graph order (log2(n) sessions per culprit).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable

import numpy as np
import onnx

from quantkit.calib.collect import fetch_groups
from quantkit.errors import ConversionError, ModelError, shorten
from quantkit.evaluate.output_errors import OutputErrors
from quantkit.graph import fp16_rewrite as fp16_graph
from quantkit.graph import model_io
from quantkit.graph.augment import tensor_bytes, with_sample_shapes
from quantkit.graph.emulate import emulate
from quantkit.graph.float_formats import FLOAT16, FloatFormat
from quantkit.graph.observe_parts import group_model, in_graph_order
from quantkit.graph.query import GraphIndex
from quantkit.planner.at_output import output_sqnr
from quantkit.planner.fp16_plan import Float16Plan, KeptFloat32, finite_peak
from quantkit.results import Feed, Runs, feed_shapes, feed_take
from quantkit.runtime import Session, crash_on_load

MAX_CULPRITS = 8
ATTEMPT_SAMPLES = 8  # the samples each attempt runs (the table's first ones)
_NAMED = (
    re.compile(r"Name:'([^']+)'"),
    re.compile(r"[Nn]ode \(([^)]+)\)"),
    re.compile(r"node '([^']+)'"),
    re.compile(r"node name: ([^)\s]+)\)"),  # onnx.checker's shape inference
)

# kept float32 nodes -> why the model fails, or None when it loads, runs and gives finite outputs
Attempt = Callable[[frozenset[str]], str | None]


def activation_peaks(
    model: onnx.ModelProto, samples: Feed, keep: list[str]
) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """(max |value| of every float tensor in FP32 over samples [K, ...], per Session.run_samples batch
    the graph's outputs and the `keep` tensors). Non-finite values are skipped in the peaks (an FP32
    model that is non-finite already is not float16's doing)."""
    index = GraphIndex(model)
    names = sorted({o for n in index.nodes for o in n.output if o and index.is_float(o)})
    kept = {o.name for o in model.graph.output} | set(keep)
    peaks = dict.fromkeys(names, 0.0)
    # one batch of every tensor alive at a time: a large input's activations take gigabytes per run, and
    # past GROUP_BYTES a sample they are observed in groups, a session each (calib.collect: afis' LEADER)
    shapes = feed_shapes(samples, index.graph_inputs[0])
    ordered = in_graph_order(model, names)
    groups = fetch_groups(tensor_bytes(with_sample_shapes(model, shapes), ordered)) or (tuple(names),)
    runs: list[dict[str, np.ndarray]] = []
    for k, group in enumerate(groups):  # a group's session runs every sample, then goes: one at a time
        # each group's model computes what its tensors need (graph.observe_parts); every kept tensor is
        # one of `names` or a graph output, which the last group (it needs the most of the graph) carries:
        # DEIMv2's int64 labels, no float tensor, were fetched by none (hunt52 A1: KeyError 'labels')
        one = group_model(model, group, carries_outputs=k == len(groups) - 1)
        session = Session.of(one, observing=True, arena=None if len(groups) == 1 else False)
        runs = runs or [{} for _ in range(session.run_count(samples))]
        for run, produced in zip(runs, session.iter_samples(samples), strict=True):
            for name in group:
                peak = finite_peak(produced[name])
                if peak is not None:
                    peaks[name] = max(peaks[name], peak)
            # copies: a view would keep the session's memory (every activation's) alive after it ends
            run.update({name: produced[name].copy() for name in kept if name in produced and name not in run})
            del produced
        del session
    return peaks, runs


def runnable_form(
    model: onnx.ModelProto, kept: frozenset[str] | set[str], keep_io_types: bool, target: FloatFormat
) -> onnx.ModelProto:
    """The rewrite with `kept` float32 as onnxruntime runs it: itself, or its float32 emulation."""
    rewritten = fp16_graph.rewrite(model, kept, keep_io_types, target)
    if target.runs_in_onnxruntime:
        return rewritten.model
    return emulate(rewritten.model, rewritten.stored, target.elem_type)


def attempt_for(
    model: onnx.ModelProto,
    samples: Feed,
    reference: Runs,
    keep_io_types: bool,
    target: FloatFormat = FLOAT16,
    floor: tuple[Runs, float] | None = None,
) -> Attempt:
    """An Attempt that rewrites `model` to the target type with the given nodes kept float32 and runs
    `samples` [K, ...] (ATTEMPT_SAMPLES at most): outputs that FP32 (`reference`, its graph outputs per
    sample) gives finite must stay finite as onnxruntime runs the rewrite (on the first sample) and as
    its float32 emulation computes it, every tensor stored in the type (on all: hq79 F1, onnxruntime's
    CPU provider computes float16 ops in float32, and an L2 normalisation whose epsilon float16 cannot
    hold gave NaN on float16 hardware only; hq79 F2, a zero vector in the third sample went unseen on the
    first, and the model was refused or written by which sample came first). floor: (FP32's measured
    tensors on `samples`, dB): where onnxruntime's run reaches that output SQNR, the emulation must too
    (a sum of squares that underflows to 0 in float16 made x / (0 + 1e-12) 1e7 there: -117 dB). A type
    onnxruntime cannot run (bfloat16): checked by onnx.checker, run emulated only (its floor is the
    written model's: pipeline.writing)."""
    finite = [{name: np.isfinite(value) for name, value in run.items()} for run in reference]
    first = feed_take(samples, 0, 1)

    def nonfinite(converted: onnx.ModelProto, how: str, fed: Feed) -> str | None:
        try:
            outputs = Session.of(converted, spin=False).run_samples(fed)
        except ModelError as exc:
            return str(exc)
        for run, wanted in zip(outputs, finite, strict=False):
            for name, value in run.items():
                if name not in wanted:
                    continue
                where = wanted[name] if value.shape == wanted[name].shape else np.ones(value.shape, bool)
                if not np.isfinite(value[where]).all():
                    return f"output {name!r} is not finite{how}"
        return None

    def on_hardware(ran: onnx.ModelProto, emulated: onnx.ModelProto) -> str | None:
        """The emulation's failure where onnxruntime's run of the first sample passes: the storage of
        activations, not the weights' rounding, breaks the output."""
        how = f" where each op's output is stored in {target.name} (emulated)"
        if floor is None:
            return nonfinite(emulated, how, samples)
        measured = output_sqnr(emulated, floor[0], samples)
        if measured >= floor[1] or output_sqnr(ran, floor[0][:1], first) < floor[1]:
            return None
        if not math.isfinite(measured):
            return nonfinite(emulated, how, samples) or f"an output is not finite{how}"
        return f"output SQNR {measured:.1f} dB{how}, below {floor[1]:g} dB"

    def attempt(kept: frozenset[str]) -> str | None:
        rewritten = fp16_graph.rewrite(model, kept, keep_io_types, target)
        if not target.runs_in_onnxruntime:
            try:
                model_io.check_like(rewritten.model, model)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                return f"onnx.checker: {exc}"
            emulated = emulate(rewritten.model, rewritten.stored, target.elem_type)
            return crash_on_load(emulated) or nonfinite(emulated, "", samples)
        failed = crash_on_load(rewritten.model) or nonfinite(rewritten.model, "", first)
        if failed is not None:  # the emulation only once onnxruntime runs the rewrite
            return failed
        return on_hardware(rewritten.model, emulate(rewritten.model, rewritten.stored, target.elem_type))

    return attempt


def runnable(
    model: onnx.ModelProto, decided: Float16Plan, attempt: Attempt, kind: str = FLOAT16.name
) -> Float16Plan:
    """decided, with the 16-bit nodes onnxruntime refuses (or that make an output non-finite) kept
    float32 too. kind: the type's name, for the messages. Raises ConversionError when keeping every node
    float32 does not help."""
    kept = {k.node: k for k in decided.kept}
    order = list(model.graph.node)
    failure: str | None = None
    for _ in range(MAX_CULPRITS + 1):
        failure = attempt(frozenset(kept))
        if failure is None:
            return dataclasses.replace(decided, kept=tuple(kept[n.name] for n in order if n.name in kept))
        half = [n for n in order if n.name not in kept]
        culprit = _named(failure, half) or _bisect(half, frozenset(kept), attempt)
        if culprit is None:
            raise ConversionError(
                f"the {kind} model fails ({shorten(failure, 120)}) even where every node stays float32; "
                "nothing was written"
            )
        kept[culprit.name] = KeptFloat32(
            culprit.name, culprit.op_type, f"{kind} form fails: {shorten(failure, 120)}"
        )
    raise ConversionError(
        f"the {kind} model still fails after keeping {MAX_CULPRITS} refused nodes float32 "
        f"({shorten(failure or '', 120)}); nothing was written. Keep op types float32 with --exclude-op-types"
    )


def _named(failure: str, half: list[onnx.NodeProto]) -> onnx.NodeProto | None:
    by_name = {n.name: n for n in half}
    for pattern in _NAMED:
        for name in pattern.findall(failure):
            if name in by_name:
                return by_name[name]
    return None


def _bisect(half: list[onnx.NodeProto], kept: frozenset[str], attempt: Attempt) -> onnx.NodeProto | None:
    """The first float16 node (graph order) whose float16 form, with all before it, makes the model fail:
    the smallest k such that converting half[:k] fails. None when keeping all of half does not help."""
    names = [n.name for n in half]
    if attempt(kept | frozenset(names)) is not None:
        return None
    low, high = 0, len(names)  # converting half[:low] runs; half[:high] fails
    while high - low > 1:
        middle = (low + high) // 2
        if attempt(kept | frozenset(names[middle:])) is None:
            low = middle
        else:
            high = middle
    return half[high - 1]


def declared_half_outputs(interface: Iterable[tuple[str, int]], reference: Runs) -> tuple[str, ...]:
    """The note where the file declares outputs float16, as the model written does (graph.widen.narrow):
    FP32's values rounded to float16 alone measure the pooled SQNR given, the ceiling of every figure
    against FP32 here. hunt46 C2: an FP16-I/O document unwarper's summary read 131.6 dB (the search, before
    that rounding) beside 72.0 dB (the model written), for a model equal to its file bit for bit."""
    halves = [name for name, kind in interface if kind == onnx.TensorProto.FLOAT16]
    found = [name for name in halves if reference and name in reference[0]]
    if not found:
        return ()
    figures = []
    for name in found:
        errors = OutputErrors(name, True)
        for run in reference:
            errors.update(run[name], FLOAT16.rounded(run[name]))
        figures.append(f"{name!r} {errors.result().sqnr_db:.2f} dB")
    return (
        f"the file declares its outputs float16, as the model written keeps them: FP32's values rounded to "
        f"float16 alone measure {', '.join(figures)} on these samples, the most any figure against FP32 "
        "here can reach (the --min-sqnr search measures before that rounding)",
    )
