"""The accuracy fallback's last resort: a block of layers at one end of the network kept float together.

The fallback's rounds keep one layer float at a time and stop where no single layer lifts the output
SQNR. Some models are stuck there below their floor: PP-OCRv5's text recogniser (from PyPI, opset 7)
measured 6.3 dB, 8.2 dB with its first Conv float, and no other single layer helped; convert refused it.
Its error is spread over many layers, so the block search keeps float the fewest layers at the output end
(or the input end) of the remaining quantized ones that reach the target: bisection on the block's size,
each size measured on every sample, about 2 log2(n) trials. With every layer float the model is FP32 and
measures inf: a model is never refused for want of layers to keep float.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

MeasureSets = Callable[[Sequence[Sequence[str]]], list[float]]


def end_block(
    measure: MeasureSets, kept: Sequence[str], remaining: Sequence[str], target_db: float, limit: int
) -> tuple[list[str], float] | None:
    """(layers to keep float on top of `kept`, the output SQNR measured with them) or None.

    measure: output SQNR (dB) of each set of layers kept float (Trials.full_all). remaining: the
    quantized layers not kept, in graph order. The smallest block of at most `limit` layers from the end
    of `remaining`, or else from its start, whose SQNR reaches target_db (the smaller of the two where
    both do); where no block of `limit` layers reaches it, the better of the two largest; None where
    there is no layer to add."""
    size = min(limit, len(remaining))
    if size <= 0:
        return None

    def output_end(k: int) -> list[str]:
        return list(remaining[-k:])

    def input_end(k: int) -> list[str]:
        return list(remaining[:k])

    reached: list[tuple[int, float, list[str]]] = []
    largest: list[tuple[float, list[str]]] = []
    for block in (output_end, input_end):
        whole = measure([[*kept, *block(size)]])[0]
        largest.append((whole, block(size)))
        if whole >= target_db:
            k, found = _smallest(measure, kept, block, target_db, size, whole)
            reached.append((k, -found, block(k)))
    if reached:
        k, negative, layers = min(reached, key=lambda r: (r[0], r[1]))
        return layers, -negative
    best, layers = max(largest, key=lambda r: r[0])
    return layers, best


def _smallest(
    measure: MeasureSets,
    kept: Sequence[str],
    block: Callable[[int], list[str]],
    target_db: float,
    size: int,
    at_size: float,
) -> tuple[int, float]:
    """(k, its SQNR): the smallest block size bisection finds reaching target_db, given that `size`
    layers do (at_size dB). Bisection assumes more layers float measure no worse; where that fails it
    still returns a measured size that reaches the target."""
    low, high, found = 0, size, at_size  # low: known short of the target (0: nothing added)
    while high - low > 1:
        middle = (low + high) // 2
        score = measure([[*kept, *block(middle)]])[0]
        if score >= target_db:
            high, found = middle, score
        else:
            low = middle
    return high, found
