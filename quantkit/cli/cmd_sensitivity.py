"""`quantkit sensitivity`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import typer.core
import typer.main

from quantkit.calib.table import arrays_path
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
from quantkit.cli.options import ImagesOpt, NumImagesOpt, RayOpt, SeedOpt, WorkersOpt, WorkerThreadsOpt
from quantkit.config import (
    ActivationType,
    CalibMethod,
)
from quantkit.errors import ConfigError
from quantkit.pipeline.run_sensitivity import DEFAULT_IMAGES
from quantkit.strict_json import json_text


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit sensitivity model.onnx -c model.calib.json --images val/ --num-images 32 "
    "--write-exclusions keep-float.txt",
)
def sensitivity(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="FP32 ONNX model.")],
    calibration: Annotated[
        Path, typer.Option("--calibration", "-c", help="Table written by `quantkit calibrate`.")
    ],
    images: ImagesOpt,
    num_images: NumImagesOpt = DEFAULT_IMAGES,
    seed: SeedOpt = 0,
    method: Annotated[
        CalibMethod, typer.Option("--method", help="Range selection, as for convert.")
    ] = CalibMethod.mse,
    activations: Annotated[
        ActivationType, typer.Option("--activations", help="uint8 asymmetric or int8 symmetric.")
    ] = ActivationType.uint8,
    top: Annotated[int, typer.Option("--top", help="Measure the top 1..N layers kept float together.")] = 5,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON here.")] = None,
    write_exclusions: Annotated[
        Path | None,
        typer.Option(
            "--write-exclusions",
            help="Write here, for convert --exclude-from, the fewest top layers within 0.1 dB of the best "
            "set kept float together (of the --top sets measured; at most --keep).",
        ),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option("--keep", help="The most layers --write-exclusions lists [default: as measured best]."),
    ] = None,
    workers: WorkersOpt = 1,
    ray: RayOpt = None,
    threads: WorkerThreadsOpt = 0,
) -> None:
    """Rank the quantized layers: each one's own error, and the output error keeping it float recovers."""
    from quantkit import pipeline
    from quantkit.config import ConvertConfig, ImageSelection
    from quantkit.parallel import Parallel
    from quantkit.reports import console, records

    if top < 0 or (keep is not None and keep < 1):
        raise ConfigError("--top must be at least 0 and --keep at least 1")
    if VERBOSITY["level"] < 0 and json_path is None and write_exclusions is None:  # as compare (hq61)
        raise ConfigError(
            "sensitivity with --quiet prints nothing; add --json FILE (or --json - for stdout) or "
            "--write-exclusions FILE"
        )
    guard_outputs(
        [("--json", json_path), ("--write-exclusions", write_exclusions)],
        [
            ("the model", model),
            ("--calibration", calibration),
            ("the table's arrays", arrays_path(calibration)),
        ],
        [("--images", images)],
    )
    to_stdout = file_outputs([("--json", json_path), ("--write-exclusions", write_exclusions)])
    config = ConvertConfig(method=method, activations=activations)
    with progress_bars() as progress:
        result = pipeline.sensitivity(
            model,
            calibration,
            ImageSelection(images, num_images, seed),
            config,
            top,
            progress,
            Parallel(workers, ray or None, threads),
        )
    show_table(console.sensitivity_table(result, keep), to_stdout)
    for line in result.warnings:
        warn(line)
    write_texts(
        [
            (json_path, json_text(records.sensitivity_dict(result)) if json_path else ""),
            (write_exclusions, records.exclusions_file(result, keep, model.name) if write_exclusions else ""),
        ]
    )
    if write_exclusions is not None and (every := records.exclusions_warning(result, keep)):
        warn(every)
