"""What convert's figures on the calibration samples hide, said beside them (pipeline.writing's
measurement_notes): a Softmax / Sigmoid output's own smoke-test figure far from its logits' (the floors
and searches judge the logits), a figure that hides what changes between the samples, and the figures of
an output a selection chose beside those of the tensors entering it."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx

from quantkit.evaluate.figure_warnings import kind_hidden, noise_hidden, sign_region
from quantkit.evaluate.metrics import sqnr_db
from quantkit.evaluate.output_errors import OutputErrors, kinds_axis
from quantkit.evaluate.output_noise import OutputNoise, add_signs, centres, channel_signs
from quantkit.evaluate.variation import Variation, steady_warning
from quantkit.graph.augment import with_outputs
from quantkit.graph.carried import carried
from quantkit.graph.layouts import channel_axes
from quantkit.planner import fallback
from quantkit.planner.at_output import output_noise
from quantkit.results import Feed, Runs, feed_rows
from quantkit.runtime import Session

# A Softmax / Sigmoid output whose smoke-test figure is this far above its logits' gets a note.
SATURATED_GAP_DB = 10.0


def saturated_note(
    squashed: list[tuple[str, str]],
    measured: OutputNoise,
    smoke: dict[str, float],
    quiet: Collection[str] = (),
) -> tuple[str, ...]:
    """A note naming the squashed outputs whose smoke-test SQNR is far above their logits': scores
    saturated on the samples hide their noise (hunt46 B1: a captcha digit's softmax 68.2 dB on 8 samples,
    its logits 37.9 dB, the softmax 33.4 dB held out; a VGG16 classifier's 51.1 dB, 32.3 dB held out);
    and those of `quiet` far below (Sigmoids with no logit above 0 on the samples, which writing's squashed
    warnings leave alone): scores near 0 on every sample (hq154 F2: a hand landmarker's hand flag on photos
    of no hand, -2.71 dB beside its logits' 23 dB, said without a word). squashed: (output, its logits);
    measured: the logits' noise on the samples (steady_outputs')."""
    pairs = [(o, lg) for o, lg in squashed if lg in measured.powers and np.isfinite(smoke.get(o, np.nan))]
    above: list[str] = []
    below: list[str] = []
    for output, logits in pairs:
        ratio = measured.powers[logits].relative()
        judged = sqnr_db(1.0, ratio) if ratio is not None else np.inf
        figure = f"{output!r} {smoke[output]:.1f} dB (its logits {judged:.1f} dB)"
        if smoke[output] > judged + SATURATED_GAP_DB:
            above.append(figure)
        elif smoke[output] < judged - SATURATED_GAP_DB and output in quiet:
            below.append(figure)
    notes = []
    if above:
        notes.append(
            f"smoke-test figures far above their logits': {_few(above)}: the scores are saturated on the "
            "samples, which hides their noise; on inputs with close calls they measure nearer their logits "
            "(quantkit compare on held-out images)"
        )
    if below:
        notes.append(
            f"smoke-test figures far below their logits': {_few(below)}: scores near 0 on every sample "
            "leave little to measure their noise against; their logits are what the search judged"
        )
    return tuple(notes)


def _few(found: list[str]) -> str:
    return ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")


def steady_outputs(
    converted: onnx.ModelProto, reference: Runs, samples: Feed, noise: OutputNoise | None = None
) -> tuple[str, ...]:
    """A warning for each measured tensor whose SQNR on the calibration samples hides what changes
    between them (evaluate.variation; hunt42 F4: logits all near -1000 written at 58.5 dB and 65.6 %
    top-1 agreement held out, no word), and for each output measured as itself with one kind of value
    far below the rest (figure_warnings.kind_hidden, as compare says it; hunt46 B5: a fingerprint
    model's local-maximum channel at -2.3 dB inside 12.6 dB pooled, said by compare only). noise: where
    given, each tensor's noise on the samples is added to it (the run is not made twice)."""
    tensors = list(reference[0]) if reference else []
    if not tensors:
        return ()
    variations = {t: Variation() for t in tensors}
    outputs = {o.name for o in converted.graph.output}
    errors = {t: OutputErrors(t) for t in tensors if t in outputs}
    kinds = {t: e for t, e in errors.items() if kinds_axis(reference[0][t].shape)}
    signs: dict[str, np.ndarray | None] = {t: None for t in tensors if t in outputs}  # sign_region's [C, 5]
    axes = channel_axes(converted, signs)
    session = Session.of(with_outputs(converted, tensors, typed=False))
    per_run = session.fixed_batch or 1  # the samples one run holds: an output without their axis is theirs
    for ref, got in zip(reference, session.iter_samples(samples), strict=True):
        for tensor, variation in variations.items():
            if ref[tensor].shape == got[tensor].shape and ref[tensor].dtype.kind == "f":
                variation.update(ref[tensor], got[tensor].astype(np.float64), per_run)
                if tensor in errors:
                    errors[tensor].update(ref[tensor], got[tensor], per_run)
                if tensor in signs:
                    counts = channel_signs(ref[tensor], got[tensor], axes.get(tensor))
                    signs[tensor] = add_signs(signs[tensor], counts)
                if noise is not None:
                    noise.update({tensor: ref[tensor]}, got)
    read_for = {n.input[0]: n.output[0] for n in converted.graph.node if n.input and n.output[0] in outputs}
    # the floors read these by how they move already (selection_lines)
    rows = feed_rows(samples)
    judged = {
        t
        for t in carried(converted, tensors)
        if centres(variations[t].images, rows, variations[t].moving() or 0.0, variations[t].power)
    }
    found = [
        steady_warning(
            t, v.pooled_db(), v.varying_db(), "the calibration samples", _named(t, outputs, read_for)
        )
        for t, v in variations.items()
        if t not in judged
    ]
    found += [kind_hidden(e.result(), " on the calibration samples") for e in kinds.values()]
    found += [noise_hidden(e.result(), samples=True) for e in errors.values()]
    where = "the calibration samples"
    found += [sign_region(t, counts, where) for t, counts in signs.items() if counts is not None]
    return tuple(w for w in found if w)


def _named(tensor: str, outputs: set[str], read_for: dict[str, str]) -> str:
    """'' for an output (steady_warning's own words), else what it is measured for (hunt46 C4: a warning
    called CenterFace's logits '536' an output)."""
    if tensor in outputs:
        return ""
    of = f"output {read_for[tensor]!r}, at " if tensor in read_for else ""
    return f"{of}tensor {tensor!r}"


def selection_lines(
    converted: onnx.ModelProto,
    ordered: dict[str, tuple[str, ...]],
    reference: Runs,
    samples: Feed,
    smoke: dict[str, float],
) -> tuple[str, ...]:
    """A note for each output a TopK / NonMaxSuppression / NonZero chose and ordered (`ordered`:
    query.selection_ordered): its smoke-test figure beside that of the tensors entering the selection,
    which the floors and the fallback judge."""
    notes = []
    present = {name for node in converted.graph.node for name in node.output}
    for output, tensors in ordered.items():
        if not set(tensors) <= present:  # --compact renamed them
            continue
        noise = output_noise(converted, tensors, feed_rows(samples))  # which it centred (hq101 F4)
        runs = [{t: r[t] for t in tensors} for r in reference]
        entering = fallback.output_sqnr(converted, runs, samples, noise=noise)
        rows = (
            f"row by row it measures {smoke[output]:.1f} dB against FP32 (noise reorders near-equal scores)"
            if output in smoke
            else "no row by row figure (on a sample, FP32 or the converted model kept no rows or others)"
        )
        moved = noise.centred_names()
        how = f" ({', '.join(map(repr, moved))} by how they move between the samples)" if moved else ""
        notes.append(
            f"output {output!r} is chosen and ordered by a TopK / NonMaxSuppression / NonZero: {rows}; the "
            f"{len(tensors)} tensor(s) entering the selection measure {entering:.1f} dB{how}, and those are "
            "what the floors and the fallback judge"
        )
    return tuple(notes)


# A Sigmoid map whose foreground (a logit above 0) shows on at most this share of the samples is judged on
# those few: hq97 F1, PP-OCRv4's text detector calibrated on photos, 1 of its 8 samples with text pixels
# (193), read 12.61 dB there (over --min-sqnr 12) and 4.30 dB on 50 held-out photos, 5 of 11 boxes kept
SPARSE_FOREGROUND = 0.25


def sparse_foreground(
    squashed: list[tuple[str, str]], sigmoids: set[str], reference: Runs
) -> tuple[str, ...]:
    """A warning for each Sigmoid output (of `squashed`: (output, its logits); `sigmoids`: those a Sigmoid
    makes) whose foreground shows on some of the samples, but on at most SPARSE_FOREGROUND of them: the
    floors, the fallback and the smoke test judge its foreground on those few. reference: FP32's runs."""
    lines = []
    for output, logits in squashed:
        if output not in sigmoids:
            continue
        shown = total = values = 0
        for run in reference:
            above = run[logits].reshape(len(run[logits]), -1) > 0.0
            shown += int(above.any(axis=1).sum())
            total += len(above)
            values += int(above.sum())
        if 0 < shown <= SPARSE_FOREGROUND * total:
            which = "that one" if shown == 1 else "those"
            lines.append(
                f"only {shown} of the {total} calibration samples show foreground on output {output!r} (a "
                f"logit above 0; {values:,} values in all): the floors, the fallback and the smoke test "
                f"judge its foreground on {which}; calibrate on images that show what the model finds "
                "(text, objects), or judge it on held-out images with quantkit compare"
            )
    return tuple(lines)
