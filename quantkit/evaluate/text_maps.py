"""Text-detection probability maps (DBNet and the PaddleOCR detectors built on it): the text boxes a DB
post-process reads from a map, so that `compare --detector db` scores what an OCR pipeline gets.

A DB detector writes one probability per pixel ([N, 1, H, W]). Its post-process binarizes the map at a
threshold (PaddleOCR's det_db_thresh, 0.3: --score-threshold), takes each connected region as a text
candidate, and keeps those whose mean probability over their box reaches BOX_THRESHOLD (det_db_box_thresh,
0.6) and whose sides reach MIN_SIDE pixels. The boxes here are the regions' axis-aligned boxes, the
unclipped form of PaddleOCR's (it grows each by a ratio before cropping, which moves the two models' boxes
alike). The SQNR of such a map says little of its boxes: PP-OCRv3's measured 14 dB on photos with text
while 88 % of its text boxes stayed the same.
"""

from __future__ import annotations

import numpy as np

from quantkit.evaluate.metrics import (
    PROBABILITY_SLACK,
    BoxAgreement,
    DetectionRecall,
    Detections,
    match_boxes,
)

BOX_THRESHOLD = 0.6  # PaddleOCR's det_db_box_thresh: a region's mean probability to count as text
MIN_SIDE = 3  # PaddleOCR's min_size: narrower regions are not text lines


def is_probability_map(output: np.ndarray) -> bool:
    """Whether an output reads as one probability map per image: [N, 1, H, W] or [N, H, W] (H, W > 1),
    every value within PROBABILITY_SLACK of [0, 1]."""
    spatial = (output.ndim == 4 and output.shape[1] == 1) or output.ndim == 3
    if not spatial or output.shape[-1] < 2 or output.shape[-2] < 2 or output.size == 0:
        return False
    return float(output.min()) >= -PROBABILITY_SLACK and float(output.max()) <= 1.0 + PROBABILITY_SLACK


def map_view(output: np.ndarray) -> np.ndarray:
    """[N, 1, H, W] or [N, H, W] -> [N, H, W] (a view)."""
    return output.reshape(output.shape[0], output.shape[-2], output.shape[-1])


def regions(mask: np.ndarray) -> np.ndarray:
    """The 4-connected regions of a boolean mask [H, W] as their boxes: int64 [K, 4] (x0, y0, x1, y1),
    ends exclusive, in the order of each region's first pixel (row by row). Runs of each row are joined
    to the overlapping runs of the row above (union-find over runs: O(runs))."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # row-major like the starts: run k ends at ends[k]
    parent = list(range(len(rows)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    first = np.searchsorted(rows, np.arange(height + 1))  # runs of row r: first[r] .. first[r + 1]
    for r in range(1, height):
        above, below = range(first[r - 1], first[r]), range(first[r], first[r + 1])
        i, j = above.start, below.start
        while i < above.stop and j < below.stop:
            if starts[i] < ends[j] and starts[j] < ends[i]:  # the two runs share a column
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    if not parent:
        return np.zeros((0, 4), dtype=np.int64)
    roots = np.array([root(k) for k in range(len(parent))])
    order, label = np.unique(roots, return_inverse=True)
    boxes = np.empty((len(order), 4), dtype=np.int64)
    boxes[:, :2] = np.iinfo(np.int64).max
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], label, starts)
    np.minimum.at(boxes[:, 1], label, rows)
    np.maximum.at(boxes[:, 2], label, ends)
    np.maximum.at(boxes[:, 3], label, rows + 1)
    return boxes


def text_boxes(probability: np.ndarray, threshold: float) -> Detections:
    """A DB post-process on one map [H, W]: the boxes of the regions above `threshold` whose mean
    probability over their box reaches BOX_THRESHOLD and whose sides reach MIN_SIDE, by falling score.
    (boxes float [D, 4], class zeros [D], score float [D])."""
    boxes = regions(probability > threshold)
    wide = (boxes[:, 2] - boxes[:, 0] >= MIN_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_SIDE)
    boxes = boxes[wide]
    totals = np.zeros((probability.shape[0] + 1, probability.shape[1] + 1), dtype=np.float64)
    totals[1:, 1:] = probability.astype(np.float64).cumsum(axis=0).cumsum(axis=1)
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    score = (totals[y1, x1] - totals[y0, x1] - totals[y1, x0] + totals[y0, x0]) / np.maximum(area, 1)
    keep = np.flatnonzero(score >= BOX_THRESHOLD)
    keep = keep[np.argsort(-score[keep], kind="stable")]
    return boxes[keep].astype(np.float64), np.zeros(len(keep), dtype=np.int64), score[keep]


class PixelRecall(DetectionRecall):
    """The reference's text pixels (above the threshold) that the candidate keeps, and the pixels it adds:
    a map's metrics.DetectionRecall."""

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """ref, cand: float [N, H, W]."""
        ref_hit, cand_hit = ref > self.threshold, cand > self.threshold
        self.reference += int(ref_hit.sum())
        self.found += int((ref_hit & cand_hit).sum())
        self.extra += int((cand_hit & ~ref_hit).sum())


class TextBoxAgreement(BoxAgreement):
    """The reference's text boxes (text_boxes) that the candidate also makes at IoU >= 0.5, as
    metrics.BoxAgreement counts a detector's final boxes; borderline: differences whose box score lies
    within metrics.BORDERLINE of BOX_THRESHOLD."""

    def __init__(self, threshold: float) -> None:
        super().__init__(threshold, None)

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """ref, cand: float [N, H, W]."""
        for one_ref, one_cand in zip(ref, cand, strict=True):
            found, extra, borderline, total = compare_maps(one_ref, one_cand, self.threshold)
            self.reference += total
            self.found += found
            self.extra += extra
            self.borderline += borderline


def compare_maps(ref: np.ndarray, cand: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(found, extra, borderline, reference boxes) of one image's maps [H, W] (match_boxes on text_boxes)."""
    ref_boxes = text_boxes(ref, threshold)
    found, extra, borderline = match_boxes(ref_boxes, text_boxes(cand, threshold), BOX_THRESHOLD)
    return found, extra, borderline, len(ref_boxes[0])
