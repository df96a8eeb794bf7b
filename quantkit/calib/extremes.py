"""Each calibration image's extremes, folded over images: what the range cap reads (their means) and how
calibrate finds its outlier images (the ones most often among a tensor's most extreme).

The range cap (planner.range_plan.capped) narrows a range to what a typical image reaches; the images it
clips are the ones with the largest activations. The table's first samples rarely include them (they are
the first images of the list), so calibrate also keeps STRESS_IMAGES of them, and convert keeps the cap
only where the model measures no worse on those too (planner.corrections_choice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

TOP_IMAGES = 4  # each tensor's most extreme images remembered on each side
STRESS_IMAGES = 4  # outlier images calibrate keeps beside its first samples
# An input's extreme in one image this many times as far from 0 as the next images' span is that image
# alone: calibrate names it (ImageExtremes.lone)
LONE_FACTOR = 50.0  # a span, both sides: about 100x an N(0, 1) sample's reach (hq141 F4)

Ranked = tuple[tuple[float, int], ...]  # (value, image index), most extreme first, at most TOP_IMAGES + 1


@dataclass(frozen=True)
class ImageExtremes:
    """Over the images seen: the sums of each image's minimum and maximum (float64, added batch by batch
    in the data's order: the same sums for the same chunks), how many, and the images with the highest
    maxima and the lowest minima (index: position among these images; ties go to the earlier image). One
    more than TOP_IMAGES is kept, so that a tie at the last place (a ReLU6 saturating in most images) can
    be told from a lead."""

    low_sum: float = 0.0
    high_sum: float = 0.0
    images: int = 0
    highest: Ranked = ()
    lowest: Ranked = ()

    @classmethod
    def of(cls, low: np.ndarray, high: np.ndarray) -> ImageExtremes:
        """One batch: low, high float [N], each image's minimum and maximum."""
        low_sum = high_sum = 0.0
        for value in low.tolist():
            low_sum += value
        for value in high.tolist():
            high_sum += value
        return cls(
            low_sum,
            high_sum,
            low.size,
            _ranked(zip(high.tolist(), range(high.size), strict=True), highest=True),
            _ranked(zip(low.tolist(), range(low.size), strict=True), highest=False),
        )

    @classmethod
    def fold(cls, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> ImageExtremes:
        """Batches (low, high float [N] each) in order: the very value of adding ImageExtremes.of of each
        to ImageExtremes() in turn (each batch summed on its own, then added), ranked once."""
        low_sum = high_sum = 0.0
        highest: list[tuple[float, int]] = []
        lowest: list[tuple[float, int]] = []
        images = 0
        for low, high in batches:
            batch_low = batch_high = 0.0
            lows, highs = low.tolist(), high.tolist()
            for value in lows:
                batch_low += value
            for value in highs:
                batch_high += value
            low_sum, high_sum = low_sum + batch_low, high_sum + batch_high
            highest += zip(highs, range(images, images + len(highs)), strict=True)
            lowest += zip(lows, range(images, images + len(lows)), strict=True)
            images += len(lows)
        return cls(low_sum, high_sum, images, _ranked(highest, True), _ranked(lowest, False))

    def __add__(self, other: ImageExtremes) -> ImageExtremes:
        """Both, self's images first (other's indices move past them)."""
        shift = self.images
        return ImageExtremes(
            self.low_sum + other.low_sum,
            self.high_sum + other.high_sum,
            self.images + other.images,
            _ranked([*self.highest, *((v, i + shift) for v, i in other.highest)], highest=True),
            _ranked([*self.lowest, *((v, i + shift) for v, i in other.lowest)], highest=False),
        )

    def leaders(self) -> list[int]:
        """The images among the TOP_IMAGES most extreme on either side that strictly beat the next image's
        value there (a maximum above 0, a minimum below 0): none where every image ties."""
        found = []
        for ranked, sign in ((self.highest, 1.0), (self.lowest, -1.0)):
            # the next image's value to beat (none when every image is ranked: any value past 0 leads)
            bar = 0.0 if len(ranked) <= TOP_IMAGES else sign * ranked[TOP_IMAGES][0]
            found += [i for v, i in ranked[:TOP_IMAGES] if sign * v > max(bar, 0.0)]
        return found

    def lone(self) -> tuple[tuple[tuple[int, float], ...], float]:
        """((image, its extreme) for each side where one image's maximum or minimum lies LONE_FACTOR times as
        far from 0 as the span of the second-highest maximum and the second-lowest minimum (0 included),
        that span); no image where the span is 0 (masks: zeros stay exact). hq132 F1: one array holding
        1e6 among 16 of N(0, 1); hq136 F3, hq138 F1, hq140 F4, hq141 F3: the others below 0, two
        mis-scaled arrays of opposite signs, both named."""
        if len(self.highest) < 2 or len(self.lowest) < 2:
            return (), 0.0
        span = max(self.highest[1][0], 0.0) - min(self.lowest[1][0], 0.0)
        found: dict[int, float] = {}  # one image lone on both sides is named once, by its farther extreme
        for ranked, sign in ((self.highest, 1.0), (self.lowest, -1.0)):
            index, value = ranked[0][1], ranked[0][0]
            if span > 0.0 and sign * value > LONE_FACTOR * span and abs(value) > abs(found.get(index, 0.0)):
                found[index] = value
        return tuple(found.items()), span


def _ranked(pairs: Iterable[tuple[float, int]], highest: bool) -> Ranked:
    sign = -1.0 if highest else 1.0
    return tuple(sorted(pairs, key=lambda p: (sign * p[0], p[1]))[: TOP_IMAGES + 1])


def stress_images(extremes: Iterable[ImageExtremes | None], count: int = STRESS_IMAGES) -> list[int]:
    """The `count` images most often among the tensors' leaders (ties: the earlier image), in image
    order; fewer where fewer images lead anywhere."""
    votes: Counter[int] = Counter()
    for tensor in extremes:
        if tensor is not None:
            votes.update(tensor.leaders())
    chosen = sorted(votes, key=lambda i: (-votes[i], i))[:count]
    return sorted(chosen)
