"""The compare loop: both models over the same batches, accuracy with or without labels."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.config import DetectorHead
from quantkit.errors import ConfigError
from quantkit.evaluate.metrics import (
    BoxAgreement,
    DetectionRecall,
    OutputErrors,
    TopK,
    is_classification,
    is_yolo_head,
    yolox_grid,
)
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.outcomes import Accuracy, OutputMetrics
from quantkit.results import Batch, feed_rows
from quantkit.runtime import Session


def read_classes(path: Path) -> list[str]:
    """Class ids in output-index order: the first word of each non-empty line (`n01440764 tench, ...`)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read labels file {path} ({exc}); pass a text file, one class per line"
        ) from exc
    classes = [line.split()[0].rstrip(",") for line in lines if line.strip()]
    if not classes:
        raise ConfigError(f"labels file {path} is empty; list one class per line, in output order")
    return classes


def label_of(path: Path, folder: Path, lookup: dict[str, int]) -> int:
    """The class index of an image: its parent folder (DIR/<class>/img) or its name prefix
    (<class>_anything.jpg); -1 when neither names a known class."""
    relative = path.relative_to(folder)
    if len(relative.parts) > 1 and relative.parts[-2] in lookup:
        return lookup[relative.parts[-2]]
    stem = path.stem
    for candidate in (stem.split("_", 1)[0], stem):
        if candidate in lookup:
            return lookup[candidate]
    return -1


def compare_outputs(
    reference: Session,
    candidate: Session,
    batches: Iterable[Batch],
    folder: Path,
    classes: Sequence[str] | None,
    progress: Callable[[int], None] | None = None,
    detection_threshold: float | None = None,
    detector: DetectorHead = DetectorHead.yolo,
    input_size: tuple[int, int] | None = None,
    watch: ReferenceCheck | None = None,
) -> tuple[list[OutputMetrics], Accuracy | None, Accuracy | None, int]:
    """Per-output error metrics; with classes, top-1/top-5 of both models; with a detection threshold,
    on YOLO-style outputs [N, A, 5 + C] the recall of the reference's detections per anchor and the
    agreement of the final boxes (`detector` says how to read them; yolox needs the input (H, W)).
    `watch` sees every batch's inputs and reference outputs (the reference's sanity)."""
    if reference.output_names != candidate.output_names:
        raise ConfigError(
            f"the models' outputs differ ({reference.output_names} vs {candidate.output_names}); "
            "compare a model with its own quantized version"
        )
    errors = {name: OutputErrors(name) for name in reference.output_names}
    recalls: dict[str, DetectionRecall] = {}
    boxes: dict[str, BoxAgreement] = {}
    lookup = {c: i for i, c in enumerate(classes)} if classes else {}
    ref_acc, cand_acc = TopK(), TopK()
    scored_output: str | None = None
    seen_shapes: dict[str, list[int]] = {}
    count = 0
    for batch in batches:
        ref_out, cand_out = reference.run_batch(batch.data), candidate.run_batch(batch.data)
        if watch is not None:
            watch.update(batch.data, ref_out)
        seen_shapes = {n: list(v.shape) for n, v in ref_out.items()}
        for name, acc in errors.items():
            if ref_out[name].shape != cand_out[name].shape:
                raise ConfigError(f"output {name!r} has different shapes in the two models")
            acc.update(ref_out[name], cand_out[name])
            if detection_threshold is not None and is_yolo_head(ref_out[name]):
                recalls.setdefault(name, DetectionRecall(detection_threshold)).update(
                    ref_out[name], cand_out[name]
                )
                if name not in boxes:
                    grid = decode_grid(detector, input_size, ref_out[name].shape[1])
                    boxes[name] = BoxAgreement(detection_threshold, grid)
                boxes[name].update(ref_out[name], cand_out[name])
        count += feed_rows(batch.data)
        if lookup:
            scored_output = scored_output or _scored_output(ref_out, len(lookup))
            labels = np.array([label_of(p, folder, lookup) for p in batch.paths])
            known = labels >= 0
            if known.any():
                ref_acc.update(ref_out[scored_output][known], labels[known])
                cand_acc.update(cand_out[scored_output][known], labels[known])
        if progress is not None:
            progress(feed_rows(batch.data))
    metrics = [
        dataclasses.replace(
            e.result(),
            detection_recall=recalls[n].recall,
            detections=recalls[n].reference,
            boxes=boxes[n].reference,
            boxes_found=boxes[n].found,
            boxes_extra=boxes[n].extra,
            boxes_borderline=boxes[n].borderline,
        )
        if n in recalls
        else e.result()
        for n, e in errors.items()
    ]
    if detection_threshold is not None and not recalls:
        shapes = ", ".join(f"{n} {s}" for n, s in seen_shapes.items()) or "none"
        raise ConfigError(
            f"--detector {detector.value} needs an output shaped [N, anchors, 5 + classes] (outputs: "
            f"{shapes}); leave --detector out for a classifier"
        )
    if not lookup:
        return metrics, None, None, count
    if ref_acc.count == 0:
        raise ConfigError(
            "no image's folder or name prefix matches a class in the labels file; name images "
            "<class>_*.jpg or put them in <class>/ folders"
        )
    return metrics, ref_acc.result(), cand_acc.result(), count


def detector_fields(detector: str | None, threshold: float, option: str = "--detector") -> dict[str, Any]:
    """The detector fields of CompareConfig / AccuracyBudget for a head named by the user (None: none)."""
    if detector is None:
        return {}
    if detector not in DetectorHead.__members__:
        raise ConfigError(
            f"{option} knows 'yolo' (boxes in pixels) and 'yolox' (raw YOLOX head), outputs "
            f"[N, anchors, 4 box + objectness + classes]; got {detector!r}"
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


def _scored_output(outputs: dict[str, np.ndarray], num_classes: int) -> str:
    for name, value in outputs.items():
        if is_classification(value) and value.shape[1] == num_classes:
            return name
    shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in outputs.items())
    raise ConfigError(f"the labels file lists {num_classes} classes but no output has that many ({shapes})")
