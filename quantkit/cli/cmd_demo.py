"""`quantkit demo`."""

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
    default_cache,
    progress_bars,
    show,
    step_summary_path,
    warn,
)
from quantkit.errors import ConfigError


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit demo   (offline: the embedded digits CNN)  |  quantkit demo --zoo mobilenetv2 "
    "--images photos/",
)
def demo(
    zoo_name: Annotated[
        str | None,
        typer.Option(
            "--zoo",
            help="Instead: a model zoo model (mobilenetv2, shufflenetv2, densenet121), downloaded once.",
        ),
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="With --zoo: ImageNet-like photos to calibrate on.")
    ] = None,
    eval_images: Annotated[
        Path | None, typer.Option("--eval-images", help="With --zoo: held-out photos [default: --images].")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="With --zoo: class ids in output order.")
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where the INT8 model and the reports go.")
    ] = Path("quantkit-demo"),
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Downloads and calibration tables [default: $XDG_CACHE_HOME/quantkit or ~/.cache/quantkit].",
        ),
    ] = None,
) -> None:
    """Shrink a model end to end and show the report: by default the digits CNN that ships inside the
    package, on its held-out digits, offline."""
    from quantkit import demo as demos
    from quantkit.reports import console

    given = [
        flag
        for flag, value in (("--images", images), ("--eval-images", eval_images), ("--labels", labels))
        if value
    ]
    if zoo_name is None and given:  # hq114 F9: ignored without --zoo, a path that does not exist too
        raise ConfigError(f"{given[0]} goes with --zoo NAME (the embedded digits bring their own); add --zoo")
    default = default_cache()
    cache = cache_dir or (default.parent if default is not None else None)
    if cache is None:
        raise ConfigError("no home folder can be told for the demo's cache; give --cache-dir DIR")
    step_summary = step_summary_path()
    with progress_bars() as progress:
        if zoo_name is None:
            result = demos.embedded(output_dir, cache, progress, step_summary)
        elif images is None:
            raise ConfigError("--zoo needs --images DIR: ImageNet-like photos to calibrate and evaluate on")
        else:
            result = demos.from_zoo(
                zoo_name, images, eval_images, labels, output_dir, cache, progress, step_summary
            )
    show(console.compare_table(result.comparison))
    show()
    show(console.shrink_table(result, str(output_dir)))
    for line in (*result.warnings, *result.comparison.reference_findings):
        warn(line)
    if not result.passed:
        raise typer.Exit(1)
