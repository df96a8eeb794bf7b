"""The converted model's speed against its FP32 original, measured where it was made.

The plan's payoff rule (planner.payoff) is a model of onnxruntime's kernels; this is the measurement
that checks it. Both models run one thread, without spinning, one run each per round in a shuffled order
(runtime.round_orders) on the same calibration sample, so that a load change on a shared machine hits
both alike; the speedup is the median over rounds of FP32's time over the candidate's. It is reported,
never written into the model. Before it, the default (--prefer balanced) has already kept float the ops
whose int8 form profiled slower here (pipeline.speed_refine). An INT8 model still measured slower than
FP32 twice (below KEEP_FLOAT_BELOW: 0.97x by default, 1.0x under --prefer speed) is not the output: the
model stays float. Both make the bytes depend on this machine's timing; --prefer accuracy decides
nothing by it (the model it writes is measured once, for the summary and its warning).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx

from quantkit.config import Prefer
from quantkit.outcomes import SLOWER_BELOW, LatencyStats, Speed
from quantkit.results import Feed, feed_pad, feed_rows, feed_take
from quantkit.runtime import Session, interleaved_latency

MIN_ROUNDS = 5
WARMUP = 2
# Below this speedup, measured twice, int8 is not worth writing under each preference (None: never). The
# default writes no model slower than FP32 (outside the timing noise): PP-LCNet's 1 ms text-line
# classifier measured 0.92-0.95x with 130 ops float and was written int8 and slower; --prefer speed takes
# int8 only where it measured at least as fast.
KEEP_FLOAT_BELOW = {Prefer.balanced: SLOWER_BELOW, Prefer.speed: 1.0, Prefer.accuracy: None}


def interleaved_rounds(sessions: list[Session], batch: Feed, runs: int, seconds: float) -> np.ndarray:
    """ms [rounds, models] (runtime.interleaved_latency): at least MIN_ROUNDS, at most `runs`, no new
    round after `seconds`."""
    times = interleaved_latency(sessions, batch, WARMUP, runs, seconds=seconds, min_runs=MIN_ROUNDS)
    return np.stack(times, axis=1)


def speedups(times: np.ndarray) -> list[float]:
    """times: ms [rounds, models], FP32 first -> per candidate, the median of FP32 / candidate per round."""
    return [float(np.median(times[:, 0] / times[:, k])) for k in range(1, times.shape[1])]


def measure(
    fp32: onnx.ModelProto, candidate: onnx.ModelProto, samples: Feed, runs: int = 40, seconds: float = 2.0
) -> Speed:
    """The candidate against FP32 on the first of samples [K, ...] (padded to a fixed batch). A slow model
    stops at `seconds` (PP-OCRv4's text detector at 640x640: 14 rounds of 145 ms; 3 s gave 21 rounds
    and the same speedup within 2 %, for a tenth of its convert)."""
    sessions = [Session.of(model, threads=1, spin=False) for model in (fp32, candidate)]
    times = interleaved_rounds(sessions, timing_batch(samples, sessions[0].fixed_batch), runs, seconds)
    return Speed(
        speedups(times)[0], int(times.shape[0]), float(np.median(times[:, 0])), float(np.median(times[:, 1]))
    )


def timing_batch(samples: Feed, fixed_batch: int | None) -> Feed:
    """What a model is timed on: the first of samples [K, ...], padded to the batch the model fixes."""
    batch = feed_take(samples, 0, 1)
    if fixed_batch is not None and feed_rows(batch) < fixed_batch:
        batch = feed_pad(batch, fixed_batch)
    return batch


def too_slow(
    first: Speed, prefer: Prefer, again: Callable[[], Speed], expected: float | None = None
) -> tuple[Speed | None, Speed]:
    """(the slower of two measurements when both are below the preference's threshold, else None: the
    INT8 model stands; the measurement to report). The second is taken only when the first is below the
    threshold, or ties FP32 (below 1.0) where the plan's own profile (`expected`, its speedup) put it below
    (hq63a F1: an EfficientFormerV2 profiled at 0.96x measured 0.99x once and was written int8, then 0.94x to
    0.96x in every later timing); where the second is not below, it is the one reported."""
    limit = KEEP_FLOAT_BELOW[prefer]
    if limit is None:
        return None, first
    doubted = expected is not None and expected < limit and first.speedup < 1.0
    if first.speedup >= limit and not doubted:
        return None, first
    second = again()
    if second.speedup >= limit:
        return None, second
    return min(first, second, key=lambda s: s.speedup), second


def latency_stats(samples_ms: np.ndarray) -> LatencyStats:
    """samples_ms: float [runs]."""
    p50, p90, p99 = np.percentile(samples_ms, [50, 90, 99])
    return LatencyStats(float(p50), float(p90), float(p99), float(np.mean(samples_ms)), int(samples_ms.size))


# The median of per-run ratios (robust to a busy CPU) and the ratio of the medians differ by more than this
# share where the timings scattered: hunt41 saw '0.99x FP32 (4.61 -> 5.94 ms)' on a loaded machine
SCATTER = 0.10


SCATTER_MIN_RUNS = 2  # timed runs a scatter is judged on (fewer than FEW_RUNS: few_runs says so too)


def paired_speedup(samples: Sequence[Sequence[float]]) -> float | None:
    """The median of the interleaved runs' own ratios, reference / candidate, from (reference, candidate)
    ms run by run; None with fewer than SCATTER_MIN_RUNS runs or a time not above 0."""
    if len(samples) != 2 or min(len(samples[0]), len(samples[1])) < SCATTER_MIN_RUNS:
        return None
    reference, candidate = (np.asarray(s, np.float64) for s in samples)
    if not (candidate > 0).all() or float(np.median(candidate)) <= 0:
        return None
    return float(np.median(reference / candidate))


def scattered(of_runs: float, of_medians: float) -> tuple[bool, bool]:
    """(whether two speedups of one timing, the median of the interleaved runs' ratios and the ratio of
    the medians, disagree beyond SCATTER or straddle "faster than FP32"; whether they straddle it)."""
    # hunt48 C5: "1.03x FP32 (15.30 -> 16.44 ms)": one figure a gain, the other a slowdown beyond ties
    straddle = max(of_medians, of_runs) >= 1.0 and min(of_medians, of_runs) < SLOWER_BELOW
    return abs(of_medians - of_runs) > SCATTER * of_runs or straddle, straddle
