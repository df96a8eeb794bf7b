"""`quantkit calibrate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import typer.core
import typer.main

from quantkit.cli.app import (
    CONTEXT,
    Command,
    app,
    guard_outputs,
    progress_bars,
    show,
    warn,
)
from quantkit.cli.options import (
    BgrOpt,
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
    SeedOpt,
    SizeOpt,
    StdOpt,
    WorkersOpt,
    WorkerThreadsOpt,
    array_run_options,
    preprocess_options,
)
from quantkit.config import OutputKind
from quantkit.errors import ConfigError


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit calibrate model.onnx --images calib/ --output model.calib.json "
    "--num-images 100",
)
def calibrate(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="FP32 ONNX model.")],
    *,
    images: ImagesOrArraysOpt = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Table to write (.json, arrays beside it in .npz).")
    ],
    num_images: NumImagesOpt = None,
    seed: SeedOpt = 0,
    preset: PresetOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    bgr: BgrOpt = None,
    resize: ResizeOpt = None,
    pad: PadOpt = None,
    input_size: SizeOpt = None,
    input_value: InputValueOpt = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images per run (models with a dynamic batch).")
    ] = 8,
    bins: Annotated[int, typer.Option("--bins", help="Histogram bins per tensor (at least 2048).")] = 2048,
    inputs: InputsOpt = None,
    output_kind: OutputKindOpt = OutputKind.auto,
    workers: WorkersOpt = 1,
    ray: RayOpt = None,
    threads: WorkerThreadsOpt = 0,
) -> None:
    """Run the FP32 model over an image folder (or model-ready arrays) and record activation statistics in
    a calibration table."""
    from quantkit import pipeline
    from quantkit.array_files import ArrayFiles
    from quantkit.config import CalibrateConfig, ImageSelection
    from quantkit.parallel import Parallel
    from quantkit.pipeline.loading import table_paths
    from quantkit.reports import console
    from quantkit.reports.formats import skipped_line

    if images is not None and inputs is not None:  # a flag wins over a config file's other source
        source = {n: getattr(ctx.get_parameter_source(n), "name", "") for n in ("images", "inputs")}
        flags = {n for n, where in source.items() if where == "COMMANDLINE"}
        if len(flags) == 1:  # hunt38 F9: a file's images = ... refused calibrate --inputs
            images, inputs = (None, inputs) if flags == {"inputs"} else (images, None)
    if (images is None) == (inputs is None):
        raise ConfigError("calibrate reads one of --images DIR (images) or --inputs DIR (.npy/.npz arrays)")
    if inputs is not None:
        shaping = (preset, mean, std, bgr, resize, input_size, pad)
        preset, mean, std, bgr, resize, input_size, pad = array_run_options(ctx, *shaping)
    config = CalibrateConfig(
        images=ImageSelection(images or Path("."), num_images, seed),
        preprocess=preprocess_options(preset, mean, std, bgr, resize, input_size, pad, input_value),
        batch_size=batch_size,
        bins=bins,
        output_kind=output_kind,
    )
    parallel = Parallel(workers, ray or None, threads)
    # over an input first; then a .json (hq61: -o t.npz read 'the table's arrays t.npz and --output t.npz
    # are the same file')
    guard_outputs([("--output", output)], [("the model", model)])
    _, npz = table_paths(output)
    guard_outputs(
        [("--output", output), ("the table's arrays", npz)],
        [("the model", model)],
        [("--images", images), ("--inputs", inputs)],
    )
    with progress_bars() as progress:
        if inputs is None:
            summary = pipeline.calibrate(model, output, config, progress, parallel=parallel)
        else:
            arrays = ArrayFiles.under(inputs, num_images, seed)
            summary = pipeline.calibrate(model, output, config, progress, arrays, parallel)
    show(
        console.calibrate_lines(
            str(output),  # as given (the summary's is absolute)
            summary.images_used,
            summary.tensors,
            summary.seconds,
            summary.preprocess.to_dict() if summary.preprocess else None,
            summary.notes,
        ),
        end="",
        soft_wrap=True,
    )
    if summary.images_skipped:
        warn(skipped_line(summary.images_skipped))
    for line in (*summary.warnings, *summary.reference_findings):
        warn(line)
