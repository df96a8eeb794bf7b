"""The SQNR of what changes from image to image, beside the pooled one.

An output whose values barely change between images (a FastestDet head that is mostly its biases, a
classifier's logits that all carry -1000) measures a high pooled SQNR whatever the conversion does to the
part that depends on the image: hunt41 read 87-89 dB INT8 where that part measured 19.5 dB, and hunt42's
offset logits read 58.5 dB at 65.6 % top-1 agreement. The mean over the images of each element is that
constant part; the signal left around it is what the image changes.
"""

from __future__ import annotations

import numpy as np

from quantkit.evaluate.metrics import batchless, sqnr_db

MAX_ELEMENTS = 4_000_000  # per image: the per-element sums held (32 MB); larger outputs are not followed
HIDDEN_DB = 20.0  # pooled minus varying: the constant part is 100x what changes between images
# or 10x, where what changes measures below 20 dB (1 % of its power in noise): hq96 F1, a landmark model
# converted with --method entropy read 17.4 dB pooled and 0.3 dB on what changes between faces held out
# (10.9 px off at 112x112), and compare said nothing, the gap being 17.1 dB; hq119 F1, F2: PFLD's 68
# landmarks in FP8 read 27.7 dB pooled, 11.2 on what changes (median error 5.9 % of the eyes' distance),
# with --target tensorrt 33.9 and 17.4 dB (1.9 %, 8 of 33 faces past 5 %), and said nothing either
LOW_GAP_DB, LOW_VARYING_DB = 10.0, 20.0
FEW_IMAGES = 4  # a mean over fewer images is mostly the images themselves
QUIET_ABOVE_DB = 30.0  # what changes measured this well needs no warning, however much the rest hides it


class Variation:
    """One output's per-element sum over the images, its power and the candidate's noise, batch by batch."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None  # [elements per image] float64
        self.power = self.noise = 0.0
        self.images = 0
        self.followed = True  # False once a batch held another shape, or the output is too large

    def update(self, ref: np.ndarray, cand: np.ndarray, images: int | None = None) -> None:
        """ref, cand: [N, ...] of one shape. images: how many the run held, where known: an output whose
        first axis is not theirs (loc [20, 4] of one image) is one image's, whole (hq137 F1: its rows read
        as images hid what changes between images, -0.76 dB, under 30.06 dB)."""
        if batchless(ref, images):
            ref, cand = ref.reshape(1, -1), cand.reshape(1, -1)
        if not self.followed or not len(ref):
            return
        flat = ref.reshape(len(ref), -1).astype(np.float64)
        other = self.total is not None and self.total.shape[0] != flat.shape[1]
        if flat.shape[1] > MAX_ELEMENTS or other or not (np.isfinite(flat).all() and np.isfinite(cand).all()):
            self.followed, self.total = False, None  # an -inf mask by design: no mean to deviate from
            return
        self.total = flat.sum(axis=0) if self.total is None else self.total + flat.sum(axis=0)
        self.power += float(np.sum(flat * flat))
        self.noise += float(np.sum((flat - cand.reshape(len(cand), -1)) ** 2))
        self.images += len(ref)

    def merge(self, later: Variation) -> None:
        shapes = {t.shape for t in (self.total, later.total) if t is not None}
        if not later.followed or len(shapes) > 1:
            self.followed, self.total = False, None
        if not self.followed or later.total is None:
            return
        self.total = later.total if self.total is None else self.total + later.total
        self.power += later.power
        self.noise += later.noise
        self.images += later.images

    def varying_db(self) -> float | None:
        """SQNR (dB) of the reference's deviation from its per-element mean over the images, against the
        candidate's noise; None where not followed or on too few images."""
        varying = self.moving() if self.images >= FEW_IMAGES else None
        # FP32 gives it alike on every image: nothing changes to measure (hunt53 C1: a detector's constant
        # box count read '-inf dB')
        if varying is None or not varying > 1e-12 * self.power:
            return None
        return sqnr_db(varying, self.noise)

    def moving(self) -> float | None:
        """The reference's power that moves between the images: its deviation from each element's mean
        over them (None: not followed)."""
        if not self.followed or self.total is None:
            return None
        return self.power - float(np.sum(self.total * self.total)) / self.images

    def pooled_db(self) -> float:
        return sqnr_db(self.power, self.noise)


def hides(pooled_db: float, varying_db: float | None) -> bool:
    """Whether the pooled SQNR hides what changes between images (HIDDEN_DB; LOW_GAP_DB where that part
    is below LOW_VARYING_DB): the figure to judge the output on is then varying_db (steady_warning says
    so; shrink's --min-eval-sqnr gate reads it)."""
    if varying_db is None:
        return False
    gap = pooled_db - varying_db
    return gap >= HIDDEN_DB or (varying_db < LOW_VARYING_DB and gap >= LOW_GAP_DB)


def steady_warning(
    name: str, pooled_db: float, varying_db: float | None, images: str = "images", what: str = ""
) -> str | None:
    """A warning where the pooled SQNR hides the part of the output that changes between `images`, and that
    part measures below QUIET_ABOVE_DB (hq127 F4: an FP16 output at 54.8 dB on what changes was warned
    of; shrink's gate still reads that figure: `hides`). what: how to name it where it is not an output
    itself (default: "output 'name'")."""
    if not hides(pooled_db, varying_db) or varying_db is None or varying_db >= QUIET_ABOVE_DB:
        return None
    return (
        f"{what or f'output {name!r}'} measures {pooled_db:.1f} dB pooled, but its values barely change "
        f"between {images}: "
        f"on what does change (each value's deviation from its mean over them) it measures "
        f"{varying_db:.1f} dB; judge it on that, or on your task's metric"
    )
