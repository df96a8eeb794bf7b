"""FP32, quantkit's INT8 and onnxruntime's INT8 timed side by side, in one process and one loop.

    python -m bench.zoo.speed FP32 CANDIDATE [CANDIDATE...] --images DIR --json OUT [--runs N]
                              [--seconds S] [-- quantkit preprocessing flags]

Each `compare` times FP32 beside one candidate, but the two compares of a model run minutes apart and
on a shared machine the load changes in between: the last `make zoo` before this step read nudenet's
ORT model at 1.84x in one compare and its minmax twin (the same graph, other scales) at 1.43x in the
next. Here every model runs once per round, the order alternating, on one held-out image at 1 thread;
a candidate's speedup is the median over rounds of FP32's time over its time in the same round. Rounds
stop at --runs or when --seconds have passed (at least 5; quantkit.evaluate.speed, which convert
uses to report its own output's speed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

from bench.zoo.flags import preprocess_options
from quantkit.evaluate.speed import interleaved_rounds, speedups
from quantkit.graph.model_inputs import image_input
from quantkit.image_folders import find_images
from quantkit.images import ImageLoader, resolve_preprocess
from quantkit.runtime import Session


def summary(times: np.ndarray) -> dict[str, object]:
    """times: ms [rounds, models], FP32 first. p50 per model and speedup per candidate (median of the
    per-round ratios)."""
    return {
        "rounds": int(times.shape[0]),
        "p50_ms": [float(np.median(times[:, k])) for k in range(times.shape[1])],
        "speedup": speedups(times),
    }


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    flags: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, flags = args_in[:cut], args_in[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="FP32 first, then the candidates")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(args_in)
    pre = resolve_preprocess(preprocess_options(tuple(flags)), image_input(onnx.load(str(args.models[0]))))
    batch = next(iter(ImageLoader(find_images(args.images)[:1], pre, 1))).data
    assert isinstance(batch, np.ndarray)  # images: one input
    sessions = [Session(path, threads=1, spin=False) for path in args.models]
    result = summary(interleaved_rounds(sessions, batch, args.runs, args.seconds))
    result["models"] = [str(p) for p in args.models]
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
