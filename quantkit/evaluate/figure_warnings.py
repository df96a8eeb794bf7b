"""Warnings about what compare's figures hide: two unrelated models, an output that is noise on some
images though its pooled SQNR reads fine, one kind of value far below its output's pooled figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit.evaluate.output_errors import NOISE_COSINE
from quantkit.evaluate.output_noise import SIGN_IOU, rare_positives, sign_overlap
from quantkit.evaluate.speed import paired_speedup, scattered
from quantkit.outcomes import OutputMetrics

# A pooled SQNR at least this high reads as fine, so images where the output is noise get a warning.
POOLED_FINE_DB = 15.0


def unrelated(outputs: Sequence[OutputMetrics]) -> str | None:
    """A warning where every output is noise against the reference's (SQNR 0 dB or below and cosine under
    NOISE_COSINE: not the same values scaled): PaddleOCR's v6 and seal text detectors share input and
    output names, and compare measured -6.2 dB, cosine 0.03, and exited 0 with nothing said."""
    measured = [m for m in outputs if not m.labels]  # label ids agree or not (hq110 F5: 87.5 % read broken)
    if not measured or not all(m.sqnr_db <= 0.0 and m.cosine < NOISE_COSINE for m in measured):
        return None
    return (
        "every output of the candidate is noise against the reference's (SQNR 0 dB or below, cosine under "
        f"{NOISE_COSINE}): are these two different models? compare a model with its own converted version "
        "(quantkit compare FP32_MODEL CONVERTED_MODEL); if it is one, the conversion is broken"
    )


# Below this output SQNR convert calls an INT8 model broken on its calibration samples (pipeline.writing's
# INT8_FLOOR_DB is this): on other images compare says so too.
BROKEN_BELOW_DB = 10.0


def broken_output(m: OutputMetrics, judged: bool = False) -> str | None:
    """A warning where an output measures 0 dB or below over all images: its error is as large as itself
    (hunt36: PP-OCRv4's text map at -11 dB held out passed a loose --max-drop on its pixels' recall); or
    below BROKEN_BELOW_DB where no detector figure judges it (hq80 1: a PAN segmenter, 11.0 dB on the
    samples its corrections were fitted to, measured 6.7 dB held out, mask IoU 0.70, and compare said
    nothing). Not there for class scores, which their top-1 agreement judges (hq81 H1: logits scaled by
    0.4 measure 4.4 dB at 100 % agreement), nor where `judged`: a --detector figure reads the head's
    boxes from all its outputs (hq81 H2)."""
    if m.labels or not m.sqnr_db < BROKEN_BELOW_DB:
        return None
    if m.sqnr_db > 0.0:  # 0 dB: a candidate of zeros (hq74 1), said nothing of
        if judged or m.detection_recall is not None or m.top1_agreement is not None:
            return None
        return (
            f"output {m.name!r} measures {m.sqnr_db:.1f} dB over these images, below the {BROKEN_BELOW_DB:g} "
            "dB under which convert calls a model broken on its calibration samples: judge it on your "
            "task's metric here (--labels, --detector), or keep layers float (quantkit sensitivity ranks "
            "them)"
        )
    return (
        f"output {m.name!r} measures {m.sqnr_db:.1f} dB over these images: the candidate's error is at "
        "least as large as the output itself; it is broken here unless the output differs by design (keep "
        "layers float: quantkit sensitivity ranks them)"
    )


def noise_hidden(m: OutputMetrics, samples: bool = False) -> str | None:
    """A warning where the SQNR pooled over all images reads fine while the output is mostly noise on
    some images on their own: CRAFT's text map measured 23.1 dB pooled and a mean cosine of 0.58, its
    textless images -3.9 to -3.3 dB each (their small values add little to the pooled signal). samples:
    convert's, on its calibration samples (hq132 F1: one array holding 1e6 set the input's range, and
    the model written, at 30.8 dB pooled, was noise on the other 15)."""
    if not m.noise_images or not m.sqnr_db >= POOLED_FINE_DB:
        return None
    where, each = ("the calibration samples", "sample") if samples else ("all images", "image")
    alone = ", and where one sample holds values far beyond the others' it sets the ranges alone" * samples
    return (
        f"output {m.name!r} measures {m.sqnr_db:.1f} dB pooled over {where}, but on {m.noise_images} "
        f"{each}(s) on their own it is mostly noise (cosine with FP32's below {NOISE_COSINE}): where its "
        f"values are small (no text, an empty mask) the error is as large as they are{alone}; judge it on "
        "your task's metric"
    )


def image_hidden(m: OutputMetrics, names: Sequence[str] = ()) -> str | None:
    """A warning where one image, whose output carries its share of the power, measures far below the
    pooled figure (output_errors.worst_image; hq106 F1: a retouching net cast one bright photo green,
    11.4 dB, where the pooled 24.4 dB and cosine 0.999 said nothing). names: the images, in order."""
    if m.worst_image is None or not math.isfinite(m.sqnr_db) or m.worst_image[1] >= KIND_FINE_DB:
        return None  # hq111 F2: a float16 detector's 36.8 dB image (57 of 57 faces kept) was named
    index, worst, others = m.worst_image
    which = names[index] if index < len(names) else f"sample {index}"
    return (  # hq148 F6: "14.1 dB pooled over all images, but 12.0 dB on img3" hid the others' 36 dB
        f"output {m.name!r} measures {m.sqnr_db:.1f} dB pooled over all images, but {worst:.1f} dB on "
        f"{which} on its own, where the other images pool to {others:.1f} dB: an input unlike the "
        "calibration images (its activations past their ranges, say); check the output there, and "
        "calibrate on images like it"
    )


# A kind of value this far below its output's pooled SQNR is named (where no detector figure judges it),
# unless it measures at least KIND_FINE_DB: a CTC recognizer's [N, 7, 11] scores measured 47.7 dB pooled
# and 38.4 dB at their last time step, which no task notices.
KIND_GAP_DB = 6.0
KIND_FINE_DB = 30.0


def kind_hidden(m: OutputMetrics, where: str = "") -> str | None:
    """A warning where one kind of value along a short axis (output_errors.kinds_axis) measures far below the
    output's pooled SQNR: afis' LEADER writes [N, H, W, 4] (mask, angle in radians, type, quality) and
    measured 13.5 dB pooled, its quality channel, which afis thresholds, 3.4 dB. Not for a head that
    --detector judges by its boxes (its scores beside its boxes are what recall counts). where: on which
    images, after 'pooled' (convert's: ' on the calibration samples')."""
    if m.worst_kind is None or m.detection_recall is not None:
        return None
    axis, index, db = m.worst_kind
    if not db < min(m.sqnr_db - KIND_GAP_DB, KIND_FINE_DB):
        return None
    return (
        f"output {m.name!r} measures {m.sqnr_db:.1f} dB pooled{where}, but its values at index {index} of "
        f"axis {axis} measure {db:.1f} dB: along that axis each index stands for something else (a class, a "
        "score beside boxes, a quality beside an angle), and the largest values weigh most in the pooled "
        "figure; judge that one on your task's metric"
    )


FEW_RUNS = 5  # timed runs below which compare's percentiles and speedup are a warning's


def few_runs(runs: int) -> str | None:
    """A warning where latency rests on fewer than FEW_RUNS timed runs (hunt39 F13: --runs 1 printed one
    timing as p50, p90 and p99 and a speedup of 2.01x with no word); none for --runs 0 (no timing)."""
    if not 0 < runs < FEW_RUNS:
        return None
    return (
        f"latency rests on {runs} timed run(s) of each model: p90 and p99 are no percentiles of so few, "
        "and the speedup moves from run to run on a shared CPU; give --runs 20 or more"
    )


def sign_region(name: str, counts: Any, where: str, who: str = "the converted model") -> str | None:
    """A warning where an output's rare values above 0 moved in a channel: counts [C, 5] (output_noise.
    channel_signs summed over batches, or [5]: values,
    FP32's below 0, FP32's above 0, the candidate's above 0, above 0 in both) summed over `where`, the
    channel that moved most named where there are several. hunt55 A1: LORE's table-cell heat map, 16.9 dB
    pooled, kept none of FP32's 160 positive pixels and added 10,324 (its last Conv read a ReLU output
    whose 0..435,000 range left a uint8 step of 1,706); hq58 C2: its two channels pooled overlapped 0.69
    where the cell channel overlapped 0.01. Said of logits: a signed field no sigmoid reads (BodyPix's
    displacements, hq154 F3) has rare values above 0 too, where the sign means nothing. The advice is the
    layer with its input path: a segmenter cut at its logits (hq166 F2) kept its rare class at 0.63 IoU
    of FP32's with them float, 0.41 with the layer alone (--exclude-nodes, the advice before), 0.40 int8."""
    rows = [[int(c) for c in row] for row in np.atleast_2d(np.asarray(counts, np.int64))]
    moved = [
        (overlap, k, row)
        for k, row in enumerate(rows)
        if rare_positives(row[0], row[1], row[2])
        and (overlap := sign_overlap(row[2], row[3], row[4])) < SIGN_IOU
    ]
    if not moved:
        return None
    _, channel, worst = min(moved)
    total, _, positive, candidate, both = worst
    which = f" (its channel {channel} of {len(rows)})" if len(rows) > 1 else ""
    return (  # hq171 F3: said of LORE's corner offsets in pixels and a feature map, where the sign is no
        f"output {name!r}{which}: FP32 puts {positive} of its {total} values above 0 on {where} (as "  # event
        f"logits, where a sigmoid of them reads above 0.5), {who} {candidate}, {both} of them the same; its "
        "pooled figure weighs the large negative values: if they are logits or scores, judge it on your "
        "task's metric, or keep the layer that writes it float with its input path (a file naming it, given "
        "to convert --exclude-from; quantkit sensitivity writes one); if their sign means nothing (offsets, "
        "features), this is no loss"
    )


def scattered_timing(samples: Sequence[Sequence[float]]) -> str | None:
    """A warning where the reference's and candidate's interleaved timings (ms, run by run) scattered too
    much for the p50s' ratio to be a figure: it and the median of the runs' own ratios disagree
    (evaluate.speed.scattered). hunt54 C2: 0.43x one run, 1.05x the next, on a loaded machine, no word."""
    of_runs = paired_speedup(samples)
    if of_runs is None:
        return None
    of_medians = float(np.median(samples[0]) / np.median(samples[1]))
    apart, straddle = scattered(of_runs, of_medians)
    if not apart:
        return None
    verdict = "; whether it is faster than the reference is within that scatter" if straddle else ""
    return (
        f"the timings scattered (a busy CPU?): the p50s make {of_medians:.2f}x, the interleaved runs' "
        f"median ratio {of_runs:.2f}x{verdict}; time again on an idle machine, or with more --runs"
    )


REDUCED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)


