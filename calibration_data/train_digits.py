"""Make quantkit's embedded demo: a small CNN trained on scikit-learn's bundled handwritten digits, and
held-out digit images for calibration and evaluation.

    pip install scikit-learn==1.9.1        # only to regenerate; quantkit itself does not need it
    python calibration_data/train_digits.py

Writes into quantkit/demo_data/ (package data, so that every install has it): digits_cnn.onnx, labels.txt
and digits/{calib,val}/<digit>/<n>.png. This script stays outside the package: it needs scikit-learn,
which quantkit does not. Seeded and in float64 numpy, so the same versions give the same bytes. The data:
scikit-learn's copy of the UCI "Optical Recognition of Handwritten Digits" test set (1797 8x8 images, 16
grey levels; CC BY 4.0), upscaled 3x to 24x24 (nearest neighbour) and stored as 8-bit greyscale PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parents[1] / "quantkit" / "demo_data"
SEED, SIZE, EPOCHS, BATCH, LR = 0, 24, 30, 64, 0.05
HELD_OUT = 400  # 200 for calibration, 200 for evaluation


def images() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 24, 24] greyscale, int [N] labels)."""
    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return np.kron(pixels, np.ones((1, 3, 3), np.uint8)), digits.target.astype(np.int64)


def im2col(x: np.ndarray) -> np.ndarray:
    """x [N, C, H, W] -> patches [N, H, W, C * 9] of a 3x3 convolution with padding 1."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([padded[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=2)
    return cols.reshape(n, c * 9, h, w).transpose(0, 2, 3, 1)


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The adjoint of im2col: patches [N, H, W, C * 9] -> x [N, C, H, W]."""
    n, c, h, w = shape
    taps = cols.transpose(0, 3, 1, 2).reshape(n, c, 9, h, w)
    padded = np.zeros((n, c, h + 2, w + 2))
    for k in range(9):
        i, j = divmod(k, 3)
        padded[:, :, i : i + h, j : j + w] += taps[:, :, k]
    return padded[:, :, 1:-1, 1:-1]


class Net:
    """conv3x3(1->8) relu maxpool2, conv3x3(8->16) relu maxpool2, flatten, linear(576->10)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.w1 = rng.normal(0, np.sqrt(2 / 9), (8, 1, 3, 3))
        self.b1 = np.zeros(8)
        self.w2 = rng.normal(0, np.sqrt(2 / 72), (16, 8, 3, 3))
        self.b2 = np.zeros(16)
        self.w3 = rng.normal(0, np.sqrt(1 / 576), (576, 10))
        self.b3 = np.zeros(10)

    def params(self) -> list[np.ndarray]:
        return [self.w1, self.b1, self.w2, self.b2, self.w3, self.b3]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        c1 = im2col(x)
        a1 = np.maximum(c1 @ self.w1.reshape(8, -1).T + self.b1, 0).transpose(0, 3, 1, 2)
        p1, m1 = _pool(a1)
        c2 = im2col(p1)
        a2 = np.maximum(c2 @ self.w2.reshape(16, -1).T + self.b2, 0).transpose(0, 3, 1, 2)
        p2, m2 = _pool(a2)
        flat = p2.reshape(len(x), -1)
        return flat @ self.w3 + self.b3, [x, c1, a1, m1, p1, c2, a2, m2, flat]

    def backward(self, grad: np.ndarray, saved: list[np.ndarray]) -> list[np.ndarray]:
        x, c1, a1, m1, p1, c2, a2, m2, flat = saved
        g_w3, g_b3 = flat.T @ grad, grad.sum(0)
        g_p2 = (grad @ self.w3.T).reshape(len(x), 16, 6, 6)
        g_a2 = _unpool(g_p2, m2) * (a2 > 0)
        g2 = g_a2.transpose(0, 2, 3, 1)  # [N, H, W, 16]
        g_w2 = np.einsum("nhwo,nhwk->ok", g2, c2).reshape(self.w2.shape)
        g_p1 = col2im(g2 @ self.w2.reshape(16, -1), p1.shape)
        g_a1 = _unpool(g_p1, m1) * (a1 > 0)
        g1 = g_a1.transpose(0, 2, 3, 1)
        g_w1 = np.einsum("nhwo,nhwk->ok", g1, c1).reshape(self.w1.shape)
        return [g_w1, g1.sum((0, 1, 2)), g_w2, g2.sum((0, 1, 2)), g_w3, g_b3]


def _pool(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max pooling; also the one-hot mask of each window's maximum."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2)
    top = windows.max(axis=(3, 5))
    mask = windows == top[:, :, :, None, :, None]
    mask &= np.cumsum(np.cumsum(mask, axis=3), axis=5) == 1  # one winner per window
    return top, mask


def _unpool(grad: np.ndarray, mask: np.ndarray) -> np.ndarray:
    n, c, h, w = grad.shape
    return (mask * grad[:, :, :, None, :, None]).reshape(n, c, h * 2, w * 2)


def train(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Net:
    net = Net(rng)
    velocity = [np.zeros_like(p) for p in net.params()]
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            logits, saved = net.forward(x[idx])
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            probs[np.arange(len(idx)), y[idx]] -= 1
            grads = net.backward(probs / len(idx), saved)
            lr = LR * (0.5 * (1 + np.cos(np.pi * epoch / EPOCHS)))
            for p, v, g in zip(net.params(), velocity, grads, strict=True):
                v *= 0.9
                v -= lr * g
                p += v
    return net


def to_onnx(net: Net) -> onnx.ModelProto:
    f32 = {k: v.astype(np.float32) for k, v in zip(("w1", "b1", "w2", "b2", "w3", "b3"), net.params(), strict=True)}
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="classifier"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in f32.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="quantkit-demo")
    model.ir_version = 8
    model.doc_string = "Handwritten digits 0-9, 24x24 greyscale scaled to [0, 1]; made by train_digits.py"
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    pixels, labels = images()
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(labels))
    held, kept = order[:HELD_OUT], order[HELD_OUT:]
    x = pixels[kept, None].astype(np.float64) / 255.0
    net = train(x, labels[kept], rng)
    held_x = pixels[held, None].astype(np.float64) / 255.0
    accuracy = float(np.mean(net.forward(held_x)[0].argmax(1) == labels[held]))
    onnx.save(to_onnx(net), str(OUT / "digits_cnn.onnx"))
    (OUT / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))
    for split, part in (("calib", held[: HELD_OUT // 2]), ("val", held[HELD_OUT // 2 :])):
        for n, i in enumerate(part):
            folder = OUT / "digits" / split / str(labels[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i], mode="L").save(folder / f"{n:03d}.png", optimize=True)
    print(f"held-out accuracy {accuracy:.3f} on {HELD_OUT} digits")


if __name__ == "__main__":
    main()
