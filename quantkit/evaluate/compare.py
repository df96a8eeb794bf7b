"""The compare loop: both models over the same batches, accuracy with or without labels."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from quantkit.config import DetectorHead
from quantkit.errors import ConfigError, ModelError
from quantkit.evaluate.class_scores import TopK, class_views, is_classification, is_label_column, logits_axis
from quantkit.evaluate.detector_options import decode_grid
from quantkit.evaluate.end2end import (
    add_listed,
    is_listed_head,
    joined_head,
    require_listed,
    rows_differ,
    split_head,
)
from quantkit.evaluate.figure_warnings import sign_region
from quantkit.evaluate.heads import (
    COMBINED,
    CombinedHead,
    combined_head,
    combined_rows,
    head_layout,
    head_masks,
    head_rows,
    require_sizes,
)
from quantkit.evaluate.labels import class_lookup, label_of
from quantkit.evaluate.metrics import (
    BoxAgreement,
    DetectionRecall,
    is_yolo_head,
    sqnr_db,
    without_masks,
)
from quantkit.evaluate.output_errors import OutputErrors
from quantkit.evaluate.output_noise import add_signs, channel_signs
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.evaluate.ssd import background_pairs
from quantkit.evaluate.text_maps import PixelRecall, TextBoxAgreement, is_probability_map, map_view
from quantkit.evaluate.variation import Variation, hides, steady_warning
from quantkit.outcomes import Accuracy, OutputMetrics
from quantkit.results import Batch, Feed, feed_rows, feed_take
from quantkit.runtime import Runner


class Comparison:
    """Reference vs candidate outputs over a run of batches: per-output errors; with classes, top-1/top-5
    of both models; with a detection threshold, on YOLO-style outputs [N, A, 5 + C] the recall of the
    reference's detections per anchor and the agreement of the final boxes (`detector` says how to read
    them; yolox needs the input (H, W); db: on probability maps [N, 1, H, W], the text pixels kept and
    the text boxes a DB post-process reads). values: the outputs the graph computes as features
    (graph.output_kinds), given no class figures; maps: those a Conv or Resize computes, whose class
    logits at the input's size (`input_size`) get a top-1 agreement per pixel; ordered: those a TopK or
    NonMaxSuppression chose and ordered (graph.query.selection_ordered), given no agreement. `merge`
    adds a later shard's, so shards of one image list give the one-pass figures."""

    def __init__(
        self,
        folder: Path,
        classes: Sequence[str] | None,
        detection_threshold: float | None = None,
        detector: DetectorHead = DetectorHead.yolo,
        input_size: tuple[int, int] | None = None,
        values: frozenset[str] = frozenset(),
        maps: frozenset[str] = frozenset(),
        ordered: frozenset[str] = frozenset(),
        labels: frozenset[str] = frozenset(),
        axes: Mapping[str, int] | None = None,
        one_image: bool = False,
    ) -> None:
        self.folder = folder
        self.one_image = one_image  # the model runs one image at a time (its batch fixed at 1)
        self.axes = dict(axes or {})  # a rank-4 output -> the channel axis its graph lays out (graph.layouts)
        self.labels = labels  # outputs an ArgMax writes: top-1 against --labels reads the class each picks
        self.values = values
        self.ordered = ordered
        self.maps = maps
        self.classes = tuple(classes) if classes else None
        self.lookup = class_lookup(classes) if classes else {}
        self.detection_threshold = detection_threshold
        self.detector = detector
        self.input_size = input_size
        self.errors: dict[str, OutputErrors] = {}
        self.variations: dict[str, Variation] = {}  # what changes between images (evaluate.variation)
        self.signs: dict[str, np.ndarray] = {}  # float outputs' output_noise.channel_signs
        self.recalls: dict[str, DetectionRecall] = {}  # a map's PixelRecall too
        self.boxes: dict[str, BoxAgreement] = {}  # a map's TextBoxAgreement too
        self.ref_acc, self.cand_acc = TopK(), TopK()
        self.scored_output: str | None = None
        self.seen_shapes: dict[str, list[int]] = {}
        self.unequal: dict[str, int] = {}  # output -> images where the models kept different rows
        self.rows: dict[str, tuple[int, int]] = {}  # output -> rows each model kept over every image
        self.split: tuple[str, str, str] | None = None  # a DETR head's outputs, once found (split_head)
        self.anchors: tuple[str, str] | None = None  # an SSD head's scores and boxes (evaluate.ssd)
        self.combined: CombinedHead | None = None  # a GFL or SSD head's outputs, once found (heads.COMBINED)
        self.unlabelled, self.unlabelled_example = 0, ""  # with classes: images that match none
        self.count = 0

    def update(self, batch: Batch, ref_out: dict[str, np.ndarray], cand_out: dict[str, np.ndarray]) -> None:
        self.seen_shapes = {n: list(v.shape) for n, v in ref_out.items()}
        ref_out, cand_out = class_views(ref_out), class_views(cand_out)  # [N, C, 1, 1] scores as [N, C]
        threshold = self.detection_threshold
        if threshold is None and not self.count:  # per-anchor agreement of an SSD head, warned of: read
            self.anchors = next(iter(background_pairs(ref_out)), None)  # once, on the first batch
        if self.detector in COMBINED and threshold is not None and self.combined is None:
            self.combined = combined_head(ref_out, self.detector, self.input_size)
        for name in ref_out:
            self._count_rows(name, _rows(ref_out[name]), _rows(cand_out[name]))
            if ref_out[name].shape != cand_out[name].shape:
                if not rows_differ(ref_out[name].shape, cand_out[name].shape):
                    shapes = f"{list(ref_out[name].shape)} vs {list(cand_out[name].shape)}"
                    raise ConfigError(
                        f"output {name!r} has different shapes in the two models ({shapes}); compare a "
                        "model with its own converted version"
                    )
                self.unequal[name] = self.unequal.get(name, 0) + feed_rows(batch.data)
                continue
            images = feed_rows(batch.data)
            errors = self.errors.setdefault(
                name, OutputErrors(name, name in self.values, name in self.ordered, name in self.labels)
            )
            logits = logits_axis(ref_out[name], self.input_size) if name in self.maps else None
            errors.update(ref_out[name], cand_out[name], images, logits)
            self.variations.setdefault(name, Variation()).update(ref_out[name], cand_out[name], images)
            if ref_out[name].dtype.kind == "f" and cand_out[name].dtype.kind == "f":
                counts = channel_signs(ref_out[name], cand_out[name], self.axes.get(name))
                self.signs[name] = add_signs(self.signs.get(name), counts)
            if threshold is None:
                continue
            if self.detector is DetectorHead.db:
                self._text_map(name, ref_out[name], cand_out[name], threshold)
                continue
            if self.detector is DetectorHead.end2end:
                self._listed(name, ref_out[name], cand_out[name], threshold)
                continue
            if self.combined is None:
                ref, cand = (
                    head_rows(name, ref_out[name], self.detector),
                    head_rows(name, cand_out[name], self.detector),
                )
                self._head(name, ref, cand, ref_out, threshold)
        if self.combined is not None and threshold is not None:  # figures on the first scores' row
            ref, cand = (combined_rows(out, self.combined) for out in (ref_out, cand_out))
            self._head(self.combined.first, ref, cand, ref_out, threshold)
        if self.detector is DetectorHead.end2end and self.split is None:  # found once: a batch of no
            # detection (scores all 0) read as labels (review54 L1); one image's list only where the model
            # runs one at a time, never a last short batch of a batched model (review of hq61's reading)
            self.split = split_head(ref_out, 1 if self.one_image else 0)
        if self.split is not None and threshold is not None and set(self.split) <= set(ref_out):
            self._listed(
                self.split[0], joined_head(ref_out, self.split), joined_head(cand_out, self.split), threshold
            )
        self.count += feed_rows(batch.data)
        if self.lookup:
            classes = len(self.classes or ())  # not the lookup's: it holds more names than classes
            self.scored_output = self.scored_output or scored_output(ref_out, classes, self.labels)
            labels = np.array([label_of(p, self.folder, self.lookup) for p in batch.paths])
            known = labels >= 0
            self.unlabelled += int((~known).sum())
            self.unlabelled_example = self.unlabelled_example or next(
                (str(p) for p, k in zip(batch.paths, known, strict=True) if not k), ""
            )
            if known.any():
                self.ref_acc.update(ref_out[self.scored_output][known], labels[known])
                self.cand_acc.update(cand_out[self.scored_output][known], labels[known])

    def _head(
        self,
        name: str,
        ref: np.ndarray | None,
        cand: np.ndarray | None,
        outputs: dict[str, np.ndarray],
        threshold: float,
    ) -> None:
        """A detector head's rows [N, A, 5 + C] (heads.head_rows): its detections and final boxes."""
        if ref is None or cand is None or not is_yolo_head(ref):
            return
        masks = head_masks(name, ref, outputs, self.detector)
        ref, cand = without_masks(ref, masks), without_masks(cand, masks)
        require_sizes(name, ref, threshold, self.detector)
        self.recalls.setdefault(name, DetectionRecall(threshold)).update(ref, cand)
        if name not in self.boxes:
            grid = decode_grid(self.detector, self.input_size, ref.shape[1])
            self.boxes[name] = BoxAgreement(threshold, grid, self.detector is DetectorHead.gfl)
        self.boxes[name].update(ref, cand)

    def _text_map(self, name: str, ref: np.ndarray, cand: np.ndarray, threshold: float) -> None:
        """A DB detector's output: its text pixels and text boxes, where it is a probability map."""
        if not is_probability_map(ref):
            return
        ref, cand = map_view(ref), map_view(cand)
        self.recalls.setdefault(name, PixelRecall(threshold)).update(ref, cand)
        self.boxes.setdefault(name, TextBoxAgreement(threshold)).update(ref, cand)

    def _listed(self, name: str, ref: np.ndarray, cand: np.ndarray, threshold: float) -> None:
        """An end-to-end head's output: the final detections it lists, where it is such a list."""
        if not is_listed_head(ref):
            return
        require_listed(name, ref)
        recall = self.recalls.setdefault(name, DetectionRecall(threshold))
        add_listed(recall, self.boxes.setdefault(name, BoxAgreement(threshold, None)), ref, cand, threshold)

    def merge(self, later: Comparison) -> None:
        """Add what `later` saw on the images after this one's."""
        for mine, theirs in (
            (self.errors, later.errors),
            (self.recalls, later.recalls),
            (self.boxes, later.boxes),
            (self.variations, later.variations),
        ):
            for name, acc in theirs.items():
                if name in mine:
                    mine[name].merge(acc)  # type: ignore[arg-type]
                else:
                    mine[name] = acc  # type: ignore[assignment]
        for name, counts in later.signs.items():
            self.signs[name] = add_signs(self.signs.get(name), counts)
        self.ref_acc.merge(later.ref_acc)
        self.cand_acc.merge(later.cand_acc)
        self.scored_output = self.scored_output or later.scored_output
        self.split = self.split or later.split
        self.combined = self.combined or later.combined
        self.anchors = self.anchors or later.anchors
        self.seen_shapes = later.seen_shapes or self.seen_shapes
        for name, images in later.unequal.items():
            self.unequal[name] = self.unequal.get(name, 0) + images
        for name, (ref, cand) in later.rows.items():
            self._count_rows(name, ref, cand)
        self.unlabelled += later.unlabelled
        self.unlabelled_example = self.unlabelled_example or later.unlabelled_example
        self.count += later.count

    def unmatched(self) -> str | None:
        """A warning where some images compared match no class of the labels file, so their top-1 is not
        scored (hunt39: a typo'd folder, a stray photo, left out in silence); None where all match."""
        if not self.lookup or not self.unlabelled or self.unlabelled == self.count:
            return None  # none at all is refused as an error
        return (
            f"{self.unlabelled} of {self.count} image(s) match no class in the labels file (e.g. "
            f"{self.unlabelled_example}): compared, but left out of the top-1 / top-5 figures; name them "
            "<class>_*.jpg or put them in <class>/ folders"
        )

    def steady(self) -> tuple[str, ...]:
        """A warning for each float output whose pooled SQNR hides what changes between images."""
        found = (
            steady_warning(name, sqnr_db(errors.signal, errors.noise), self.variations[name].varying_db())
            for name, errors in self.errors.items()
            if name in self.variations and not errors.labels
        )
        return tuple(w for w in found if w)

    def signs_moved(self) -> tuple[str, ...]:
        """A warning for each output whose rare values above 0 moved (figure_warnings.sign_region)."""
        found = (sign_region(name, c, "these images", "the candidate") for name, c in self.signs.items())
        return tuple(w for w in found if w)

    def _count_rows(self, name: str, reference: int, candidate: int) -> None:
        """Add to the rows each model kept in output `name` (hq93 F1: 33 final boxes against 24 went
        unsaid)."""
        kept = self.rows.get(name, (0, 0))
        self.rows[name] = (kept[0] + reference, kept[1] + candidate)

    def unequal_rows(self) -> tuple[str, ...]:
        """A warning for each output that held a different number of rows in the two models on some images
        (end2end.rows_differ), whose figures then leave those images out."""
        return tuple(
            f"output {name!r} holds a different number of rows in the two models on {images} of {self.count} "
            f"image(s) ({self.rows[name][0]} rows in all in the reference, {self.rows[name][1]} in the "
            "candidate: the boxes a NonMaxSuppression or a score threshold kept, each model others), so no "
            "row stands for the same box in both: "
            + ("its figures leave those images out" if name in self.errors else "it has no figures")
            for name, images in sorted(self.unequal.items())
            if name not in (self.split or ())  # matched as the detections they list
        )

    def _with_varying(self, metrics: OutputMetrics) -> OutputMetrics:
        """The output's SQNR on what changes between images, where its pooled one hides that part."""
        variation = self.variations.get(metrics.name)
        varying = None if variation is None or metrics.labels else variation.varying_db()
        if not hides(metrics.sqnr_db, varying):
            return metrics
        return dataclasses.replace(metrics, varying_sqnr_db=varying)

    def result(self) -> tuple[list[OutputMetrics], Accuracy | None, Accuracy | None, int]:
        """(per-output metrics, reference and candidate accuracy with labels, images compared). An output
        with detection figures but no element figures (a list of another length in each model on every
        image: hq61, torchvision's detectors) gets its row, its element figures n/a."""
        found = {n: e.result(self.count) for n, e in self.errors.items()}
        found |= {n: _unmeasured(n) for n in self.recalls if n not in self.errors}
        metrics = [
            dataclasses.replace(
                m,
                detection_recall=self.recalls[n].recall,
                detections=self.recalls[n].reference,
                boxes=self.boxes[n].reference,
                boxes_found=self.boxes[n].found,
                boxes_extra=self.boxes[n].extra,
                boxes_borderline=self.boxes[n].borderline,
            )
            if n in self.recalls
            else m
            for n, m in found.items()
        ]
        metrics = [self._with_varying(m) for m in metrics]
        if self.detection_threshold is not None and not self.recalls and self.count:
            # the batch as N: a run's batch of 4 read as a size the user never gave (hq111 F5)
            shapes = ", ".join(
                f"{n} [{', '.join(['N', *map(str, s[1:])])}]" for n, s in self.seen_shapes.items()
            )
            shapes = shapes or "none"
            raise ConfigError(
                f"--detector {self.detector.value} needs an output shaped {head_layout(self.detector)} "
                f"(outputs: {shapes}); name the head the model writes, or leave --detector out for a model "
                "that is not a detector"
            )
        if not self.lookup:
            return metrics, None, None, self.count
        if self.ref_acc.count == 0 and self.count:
            raise ConfigError(
                "no image's folder or name prefix matches a class in the labels file; name images "
                "<class>_*.jpg or put them in <class>/ folders"
            )
        return metrics, self.ref_acc.result(), self.cand_acc.result(), self.count


