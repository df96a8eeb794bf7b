"""shrink's --output-dir: the names it writes, errors told of that place (never of the staging folder),
and an earlier run's verdict removed where a run ends in exit 2 (known by content: nothing else there is
touched)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from quantkit.errors import ModelError, OutputError, QuantkitError
from quantkit.files import WRITTEN, folder_lock, note, same_file
from quantkit.graph import model_io
from quantkit.scratch import contents

REPORTS = ("report.json", "report.md", "junit.xml", "report.html")


def outputs(model_path: Path) -> tuple[str, ...]:
    """The names shrink may write in --output-dir."""
    return (f"{model_path.stem}.int8.onnx", *REPORTS)


Marks = dict[str, tuple[int, int, int]]  # a name in --output-dir -> its file's (inode, mtime ns, size)
CLEANED: list[Path] = []  # the folders shrink() cleaned up itself: entry's later cleanup leaves them be
REMOVED: list[Path] = []  # an earlier run's verdict removed by this process's cleanups, for the error line
KEPT: list[str] = []  # why an earlier verdict could not be removed, where no error message carries it


def marks(output_dir: Path, names: Sequence[str]) -> Marks:
    """What each of `names` in output_dir is now (lstat), those that exist."""
    found = {}
    for name in names:
        with contextlib.suppress(OSError):
            st = os.lstat(output_dir / name)
            found[name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def verdict(output_dir: Path) -> tuple[Model | None, Marks]:
    """The model an earlier shrink's report.json in output_dir names (earlier_model), and what it and the
    reports there are now (marks): what a run that fails may remove as an earlier verdict."""
    earlier = earlier_model(output_dir)
    return earlier, marks(output_dir, (*REPORTS, *([earlier[0].name] if earlier else [])))


def drop_verdict(
    output_dir: Path,
    earlier: Model | None,
    begun: Marks,
    keep: Sequence[Path] = (),
    placed: Marks | None = None,
) -> list[Path]:
    """Remove, under the folder's lock, an earlier run's verdict and a failed run's own: of the reports and
    `earlier`'s model, only a file that is still what `begun` recorded (verdict(), when the run began), and
    what the run put in place (`placed`, its model too). hq100 F1: a run cancelled beside another that had
    just published into the same folder removed that run's fresh model and reports. The reports are known
    by their content and the earlier model by its report's sha256: nothing else there is touched (hq71 F2:
    a mistyped gate, flag or config key left the earlier release's PASS junit.xml published as this run's).
    keep: this run's input and every path its command line names, never removed (hq86 F1, hq87 F1:
    `shrink OUT/m.int8.onnx --output-dir OUT` refused deleted its own input). Returns the earlier verdict's
    files it removed (also kept in REMOVED: hq100 F7, the line said only "nothing was written")."""
    placed = placed or {}
    if not output_dir.is_dir():  # none, or it went away while shrink ran (unstaged says so)
        return []
    with folder_lock(output_dir):
        now = marks(output_dir, (*begun, *placed))
        own = {name for name, mark in now.items() if mark == placed.get(name)}
        there = {name for name, mark in now.items() if mark == begun.get(name)} - own
        kept = [output_dir / name for name in now if any(same_file(output_dir / name, k) for k in keep)]
        for name in own - set(REPORTS):  # its own model, put in place
            if output_dir / name not in kept:
                with contextlib.suppress(OSError):
                    (output_dir / name).unlink()
        if earlier is not None and earlier[0].name in there and earlier[0] not in kept:
            _drop_model(earlier)
        for name in REPORTS:  # a report this run reads (--exclude-from, --labels) stays: hq146 F0
            if name in own | there and output_dir / name not in kept:
                drop_report(output_dir / name)
        removed = [output_dir / name for name in sorted(there) if not os.path.lexists(output_dir / name)]
        stuck = [  # a report this run reads stays by design (hq151 F8: called "not removed")
            n
            for n in REPORTS
            if n in there and output_dir / n not in kept and _shrink_report(output_dir / n, 4096) is not None
        ]
    note(REMOVED, *removed)
    if stuck:  # hq109 F5: a read-only folder kept the last release's PASS junit.xml, and nothing said so
        KEPT.append(
            f"; the earlier run's verdict in {output_dir} could not be removed ({', '.join(stuck)}): it is "
            "not this run's"
        )
    return removed


def drop_earlier_verdict(output_dir: Path, keep: Sequence[Path] = ()) -> list[Path]:
    """drop_verdict for a run that ends in exit 2 or an interrupt before shrink() began: what is there."""
    return drop_verdict(output_dir, *verdict(output_dir), keep)


def removed_line(removed: Sequence[Path]) -> str:
    """'; the earlier run's verdict in OUT was removed (a, b): ...' where a failed run removed one; ''."""
    if not removed:
        return ""
    names = ", ".join(path.name for path in removed)
    return (
        f"; the earlier run's verdict in {removed[0].parent} was removed ({names}): a failed shrink "
        "leaves none to be read as its own"
    )


