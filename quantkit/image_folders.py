"""Which image files a folder or a list gives: listed recursively (not into hidden folders, not through
links out of it), each file once, a seeded subset, and the warnings for what was left out."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantkit.config import ImageSelection
from quantkit.errors import ImageError
from quantkit.file_heads import holds_data

# TIFF for scans and microscopy (16-bit and float pages read as grey); a GIF's or multi-page file's
# first frame; .jfif / .jpe (JPEGs as Windows and browsers save them), the netpbm family, AVIF and JPEG
# 2000 (Pillow reads them; a Pillow without them skips such a file by name). Left out, they were skipped
# without a word in a folder that held other images (hunt39 F3, hq68 4).
SUFFIX_TEXT = ".jpg .jpeg .jpe .jfif .png .bmp .webp .tif .tiff .gif .ppm .pgm .pnm .pbm .avif .jp2 .j2k"
IMAGE_SUFFIXES = frozenset(SUFFIX_TEXT.split())
# photo formats no Pillow here decodes (phones' HEIC, cameras' raw files, layered or vector files), and
# image formats Pillow reads that quantkit does not (icons, old bitmaps, textures): left out of a folder
# with a warning that names them (hq68 4: 20 .HEIC beside 12 .jpg, 'calibrated on 12'; hq89 F4: .ico,
# .tga and .pcx went without a word)
UNREAD_TEXT = (
    ".heic .heif .jxl .dng .cr2 .cr3 .nef .arw .raf .orf .rw2 .srw .pef .psd .svg .exr .hdr "
    ".ico .cur .icns .tga .pcx .dcx .dib .dds .sgi .qoi .mpo .apng .pfm .fits .fit .xbm .xpm .blp .ras"
)
UNREAD_SUFFIXES = frozenset(UNREAD_TEXT.split())
# a NAS's thumbnails and recycle bins: never photos of their own (hq68 11: Synology's @eaDir/<photo>/
# SYNOFILE_THUMB_*.jpg doubled a calibration set)
SYSTEM_FOLDERS = frozenset({"__MACOSX", "@eaDir", "#recycle", "$RECYCLE.BIN", "System Volume Information"})


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted by their path relative to it."""
    if not folder.exists():
        raise ImageError(f"image folder {folder} does not exist; pass an existing folder to --images")
    if not folder.is_dir():
        raise ImageError(f"{folder} is not a folder; pass a folder of images to --images")
    root = folder.resolve()
    found = [
        (relative, folder / relative, entry) for relative, entry in _entries(folder) if _taken(entry, root)
    ]
    if not found:
        others = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        hidden = [p for p in others if any(_hidden(part) for part in p.split("/"))]
        if hidden and len(hidden) == len(others):  # hunt39 F10: called 'links to files outside it'
            raise ImageError(
                f"the only files under {folder} are hidden, macOS metadata or a NAS's thumbnails and recycle "
                f"bin (e.g. {hidden[0]}), which are not read; put the images themselves in the folder"
            )
        outside = [p for p in others if (folder / p).suffix.lower() in IMAGE_SUFFIXES and p not in hidden]
        gone = left_out(folder)
        if gone.folders or gone.broken or gone.unread:  # hq68 3, 4, 13: called 'empty' or 'outside'
            raise ImageError(
                f"no images ({SUFFIX_TEXT}) found under {folder}: {gone.text().replace(' left out', '')}; "
                "point --images at a folder of images"
            )
        if outside:
            raise ImageError(
                f"the {len(outside)} image(s) under {folder} (e.g. {outside[0]}) are links to files outside "
                "it, which are not followed; copy the images in or pass the folder the links point to"
            )
        held = f"it holds {len(others)} other file(s), e.g. {others[0]}" if others else "it is empty"
        arrays = others and all(p.lower().endswith((".npy", ".npz")) for p in others if p not in hidden)
        # hunt56 B2: --validation named a folder of model-ready arrays, which only --inputs reads
        read = " (model-ready arrays are read by --inputs, where a command takes it)" if arrays else ""
        raise ImageError(
            f"no images ({SUFFIX_TEXT}) found under {folder} ({held}); point --images at a folder of "
            f"images{read}"
        )
    return _once(sorted(found, key=lambda item: item[0]), root)


