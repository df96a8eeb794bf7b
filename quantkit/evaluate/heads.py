"""A detector head's rows as --detector reads them: which layout, which columns are masks, and whether
the values can be what the head is named for (a raw head read as pixels is refused)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from quantkit.config import DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.gfl import LAYOUT as GFL_LAYOUT
from quantkit.evaluate.gfl import GflHead, gfl_heads, gfl_rows
from quantkit.evaluate.metrics import anchors_last, detections, mask_columns, yolov8_rows
from quantkit.evaluate.ssd import LAYOUT as SSD_LAYOUT
from quantkit.evaluate.ssd import SsdHead, ssd_head, ssd_rows

CombinedHead = GflHead | SsdHead  # a head whose rows several outputs make
COMBINED = frozenset({DetectorHead.gfl, DetectorHead.ssd})


def combined_head(
    outputs: Mapping[str, np.ndarray], detector: DetectorHead, side: tuple[int, int] | None
) -> CombinedHead:
    """The head `detector` (one of COMBINED) reads in the reference model's outputs, found once."""
    return gfl_heads(outputs, side) if detector is DetectorHead.gfl else ssd_head(outputs)


def combined_rows(outputs: Mapping[str, np.ndarray], head: CombinedHead) -> np.ndarray:
    """The head's rows [N, A, 5 + C], as the YOLO metrics read them."""
    return gfl_rows(outputs, head) if isinstance(head, GflHead) else ssd_rows(outputs, head)


def head_rows(name: str, output: np.ndarray, detector: DetectorHead) -> np.ndarray | None:
    """The output as the [N, A, 5 + C] rows the detection metrics read (None: a yolov8 head's layout it
    does not have). A head with its anchors along the last axis under yolo or yolox is refused: read as
    [N, A, 5 + C] its rows would be its values (PyPI's YOLOv8 DocLayNet detector, [1, 15, 21504], gave a
    recall of 39.6 % that meant nothing)."""
    if detector is DetectorHead.yolov8:
        return yolov8_rows(output) if anchors_last(output) else None
    if anchors_last(output) and output.shape[1] > 5:
        raise ConfigError(
            f"output {name!r} is {list(output.shape)}: its anchors run along the last axis, as YOLOv8 "
            f"writes its head; give --detector yolov8 (--detector {detector.value} reads [N, anchors, "
            "4 box + objectness + classes])"
        )
    return output


def head_masks(name: str, rows: np.ndarray, outputs: Mapping[str, np.ndarray], detector: DetectorHead) -> int:
    """metrics.mask_columns of the reference's head rows [N, A, 5 + C] (outputs: all its outputs), or
    one line saying why they cannot be read as a detector's."""
    masks = mask_columns(rows, outputs)
    if masks is None:
        scores = rows[..., 4:]
        raise ConfigError(
            f"output {name!r} holds values from {scores.min():.3g} to {scores.max():.3g} where --detector "
            f"{detector.value} reads objectness and class scores ({head_layout(detector)}), probabilities "
            "in [0, 1]: a pose or rotated-box head keeps keypoints or an angle there, a head of logits "
            "lacks its sigmoid, and a PicoDet or NanoDet head its box distributions (--detector gfl); leave "
            "--detector out to compare its values"
        )
    return masks


# Box centres of a head in pixels reach past this on some anchor of any image a detector takes
RAW_CENTRES = 16.0
FRACTION_SLACK = 0.25  # a head in fractions of the image: its centres past 0 and 1 by at most this


def require_sizes(name: str, rows: np.ndarray, threshold: float, detector: DetectorHead) -> None:
    """Refuse a head read as boxes of (cx, cy, w, h) whose centres are neither pixels nor fractions of the
    image on any anchor (RAW_CENTRES), or whose detections have a width or height of 0 or below: a raw
    YOLOX head's cell offsets and log sizes (CapSpot's, boxes in [-0.74, 1.72]), which --detector yolo read
    as pixels and matched 12 of 19 boxes where yolox matched 3 of 5. Under --detector ssd, the sizes its
    corners give (a head of offsets from its priors, not decoded)."""
    if detector is DetectorHead.ssd:
        _, hit = detections(rows, threshold)
        sizes = rows[..., 2:4][hit]
        if sizes.size and float(sizes.min()) <= 0.0:
            raise ConfigError(
                f"the boxes beside output {name!r} give detections a width or height of "
                f"{float(sizes.min()):.3g}: --detector ssd reads decoded boxes (x0, y0, x1, y1); a head of "
                "offsets from its priors needs them decoded in the model; leave --detector out to compare "
                "the outputs' values"
            )
    if detector is not DetectorHead.yolo:
        return
    centres = rows[..., 0:2]
    low, high = (float(centres.min()), float(centres.max())) if centres.size else (0.0, 0.0)
    # hunt52 B4: a raw YOLOX head's offsets of -2.2 to 3.6, neither pixels nor fractions of the image (a
    # head in fractions reaches a little past them: a YOLOv5's -0.05 to 1.05, review54 M3)
    if max(-low, high) < RAW_CENTRES and not (low >= -FRACTION_SLACK and high <= 1.0 + FRACTION_SLACK):
        raise ConfigError(
            f"output {name!r} holds box centres from {low:.3g} to {high:.3g} over all its anchors: neither "
            "pixels nor fractions of the image, which --detector yolo reads; a raw YOLOX head holds cell "
            "offsets and log sizes there: give --detector yolox"
        )
    _, hit = detections(rows, threshold)
    sizes = rows[..., 2:4][hit]
    if sizes.size and float(sizes.min()) <= 0.0:
        raise ConfigError(
            f"output {name!r} has detections of width or height {float(sizes.min()):.3g}: --detector yolo "
            "reads (cx, cy, w, h) in pixels, and a raw YOLOX head holds cell offsets and log sizes there; "
            "give --detector yolox"
        )


def head_layout(detector: DetectorHead) -> str:
    """The output shape --detector reads, as its help states it."""
    if detector is DetectorHead.yolov8:
        return "[N, 4 box + classes, anchors]"
    if detector is DetectorHead.db:
        return "[N, 1, H, W] with every value a probability (a DB text detector's map)"
    if detector is DetectorHead.end2end:
        return "[N, detections, x0 y0 x1 y1 score class] (or boxes [N, K, 4] beside scores and labels [N, K])"
    if detector is DetectorHead.gfl:
        return GFL_LAYOUT
    if detector is DetectorHead.ssd:
        return SSD_LAYOUT
    return "[N, anchors, 4 box + objectness + classes]"
