"""Scores a candidate model's drop against FP32 on validation images, in points of one metric.

The FP32 model runs once: per image, only what the metric needs is kept (its top-1 class, or its
detections), so memory follows the number of images only through those few values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from quantkit.config import BudgetMetric, DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.budget_refusals import refuse_anchors, shape_refusal, values_refusal
from quantkit.evaluate.budget_units import points_lost
from quantkit.evaluate.class_scores import (
    class_each,
    class_views,
    holds_labels,
    is_class_sequence,
    is_classification,
    is_label_column,
    probability_axis,
)
from quantkit.evaluate.compare import scored_output
from quantkit.evaluate.detector_options import decode_grid
from quantkit.evaluate.end2end import (
    is_listed_head,
    joined_head,
    listed_detections,
    require_listed,
    split_head,
)
from quantkit.evaluate.heads import (
    COMBINED,
    CombinedHead,
    combined_head,
    combined_rows,
    head_masks,
    require_sizes,
)
from quantkit.evaluate.labels import class_lookup, label_of
from quantkit.evaluate.metrics import (
    Detections,
    anchors_last,
    detections,
    final_detections,
    is_yolo_head,
    match_boxes,
    without_masks,
    yolov8_rows,
)
from quantkit.evaluate.sanity import below_chance
from quantkit.evaluate.text_maps import is_probability_map, map_view, text_boxes
from quantkit.results import Batch, Feed, feed_rows


class Runner(Protocol):
    """A model to score: runtime.Session, or anything with its run_batch."""

    def run_batch(self, feed: Feed) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class ChunkReference:
    """FP32's summary of one chunk of the validation images, batch by batch: all that scoring a candidate
    on that chunk needs (it pickles, for a worker). summaries: (top-1 class or anchor class [N], anchor
    mask or None) per batch; final: FP32's final boxes per image (the boxes metric); labels [N] per
    batch (top1; -1 where unknown)."""

    metric: BudgetMetric
    output: str
    threshold: float
    grid: np.ndarray | None
    summaries: tuple[tuple[np.ndarray, np.ndarray | None], ...]
    final: tuple[list[Detections], ...]
    labels: tuple[np.ndarray, ...]
    detector: DetectorHead | None = None
    masks: int = 0  # the head's trailing mask coefficients (metrics.mask_columns), dropped before scoring
    # agreement: the other class-score outputs, and FP32's top-1 of each per batch (hunt41 F1: a captcha
    # model's five digit heads were judged by the first alone, and a head losing 6.25 points passed 5)
    also: tuple[str, ...] = ()
    also_summaries: tuple[tuple[np.ndarray, ...], ...] = ()
    labelled: frozenset[str] = frozenset()  # outputs an ArgMax writes (graph.output_kinds.label_outputs)
    split: tuple[str, str, str] | None = None  # a DETR head's boxes, scores, labels (end2end.split_head)
    combined: CombinedHead | None = None  # a GFL or SSD head's outputs (heads.COMBINED)
    pixels: tuple[tuple[str, int], ...] = ()  # per-pixel class probabilities' maps and their class axis

    def counts(self, candidate: Runner, batches: Iterable[Batch]) -> Counts:
        """(points lost, out of) on this chunk for each output scored (`output`, then `also`): integers, so
        chunks add up exactly in any grouping."""
        if self.metric is BudgetMetric.boxes or _listed(self.metric, self.detector):
            return (self._boxes_counts(candidate, batches),)
        lost = [0] * (1 + len(self.also))
        total = [0] * len(lost)
        per_batch = self.also_summaries or ((),) * len(self.summaries)
        rows = zip(batches, self.summaries, self.labels, per_batch, strict=True)
        for batch, (ref, ref_mask), labels, others in rows:
            outputs = read_as(
                candidate.run_batch(batch.data), self.detector, self.split, self.combined, dict(self.pixels)
            )
            out = without_masks(outputs[self.output], self.masks)
            if self.metric is BudgetMetric.recall:
                assert ref_mask is not None
                cls, mask = _detected(out, self.threshold, self.detector)
                lost[0] += int(ref_mask.sum()) - int((ref_mask & mask & (cls == ref)).sum())
                total[0] += int(ref_mask.sum())
            elif self.metric is BudgetMetric.agreement:
                for k, (scores, top) in enumerate(
                    zip([out, *(outputs[n] for n in self.also)], [ref, *others], strict=True)
                ):
                    named = (self.output, *self.also)[k] in self.labelled
                    lost[k] += top.size - int(
                        (picked(scores, named) == top).sum()
                    )  # per position of [N, T, C]
                    total[k] += top.size
            else:
                known = labels >= 0
                hits = int((class_each(out)[known] == labels[known]).sum())
                lost[0] += int((ref.reshape(labels.shape)[known] == labels[known]).sum()) - hits
                total[0] += int(known.sum())
        return tuple(zip(lost, total, strict=True))

    def _scored(self, candidate: Runner, batch: Batch) -> np.ndarray:
        """The candidate's output the metric reads on `batch` (read_as, without mask coefficients)."""
        outputs = read_as(
            candidate.run_batch(batch.data), self.detector, self.split, self.combined, dict(self.pixels)
        )
        return without_masks(outputs[self.output], self.masks)

    def _boxes_counts(self, candidate: Runner, batches: Iterable[Batch]) -> tuple[int, int]:
        """FP32's final boxes the candidate misses plus the boxes it adds (recall of an end-to-end head's:
        only those it misses), and FP32's boxes."""
        added = self.metric is BudgetMetric.boxes
        differences = total = 0
        for batch, reference in zip(batches, self.final, strict=True):
            out = self._scored(candidate, batch)
            for ref, one in zip(reference, out, strict=True):
                found, extra, _ = match_boxes(
                    ref, _final(one, self.threshold, self.grid, self.detector), self.threshold
                )
                differences += len(ref[0]) - found + (extra if added else 0)
                total += len(ref[0])
        return differences, total


