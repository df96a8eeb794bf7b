"""What the speed-aware plan measured, kept per machine, so that the same inputs give the same bytes.

The speed-aware plan (pipeline.speed_refine) and the check that keeps a slower model float decide by
timing, and timing on a shared CPU moves from run to run: converting MobileNetV2 four times with the
same table wrote three different models, SqueezeNet 1.1 four. A decision once measured is therefore
kept, like TensorRT's timing cache: keyed by everything it depends on but the timing (the INT8
candidate's bytes, the calibration samples it is timed and scored on, this CPU and its flags,
onnxruntime's and quantkit's versions), and read back instead of timing again. The same convert on
the same kind of machine then writes the same bytes; another CPU measures for itself. `--prefer
accuracy` decides nothing by timing and needs none of this.

Where: $QUANTKIT_SPEED_CACHE (a folder; `off` keeps nothing and measures every time), else
$XDG_CACHE_HOME/quantkit/speed, else ~/.cache/quantkit/speed. A record that cannot be read or no longer
fits the model is measured again and replaced; a folder that cannot be written is not an error (the
decision is measured, used and not kept).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import onnx

from quantkit.config import Prefer
from quantkit.cpu import cpu_info
from quantkit.errors import ConfigError, OutputError
from quantkit.evaluate import speed
from quantkit.files import cache_home, write_atomic
from quantkit.outcomes import Speed, SpeedPlan
from quantkit.pipeline import speed_refine
from quantkit.pipeline.speed_refine import INPUTS, REASON, Accuracy, Build, Holds, Placed, Refined
from quantkit.planner import fallback
from quantkit.results import CalibrationTable, Feed, QuantPlan, Runs
from quantkit.runtime import fits_one_message, versions

log = logging.getLogger(__name__)

ENV = "QUANTKIT_SPEED_CACHE"
OFF = "off"
# Of the records and of the rules that made them (2: the inputs-only candidate and the FP32-size rule;
# 3: the tie band that widens with the accuracy gained; 4: the default keeps a slower model float, and
# --prefer speed does so below 1.0x): a record is never read by another version.
VERSION = 4


def folder() -> Path | None:
    """Where decisions are kept; None: $QUANTKIT_SPEED_CACHE=off."""
    chosen = os.environ.get(ENV)
    if chosen is not None:  # '~/qk' as CI's env: passes it made a folder named '~' (hq107 F7)
        if chosen.strip().lower() in (OFF, ""):
            return None
        try:
            return Path(chosen).expanduser().absolute()
        except (RuntimeError, KeyError):  # hq108 F4: '~nosuchuser/qk' was an internal error
            raise ConfigError(
                f"{ENV}={chosen} names the home folder of a user this machine does not know; give a "
                f"path, or '{OFF}'"
            ) from None
    home = cache_home()
    return None if home is None else home / "quantkit" / "speed"  # no home folder: nothing kept


@dataclass(frozen=True)
class Memory:
    """The records of one INT8 candidate on this machine: `where`/<key>.<what>.json."""

    where: Path
    key: str

    @classmethod
    def of(cls, candidate: onnx.ModelProto, samples: Feed) -> Memory | None:
        """The memory of `candidate` timed and scored on `samples`; None where keeping is off."""
        where = folder()
        return None if where is None else cls(where, key(candidate, samples))

    def path(self, what: str) -> Path:
        return self.where / f"{self.key}.{what}.json"

    def recall(self, what: str) -> dict[str, Any] | None:
        """The kept record, or None (none kept, unreadable, another version)."""
        try:
            record = json.loads(self.path(what).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("version") == VERSION else None

    def keep(self, what: str, record: dict[str, Any]) -> None:
        """Keep a decision with its provenance; a folder that cannot be written only logs."""
        stamped = {
            "version": VERSION,
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **provenance(),
            **record,
        }
        try:
            self.where.mkdir(parents=True, exist_ok=True)
            text = json.dumps(stamped, indent=1, sort_keys=True) + "\n"
            write_atomic(self.path(what), text.encode(), cache=True)
        except (OSError, OutputError) as exc:
            log.info("the speed-aware plan's measurement was not kept in %s: %s", self.where, exc)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            _unkept().setdefault(str(self.where), why)


# the folders a decision could not be kept in, and why, per thread: a convert runs in one, and one in
# another thread neither says nor clears its warning (hq159 F1: an untimed convert said another's)
_RUN = threading.local()


def _unkept() -> dict[str, str]:
    found: dict[str, str] | None = getattr(_RUN, "unkept", None)
    if found is None:
        found = _RUN.unkept = {}
    return found


def start_run() -> None:
    """A convert starts in this thread: what an earlier one could not keep is not its to say."""
    _unkept().clear()


def unkept_warning() -> str | None:
    """The warning where a timed decision of this thread's convert could not be kept (hq100 F10: a
    read-only cache folder, and the same inputs wrote other bytes in 3 of 6 runs with no word)."""
    unkept = _unkept()
    if not unkept:
        return None
    where, why = next(iter(unkept.items()))
    return (
        f"the speed-aware plan's timing could not be kept in {where} ({why}): another run times it "
        f"again and may keep other ops float, so the same inputs may give other bytes; set {ENV} to a "
        f"writable folder ({ENV}=off times every run)"
    )


def provenance() -> dict[str, Any]:
    return {"machine": cpu_info(), "versions": versions()}


def key(candidate: onnx.ModelProto, samples: Feed) -> str:
    """sha256 of what a timed decision depends on but the timing itself: the candidate's bytes, the
    samples (float32 arrays, by input name where several), this machine and the versions."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": VERSION, **provenance()}, sort_keys=True).encode())
    digest.update(candidate.SerializeToString(deterministic=True))
    arrays = samples if isinstance(samples, dict) else {"": samples}
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


