"""onnxruntime's profiler: per-kernel times of a model on one batch (one thread, as evaluate.speed times
whole models), which evaluate.op_times attributes to the nodes of the plan."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from quantkit.results import Feed
from quantkit.runtime import Session


@dataclass(frozen=True)
class KernelTime:
    """One node of onnxruntime's optimized graph, as its profiler timed it: median microseconds per run
    and the elements of its first output."""

    name: str
    op_type: str
    us: float
    out_elements: int


def kernel_times(
    model: onnx.ModelProto, batch: Feed, runs: int, seconds: float | None = None, min_runs: int = 3
) -> list[KernelTime]:
    """Per-kernel times of `model` on `batch` (one thread, no spinning, every optimization on, as
    evaluate.speed times the whole model), from onnxruntime's profiler: each kernel's median over `runs`
    runs, or fewer (min_runs at least) once `seconds` have passed; the first run's allocations drop out
    of the median. In the order the kernels ran."""
    with tempfile.TemporaryDirectory(prefix="quantkit-") as folder:
        source = model.SerializeToString(deterministic=True)
        session = Session(source, threads=1, spin=False, profile=Path(folder) / "profile")
        deadline = None if seconds is None else time.monotonic() + seconds
        for done in range(runs):
            if deadline is not None and done >= min_runs and time.monotonic() > deadline:
                break
            session.run(batch)
        events = json.loads(session.end_profiling().read_text())
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
