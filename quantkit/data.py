"""Data that is already model-ready: numpy arrays, streamed into batches, never collected.

Three forms, one stream: an iterable of arrays (each one sample without the batch axis, or a batch with
the model input's full rank), an iterable of {input_name: array} dicts (the only form for a model with
several inputs: every dict names each input once), or a folder of .npy / .npz files (`quantkit calibrate
--inputs DIR`: one sample per file, sorted by name; an .npz names its inputs). Every sample is checked
against the model's inputs (names, rank, fixed sizes, finite float values) as it arrives; where an input
has dynamic sizes, samples may differ in them (batches are of one shape).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.array_files import ARRAY_SUFFIXES, ArrayFiles, Sample
from quantkit.config import ImageSelection
from quantkit.errors import ConfigError, ImageError
from quantkit.image_folders import IMAGE_SUFFIXES
from quantkit.results import TABLE_FORMAT, Batch, Feed, InputSpec

EXACT_INTEGERS = 2**24  # float32 holds every integer up to it exactly
UNNAMED_ARRAY = "arr_0"  # what np.savez names an array given without a name


class ArrayStream:
    """Samples -> float32 batches [N, ...] for the model's inputs, checked on the way; `count` and
    `content_hash` (sha256 over every sample's shape and bytes, in order; with several inputs, each
    input's name, shape and bytes in the model's input order) once iterated.

    One input (`spec` an InputSpec): arrays, or {name: array} with one key; batches are arrays. Several
    (`spec` a sequence): every sample a dict with exactly the inputs' names; batches are dicts."""

    def __init__(
        self, samples: Iterable[Sample], spec: InputSpec | Sequence[InputSpec], batch_size: int
    ) -> None:
        self.samples = samples
        self.specs = (spec,) if isinstance(spec, InputSpec) else tuple(spec)
        self.spec = self.specs[0]
        self.batch_size = batch_size
        self.count = 0
        self.shapes: dict[str, tuple[int, ...]] = {}  # every sample's, per input, once the first is seen
        self.skipped: list[tuple[Path, str]] = []  # arrays are never skipped: a bad one is an error
        self.raw_pixels: str | None = None  # the first uint8 array fed to a float input, named (hq129 F5)
        self._digest = hashlib.sha256()
        self._label = samples.label if isinstance(samples, ArrayFiles) else "sample {}".format

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The first input's sample shape, once seen."""
        return self.shapes.get(self.spec.name)

    def __iter__(self) -> Iterator[Batch]:
        """Batches of batch_size samples of one shape: a sample of another shape (a dynamic size, as a
        text line's width) ends the batch before it."""
        pending: list[Feed] = []
        for index, item in enumerate(self.samples):
            for sample in self._samples_of(item, index):
                self._digest.update(self._digest_bytes(sample))
                if pending and _shapes(pending[0]) != _shapes(sample):
                    yield self._batch(pending)
                    pending = []
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

    def _digest_bytes(self, sample: Feed) -> bytes:
        if isinstance(sample, np.ndarray):
            return repr(sample.shape).encode() + sample.tobytes()
        return b"".join(
            name.encode() + repr(sample[name].shape).encode() + sample[name].tobytes() for name in sample
        )

    def _batch(self, samples: list[Feed]) -> Batch:
        first = self.count - len(samples)
        paths = tuple(Path(f"sample-{first + i}") for i in range(len(samples)))
        if len(self.specs) == 1:
            return Batch(np.stack(samples), paths)  # type: ignore[arg-type]
        dicts = [s for s in samples if isinstance(s, dict)]
        return Batch({spec.name: np.stack([d[spec.name] for d in dicts]) for spec in self.specs}, paths)

    def _samples_of(self, item: Sample, index: int) -> list[Feed]:
        """One item (a sample or a batch; a dict for several inputs) -> its samples."""
        if len(self.specs) == 1:
            array = self._array(self._single(item, index), index, self.spec)
            return list(self._split(array, index, self.spec))
        names = [spec.name for spec in self.specs]
        if not isinstance(item, Mapping):
            wanted = (  # hunt30: a CLI user read the Python API's wording for a .npy file
                f".npz files holding one array per input, named {names}"
                if isinstance(self.samples, ArrayFiles)
                else f"{{name: array}} dicts with the keys {names}"
            )
            raise ConfigError(
                f"{self._label(index)} is a {type(item).__name__}; the model has {len(names)} inputs: give "
                f"{wanted}"
            )
        missing, extra = [n for n in names if n not in item], sorted(set(item) - set(names))
        if missing or extra:
            wrong = "; ".join(
                w
                for w in (
                    f"missing {_few(missing)}" if missing else "",
                    f"extra {_few(extra)}" if extra else "",
                )
                if w
            )
            raise ConfigError(
                f"{self._label(index)} names other inputs than the model's {_few(names)} ({wrong})"
            )
        parts = {
            spec.name: self._split(self._array(item[spec.name], index, spec, spec.name), index, spec)
            for spec in self.specs
        }
        counts = {name: len(found) for name, found in parts.items()}
        if len(set(counts.values())) > 1:
            for spec in self.specs:  # hq59 B5: a [2] reshape target beside an image [1, 3, H, W]
                if self._unbatched(spec) and spec.shape[0] == counts[spec.name] != min(counts.values()):
                    raise ConfigError(_unbatched(spec))
            raise ConfigError(
                f"{self._label(index)} holds different numbers of samples per input ({counts}); give each "
                "input one sample, or batches of one size"
            )
        return [{name: parts[name][k] for name in names} for k in range(counts[names[0]])]

    def _single(self, item: Sample, index: int) -> Any:
        name = self.spec.name
        if isinstance(item, Mapping):
            keys = sorted(item)
            # a file's one array, whatever np.savez named it; a dict the caller wrote names the input
            # (hunt32: {'foo': array} for a model whose input is 'input' was fed, silently)
            if keys == [name] or (keys == [UNNAMED_ARRAY] and isinstance(self.samples, ArrayFiles)):
                return item[keys[0]]
            fix = (
                f"name its array {name!r}, or save it as a .npy file"
                if isinstance(self.samples, ArrayFiles)
                else f"give {{{name!r}: array}}"
            )
            raise ConfigError(
                f"{self._label(index)} names the inputs {_few(keys)}; the model has one input, "
                f"{name!r}: {fix}"
            )
        return item

    def _array(self, item: Any, index: int, spec: InputSpec, name: str | None = None) -> np.ndarray:
        what = self._label(index) if name is None else f"{self._label(index)}'s {name!r}"
        if type(item).__module__.startswith("PIL."):  # hq129 F11: refused by its [H, W, 3] shape, no fix
            raise ConfigError(
                f"{what} is a PIL image; give image files (a folder or a list of paths, with preprocess=) "
                "or model-ready arrays of the input's shape"
            )
        try:
            given = np.asarray(item)
            if given.dtype.kind not in "biuf":  # hq57 A3: complex was cast, its imaginary part dropped
                raise ConfigError(f"{what} holds {given.dtype} values; feed real numbers (float32)")
            with np.errstate(over="ignore"):  # float64 past float32's range: named as Inf below (hq72 13)
                array = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{what} is not a numeric array ({type(item).__name__})") from exc
        if not np.isfinite(array).all():
            # hq103 F7: finite float64 past float32's range was "NaN or Inf"; hq160 F5: beside an Inf too
            if (np.isfinite(given) & ~np.isfinite(array)).any():
                raise ConfigError(
                    f"{what} holds values beyond float32's range (about 3.4e38), which the model's float "
                    "input cannot take; scale them"
                )
            if np.isnan(array).any():
                raise ConfigError(f"{what} holds NaN; feed numbers")
            if spec.pixels or spec.integer or spec.dtype == "bool":
                raise ConfigError(
                    f"{what} holds Inf; input {spec.name!r} takes {spec.dtype}: feed finite values"
                )
            # hq150 F5: +-Inf is a float input's additive attention mask (masked_fill(-inf), SDPA): fed as
            # given; calibration keeps float what computes with it (its range is no finite one)
        if (spec.pixels or spec.integer or spec.dtype == "bool") and array.size:
            _require_integers(array, what, spec)
        elif given.dtype.kind in "iu" and self.raw_pixels is None and array.size and float(array.max()) > 1.0:
            low, high = int(array.min()), int(array.max())  # 0/1 masks are no pixels (hq135 F5); hq169:
            held = f"{what} holds {given.dtype.name} values from {low} to {high}"  # int64 said nothing
            self.raw_pixels = f"{held}, fed to float input {spec.name!r} as they are"
        # an integer input's ids beyond it would change (a float input's may): integer arrays checked as
        # given, float ones as the float32 samples hold them (hq115 F10: 16777217.0 was fed 16777216)
        integers = spec.integer and given.dtype.kind in "iuf" and given.size > 0
        if integers and max(-float(given.min()), float(given.max())) > EXACT_INTEGERS:
            raise ConfigError(  # hunt48 C1: 16777217 was fed as 16777216
                f"{what} holds integers beyond {EXACT_INTEGERS:,}, which the float32 samples cannot hold "
                "exactly; feed values within it"
            )
        return array

    def _unbatched(self, spec: InputSpec) -> bool:
        """Whether `spec` may be an input without a batch axis: its first dimension fixed and declared
        by no other input (a reshape target [2] beside an image [1, 3, H, W]; two inputs fixed at batch 2
        share their batch, a review of this session)."""
        first = spec.shape[:1]
        others = [o for o in self.specs if o is not spec]
        fixed = bool(first) and first[0] is not None
        return bool(others) and fixed and all(o.shape[:1] != first for o in others)

    def _split(self, array: np.ndarray, index: int, spec: InputSpec) -> list[np.ndarray]:
        """One sample (rank of the input minus the batch axis) or a batch (the input's rank) -> samples."""
        what = self._label(index) if len(self.specs) == 1 else f"{self._label(index)}'s {spec.name!r}"
        rank = len(spec.shape)
        if (
            rank == 1 and spec.shape[0] not in (None, 1) and len(self.specs) == 1
        ):  # hq115 F6: [128] split into scalars (an
            raise ConfigError(  # internal error): a fixed vector has no axis of samples
                f"the model's input {spec.name!r} is {_fmt(spec.shape)}, with no batch axis: quantkit reads "
                "the first axis of every input as its samples; export the model with one ([N, ...])"
            )
        if array.ndim == rank - 1 or array.ndim == rank == 0:  # one sample; a scalar input's is a scalar
            samples = [array]
        elif array.ndim == rank:
            samples = list(array)
        elif array.ndim == rank + 1 and self._unbatched(spec) and tuple(array.shape[1:]) == spec.shape:
            raise ConfigError(_unbatched(spec))
        else:
            raise ConfigError(
                f"{what} has shape {list(array.shape)}; the model's input {spec.name!r} is "
                f"{_fmt(spec.shape)}: give arrays of rank {rank - 1} (one sample) or {rank} (a batch)"
            )
        wanted = spec.shape[1:]
        for sample in samples:
            self.shapes.setdefault(spec.name, sample.shape)
            if any(w is not None and w != got for w, got in zip(wanted, sample.shape, strict=True)):
                raise ConfigError(
                    f"{what} has shape {list(sample.shape)} per sample; the model's input "
                    f"{spec.name!r} is {_fmt(spec.shape)}"
                )
        return samples


