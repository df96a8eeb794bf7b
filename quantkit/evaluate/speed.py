"""The converted model's speed against its FP32 original, measured where it was made.

The plan's payoff rule (planner.payoff) is a model of onnxruntime's kernels; this is the measurement
that checks it. Both models run one thread, without spinning, one run each per round in alternating
order on the same calibration sample, so that a load change on a shared machine hits both alike; the
speedup is the median over rounds of FP32's time over the candidate's. It is reported, never written
into the model: the converted bytes do not depend on timing.
"""

from __future__ import annotations

import time

import numpy as np
import onnx

from quantkit.outcomes import Speed
from quantkit.results import Feed, feed_pad, feed_rows, feed_take
from quantkit.runtime import Session

MIN_ROUNDS = 5
WARMUP = 2


def interleaved_rounds(sessions: list[Session], batch: Feed, runs: int, seconds: float) -> np.ndarray:
    """ms [rounds, models]: one run of each model per round, the order alternating; at least MIN_ROUNDS,
    at most `runs`, no new round after `seconds`."""
    for _ in range(WARMUP):
        for session in sessions:
            session.timed(batch)
    rows: list[list[float]] = []
    deadline = time.monotonic() + seconds
    while len(rows) < runs and (len(rows) < MIN_ROUNDS or time.monotonic() < deadline):
        order = list(range(len(sessions)))
        if len(rows) % 2:
            order.reverse()
        row = [0.0] * len(sessions)
        for k in order:
            row[k] = sessions[k].timed(batch)
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def speedups(times: np.ndarray) -> list[float]:
    """times: ms [rounds, models], FP32 first -> per candidate, the median of FP32 / candidate per round."""
    return [float(np.median(times[:, 0] / times[:, k])) for k in range(1, times.shape[1])]


def measure(
    fp32: onnx.ModelProto, candidate: onnx.ModelProto, samples: Feed, runs: int = 40, seconds: float = 3.0
) -> Speed:
    """The candidate against FP32 on the first of samples [K, ...] (padded to a fixed batch)."""
    sessions = [Session.of(model, threads=1, spin=False) for model in (fp32, candidate)]
    batch = feed_take(samples, 0, 1)
    size = sessions[0].fixed_batch
    if size is not None and feed_rows(batch) < size:
        batch = feed_pad(batch, size)
    times = interleaved_rounds(sessions, batch, runs, seconds)
    return Speed(
        speedups(times)[0], int(times.shape[0]), float(np.median(times[:, 0])), float(np.median(times[:, 1]))
    )
