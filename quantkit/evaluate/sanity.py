"""Is the FP32 reference itself sensible on these images? Signs of wrong preprocessing, from what the
reference reads and writes, so that a wrong --mean/--std never passes a gate by making FP32 and INT8
agree on nonsense.

Each finding is one line that names the likely cause and the flags to check. The rules are chosen to be
near-impossible on a correctly fed model:
- inputs beyond +-300: no preprocessing of 8-bit pixels gives that except 0-1 mean/std used as 0-255;
- one class for 90 % or more of 10+ images, on a classifier with 10+ classes;
- with labels of 10+ classes, FP32's own top-1 below twice chance;
- with a detector head, FP32 finds no box on any image;
- every output (sampled) the same on every image;
- an output FP32 gives NaN in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from quantkit.results import Feed, feed_rows

INPUT_LIMIT = 300.0  # |input| above this: raw 0-255 pixels with std >= 1 never get there
ONE_CLASS_SHARE = 0.9
MIN_IMAGES = 10
MIN_CLASSES = 10
SAMPLED_ELEMENTS = 512  # per output, for the "same on every image" check
CONSTANT_SPREAD = 1e-4  # spread across images relative to the output's own magnitude

NAN_MARK = 2  # in a non-finite pattern: 0 finite, -1 / 1 an infinity of that sign, 2 NaN

CHECK = "check --preset, --mean/--std (0-255 units), --bgr and --resize"


def below_chance(top1: float, classes: int) -> bool:
    """FP32's own top-1 against labels of `classes` classes is below twice chance (with MIN_CLASSES or more):
    its input or the labels' order is wrong, and agreeing with it proves nothing."""
    return classes >= MIN_CLASSES and top1 < 2.0 / classes


