"""`quantkit compare`: both models over the same images, accuracy, error, latency and size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from quantkit.config import (
    CompareConfig,
)
from quantkit.errors import (
    ConfigError,
    ImageError,
)
from quantkit.evaluate.compare import compare_outputs, read_classes
from quantkit.evaluate.metrics import latency_stats
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.graph import model_io
from quantkit.images import ImageLoader, resolve_preprocess, select_images, shortfall
from quantkit.pipeline.loading import model_bytes
from quantkit.pipeline.progress import Progress, no_progress
from quantkit.pipeline.writing import conversion_record, recorded_preprocess
from quantkit.results import (
    ComparisonResult,
    OutputMetrics,
)
from quantkit.runtime import Session, cpu_info, interleaved_latency, versions


def compare(
    reference_path: Path,
    candidate_path: Path,
    config: CompareConfig,
    explicit_preprocess: bool,
    progress: Progress = no_progress,
) -> ComparisonResult:
    reference = model_io.load_model(reference_path)
    candidate = model_io.load_model(candidate_path)
    spec = model_io.image_input(reference)
    recorded = recorded_preprocess(candidate) or recorded_preprocess(reference)
    preprocess = (
        recorded
        if recorded is not None and not explicit_preprocess
        else resolve_preprocess(config.preprocess, spec)
    )
    classes = read_classes(config.labels) if config.labels else None
    paths = select_images(config.images)
    fixed = {d for d in (spec.shape[0], model_io.image_input(candidate).shape[0]) if d is not None}
    if len(fixed) > 1:
        raise ConfigError(f"the models fix different batch sizes ({sorted(fixed)}); export them alike")
    fixed_batch = fixed.pop() if fixed else None
    size = fixed_batch or config.batch_size
    loader = ImageLoader(paths, preprocess, size)
    ref_session, cand_session = Session(reference_path), Session(candidate_path)
    check = ReferenceCheck()
    outputs, ref_acc, cand_acc, count = compare_outputs(
        ref_session,
        cand_session,
        loader,
        config.images.folder,
        classes,
        progress("evaluating", len(paths)),
        config.detection_threshold,
        config.detector,
        (preprocess.height, preprocess.width),
        check,
    )
    if count == 0:
        raise ImageError(f"none of the {len(paths)} images could be read; check the folder")
    latency_batch = fixed_batch or 1  # batch 1 unless a model fixes another batch size
    first = next(iter(ImageLoader(paths, preprocess, 1)))  # the first readable image (count > 0)
    timing_input = np.repeat(first.data, latency_batch, axis=0)
    lat = config.latency
    timed = [Session(p, threads=lat.threads, spin=False) for p in (reference_path, candidate_path)]
    samples = interleaved_latency(timed, timing_input, lat.warmup, lat.runs, progress("timing", lat.runs))
    latency_samples = (tuple(float(v) for v in samples[0]), tuple(float(v) for v in samples[1]))
    return ComparisonResult(
        reference=str(reference_path),
        candidate=str(candidate_path),
        num_images=count,
        outputs=tuple(outputs),
        reference_accuracy=ref_acc,
        candidate_accuracy=cand_acc,
        reference_latency=latency_stats(samples[0]),
        candidate_latency=latency_stats(samples[1]),
        reference_bytes=model_bytes(reference_path),
        candidate_bytes=model_bytes(candidate_path),
        settings={
            "threads": lat.threads,
            "warmup": lat.warmup,
            "runs": lat.runs,
            "batch_size_latency": latency_batch,
            "images": str(config.images.folder),
            "images_requested": config.images.num_images,
            "images_skipped": len(loader.skipped),
            "labels": str(config.labels) if config.labels else None,
            "detection_score_threshold": config.detection_threshold,
            "detector": config.detector.value if config.detection_threshold is not None else None,
            "preprocess": preprocess.to_dict(),
            # where the preprocessing came from: flags, a model's quantkit metadata, or the defaults
            "preprocess_source": "flags"
            if explicit_preprocess
            else "recorded"
            if recorded is not None
            else "defaults",
            "graph_optimization": "ORT_ENABLE_ALL",
        },
        environment={**cpu_info(), "versions": versions()},
        candidate_conversion=conversion_record(candidate),
        latency_samples_ms=latency_samples,
        reference_findings=check.findings(
            ref_acc.top1 if ref_acc else None,
            len(classes) if classes else 0,
            _detections(outputs),
        ),
        warnings=tuple(
            w
            for w in (
                shortfall(config.images, paths),
                _swapped(reference, candidate, reference_path, candidate_path),
            )
            if w
        ),
    )


def _detections(outputs: Sequence[OutputMetrics]) -> int | None:
    """FP32's detections above the score over every detector output; None without --detector."""
    counts = [m.detections for m in outputs if m.detections is not None]
    return sum(counts) if counts else None


REDUCED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)


def _reduced(model: onnx.ModelProto) -> bool:
    """Whether a model is quantized or float16 (Q/DQ or integer ops, float16 weights)."""
    if any(node.op_type in REDUCED_OPS for node in model.graph.node):
        return True
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def _swapped(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, reference_path: Path, candidate_path: Path
) -> str | None:
    """The hint when the reference looks quantized and the candidate float: the arguments swapped."""
    if _reduced(reference) and not _reduced(candidate):
        return (
            f"the reference {reference_path.name} looks quantized and the candidate {candidate_path.name} "
            "float: swapped? the order is `quantkit compare FP32_MODEL QUANTIZED_MODEL`"
        )
    return None
