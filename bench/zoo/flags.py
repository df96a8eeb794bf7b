"""A manifest's preprocessing flags read by quantkit's own CLI parser, as the CLI would read them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer

from quantkit import cli
from quantkit.cli.options import preprocess_options as cli_preprocess_options
from quantkit.config import PreprocessOptions


def preprocess_options(flags: Sequence[str]) -> PreprocessOptions:
    """PreprocessOptions from flags such as ('--bgr', '--preset', 'raw'), parsed by `quantkit
    calibrate`'s own option definitions: an unknown flag or a bad value raises as the CLI would."""
    command: Any = typer.main.get_command(cli.app)
    calibrate = command.commands["calibrate"]
    context = calibrate.make_context(
        "calibrate", ["model.onnx", "--images", ".", "--output", "t.json", *flags]
    )
    p = context.params
    options = cli_preprocess_options(p["preset"], p["mean"], p["std"], p["bgr"], p["resize"], p["input_size"])
    if not isinstance(options, PreprocessOptions):
        raise TypeError(f"quantkit's CLI built {type(options).__name__}, not PreprocessOptions")
    return options