def not_removed(output_dir: Path, exc: OSError) -> str:
    """'; the earlier run's verdict in OUT could not be removed (why): ...' where a failed run's cleanup
    could not remove the reports there (hq109 F5: a read-only --output-dir kept the last release's PASS
    junit.xml, and the line said nothing of it); '' where there are none."""
    if not marks(output_dir, REPORTS):
        return ""
    return (
        f"; the earlier run's verdict in {output_dir} could not be removed ({exc.strerror or exc}): its "
        "reports are not this run's"
    )


Model = tuple[Path, str]  # an INT8 model an earlier shrink wrote, and the sha256 its report.json gives


def earlier_model(output_dir: Path) -> Model | None:
    """The INT8 model the shrink report.json in output_dir names (in output_dir, whatever the model it
    was made from: hq85 F4, another model's run left its model beside no reports), with the sha256 that
    report records (model_io.file_sha256; hq82 2: any model quantkit's convert wrote there went too)."""
    record = _shrink_report(output_dir / "report.json", 1 << 24)
    try:
        found = json.loads(record or b"")
        named, wanted = found["output"], found["settings"]["output_sha256"]
    except (ValueError, KeyError, TypeError):  # no earlier shrink report naming a model
        return None
    if not isinstance(named, str) or not isinstance(wanted, str):
        return None
    return output_dir / Path(named).name, wanted


# How each report shrink writes begins (report.md) or names itself in its first 4 KB: hq82 2, a user's own
# notes that merely said "made by `quantkit shrink` in CI" were removed by a refused run.
MARKERS = {
    "report.json": b'"schema": "quantkit-shrink/',
    "report.md": b"### quantkit shrink: ",
    "junit.xml": b'<testsuite name="quantkit shrink"',
    "report.html": b"<title>quantkit shrink: ",
}


def drop_report(path: Path) -> bool:
    """`path` removed where it is a shrink report (MARKERS): never a file of the user's, nor a link (hq87
    F5: refused as an output, a link to another run's report was then removed by the refused run).
    Whether it was."""
    if not path.is_symlink() and _shrink_report(path, 4096) is not None:
        with contextlib.suppress(OSError):
            path.unlink()
            return True
    return False


def _shrink_report(path: Path, size: int) -> bytes | None:
    """The first `size` bytes of `path` where it is a report shrink wrote (its MARKERS), else None."""
    marker = MARKERS.get(path.name)
    try:
        with path.open("rb") as handle:
            head = handle.read(size)
    except OSError:
        return None
    if marker is None or not (head.startswith(marker) if path.suffix == ".md" else marker in head[:4096]):
        return None
    return head


def _drop_model(mark: Model) -> None:
    """The model `mark` names removed where it still holds the bytes its report recorded (hunt38 F11: a
    shrink refused for a mistyped --labels removed the earlier reports and left their model behind)."""
    path, wanted = mark
    with contextlib.suppress(OSError, ModelError):
        if path.is_file() and model_io.file_sha256(path) == wanted:
            path.unlink()


