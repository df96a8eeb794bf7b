"""The floor under `quantkit calibrate`: what any calibration of the same images has to pay.

    python -m bench.floor '{"model": ..., "images": ..., "num_images": 100, "seed": 1, "preprocess": {...}}'

Decodes and preprocesses the calibration images calibrate would select (quantkit.images, the model's
resolved preprocessing) and runs one plain FP32 forward per batch of 8 (or the batch the model fixes) in
onnxruntime with default session options: no extra outputs, no statistics, no read-ahead thread.
bench.child runs it in its own process, so its wall time and peak RSS are its own, beside calibrate's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.child import PEAK_PREFIX, own_peak_mb
from quantkit.config import ImageSelection, Preprocess
from quantkit.image_folders import select_images
from quantkit.images import ImageLoader

BATCH = 8  # calibrate's default batch


def run(job: dict[str, Any]) -> dict[str, int]:
    """Decode, preprocess and run every selected image once; how many images and batches that was."""
    pre = Preprocess.from_dict(job["preprocess"])
    paths = select_images(ImageSelection(Path(job["images"]), job["num_images"], job.get("seed", 0)))
    session = ort.InferenceSession(job["model"], providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    fixed = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
    size = fixed or BATCH
    images = batches = 0
    for batch in ImageLoader(paths, pre, size):
        data = batch.data
        assert isinstance(data, np.ndarray)  # images: one input
        if fixed and len(data) < fixed:  # a short last batch, padded to the size the model fixes
            data = np.concatenate([data, np.zeros((fixed - len(data), *data.shape[1:]), data.dtype)])
        session.run(None, {first.name: data})
        images += len(batch.data)
        batches += 1
    return {"images": images, "batches": batches}


if __name__ == "__main__":
    try:
        print(json.dumps(run(json.loads(sys.argv[1]))))
    except Exception as exc:  # the parent reads the last stderr line as this run's result
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        print(f"{PEAK_PREFIX}{own_peak_mb():.1f}", flush=True)
