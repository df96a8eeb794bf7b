"""SQNR, and the figures of detector heads (DetectionRecall, final boxes, BoxAgreement). Pure numpy;
per-output errors: evaluate.output_errors."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def sqnr_db(signal: float, noise: float) -> float:
    """Signal-to-quantization-noise ratio in dB; inf when the outputs are identical, -inf where the
    candidate gave NaN or Inf (its noise is not finite: the worst, never a NaN that compares as no
    worse than anything)."""
    if not math.isfinite(noise):
        return -math.inf
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


class DetectionRecall:
    """How many of the reference's detections the candidate still makes, for YOLO-style raw heads.

    Output [N, A, 5 + C]: per anchor 4 box values, objectness, C class scores (probabilities). A detection
    is an anchor whose objectness x best class score exceeds `threshold`; the candidate finds it when the
    same anchor is a detection of the same class in its output.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.reference = 0
        self.found = 0
        self.extra = 0

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """ref, cand: float [N, A, 5 + C]."""
        ref_cls, ref_hit = detections(ref, self.threshold)
        cand_cls, cand_hit = detections(cand, self.threshold)
        self.reference += int(ref_hit.sum())
        self.found += int((ref_hit & cand_hit & (ref_cls == cand_cls)).sum())
        self.extra += int((cand_hit & ~ref_hit).sum())

    def merge(self, later: DetectionRecall) -> None:
        self.reference += later.reference
        self.found += later.found
        self.extra += later.extra

    @property
    def recall(self) -> float | None:
        return self.found / self.reference if self.reference else None


ANCHORS_LAST = 4  # [N, K, A] with A at least this many times K > 4 holds its anchors along the last axis


def batchless(values: np.ndarray, images: int | None) -> bool:
    """Whether an output's first axis is not the run's images, where their count is known: loc [16800, 4]
    of one image is that image's, whole, not 16800 images' (hq133 F4, hq137 F1, hq138 F2)."""
    return images is not None and values.ndim > 0 and values.shape[0] != images


def is_yolo_head(output: np.ndarray) -> bool:
    """[N, A, 5 + C]; not a head with its anchors along the last axis (YOLOv8's [N, 4 + C, A], which
    yolov8_rows turns)."""
    return output.ndim == 3 and output.shape[2] > 5 and not anchors_last(output)


def anchors_last(output: np.ndarray) -> bool:
    """[N, K, A] with K > 4 and many more anchors than that: how YOLOv8 and its successors write a head
    ([1, 84, 8400]; a head of anchors first has hundreds of anchors for 5 + C values)."""
    return output.ndim == 3 and output.shape[1] > 4 and output.shape[2] >= ANCHORS_LAST * output.shape[1]


def yolov8_rows(output: np.ndarray) -> np.ndarray:
    """[N, 4 + C, A] (boxes, class scores) -> [N, A, 5 + C] with objectness 1, the rows the YOLO metrics
    read."""
    rows = output.transpose(0, 2, 1)
    return np.concatenate([rows[..., :4], np.ones_like(rows[..., :1]), rows[..., 4:]], axis=-1)


PROBABILITY_SLACK = 1e-3  # how far outside [0, 1] a sigmoid's float output may stray and still read as one


def mask_columns(rows: np.ndarray, outputs: Mapping[str, np.ndarray]) -> int | None:
    """How many trailing columns of a head's rows [N, A, 5 + C] are not class scores: 0 when columns 4
    on (objectness, class scores) all lie in [0, 1]; m when only the last m do not and an output
    [N, m, H, W] holds that many mask prototypes (YOLOv5-seg, YOLOv8/11-seg write each anchor's m mask
    coefficients after its classes; read as classes, a captcha segmenter's 32 coefficients turned 67200
    of 67200 anchors into detections); None when neither holds (a pose head's keypoints, raw logits)."""
    scores = rows[..., 4:]
    if probabilities(scores):
        return 0
    for proto in outputs.values():
        m = proto.shape[1] if proto.ndim == 4 else 0
        if 0 < m < scores.shape[-1] - 1 and probabilities(scores[..., :-m]):
            return int(m)
    return None


def probabilities(values: np.ndarray) -> bool:
    """Every value within PROBABILITY_SLACK of [0, 1] (true of no values)."""
    return values.size == 0 or bool(
        values.min() >= -PROBABILITY_SLACK and values.max() <= 1.0 + PROBABILITY_SLACK
    )


def without_masks(rows: np.ndarray, masks: int) -> np.ndarray:
    """rows [N, A, 5 + C + masks] -> [N, A, 5 + C]."""
    return rows[..., : rows.shape[-1] - masks]


