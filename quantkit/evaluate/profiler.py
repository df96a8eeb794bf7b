"""onnxruntime's profiler: per-kernel times of a model on one batch (one thread, as evaluate.speed times
whole models), which evaluate.op_times attributes to the nodes of the plan."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit.results import Feed
from quantkit.room import short_of_room
from quantkit.runtime import Session, round_orders
from quantkit.scratch import held


@dataclass(frozen=True)
class KernelTime:
    """One node of onnxruntime's optimized graph, as its profiler timed it: median microseconds per run
    and the elements of its first output."""

    name: str
    op_type: str
    us: float
    out_elements: int


def side_by_side(
    models: Sequence[onnx.ModelProto],
    batch: Feed,
    runs: int,
    seconds: float | None = None,
    min_runs: int = 3,
) -> list[list[KernelTime]]:
    """Per-kernel times of each model on `batch` (one thread, no spinning, every optimization on, as
    evaluate.speed times whole models), from onnxruntime's profiler: each kernel's median over `runs`
    runs, or fewer (min_runs at least) once `seconds` have passed for all of them together; the first
    run's allocations drop out of the median. In the order the kernels ran. The models' runs interleave
    as evaluate.speed interleaves whole models (a round runs each once, in runtime.round_orders), so that
    a load change on a shared machine hits every profile alike: profiled one after the other, FP32's and
    the INT8 candidate's totals for vit_mnist ranged 640-1750 us apart while a test suite ran beside
    them."""
    with held() as folder:
        sessions = [
            Session(
                model.SerializeToString(deterministic=True),
                threads=1,
                spin=False,
                profile=Path(folder) / f"p{k}",
            )
            for k, model in enumerate(models)
        ]
        deadline = None if seconds is None else time.monotonic() + seconds
        orders = round_orders(len(sessions))
        for done in range(runs):
            if deadline is not None and done >= min_runs and time.monotonic() > deadline:
                break
            for k in next(orders):
                sessions[k].run(batch)
        return [_kernels(_events(session.end_profiling())) for session in sessions]


def _events(path: Path) -> list[dict[str, Any]]:
    """The profiler's file. onnxruntime writes it without checking the writes: a full temporary folder or
    a file size limit leaves it cut short, which is the environment's failure, not the model's."""
    try:
        events: list[dict[str, Any]] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        try:  # the file stops at `ulimit -f` (EFBIG): hq85 F8, which was blamed on the disk
            short = short_of_room(path.parent, path.stat().st_size)
        except OSError:
            short = 0
        raise OSError(short, f"onnxruntime's profiler could not write its file whole ({path.name})") from exc
    return events


def _kernels(events: list[dict[str, Any]]) -> list[KernelTime]:
    """The profiler's events -> each kernel's median time over the runs, in the order the kernels ran."""
    times: dict[tuple[str, str], list[float]] = {}
    elements: dict[tuple[str, str], int] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        key = (name[: -len("_kernel_time")], str(event["args"].get("op_name", "")))
        times.setdefault(key, []).append(float(event["dur"]))
        shapes = event["args"].get("output_type_shape") or [{}]
        dims: list[int] = next(iter(shapes[0].values()), []) if shapes and isinstance(shapes[0], dict) else []
        elements[key] = int(np.prod(dims)) if dims else 0
    return [KernelTime(k[0], k[1], float(np.median(v)), elements[k]) for k, v in times.items()]
