"""The calibration loop over one chunk of the data: one session over the augmented model, observers
updated per batch, each batch dropped after use."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from quantkit.calib.observers import Partial, TensorObserver
from quantkit.errors import CalibrationError
from quantkit.results import Feed, feed_rows, feed_take
from quantkit.runtime import Session

# The outputs of one run (every observed tensor, float32) stay under this: a batch whose outputs would
# be larger runs in parts. SqueezeNet's 66 observed tensors hold 28 MB per image: 228 MB for a batch of
# 8, kept twice by onnxruntime's buffers, was most of calibrate's memory.
RUN_BYTES = 64 << 20


def rows_per_run(per_sample: int | None, batch: int) -> int:
    """Samples per run: the batch, or fewer when their outputs would pass RUN_BYTES (at least 1)."""
    if not per_sample:
        return batch
    return max(1, min(batch, RUN_BYTES // per_sample))


def observe(
    session: Session,
    observed: dict[str, int | None],
    batches: Iterable[Feed],
    bins: int,
    progress: Callable[[int], None] | None = None,
    watch: Callable[[Feed, dict[str, np.ndarray]], None] | None = None,
    run_rows: int | None = None,
) -> tuple[dict[str, Partial], int]:
    """Run every batch (float32 [N, ...], or {input name: [N, ...]}) and fold each observed output into
    its observer.

    observed: tensor name -> per-channel axis (None: no per-channel statistics). watch: called with each
    batch and all of the session's outputs for it, before they are dropped. run_rows: run each batch in
    parts of at most this many samples (rows_per_run; a model that fixes its batch runs it whole).
    Returns (partial statistics per tensor, number of samples seen). Memory is O(tensors x (bins +
    channels)).
    """
    observers = {name: TensorObserver(bins, axis) for name, axis in observed.items()}
    seen = 0
    for batch in batches:
        rows = feed_rows(batch)
        step = rows if session.fixed_batch or not run_rows else run_rows
        for start in range(0, rows, step):
            part = feed_take(batch, start, start + step) if step < rows else batch
            outputs = session.run_batch(part)
            if watch is not None:
                watch(part, outputs)
            images = feed_rows(part)
            for name, observer in observers.items():
                observer.update(outputs.pop(name), images)  # freed as soon as it is counted
            del outputs
        seen += rows
        if progress is not None:
            progress(rows)
    return {name: o.partial() for name, o in observers.items()}, seen


def check_finite(partials: dict[str, Partial]) -> None:
    """Raise when the FP32 model produced NaN or Inf anywhere the calibration looked."""
    broken = sorted(name for name, p in partials.items() if p.nonfinite)
    if broken:
        raise CalibrationError(
            f"the FP32 model produced NaN or Inf in {len(broken)} tensor(s) (first: {broken[0]!r}) on the "
            "calibration images; check the preprocessing options and the model's weights"
        )
