"""Quantize an ONNX model with NNCF's post-training quantization (its ONNX backend, default settings), the
peer quantkit is measured against in OpenVINO (bench.openvino_bench). A bench child job:

    python -m bench.nncf_peer '{"model": ..., "images": ..., "num_images": 100, "seed": 1,
                                "preprocess": {...}, "output": ..., "opset": null}'

It is fed exactly the tensors quantkit calibrates on: the same seeded selection of images through
quantkit's own loader and preprocessing, one image per item. `opset` (e.g. 13) first upgrades the model
with onnx's version converter, as quantkit does on its way in (NNCF quantizes weights per tensor below
opset 13). NNCF is a bench peer only: nothing under quantkit/ imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import onnx

from bench.child import PEAK_PREFIX, own_peak_mb
from bench.quantize import check_written, preprocess_from
from quantkit.config import ImageSelection
from quantkit.graph.model_inputs import image_input
from quantkit.graph.model_io import ensure_opset
from quantkit.image_folders import select_images
from quantkit.images import ImageLoader, resolve_preprocess


def quantize_with_nncf(job: dict[str, Any]) -> None:
    import nncf  # the peer: imported only in this child

    proto = onnx.load(job["model"])
    if job.get("opset"):
        proto = ensure_opset(proto, int(job["opset"]))
    spec = image_input(proto)
    pre = resolve_preprocess(preprocess_from(job["preprocess"]), spec)
    selection = ImageSelection(Path(job["images"]), job["num_images"], job.get("seed", 0))
    items = [batch.data for batch in ImageLoader(select_images(selection), pre, 1)]
    quantized = nncf.quantize(
        proto, nncf.Dataset(items, lambda x: {spec.name: x}), subset_size=len(items)
    )  # the defaults otherwise: preset PERFORMANCE, fast bias correction, model_type None
    onnx.save(quantized, job["output"])
    check_written(Path(job["output"]))


def versions() -> dict[str, str]:
    """NNCF's version where it is installed (for the bench's record)."""
    try:
        import nncf
    except ImportError:
        return {}
    return {"nncf": str(nncf.__version__)}


if __name__ == "__main__":
    try:
        quantize_with_nncf(json.loads(sys.argv[1]))
    except Exception as exc:  # the parent reads the last stderr line as this run's result
        line = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        print(f"{type(exc).__name__}: {line[:240]}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        print(f"{PEAK_PREFIX}{own_peak_mb():.1f}", flush=True)
