"""Compare in chunks: the unit of work one worker runs (both models over a chunk of the images), and the
in-order merge of their results. Chunks are those of pipeline.shards, the same for any number of
workers, so the figures are the same bytes on one process, N processes or a Ray cluster."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from quantkit import runtime_openvino
from quantkit.config import DetectorHead, ImageSelection, Preprocess, Runtime
from quantkit.errors import ConfigError
from quantkit.evaluate.compare import Comparison, compare_batches
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.file_inputs import file_state
from quantkit.graph import model_io
from quantkit.images import ImageLoader
from quantkit.ort_quirks import has_float8
from quantkit.pipeline.loading import read_ahead
from quantkit.pipeline.shards import Shared, keeping, require_visible, session_for
from quantkit.results import Feed
from quantkit.runtime import versions


@dataclass(frozen=True)
class CompareJob:
    """One chunk of compare's images and what a fresh worker needs to score them."""

    index: int
    paths: tuple[Path, ...]
    preprocess: Preprocess
    batch_size: int
    folder: Path
    classes: tuple[str, ...] | None
    detection_threshold: float | None
    detector: DetectorHead
    side: tuple[int, int] | None
    keys: tuple[str, str]  # the reference's and the candidate's session keys
    threads: int
    runtime: Runtime = Runtime.onnxruntime
    values: frozenset[str] = frozenset()  # the outputs graph.output_kinds reads as features
    maps: frozenset[str] = frozenset()  # and those a Conv or Resize computes (a segmenter's logits)
    ordered: frozenset[str] = frozenset()  # and those a TopK or NonMaxSuppression chose and ordered
    labels: frozenset[str] = frozenset()  # and those an ArgMax writes (graph.output_kinds.label_outputs)
    axes: tuple[tuple[str, int], ...] = ()  # rank-4 outputs' channel axes the graph lays out (graph.layouts)
    one_image: bool = False  # the model's batch is fixed at 1

    def comparison(self) -> Comparison:
        return Comparison(
            self.folder,
            self.classes,
            self.detection_threshold,
            self.detector,
            self.side,
            self.values,
            self.maps,
            self.ordered,
            self.labels,
            dict(self.axes),
            self.one_image,
        )


def describe(job: CompareJob) -> str:
    return f"compare chunk {job.index + 1} ({len(job.paths)} images, {job.paths[0]} to {job.paths[-1].name})"


@dataclass
class CompareChunk:
    """One chunk's figures, its reference check, skipped files and first sample (for the timing)."""

    comparison: Comparison
    check: ReferenceCheck
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    first: Feed | None = None
    digests: list[bytes] = field(default_factory=list)  # sha256 of each image compared (copies: warned)


def run_compare_chunk(
    shared: Shared, job: CompareJob, progress: Callable[[int], None] | None = None
) -> CompareChunk:
    """A worker's task: decode the chunk's images (overlapping inference), run both models, score."""
    reference = session_for(shared[0], job.keys[0], job.threads, job.runtime)
    candidate = session_for(shared[1], job.keys[1], job.threads, job.runtime)
    require_visible(job.paths, worker=progress is None)
    loader = ImageLoader(job.paths, job.preprocess, job.batch_size)
    check = ReferenceCheck(values=job.values | job.ordered)  # NMS-chosen ids are no classifier's
    first: list[Feed] = []

    batches = keeping(read_ahead(loader), 1, first)
    comparison = compare_batches(reference, candidate, batches, job.comparison(), progress, check)
    if progress is not None and loader.skipped:
        progress(len(loader.skipped))
    digests = [entry[-32:] for entry in loader.entries]
    return CompareChunk(comparison, check, loader.skipped, first[0] if first else None, digests)


def merge_chunks(results: Iterator[CompareChunk], empty: Comparison) -> CompareChunk:
    """Chunk results folded in list order into one."""
    total = CompareChunk(empty, ReferenceCheck())
    for chunk in results:
        total.comparison.merge(chunk.comparison)
        total.check.merge(chunk.check)
        total.skipped.extend(chunk.skipped)
        total.first = total.first if total.first is not None else chunk.first
        total.digests.extend(chunk.digests)
    return total