def _once(found: Iterable[tuple[str, Path, os.DirEntry[str]]], root: Path) -> list[Path]:
    """The paths of `found` (relative, path, entry) with a link to a file listed before it left out
    (hunt39 F4: t_link.jpg -> a_plain.jpg made one photo count twice). Only links are resolved (a plain
    file under the folder is root / relative: resolving each of mnist-test's 5000 took 0.2 s); one that
    cannot be resolved is kept."""
    kept, seen = [], set()
    for relative, path, entry in found:
        try:
            target = Path(entry.path).resolve() if entry.is_symlink() else root / relative
        except (OSError, RuntimeError):
            target = path
        if target not in seen:
            seen.add(target)
            kept.append(path)
    return kept


def _hidden(name: str) -> bool:
    """A dot file or folder (macOS's ._* resource forks, .git) or a system folder (SYSTEM_FOLDERS): never
    read for images."""
    return name.startswith(".") or name in SYSTEM_FOLDERS


def _inside(entry: os.DirEntry[str], root: Path) -> bool:
    """Whether a link points inside root."""
    try:
        return Path(entry.path).resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def _taken(entry: os.DirEntry[str], root: Path) -> bool:
    """Whether a listed image file is read: a file, not a link to outside root. One that cannot even be
    looked at (a link loop, no permission) is taken: the loader skips it and names why, as it does a
    broken image, where a link loop used to stop calibrate with "check that the disk is writable"."""
    try:
        return entry.is_file() and (not entry.is_symlink() or Path(entry.path).resolve().is_relative_to(root))
    except (OSError, RuntimeError):  # RuntimeError: pathlib's symlink loop before Python 3.13
        return True


def _entries(folder: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path relative to folder, entry) of every file with an image suffix under `folder` (_walk)."""
    return ((path, e) for path, e in _walk(folder) if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)


def _walk(folder: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path relative to folder, entry) of everything under `folder` but folders, recursively, not through
    links to folders (listed as entries), nor into dot files and folders (macOS's ._* resource forks,
    .git) and system folders (_hidden). os.scandir, not Path.rglob + resolve: listing the 5000 mnist-test
    files took 0.48 s of calibrate's 0.8 s that way; a link is resolved only where it is one (a plain file
    under folder is inside it). Unreadable subfolders are skipped, as rglob skips them."""
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            with os.scandir(folder / relative if relative else folder) as listing:
                entries = list(listing)
        except OSError:
            if not relative:
                raise
            continue
        for entry in entries:
            if _hidden(entry.name):
                continue
            path = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            else:
                yield path, entry


def select_images(selection: ImageSelection) -> list[Path]:
    """All images (sorted), or a reproducible seeded subset of `num_images`; all of them (never repeats)
    when more are asked: see `shortfall`."""
    found = find_images(selection.folder) if selection.files is None else _listed(selection.files)
    return seeded_subset(found, selection.num_images, selection.seed)


def images_of(selection: ImageSelection, flag: str) -> list[Path]:
    """select_images, its errors naming `flag` (--eval-images, --validation) for --images: a command checks
    a folder it reads late before its costly part (hunt32: an empty --eval-images failed after 12 s of
    calibrating and converting, and named --images)."""
    try:
        return select_images(selection)
    except ImageError as exc:
        raise ImageError(str(exc).replace("--images", flag)) from exc


def seeded_subset(found: list[Path], wanted: int | None, seed: int) -> list[Path]:
    """A reproducible seeded subset of `wanted` of the files (in their order), or all of them when
    `wanted` is None or at least their number: images, and --inputs' array files alike."""
    if wanted is None or wanted >= len(found):
        return found
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(found), size=wanted, replace=False))
    return [found[i] for i in keep]