PLAN = "plan"
PREFER = "prefer"  # + the preference: its verdict on the written model (the thresholds differ)


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
    """speed_refine.refine (same arguments), or the plan it kept for this candidate before, rebuilt with
    build(ops kept float) or inputs_only() and nothing timed (convert checks that one: below_floor)."""
    args = (prepared, table, plan, candidate, samples, build, accuracy, inputs_only, holds)
    if not fits_one_message(candidate) or not plan.quantized_nodes:  # nothing is timed for these
        return speed_refine.refine(*args)
    memory = Memory.of(candidate, samples)
    nodes = {node.name for node in prepared.graph.node}
    placements = (None, INPUTS) if inputs_only is not None else (None,)
    kept = None if memory is None else _recalled_plan(memory.recall(PLAN), nodes, placements)
    if kept is not None and memory is not None:
        report = dataclasses.replace(kept, recalled=str(memory.path(PLAN))) if kept else None
        if report is None or report.refined_speedup is None:
            return Refined(plan, candidate, report)
        if report.placement == INPUTS and inputs_only is not None:  # placements allows it only then
            return Refined(*inputs_only(), report)
        again, model = build(dict.fromkeys(report.floated, REASON))
        return Refined(again, model, report)
    refined = speed_refine.refine(*args)
    if memory is not None:
        memory.keep(PLAN, {"report": None if refined.report is None else asdict(refined.report)})
    return refined


def _recalled_plan(
    record: dict[str, Any] | None, nodes: set[str], placements: tuple[str | None, ...] = (None, INPUTS)
) -> SpeedPlan | Literal[False] | None:
    """The kept report, False where the plan kept none (nothing was worth timing), None where nothing
    usable was kept (none, malformed, naming an op `nodes` lacks, or a placement this caller cannot build:
    rebuilding an inputs-only plan as a plan with no op floated would write a different model)."""
    if record is None or "report" not in record:
        return None
    report = record["report"]
    if report is None:
        return False
    try:
        sqnr, refined = report["sqnr_db"], report["refined_speedup"]
        plan = SpeedPlan(
            tuple(str(n) for n in report["floated"]),
            float(report["plain_speedup"]),
            None if refined is None else float(refined),
            None if sqnr is None else (float(sqnr[0]), float(sqnr[1])),
            placement=report.get("placement"),
        )
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return plan if set(plan.floated) <= nodes and plan.placement in placements else None


def too_slow(
    first: Speed | None,
    prefer: Prefer,
    fp32: onnx.ModelProto,
    written: onnx.ModelProto,
    samples: Feed,
    plan: SpeedPlan | None = None,
) -> tuple[Speed | None, Speed | None]:
    """evaluate.speed.too_slow of the written INT8 model against fp32, first measured as `first` (None:
    not measured, nothing is slow): (the slow measurement or None, the one to report). plan: the
    speed-aware plan, whose profiled speedup doubts a first measurement that ties. Where the preference
    times again, the decision kept for the written model (its bytes, the samples, this machine, the
    preference) before, or measured and kept."""
    if first is None:
        return None, None
    again = functools.partial(speed.measure, fp32, written, samples)
    expected = None if plan is None else plan.refined_speedup or plan.plain_speedup
    if speed.KEEP_FLOAT_BELOW[prefer] is None:
        return speed.too_slow(first, prefer, again)
    memory = Memory.of(written, samples) if fits_one_message(written) else None
    what = f"{PREFER}-{prefer.value}"
    kept = None if memory is None else _recalled_speed(memory.recall(what))
    if kept is not None:
        return kept[0], first
    measured, reported = speed.too_slow(first, prefer, again, expected)
    if memory is not None:
        memory.keep(what, {"slow": None if measured is None else asdict(measured)})
    return measured, reported


def _recalled_speed(record: dict[str, Any] | None) -> tuple[Speed | None] | None:
    """(the kept slow measurement, or None where int8 stood), or None where nothing usable was kept."""
    if record is None or "slow" not in record:
        return None
    slow = record["slow"]
    if slow is None:
        return (None,)
    try:
        fields = (
            float(slow["speedup"]),
            int(slow["rounds"]),
            float(slow["fp32_ms"]),
            float(slow["candidate_ms"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return (Speed(*fields),)


def below_floor(
    faster: onnx.ModelProto,
    plain: onnx.ModelProto,
    floor_db: float,
    reference: Runs,
    samples: Feed,
    memo: fallback.SqnrMemo,
) -> tuple[str, ...]:
    """A note where the speed-aware plan's model (faster) puts an output below the floor that the plain
    plan's keeps, () otherwise: PP-OCRv4's detector, its map held at 10 dB by 27 float layers, was refused
    at 8.5 dB after the faster plan floated 42 more ops around them."""
    if faster is plain:
        return ()
    worst = fallback.output_sqnr(faster, reference, samples, memo, worst=True)
    if worst >= floor_db or fallback.output_sqnr(plain, reference, samples, memo, worst=True) < floor_db:
        return ()
    return (
        f"speed on this CPU: the plan with the ops that profiled slower float measured {worst:.1f} dB on its "
        f"worst output, below the {floor_db:g} dB floor the plan above keeps: that plan stands",
    )
