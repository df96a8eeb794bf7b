"""Scores a candidate model's drop against FP32 on validation images, in points of one metric.

The FP32 model runs once: per image, only what the metric needs is kept (its top-1 class, or its
detections), so memory follows the number of images only through those few values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from quantkit.config import BudgetMetric, DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.compare import decode_grid, label_of
from quantkit.evaluate.metrics import (
    Detections,
    detections,
    final_detections,
    is_classification,
    is_yolo_head,
    match_boxes,
)
from quantkit.results import Batch
from quantkit.runtime import Session


class Validator:
    def __init__(
        self,
        reference: Session,
        batches: Callable[[], Iterable[Batch]],
        metric: BudgetMetric,
        folder: Path,
        classes: Sequence[str] | None,
        threshold: float,
        detector: DetectorHead | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        """detector, input_size: how to read a detector head's boxes (the boxes metric)."""
        self.batches = batches
        self.threshold = threshold
        lookup = {c: i for i, c in enumerate(classes)} if classes else {}
        self.summaries: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.final: list[list[Detections]] = []  # boxes metric: FP32's final boxes per image
        self.grid: np.ndarray | None = None
        self.labels: list[np.ndarray] = []
        output: str | None = None
        for batch in batches():
            outputs = reference.run_batch(batch.data)
            if output is None:
                metric, output = _choose(metric, outputs, bool(lookup), detector is not None)
                if metric is BudgetMetric.boxes:
                    assert detector is not None
                    self.grid = decode_grid(detector, input_size, outputs[output].shape[1])
            ref = outputs[output]
            if metric is BudgetMetric.boxes:
                self.final.append([final_detections(one, threshold, self.grid) for one in ref])
            elif metric is BudgetMetric.recall:
                self.summaries.append(detections(ref, threshold))
            else:
                self.summaries.append((ref.argmax(1), None))
            self.labels.append(
                np.array([label_of(p, folder, lookup) for p in batch.paths]) if lookup else np.array([])
            )
        if output is None:
            raise ConfigError("no validation image could be read; check --validation")
        self.metric, self.output = metric, output
        if metric is BudgetMetric.top1 and not any((lab >= 0).any() for lab in self.labels):
            raise ConfigError(
                "no validation image's folder or name prefix matches a class in --labels; name images "
                "<class>_*.jpg or put them in <class>/ folders"
            )

    def drop(self, candidate: Session) -> float:
        """Points lost against FP32 on the validation images."""
        if self.metric is BudgetMetric.boxes:
            return self._boxes_drop(candidate)
        hits = total = fp32_hits = 0
        for batch, (ref, ref_mask), labels in zip(self.batches(), self.summaries, self.labels, strict=True):
            out = candidate.run_batch(batch.data)[self.output]
            if self.metric is BudgetMetric.recall:
                assert ref_mask is not None
                cls, mask = detections(out, self.threshold)
                hits += int((ref_mask & mask & (cls == ref)).sum())
                total += int(ref_mask.sum())
            elif self.metric is BudgetMetric.agreement:
                hits += int((out.argmax(1) == ref).sum())
                total += ref.size
            else:
                known = labels >= 0
                hits += int((out.argmax(1)[known] == labels[known]).sum())
                fp32_hits += int((ref[known] == labels[known]).sum())
                total += int(known.sum())
        if self.metric is BudgetMetric.top1:
            return points_lost(fp32_hits - hits, total)
        return points_lost(total - hits, total)

    def _boxes_drop(self, candidate: Session) -> float:
        """FP32's final boxes the candidate misses, plus the boxes it adds, per 100 FP32 boxes."""
        differences = total = 0
        for batch, reference in zip(self.batches(), self.final, strict=True):
            out = candidate.run_batch(batch.data)[self.output]
            for ref, one in zip(reference, out, strict=True):
                found, extra, _ = match_boxes(
                    ref, final_detections(one, self.threshold, self.grid), self.threshold
                )
                differences += len(ref[0]) - found + extra
                total += len(ref[0])
        return points_lost(differences, total)


def points_lost(lost: int, total: int) -> float:
    """100 lost / total, from the integer counts: 5 of 250 is 2.0 exactly, so a budget of 2 holds (the
    same figure as 100 (1 - 245/250) reads 2.0000000000000018 and failed it)."""
    return 100.0 * lost / total if total else 0.0


def _choose(
    metric: BudgetMetric, outputs: dict[str, np.ndarray], labelled: bool, boxes: bool
) -> tuple[BudgetMetric, str]:
    """boxes: the head's boxes can be read (--detector)."""
    heads = [n for n, v in outputs.items() if is_yolo_head(v)]
    scores = [n for n, v in outputs.items() if is_classification(v)]
    detection = (BudgetMetric.recall, BudgetMetric.boxes)
    if metric is BudgetMetric.auto:
        metric = (
            BudgetMetric.top1
            if labelled and scores
            else (BudgetMetric.boxes if boxes else BudgetMetric.recall)
            if heads
            else BudgetMetric.agreement
        )
    wanted = heads if metric in detection else scores
    if not wanted:
        shape = "[N, anchors, 5 + classes]" if metric in detection else "[N, classes]"
        raise ConfigError(f"--metric {metric.value} needs an output shaped {shape}; none has that shape")
    return metric, wanted[0]
