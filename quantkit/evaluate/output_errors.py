"""Reference vs candidate for one output, accumulated batch by batch: SQNR, cosine, largest error, and the
agreement of class scores and labels (OutputErrors). Pure numpy."""

from __future__ import annotations

import math

import numpy as np

from quantkit.evaluate.class_scores import class_axis, holds_labels, sums_to_one, top_indices
from quantkit.evaluate.metrics import batchless, sqnr_db
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
        self.cosines: list[float] = []  # one an image; NaN where FP32's is all zero or either not finite
        self.image_power: list[tuple[float, float]] = []  # (signal, noise) of each image, in order
        self.nonfinite = 0  # images whose output holds NaN or Inf (in one model only)
        self.single, self.dot, self.candidate_power = True, 0.0, 0.0  # pooled cosine: one value an image
        self.max_abs = 0.0
        self.top1_same = 0.0
        self.top5_overlap = 0.0
        self.unjudged = 0.0  # images' share whose FP32 class scores are NaN: out of top-1 and top-5
        self.winners: np.ndarray | None = None  # [C] positions FP32 gives each class (per-position outputs)
        self.classification = not (values or ordered)
        self.ordered = ordered
        self.labelled = labelled  # an ArgMax writes it: labels in any integer type (a uint8 class map)
        self.labels = True
        self.classes = 0  # the class axis' length (top-5 overlap of 5 classes or fewer says nothing)
        self.distributions = True  # FP32's rows along the class axis sum to 1, none below 0
        self.kinds: tuple[int, np.ndarray, np.ndarray] | None = None  # (axis, signal [K], noise [K])
        self.mixed = False  # batches of different kinds axes: no per-kind figure
        self.measured = False  # any value FP32 gave a number at (hq116 F1: all NaN read 'inf dB', a pass)

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
        whole = batchless(ref, images)  # hq138 F2: a label map's agreement counted per row read 1588 %
        if self.labels:
            same = _per_row(ref == cand, whole)
            self.top1_same += float(np.sum(np.mean(same, axis=1))) if same.shape[1] else float(len(same))
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and Inf give NaN figures, not warnings
            self._add_errors(ref.astype(np.float64), cand.astype(np.float64), whole)
        axis = (axis if axis is not None else class_axis(ref, images)) if self.classification else None
        self.classification = axis is not None
        if axis is not None and not self.labels:
            classes = ref.shape[axis]
            rows_r = np.moveaxis(ref, axis, -1).reshape(-1, classes)
            rows_c = np.moveaxis(cand, axis, -1).reshape(-1, classes)
            positions = max(len(rows_r) // max(len(ref), 1), 1)  # each image weighs alike: its positions'
            unread = np.isnan(rows_r).any(axis=1)  # FP32's NaN scores rank nothing (hq137 F2: 60 % read
            if unread.any():  # where its finite rows agreed on 20 %, and --max-drop 50 passed)
                self.unjudged += float(unread.sum()) / positions
                rows_r, rows_c = rows_r[~unread], rows_c[~unread]
            winners = rows_r.argmax(1)
            self.top1_same += float(np.sum(winners == rows_c.argmax(1))) / positions
            self.distributions = self.distributions and _distributions(rows_r)
            if positions > 1:
                counts = np.bincount(winners, minlength=classes)
                self.winners = counts if self.winners is None else self.winners + counts
            self.classes = classes
            k = min(5, classes)
            top_r, top_c = top_indices(rows_r, k), top_indices(rows_c, k)
            shared = (top_r[:, :, None] == top_c[:, None, :]).any(axis=2).sum()
            self.top5_overlap += float(shared) / k / positions

    def _add_errors(self, ref64: np.ndarray, cand64: np.ndarray, whole: bool = False) -> None:
        """The SQNR, cosine and largest-error sums of one batch [N, ...] (float64); whole: the batch's
        output is one row, its first axis no images'."""
        # NaN or an infinity at the same place in both models (an -inf mask by design; a NaN FP32 makes
        # itself, which its findings name: hq74 4) is no error: hunt43 F3 read '-inf dB' and NaN for a
        # model at 44.4 dB on its finite values
        # FP32's own NaN measures nothing, whatever the candidate gives there (hq115 F7: a finite candidate
        # read -inf dB and 'broken here' where FP32 alone was NaN on a 3e38 input)
        same = np.isnan(ref64) | (~np.isfinite(ref64) & (ref64 == cand64))
        self.measured = self.measured or not bool(np.isnan(ref64).all())  # hq137 F7: empty, not inf
        if same.any():
            ref64, cand64 = np.where(same, 0.0, ref64), np.where(same, 0.0, cand64)
        diff = ref64 - cand64
        squared = diff * diff
        self.signal += float(np.sum(ref64 * ref64))
        self.noise += float(np.sum(squared))
        self.dot += float(np.sum(ref64 * cand64))
        self.candidate_power += float(np.sum(cand64 * cand64))
        self.single = self.single and ref64[0].size == 1 if len(ref64) else self.single
        self._add_kinds(ref64, diff)
        self.max_abs = _largest(self.max_abs, float(np.max(np.abs(diff))) if diff.size else 0.0)
        flat_r, flat_c = _per_row(ref64, whole), _per_row(cand64, whole)
        norms_r, norms_c = np.linalg.norm(flat_r, axis=1), np.linalg.norm(flat_c, axis=1)
        dots = np.sum(flat_r * flat_c, axis=1)
        row_noise = np.sum(_per_row(squared, whole), axis=1)  # each image's share of the noise summed above
        self.image_power.extend(zip((norms_r**2).tolist(), row_noise.tolist(), strict=True))
        self.nonfinite += int(np.sum(~(np.isfinite(norms_r * norms_c) & np.isfinite(dots))))
        self.cosines.extend(cosines(norms_r, norms_c, dots))

    def _cosine(self) -> float:
        """Mean per-image cosine; pooled where an image has one value (hunt41 F8: [N, 1] read 1.00000)."""
        if not self.cosines or not self.single:
            defined = [c for c in self.cosines if not math.isnan(c)]
            return float(np.mean(defined)) if defined and not self.nonfinite else float("nan")
        norms = np.sqrt(np.array([self.signal, self.candidate_power]))
        return cosines(norms[:1], norms[1:], np.array([self.dot]))[0]

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
        self.image_power.extend(later.image_power)
        self.nonfinite += later.nonfinite
        self.measured = self.measured or later.measured
        self.single, self.dot = self.single and later.single, self.dot + later.dot
        self.candidate_power += later.candidate_power
        self.max_abs = _largest(self.max_abs, later.max_abs)
        self.top1_same += later.top1_same
        self.top5_overlap += later.top5_overlap
        self.unjudged += later.unjudged
        if later.winners is not None:
            self.winners = later.winners if self.winners is None else self.winners + later.winners
        self.classification = self.classification and later.classification
        self.distributions = self.distributions and later.distributions
        self.labels = self.labels and later.labels
        self.classes = max(self.classes, later.classes)
        if later.mixed:
            self.mixed, self.kinds = True, None
        elif self.kinds is not None or later.kinds is not None:
            self._fold_kinds(later.kinds)

    def result(self, images: int | None = None) -> OutputMetrics:
        """images: how many images were compared; an image is named (worst_image) only where each row
        of the output was one (hq108 F2: the 192 rows of a batchless [192, 64] output read as 'sample 2117'
        of 61 images)."""
        count = len(self.cosines)
        per_image = images is None or len(self.image_power) == images
        judged = count - self.unjudged
        scored = (
            (self.classification or self.labels) and judged > 0 and not self.one_sided() and not self.ordered
        )
        return OutputMetrics(
            name=self.name,
            sqnr_db=sqnr_db(self.signal, self.noise) if self.measured else math.nan,
            cosine=self._cosine(),
            max_abs_error=self.max_abs if self.measured else math.nan,
            top1_agreement=self.top1_same / judged if scored else None,
            top5_overlap=self.top5_overlap / judged
            if scored and self.classification and not self.labels and self.classes > 5
            else None,
            noise_images=sum(c < NOISE_COSINE for c in self.cosines) + self.nonfinite,
            worst_kind=self._worst_kind(),
            labels=self.labels and count > 0,
            selected=self.ordered,
            probabilities=bool(scored) and not self.labels and self.distributions,
            worst_image=None
            if self.labels or self.ordered or not per_image
            else worst_image(self.image_power),
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


# An image whose own SQNR stands apart from the rest is named (compare's warning): one bright photo a
# retouching net cast green read 11.4 dB where the other 23 read 25.8-33 dB and the pooled 24.4 dB said
# nothing (hq106 F1). Apart: at most OUTLIER_SHARE of the images (at least 1) below a gap of GAP_DB to the
# next, and IMAGE_GAP_DB below the other images' pooled figure; a healthy classifier's worst of 200 read
# 22.0 dB against 36.1 median (SqueezeNet), but 0.8 dB from the next. Images whose output carries less
# than WEIGHTY_SHARE of the median image's power are the noise warning's (a near-empty map), not this one's.
IMAGE_GAP_DB, GAP_DB, OUTLIER_SHARE, FEW = 10.0, 8.0, 0.05, 8
WEIGHTY_SHARE = 0.25


def worst_image(power: list[tuple[float, float]]) -> tuple[int, float, float] | None:
    """(index, SQNR dB, the other images' pooled dB) of the worst image where it stands apart (above);
    else None. power: (signal, noise) of each image, in order."""
    finite = [(k, s, n) for k, (s, n) in enumerate(power) if math.isfinite(s) and math.isfinite(n)]
    if len(finite) < FEW:
        return None
    floor = WEIGHTY_SHARE * float(np.median([s for _, s, _ in finite]))
    ranked = sorted((sqnr_db(s, n), k) for k, s, n in finite if s > 0 and s >= floor)
    if len(ranked) < FEW:
        return None
    apart = max(1, math.ceil(OUTLIER_SHARE * len(ranked)))
    gaps = [ranked[i + 1][0] - ranked[i][0] for i in range(apart)]
    worst, index = ranked[0]
    # the others' pooled figure, not all images': the image carrying the noise pulls the pooled figure
    # to about its own + 10 log10(n) dB (hq137 F8: 11.95 dB among 11 at 33-42 dB, pooled 16.59, unnamed)
    others = [(s, n) for k, s, n in finite if k != index]
    pooled = sqnr_db(sum(s for s, _ in others), sum(n for _, n in others))
    return (index, worst, pooled) if max(gaps) >= GAP_DB and worst <= pooled - IMAGE_GAP_DB else None


def _distributions(rows: np.ndarray) -> bool:
    """Whether every row [R, C] is a probability distribution (a Softmax's: none below 0, each summing to
    1 within float32 rounding) or its logarithm (a LogSoftmax's: none above 0, their exponentials summing
    to 1; hq105 F7)."""
    if not rows.size:
        return False
    if np.all(rows >= 0):
        return sums_to_one(rows, 1)
    return bool(np.all(rows <= 0)) and sums_to_one(np.exp(rows.astype(np.float64)), 1)


def cosines(ref_norms: np.ndarray, cand_norms: np.ndarray, dots: np.ndarray) -> list[float]:
    """Each image's cosine similarity from its outputs' norms and dot product [N]: 0 where only the
    candidate's is all zero (hq74 1: a candidate whose output collapsed to zero read 1.00000 and was never
    called noise), NaN where FP32's is (no direction to agree with, whatever the candidate's: an empty
    mask; hq76 5: a 59 dB ReLU output was 'mostly noise on 4 images', hq77 3: a dead candidate read 0.90
    from the 9 of 10 images both left empty) or either holds NaN or Inf."""
    norms = ref_norms * cand_norms
    with np.errstate(invalid="ignore", over="ignore"):
        zeros = np.where(ref_norms == 0, np.nan, 0.0)
        found = np.divide(dots, norms, out=zeros, where=norms > 0)
    return [float(c) for c in np.where(np.isfinite(norms) & np.isfinite(dots), found, np.nan)]


def _largest(a: float, b: float) -> float:
    """max(a, b), NaN where either is (Python's max(0.0, nan) is 0.0: hq74 3 read a NaN output's largest
    error as 0.0)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def _per_row(x: np.ndarray, whole: bool = False) -> np.ndarray:
    """x [N, ...] as [N, M]; also where N is 0 (an output of the rows a NonMaxSuppression kept: none).
    whole: x is one image's (metrics.batchless): [1, M]."""
    if whole:
        return x.reshape(1, -1)
    return x.reshape(x.shape[0], -1) if x.size else x.reshape(x.shape[0], 0)