def _unbatched(spec: InputSpec) -> str:
    """The refusal of an input declared without a batch axis beside batched ones."""
    return (
        f"the model's input {spec.name!r} is {_fmt(spec.shape)}, with no batch axis beside inputs that have "
        "one: quantkit reads the first axis of every input as its samples, so it cannot feed it; export "
        "the model with that input as a constant, or with a batch axis"
    )


def _shapes(sample: Feed) -> tuple[tuple[int, ...], ...]:
    """One sample's shape (several inputs: each input's, in the dict's order)."""
    if isinstance(sample, np.ndarray):
        return (sample.shape,)
    return tuple(value.shape for value in sample.values())


def readable_again(samples: Iterable[Any]) -> bool:
    """Whether iterating `samples` again starts over (a list, a folder's ArrayFiles), not a one-pass
    iterator (a generator), whose samples are gone once streamed."""
    return iter(samples) is not samples


def samples_at(
    samples: Iterable[Sample], spec: InputSpec, chosen: Iterable[int], shape: tuple[int, ...]
) -> dict[int, np.ndarray]:
    """Position -> float32 sample [...] for the `chosen` positions of a stream read again (a folder of
    files, a list) whose sample has `shape`; empty where `samples` is a one-pass iterator (the positions
    cannot be read twice). The range cap's stress samples (calib.extremes), as images' are decoded again,
    and the samples a table keeps, spread over all."""
    if not readable_again(samples):
        return {}
    wanted = set(chosen)
    last, found = max(wanted, default=-1), {}
    for position, batch in enumerate(ArrayStream(samples, spec, 1)):
        if not isinstance(batch.data, np.ndarray) or position > last:
            break
        if position in wanted and batch.data.shape[1:] == shape:
            found[position] = batch.data[0]
    return found


