"""`quantkit compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import typer.core
import typer.main

from quantkit.cli.app import (
    CONTEXT,
    VERBOSITY,
    Command,
    app,
    file_outputs,
    guard_outputs,
    progress_bars,
    show_table,
    warn,
    write_texts,
)
from quantkit.cli.options import (
    BgrOpt,
    DetectorOpt,
    EvalWorkersOpt,
    ImagesOrArraysOpt,
    InputsOpt,
    InputValueOpt,
    MeanOpt,
    NumImagesOpt,
    OutputKindOpt,
    PadOpt,
    PresetOpt,
    RayOpt,
    ResizeOpt,
    RunsOpt,
    ScoreOpt,
    SeedOpt,
    SizeOpt,
    StdOpt,
    ThreadsOpt,
    WarmupOpt,
    array_run_options,
    preprocess_options,
)
from quantkit.config import OutputKind, Runtime
from quantkit.errors import ConfigError
from quantkit.strict_json import json_text


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit compare model.onnx model.int8.onnx --images val/ --labels synset.txt "
    "--json out.json",
)
def compare(
    ctx: typer.Context,
    reference: Annotated[Path, typer.Argument(metavar="REFERENCE", help="Reference (FP32) model.")],
    candidate: Annotated[Path, typer.Argument(metavar="CANDIDATE", help="Candidate (quantized) model.")],
    *,
    images: ImagesOrArraysOpt = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Class ids in output order; images in DIR/<class>/ or <class>_*."),
    ] = None,
    num_images: NumImagesOpt = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    runtime: Annotated[
        Runtime,
        typer.Option(
            "--runtime",
            help="Where both models run, for accuracy and latency: onnxruntime, or openvino (OpenVINO's "
            "CPU device, float32 precision hint; pip install 'openvino>=2024.0').",
        ),
    ] = Runtime.onnxruntime,
    workers: EvalWorkersOpt = 1,
    ray: RayOpt = None,
    runs: RunsOpt = 100,
    warmup: WarmupOpt = 10,
    detector: DetectorOpt = None,
    score_threshold: ScoreOpt = None,
    output_kind: OutputKindOpt = OutputKind.auto,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON here.")] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write a Markdown table here.")
    ] = None,
    preset: PresetOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    bgr: BgrOpt = None,
    resize: ResizeOpt = None,
    pad: PadOpt = None,
    input_size: SizeOpt = None,
    input_value: InputValueOpt = None,
    inputs: InputsOpt = None,
) -> None:
    """Accuracy, output error, latency and size of a candidate model against its reference.

    Preprocessing is read from the candidate's quantkit metadata; the options given here replace
    those parts of it (--preset its mean and std)."""
    from quantkit import pipeline
    from quantkit.array_files import ArrayFiles
    from quantkit.config import CompareConfig, ImageSelection, LatencyConfig
    from quantkit.evaluate.detector_options import detector_fields
    from quantkit.parallel import Parallel
    from quantkit.reports import console, markdown, records

    if (images is None) == (inputs is None):
        raise ConfigError("compare reads one of --images DIR (images) or --inputs DIR (.npy/.npz arrays)")
    if inputs is not None:
        shaping = (preset, mean, std, bgr, resize, input_size, pad)
        preset, mean, std, bgr, resize, input_size, pad = array_run_options(ctx, *shaping)
    flags = {
        "preset": preset,
        "mean": mean,
        "std": std,
        "bgr": bgr,
        "resize": resize,
        "pad": pad,
        "input_size": input_size,
        "input_values": input_value or None,
    }
    given = frozenset(name for name, value in flags.items() if value is not None)
    config = CompareConfig(
        images=ImageSelection(images or Path("."), num_images, seed),
        preprocess=preprocess_options(preset, mean, std, bgr, resize, input_size, pad, input_value),
        labels=labels,
        latency=LatencyConfig(threads=threads, warmup=warmup, runs=runs),
        runtime=runtime,
        output_kind=output_kind,
        **detector_fields(detector, score_threshold),
    )
    outputs = [("--json", json_path), ("--markdown", markdown_path)]
    guard_outputs(
        outputs,
        [("the reference", reference), ("the candidate", candidate), ("--labels", labels)],
        [("--images", images), ("--inputs", inputs)],
    )
    to_stdout = file_outputs(outputs)
    if VERBOSITY["level"] < 0 and json_path is None and markdown_path is None:
        raise ConfigError("compare with --quiet prints nothing; add --json FILE (or --json - for stdout)")
    with progress_bars() as progress:
        arrays = ArrayFiles.under(inputs, num_images, seed) if inputs is not None else None
        result = pipeline.compare(
            reference, candidate, config, given, progress, arrays, Parallel(workers, ray or None)
        )
    show_table(console.compare_table(result), to_stdout)
    for line in (*result.warnings, *result.reference_findings):
        warn(line)
    write_texts(
        [
            (json_path, json_text(records.comparison_dict(result)) if json_path else ""),
            (markdown_path, markdown.comparison_markdown(result) if markdown_path else ""),
        ]
    )
