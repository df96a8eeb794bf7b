"""What a labels file says: the class ids in output order, an image's class, and whether the file fits the
model's declared outputs (compare, shrink and convert --max-drop read labels the same way)."""

from __future__ import annotations

import re
import stat
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from quantkit.errors import ConfigError
from quantkit.files import read_text


def read_classes(path: Path) -> list[str]:
    """The labels file's classes in output-index order: each non-empty line, stripped (`n01440764 tench,
    Tinca tinca`, `great white shark`, `Ankle boot`); class_lookup says which names match an image."""
    kind = _special(path)
    if kind:  # hq73 7: <(...) or /dev/stdin, read once, then called 'empty'; hq77 7: /dev/zero, read on
        raise ConfigError(  # until memory ran out
            f"labels file {path} is not a regular file ({kind}); save them to a file"
        )
    try:
        lines = read_text(path).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read labels file {path} ({exc}); pass a text file (UTF-8), one class per line"
        ) from exc
    named = [line.strip() for line in lines if line.strip()]
    if not named:
        raise ConfigError(f"labels file {path} is empty; list one class per line, in output order")
    if named[0].startswith(("{", "[")):  # hq68 19: imagenet_class_index.json read as '1 classes'
        raise ConfigError(
            f"labels file {path} is JSON; give a text file, one class per line, in output order"
        )
    return _by_id(named)  # a line given twice (ImageNet's two 'crane's) names neither: class_lookup


def _by_id(lines: list[str]) -> list[str]:
    """The lines in the order of their ids where every line is `<id> <name>` and the ids are 0..N-1 or
    1..N in another order: the id is the class. hq121 F1: `1 dog` listed before `0 cat` made dog class 0,
    the images in 1/ were scored against cat, a top-1 change of -4.17 points read +4.17 and shrink's
    --max-drop passed. Ids that are no such count (years, part numbers) leave the lines in file order."""
    found = [re.fullmatch(ID_LINE, line) for line in lines]
    ids = [int(m.group(1)) for m in found if m]
    if len(ids) != len(lines) or sorted(ids) not in (list(range(len(ids))), list(range(1, len(ids) + 1))):
        return lines
    return [line for _, line in sorted(zip(ids, lines, strict=True))]


ID_LINE = r"(\d+)\s*[:,;=\t ]\s*(\S.*)"  # `0 cat`, `1: dog`, `2,bird`


