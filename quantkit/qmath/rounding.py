"""Error-compensating weight rounding (OBQ / GPTQ): integer weights chosen for the layer's output error.

Round to nearest minimises each weight's own error. What the model feels is the error of the layer's
output, E||(W_q - W) x||^2 = sum_o (w_q - w)_o H (w_q - w)_o^T with H = E[x x^T], the second moment
of the layer's inputs. GPTQ (Frantar et al., 2022) quantizes the columns of W one at a time and moves
each column's rounding error onto the columns not yet quantized, in the proportions that H's inverse
gives (the optimal update of the Optimal Brain Surgeon), so that the remaining columns compensate for
it. Scales stay those of per-channel symmetric quantization; only the integers change.

Grouped convolutions are a batch of independent problems: group g's rows see only its own input
columns, so H is [G, K, K] and W is [G, O/G, K]; a depthwise convolution is G = C problems of K = kh*kw.
"""

from __future__ import annotations

import math

import numpy as np

DAMPING = 0.01  # of H's mean diagonal, added to the diagonal: H from few samples is near singular
BLOCK = 128  # columns updated together (lazy batch updates): the same result, fewer passes over W


# Rows a product sums at once. OpenBLAS 0.3.31 (numpy 2.4's) took 2.6 s for one [144, 102400] x
# [102400, 144] product on this 2-core machine and 0.06 s for the same rows in blocks of 8192: a
# 640x640 text detector's convert spent 128 of its 133 s here.
ROW_BLOCK = 8192


def second_moment_update(total: np.ndarray, rows: np.ndarray) -> None:
    """total [G, K, K] += rows^T rows per group; rows: [G, P, K] (P samples of each group's K inputs).
    float64 sums, so that many batches add up without loss; ROW_BLOCK rows a product. A batched matmul
    (BLAS): numpy 2.4's einsum of the same product took 1.5-4x its time on one group of K = 288-1152
    columns."""
    for start in range(0, rows.shape[1], ROW_BLOCK):
        block = rows[:, start : start + ROW_BLOCK]
        total += np.matmul(block.transpose(0, 2, 1), block)


def compensated_round(
    weight: np.ndarray, hessian: np.ndarray, scale: np.ndarray, qmax: int, damping: float = DAMPING
) -> np.ndarray:
    """Integer weights that minimise the output error (W_q - W) H (W_q - W)^T, greedily column by column.

    weight: float [G, O, K] (G groups of O output channels over K inputs); hessian: [G, K, K], the
    uncentered second moment of each group's inputs (any positive multiple); scale: float32 [G, O],
    each output channel's step. Returns int8 [G, O, K] on [-qmax, qmax].

    Columns are taken in order of decreasing H diagonal (GPTQ's act-order: the inputs with most energy
    are fixed first, while the most columns remain to absorb their error). Inputs that are always 0
    (H diagonal 0) keep round-to-nearest: nothing can be learnt about them.
    """
    groups, outs, k = weight.shape
    w = weight.astype(np.float64).copy()
    step = scale.astype(np.float64)[:, :, None]  # [G, O, 1]
    h = hessian.astype(np.float64).copy()
    diag = np.einsum("gkk->gk", h)
    dead = diag <= 0
    h[:, np.arange(k), np.arange(k)] += np.where(dead, 1.0, 0.0)
    mean_diag = np.maximum(np.einsum("gkk->g", h) / k, 1e-30)
    h[:, np.arange(k), np.arange(k)] += damping * mean_diag[:, None]
    order = np.argsort(-np.where(dead, -1.0, diag), axis=1, kind="stable")  # [G, K]
    w = np.take_along_axis(w, order[:, None, :], axis=2)
    h = np.take_along_axis(np.take_along_axis(h, order[:, :, None], axis=1), order[:, None, :], axis=2)
    upper = _inverse_cholesky_upper(h)  # [G, K, K]: H^-1 = U^T U
    q = np.zeros_like(w)
    for start in range(0, k, BLOCK):
        stop = min(start + BLOCK, k)
        errors = np.zeros((groups, outs, stop - start))
        for j in range(start, stop):
            column = w[:, :, j]  # [G, O]
            q[:, :, j] = np.clip(np.rint(column / step[:, :, 0]), -qmax, qmax)
            pivot = upper[:, j, j][:, None]  # [G, 1]
            error = (column - q[:, :, j] * step[:, :, 0]) / pivot
            w[:, :, j + 1 : stop] -= error[:, :, None] * upper[:, None, j, j + 1 : stop]
            errors[:, :, j - start] = error
        if stop < k:
            w[:, :, stop:] -= np.einsum("gob,gbk->gok", errors, upper[:, start:stop, stop:])
    inverse = np.argsort(order, axis=1)
    q = np.take_along_axis(q, inverse[:, None, :], axis=2)
    if not np.isfinite(q).all():  # a solve that broke down (NaN): round to nearest instead
        q = np.clip(np.rint(weight.astype(np.float64) / step), -qmax, qmax)
    return q.astype(np.int8)


