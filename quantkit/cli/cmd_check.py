"""`quantkit check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import typer.core
import typer.main

from quantkit.cli.app import CONTEXT, Command, app, file_outputs, guard_outputs, show_table, write_text
from quantkit.config import Target
from quantkit.strict_json import json_text


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit check model.int8.onnx --target tensorrt",
)
def check(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="Q/DQ ONNX model to check.")],
    target: Annotated[
        Target | None,
        typer.Option(
            "--target",
            help="Runtime to check for: ort-cpu, tensorrt or openvino. [default: the target quantkit's "
            "convert recorded in the model, else ort-cpu]",
            show_default=False,
        ),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the findings as JSON here.")] = None,
) -> None:
    """List every Q/DQ placement the target cannot fuse or will run in float and every type it cannot
    run; exit 1 when there is any, 0 when there is none, 2 on an error."""
    from quantkit import pipeline
    from quantkit.reports.console_check import check_table

    guard_outputs([("--json", json_path)], [("the model", model)], [])
    beside = file_outputs([("--json", json_path)])  # `--json -`: the table on stderr (hunt38 F4)
    report = pipeline.check(model, target)
    show_table(check_table(report), beside)
    if json_path is not None:
        write_text(json_path, json_text(report.to_dict()))
    if report.findings:
        raise typer.Exit(1)
