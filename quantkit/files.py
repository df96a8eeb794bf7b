"""Output files: atomic writes, a lock per output folder, and the checks before anything is written.

Every output goes to a temporary file beside its target, is flushed to disk and renamed over it, so a
reader never sees a partial file and an interrupt or a full disk leaves nothing behind. Files written as
a set (a calibration table's JSON and .npz) are written under an exclusive lock on their folder, so two
processes writing the same place leave one whole set, never a mix.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import functools
import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx
from onnx import external_data_helper

from quantkit.errors import OutputError
from quantkit.file_heads import holds_data, holds_table
from quantkit.file_inputs import guard, landing_on_input
from quantkit.file_undo import aside_name, one_file, settle, staged_name, sweep_stale, undo

try:  # POSIX: flock on the folder itself, released by the kernel if the process dies
    import fcntl
except ImportError:  # pragma: no cover - Windows: writes stay atomic, sets are not locked
    fcntl = None  # type: ignore[assignment]


def check_output(output: Path, *inputs: Path) -> None:
    """Refuse an output path that is an input (an input model's external-data files included), a
    folder, a device or pipe (written atomically, a file would be renamed over it), or in a missing
    folder."""
    sources = [*inputs, *(data for model in inputs for data in data_files(model))]
    guard(sources)  # asked again at the rename (file_inputs)
    for source in sources:
        if same_file(output, source):
            raise OutputError(f"the output {output} is an input file; choose another output path")
    if output.is_dir():
        raise OutputError(f"the output {output} is a folder; give a file path")
    if output.exists() and not output.is_file():  # renamed over, /dev/null itself would become a file
        raise OutputError(
            f"the output {output} is a device, pipe or socket, not a file; give a file path (reports take "
            "'-' for stdout)"
        )
    stream = _standard_stream(output)
    if stream is not None:  # hq85 F1: `--json /dev/stdout > out.json` wrote neither where it was meant
        raise OutputError(
            f"the output {output} is this process's standard {stream}; give a file path (reports take '-' "
            "for stdout)"
        )
    if output.is_symlink():  # hq85 F1, hq86 F2: renamed over, the link went and its file kept the old
        raise OutputError(  # content; written through, a link reached a model or a table elsewhere
            f"the output {output} is a symbolic link (to {os.readlink(output)}); give the path of the file "
            "itself, or remove the link"
        )
    if output.parent.exists() and not output.parent.is_dir():
        raise OutputError(f"the output's folder {output.parent} is a file; give a path in a folder")
    if not output.parent.is_dir():
        raise OutputError(_no_folder(output.parent))
    require_writable(output.parent)


def _standard_stream(path: Path) -> str | None:
    """'output' or 'error' where `path` (after links: /dev/stdout, /proc/self/fd/1, a file the shell
    redirected this process's stdout to) is the file behind this process's stdout or stderr."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return None
    for fd, name in ((1, "output"), (2, "error")):
        try:
            if os.path.samestat(os.fstat(fd), found):
                return name
        except OSError:  # closed
            continue
    return None


def refuse_over_artifact(role: str, output: Path) -> None:
    """A report is never written over an existing ONNX model or calibration table, though neither is an
    input of the command (hunt39 F13: compare --json x.calib.json replaced the table and orphaned its
    .npz; the next command called it no table). A table is known by its name or, whatever its name
    (hq61: table.json), by what it holds; its arrays by the table beside them."""
    name = output.name.lower()
    kind = (
        "an ONNX model"
        if name.endswith(".onnx")
        else "a calibration table"
        if name.endswith(".calib.json") or (name.endswith(".json") and holds_table(output))
        else "a calibration table's arrays"  # hq85 F2: the table beside it was then refused as not its own
        if name.endswith(".npz") and holds_table(output.with_suffix(".json"))
        else ""
    ) or holds_data(output)
    if kind and output.is_file():
        raise OutputError(
            f"{role} {output} is {kind}; a report would replace it: give the report another path"
        )


def refuse_foreign_arrays(table: Path, arrays: Path) -> None:
    """A table's .npz never replaces a file no table at `table` owns (hq105 F1: `calibrate -o sample.json`
    replaced the user's model-ready sample.npz): one there is an earlier table's only where `table` holds
    a calibration table."""
    if arrays.is_file() and not holds_table(table):
        kind = holds_data(arrays) or "a file"
        raise OutputError(
            f"the table's arrays {arrays} would replace {kind} that no calibration table at {table} owns; "
            "give the table another name"
        )


def cache_home() -> Path | None:
    """$XDG_CACHE_HOME where it is absolute (the XDG spec ignores a relative one: hq107 F7, the kept
    timings were missed from another folder), else ~/.cache; None where no home folder can be told (no
    $HOME, and a user id with no passwd entry, as in some containers) or it does not exist."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(base):
        return Path(base)
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        return None
    return home / ".cache" if home.is_dir() else None  # hq109 F13: HOME=/nonexistent was made, as root


def read_text(path: Path) -> str:
    """A text file a user wrote: UTF-8, its byte-order mark dropped (Notepad's: hunt39 hid class 0 of a
    labels file; hq61 a node name of an --exclude-from file), or UTF-16 where a BOM says so (PowerShell
    5's Out-File). Raises OSError or UnicodeDecodeError."""
    data = path.read_bytes()
    utf16 = data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    return data.decode("utf-16" if utf16 else "utf-8-sig")


def require_writable(folder: Path, fix: str = "choose a writable folder") -> None:
    """Refuse a folder nothing can be written in (its mode, a read-only mount) before any work: found at
    the write, it cost an INT8 convert 30 s of work first (a --max-drop search: minutes)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".quantkit-probe.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder} ({exc.strerror}); {fix}") from exc
    os.close(fd)
    Path(probe).unlink(missing_ok=True)


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: equal after symlinks, or hard links to the same inode."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, RuntimeError):  # a symlink loop or an unreadable path is not an input
        return False


ARRAY_SUFFIXES = frozenset({".npy", ".npz"})  # what an --inputs folder is read for (quantkit.data)


def check_outputs(
    outputs: Sequence[tuple[str, Path]],
    inputs: Sequence[tuple[str, Path]],
    folders: Sequence[tuple[str, Path]] = (),
    read_suffixes: frozenset[str] = frozenset(),
    array_folders: Sequence[tuple[str, Path]] = (),
) -> None:
    """One rule for every output of every command, checked before any work starts: no output is (after
    symlinks and hard links) one of the command's input files, a file it reads from an input folder
    (one with a suffix in `read_suffixes`; in an array folder, any .npy or .npz: a table's arrays written
    there would be read as a sample next time), or another of its outputs.

    outputs, inputs, folders, array_folders: (what the user calls it, e.g. "--json" or "the model", path).
    An input model's external-data files count as inputs."""
    inputs = [*inputs, *((f"{what}'s weights", data) for what, path in inputs for data in data_files(path))]
    guard(path for _, path in inputs)
    for index, (role, output) in enumerate(outputs):
        for what, source in inputs:
            if same_file(output, source):
                raise OutputError(_collision(role, output, what, source))
        for what, folder in folders:
            if output.suffix.lower() in read_suffixes and _inside(output, folder):
                raise OutputError(
                    f"{role} {output} would overwrite an image read from {what} {folder}; "
                    "write it outside that folder"
                )
        for what, folder in array_folders:
            if output.suffix.lower() in ARRAY_SUFFIXES and _inside(output, folder):
                raise OutputError(
                    f"{role} {output} would land among the arrays read from {what} {folder} (every .npy "
                    "and .npz there is read as a sample); write it outside that folder"
                )
        for other_role, other in outputs[:index]:
            if same_file(output, other):
                raise OutputError(
                    f"{role} {output} and {other_role} {other} are the same file; give each its own path"
                )


def data_files(path: Path) -> list[Path]:
    """The external-data files an .onnx model names (read from beside it), none for any other path or a
    file onnx cannot parse (the loaders say what is wrong with it)."""
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return []
    found = path.stat()
    return [
        path.parent / location
        for location in _locations(str(path.resolve()), found.st_mtime_ns, found.st_size)
    ]


@functools.lru_cache(maxsize=16)
def _locations(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    """The external-data locations the file at `path` names, parsed once per version of it (its mtime and
    size): the output rule and the model's hash each ask, and a 500 MB model with its weights inside took
    a full parse per question."""
    try:
        model = onnx.load(path, format="protobuf", load_external_data=False)
    except Exception:  # protobuf's DecodeError and others: not a model the output rule can read
        return ()
    tensors = [
        t for t in external_data_helper._get_all_tensors(model) if external_data_helper.uses_external_data(t)
    ]
    # the location only: a record's malformed offset is load_model's to say (hq172 F5)
    return tuple(sorted({e.value for t in tensors for e in t.external_data if e.key == "location"}))


def _collision(role: str, output: Path, what: str, source: Path) -> str:
    real = os.path.realpath(output)
    via = "" if real == os.path.abspath(output) else f" (it links to {real})"
    return f"{role} {output} would overwrite {what} {source}{via}; choose another output path"


def require_apart(
    folder: Path | None, role: str, inputs: Sequence[tuple[str, Path]], below: bool = True
) -> None:
    """Refuse a folder of outputs at or (`below`) inside an input folder (hq144 F6: shrink's cache of
    tables among the images it calibrates on, which the API's data= then refused as 'both images and
    arrays'). A list of files reads only those: its folders refuse only themselves (hq153 F2)."""
    for what, source in inputs:
        if folder is not None and ((below and _inside(folder, source)) or same_file(folder, source)):
            raise OutputError(
                f"{role} {folder} lies in {what} folder {source}: its tables would sit among the files read "
                "there; give a folder outside it"
            )


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies in `folder`, by name after links or by the identity of a folder above it (hq85
    F5: a bind mount of the --inputs folder, as Docker's -v makes, put a table's .npz among the arrays)."""
    try:
        if not folder.is_dir():
            return False
        resolved = path.resolve()
        if resolved.is_relative_to(folder.resolve()):
            return True
        found = os.stat(folder)
        return any(_same_folder(parent, found) for parent in resolved.parents)
    except (OSError, RuntimeError):
        return False


def _same_folder(path: Path, found: os.stat_result) -> bool:
    try:
        return os.path.samestat(os.stat(path), found)
    except OSError:
        return False


WRITTEN: list[Path] = []  # the files this process put in place whole (the CLI's interrupt line names them)
NOTING: list[bool] = []  # one entry per CLI run under way (entry.main; a test runs one inside another)


def note(into: list[Path], *items: Path) -> None:
    """Add to one of the lists the CLI's last line reads (WRITTEN, shrink's CLEANED and REMOVED),
    while the CLI runs: a service calling the API kept them all (hq113 F10: 202 after 200 converts)."""
    if NOTING:
        into.extend(items)


def cached(*paths: Path) -> None:
    """paths, written by write_set, are cache entries, not outputs: the interrupt line does not name them."""
    WRITTEN[:] = [path for path in WRITTEN if path not in paths]


def write_atomic(path: Path, data: bytes, cache: bool = False) -> None:
    """Write to a temporary file beside `path`, then rename over it: readers never see a partial file,
    and an interrupt leaves nothing behind. cache: a cache entry, not an output (not in WRITTEN)."""
    sweep_stale(path)
    temp = _staged(path, data)
    try:
        _refuse_landing(path)
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from exc
        raise
    if not cache:
        note(WRITTEN, path)


def write_set(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write files that belong together under one lock on their folders, all or none: each is staged
    beside its path first, then renamed into place, what it replaces (a file or a link) renamed aside
    until the last one is in and put back on failure (hq73 3: a full disk or an interrupt between two
    files left a new .npz beside the old table's .json, which every later convert refused, under
    "nothing was written"). The undo reads the files, not the steps taken: an interrupt is raised after
    the rename it lands in has happened (hq76 1, 2)."""
    for path, _ in files:
        if not path.parent.is_dir():
            raise OutputError(_no_folder(path.parent))
    folders = sorted({path.parent.resolve() for path, _ in files})
    with contextlib.ExitStack() as stack:
        for folder in folders:
            stack.enter_context(folder_lock(folder))
        for path, _ in files:
            sweep_stale(path)
        moves: list[tuple[Path, str, str | None]] = []  # (path, its staged file, where its earlier goes)
        current = files[0][0] if files else None
        try:
            for k, (path, data) in enumerate(files):
                current = path
                earlier = str(path.parent / aside_name(path, k))
                aside = earlier if os.path.lexists(path) else None  # before staging: no system call
                moves.append((path, _staged(path, data), aside))  # between the staged file and its record
            for path, temp, aside in moves:
                current = path
                _refuse_landing(path)
                if aside is not None:
                    _keep_aside(path, aside)
                os.replace(temp, path)
        except BaseException as exc:
            undo(moves)
            if isinstance(exc, OSError):
                raise _write_failed(current, exc, _not_put_back(moves)) from exc
            raise
        note(WRITTEN, *(path for path, _ in files))  # in place: an interrupt in what follows leaves them
        settle(put for _, _, put in moves if put is not None)


def _refuse_landing(path: Path) -> None:
    reason = landing_on_input(path)
    if reason is not None:
        raise OutputError(reason)


def _no_folder(folder: Path) -> str:
    """Why `folder` cannot take an output (hq100 F14: one replaced by a file mid-run 'did not exist')."""
    if os.path.lexists(folder):
        return f"output folder {folder} is not a folder (a file, or a link to none); give a folder"
    return f"output folder {folder} does not exist; create it first"


def _keep_aside(path: Path, aside: str) -> None:
    """The earlier file at `path` kept at `aside` too, for the undo: a second hard link, so that `path`
    holds a whole file at every instant (hq100 F4: renamed aside, a SIGKILL before the new one's rename
    left no file at `path`); renamed where the file system has no hard links."""
    try:
        os.link(path, aside, follow_symlinks=False)
    except OSError:
        os.replace(path, aside)


def _staged(path: Path, data: bytes) -> str:
    """`data` in a new temporary file beside `path`, flushed to disk; its name."""
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(_no_folder(parent))
    try:
        fd, temp = _new_file(path)
    except OSError as exc:
        raise OutputError(f"cannot write in {parent} ({exc.strerror}); choose a writable folder") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from exc
        raise
    return temp


def _new_file(path: Path) -> tuple[int, str]:
    """A new file beside `path` (file_undo.staged_name: whose it is, for sweep_stale) opened for writing,
    made with the mode a plain open() gives (0666 less the process's umask at this moment: hq103 F2, a
    umask read once at import gave a service's private 077 outputs 0644, and reading it set the whole
    process's umask to 0 for a moment)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = str(path.parent / staged_name(path, secrets.token_hex(4)))
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))


def _write_failed(path: Path | None, exc: OSError, left: Sequence[tuple[Path, str]] = ()) -> OutputError:
    """The one line for a write that failed (a full disk, a file-size limit) and left nothing; or, where
    the undo could not put an earlier file back (`left`: its path, where it is kept), says so (hq100 F6:
    a disk failing every rename left a new .npz beside the old .json under "nothing was written")."""
    # hq100 F11: 'File too large' named no cause, where errors.md promised the ulimit hint
    limit = ": larger than this shell lets a process write (ulimit -f)" if exc.errno == errno.EFBIG else ""
    if left:
        kept = ", ".join(f"{earlier} is kept as {aside}" for earlier, aside in left)
        return OutputError(
            f"writing {path} failed ({exc.strerror}{limit}), and the earlier files could not all be put "
            f"back: {kept}; check the disk, then rename them back"
        )
    return OutputError(f"writing {path} failed ({exc.strerror}{limit}); nothing was written")


def _not_put_back(moves: Sequence[tuple[Path, str, str | None]]) -> list[tuple[Path, str]]:
    """(path, its aside) for each earlier file the undo left aside: a second link of a file that is no
    longer at its path, or one renamed aside (the undo removes an aside that is still at its path)."""
    return [
        (path, aside)
        for path, _, aside in moves
        if aside is not None and os.path.lexists(aside) and not one_file(aside, path)
    ]


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` between quantkit processes (no lock file is left behind)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise OutputError(f"cannot open {folder} ({exc.strerror}); choose a readable folder") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