def shapes_of(samples: Iterable[Sample], spec: InputSpec) -> list[tuple[int, ...] | None]:
    """Each sample's shape, by position, of a stream read again (a folder of files, a list); None for one
    of several inputs; [] for a one-pass iterator. Only the shapes are kept, not the samples."""
    if not readable_again(samples):
        return []
    return [
        batch.data.shape[1:] if isinstance(batch.data, np.ndarray) else None
        for batch in ArrayStream(samples, spec, 1)
    ]


def sample_side(sample_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """HxW of one image-like sample [C, H, W] or [H, W, C] (C of 1 or 3); None for other shapes."""
    if len(sample_shape) != 3:
        return None
    if sample_shape[0] in (1, 3):
        return int(sample_shape[1]), int(sample_shape[2])
    if sample_shape[2] in (1, 3, 4):  # channels last, RGBA too (graph.samples reads 4 channels so)
        return int(sample_shape[0]), int(sample_shape[1])
    if sample_shape[0] == 4:  # hq79 F3: [4, 8, 8] read as 4x8, and an opset upgrade's check ran it so
        return int(sample_shape[1]), int(sample_shape[2])
    return None  # a feature map [64, 20, 30], two channels [2, H, W]: no image side to tell


def feed_side(feed: Feed) -> tuple[int, int] | None:
    """HxW of a batch's image-like samples (with several inputs, the first image-like input's)."""
    arrays = [feed] if isinstance(feed, np.ndarray) else list(feed.values())
    sides = [sample_side(a.shape[1:]) for a in arrays]
    return next((s for s in sides if s is not None), None)


def _require_integers(array: np.ndarray, what: str, spec: InputSpec) -> None:
    """Refuse values an integer input would take rounded or clipped (hunt53 B2: a uint8 pixel input fed
    [0, 1] float arrays saw half its pixels 0 and the rest 1, calibrated on them, exit 0; 'fed as given')."""
    takes = "uint8 pixels 0-255" if spec.pixels else "integers"
    low, high = float(array.min()), float(array.max())
    if spec.pixels and (low < 0.0 or high > 255.0):
        raise ConfigError(
            f"{what} holds values from {low:g} to {high:g}; input {spec.name!r} takes {takes}: feed the "
            "pixels as the model reads them (it normalises them itself)"
        )
    if spec.dtype == "bool" and not np.isin(array, (0.0, 1.0)).all():  # hq115 F2: 0.3 and -3 fed as True
        raise ConfigError(f"{what} holds values other than 0 and 1; input {spec.name!r} is bool: feed 0 or 1")
    if spec.integer and np.dtype(spec.dtype).itemsize < 8:  # hq115 F2: 40000 was fed to int16 as 32767
        info = np.iinfo(np.dtype(spec.dtype))
        if low < info.min or high > info.max:
            raise ConfigError(
                f"{what} holds values from {low:g} to {high:g}; input {spec.name!r} is {spec.dtype}: feed "
                f"whole numbers from {info.min} to {info.max}"
            )
    fractions = array[array != np.rint(array)]
    if fractions.size:
        # review54 L2: the [0, 1] hint only where the values are that
        hint = " (pixels 0-255, not scaled to [0, 1])" if spec.pixels and high <= 1.0 else ""
        raise ConfigError(
            f"{what} holds fractions (e.g. {float(fractions[0]):g}); input {spec.name!r} takes {takes}, "
            f"which would round them: feed whole numbers{hint}"
        )


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _few(names: Sequence[str], shown: int = 4) -> str:
    """['a', 'b', 'c', 'd'] and 'and 212 more': an .npz of a calibration table names hundreds of arrays."""
    head = ", ".join(repr(n) for n in names[:shown])
    return f"[{head}{f', and {len(names) - shown} more' if len(names) > shown else ''}]"


def read_data(data: Any, num_images: int | None, seed: int) -> tuple[ImageSelection, Iterable[Sample] | None]:
    """The API's data=: (the images to read, or the arrays to stream instead): an image folder, a folder
    of array files, image files, an ndarray, or an iterable of arrays or of {input name: array} dicts."""
    if isinstance(data, (str, os.PathLike)):
        if not str(data):  # Path("") is the current folder (hq61: a CI's unset variable read it all)
            raise ConfigError("data is an empty path; give an image folder, image files or arrays")
        folder = Path(data)
        if folder.is_file() and folder.suffix.lower() in IMAGE_SUFFIXES:  # hq68 18: one image file
            return ImageSelection(folder.absolute().parent, num_images, seed, files=(folder,)), None
        if folder.is_file() and folder.suffix.lower() in ARRAY_SUFFIXES:  # hq115 F11: 'pass ... --images'
            # as the one file of a folder (hq144 F5: np.savez's unnamed 'arr_0' refused, samples unnamed)
            return ImageSelection(Path(".")), ArrayFiles([folder])
        suffixes = _suffixes(folder) if folder.is_dir() else None
        if suffixes is not None and suffixes & IMAGE_SUFFIXES and suffixes & ARRAY_SUFFIXES:
            raise ImageError(  # hq115 F1: one stray .jpg among 12 .npy calibrated on that image alone
                f"data: {folder} holds both images and arrays (.npy, .npz); give a folder of one kind"
            )
        if suffixes is not None and not suffixes & IMAGE_SUFFIXES:  # a folder of arrays, or of nothing
            if not suffixes & ARRAY_SUFFIXES:  # hq72 12: called 'no .npy or .npz files', as if arrays
                raise ImageError(  # were all it could hold
                    f"data: no images (.jpg, .png, ...) nor arrays (.npy, .npz) under {folder}; give a "
                    "folder of either"
                )
            return ImageSelection(folder), ArrayFiles.under(folder, num_images, seed)
        return ImageSelection(folder, num_images, seed), None
    if isinstance(data, (bytes, bytearray)):  # hq57 D(g): iterated as numbers, 'sample 0 has shape []'
        raise ConfigError("data is bytes; give an image folder as a str or Path, image files or arrays")
    if isinstance(data, (np.ndarray, Mapping)):
        data = [data]  # one array (a batch or a sample), or one {input name: array} (hq72 12: its keys
        # were read as image files)
    if isinstance(data, (set, frozenset)):  # hq72 9: no order of the user's, a new one in every process
        data = sorted(data, key=str)
    items = iter(data)
    first = next(items, None)
    if first is None:
        raise ConfigError("data is empty; give an image folder, image files or arrays")
    if isinstance(first, (str, os.PathLike)):
        paths = tuple(dict.fromkeys(Path(p) for p in itertools.chain([first], items)))  # each image once
        parent = Path(os.path.commonpath([p.absolute().parent for p in paths]))
        return ImageSelection(parent, num_images, seed, files=paths), None
    if num_images is not None:  # hunt38 F3: ignored, and every array used
        raise ConfigError(
            "num_images selects from an image folder, image files or a folder of array files; arrays in "
            "memory are used as given: pass the ones to use"
        )
    if readable_again(data):  # a list or another collection: read again for the stress samples
        return ImageSelection(Path(".")), data
    samples: Iterable[Sample] = itertools.chain([first], items)
    return ImageSelection(Path(".")), samples


def _suffixes(folder: Path) -> set[str]:
    """The file suffixes under `folder`, dot files and folders left out (hq115 F1: a macOS ._00.jpg made a
    folder of arrays an image folder), and a calibration table's arrays (an .npz beside the .json of its
    name: hq146 F4, a table written among the images made data= refuse the folder as mixed)."""
    return {
        p.suffix.lower()
        for p in folder.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not (p.suffix.lower() == ".npz" and _table_beside(p))
    }


def _table_beside(arrays: Path) -> bool:
    """Whether a calibration table's .json stands beside `arrays` (its .npz): a sample's own .json sidecar
    is no table (hq151 F6: a folder of such samples read 'no images nor arrays')."""
    try:
        with arrays.with_suffix(".json").open("rb") as handle:
            return f'"format": "{TABLE_FORMAT}"'.encode() in handle.read(512)
    except OSError:
        return False
