"""Runs of a model's outputs kept on disk and read back one run at a time.

Convert measures every candidate against FP32's outputs on the calibration samples, and holds those
outputs for the whole convert. For most models they are small; a model whose outputs are large images and
feature maps holds hundreds of MB a sample: img.ly's IS-Net at 1024x1024 returns 12 outputs (six 1024x1024
maps, six feature maps up to 64x512x512), 1.1 GB for the table's 8 samples, held beside every session the
convert opened. `spilled` keeps such runs in a temporary folder (one uncompressed .npz a run, removed when
the last view of it goes) and gives them back as a sequence whose items are read when asked for: one run
in memory at a time where the readers go through them in order, as every measurement does. The values
read are the values written, so every figure is the same as with the runs in memory.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from quantkit.scratch import Scratch

Run = dict[str, np.ndarray]
SPILL_BYTES = 256 << 20  # runs whose outputs pass this together are kept on disk


class SpilledRuns(Sequence[Run]):
    """Runs in .npz files of a folder shared by every view of them (slices and `only`); each item a fresh
    dict of the arrays its view names, read from disk. Pickled (worker processes, Ray) as the plain list
    of its runs."""

    def __init__(
        self, files: Sequence[Path], entries: Sequence[Sequence[tuple[str, str]]], keep: object
    ) -> None:
        """entries: per file, (tensor name, the array's key in the file) of each array this view reads."""
        self._files, self._entries = tuple(files), tuple(tuple(e) for e in entries)
        self._keep = keep  # what removes the folder once no view needs it

    def __len__(self) -> int:
        return len(self._files)

    @overload
    def __getitem__(self, index: int) -> Run: ...

    @overload
    def __getitem__(self, index: slice) -> SpilledRuns: ...

    def __getitem__(self, index: int | slice) -> Run | SpilledRuns:
        if isinstance(index, slice):
            return SpilledRuns(self._files[index], self._entries[index], self._keep)
        with np.load(self._files[index]) as stored:  # an .npz reads only the arrays asked for
            return {name: stored[key] for name, key in self._entries[index]}

    def __iter__(self) -> Iterator[Run]:
        return (self[k] for k in range(len(self)))

    def only(self, wanted: Iterable[str]) -> SpilledRuns:
        """The same runs with the arrays named in `wanted` alone (the others stay on disk, unread)."""
        keep = set(wanted)
        entries = [[(name, key) for name, key in run if name in keep] for run in self._entries]
        return SpilledRuns(self._files, entries, self._keep)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


def spilled(runs: Iterable[Run], count: int, limit: int = SPILL_BYTES) -> Sequence[Run]:
    """`count` runs as a list, or, where the first run times `count` passes `limit` bytes, as SpilledRuns
    (each run written as it comes, so that no more than one is held here)."""
    it = iter(runs)
    first = next(it, None)
    if first is None:
        return []
    if sum(a.nbytes for a in first.values()) * count <= limit:
        return [first, *it]
    keep = _Folder(Scratch("quantkit-runs-"))
    folder = keep.path
    files, entries = [], []
    for k, run in enumerate(itertools.chain([first], it)):
        files.append(folder / f"run{k:05d}.npz")
        np.savez(files[-1], *(np.asarray(a) for a in run.values()))  # stored as arr_0, arr_1, ...
        entries.append([(name, f"arr_{j}") for j, name in enumerate(run)])
    return SpilledRuns(files, entries, keep)


class _Folder:
    """Removes its folder once garbage-collected (or at exit): every view of the runs holds this one."""

    def __init__(self, scratch: Scratch) -> None:
        self.path = scratch.path
        weakref.finalize(self, scratch.remove)