def _special(path: Path) -> str:
    """What `path` is where it is neither a file nor a folder ('' otherwise): a pipe (read once; quantkit
    reads the labels more than once) or a device."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return ""
    if stat.S_ISFIFO(mode):
        return "a pipe can be read once; quantkit reads the labels more than once"
    return "" if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else "a device"


def class_lookup(classes: Sequence[str]) -> dict[str, int]:
    """Class index by each name an image's folder or file name may give (spelled as `spelling` makes it):
    a line's whole text (`Ankle boot`, `great white shark`), then the name after its index where every
    line has one (`0 cat`: _indexed), then its first word (the id of `n01440764
    tench, Tinca tinca`), then each of those case-folded (`ankle_boot/`); a name two classes share names
    neither (ImageNet's two 'crane's; EMNIST's 'A' and 'a' case-folded, hq70 2). hq68 6: first words were
    taken whenever they were unique, so Fashion-MNIST's 'Ankle boot' was 'Ankle' and its photos in
    `Ankle boot/` matched nothing; `bald_eagle/` never matched 'bald eagle'."""
    lines = [spelling(line) for line in classes]
    indexed = _indexed(classes)  # an index file's first words are its indices (hq94 F2: `0: 1` read '0:')
    firsts = (
        [spelling(w) for w in indexed[0]]
        if indexed
        else [spelling(line.split()[0].rstrip(",")) for line in classes]
    )
    named = [spelling(n) for n in indexed[1]] if indexed else []
    # a name that is another line's index names neither (hq91 F2: `0 1` lines put folders 0/ and 1/ both in
    # class 0; hq92 F1: `1 0` lines, 1/ in class 0 and 0/ in none)
    at = {key: index for index, key in enumerate(firsts)}
    clash = {key for index, key in enumerate(named) if at.get(key, index) != index}
    exact = [[NONE if k in clash else k for k in keys] for keys in (lines, named, firsts) if keys]
    lookup: dict[str, int] = {}
    for names in (*exact, *([n.casefold() for n in names] for names in exact)):
        found: dict[str, int] = {}
        shared: set[str] = set()
        for index, key in enumerate(names):
            shared |= {key} if found.get(key, index) != index else set()
            found[key] = index
        lookup |= {k: i for k, i in found.items() if k not in lookup and k not in shared}
    return lookup


NONE = "\0"  # a key no folder or file name spells


def _indexed(classes: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """(each line's index, its name after it), where every line is `<index> <name>` and the indices count
    the lines from 0 or 1 (`0 cat`, `1: dog`, `2,bird`); else None. hq89 F1: such a file's first words
    were the numbers, so `bird/0.png` matched class 0 by its file name, its folder matching nothing."""
    found = [re.fullmatch(ID_LINE, line) for line in classes]
    if not all(found):
        return None
    numbers = [int(m.group(1)) for m in found if m]
    if numbers not in (list(range(len(numbers))), list(range(1, len(numbers) + 1))):
        return None
    return [m.group(1) for m in found if m], [m.group(2).strip() for m in found if m]


def spelling(name: str) -> str:
    """A class name as matched: Unicode NFC (macOS writes folder names decomposed, hq68 17), spaces and
    slashes as underscores (`bald eagle` is `bald_eagle/`, `T-shirt/top` is `T-shirt_top`)."""
    return unicodedata.normalize("NFC", name).replace(" ", "_").replace("/", "_")


def label_of(path: Path, folder: Path, lookup: dict[str, int]) -> int:
    """The class index of an image: the folder it is in (`folder` itself too: a list of one class's
    images, hq70 7), else its name prefix (<class>_anything.jpg, the longest prefix at an underscore that
    is a class: hunt39 F6, tiger_cat_1.jpg was scored as 'tiger', and 8 of 11 such photos against another
    class); each name as it is, else case-folded; -1 when none names a class. Not a folder further up
    (hq70 12: 2024/3/15/IMG.jpg read as class 3 of the digits). lookup: class_lookup's."""
    candidates = [spelling(path.absolute().parent.name)]
    parts = path.stem.split("_")
    candidates += [spelling("_".join(parts[:k])) for k in range(len(parts), 0, -1)]
    for key in candidates:
        for form in (key, key.casefold()):
            if form in lookup:
                return lookup[form]
    return -1


def require_labels_fit(classes: Sequence[int], labels: Path) -> None:
    """Refuse a labels file whose class count no output declares (classes: graph.output_kinds.class_counts,
    per output; where one is unknown, 0, nothing is refused): hunt32's MNIST labels for MobileNetV2 failed
    shrink after 13.6 s, hunt35's 1000 ImageNet classes for a 4-way orientation model made convert
    --max-drop's budget read 0.00 points lost (no label could ever match) and pass."""
    count = len(read_classes(labels))
    if 0 not in classes and count not in classes:
        raise ConfigError(
            f"the labels file lists {count} classes but no output has that many (declared: "
            f"{', '.join(str(w) for w in classes)}, as top-1 reads [N, C], [N, C, 1, 1] or [N, 1, 1, C] "
            "scores); give the labels of this model (a detector's rows are no classes: --detector)"
        )


def require_labelled(
    labels: Path, classes: Sequence[int], paths: Sequence[Path], folder: Path, what: str
) -> None:
    """Refuse, from the file list and the graph before any model runs, a labels file that fits no
    declared output (require_labels_fit) or whose classes name none of the images (`what`: 'image',
    'validation image'). hq68 5: shrink, compare and convert --max-drop found either only after
    calibrating, converting or running the models (minutes on a real validation folder)."""
    require_labels_fit(classes, labels)
    lookup = class_lookup(read_classes(labels))
    if paths and all(label_of(path, folder, lookup) < 0 for path in paths):
        raise ConfigError(
            f"no {what}'s folder or name prefix matches a class in the labels file; name images "
            "<class>_*.jpg or put them in <class>/ folders"
        )
