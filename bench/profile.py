"""Per-op-type kernel time of models, from onnxruntime's own profiler: where an INT8 model's time goes.

python -m bench.profile FP32.onnx INT8.onnx [...] [--runs 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort


def op_times(path: Path, runs: int, threads: int) -> Counter[str]:
    """Mean kernel milliseconds per run, by op type."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        feed = {spec.name: np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    times: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["args"]["op_name"]] += event["dur"] / runs / 1000.0
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for path in args.models:
        times = op_times(path, args.runs, args.threads)
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in times.most_common(8))
        print(f"{path.name}: {sum(times.values()):.2f} ms a run in kernels; {top}")


if __name__ == "__main__":
    main()
