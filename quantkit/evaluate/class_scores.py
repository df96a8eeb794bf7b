"""Which outputs hold class scores, and in what form: [N, C] scores (also as [N, C, 1, 1]) of one image
a row, class probabilities at each position ([N, T, C] of a sequence, a segmenter's softmax map) and a
segmenter's logits at the input's own size; top-1 / top-5 against labels (TopK). Pure numpy."""

from __future__ import annotations

import numpy as np

from quantkit.outcomes import Accuracy


def is_classification(output: np.ndarray, images: int | None = None) -> bool:
    """A [N, C] score output with C >= 2 (top-k makes sense on it), N the `images` run where known: a row
    per anchor is no image's scores (hunt31: YuNet's [1076, 14] box and landmark offsets of one image
    read as 'top-1 agree 97 %', and passed shrink's --max-drop gate)."""
    return output.ndim == 2 and output.shape[1] >= 2 and images in (None, output.shape[0])


def holds_labels(dtype: np.dtype) -> bool:
    """Integers that name things (an ArgMax's classes, indices, counts: 16 bits or wider) or booleans, not
    numbers: 8-bit integers are quantized values (a QuantizeLinear's output: a TFLite classifier's uint8
    scores, hunt53 B1, read as labels gave '28 % top-1 agree', its equal bytes, where their argmax agreed
    on 95 %, and no SQNR)."""
    return dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize > 1)


def is_label_column(output: np.ndarray, images: int | None = None) -> bool:
    """One integer label per image, [N] or [N, 1] (an ArgMax over a classifier's scores), N the `images`
    run where known: top-1 against --labels reads it as the class picked."""
    one_each = output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)
    return holds_labels(output.dtype) and one_each and images in (None, output.shape[0])


def class_each(output: np.ndarray) -> np.ndarray:
    """The class of each image [N]: a label column's labels (is_label_column), else the top-1 of [N, C]
    scores."""
    return output.reshape(output.shape[0]) if holds_labels(output.dtype) else output.argmax(1)


def class_view(output: np.ndarray) -> np.ndarray:
    """[N, C] scores that a classifier gives as [N, C, 1, 1, ...] (Caffe-era exports: SqueezeNet 1.0 of
    the ONNX model zoo, [1, 1000, 1, 1]) or, channels last, [N, 1, 1, C] (a Keras 1x1 Conv head unflattened,
    as tf2onnx writes it: hq62 E) as [N, C]; any other output as it is. Not [N, A, 1]: a face detector's
    per-anchor scores (YuNet), whose 'top-1 agreement' over anchors measured 31 % beside 31 dB."""
    if output.ndim > 3 and output.shape[1] >= 2 and all(d == 1 for d in output.shape[2:]):
        return output.reshape(output.shape[:2])
    if output.ndim == 4 and output.shape[3] >= 2 and output.shape[1] == output.shape[2] == 1:
        return output.reshape(output.shape[0], output.shape[3])
    return output


def class_views(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: class_view(value) for name, value in outputs.items()}


def has_class_scores(output: np.ndarray, images: int | None = None) -> bool:
    """[N, C] scores or class probabilities at each position (class_view's form) of `images` images where
    known: what top-1 agreement reads."""
    return class_axis(output, images) is not None


def class_axis(output: np.ndarray, images: int | None = None) -> int | None:
    """The axis of `images` images' class scores (where known): 1 of [N, C] scores, else that of class
    probabilities at each position (probability_axis); None where the output holds none."""
    if is_classification(output, images):
        return 1
    axis = probability_axis(output)
    return axis if axis is not None and images in (None, len(output)) else None


def logits_axis(output: np.ndarray, side: tuple[int, int] | None) -> int | None:
    """The class axis of a segmenter's logits at the input's own size `side` (H, W): 1 of [N, C, H, W],
    3 of [N, H, W, C]; C >= 2 and not 3 (an image the model gives back: an enhancer's, a style's). For an
    output a Conv or Resize computes (graph.output_kinds.map_outputs): a keypoint heatmap or a text map at a
    fraction of the input's size, or one channel of saliency or depth, has no such axis."""
    return shape_logits_axis(output.shape, side)


def shape_logits_axis(
    shape: tuple[int, ...], side: tuple[int, int] | None, three: bool = False
) -> int | None:
    """logits_axis of an output of `shape`; three: an axis of 3 counts too (compare_notes says why it
    does not: an image the model gives back)."""
    if len(shape) != 4 or side is None:
        return None
    axis = 1 if tuple(shape[2:]) == side else 3 if tuple(shape[1:3]) == side else None
    return axis if axis is not None and shape[axis] not in ((1,) if three else (1, 3)) else None


def is_class_sequence(output: np.ndarray) -> bool:
    """A [N, T, C] output of class probabilities at each of T positions: a text recognizer's softmax."""
    return output.ndim == 3 and probability_axis(output) == 2


def sums_to_one(values: np.ndarray, axis: int) -> bool:
    """Whether every row along `axis` sums to 1 within float32 rounding (a softmax's probabilities)."""
    return bool(np.all(np.abs(values.sum(axis=axis, dtype=np.float64) - 1.0) < 1e-3))


def probability_axis(output: np.ndarray) -> int | None:
    """The axis along which a rank-3 or rank-4 output holds class probabilities at each position (C >= 2
    values in [0, 1] summing to 1): 2 of a text recognizer's [N, T, C] softmax, 3 of a segmenter's
    [N, H, W, C] softmax or 1 of its [N, C, H, W] one. Top-1 agreement then counts positions (pixels).
    None for any other output."""
    if output.ndim not in (3, 4) or output.size == 0 or not np.isfinite(output).all():
        return None
    if output.min() < 0.0 or output.max() > 1.0:
        return None
    for axis in (2,) if output.ndim == 3 else (3, 1):
        if output.shape[axis] >= 2 and sums_to_one(output, axis):
            return axis
    return None


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, [N, k]."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


class TopK:
    """Top-1 / top-5 accuracy against integer labels."""

    def __init__(self) -> None:
        self.top1 = 0
        self.top5 = 0
        self.count = 0
        self.classes = 0  # the fewest score columns seen

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """scores: float [N, C], or the classes picked (integers [N] or [N, 1]: no top-5); labels: int [N]."""
        if holds_labels(scores.dtype):
            self.top1 += int(np.sum(class_each(scores) == labels))
            self.count += int(labels.size)
            return
        top = top_indices(scores, min(5, scores.shape[1]))
        self.top1 += int(np.sum(top[:, 0] == labels))
        self.top5 += int(np.sum(np.any(top == labels[:, None], axis=1)))
        self.count += int(labels.size)
        self.classes = min(self.classes or scores.shape[1], scores.shape[1])

    def merge(self, later: TopK) -> None:
        self.top1 += later.top1
        self.top5 += later.top5
        self.count += later.count
        self.classes = min(self.classes or later.classes, later.classes or self.classes)

    def result(self) -> Accuracy:
        n = max(self.count, 1)
        return Accuracy(self.top1 / n, self.top5 / n if self.classes > 5 else None, self.count)  # else 100 %
