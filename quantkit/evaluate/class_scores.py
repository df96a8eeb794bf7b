"""Which outputs hold class scores, and in what form: [N, C] scores (also as [N, C, 1, 1]) of one image
a row, and [N, T, C] class probabilities of a sequence. Pure numpy."""

from __future__ import annotations

import numpy as np


def is_classification(output: np.ndarray, images: int | None = None) -> bool:
    """A [N, C] score output with C >= 2 (top-k makes sense on it), N the `images` run where known: a row
    per anchor is no image's scores (hunt31: YuNet's [1076, 14] box and landmark offsets of one image
    read as 'top-1 agree 97 %', and passed shrink's --max-drop gate)."""
    return output.ndim == 2 and output.shape[1] >= 2 and images in (None, output.shape[0])


def class_view(output: np.ndarray) -> np.ndarray:
    """[N, C] scores that a classifier gives as [N, C, 1, 1, ...] (Caffe-era exports: SqueezeNet 1.0 of
    the ONNX model zoo, [1, 1000, 1, 1]) as [N, C]; any other output as it is. Not [N, A, 1]: a face
    detector's per-anchor scores (YuNet), whose 'top-1 agreement' over anchors measured 31 % beside
    31 dB."""
    if output.ndim > 3 and output.shape[1] >= 2 and all(d == 1 for d in output.shape[2:]):
        return output.reshape(output.shape[:2])
    return output


def class_views(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: class_view(value) for name, value in outputs.items()}


def has_class_scores(output: np.ndarray, images: int | None = None) -> bool:
    """[N, C] scores or [N, T, C] class probabilities (class_view's form) of `images` images where known:
    what top-1 agreement reads."""
    return is_classification(output, images) or (is_class_sequence(output) and images in (None, len(output)))


def is_class_sequence(output: np.ndarray) -> bool:
    """A [N, T, C] output of class probabilities at each of T positions (C >= 2, every row in [0, 1] and
    summing to 1): a text recognizer's softmax. Top-1 agreement then counts positions."""
    if output.ndim != 3 or output.shape[2] < 2 or output.size == 0 or not np.isfinite(output).all():
        return False
    sums = output.sum(axis=2, dtype=np.float64)
    return bool(output.min() >= 0.0 and output.max() <= 1.0 and np.all(np.abs(sums - 1.0) < 1e-3))
