"""The samples a calibration table keeps for convert: SMOKE_SAMPLES spread over the images (or arrays)
read, refilled where one could not be read, and the stress samples, the images most often among the
tensors' most extreme (calib.extremes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from quantkit.array_files import Sample
from quantkit.calib.extremes import stress_images
from quantkit.calib.table import SMOKE_SAMPLES
from quantkit.config import Preprocess
from quantkit.data import samples_at, shapes_of
from quantkit.images import ImageLoader
from quantkit.pipeline.calib_chunks import Merged, spread, spread_positions
from quantkit.results import Feed, InputSpec, feed_rows


def refilled(merged: Merged, preprocess: Preprocess) -> Feed | None:
    """The samples kept, or where an image picked for them could not be read (spread picks among every
    image listed), SMOKE_SAMPLES spread over the images read, decoded again here: a table with 7 samples
    left convert's smoke test and searches one short. The samples kept where they cannot be decoded here
    (a Ray cluster's own storage) or differ in shape."""
    kept = merged.samples
    rows = 0 if kept is None else feed_rows(kept)
    if rows >= min(SMOKE_SAMPLES, len(merged.observed)) or not isinstance(kept, np.ndarray | None):
        return kept
    picks = spread(merged.observed, SMOKE_SAMPLES)
    loader = ImageLoader([p for p in merged.observed if p in picks], preprocess, SMOKE_SAMPLES)
    batch = next(iter(loader), None)
    if batch is None or loader.skipped or not isinstance(batch.data, np.ndarray):
        return kept
    if kept is not None and batch.data.shape[1:] != kept.shape[1:]:
        return kept
    return batch.data


def stress_samples(merged: Merged, preprocess: Preprocess) -> Feed | None:
    """The images most often among the tensors' most extreme (calib.extremes), decoded again here; None
    where no image stands out or this process cannot read them (a Ray cluster's own storage)."""
    chosen = stress_images(p.image_extremes for p in merged.partials.values())
    paths = [merged.observed[i] for i in chosen if i < len(merged.observed)]
    if not paths:
        return None
    loader = ImageLoader(paths, preprocess, len(paths))
    batch = next(iter(loader), None)  # one batch of them all: float32 [S, ...] (per input beside fixed ones)
    return None if batch is None or loader.skipped else batch.data


def read_again(
    merged: Merged, arrays: Iterable[Sample], spec: InputSpec
) -> tuple[Feed | None, np.ndarray | None]:
    """(the samples the table keeps, its stress samples), read again from the arrays where they can be (a
    folder of files, a list: data.samples_at). Kept: SMOKE_SAMPLES spread over every sample as images'
    are (calib_chunks.spread), where all of them are of the first samples' shape, else spread over those
    of the most common shape (hq172 F9: a text-line recognizer fed lines of their own widths kept the
    first sample alone, 4 more of its width coming after others; hq173 F8: 12 of 13 after an odd first
    one, 1 kept), else the first ones observed (a one-pass iterator's). Stress, of the kept shape: the
    samples most often among the tensors' most extreme (calib.extremes); None where there are none or the
    arrays cannot be read again: a table from arrays could not measure the range cap without them."""
    kept = merged.samples
    if not isinstance(kept, np.ndarray):
        return kept, None
    chosen = stress_images(p.image_extremes for p in merged.partials.values())
    picks = spread_positions(merged.seen, SMOKE_SAMPLES) if merged.seen > SMOKE_SAMPLES else []
    found = samples_at(arrays, spec, [*chosen, *picks], kept.shape[1:])
    if picks and all(k in found for k in picks):
        kept = np.stack([found[k] for k in picks])
    elif len(kept) < min(SMOKE_SAMPLES, merged.seen):  # the shapes differ
        first, kept = kept.shape[1:], _of_most_common_shape(arrays, spec, kept)
        found = found if kept.shape[1:] == first else samples_at(arrays, spec, chosen, kept.shape[1:])
    stress = [found[k] for k in chosen if k in found]
    return kept, np.stack(stress) if stress else None


def _of_most_common_shape(arrays: Iterable[Sample], spec: InputSpec, kept: np.ndarray) -> np.ndarray:
    """SMOKE_SAMPLES spread over the samples of the most common shape (`kept`'s among the most common),
    read again; `kept` where there are no more of them or they cannot be read again."""
    shapes = shapes_of(arrays, spec)
    counts = Counter(s for s in shapes if s is not None)
    if not counts:
        return kept
    shape = max(counts, key=lambda s: (counts[s], s == kept.shape[1:]))
    same = [k for k, s in enumerate(shapes) if s == shape]
    picks = (
        [same[k] for k in spread_positions(len(same), SMOKE_SAMPLES)] if len(same) > SMOKE_SAMPLES else same
    )
    found = samples_at(arrays, spec, picks, shape) if len(picks) > len(kept) else {}
    return np.stack([found[k] for k in picks]) if found and all(k in found for k in picks) else kept


def sample_shapes(samples: Feed) -> dict[str, Any]:
    """How the table records its samples' shape: one input's, or each input's by name."""
    if isinstance(samples, np.ndarray):
        return {"sample_shape": list(samples.shape[1:])}
    return {"sample_shapes": {name: list(v.shape[1:]) for name, v in samples.items()}}