def _listed(files: Sequence[Path]) -> list[Path]:
    """A given list of image files, checked: each exists and has an image suffix."""
    if not files:
        raise ImageError("the list of images is empty; give at least one image file")
    for path in files:
        if path.is_dir():  # hq68 18: was said not to exist
            raise ImageError(f"{path} in the list of images is a folder; list image files, or give it alone")
        if not path.is_file():  # hq89 F11: a loop of links was said not to exist
            what = (
                "is a link to nothing (a missing file, or a loop of links)"
                if path.is_symlink()
                else "does not exist"
            )
            raise ImageError(f"image {path} {what}; check the list of images")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ImageError(f"{path} is not an image ({SUFFIX_TEXT}); check the list")
    return list(files)


def shortfall(selection: ImageSelection, selected: Sequence[Path]) -> str | None:
    """The warning when the selection asks for more images than its folder holds, or when the folder
    holds files it leaves out that a user may count as images (left_out), else None."""
    wanted = selection.num_images
    left = left_out(selection.folder).text() if selection.files is None else ""
    if wanted is None or wanted <= len(selected):
        return f"{selection.folder}: {left}" if left else None
    return (
        f"{selection.option} {wanted} asks for more images than {selection.folder} holds; using all "
        f"{len(selected)}, each once{'; ' + left if left else ''}"
    )


@dataclass(frozen=True)
class LeftOut:
    """What find_images leaves out of a folder that a user may count as images: links to image files
    outside it (hunt30: 7 such links and 1 real image read as 1 image, without a word), links to folders
    (not followed; hq68 3: 12 of 13 photos dropped, exit 0), broken links (hq68 13: called 'outside') and
    files in formats no Pillow here reads (UNREAD_SUFFIXES, their suffixes sorted), and image files whose
    name has no image suffix (hq169: 8 JPEGs named img1..img8 beside 5 .JPG, calibrated on the 5 without a
    word), with the first one's name."""

    outside: int = 0
    folders: int = 0
    broken: int = 0
    unread: int = 0
    formats: tuple[str, ...] = ()
    misnamed: int = 0
    misnamed_example: str = ""

    def text(self) -> str:
        """One clause per kind found, '; '-joined; '' where nothing was left out."""
        kinds = ", ".join(self.formats)
        return "; ".join(
            clause
            for count, clause in (
                (
                    self.outside,
                    f"{self.outside} link(s) to image files outside it are not followed (copy "
                    "those images in)",
                ),
                (
                    self.folders,
                    f"{self.folders} link(s) to folders are not followed (copy those folders in, "
                    "or pass a folder that holds them)",
                ),
                (self.broken, f"{self.broken} broken link(s) left out"),
                (
                    self.unread,
                    f"{self.unread} file(s) in formats quantkit does not read ({kinds}) left out "
                    "(convert them to JPEG or PNG)",
                ),
                (
                    self.misnamed,
                    f"{self.misnamed} image file(s) without an image suffix left out (e.g. "
                    f"{self.misnamed_example}): name them with their format's (.jpg, .png)",
                ),
            )
            if count
        )


def left_out(folder: Path) -> LeftOut:
    """LeftOut of `folder`, walked as find_images walks it (_walk)."""
    root = folder.resolve()
    outside = folders = broken = 0
    unread: dict[str, int] = {}
    misnamed: list[str] = []
    with contextlib.suppress(OSError):  # a folder that cannot be listed leaves nothing out
        for _, entry in _walk(folder):
            suffix = os.path.splitext(entry.name)[1].lower()
            if entry.is_symlink():
                if not os.path.exists(entry.path):  # a loop is 'taken': the loader names it
                    # a dangling link to a folder (an unmounted share, hq70 8) has no suffix
                    broken += (suffix in IMAGE_SUFFIXES or not suffix) and not _taken(entry, root)
                elif entry.is_dir():  # one to a folder inside is read there (hq70 5: 'copy it in')
                    folders += not _inside(entry, root)
                elif suffix in IMAGE_SUFFIXES and not _taken(entry, root):
                    outside += 1
            elif suffix in UNREAD_SUFFIXES:
                unread[suffix] = unread.get(suffix, 0) + 1
            elif suffix not in IMAGE_SUFFIXES and holds_data(Path(entry.path)).startswith("an image"):
                misnamed.append(entry.name)
    formats = tuple(sorted(unread))
    first = min(misnamed, default="")
    return LeftOut(outside, folders, broken, sum(unread.values()), formats, len(misnamed), first)
