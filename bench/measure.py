"""Accuracy and latency of many candidates against one FP32 model, side by side.

Accuracy: one pass over the evaluation images; each batch is decoded once and run through FP32 and every
candidate. Latency: all models in one interleaved loop (quantkit.runtime.interleaved_latency), so that
noise on a shared machine hits every model alike; medians.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.config import Preprocess
from quantkit.evaluate.class_scores import TopK
from quantkit.evaluate.labels import label_of, read_classes
from quantkit.evaluate.metrics import BoxAgreement, DetectionRecall, is_yolo_head, yolox_grid
from quantkit.evaluate.output_errors import OutputErrors
from quantkit.images import ImageLoader
from quantkit.runtime import Session, interleaved_latency

DETECTION_THRESHOLD = 0.3
BATCH = 8


def accuracy(
    reference: Path,
    candidates: Sequence[Path],
    paths: Sequence[Path],
    pre: Preprocess,
    folder: Path,
    labels: Path | None,
) -> list[dict[str, Any]]:
    """Per candidate: output SQNR (first output), top-1 agreement, with labels the top-1 delta in points,
    on a YOLO-style head the recall of FP32's detections at score 0.3 (same anchor, same class) and its
    final boxes (score 0.3, NMS; raw YOLOX heads decoded on the input's stride 8/16/32 grids)."""
    # every batch goes through all models in turn: idle workers must not spin on the next one's cores
    ref = Session(reference, spin=False)
    sessions = [Session(c, spin=False) for c in candidates]
    batch_size = ref.fixed_batch or BATCH
    output = ref.output_names[0]
    errors = [OutputErrors(output) for _ in sessions]
    recalls = [DetectionRecall(DETECTION_THRESHOLD) for _ in sessions]
    grid = yolox_grid(pre.height, pre.width)
    boxes: list[BoxAgreement] = []
    lookup = {c: i for i, c in enumerate(read_classes(labels))} if labels else {}
    ref_top, cand_top = TopK(), [TopK() for _ in sessions]
    for batch in ImageLoader(paths, pre, batch_size):
        ref_out = ref.run_batch(batch.data)[output]
        known = np.array([label_of(p, folder, lookup) for p in batch.paths]) if lookup else None
        if known is not None:
            ref_top.update(ref_out[known >= 0], known[known >= 0])
        for k, session in enumerate(sessions):
            out = session.run_batch(batch.data)[output]
            errors[k].update(ref_out, out)
            if is_yolo_head(ref_out):
                if not boxes:
                    raw = grid is not None and len(grid) == ref_out.shape[1]
                    boxes = [BoxAgreement(DETECTION_THRESHOLD, grid if raw else None) for _ in sessions]
                recalls[k].update(ref_out, out)
                boxes[k].update(ref_out, out)
            if known is not None:
                cand_top[k].update(out[known >= 0], known[known >= 0])
    results = []
    for k in range(len(sessions)):
        metrics = errors[k].result()
        row: dict[str, Any] = {
            "sqnr_db": metrics.sqnr_db,
            "top1_agreement": metrics.top1_agreement,
            "detection_recall": recalls[k].recall,
            "detections_fp32": recalls[k].reference or None,
            "boxes_fp32": boxes[k].reference if boxes else None,
            "boxes_found": boxes[k].found if boxes else None,
            "boxes_extra": boxes[k].extra if boxes else None,
        }
        if lookup:
            row["top1_fp32"] = ref_top.result().top1
            row["top1"] = cand_top[k].result().top1
            row["top1_delta_points"] = 100 * (row["top1"] - row["top1_fp32"])
        results.append(row)
    return results


def latency(models: Sequence[Path], sample: np.ndarray, threads: int, warmup: int, runs: int) -> list[float]:
    """Median milliseconds per model at batch 1 and `threads` intra-op threads, runs interleaved."""
    sessions = [Session(m, threads=threads, spin=False) for m in models]
    samples = interleaved_latency(sessions, sample, warmup, runs)
    return [float(np.median(s)) for s in samples]