class Validator:
    def __init__(
        self,
        reference: Runner,
        chunks: Callable[[], Iterable[Batch]] | Sequence[Callable[[], Iterable[Batch]]],
        metric: BudgetMetric,
        folder: Path,
        classes: Sequence[str] | None,
        threshold: float,
        detector: DetectorHead | None = None,
        input_size: tuple[int, int] | None = None,
        values: frozenset[str] = frozenset(),
        label_outputs: frozenset[str] = frozenset(),
        counted: bool = True,
    ) -> None:
        """FP32 over every chunk of the validation images (`chunks`: each gives its batches anew on every
        call; one callable is one chunk). detector, input_size: how to read a detector head's boxes (the
        boxes metric). values: the outputs the graph computes as features (graph.output_kinds): no class
        scores to agree on. label_outputs: an ArgMax's or ArgMin's outputs, agreed on as the labels they
        are. counted: whether the boxes metric needs FP32's boxes here (not on a calibration sample that
        checks only how the head reads: hq82 1, a background photo first refused a face detector)."""
        self.chunks = [chunks] if callable(chunks) else list(chunks)
        self.threshold = threshold
        lookup = class_lookup(classes) if classes else {}
        count = len(classes) if classes else 0  # lookup holds more names than classes
        self.grid: np.ndarray | None = None
        output: str | None = None
        also: tuple[str, ...] = ()  # agreement: the other class-score outputs, each scored too
        masks = 0
        split: tuple[str, str, str] | None = None
        combined: CombinedHead | None = None
        pixels: dict[str, int] = {}
        parts: list[tuple[list[Any], list[list[Detections]], list[np.ndarray], list[Any]]] = []
        self.read: list[Path] = []  # the images FP32 ran on (an unreadable one is skipped by the loader)
        for batches in self.chunks:
            summaries: list[tuple[np.ndarray, np.ndarray | None]] = []
            final: list[list[Detections]] = []  # boxes metric: FP32's final boxes per image
            labels: list[np.ndarray] = []
            others: list[tuple[np.ndarray, ...]] = []
            for batch in batches():
                self.read.extend(batch.paths)
                raw = reference.run_batch(batch.data)
                if output is None and detector is DetectorHead.end2end:
                    # decided once: a batch of whole-number scores reads as labels; one image's list
                    # only where the model runs one image at a time
                    split = split_head(raw, 1 if getattr(reference, "fixed_batch", None) == 1 else 0)
                if output is None and detector in COMBINED:
                    combined = combined_head(raw, detector, input_size)
                if output is None:  # a segmenter's softmax, per pixel as shrink reads it (hq62 D)
                    pixels = {n: a for n, v in raw.items() if v.ndim == 4 and (a := probability_axis(v))}
                outputs = read_as(raw, detector, split, combined, pixels)
                if output is None:
                    metric, wanted = _choose(
                        metric, outputs, bool(lookup), detector, feed_rows(batch.data), values, label_outputs
                    )
                    output, also = wanted[0], wanted[1:] if metric is BudgetMetric.agreement else ()
                    if metric is BudgetMetric.top1:  # the labels' classes, as compare and shrink read them
                        output = scored_output(outputs, count, label_outputs)
                    if metric is BudgetMetric.boxes and detector is not DetectorHead.db:
                        assert detector is not None
                        self.grid = decode_grid(detector, input_size, outputs[output].shape[1])
                ref = outputs[output]
                if _listed(metric, detector):
                    require_listed(output, ref)
                elif metric in (BudgetMetric.recall, BudgetMetric.boxes) and detector is not DetectorHead.db:
                    masks = head_masks(output, ref, outputs, detector or DetectorHead.yolo)
                    ref = without_masks(ref, masks)
                    if detector is not None:
                        require_sizes(output, ref, threshold, detector)
                if metric is BudgetMetric.boxes or _listed(metric, detector):
                    final.append([_final(one, threshold, self.grid, detector) for one in ref])
                elif metric is BudgetMetric.recall:
                    summaries.append(_detected(ref, threshold, detector))
                else:
                    summaries.append((picked(ref, output in label_outputs), None))
                    others.append(tuple(picked(outputs[name], name in label_outputs) for name in also))
                labels.append(
                    np.array([label_of(p, folder, lookup) for p in batch.paths]) if lookup else np.array([])
                )
            parts.append((summaries, final, labels, others))
        if output is None:
            raise ConfigError("no validation image could be read; check --validation")
        self.metric, self.output = metric, output
        self.references = [
            ChunkReference(
                metric,
                output,
                threshold,
                self.grid,
                tuple(s),
                tuple(f),
                tuple(lab),
                detector,
                masks,
                also,
                tuple(o) if also else (),
                label_outputs,
                split,
                combined,
                tuple(sorted(pixels.items())),
            )
            for s, f, lab, o in parts
        ]
        if metric is BudgetMetric.top1 and not any(
            (lab >= 0).any() for r in self.references for lab in r.labels
        ):
            raise ConfigError(
                "no validation image's folder or name prefix matches a class in --labels; name images "
                "<class>_*.jpg or put them in <class>/ folders"
            )
        if metric is BudgetMetric.top1:
            _require_sensible_reference(self.references, count)
        if (
            counted
            and metric is BudgetMetric.boxes
            and not any(len(boxes) for ref in self.references for batch in ref.final for boxes, _, _ in batch)
        ):
            raise ConfigError(  # convert has no --score-threshold (hq82 1): the API's score_threshold
                "FP32 finds no final box above the score threshold on the validation images: --max-drop has "
                "nothing to count; give --validation images with the model's objects"
            )

    def drop(self, candidate: Runner) -> float:
        """Points lost against FP32 on the validation images, chunk by chunk in this process."""
        return points_lost(*self.tally(candidate))

    def tally(self, candidate: Runner) -> tuple[int, int]:
        """(lost, out of) against FP32 on the validation images, chunk by chunk in this process."""
        pairs = zip(self.references, self.chunks, strict=True)
        return summed(reference.counts(candidate, batches()) for reference, batches in pairs)