class ReferenceCheck:
    """Accumulates, batch by batch, what the findings need: the inputs' peak, the reference's top-1
    classes, and a fixed sample of each output's elements."""

    def __init__(self, inputs_from_images: bool = True, values: frozenset[str] = frozenset()) -> None:
        """values: outputs the graph computes as features (graph.output_kinds): an embedding's largest
        coordinate is the same on most images by nature, no class that says the input is wrong."""
        self.inputs_from_images = inputs_from_images  # arrays are fed as given: their range is theirs
        self.values = values
        self.images = 0
        self.input_peak = 0.0
        self.classes: Counter[int] = Counter()
        self.num_classes = 0
        self._classifier: str | None = None  # the first [N, C >= 10] output
        self._samples: dict[str, list[np.ndarray]] = {}
        self._marks: dict[str, np.ndarray | None] = {}  # an image's non-finite pattern (None: all finite)
        self._moving: set[str] = set()  # outputs whose pattern is not the same on every image
        self._nan: Counter[str] = Counter()  # output -> the images on which FP32 gives NaN in it
        self._logits: dict[str, list[np.ndarray]] = {}  # update's `logits`, sampled
        # each output's shape past the batch axis, and those whose shape changed from image to image (a set
        # model's [1, N, N] with N lines on each page: their samples cannot be stacked, nor be the same)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._ragged: set[str] = set()

    def update(
        self, inputs: Feed, outputs: dict[str, np.ndarray], logits: dict[str, np.ndarray] | None = None
    ) -> None:
        """inputs: float32 [N, ...] as fed (per input); outputs: the reference's outputs for them, [N, ...]
        each; logits: the tensors measured in their place (a Softmax's or Sigmoid's logits, an ArgMax's
        scores), where seen: a float32 Softmax one-hot on every image is constant while its logits move by
        hundreds (hunt47 C1: a gender classifier fed exactly as its package feeds it was said to be fed
        wrongly)."""
        count = feed_rows(inputs)
        for name, value in (logits or {}).items():
            if value.ndim and value.shape[0] == count and np.issubdtype(value.dtype, np.floating):
                self._shaped(name, value.shape[1:])
                self._logits.setdefault(name, []).append(_sampled(value.reshape(count, -1)))
        self.images += count
        # the images' range: an input given a fixed value beside them (an image size, 640) is not one
        for fed in (
            [inputs] if isinstance(inputs, np.ndarray) else [v for v in inputs.values() if v.ndim == 4]
        ):
            finite = np.abs(fed[np.isfinite(fed)])
            if finite.size:
                self.input_peak = max(self.input_peak, float(finite.max()))
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != count or not np.issubdtype(value.dtype, np.floating):
                continue
            flat = value.reshape(count, -1)
            if (
                value.ndim == 2
                and flat.shape[1] >= MIN_CLASSES
                and self._classifier is None
                and name not in self.values
            ):
                self.num_classes, self._classifier = flat.shape[1], name
            if name == self._classifier:
                self.classes.update(int(k) for k in np.argmax(flat, axis=1))
            self._shaped(name, value.shape[1:])
            self._mark(name, flat)
            self._samples.setdefault(name, []).append(_sampled(flat))

    def merge(self, later: ReferenceCheck) -> None:
        """Add what `later` saw on the images after this one's (shards of one run, in order)."""
        self.images += later.images
        self.input_peak = max(self.input_peak, later.input_peak)
        self.classes.update(later.classes)
        if self._classifier is None:
            self.num_classes, self._classifier = later.num_classes, later._classifier
        for name, samples in later._samples.items():
            self._samples.setdefault(name, []).extend(samples)
        for name, samples in later._logits.items():
            self._logits.setdefault(name, []).extend(samples)
        self._moving |= later._moving
        self._nan.update(later._nan)
        self._ragged |= later._ragged
        for name, shape in later._shapes.items():
            self._shaped(name, shape)
        for name, marks in later._marks.items():
            self._fold(name, marks)

    def nonfinite_outputs(self) -> frozenset[str]:
        """Outputs holding NaN or Inf on any image (calibrate observes no statistics of an output a Where
        or a Concat writes: hunt45's moving -inf passed unseen)."""
        return frozenset(name for name, marks in self._marks.items() if marks is not None) | frozenset(
            self._moving
        )

    def fixed_infinities(self) -> frozenset[str]:
        """Outputs holding an infinity (never NaN) at the same places, of the same sign, on each of 2 or
        more images: a mask the model applies by design (class logits masked with -inf), not the broken
        input or weights that make infinities wander."""
        if self.images < 2:
            return frozenset()
        return frozenset(
            name
            for name, marks in self._marks.items()
            if marks is not None and name not in self._moving and not bool((marks == NAN_MARK).any())
        )

    def _shaped(self, name: str, shape: tuple[int, ...]) -> None:
        if self._shapes.setdefault(name, shape) != shape:
            self._ragged.add(name)

    def _mark(self, name: str, flat: np.ndarray) -> None:
        """Fold the non-finite pattern of each image's output [N, E] into the output's running one."""
        bad = ~np.isfinite(flat)
        if not bad.any():
            self._fold(name, None)
            return
        self._nan[name] += int(np.isnan(flat).any(axis=1).sum())
        marks = np.where(bad, np.where(np.isnan(flat), NAN_MARK, np.sign(flat)), 0).astype(np.int8)
        for row in marks:
            self._fold(name, row)

    def _fold(self, name: str, marks: np.ndarray | None) -> None:
        if name not in self._marks:
            self._marks[name] = marks
            return
        first = self._marks[name]
        if (first is None) != (marks is None) or (
            first is not None and marks is not None and not np.array_equal(first, marks)
        ):
            self._moving.add(name)

    def findings(
        self,
        top1: float | None = None,
        labelled_classes: int = 0,
        detections: int | None = None,
        threshold: float | None = None,
        coupling: str | None = None,
    ) -> tuple[str, ...]:
        """The warning lines, given FP32's own top-1 against labels of `labelled_classes` classes, its
        detections above the score (None where not measured) and the op that made the run one image at a
        time (model_inputs.batch_coupled)."""
        found = []
        if self.inputs_from_images and self.input_peak > INPUT_LIMIT:
            found.append(
                f"the preprocessed inputs reach {self.input_peak:.0f}: quantkit's --mean/--std are in 0-255 "
                "units (ImageNet: --mean 123.7,116.3,103.5 --std 58.4,57.1,57.4); multiply 0-1 values by 255"
            )
        if top1 is not None and below_chance(top1, labelled_classes):
            found.append(
                f"FP32's own top-1 is {100 * top1:.2f}% on these images, below twice chance "
                f"({200 / labelled_classes:.2f}%): the preprocessing or the --labels order is likely wrong; "
                + CHECK
            )
        elif top1 is None and self.images >= MIN_IMAGES and self.classes:
            label, times = self.classes.most_common(1)[0]
            if times >= ONE_CLASS_SHARE * self.images:
                found.append(
                    f"FP32 gives class {label} of output {self._classifier!r} for {times} of {self.images} "
                    f"images: if it holds class scores, its input is likely wrong ({CHECK}), unless the "
                    "images are all of that class; if it holds values (an embedding, landmarks, scores of "
                    "their own), say so with --output-kind values"
                )
        if detections == 0 and self.images:
            above = f" {threshold:g}" if threshold is not None else ""  # hq146 F9: 0.9999, unnamed
            found.append(
                f"FP32 finds no detection above the score threshold{above} on any of {self.images} images: "
                "its input is likely wrong (a detector usually wants --preset and --resize letterbox), or "
                f"--score-threshold is above every score it gives; {CHECK}"
            )
        found += [  # hq74 4: compare blamed the candidate for a NaN FP32 wrote itself
            f"FP32's output {name!r} is NaN on {count} of {self.images} image(s): the model or what it is "
            f"fed is broken there, not the conversion (those values are left out of the figures); {CHECK}"
            for name, count in sorted(self._nan.items())
            if count
        ]
        sampled = [*self._samples.items(), *self._logits.items()]
        steady = all(name not in self._ragged and _constant(v) for name, v in sampled)
        if self.images >= 4 and self._samples and steady and coupling:  # hq148 F5: no preprocessing's fault
            found.append(
                f"FP32's outputs are the same on all {self.images} images, each run alone as {coupling} "
                "computes across the batch axis: one sample does not move it; export the model with the "
                "batch it is deployed at fixed to measure it there"
            )
        elif self.images >= 4 and self._samples and steady:
            found.append(
                f"FP32's outputs are the same on all {self.images} images: its input is likely wrong; {CHECK}"
            )
        return tuple(found)


