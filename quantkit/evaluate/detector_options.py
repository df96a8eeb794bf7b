"""The detector options of compare, shrink, convert --max-drop and the API (--detector, --score-threshold)
as config fields, and the YOLOX decoding grid they imply for an input size."""

from __future__ import annotations

from typing import Any

import numpy as np

from quantkit.config import DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.metrics import yolox_grid

DEFAULT_SCORE = 0.3  # --score-threshold when --detector is given without it


def detector_fields(
    detector: str | None, threshold: float | None, option: str = "--detector"
) -> dict[str, Any]:
    """The detector fields of CompareConfig / AccuracyBudget for a head named by the user (None: none);
    threshold None: DEFAULT_SCORE. A threshold without a detector is refused: it would score nothing."""
    if detector is None:
        if threshold is not None:
            flag = option.startswith("--")
            heads = (
                "yolo, yolox, yolov8, db, end2end, gfl or ssd"
                if flag
                else "'yolo', 'yolox', 'yolov8', 'db', 'end2end', 'gfl' or 'ssd'"
            )
            score = "--score-threshold" if flag else "score_threshold"
            raise ConfigError(f"{score} scores a detector's boxes; give {option} {heads} with it")
        return {}
    threshold = DEFAULT_SCORE if threshold is None else threshold
    if detector not in DetectorHead.__members__:
        raise ConfigError(
            f"{option} knows 'yolo' (boxes in pixels) and 'yolox' (raw YOLOX head), outputs "
            f"[N, anchors, 4 box + objectness + classes], 'yolov8' ([N, 4 box + classes, anchors]), "
            f"'db' (a text detector's probability map [N, 1, H, W]), 'end2end' (final detections "
            f"[N, K, x0 y0 x1 y1 score class]), 'gfl' (PicoDet and NanoDet split heads) and 'ssd' (class "
            f"scores [N, A, C] beside decoded boxes [N, A, 4]); got {detector!r}"
        )
    return {"detection_threshold": threshold, "detector": DetectorHead(detector)}


def decode_grid(
    detector: DetectorHead, input_size: tuple[int, int] | None, anchors: int
) -> np.ndarray | None:
    """The YOLOX decoding grid [A, 3] for --detector yolox; None for boxes already in pixels."""
    if detector is not DetectorHead.yolox:
        return None
    grid = yolox_grid(*input_size) if input_size else None
    if grid is None or len(grid) != anchors:
        size = "x".join(map(str, input_size)) if input_size else "of unknown size"
        raise ConfigError(
            f"--detector yolox reads a raw head over the stride 8, 16 and 32 grids of the input; the output "
            f"has {anchors} anchors, which an input {size} does not give; use --detector yolo for heads "
            "that already hold boxes in pixels"
        )
    return grid