def read_as(
    outputs: dict[str, np.ndarray],
    detector: DetectorHead | None,
    split: tuple[str, str, str] | None = None,
    combined: CombinedHead | None = None,
    pixels: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Outputs as the metrics read them: [N, C, 1, ..., 1] scores as [N, C], and under --detector yolov8
    a head with its anchors last ([N, 4 + C, A]) as the [N, A, 5 + C] rows compare reads too (--max-drop
    refused NudeNet's YOLOv8n: 'needs an output shaped [N, anchors, 5 + classes]'). split: a DETR head's
    boxes, scores, labels (end2end.split_head), also read as one listed head named by all three. combined: a
    GFL or SSD head's outputs, read as those rows under its first scores' name (first: the head the budget
    reads), the others left out. pixels: maps of class probabilities [N, C, H, W] or [N, H, W, C] (the
    class axis FP32's gave) as [N, H x W, C], probabilities at each position (decided on FP32, read so in
    both models)."""
    if combined is not None:
        rows = combined_rows(outputs, combined)
        outputs = {combined.first: rows} | {n: v for n, v in outputs.items() if n not in combined.outputs}
    views = class_views(outputs)
    if split is not None:
        views["+".join(split)] = joined_head(outputs, split)
    if detector is DetectorHead.yolov8:
        views = {name: yolov8_rows(v) if anchors_last(v) else v for name, v in views.items()}
    for name, axis in (pixels or {}).items():
        if name in views and views[name].ndim == 4:
            value = np.moveaxis(views[name], axis, -1)
            views[name] = value.reshape(value.shape[0], -1, value.shape[-1])
    if detector is DetectorHead.db:  # probability maps as [N, H, W]
        views = {name: map_view(v) if v.ndim == 4 and v.shape[1] == 1 else v for name, v in views.items()}
    return views


def _detected(
    head: np.ndarray, threshold: float, detector: DetectorHead | None
) -> tuple[np.ndarray, np.ndarray]:
    """(class, detected) per anchor of a head [N, A, 5 + C] (metrics.detections), or per pixel of a DB
    text detector's maps [N, H, W] (above the threshold; the class one 0 for every pixel, not an array
    of them held per validation image)."""
    if detector is DetectorHead.db:
        return np.zeros((), dtype=np.int64), head > threshold
    return detections(head, threshold)


def _final(
    one: np.ndarray, threshold: float, grid: np.ndarray | None, detector: DetectorHead | None
) -> Detections:
    """One image's final boxes: a head's [A, 5 + C] after threshold and NMS, or a map's [H, W] text boxes."""
    if detector is DetectorHead.db:
        return text_boxes(one, threshold)
    if detector is DetectorHead.end2end:
        return listed_detections(one, threshold)
    return final_detections(one, threshold, grid, detector is DetectorHead.gfl)


def _listed(metric: BudgetMetric, detector: DetectorHead | None) -> bool:
    """An end-to-end head's detection metric: its listed final boxes stand for the anchors too."""
    return detector is DetectorHead.end2end and metric in (BudgetMetric.recall, BudgetMetric.boxes)


Counts = tuple[tuple[int, int], ...]  # (lost, total) of each output a metric scores


def summed(counts: Iterable[Counts]) -> tuple[int, int]:
    """Each chunk's counts added up, output by output; the (lost, total) of the output that lost the most
    points (the first on a tie)."""
    lost: list[int] = []
    total: list[int] = []
    for chunk in counts:
        lost = lost or [0] * len(chunk)
        total = total or [0] * len(chunk)
        for k, (one_lost, one_total) in enumerate(chunk):
            lost[k], total[k] = lost[k] + one_lost, total[k] + one_total
    if not lost:
        return 0, 0
    pairs = list(zip(lost, total, strict=True))
    return max(pairs, key=lambda pair: points_lost(*pair))


def _require_sensible_reference(references: Sequence[ChunkReference], classes: int) -> None:
    """Refuse a top-1 budget FP32 itself fails: below twice chance on the labelled validation images
    (evaluate.sanity's rule), every trial loses about nothing and any model passes."""
    right = known = 0
    for reference in references:
        for (scores, _), labels in zip(reference.summaries, reference.labels, strict=True):
            mask = labels >= 0
            right += int((scores[mask] == labels[mask]).sum())
            known += int(mask.sum())
    top1 = right / max(known, 1)
    if below_chance(top1, classes):
        raise ConfigError(
            f"--max-drop counts points of top-1 against --labels, but FP32's own top-1 is {100 * top1:.2f}% "
            f"on the validation images, below twice chance ({200 / classes:.2f}%), so any model would "
            "pass: the preprocessing or the --labels order is likely wrong; check them, or use --metric "
            "agreement"
        )


def _choose(
    metric: BudgetMetric,
    outputs: dict[str, np.ndarray],
    labelled: bool,
    detector: DetectorHead | None,
    images: int | None = None,
    values: frozenset[str] = frozenset(),
    labels: frozenset[str] = frozenset(),
) -> tuple[BudgetMetric, tuple[str, ...]]:
    """(the metric, the outputs it reads: the first alone but for agreement, which scores each). detector:
    how the head's boxes read (None: they cannot be, no boxes metric); db: the heads are
    probability maps [N, H, W]. images: how many the outputs are of (class scores have a row each).
    values: outputs that hold features, whatever their shape (with labels, the scores are the user's
    word). labels: outputs of labels an ArgMax / ArgMin gives (integers), agreed on as they are."""
    boxes = detector is not None
    if detector is None and metric in (BudgetMetric.auto, BudgetMetric.agreement):
        refuse_anchors("--max-drop", outputs)  # per-anchor agreement on an SSD head (hq63b F1)
    sequences = {n for n, v in outputs.items() if is_class_sequence(v)}  # a recognizer's, not a head
    heads = [n for n, v in outputs.items() if _is_head(v, detector) and n not in sequences]
    scores = [
        n
        for n, v in outputs.items()
        if (is_classification(v, images) and (labelled or n not in values))
        or n in sequences
        or (n in labels and np.issubdtype(v.dtype, np.integer))
    ]
    # --labels: a class an image, from its scores or an ArgMax's one label
    per_image = [n for n in scores if n not in sequences and (n not in labels or is_label_column(outputs[n]))]
    detection = (BudgetMetric.recall, BudgetMetric.boxes)
    if metric is BudgetMetric.auto:
        metric = (
            BudgetMetric.top1
            if labelled and per_image
            else (BudgetMetric.boxes if boxes else BudgetMetric.recall)
            if heads
            else BudgetMetric.agreement
        )
    wanted = heads if metric in detection else per_image if metric is BudgetMetric.top1 else scores
    if not wanted:
        shape = (
            "[N, 1, H, W] probabilities (a text detector's map)"
            if metric in detection and detector is DetectorHead.db
            else "[N, K, x0 y0 x1 y1 score class] (an end-to-end head's detections)"
            if metric in detection and detector is DetectorHead.end2end
            else "[N, anchors, 5 + classes] (or [N, 4 + classes, anchors] with --detector yolov8)"
            if metric in detection
            else "[N, classes]"
            if metric is BudgetMetric.top1
            else "[N, classes] (or probabilities at each position or pixel)"
        )
        if values and metric in (BudgetMetric.top1, BudgetMetric.agreement):
            raise ConfigError(values_refusal("--max-drop", values))
        raise ConfigError(shape_refusal(metric.value, shape))
    return metric, tuple(wanted)


def picked(output: np.ndarray, labelled: bool = False) -> np.ndarray:
    """The classes `output` gives at each position: its labels where an ArgMax writes it (`labelled`, in
    any integer type: a segmenter's uint8 class map, review54 M1) or it holds labels by type
    (class_scores.holds_labels), else its top-1 over the last axis."""
    return output if labelled or holds_labels(output.dtype) else output.argmax(-1)


def _is_head(output: np.ndarray, detector: DetectorHead | None) -> bool:
    """output is what `detector` reads: a map, a list of final detections, or a YOLO-style head."""
    if detector is DetectorHead.db:
        return is_probability_map(output)
    if detector is DetectorHead.end2end:
        return is_listed_head(output)
    return is_yolo_head(output)
