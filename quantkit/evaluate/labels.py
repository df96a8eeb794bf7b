"""What a labels file says: the class ids in output order, an image's class, and whether the file fits the
model's declared outputs (compare, shrink and convert --max-drop read labels the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from quantkit.errors import ConfigError
from quantkit.evaluate.class_scores import holds_labels
from quantkit.files import read_text


def read_classes(path: Path) -> list[str]:
    """Class ids in output-index order: the first word of each non-empty line (`n01440764 tench, ...`), or
    each whole line where first words repeat (class names: `great white shark`, `great grey owl`)."""
    try:
        lines = read_text(path).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read labels file {path} ({exc}); pass a text file, one class per line"
        ) from exc
    named = [line.strip() for line in lines if line.strip()]
    if not named:
        raise ConfigError(f"labels file {path} is empty; list one class per line, in output order")
    ids = [line.split()[0].rstrip(",") for line in named]
    if len(set(ids)) == len(ids):
        return ids  # `n01440764 tench, Tinca tinca`: the id
    if len(set(named)) == len(named):
        return named  # hunt39 F7: class names ('great white shark'), whose first words repeat
    first: dict[str, int] = {}
    for number, line in enumerate(named, 1):
        if line in first:
            raise ConfigError(
                f"labels file {path} gives class {line!r} twice (lines {first[line]} and {number}); give "
                "one class per line, in output order"
            )
        first[line] = number
    return named


def label_of(path: Path, folder: Path, lookup: dict[str, int]) -> int:
    """The class index of an image: its parent folder (DIR/<class>/img) or its name prefix
    (<class>_anything.jpg, the longest prefix at an underscore that is a class: hunt39 F6, tiger_cat_1.jpg
    was scored as 'tiger', and 8 of 11 such photos against another class); -1 when none names a class."""
    relative = path.absolute().relative_to(folder.absolute())  # hq68 1: the API's relative file lists
    if len(relative.parts) > 1 and relative.parts[-2] in lookup:
        return lookup[relative.parts[-2]]
    parts = path.stem.split("_")
    for k in range(len(parts), 0, -1):
        if (candidate := "_".join(parts[:k])) in lookup:
            return lookup[candidate]
    return -1


def _integer(elem_type: int) -> bool:
    """Whether an onnx element type holds labels (an ArgMax's: class_scores.holds_labels), not numbers."""
    return bool(elem_type) and holds_labels(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))


def require_labels_fit(outputs: Sequence[onnx.ValueInfoProto], labels: Path) -> None:
    """Refuse, from the graph's declared outputs, a labels file whose class count none declares along
    axis 1 (where every output declares it): hunt32's MNIST labels for MobileNetV2 failed shrink after
    13.6 s, hunt35's 1000 ImageNet classes for a 4-way orientation model made convert --max-drop's budget
    read 0.00 points lost (no label could ever match) and pass."""
    count = len(read_classes(labels))
    types = [o.type.tensor_type for o in outputs]
    widths = [
        t.shape.dim[1].dim_value
        if t.HasField("shape") and len(t.shape.dim) > 1 and not _integer(t.elem_type)
        else 0
        for t in types
    ]  # an integer output's labels (an ArgMax's [N, 1]) index the classes: no count to check
    if 0 not in widths and count not in widths:
        raise ConfigError(
            f"the labels file lists {count} classes but no output has that many (declared: "
            f"{', '.join(str(w) for w in widths)} along axis 1); give the labels of this model"
        )