def _reduced(model: onnx.ModelProto) -> bool:
    """Whether a model is quantized or float16 (Q/DQ or integer ops, float16 weights)."""
    if any(node.op_type in REDUCED_OPS for node in model.graph.node):
        return True
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def swapped(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, reference_path: Path, candidate_path: Path
) -> str | None:
    """The hint when the reference looks quantized and the candidate float: the arguments swapped."""
    if _reduced(reference) and not _reduced(candidate):
        return (
            f"the reference {reference_path.name} looks quantized and the candidate {candidate_path.name} "
            "float: swapped? the order is `quantkit compare FP32_MODEL QUANTIZED_MODEL`"
        )
    return None


def same_model(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, reference_path: Path, candidate_path: Path
) -> str | None:
    """The warning where the candidate is the reference itself (one file, or the same model in two):
    every figure compares a model with itself (hunt47 C6: `compare m.onnx m.onnx` reported inf dB and
    nothing else)."""
    one_file = reference_path.resolve() == candidate_path.resolve()
    # sizes first (no copy made): a converted model differs in size; serialising both holds two copies
    if not one_file and (
        reference.ByteSize() != candidate.ByteSize()
        or reference.SerializeToString() != candidate.SerializeToString()
    ):
        return None
    what = "file" if one_file else "model (the two files hold the same graph and weights)"
    return (
        f"the candidate is the reference {what}: every figure compares {reference_path.name} with itself; "
        "compare the FP32 model with its converted one (quantkit compare FP32_MODEL CONVERTED_MODEL)"
    )


def anchors_agreement(
    outputs: Sequence[OutputMetrics], anchors: tuple[str, str] | None, shapes: Mapping[str, list[int]]
) -> str | None:
    """Where, without --detector, an output's top-1 agreement is over an SSD-style head's anchors (anchors:
    its scores and boxes, evaluate.ssd.background_pairs on FP32's outputs): nearly all background, they agree
    whatever the boxes do (hq63b F1: 99.98 % where 68 of 340 faces were lost)."""
    if anchors is None:
        return None
    scores, boxes = anchors
    agreement = next((m.top1_agreement for m in outputs if m.name == scores), None)
    if agreement is None:
        return None
    return (
        f"{scores!r} {shapes.get(scores)} beside boxes {boxes!r} {shapes.get(boxes)} reads as an SSD-style "
        f"head: its {100 * agreement:.2f} % top-1 agreement counts anchors, nearly all background, and says "
        "nothing of the boxes: compare with --detector ssd for the detections each model keeps"
    )