def check_same_outputs(reference: Runner, candidate: Runner) -> None:
    """Refuse models whose outputs are not the same names; their order may differ (hq74 10: a re-export
    that listed the same outputs in another order was refused)."""
    first, second = list(reference.output_names), list(candidate.output_names)
    if set(first) != set(second):
        only = [
            f"only the {which} has {[n for n in mine if n not in theirs]}"
            for which, mine, theirs in (("first", first, second), ("second", second, first))
            if set(mine) - set(theirs)
        ]
        raise ConfigError(
            f"the models' outputs differ ({'; '.join(only)}); compare a model with its own converted "
            "version, whose outputs keep their names"
        )


def compare_batches(
    reference: Runner,
    candidate: Runner,
    batches: Iterable[Batch],
    comparison: Comparison,
    progress: Callable[[int], None] | None = None,
    watch: ReferenceCheck | None = None,
) -> Comparison:
    """Run both models over the batches into `comparison`; `watch` sees every batch's inputs and
    reference outputs (the reference's sanity)."""
    check_same_outputs(reference, candidate)
    singly = [False, False]  # per model: runs one sample at a time (_named_run)
    for batch in batches:
        ref_out = _named_run(reference, batch, REFERENCE, singly, 0)
        cand_out = _named_run(candidate, batch, CANDIDATE, singly, 1)
        if watch is not None:
            watch.update(batch.data, ref_out)
        comparison.update(batch, ref_out, cand_out)
        if progress is not None:
            progress(feed_rows(batch.data))
    return comparison


