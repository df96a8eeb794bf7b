"""--detector ssd: SSD-style split heads (SSD, RFB, Ultra-Light-Fast-Generic-Face-Detector, RetinaNet exports
with their boxes decoded), read as the [N, A, 5 + C] rows the YOLO metrics read.

Such a head gives, per anchor, class scores [N, A, C] (a softmax whose class 0 is the background, or
sigmoids without one) beside the anchor's box [N, A, 4] as corners (x0, y0, x1, y1), in pixels or in
fractions of the image: the export decoded the offsets against its priors. Read as the YOLO rows, each
anchor's box is its centre and size, its objectness 1 and its scores those past the background, so that
the detections above --detection-threshold, after NMS, are matched between the models as any detector's
final boxes are. hq63b F1: an RFB face detector's 4420 anchors, nearly all background, agreed at
99.98 % per anchor where 68 of 340 faces were lost, and --max-drop passed at 0.08 points with 11 lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from quantkit.errors import ConfigError
from quantkit.evaluate.metrics import probabilities

LAYOUT = (
    "class scores [N, A, C] in [0, 1] (a softmax's class 0 the background) beside decoded boxes [N, A, 4] "
    "(x0, y0, x1, y1)"
)
SOFTMAX_SLACK = 1e-3  # rows of a softmax sum to 1 within float32 rounding


@dataclass(frozen=True)
class SsdHead:
    """Where an SSD head's values are, and how many leading score columns are the background."""

    scores: str
    boxes: str
    background: int  # 1 under a softmax (class 0), 0 for sigmoid scores

    @property
    def first(self) -> str:
        """The name its rows go by (the scores')."""
        return self.scores

    @property
    def outputs(self) -> frozenset[str]:
        return frozenset({self.scores, self.boxes})


def anchor_pair(outputs: Mapping[str, np.ndarray]) -> tuple[str, str] | None:
    """(scores, boxes): the one pair of outputs [N, A, C >= 2] of probabilities and [N, A, 4] with the
    same anchors, else None."""
    ranked = {n: v for n, v in outputs.items() if v.ndim == 3 and v.dtype.kind == "f" and v.shape[1] > 1}
    boxes = [n for n, v in ranked.items() if v.shape[2] == 4]
    scores = [n for n, v in ranked.items() if v.shape[2] >= 2 and n not in boxes and probabilities(v)]
    pairs = [(s, b) for s in scores for b in boxes if ranked[s].shape[:2] == ranked[b].shape[:2]]
    return pairs[0] if len(pairs) == 1 else None


def ssd_head(outputs: Mapping[str, np.ndarray]) -> SsdHead:
    """The head in the reference model's outputs, decided once and read alike in every model; refused with
    one line where no output pairs up that way."""
    pair = anchor_pair(outputs)
    if pair is None:
        shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in outputs.items())
        raise ConfigError(
            f"--detector ssd reads {LAYOUT}; no two outputs pair up that way ({shapes}); leave --detector "
            "out to compare the outputs' values"
        )
    scores = outputs[pair[0]].astype(np.float64)
    softmax = bool(np.all(np.abs(scores.sum(axis=-1) - 1.0) <= SOFTMAX_SLACK))
    return SsdHead(pair[0], pair[1], 1 if softmax else 0)


def ssd_rows(outputs: Mapping[str, np.ndarray], head: SsdHead) -> np.ndarray:
    """The head as rows [N, A, 5 + C - background]: box (cx, cy, w, h) from its corners, objectness 1, the
    class scores past the background."""
    corners = outputs[head.boxes].astype(np.float64)
    x0, y0, x1, y1 = (corners[..., k] for k in range(4))
    box = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)
    scores = outputs[head.scores][..., head.background :].astype(np.float64)
    return np.concatenate([box, np.ones_like(box[..., :1]), scores], axis=-1)
