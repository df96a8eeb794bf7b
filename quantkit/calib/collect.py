"""The calibration loop over one chunk of the data: one session over the augmented model, observers
updated per batch, each batch dropped after use."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from quantkit.calib.observers import Partial, TensorObserver
from quantkit.errors import CalibrationError
from quantkit.results import Feed, feed_rows
from quantkit.runtime import Session


def observe(
    session: Session,
    observed: dict[str, int | None],
    batches: Iterable[Feed],
    bins: int,
    progress: Callable[[int], None] | None = None,
    watch: Callable[[Feed, dict[str, np.ndarray]], None] | None = None,
) -> tuple[dict[str, Partial], int]:
    """Run every batch (float32 [N, ...], or {input name: [N, ...]}) and fold each observed output into
    its observer.

    observed: tensor name -> per-channel axis (None: no per-channel statistics). watch: called with each
    batch and all of the session's outputs for it, before they are dropped.
    Returns (partial statistics per tensor, number of samples seen). Memory is O(tensors x (bins +
    channels)).
    """
    observers = {name: TensorObserver(bins, axis) for name, axis in observed.items()}
    seen = 0
    for batch in batches:
        outputs = session.run_batch(batch)
        if watch is not None:
            watch(batch, outputs)
        for name, observer in observers.items():
            observer.update(outputs.pop(name))  # freed as soon as it is counted
        del outputs
        seen += feed_rows(batch)
        if progress is not None:
            progress(feed_rows(batch))
    return {name: o.partial() for name, o in observers.items()}, seen


def check_finite(partials: dict[str, Partial]) -> None:
    """Raise when the FP32 model produced NaN or Inf anywhere the calibration looked."""
    broken = sorted(name for name, p in partials.items() if p.nonfinite)
    if broken:
        raise CalibrationError(
            f"the FP32 model produced NaN or Inf in {len(broken)} tensor(s) (first: {broken[0]!r}) on the "
            "calibration images; check the preprocessing options and the model's weights"
        )