REFERENCE, CANDIDATE = "the reference (first model)", "the candidate (second model)"
HINTS = {
    REFERENCE: "check what it is fed (the preprocessing, --input-size, the arrays' shapes)",
    CANDIDATE: "compare a model with its own converted version (the same inputs)",
}


def _named_run(runner: Runner, batch: Batch, which: str, singly: list[bool], k: int) -> dict[str, np.ndarray]:
    """runner's outputs on the batch; a failure names the model (two models given different input
    sizes: 'Got 32 Expected 64' said neither which one nor why). A batch the model fails on is run a
    sample at a time, and so every later one (singly[k]): khmersm names its batch axis but its Reshape
    bakes in batch 1, and compare, stacking 8 samples, could not run it at all (hunt30)."""
    rows = feed_rows(batch.data)
    try:
        return _one_by_one(runner, batch.data, rows) if singly[k] else runner.run_batch(batch.data)
    except ModelError as exc:
        if rows > 1 and not singly[k]:
            try:
                outputs = _one_by_one(runner, batch.data, rows)
            except ModelError:
                pass
            else:
                singly[k] = True
                return outputs
        raise ModelError(f"{which}: {exc}; {HINTS[which]}") from exc


def _one_by_one(runner: Runner, data: Feed, rows: int) -> dict[str, np.ndarray]:
    """The runs of each sample, joined along the batch axis; a ModelError where an output has none."""
    runs = [runner.run_batch(feed_take(data, k, k + 1)) for k in range(rows)]
    if any(value.ndim == 0 or value.shape[0] != 1 for run in runs for value in run.values()):
        raise ModelError("an output has no batch axis to join the samples' runs on")
    return {name: np.concatenate([run[name] for run in runs]) for name in runs[0]}


def scored_output(
    outputs: dict[str, np.ndarray], num_classes: int, labels: frozenset[str] = frozenset()
) -> str:
    """The first output of class scores [N, num_classes] (the labels file's count), else the first of
    `labels` (graph.output_kinds.label_outputs: an ArgMax's) that gives one class an image [N] or [N, 1];
    refused where none is (not a detector's count of boxes, an integer [N] too)."""
    for name, value in outputs.items():
        if is_classification(value) and value.shape[1] == num_classes:
            return name
    for name, value in outputs.items():
        if name in labels and is_label_column(value):
            return name
    shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in outputs.items())
    raise ConfigError(f"the labels file lists {num_classes} classes but no output has that many ({shapes})")


def _unmeasured(name: str) -> OutputMetrics:
    """An output's metrics with no element compared: its figures n/a."""
    return OutputErrors(name).result()


def _rows(output: np.ndarray) -> int:
    """The rows an output lists over its images: [K, 7] a NonMaxSuppression's K, [N, K, 6] N x K, [K] K."""
    return int(np.prod(output.shape[:-1])) if output.ndim > 1 else int(output.shape[0]) if output.ndim else 1