def output_error(weight: np.ndarray, dequantized: np.ndarray, hessian: np.ndarray) -> float:
    """sum over groups and channels of (W_q - W) H (W_q - W)^T; weight, dequantized: [G, O, K]."""
    d = dequantized.astype(np.float64) - weight.astype(np.float64)
    return float(np.einsum("gok,gkl,gol->", d, hessian, d, optimize=True))


def _inverse_cholesky_upper(h: np.ndarray) -> np.ndarray:
    """U upper triangular with H^-1 = U^T U, per group; h: [G, K, K] symmetric positive definite.

    With J the reversal of the K indices, J H J = M M^T (Cholesky) gives H = R R^T for the upper
    triangular R = J M J, so H^-1 = R^-T R^-1 and U = R^-1, the factor Cholesky of H^-1 gives (unique
    with a positive diagonal) without forming H^-1: one factorisation and one inverse instead of two
    and a solve (a 2304-column layer: 1.9 s -> 1.1 s)."""
    upper = np.linalg.cholesky(h[:, ::-1, ::-1])[:, ::-1, ::-1]  # R
    return np.linalg.inv(upper)


# Output positions of one image a layer's second moment is estimated from, at most: a layer with more
# takes every s-th row and column of its output grid (s = ceil(sqrt(positions / MAX_POSITIONS))). Rows
# next to each other overlap in all but one column of their window, so the grid's neighbours add little:
# PP-OCRv4's text detector at 640x640 spent 12 s of a 43 s convert in the rows and products of its 160x160
# and 320x320 layers. 128x128 positions leave every layer of a 224x224 model as it was (YOLOX-Nano's one
# 208x208 layer takes every 2nd row and column; its fallback keeps that layer float by default).
MAX_POSITIONS = 128 * 128


def position_spacing(positions: int, most: int = MAX_POSITIONS) -> int:
    """The spacing s of a grid of `positions` output positions whose every s-th row and column leaves
    at most about `most` of them (1: all)."""
    return math.ceil(math.sqrt(positions / most)) if positions > most else 1


def conv_rows(
    x: np.ndarray,
    kernel: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    group: int = 1,
    most: int | None = None,
) -> np.ndarray:
    """The input rows a 2-D Conv multiplies by its weight (im2col), per group.

    x: float [N, C, H, W]; pads: (top, left, bottom, right) as ONNX orders them; most: where an image
    has more output positions than this, every s-th row and column of them (position_spacing), else
    all. Returns [G, N * Ho * Wo, C/G * kh * kw], columns in the order of the weight [O, C/G, kh, kw]
    flattened (Ho, Wo: the positions taken).
    """
    n, c, _, _ = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, Ho, Wo, kh, kw]
    if most is not None:
        spacing = position_spacing(windows.shape[2] * windows.shape[3], most)
        windows = windows[:, :, ::spacing, ::spacing]
    ho, wo = windows.shape[2], windows.shape[3]
    per_group = windows.reshape(n, group, c // group, ho, wo, kh, kw)
    rows = per_group.transpose(1, 0, 3, 4, 2, 5, 6)  # [G, N, Ho, Wo, C/G, kh, kw]
    return rows.reshape(group, n * ho * wo, (c // group) * kh * kw)


def matmul_rows(x: np.ndarray) -> np.ndarray:
    """x [..., K] -> [1, P, K]: every row a MatMul or Gemm multiplies by its weight."""
    return x.reshape(1, -1, x.shape[-1])
