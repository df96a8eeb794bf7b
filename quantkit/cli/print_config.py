"""--print-config: a command's settings as it would run them, and where each comes from."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from quantkit.cli.app import (
    stdout,
)
from quantkit.errors import ConfigError


def print_config(commands: dict[str, Any], argv: list[str], default_map: dict[str, dict[str, Any]]) -> None:
    """The command's settings as it would run them, and where each comes from (flag, file, default)."""
    from quantkit.cli.config_files import PATH_OPTIONS

    if not argv or argv[0] not in commands:
        raise ConfigError(
            f"--print-config goes with a command: quantkit COMMAND ... --print-config ({', '.join(commands)})"
        )
    name, unread = argv[0], False
    try:  # hq146 F11: a bad value read 'not set (the command's own default)', an unknown option nothing
        if not {"--help", "-h"} & set(argv):  # hq153 F8: help is printed by the strict parse, unheaded
            commands[name].make_context(name, list(argv[1:]), default_map=dict(default_map[name]))
    except Exception as exc:  # click's own errors (typer vendors click: matched by what they are)
        missing = type(exc).__name__ == "MissingParameter"  # the settings without the model: asked often
        unread = missing and getattr(getattr(exc, "param", None), "name", "") in ("model", "reference")
        if not missing and not hasattr(exc, "format_message"):
            raise
        if not missing:
            said = str(getattr(exc, "format_message")()).rstrip(".")  # noqa: B009 (click's, untyped here)
            raise ConfigError(f"{said}; the run would refuse it") from None
    ctx = commands[name].make_context(
        name, list(argv[1:]), default_map=default_map[name], resilient_parsing=True
    )
    origin = {"COMMANDLINE": "command line", "DEFAULT_MAP": "config file", "ENVIRONMENT": "environment"}
    stdout.print(
        f"# quantkit {name}: resolved settings (flags > environment > quantkit.toml > pyproject.toml > "
        "defaults); paths as they resolve here (a config file reads a relative path from its own folder)",
        soft_wrap=True,
    )
    if unread:  # hq153 F4: a quantkit.toml's to = "int9" showed as 'to = "int8"  # default', unread
        stdout.print(
            "# no model given: the quantkit.toml beside a model is not read here; give the model to see "
            "what it sets",
            soft_wrap=True,
        )
    for param in commands[name].params:
        if param.name is None or param.name == "help":
            continue
        value = ctx.params.get(param.name)
        shown = value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value
        key = param.opts[0].lstrip("-") if param.opts and param.opts[0].startswith("--") else param.name
        source = ctx.get_parameter_source(param.name)
        where = origin.get(getattr(source, "name", ""), "default")
        raw = default_map[name].get(param.name)
        if where == "config file" and shown is None and raw is not None:  # hunt32: read as null, silently
            shown, where = raw, "config file: not a valid value, the run refuses it"
        elif where == "config file":
            where = _which_file(name, key)
        if key in PATH_OPTIONS and isinstance(shown, str) and shown not in ("", "-"):
            shown = str(Path(shown).absolute())  # pasted into a quantkit.toml elsewhere, still this file
        line = f"{key} = {json.dumps(shown)}  # {where}"
        if shown is None:  # TOML has no null (hq109 F10): the line stays a comment, pasted or not
            line = f"# {key}: not set (the command's own default)"
        elif not (param.opts and param.opts[0].startswith("--")):  # hq116 F5: an argument is no key
            line = f"# {key}: {json.dumps(shown)} (an argument, given on the command line)"
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)


SETTINGS: list[tuple[Path, dict[str, Any]]] = []  # each config file read and what it sets (main)


def _which_file(command: str, key: str) -> str:
    """'config file: <path>', the last file that sets `key` (hq71 F11: --print-config named no file)."""
    return f"config file: {setting[-1]}" if (setting := setting_files(command, key)) else "config file"


def setting_files(command: str, key: str) -> list[Path]:
    """The config files that set `key` for `command` (top level or its table), quantkit.toml the last."""
    return [path for path, keys in SETTINGS if key in keys or key in (keys.get(command) or {})]
