"""Data that is already model-ready: numpy arrays, streamed into batches, never collected.

Three forms, one stream: an iterable of arrays (each one sample without the batch axis, or a batch with
the model input's full rank), an iterable of {input_name: array} dicts, or a folder of .npy / .npz files
(`quantkit calibrate --inputs DIR`: one sample per file, sorted by name; an .npz names its input). Every
sample is checked against the model's input (rank, fixed sizes, finite float values) as it arrives.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.errors import ConfigError, ImageError
from quantkit.results import Batch, InputSpec

ARRAY_SUFFIXES = frozenset({".npy", ".npz"})
Sample = np.ndarray | Mapping[str, Any]


def array_files(folder: Path) -> list[Path]:
    """The .npy and .npz files under `folder` (recursive, sorted by relative path; dot files skipped)."""
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise ImageError(f"--inputs {folder} {what}; pass a folder of .npy or .npz files")
    found = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in ARRAY_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    found = [p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not found:
        raise ImageError(f"no .npy or .npz files under {folder}; save one sample per file with numpy.save")
    return found


def read_array_files(paths: Iterable[Path]) -> Iterator[Sample]:
    """Each file's sample, loaded when the stream reaches it (no pickles: allow_pickle is off)."""
    for path in paths:
        try:
            if path.suffix.lower() == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    yield {name: archive[name] for name in archive.files}
            else:
                yield np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ImageError(f"cannot read {path} as a numpy array ({exc}); save it with numpy.save") from exc


class ArrayStream:
    """Samples -> float32 batches [N, ...] for one model input, checked on the way; `count` and
    `content_hash` (sha256 over every sample's shape and bytes, in order) once iterated."""

    def __init__(self, samples: Iterable[Sample], spec: InputSpec, batch_size: int) -> None:
        self.samples = samples
        self.spec = spec
        self.batch_size = batch_size
        self.count = 0
        self.shape: tuple[int, ...] | None = None  # every sample's, once the first is seen
        self.skipped: list[tuple[Path, str]] = []  # arrays are never skipped: a bad one is an error
        self._digest = hashlib.sha256()

    def __iter__(self) -> Iterator[Batch]:
        pending: list[np.ndarray] = []
        for index, item in enumerate(self.samples):
            for sample in self._split(self._array(item, index), index):
                self._digest.update(repr(sample.shape).encode() + sample.tobytes())
                pending.append(sample)
                self.count += 1
                if len(pending) == self.batch_size:
                    yield self._batch(pending)
                    pending = []
        if pending:
            yield self._batch(pending)

    @property
    def content_hash(self) -> str:
        return self._digest.hexdigest()

    def _batch(self, samples: list[np.ndarray]) -> Batch:
        first = self.count - len(samples)
        return Batch(np.stack(samples), tuple(Path(f"sample-{first + i}") for i in range(len(samples))))

    def _array(self, item: Sample, index: int) -> np.ndarray:
        name = self.spec.name
        if isinstance(item, Mapping):
            keys = sorted(item)
            if keys == [name] or len(keys) == 1:
                item = item[keys[0]]
            else:
                raise ConfigError(
                    f"sample {index} names the inputs {keys}; the model has one input, {name!r}: give "
                    f"{{{name!r}: array}} (models with several inputs are not supported yet)"
                )
        try:
            array = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"sample {index} is not a numeric array ({type(item).__name__})") from exc
        if not np.isfinite(array).all():
            raise ConfigError(f"sample {index} holds NaN or Inf; feed finite values")
        return array

    def _split(self, array: np.ndarray, index: int) -> list[np.ndarray]:
        """One sample (rank of the input minus the batch axis) or a batch (the input's rank) -> samples."""
        rank = len(self.spec.shape)
        if array.ndim == rank - 1:
            samples = [array]
        elif array.ndim == rank:
            samples = list(array)
        else:
            raise ConfigError(
                f"sample {index} has shape {list(array.shape)}; the model's input {self.spec.name!r} is "
                f"{_fmt(self.spec.shape)}: give arrays of rank {rank - 1} (one sample) or {rank} (a batch)"
            )
        wanted = self.spec.shape[1:]
        for sample in samples:
            if self.shape is not None and sample.shape != self.shape:
                raise ConfigError(
                    f"sample {index} has shape {list(sample.shape)}, the samples before it "
                    f"{list(self.shape)}: give every sample one shape"
                )
            self.shape = sample.shape
            if any(w is not None and w != got for w, got in zip(wanted, sample.shape, strict=True)):
                raise ConfigError(
                    f"sample {index} has shape {list(sample.shape)} per sample; the model's input "
                    f"{self.spec.name!r} is {_fmt(self.spec.shape)}"
                )
        return samples


def sample_side(sample_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """HxW of one image-like sample [C, H, W] or [H, W, C] (C of 1 or 3); None for other shapes."""
    if len(sample_shape) != 3:
        return None
    if sample_shape[0] in (1, 3):
        return int(sample_shape[1]), int(sample_shape[2])
    return int(sample_shape[0]), int(sample_shape[1])


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
