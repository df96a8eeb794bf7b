"""The calibration loop over one chunk of the data: one session over the augmented model, observers
updated per batch, each batch dropped after use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from quantkit.calib.observers import Partial, TensorObserver
from quantkit.errors import CalibrationError, ModelError
from quantkit.heap import HeapWatch
from quantkit.results import Feed, feed_rows, feed_take
from quantkit.runtime import Session

# The outputs of one run (every observed tensor, float32) stay under this: a batch whose outputs would
# be larger runs in parts. SqueezeNet's 66 observed tensors hold 28 MB per image: 228 MB for a batch of
# 8, kept twice by onnxruntime's buffers, was most of calibrate's memory.
RUN_BYTES = 64 << 20
# ... and where one sample's observed tensors pass this, they are observed in groups that fit it, each by a
# session whose model outputs that group only, all run on every part (onnxruntime computes and holds every
# graph output of a run, whichever are fetched): LEADER's document model (tf2onnx, GELU blocks at
# 160x160x256) holds 2.3 GB of observed tensors a sample at 320x320, and calibrate peaked at 3.4 GB where
# one FP32 run takes 0.3 GB.
GROUP_BYTES = 512 << 20


def fetch_groups(
    sizes: dict[str, int | None], budget: int | None = None
) -> tuple[tuple[str, ...], ...] | None:
    """The tensors of `sizes` (name -> bytes a sample) in groups of at most `budget` bytes a sample (a
    larger tensor alone), in their order; None where one group holds them all. A size not known (None)
    counts as the largest known one; with none known, None. budget None: GROUP_BYTES."""
    budget = GROUP_BYTES if budget is None else budget
    known = [s for s in sizes.values() if s is not None]
    guess = max(known, default=0)
    if not known or sum(guess if s is None else s for s in sizes.values()) <= budget:
        return None
    groups: list[list[str]] = [[]]
    held = 0
    for name, known_size in sizes.items():
        size = guess if known_size is None else known_size
        if groups[-1] and held + size > budget:
            groups.append([])
            held = 0
        groups[-1].append(name)
        held += size
    return tuple(tuple(group) for group in groups)


def rows_per_run(per_sample: int | None, batch: int) -> int | None:
    """Samples per run: the batch, or fewer when their outputs would pass RUN_BYTES (at least 1); None
    where per_sample is not known (observe then measures it on a first run of one sample)."""
    if not per_sample:
        return None
    return max(1, min(batch, RUN_BYTES // per_sample))


def observe(
    session: Session | Sequence[Session],
    observed: dict[str, int | None],
    batches: Iterable[Feed],
    bins: int,
    progress: Callable[[int], None] | None = None,
    watch: Callable[[Feed, dict[str, np.ndarray]], None] | None = None,
    run_rows: int | None = None,
    groups: Sequence[Sequence[str]] | None = None,
) -> tuple[dict[str, Partial], int]:
    """Run every batch (float32 [N, ...], or {input name: [N, ...]}) and fold each observed output into
    its observer.

    observed: tensor name -> per-channel axis (None: no per-channel statistics). watch: called with each
    batch and all of the session's outputs for it, before they are dropped. run_rows: run each batch in
    parts of at most this many samples (rows_per_run; None: as many as fit RUN_BYTES by the outputs of a
    first run of one sample; a model that fixes its batch runs it whole). session: one session that
    outputs every observed tensor, or one per group of `groups` (fetch_groups), each outputting its group
    and the model's outputs, run in turn on each part (the first one's outputs go to `watch`): the same
    statistics. Returns (partial statistics per tensor, number of samples seen). Memory is O(tensors x
    (bins + channels)).
    """
    observers = {name: TensorObserver(bins, axis) for name, axis in observed.items()}
    sessions = [session] if isinstance(session, Session) else list(session)
    owned = [tuple(observers)] if groups is None else [tuple(group) for group in groups]
    if len(owned) != len(sessions):
        raise ValueError("one session per group of observed tensors")
    seen = 0
    limit = run_rows
    heap = HeapWatch()
    session = sessions[0]
    for batch in batches:
        rows = feed_rows(batch)
        start = 0
        while start < rows:
            step = rows if session.fixed_batch else limit or 1
            part = batch if start == 0 and step >= rows else feed_take(batch, start, start + step)
            images = feed_rows(part)
            for k, (runner, names) in enumerate(zip(sessions, owned, strict=True)):
                try:
                    outputs = runner.run_batch(part)
                except ModelError:
                    if k or images == 1 or session.fixed_batch:
                        raise
                    # a batch axis the model names but cannot take (hunt30: khmersm's Reshape bakes in
                    # batch 1; 8 stacked samples failed): one sample a run from here, the same statistics
                    limit = 1
                    break
                if limit is None and not session.fixed_batch:
                    # shapes unknown before running (a dynamic Resize): a 640x640 text detector's 237
                    # observed tensors hold 469 MB a sample, and a batch of 8 of them peaked at 4.7 GB
                    limit = rows_per_run(sum(outputs[n].nbytes for n in observers) // images or 1, rows)
                if watch is not None and k == 0:
                    watch(part, outputs)
                for name in names:
                    observers[name].update(outputs.pop(name), images)  # freed as soon as it is counted
                del outputs
            else:
                heap.check()
                start += images
        seen += rows
        if progress is not None:
            progress(rows)
    return {name: o.partial() for name, o in observers.items()}, seen


def check_finite(
    partials: dict[str, Partial],
    outputs: Iterable[str],
    masked: frozenset[str] = frozenset(),
    seen: frozenset[str] = frozenset(),
    inputs: Iterable[str] = (),
) -> tuple[str, ...]:
    """Raise when the FP32 model produced NaN or Inf in an output on the calibration images, but for the
    `masked` outputs, whose infinities stand at the same places on every image (class logits masked with
    -inf: evaluate.sanity.ReferenceCheck.fixed_infinities). seen: outputs the reference check saw
    non-finite, observed or not (ReferenceCheck.nonfinite_outputs). Inside the model they can be by
    design (an attention mask's -inf before a Softmax: azcrawlerpy's tesseranet). Either way the table
    records them, convert keeps those tensors float, and the notes returned say so. inputs: the model's
    fed inputs, named where their arrays hold an infinity (taken as an additive mask) that reached it."""
    broken = sorted({name for name, p in partials.items() if p.nonfinite} | seen)
    final = sorted(set(broken) & set(outputs) - masked)
    kept = sorted(set(broken) & masked)
    notes = tuple(
        f"output {name!r} holds an infinity at the same places on every image (a mask by design): its "
        "finite values are measured and convert keeps it float"
        for name in kept
    )
    broken = sorted(set(broken) - set(outputs))
    fed = [name for name in inputs if name in partials and partials[name].nonfinite]
    if final and fed:  # hq160 F4: named neither the arrays' Inf nor the input
        raise CalibrationError(
            f"the FP32 model produced NaN or Inf in output {final[0]!r} where the arrays fed to {fed[0]!r} "
            "hold Inf, which reached it (a mask hiding every position a Softmax reads gives NaN): give the "
            "mask a large finite value such as -1e9, or feed finite values"
        )
    if final:
        raise CalibrationError(
            f"the FP32 model produced NaN or Inf in {len(final)} output(s) (first: {final[0]!r}) on the "
            "calibration samples; check the preprocessing options (or the arrays fed) and the model's weights"
        )
    if not broken:
        return notes
    return (
        *notes,
        f"{len(broken)} tensor(s) inside the model hold NaN or Inf on the calibration images "
        f"(first: {broken[0]!r}; an attention mask's -inf does this): convert keeps them float",
    )
