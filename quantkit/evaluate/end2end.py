"""End-to-end detector heads: outputs that already list each image's final detections.

YOLOv10, YOLO26 and every Ultralytics export with `nms=True` or `end2end` write [N, K, 6 + E]: per row a
box (x0, y0, x1, y1) in input pixels, its score, its class index, and E extra values (mask coefficients,
keypoints) that are not read here; rows are ranked by score (TopK) and padded with low scores. Their row
order follows the scores, so a row's values say nothing of the same row in another model (an ISBN-region
YOLO26's INT8 and FP16 outputs both measured under 5 dB against FP32 with the same boxes): only the
boxes above the score are compared, matched as metrics.match_boxes matches any detector's final boxes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from quantkit.errors import ConfigError
from quantkit.evaluate.metrics import (
    PROBABILITY_SLACK,
    BoxAgreement,
    DetectionRecall,
    Detections,
    anchors_last,
    match_boxes,
)

LISTED_COLUMNS = 6  # x0, y0, x1, y1, score, class


def is_listed_head(output: np.ndarray) -> bool:
    """[N, K, 6 + E] with its rows along the middle axis."""
    return output.ndim == 3 and output.shape[2] >= LISTED_COLUMNS and not anchors_last(output)


def listed_detections(rows: np.ndarray, threshold: float) -> Detections:
    """One image's detections above the score. rows: float [K, 6 + E] -> (boxes [D, 4] float64 corners,
    class [D] int64, score [D]), by falling score (ties in row order)."""
    score = rows[:, 4]
    above = np.flatnonzero(score > threshold)
    above = above[np.argsort(-score[above], kind="stable")]
    return (
        rows[above, :4].astype(np.float64),
        np.rint(rows[above, 5]).astype(np.int64),
        score[above],
    )


def split_head(outputs: Mapping[str, np.ndarray], images: int = 0) -> tuple[str, str, str] | None:
    """(boxes, scores, labels): a DETR-style head's three outputs (RT-DETR, D-FINE, DEIM: boxes [N, K, 4]
    as x0 y0 x1 y1, scores [N, K] in [0, 1], class indices [N, K]; the TensorFlow Object Detection
    API's y0 x0 y1 x1 boxes, float classes, scores and a count [N], which IoU reads alike), where the
    outputs hold exactly one such three and no listed head [N, K, 6 + E]; else None. hunt52 B5: DEIMv2's
    TensorRT placement lost a quarter of its detections, and --detector end2end refused its outputs.
    Where the run holds one image (`images`), one image's three without the batch axis too: boxes [K, 4],
    scores and labels [K], as many as the data gives (torchvision's detectors, hq61)."""
    if any(is_listed_head(v) for v in outputs.values()):
        return None
    rank = 3 if images != 1 or any(v.ndim == 3 and v.shape[2] == 4 for v in outputs.values()) else 2
    boxes = [n for n, v in outputs.items() if v.ndim == rank and v.shape[-1] == 4 and v.dtype.kind == "f"]
    if len(boxes) != 1:
        return None
    paired = {n: v for n, v in outputs.items() if v.shape == outputs[boxes[0]].shape[:-1]}
    labels = _by_name(
        [n for n, v in paired.items() if v.dtype.kind in "iu" or np.array_equal(v, np.rint(v))],
        "label",
        "class",
    )
    scores = _by_name([n for n, v in paired.items() if n not in labels and v.dtype.kind == "f"], "score")
    if len(scores) != 1 or len(labels) != 1:
        return None
    return boxes[0], scores[0], labels[0]


def _by_name(names: list[str], *words: str) -> list[str]:
    """`names`, or where more than one, the one whose name holds one of `words` (hunt56 C2: a D-FINE
    export's extra [N, K] quality output beside its scores made the head unreadable)."""
    named = [n for n in names if any(w in n.lower() for w in words)]
    return named if len(names) > 1 and len(named) == 1 else names


def joined_head(outputs: Mapping[str, np.ndarray], names: tuple[str, str, str]) -> np.ndarray:
    """The three outputs split_head names as one listed head [N, K, 6] (x0 y0 x1 y1 score class); one
    image's [K, 4], [K], [K] as [1, K, 6]."""
    boxes, scores, labels = (outputs[n] for n in names)
    if boxes.ndim == 2:
        boxes, scores, labels = boxes[None], scores[None], labels[None]
    return np.concatenate([boxes, scores[..., None], labels[..., None].astype(boxes.dtype)], axis=2)


def require_listed(name: str, rows: np.ndarray) -> None:
    """Refuse an output [N, K, 6 + E] whose rows are not (box, score in [0, 1], class index): read as
    detections, a raw head's logits or a box's sizes there would count as scores and classes."""
    score, cls = rows[..., 4], rows[..., 5]
    if score.size and not (score.min() >= -PROBABILITY_SLACK and score.max() <= 1.0 + PROBABILITY_SLACK):
        raise ConfigError(
            f"output {name!r} holds scores from {score.min():.3g} to {score.max():.3g} in its fifth column, "
            "where --detector end2end reads each row's score, a probability in [0, 1] (rows: x0 y0 x1 y1 "
            "score class); leave --detector out to compare its values"
        )
    if cls.size and not (cls.min() >= 0 and np.array_equal(cls, np.rint(cls))):
        raise ConfigError(
            f"output {name!r} holds values that are not class indices in its sixth column, where "
            "--detector end2end reads each row's class (rows: x0 y0 x1 y1 score class); leave --detector "
            "out to compare its values"
        )


def listed_counts(ref: np.ndarray, cand: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(the reference's detections, found, extra, borderline) over the images of ref, cand [N, K, 6 + E]:
    metrics.match_boxes of each image's listed detections, summed."""
    totals = np.zeros(4, np.int64)
    for one_ref, one_cand in zip(ref, cand, strict=True):
        found, extra, borderline = match_boxes(
            listed_detections(one_ref, threshold), listed_detections(one_cand, threshold), threshold
        )
        totals += (int(np.count_nonzero(one_ref[:, 4] > threshold)), found, extra, borderline)
    reference, found, extra, borderline = (int(t) for t in totals)
    return reference, found, extra, borderline


def add_listed(
    recall: DetectionRecall, boxes: BoxAgreement, ref: np.ndarray, cand: np.ndarray, threshold: float
) -> None:
    """Count one batch of an end-to-end head, ref and cand [N, K, 6 + E], into both figures at once: its
    listed detections are its final boxes, so the recall of its detections and the agreement of its
    boxes are the same matching (an end-to-end head has no anchors to compare row by row)."""
    reference, found, extra, borderline = listed_counts(ref, cand, threshold)
    for figure in (recall, boxes):
        figure.reference += reference
        figure.found += found
        figure.extra += extra
    boxes.borderline += borderline


def rows_differ(reference: tuple[int, ...], candidate: tuple[int, ...]) -> bool:
    """Whether two shapes of one output differ only in how many rows it has (one axis but the last, or
    the only one): the boxes a NonMaxSuppression or a score threshold kept, as many as the data gives (a
    YOLOX export's [detections, 7], a NonZero's picks [K]). No element of one then stands for the same
    thing as an element of the other."""
    if len(reference) == len(candidate) == 1:
        return reference != candidate
    if len(reference) != len(candidate) or len(reference) < 2 or reference[-1] != candidate[-1]:
        return False
    return sum(a != b for a, b in zip(reference, candidate, strict=True)) == 1
