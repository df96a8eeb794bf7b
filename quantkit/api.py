"""The Python API: what the CLI does, as functions with the CLI's option names and defaults.

Paths are `str` or `os.PathLike`; results are frozen dataclasses whose `.to_dict()` is the JSON the CLI
writes; errors are `QuantkitError` subclasses with the CLI's one-line messages. Nothing prints; pass
`progress=` (start(label, total) -> advance(n)) to follow long steps.

`data=` is any of: an image folder; an image file or a list of them; an iterable of numpy arrays (model-ready:
one sample each, or a batch); an iterable of `{input_name: array}` dicts. Arrays are streamed, never
collected; a table made from arrays records their hash instead of image names.

The embedded digits CNN, end to end (calibration digits, INT8 model, comparison on held-out digits):

>>> import tempfile
>>> from importlib.resources import files
>>> import quantkit
>>> demo = files("quantkit") / "demo_data"
>>> model, digits = str(demo / "digits_cnn.onnx"), demo / "digits"
>>> work = tempfile.mkdtemp()
>>> digits_in = quantkit.Preprocess(preset="unit", resize="squash")
>>> table = quantkit.calibrate(model, data=str(digits / "calib"), output=f"{work}/digits.calib.json",
...                            preprocess=digits_in)
>>> table.images_used, table.preprocess.height
(200, 24)
>>> result = quantkit.convert(model, to="int8", calibration=table, output=f"{work}/digits.int8.onnx",
...                           prefer="accuracy")  # int8 even where this CPU times it no faster
>>> result.quantized_by_type["Conv"] >= 2
True
>>> report = quantkit.compare(model, f"{work}/digits.int8.onnx", data=str(digits / "val"),
...                           labels=str(demo / "labels.txt"), runs=5, warmup=1)
>>> report.to_dict()["accuracy"]["reference"]["images"], report.top1_delta > -0.02
(200, True)
>>> import shutil; shutil.rmtree(work)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from quantkit import api_args, files
from quantkit.array_files import ArrayFiles
from quantkit.calib.table import arrays_path
from quantkit.config import (
    CalibrateConfig,
    CompareConfig,
    ConvertConfig,
    Float16Config,
    Gates,
    ImageSelection,
    LatencyConfig,
    OutputKind,
    Precision,
    PreprocessOptions,
    Runtime,
    ShrinkConfig,
    Target,
    preprocessing,
)
from quantkit.config.base import as_count, as_enum, as_path, as_switch
from quantkit.config.choices import refuse_replaced
from quantkit.errors import ConfigError
from quantkit.evaluate.detector_options import detector_fields
from quantkit.image_folders import IMAGE_SUFFIXES
from quantkit.outcomes import (
    CheckReport,
    ComparisonResult,
    ConvertSummary,
    Float16Summary,
    SensitivityReport,
    ShrinkResult,
)
from quantkit.parallel import Parallel
from quantkit.pipeline import run_shrink, shrink_cache, shrink_cleanup
from quantkit.pipeline.loading import table_paths
from quantkit.pipeline.progress import Progress, as_progress
from quantkit.pipeline.run_calibrate import CalibrateSummary
from quantkit.pipeline.run_calibrate import calibrate as run_calibrate
from quantkit.pipeline.run_check import check as run_check
from quantkit.pipeline.run_compare import compare as run_compare
from quantkit.pipeline.run_convert import convert as run_convert
from quantkit.pipeline.run_fp16 import convert_float16
from quantkit.pipeline.run_sensitivity import DEFAULT_IMAGES
from quantkit.pipeline.run_sensitivity import sensitivity as run_sensitivity

PathLike = str | os.PathLike[str]
Data = PathLike | Iterable[PathLike] | Iterable[np.ndarray] | Iterable[Mapping[str, Any]]
Preprocess = PreprocessOptions  # what the user asks for; the model's input fills in the rest
Resolved = preprocessing.Preprocess  # what a table records (CalibrateSummary.preprocess), taken again

_CALIBRATE = CalibrateConfig(ImageSelection(Path(".")))
_LATENCY = LatencyConfig()


@api_args.keywords
def calibrate(
    model: PathLike,
    data: Data,
    *,
    output: PathLike | None = None,
    preprocess: Preprocess | Resolved | None = None,
    num_images: int | None = None,
    seed: int = 0,
    batch_size: int = _CALIBRATE.batch_size,
    bins: int = _CALIBRATE.bins,
    workers: int = 1,
    ray: str | None = None,
    threads: int = 0,
    output_kind: str = "auto",
    progress: Progress | None = None,
) -> CalibrateSummary:
    """Run the FP32 model over `data` and write a calibration table (`output`, default: MODEL.calib.json
    beside the model; its arrays go beside it as .npz). Returns what was written and seen; pass it as
    `calibration=` to `convert`. `preprocess` applies to images (arrays are fed as given).

    workers: local processes; ray: a Ray cluster's address (needs Ray: the `ray` extra; unlike the CLI's
    --ray, RAY_ADDRESS is not read: pass ray=os.environ.get("RAY_ADDRESS") for that); threads: inference
    threads per worker. The table is byte-for-byte the same for any of them at one `threads` (onnxruntime
    rounds some sums differently with another thread count). output_kind: what the [N, C] outputs hold,
    "classes", "values" (embeddings, landmarks) or "auto", for the check that FP32 is fed right. Workers
    start through multiprocessing: a script using them needs the `if __name__ == "__main__":` guard."""
    model_path = as_path(model, "model")
    if output is None and not model_path.name:  # '.' or '/': no file name to put the table beside
        raise ConfigError(f"model {model_path} is a folder; give the .onnx file")
    table = as_path(output, "output") if output is not None else model_path.with_suffix(".calib.json")
    selection, arrays = api_args.data_of(data, num_images, seed)
    files.check_outputs([("output", table)], [("the model", model_path)])  # then a .json path, then the rest
    _, npz = table_paths(table)
    listed = arrays if isinstance(arrays, ArrayFiles) else None
    files.check_outputs(
        [("output", table), ("the table's arrays", npz)],
        [("the model", model_path), *(("data", p) for p in (listed.paths if listed else []))],
        [("data", selection.folder)] if arrays is None else [],
        IMAGE_SUFFIXES,
        [("data", listed.folder)] if listed is not None and listed.folder is not None else [],
    )
    with api_args.arguments("calibrate"):
        config = CalibrateConfig(
            selection,
            api_args.preprocess_of(preprocess, "calibrate"),
            batch_size=batch_size,
            bins=bins,
            output_kind=as_enum(OutputKind, output_kind, "output_kind"),
        )
    return run_calibrate(
        model_path, table, config, as_progress(progress), arrays, Parallel(workers, ray, threads)
    )


@overload
def convert(
    model: PathLike,
    *,
    output: PathLike,
    to: Literal["int8", "fp8"] = "int8",
    calibration: PathLike | CalibrateSummary | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ConvertSummary: ...
@overload
def convert(
    model: PathLike,
    *,
    output: PathLike,
    to: Literal["fp16", "bf16"],
    calibration: PathLike | CalibrateSummary | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> Float16Summary: ...
@overload  # hq144 F12: result.quantized_by_type was a union-attr error under mypy --strict
def convert(
    model: PathLike,
    *,
    output: PathLike,
    to: str = "int8",
    calibration: PathLike | CalibrateSummary | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ConvertSummary | Float16Summary: ...
@api_args.keywords
def convert(
    model: PathLike,
    *,
    output: PathLike,
    to: str = "int8",
    calibration: PathLike | CalibrateSummary | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ConvertSummary | Float16Summary:
    """Write an INT8 QDQ model (`to="int8"`, needs `calibration=`), an FP8 E4M3FN one placed for TensorRT
    (`to="fp8"`, needs `calibration=`), a float16 one (`to="fp16"`) or a bfloat16 one (`to="bf16"`: at
    opset 22, measured on its float32 emulation).

    options: convert's options by their CLI names with underscores (method="minmax", smoothquant="off",
    min_sqnr=20, exclude_nodes=["conv_1"], weight_range="full", ...; for fp16 and bf16 keep_io_types,
    input_size, max_float32_layers); for the accuracy budget max_drop, validation (an image folder),
    labels, metric, max_trials, timeout, detector; workers / ray / threads: where the searches' trials are
    measured and the validation images scored (as for `calibrate`; the result is the same)."""
    model_path, out = as_path(model, "model"), as_path(output, "output")
    table = as_path(calibration, "calibration") if calibration is not None else Path("")
    tables = [("calibration", table), ("the table's arrays", arrays_path(table))] if calibration else []
    files.check_outputs([("output", out)], [("the model", model_path), *tables])
    if to in ("fp16", "bf16"):
        with api_args.arguments("convert"):
            fp16 = Float16Config(**api_args.options_of(Float16Config, options, to), to=Precision(to))
        return convert_float16(model_path, table if calibration else None, out, fp16, as_progress(progress))
    if to not in ("int8", "fp8"):
        raise ConfigError(f"to must be 'int8', 'fp8', 'fp16' or 'bf16'; got {to!r}")
    if calibration is None:
        raise ConfigError(
            f"to={to!r} needs calibration=: the table quantkit.calibrate wrote (or its summary)"
        )
    with api_args.arguments("convert"):
        refuse_replaced(options, to == "fp8", lambda name: f"{name}=")
    parallel = Parallel(options.pop("workers", 1), options.pop("ray", None), options.pop("threads", 0))
    budget = api_args.budget_of(options)
    if budget is not None and budget.labels is not None:  # hq72 1: the model was written over them
        files.check_outputs([("output", out)], [("labels", budget.labels)])
    with api_args.arguments("convert"):
        config = ConvertConfig(**api_args.options_of(ConvertConfig, options, "int8"), fp8=to == "fp8")
    return run_convert(model_path, table, out, config, as_progress(progress), budget, parallel)


@api_args.keywords
def compare(
    reference: PathLike,
    candidate: PathLike,
    *,
    data: Data,
    labels: PathLike | None = None,
    preprocess: Preprocess | Resolved | None = None,
    num_images: int | None = None,
    seed: int = 0,
    threads: int = _LATENCY.threads,
    workers: int = 1,
    ray: str | None = None,
    runs: int = _LATENCY.runs,
    warmup: int = _LATENCY.warmup,
    detector: str | None = None,
    score_threshold: float | None = None,
    runtime: str = "onnxruntime",
    output_kind: str = "auto",
    progress: Progress | None = None,
) -> ComparisonResult:
    """Accuracy (with `labels`), output error, latency and size of `candidate` against `reference`.
    workers / ray: where the images are scored (as for `calibrate`); latency is always timed here.
    runtime: where both models run, "onnxruntime" or "openvino" (the `openvino` extra). output_kind: what
    the [N, C] outputs hold: "classes" (top-1 agreement), "values" (SQNR and cosine only) or "auto".
    Preprocessing is read from the candidate's quantkit metadata; the options `preprocess` is given
    replace those (a table's own preprocessing, CalibrateSummary.preprocess, replaces all of it)."""
    selection, arrays = api_args.data_of(data, num_images, seed)
    with api_args.arguments("compare"):
        config = CompareConfig(
            images=selection,
            preprocess=api_args.preprocess_of(preprocess, "compare"),
            labels=as_path(labels, "labels") if labels is not None else None,
            latency=LatencyConfig(threads=threads, warmup=warmup, runs=runs),
            runtime=as_enum(Runtime, runtime, "runtime"),
            output_kind=as_enum(OutputKind, output_kind, "output_kind"),
            **detector_fields(detector, score_threshold, "detector"),
        )
    return run_compare(
        as_path(reference, "reference"),
        as_path(candidate, "candidate"),
        config,
        # the options given, each over what the candidate records, as the CLI's flags (a table's own
        # preprocessing gives them all; hq157 F1: Preprocess(bgr=False) threw the recorded resize away)
        True if isinstance(preprocess, Resolved) else config.preprocess.asked,
        as_progress(progress),
        arrays,
        Parallel(workers, ray),
    )


@api_args.keywords
def sensitivity(
    model: PathLike,
    *,
    calibration: PathLike | CalibrateSummary,
    data: PathLike | Iterable[PathLike],
    num_images: int | None = DEFAULT_IMAGES,
    seed: int = 0,
    top: int = 5,
    method: str = "mse",
    activations: str = "uint8",
    workers: int = 1,
    ray: str | None = None,
    threads: int = 0,
    progress: Progress | None = None,
) -> SensitivityReport:
    """Rank the layers `convert` would quantize: each one's own error on the images (read with the
    table's preprocessing), and the output error that keeping it float recovers; the top 1..`top`
    layers also kept float together. workers / ray / threads: where the measured models run (as for
    `calibrate`); the report is the same. method / activations: as for `convert`."""
    with api_args.arguments("data"):  # hq72 10: data=None raised list()'s TypeError
        data = data if isinstance(data, (str, os.PathLike)) else list(data)  # read twice below
    if (top := as_count(top, "top")) < 0:
        raise ConfigError(f"top must be at least 0, got {top}")
    selection, arrays = api_args.data_of(data, None, seed)  # arrays refused as such, whatever num_images
    if arrays is not None:
        raise ConfigError("sensitivity reads images (a folder or a list of files), not arrays")
    selection = api_args.data_of(data, num_images, seed)[0]
    config = ConvertConfig(
        **api_args.options_of(ConvertConfig, {"method": method, "activations": activations}, "int8")
    )
    return run_sensitivity(
        as_path(model, "model"),
        as_path(calibration, "calibration"),
        selection,
        config,
        top,
        as_progress(progress),
        Parallel(workers, ray, threads),
    )


@api_args.keywords
def shrink(
    model: PathLike,
    *,
    data: PathLike | Iterable[PathLike],
    output_dir: PathLike,
    eval_data: PathLike | Iterable[PathLike] | None = None,
    labels: PathLike | None = None,
    max_drop: float | None = None,
    min_speedup: float | None = None,
    max_size_ratio: float | None = None,
    allow_degenerate_reference: bool = False,
    min_eval_sqnr: float | None = None,
    preprocess: Preprocess | Resolved | None = None,
    num_images: int | None = None,
    eval_num_images: int | None = None,
    seed: int = 0,
    cache_dir: PathLike | None = None,
    threads: int = _LATENCY.threads,
    workers: int = 1,
    ray: str | None = None,
    runs: int = _LATENCY.runs,
    warmup: int = _LATENCY.warmup,
    detector: str | None = None,
    score_threshold: float | None = None,
    output_kind: str = "auto",
    compact: bool = False,
    target: str = "ort-cpu",
    html: bool = False,
    progress: Progress | None = None,
    convert_options: Mapping[str, Any] | None = None,
) -> ShrinkResult:
    """Calibrate (or reuse a cached table), convert to INT8 and compare, with gates: `.passed` says
    whether they all hold. Writes the INT8 model and report.json, report.md, junit.xml (report.html with
    html=True) into output_dir. Images only (a folder or a list of files). workers / ray: where
    calibration and the evaluation's images run, as for `calibrate`. convert_options: convert's INT8
    options as `convert` takes them (method, prefer, min_sqnr, exclude_nodes, ...; max_drop is a gate
    here, not a search)."""
    model_path, out = as_path(model, "model"), as_path(output_dir, "output_dir")
    read = [Path(p) for p in (model, labels) if isinstance(p, str | os.PathLike)]  # never removed
    with api_args.verdict_dropped(out, read):
        calib, arrays = api_args.data_of(data, num_images, seed)
        held, held_arrays = (
            api_args.data_of(eval_data, eval_num_images, seed) if eval_data is not None else (calib, None)
        )
        if arrays is not None or held_arrays is not None:
            raise ConfigError(
                "shrink takes images (a folder or a list of files); calibrate on arrays instead"
            )
        held = ImageSelection(held.folder, eval_num_images, seed, "eval_num_images", held.files)
        label_file = as_path(labels, "labels") if labels is not None else None
        files.check_outputs(
            [(f"output_dir's {name}", out / name) for name in shrink_cleanup.outputs(model_path)],
            [("the model", model_path), *([("labels", label_file)] if label_file else [])],
            [("data", calib.folder), ("eval_data", held.folder)],
            IMAGE_SUFFIXES,
        )
        pre = api_args.preprocess_of(preprocess, "shrink")
        with api_args.arguments("shrink"):
            kind = as_enum(OutputKind, output_kind, "output_kind")
            config = ShrinkConfig(
                calibration=CalibrateConfig(calib, pre, output_kind=kind),
                convert=api_args.shrink_convert(dict(convert_options or {}), compact, target),
                evaluation=CompareConfig(
                    images=held,
                    preprocess=pre,
                    labels=label_file,
                    latency=LatencyConfig(threads=threads, warmup=warmup, runs=runs),
                    output_kind=kind,
                    **detector_fields(detector, score_threshold, "detector"),
                ),
                gates=Gates(max_drop, min_speedup, max_size_ratio, allow_degenerate_reference, min_eval_sqnr),
                cache_dir=as_path(cache_dir, "cache_dir")
                if cache_dir is not None
                else shrink_cache.default_cache_dir(),
            )
    return run_shrink.shrink(
        model_path,
        out,
        config,
        as_progress(progress),
        None,
        as_switch(html, "html"),
        Parallel(workers, ray),
    )


@api_args.keywords
def check(model: PathLike, *, target: str | None = None) -> CheckReport:
    """Every Q/DQ placement `target` ("ort-cpu", "tensorrt", "openvino"; None: the one quantkit's convert
    recorded in the model, else "ort-cpu") cannot fuse or will run in float, and every type it cannot
    run, in `model` (any Q/DQ ONNX model, quantkit's or another tool's): `.findings` is empty when there
    is none."""
    return run_check(as_path(model, "model"), None if target is None else as_enum(Target, target, "target"))
