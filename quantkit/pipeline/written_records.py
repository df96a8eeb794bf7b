"""What quantkit recorded in a converted model's metadata, read back (compare, check): the settings, the
conversion record (shown, never trusted) and the preprocessing. pipeline.writing stamps them."""

from __future__ import annotations

import json
from typing import Any

import onnx

from quantkit.config import Preprocess
from quantkit.pipeline.writing import META_PREFIX


def recorded_json(model: onnx.ModelProto, key: str) -> Any:
    """The JSON quantkit recorded under `quantkit.<key>` in a model's metadata, parsed; None where absent
    or not JSON."""
    for prop in model.metadata_props:
        if prop.key == META_PREFIX + key:
            try:
                return json.loads(prop.value)
            except ValueError:
                return None
    return None


def placed_elsewhere(model: onnx.ModelProto, runtime: str, runs: int) -> str | None:
    """compare's warning where it timed (runs) in onnxruntime (`runtime`) a candidate whose Q/DQ were
    placed for another runtime than onnxruntime's CPU kernels (convert --target; hunt46 C3: a
    TensorRT-placed CenterFace read 'speedup 0.13x')."""
    settings = recorded_json(model, "settings")
    target = settings.get("target") if isinstance(settings, dict) else None
    if target not in ("tensorrt", "openvino") or runtime != "onnxruntime" or not runs:
        return None
    there = "; compare --runtime openvino measures it there" if target == "openvino" else ""
    return (
        f"the candidate was placed for {target} (convert --target {target}): onnxruntime's CPU provider "
        f"runs what it cannot fuse in float, so its latency and speedup here are not {target}'s{there}"
    )


def conversion_record(model: onnx.ModelProto) -> dict[str, Any] | None:
    """What quantkit recorded of an INT8 conversion in a model's metadata; None if absent or malformed
    (hand-edited, another version): it is shown, never trusted."""
    record = recorded_json(model, "conversion")
    return record if _well_formed(record) else None


def _well_formed(record: object) -> bool:
    if not isinstance(record, dict):
        return False
    rebalanced, layers = record.get("rebalanced"), record.get("bias_corrected_layers")
    db = record.get("calibration_sqnr_db", {})
    number = (int, float)
    return (
        isinstance(rebalanced, list)
        and all(isinstance(r, dict) and isinstance(r.get("alpha"), number) for r in rebalanced)
        and isinstance(layers, int)
        and isinstance(db, dict)
        and all(v is None or isinstance(v, number) for v in db.values())
    )


def recorded_preprocess(model: onnx.ModelProto) -> Preprocess | None:
    """The preprocessing quantkit recorded in a converted model's metadata, if any."""
    for prop in model.metadata_props:
        if prop.key == META_PREFIX + "preprocess" and prop.value not in ("", "{}", "null"):
            return Preprocess.from_dict(json.loads(prop.value))
    return None