def _sampled(flat: np.ndarray) -> np.ndarray:
    """A fixed sample of each image's elements [N, E] -> float64 [N, <= SAMPLED_ELEMENTS]."""
    picks = np.linspace(0, flat.shape[1] - 1, min(SAMPLED_ELEMENTS, flat.shape[1])).astype(np.int64)
    return flat[:, picks].astype(np.float64)


def _constant(batches: list[np.ndarray]) -> bool:
    """Whether sampled outputs [images, elements] barely change from image to image. Probabilities (every
    value in [0, 1]) are judged by their log-odds: a PyPI text-orientation classifier sure of every
    upright line gave 0.9999999 against 0.9999967, a spread of 2e-6, where its logits moved by units."""
    values = np.concatenate(batches).astype(np.float64)
    values = values[:, np.isfinite(values).all(axis=0)]  # an element -inf on every image: a mask
    if not values.size:
        return False
    if values.min() >= 0.0 and values.max() <= 1.0:
        values = np.log(values + 1e-12) - np.log1p(1e-12 - values)
    scale = float(np.sqrt(np.mean(values**2)))
    spread = float(np.max(np.std(values, axis=0)))
    return spread <= CONSTANT_SPREAD * max(scale, 1e-12)


# 16-bit images whose values all stay at or below this hold 12-bit data (microscopy, medical scanners)
NARROW_16_BIT = 4095


def narrow_16_bit(peaks: Sequence[float], checked: int, levels: Sequence[float] = ()) -> str | None:
    """A warning where the 16-bit images among `checked` (peaks: each one's largest value,
    pixels.peak_16_bit) all stay at or below NARROW_16_BIT: images are read over 0-65535, so 12-bit data
    arrives at 0-16 of 255, nearly black, and the warnings that followed blamed --mean/--std (hunt47 C2).
    levels: what each image's range is read by (pixels.range_level): past 65535 it is read over the bit depth
    of that level, which the warning names. None otherwise."""
    if levels and max(levels) > 65535:  # hq57 A4: read over their bit depth (pixels.to_mode), no word
        bits = int(max(levels)).bit_length()
        return (
            f"images hold values up to {max(peaks):.0f}, beyond 16 bits: quantkit reads them over "
            f"0-{2**bits - 1} ({bits}-bit data); scale them to 8 or 16 bits as the model saw them in training"
        )
    if not peaks or max(peaks) > NARROW_16_BIT or max(peaks) <= 0:
        return None
    top = max(peaks)
    which = "the images are" if len(peaks) == checked else f"{len(peaks)} of the {checked} images checked are"
    return (
        f"{which} 16-bit with values up to {top:.0f} ({int(top).bit_length()}-bit data): quantkit "
        f"reads 16-bit images over 0-65535, so these arrive at {top / 65535 * 255:.0f} of 255 at most "
        "(nearly black); scale them to the full 16-bit range, or to 8 bits, as the model saw them in training"
    )
