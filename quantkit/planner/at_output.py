"""A model measured against FP32 at its outputs on the calibration table's samples: the reference, the
output SQNR (mean over the outputs, and the worst one's) and the memo that spares measuring a model
twice. The fallback (planner.fallback), the corrections' choices and convert's floor all read these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Hashable

import numpy as np
import onnx

from quantkit.errors import ConversionError, ModelError
from quantkit.evaluate.output_noise import READ_RANK, OutputNoise, add_signs, channel_signs, rare_positives
from quantkit.graph.augment import with_outputs
from quantkit.graph.carried import carried
from quantkit.graph.layouts import channel_axes
from quantkit.graph.query import foreground_views, measured_outputs, measured_tensors, squashed_by
from quantkit.planner.foreground import with_foreground
from quantkit.results import Feed, Runs, feed_rows
from quantkit.runtime import Session, fits_one_message
from quantkit.spill import SpilledRuns, spilled


def measured_reference(model: onnx.ModelProto, samples: Feed) -> Runs:
    """FP32's measured outputs (query.measured_outputs: logits for squashed outputs) on samples [K, ...],
    one dict per Session.run_samples batch: the reference output_sqnr compares against. A Sigmoid output
    that shows foreground on the samples (a logit above 0) is measured itself too, beside its logits
    (foreground_maps). Past spill.SPILL_BYTES in all, the runs are kept on disk (spill.spilled)."""
    measured = measured_outputs(model)
    logits = set(measured_tensors(measured))
    tensors = sorted(logits | set(squashed_by(model, measured, SIGMOID)))
    session = Session.of(with_outputs(model, tensors))
    ran = ({t: run[t] for t in tensors} for run in session.iter_samples(samples))
    runs = spilled(ran, session.run_count(samples))
    read = set(logits) | set(foreground_maps(model, runs))
    if isinstance(runs, SpilledRuns):
        return runs.only(read)
    return [{t: value for t, value in run.items() if t in read} for run in runs]


SIGMOID = ("Sigmoid",)


def foreground_maps(model: onnx.ModelProto, reference: Runs) -> tuple[str, ...]:
    """The Sigmoid outputs that INT8 is judged on beside their logits: those with foreground on the
    reference's runs (foreground.with_foreground). Their logits' power is the confident background: a
    PP-OCRv4 text detector at 640x640 measured 18.4 dB on its logits and 3.2 dB on its map, and lost
    half its text pixels and boxes on held-out photos; held to the map as well, 15.4 dB and 95 %. (A
    Softmax is judged by its logits alone: a classifier's top class is what its logits rank.)"""
    return with_foreground(model, measured_outputs(model), reference, SIGMOID)


class SqnrMemo:
    """Output SQNRs already measured, by what the measured model computes: a trial the search builds
    again (a finalist is a screened model; the floor's second search screens the same first round; the
    smoke test's floor check of the model chosen) is not run again. Scope one to a model, its reference
    and samples; `first(runs)` is the memo of the same models measured on the first runs only."""

    def __init__(self) -> None:
        self._found: dict[bytes, tuple[float, float]] = {}
        self._subsets: dict[int, SqnrMemo] = {}
        # by what builds the model (Trials.plan_key): the floor's second search asks for the first one's
        # sets again, and building each again to find it here cost YOLOX-Nano 16 of an 86 s convert
        self.planned: dict[Hashable, tuple[float, float]] = {}
        # the objects whose id() a `planned` key holds, alive as long as the memo: a model freed and
        # another allocated at its address would otherwise read the first one's scores
        self._pinned: dict[int, object] = {}

    def pin(self, *objects: object) -> None:
        """Keep `objects` alive while this memo is, so the id() of each names it alone in `planned`."""
        for obj in objects:
            self._pinned.setdefault(id(obj), obj)

    def get(
        self, model: onnx.ModelProto, measure: Callable[[onnx.ModelProto], tuple[float, float]]
    ) -> tuple[float, float]:
        """(the SQNR over the outputs, the worst output's) of `model`, measured once."""
        if not fits_one_message(model):
            return measure(model)
        key = _compute_digest(model)
        if key not in self._found:
            self._found[key] = measure(model)
        return self._found[key]

    def first(self, runs: int) -> SqnrMemo:
        return self._subsets.setdefault(runs, SqnrMemo())


def _compute_digest(model: onnx.ModelProto) -> bytes:
    """A digest of what decides a model's outputs: its graph, opsets and IR version, not its metadata
    (the model written is the one measured, stamped with provenance)."""
    digest = hashlib.blake2b(model.graph.SerializeToString(deterministic=True), digest_size=16)
    for opset in model.opset_import:
        digest.update(opset.SerializeToString(deterministic=True))
    digest.update(str(model.ir_version).encode())
    return digest.digest()


def output_sqnr(
    model: onnx.ModelProto,
    reference: Runs,
    samples: Feed,
    measured: SqnrMemo | None = None,
    threads: int = 0,
    noise: OutputNoise | None = None,
    worst: bool = False,
) -> float:
    """SQNR (dB) of `model`'s outputs against `reference` (measured_reference, or Session.run_samples),
    each output weighing alike (OutputNoise): the tensors the reference holds, read from `model` as extra
    outputs where they are not its outputs (untyped: a float16 model has them in float16). measured:
    models of this search measured already; threads: the session's (0: onnxruntime's choice); noise:
    where given, the model is run again and each output's noise added to it. worst: the SQNR of the
    output with the most noise for its signal instead (the INT8 floor's: an output at 15 dB lifted
    SLANet's token logits at 9.9 dB over the 10 dB floor in the mean), the mean where none has a signal."""
    both = output_sqnrs(model, reference, samples, measured, threads, noise)
    return both[1] if worst else both[0]


def output_noise(model: onnx.ModelProto, measured: Collection[str], rows: int | None = None) -> OutputNoise:
    """An OutputNoise for the `measured` tensors of `model`: a Sigmoid map beside its logits counts as one
    (query.foreground_views), a rank-4 map is read along the channel axis its graph lays out
    (graph.layouts.channel_axes), the boxes a selection carries by how they move (graph.carried) where
    the samples are `rows` (those with a row per sample: OutputNoise)."""
    views, axes = foreground_views(model, measured), channel_axes(model, measured)
    centred = carried(model, measured) if rows else frozenset()
    return OutputNoise(views=views, axes=axes, centred=centred, rows=rows)


def worst_output(
    model: onnx.ModelProto, original: onnx.ModelProto, reference: Runs, samples: Feed
) -> tuple[str, float] | None:
    """(the output of `model` with the most noise for its signal, named as `original`'s graph (shape-
    inferred FP32) measures it, its SQNR dB) on the samples, as output_sqnr measures it: a squashed
    output by its logits, "'p' (at tensor 'logits')". None without an output that has a signal. Runs
    `model` once, unmemoized."""
    noise = output_noise(original, list(reference[0]) if reference else (), feed_rows(samples))
    output_sqnrs(model, reference, samples, noise=noise)
    found = noise.worst()
    if found is None:
        return None
    tensor, db = found
    measured = measured_outputs(original).items()
    named = [out for out, tensors in measured if tensor in tensors and out != tensor]
    return (f"{named[0]!r} (at tensor {tensor!r})" if named else repr(tensor)), db


def output_sqnrs(
    model: onnx.ModelProto,
    reference: Runs,
    samples: Feed,
    measured: SqnrMemo | None = None,
    threads: int = 0,
    noise: OutputNoise | None = None,
) -> tuple[float, float]:
    """output_sqnr's (mean, worst) of `model`, both from one measurement."""
    augmented = with_outputs(model, list(reference[0]) if reference else [], typed=False)

    def measure(augmented: onnx.ModelProto) -> tuple[float, float]:
        names = list(reference[0]) if reference else []
        found = output_noise(model, names, feed_rows(samples)) if noise is None else noise
        try:
            for got, ref in zip(Session.of(augmented, threads).iter_samples(samples), reference, strict=True):
                found.update(ref, got)
        except ModelError as exc:  # FP32 ran on these samples: onnxruntime fails on the converted form
            failed = str(exc).replace("the model", "a converted form of the model", 1)
            raise ConversionError(
                f"{failed}, where the FP32 model runs: onnxruntime fails on this rewrite of it; nothing "
                "was written. Keep the layers around what it names float (--exclude-op-types, "
                "--exclude-nodes) or try another placement (--target)"
            ) from exc
        lowest = found.worst()
        return found.sqnr_db, found.sqnr_db if lowest is None else min(lowest[1], found.sqnr_db)

    return measure(augmented) if measured is None or noise is not None else measured.get(augmented, measure)


def judged_by_mean(
    model: onnx.ModelProto,
    original: onnx.ModelProto,
    reference: Runs,
    samples: Feed,
    measured: SqnrMemo,
    target_db: float,
) -> tuple[str, ...]:
    """The note where --min-sqnr's target_db, judged on the mean over the outputs, holds for `model`
    (the one written, as it runs) while one output measures below it on the samples. The mean of each
    output's relative noise sits up to 10*log10(outputs) dB above its worst: hunt46 B4, a face
    detector's heatmap and offsets at 22.4 dB held out under --min-sqnr 25, read as met (mean 31.2 dB)."""
    if not target_db:
        return ()
    mean_db, worst_db = output_sqnrs(model, reference, samples, measured)
    found = worst_output(model, original, reference, samples) if mean_db >= target_db > worst_db else None
    if found is None:
        return ()
    name, db = found
    return (
        f"--min-sqnr {target_db:g} judges the mean over the outputs ({mean_db:.2f} dB on the calibration "
        f"samples); output {name} measures {db:.2f} dB there (convert's floor judges each output): raise "
        "--min-sqnr to lift it too, or keep the layers before it float with --exclude-nodes",
    )


def sigmoid_read(reference: Runs, kept: bool) -> tuple[str, ...]:
    """The note where the fallback kept layers float (`kept`) and an output holds rare events' logits on
    the reference's runs (output_noise.rare_positives): where INT8 moved its values above 0, every
    search judged it as a sigmoid reads it (OutputNoise), so the --min-sqnr line's figures are that
    reading's, and the smoke test's its logits' (LORE's heat map: -3.4 dB at the start against 15.6)."""
    if not kept or not reference:
        return ()
    counts: dict[str, np.ndarray] = {}  # output_noise.channel_signs, summed over the runs
    for run in reference:
        for name, value in run.items():
            if value.ndim >= READ_RANK and value.dtype.kind == "f":
                counts[name] = add_signs(counts.get(name), channel_signs(value, value))
    pooled = {name: [int(v) for v in found.sum(axis=0)[:3]] for name, found in sorted(counts.items())}
    return tuple(
        f"output {name!r} holds rare events' logits ({positive} of its {total} values above 0 in FP32 on "
        "the calibration samples): where INT8 moved its values above 0, the fallback judged it as a "
        "sigmoid in post-processing reads it, so the --min-sqnr line's figures are that reading's; the "
        "smoke test's are its logits'"
        for name, (total, negative, positive) in pooled.items()
        if rare_positives(total, negative, positive)
    )
