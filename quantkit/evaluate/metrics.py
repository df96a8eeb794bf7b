"""Streaming accuracy and error metrics. Pure numpy."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from quantkit.evaluate.class_scores import class_axis, holds_labels, top_indices
from quantkit.outcomes import OutputMetrics

# An image whose own output has a cosine below this with FP32's is mostly noise there (SQNR near 0 dB or
# below), whatever the SQNR pooled over all images says.
NOISE_COSINE = 0.5


# Past this share of positions won by one class in FP32, an output's per-position agreement says nothing.
ONE_CLASS_POSITIONS = 0.99


# An output with an axis this short beside longer ones ([N, H, W, 4] mask/angle/type/quality, [N, A, 6]
# boxes/objectness/score) holds values of different kinds along it: each one's SQNR is kept.
KINDS_MAX = 16


def kinds_axis(shape: tuple[int, ...]) -> int | None:
    """The axis of a [N, a, b] or [N, a, b, c] output along which its values are of different kinds: axis 1
    or the last, whichever is at most KINDS_MAX long (and longer than 1) while the other is longer; the
    shorter of the two where both are. None otherwise (class scores, one-channel maps)."""
    if len(shape) not in (3, 4):
        return None
    last = len(shape) - 1
    fits = [a for a in (1, last) if 1 < shape[a] <= KINDS_MAX and shape[last if a == 1 else 1] > shape[a]]
    return min(fits, key=lambda a: (shape[a], a)) if fits else None


class OutputErrors:
    """Reference vs candidate for one output, accumulated batch by batch.

    SQNR = 10 log10(sum ref^2 / sum (ref - cand)^2) over every element of every image; cosine is the mean
    per-image cosine similarity; top-1 agreement and top-5 overlap are per image, for [N, C] scores, and
    per position along the class axis of probabilities at each position (class_scores.class_axis: a
    recognizer's [N, T, C], a segmenter's map) or of the axis `update` is given (a segmenter's logits):
    each image counts the share of its positions. values: the graph computes this output as features
    (graph.output_kinds), so no class figures whatever its shape; ordered: a TopK or NonMaxSuppression
    chose and ordered it, so no class figures nor labels' agreement (hunt35: a TopK's sorted probabilities
    read '100.00 % top-1 agree' by construction, its 5 indices' slot by slot equality 71.8 %).
    """

    def __init__(
        self, name: str, values: bool = False, ordered: bool = False, labelled: bool = False
    ) -> None:
        self.name = name
        self.signal = 0.0
        self.noise = 0.0
        self.cosines: list[float] = []
        self.single, self.dot, self.candidate_power = True, 0.0, 0.0  # pooled cosine: one value an image
        self.max_abs = 0.0
        self.top1_same = 0.0
        self.top5_overlap = 0.0
        self.winners: np.ndarray | None = None  # [C] positions FP32 gives each class (per-position outputs)
        self.classification = not (values or ordered)
        self.ordered = ordered
        self.labelled = labelled  # an ArgMax writes it: labels in any integer type (a uint8 class map)
        self.labels = True
        self.classes = 0  # the class axis' length (top-5 overlap of 5 classes or fewer says nothing)
        self.kinds: tuple[int, np.ndarray, np.ndarray] | None = None  # (axis, signal [K], noise [K])
        self.mixed = False  # batches of different kinds axes: no per-kind figure

    def update(
        self, ref: np.ndarray, cand: np.ndarray, images: int | None = None, axis: int | None = None
    ) -> None:
        """ref, cand: [N, ...] with equal shapes; float, or integer labels (an ArgMax map), whose agreement
        is the share of equal elements of each image (SQNR of label numbers says nothing). images: how many
        the run held, where known (an output of another N holds no image's class scores). axis: the class
        axis of logits at each position (class_scores.logits_axis), where the caller knows one."""
        # class ids written as floats in rows a TopK / NonMaxSuppression chose are labels too (hunt53 B3)
        whole = self.ordered and ref.dtype.kind == "f" and bool(np.array_equal(ref, np.rint(ref)))
        self.labels = self.labels and (holds_labels(ref.dtype) or whole or self.labelled)
        if self.labels:
            same = _per_row(ref == cand)
            self.top1_same += float(np.sum(np.mean(same, axis=1))) if same.shape[1] else float(ref.shape[0])
        ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
        same = ~np.isfinite(ref64) & (ref64 == cand64)  # an -inf mask by design in both: no error there
        if same.any():  # (hunt43 F3: '-inf dB' and NaN for a model at 44.4 dB on its finite values)
            ref64, cand64 = np.where(same, 0.0, ref64), np.where(same, 0.0, cand64)
        diff = ref64 - cand64
        self.signal += float(np.sum(ref64 * ref64))
        self.noise += float(np.sum(diff * diff))
        self.dot += float(np.sum(ref64 * cand64))
        self.candidate_power += float(np.sum(cand64 * cand64))
        self.single = self.single and ref64[0].size == 1 if len(ref64) else self.single
        self._add_kinds(ref64, diff)
        self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))) if diff.size else 0.0)
        flat_r, flat_c = _per_row(ref64), _per_row(cand64)
        norms = np.linalg.norm(flat_r, axis=1) * np.linalg.norm(flat_c, axis=1)
        dots = np.sum(flat_r * flat_c, axis=1)
        self.cosines.extend(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0).tolist())
        axis = (axis if axis is not None else class_axis(ref, images)) if self.classification else None
        self.classification = axis is not None
        if axis is not None and not self.labels:
            classes = ref.shape[axis]
            rows_r = np.moveaxis(ref, axis, -1).reshape(-1, classes)
            rows_c = np.moveaxis(cand, axis, -1).reshape(-1, classes)
            positions = max(len(rows_r) // max(len(ref), 1), 1)  # each image weighs alike: its positions'
            winners = rows_r.argmax(1)
            self.top1_same += float(np.sum(winners == rows_c.argmax(1))) / positions
            if positions > 1:
                counts = np.bincount(winners, minlength=classes)
                self.winners = counts if self.winners is None else self.winners + counts
            self.classes = classes
            k = min(5, classes)
            top_r, top_c = top_indices(rows_r, k), top_indices(rows_c, k)
            shared = (top_r[:, :, None] == top_c[:, None, :]).any(axis=2).sum()
            self.top5_overlap += float(shared) / k / positions

    def _cosine(self) -> float:
        """Mean per-image cosine; pooled where an image has one value (hunt41 F8: [N, 1] read 1.00000)."""
        if not self.cosines or not self.single:
            return float(np.mean(self.cosines)) if self.cosines else float("nan")
        return self.dot / norms if (norms := float(np.sqrt(self.signal * self.candidate_power))) > 0 else 1.0

    def _add_kinds(self, ref64: np.ndarray, diff: np.ndarray) -> None:
        axis = kinds_axis(ref64.shape)
        if self.mixed or axis is None:
            self.mixed = self.mixed or self.kinds is not None
            self.kinds = None
            return
        others = tuple(a for a in range(ref64.ndim) if a != axis)
        signal, noise = np.sum(ref64 * ref64, axis=others), np.sum(diff * diff, axis=others)
        self._fold_kinds((axis, signal, noise))

    def _fold_kinds(self, kinds: tuple[int, np.ndarray, np.ndarray] | None) -> None:
        if kinds is None or self.mixed:
            self.mixed, self.kinds = True, None
        elif self.kinds is None:
            self.kinds = kinds
        elif self.kinds[0] != kinds[0] or self.kinds[1].shape != kinds[1].shape:
            self.mixed, self.kinds = True, None
        else:
            self.kinds = (kinds[0], self.kinds[1] + kinds[1], self.kinds[2] + kinds[2])

    def merge(self, later: OutputErrors) -> None:
        """Add what `later` saw on the images after this one's (shards of one run, in order)."""
        self.signal += later.signal
        self.noise += later.noise
        self.cosines.extend(later.cosines)
        self.single, self.dot = self.single and later.single, self.dot + later.dot
        self.candidate_power += later.candidate_power
        self.max_abs = max(self.max_abs, later.max_abs)
        self.top1_same += later.top1_same
        self.top5_overlap += later.top5_overlap
        if later.winners is not None:
            self.winners = later.winners if self.winners is None else self.winners + later.winners
        self.classification = self.classification and later.classification
        self.labels = self.labels and later.labels
        self.classes = max(self.classes, later.classes)
        if later.mixed:
            self.mixed, self.kinds = True, None
        elif self.kinds is not None or later.kinds is not None:
            self._fold_kinds(later.kinds)

    def result(self) -> OutputMetrics:
        count = len(self.cosines)
        scored = (self.classification or self.labels) and count and not self.one_sided() and not self.ordered
        return OutputMetrics(
            name=self.name,
            sqnr_db=sqnr_db(self.signal, self.noise),
            cosine=self._cosine(),
            max_abs_error=self.max_abs,
            top1_agreement=self.top1_same / count if scored else None,
            top5_overlap=self.top5_overlap / count
            if scored and self.classification and not self.labels and self.classes > 5
            else None,
            noise_images=sum(c < NOISE_COSINE for c in self.cosines),
            worst_kind=self._worst_kind(),
            labels=self.labels and count > 0,
            selected=self.ordered,
        )

    def one_sided(self) -> bool:
        """FP32 gives one class at nearly every position (ONE_CLASS_POSITIONS): an agreement per position
        is about 100 % whatever the candidate does. hunt34: UltraFace's face/background scores per anchor
        (face on 0.13 % of them) and CRAFT's heatmaps read 99.99 %."""
        return self.winners is not None and self.winners.max() > ONE_CLASS_POSITIONS * self.winners.sum()

    def _worst_kind(self) -> tuple[int, int, float] | None:
        """(axis, index, SQNR dB) of the kind of value that measures worst along kinds_axis; None without."""
        if self.kinds is None or self.mixed:
            return None
        axis, signal, noise = self.kinds
        figures = [sqnr_db(float(s), float(n)) for s, n in zip(signal, noise, strict=True)]
        worst = min(range(len(figures)), key=lambda k: figures[k])
        return axis, worst, figures[worst]


def _per_row(x: np.ndarray) -> np.ndarray:
    """x [N, ...] as [N, M]; also where N is 0 (an output of the rows a NonMaxSuppression kept: none)."""
    return x.reshape(x.shape[0], -1) if x.size else x.reshape(x.shape[0], 0)


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