def copies_line(digests: list[bytes]) -> str | None:
    """A warning where images compared hold the same bytes as others: each copy weighs again in the
    figures (hq68 8: calibrate said so, compare and shrink's evaluation did not)."""
    extra = len(digests) - len(set(digests))
    if extra <= 0:
        return None
    return (
        f"{extra} of the {len(digests)} images compared hold the same bytes as another one: each copy weighs "
        "again in the figures; remove the copies to count each photo once"
    )


def identity(models: tuple[str, str], images: ImageSelection, paths: Sequence[Path]) -> dict[str, Any]:
    """What a comparison is of, for its record (hq107 F4: --seed 0 and 1 gave other figures under the same
    recorded settings, and neither model nor image set was named but by the paths typed): both models'
    sha256 (model_hashes, taken as the run begins: hq113 F1, a file replaced meanwhile was named instead)
    and the images' (images_identity)."""
    return {"reference_sha256": models[0], "candidate_sha256": models[1], **images_identity(images, paths)}


def model_hashes(reference: Path, candidate: Path) -> tuple[str, str]:
    return model_io.file_sha256(reference), model_io.file_sha256(candidate)


def images_identity(images: ImageSelection, paths: Sequence[Path]) -> dict[str, Any]:
    """The images' seed and the sha256 of their names, in order (relative to the folder; None for none)."""
    names = [str(p.relative_to(images.folder)) if p.is_relative_to(images.folder) else str(p) for p in paths]
    digest = hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()
    return {"seed": images.seed, "images_list_sha256": digest if paths else None}


def preprocess_source(arrays: bool, recorded: bool, given: frozenset[str], every: frozenset[str]) -> str:
    """Where compare's preprocessing came from: arrays (none), flags, a model's quantkit metadata and
    flags over it, the metadata, or the defaults. given: the options given; every: all of them."""
    if arrays:
        return "arrays"
    if given:
        return "flags" if not recorded or given == every else "recorded + flags"
    return "recorded" if recorded else "defaults"


def shown_names(paths: list[Path], skipped: list[tuple[Path, str]], folder: Path) -> list[str]:
    """The images compared, in order, as a warning names them: the skipped ones left out (hq108 F1: the
    image after an unreadable one was named), each by its path in the folder (F8: a/img_3.jpg and
    b/img_3.jpg were both 'img_3.jpg')."""
    unread = {path for path, _ in skipped}
    return [
        os.path.relpath(p, folder) if p.is_relative_to(folder) else p.name for p in paths if p not in unread
    ]


def runtime_settings(runtime: Runtime, candidate: onnx.ModelProto, candidate_path: Path) -> dict[str, Any]:
    """What the report states of the runtime: onnxruntime's optimization level, or OpenVINO's device
    and hints with how many of the candidate's Conv/Gemm/MatMul its CPU plugin runs on int8 inputs."""
    if runtime is Runtime.onnxruntime:
        # runtime.Session runs a float8 model at the basic level (onnxruntime 1.32 miscomputes it above)
        level = "ORT_ENABLE_BASIC" if has_float8(candidate) else "ORT_ENABLE_ALL"
        return {"runtime": runtime.value, "graph_optimization": level}
    nodes = runtime_openvino.linear_nodes(candidate)
    layers = runtime_openvino.OpenVinoSession(candidate_path, threads=1).layers(nodes)
    return {
        "runtime": runtime.value,
        "openvino": {**runtime_openvino.settings(), "candidate_layers": layers.to_dict()},
    }


def run_versions(runtime: Runtime) -> dict[str, str]:
    found = versions()
    if runtime is Runtime.openvino:
        found["openvino"] = runtime_openvino.version() or "not installed"
    return found


def require_unchanged(states: dict[Path, tuple[int, int, int, int] | None]) -> None:
    """Refuse the comparison where a model file changed while it ran (file_inputs.file_state taken as it
    began): its figures would mix two files. hq122 F1: the candidate replaced mid-run gave the old file's
    sha256 and SQNR beside the new one's size and latency (1.01x where each alone was 1.9x), exit 0."""
    for path, state in states.items():
        if file_state(path) != state:
            raise ConfigError(
                f"{path} changed while compare ran (another process wrote or replaced it): its figures "
                "would mix two files; nothing was written: compare again when nothing writes it"
            )
