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
    "class scores [N, A, C] in [0, 1] (a softmax's background its first or last class) beside decoded boxes "
    "[N, A, 4] (x0, y0, x1, y1)"
)
SOFTMAX_SLACK = 1e-3  # rows of a softmax sum to 1 within float32 rounding


@dataclass(frozen=True)
class SsdHead:
    """Where an SSD head's values are, and which score column is the background."""

    scores: str
    boxes: str
    background: int | None  # a softmax's background column (the first or the last); None for sigmoids

    @property
    def first(self) -> str:
        """The name its rows go by (the scores')."""
        return self.scores

    @property
    def outputs(self) -> frozenset[str]:
        return frozenset({self.scores, self.boxes})


def anchor_pairs(outputs: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """(scores, boxes) of every pair of outputs [N, A, C >= 2] of probabilities and [N, A, 4] with the
    same anchors. Scores of 4 classes count as such where they are a softmax's (rows summing to 1), and
    are then no boxes."""
    ranked = {n: v for n, v in outputs.items() if v.ndim == 3 and v.dtype.kind == "f" and v.shape[1] > 1}
    scores = [
        n
        for n, v in ranked.items()
        if v.shape[2] >= 2 and probabilities(v) and (v.shape[2] != 4 or _softmax(v))
    ]
    boxes = [n for n, v in ranked.items() if v.shape[2] == 4 and n not in scores]
    return [(s, b) for s in scores for b in boxes if ranked[s].shape[:2] == ranked[b].shape[:2]]


def background_pairs(outputs: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """anchor_pairs whose anchors are mostly background as an SSD head's are: a softmax's most picked
    class its first or last (as --detector ssd reads it). hq84 F3: a table recogniser's 501 decoding steps
    of 30 tokens beside their cells' boxes read as anchors, and the advice to give --detector ssd was then
    refused (most steps pick token 28)."""
    return [
        (s, b)
        for s, b in anchor_pairs(outputs)
        if not _softmax(outputs[s]) or _most_picked(outputs[s]) in (0, outputs[s].shape[-1] - 1)
    ]


def ssd_head(outputs: Mapping[str, np.ndarray]) -> SsdHead:
    """The head in the reference model's outputs, decided once and read alike in every model: the pair
    whose boxes are corners (x1 >= x0, y1 >= y0 at nearly every anchor: not offsets from the priors);
    refused with one line where no pair, or more than one, is such."""
    found = anchor_pairs(outputs)
    pairs = [(s, b) for s, b in found if _corners(outputs[b])]
    if found and not pairs:
        raise ConfigError(
            f"--detector ssd reads decoded boxes (x0, y0, x1, y1), and {found[0][1]!r} beside "
            f"{found[0][0]!r} holds no corners at many anchors: a head of offsets from its priors needs them "
            "decoded in the model; leave --detector out to compare the outputs' values"
        )
    if len(pairs) != 1:
        shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in outputs.items())
        how = "no two outputs pair up that way" if not pairs else f"{len(pairs)} pairs do"
        raise ConfigError(
            f"--detector ssd reads {LAYOUT}; {how} ({shapes}); leave --detector out to compare the "
            "outputs' values"
        )
    (scores, boxes), value = pairs[0], outputs[pairs[0][0]]
    return SsdHead(scores, boxes, _background(scores, value) if _softmax(value) else None)


CORNER_SHARE = 0.99  # decoded corners: x1 >= x0 and y1 >= y0 at this share of the anchors at least


def _corners(boxes: np.ndarray) -> bool:
    """Whether boxes [N, A, 4] read as (x0, y0, x1, y1) at nearly every anchor."""
    ordered = (boxes[..., 2] >= boxes[..., 0]) & (boxes[..., 3] >= boxes[..., 1])
    return bool(ordered.mean() >= CORNER_SHARE)


def _softmax(scores: np.ndarray) -> bool:
    """Whether each anchor's scores [N, A, C] sum to 1."""
    return bool(np.all(np.abs(scores.astype(np.float64).sum(axis=-1) - 1.0) <= SOFTMAX_SLACK))


def _background(name: str, scores: np.ndarray) -> int:
    """The background column of a softmax's scores [N, A, C]: the one most anchors pick, the first (SSD,
    RFB, Ultra-Light) or the last (mmdetection's softmax SSD heads). A review of hq63b's head: column 0
    was dropped whatever it held, and a last-column background read 2995 of 3000 anchors as detections."""
    background = _most_picked(scores)
    if background not in (0, scores.shape[-1] - 1):
        raise ConfigError(
            f"--detector ssd reads a softmax's background as its first or last class, and most anchors of "
            f"{name!r} pick class {background}: leave --detector out to compare the outputs' values"
        )
    return background


def _most_picked(scores: np.ndarray) -> int:
    """The class [N, A, C] scores' anchors pick most often."""
    picks = np.bincount(scores.reshape(-1, scores.shape[-1]).argmax(axis=-1), minlength=scores.shape[-1])
    return int(picks.argmax())


def ssd_rows(outputs: Mapping[str, np.ndarray], head: SsdHead) -> np.ndarray:
    """The head as rows [N, A, 5 + C] (C less the background): box (cx, cy, w, h) from its corners,
    objectness 1, the class scores but the background."""
    corners = outputs[head.boxes].astype(np.float64)
    x0, y0, x1, y1 = (corners[..., k] for k in range(4))
    box = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)
    scores = outputs[head.scores].astype(np.float64)
    if head.background is not None:
        scores = np.delete(scores, head.background, axis=-1)
    return np.concatenate([box, np.ones_like(box[..., :1]), scores], axis=-1)