def unstaged(exc: QuantkitError, stage: Path, output_dir: Path) -> QuantkitError:
    """The error a run raised while its files were in the hidden staging folder `stage`, told of the
    output's place (hq85 F9: "writing out/.quantkit-shrink-x1y2/m.int8.onnx failed"), or, where
    output_dir itself was removed meanwhile, said so (it was "onnxruntime cannot load the model")."""
    if not stage.is_dir():  # hq91 F7: one removed and made again was said not to exist
        return OutputError(f"the output folder {output_dir} went away while shrink ran; nothing written")
    exc.args = tuple(str(a).replace(f"{os.sep}{stage.name}", "") for a in exc.args)
    return exc


# the order a set goes into place: the model's external data, the model, the reports, report.json (which
# names the model's sha256), junit.xml (the verdict CI reads) last (hq105 F3: the model went in before
# its .data, which a kill between the two left beside the earlier run's weights)
PUBLISH_ORDER = {"report.md": 2, "report.html": 2, "report.json": 3, "junit.xml": 4}


def _publish_rank(path: Path) -> tuple[int, str]:
    return PUBLISH_ORDER.get(path.name, 1 if path.suffix == ".onnx" else 0), path.name


def publish(
    stage: Path, output_dir: Path, placed: Marks, dropped: list[Path], keep: Sequence[Path] = ()
) -> None:
    """Move the finished set from the staging folder into place (renames on one file system). An earlier
    run's reports go first, then the model, the reports and the verdict last, so that a run killed
    between two renames (SIGKILL, no cleanup) leaves no verdict beside a model it is not about (hq100 F3:
    the new reports beside the earlier model, or the earlier junit.xml's PASS beside the new model); a
    file of the user's of a report's name is left (hq73 1: a user's own report.html went). `dropped` gets
    the earlier reports removed, for the line of a run that fails after (hq105 F6: it named none). keep:
    the run's inputs, never removed (hq149 F2: a shrink of the earlier run's model removed it)."""
    with folder_lock(output_dir):  # hq85 F3: two runs publishing at once mixed a PASS and a FAIL set
        earlier = earlier_model(output_dir)  # read before its report goes
        dropped.extend(output_dir / name for name in REPORTS if drop_report(output_dir / name))
        mine = earlier is not None and any(same_file(earlier[0], path) for path in keep)
        if earlier is not None and not mine and not (stage / earlier[0].name).exists():  # another's, named by
            _drop_model(earlier)  # the reports this run replaces (hq145 F1: classifier_v1.int8.onnx stayed
            if not os.path.lexists(earlier[0]):  # beside classifier_v2's reports, and was uploaded with them)
                dropped.append(earlier[0])
        for path in sorted(contents(stage), key=_publish_rank):
            placed.update(marks(stage, (path.name,)))  # a rename keeps inode and mtime: an interrupt
            if os.path.lexists(output_dir / path.name):  # the earlier model, replaced
                dropped.append(output_dir / path.name)
            os.replace(path, output_dir / path.name)  # right after it leaves the file known as this run's
            note(WRITTEN, output_dir / path.name)


def drop_damaged(table: Path, arrays: Path) -> None:
    """Remove what stands at a cache entry's table and arrays before it is calibrated again: a .json that
    is no table (cut short, emptied, junk) beside its .npz made calibrate refuse, as over a user's file,
    to replace arrays 'no table owns', on every later run (hq109 F1: CI blocked until someone cleared the
    cache by hand). The names are the cache's own (a key's hash); a folder there is not removed."""
    for path in (table, arrays):  # both looked at before either goes (hq116 F7: the .json went first)
        if path.is_dir() and not path.is_symlink():
            raise OutputError(
                f"the cache entry {path} is a folder, not a file; remove it, or give another --cache-dir"
            )
    for path in (table, arrays):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