def detections(head: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(class index [N, A], detection mask [N, A])."""
    best, score = _class_scores(head)
    return best, score > threshold


def _class_scores(head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """head [..., A, 5 + C] -> (best class [..., A], objectness x its probability [..., A])."""
    classes = head[..., 5:]
    best = classes.argmax(-1)
    return best, head[..., 4] * np.take_along_axis(classes, best[..., None], -1)[..., 0]


Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes [D, 4], class [D], score [D]
YOLOX_STRIDES = (8, 16, 32)
NMS_IOU = 0.45  # YOLOX's and YOLOv5's default
MATCH_IOU = 0.5
BORDERLINE = 0.01  # a difference whose score is this close to the threshold is a threshold tie


def yolox_grid(height: int, width: int) -> np.ndarray | None:
    """Per anchor (cell x, cell y, stride) [A, 3] of a raw YOLOX head over strides 8, 16, 32; None when
    the input size does not divide into them."""
    if any(height % s or width % s for s in YOLOX_STRIDES):
        return None
    cells = []
    for s in YOLOX_STRIDES:
        ys, xs = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, s)], -1))
    return np.concatenate(cells).astype(np.float64)


def corner_boxes(head: np.ndarray, grid: np.ndarray | None) -> np.ndarray:
    """head [A, 5 + C] -> boxes [A, 4] (x0, y0, x1, y1) in input pixels. With a YOLOX grid the box values
    are raw (cell offsets, log sizes); without one they are already (cx, cy, w, h) in pixels."""
    box = head[:, :4].astype(np.float64)
    if grid is not None:
        centre = (box[:, :2] + grid[:, :2]) * grid[:, 2:]
        size = np.exp(np.minimum(box[:, 2:], 30.0)) * grid[:, 2:]
    else:
        centre, size = box[:, :2], box[:, 2:]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [M, 4], b [K, 4] corner boxes -> IoU [M, K]."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0.0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


GFL_NMS_IOU = 0.5  # PP-PicoDet's post-process (rapid-layout's): every class above the score, NMS at 0.5


def final_detections(
    head: np.ndarray, threshold: float, grid: np.ndarray | None, multi_label: bool = False
) -> Detections:
    """What a detector's user gets from one image: boxes above the score, per-class greedy NMS.
    head [A, 5 + C] -> (boxes [D, 4], class [D], score [D]), by falling score. multi_label: every class
    above the score at an anchor is a candidate, NMS at GFL_NMS_IOU, as PicoDet's and NanoDet's
    post-processing selects (hq60 F2: the YOLO reading counted 126 of FP32's 149 layout boxes at 0.3);
    else the anchor's best class, NMS at NMS_IOU."""
    if multi_label:
        scores = head[:, 4:5] * head[:, 5:]
        anchors, best = np.nonzero(scores > threshold)
        score = scores[anchors, best]
    else:
        best, score = _class_scores(head)
        anchors = np.flatnonzero(score > threshold)
        best, score = best[anchors], score[anchors]
    order = np.argsort(-score, kind="stable")
    anchors, best, score = anchors[order], best[order], score[order]
    boxes = corner_boxes(head[anchors], None if grid is None else grid[anchors])
    limit = GFL_NMS_IOU if multi_label else NMS_IOU
    kept: list[int] = []
    for cls in np.unique(best):
        same = np.flatnonzero(best == cls)
        while same.size:
            kept.append(int(same[0]))
            same = same[1:][box_iou(boxes[same[:1]], boxes[same[1:]])[0] <= limit]
    chosen = np.asarray(sorted(kept), dtype=np.int64)  # the candidates run by falling score
    return boxes[chosen], best[chosen], score[chosen]


class BoxAgreement:
    """The reference's final detections (after threshold and NMS) that the candidate also makes: a box of
    the same class at IoU >= 0.5, matched greedily by falling reference score. Differences whose score,
    in the model that made the box, lies within BORDERLINE of the threshold are counted apart: any change
    of arithmetic flips some of those."""

    def __init__(self, threshold: float, grid: np.ndarray | None, multi_label: bool = False) -> None:
        self.threshold = threshold
        self.grid = grid
        self.multi_label = multi_label  # final_detections' selection (GFL heads)
        self.reference = 0
        self.found = 0
        self.extra = 0
        self.borderline = 0  # missed or extra boxes scoring within BORDERLINE of the threshold

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """ref, cand: float [N, A, 5 + C]."""
        for one_ref, one_cand in zip(ref, cand, strict=True):
            ref_dets = final_detections(one_ref, self.threshold, self.grid, self.multi_label)
            cand_dets = final_detections(one_cand, self.threshold, self.grid, self.multi_label)
            found, extra, borderline = match_boxes(ref_dets, cand_dets, self.threshold)
            self.reference += len(ref_dets[0])
            self.found += found
            self.extra += extra
            self.borderline += borderline

    def merge(self, later: BoxAgreement) -> None:
        self.reference += later.reference
        self.found += later.found
        self.extra += later.extra
        self.borderline += later.borderline


def match_boxes(ref: Detections, cand: Detections, threshold: float) -> tuple[int, int, int]:
    """(found, extra, borderline) for one image: reference boxes the candidate also has (same class, IoU
    >= 0.5, greedy by falling reference score), candidate boxes left over, and of the differences those
    scoring within BORDERLINE of the threshold in the model that made them."""
    (ref_boxes, ref_cls, ref_score), (cand_boxes, cand_cls, cand_score) = ref, cand
    iou = box_iou(ref_boxes, cand_boxes)
    iou[ref_cls[:, None] != cand_cls[None, :]] = 0.0
    taken = np.zeros(len(cand_boxes), dtype=bool)
    found = borderline = 0
    for k in range(len(ref_boxes)):
        free = np.where(taken, -1.0, iou[k])
        if free.size and free.max() >= MATCH_IOU:
            taken[int(free.argmax())] = True
            found += 1
        elif ref_score[k] < threshold + BORDERLINE:
            borderline += 1
    borderline += int((cand_score[~taken] < threshold + BORDERLINE).sum())
    return found, int((~taken).sum()), borderline
