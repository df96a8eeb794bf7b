"""The command line: one module per command (cmd_*), each registered on `app.app` when imported here;
`entry.main` is the console script. The only package that imports typer."""

from __future__ import annotations

from quantkit.cli import (  # _environment first: it must run before onnxruntime loads
    _environment,
    cmd_calibrate,
    cmd_check,
    cmd_compare,
    cmd_convert,
    cmd_demo,
    cmd_sensitivity,
    cmd_shrink,
)
from quantkit.cli.app import app
from quantkit.cli.entry import main

__all__ = [
    "_environment",
    "app",
    "cmd_calibrate",
    "cmd_check",
    "cmd_compare",
    "cmd_convert",
    "cmd_demo",
    "cmd_sensitivity",
    "cmd_shrink",
    "main",
]
