"""The command line as given, checked where click would read it wrongly in silence: an empty path (an
unset variable) and an option given twice with two values (click keeps the last)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from quantkit.errors import ConfigError


def refuse_empty_paths(commands: dict[str, Any], argv: list[str]) -> None:
    """An empty path ('--images "$CALIB_DIR"' with the variable unset) is refused: click reads '' as the
    current folder, which hq61 saw calibrate on whatever lay under it, exit 0 (a config file's:
    config_files); so is an option given twice with two values (click keeps the last). An option
    click does not know, or a value missing, ends the scan: click names it."""
    command = commands.get(argv[0]) if argv else None
    if command is None:
        return
    paths = [p for p in command.params if takes(p, Path) or p.name == "ray"]  # hq114 F9: --ray '' ran here
    flags = {opt: p for p in paths for opt in p.opts}
    options = {opt: p for p in command.params if not getattr(p, "is_flag", False) for opt in p.opts}
    positional = iter([p.name for p in command.params if not p.opts[0].startswith("-")])
    args = iter(argv[1:])
    seen: dict[str, str] = {}  # a path option's first value, by its parameter
    for arg in args:
        name, equals, value = arg.partition("=")
        if arg.startswith("--") and equals:  # --images= (a short option's '=' is its value's)
            flag, empty = name, name in flags and not value
        elif not arg.startswith("--") and len(arg) > 2 and arg[:2] in options:  # -ot.json (hq92 F4)
            flag, empty, value = arg[:2], False, arg[2:]
            if value.startswith("="):  # hq114 F10: -o=eq.onnx wrote a file named '=eq.onnx'
                raise ConfigError(f"{arg} gives {flag} the value {value!r}; write {flag} {value[1:]}")
        elif arg.startswith("-") and arg != "-":
            if arg not in options and not any(arg in (*p.opts, *p.secondary_opts) for p in command.params):
                return  # hq91 F3: a --no-x (secondary) flag ended the scan
            taken = next(args, None) if arg in options else "-"
            if taken is None:  # the value is missing: click says so
                return
            flag, empty, value = arg, arg in flags and taken == "", taken
        else:
            flag = f"the {next(positional, 'path').replace('_', ' ')} argument"
            empty = arg == ""
        if empty:
            wanted = "a cluster's address" if flag == "--ray" else "a path"
            raise ConfigError(f"{flag} is empty (an unset variable?); give {wanted}")
        param = options.get(flag)  # hq89 F5: `--images a --images b` read b alone; hq114 F2: `--to int8
        if param is not None and not param.multiple:  # --to fp16` wrote FP16, two --max-drop gated the last
            first = seen.setdefault(param.name, value)
            same = os.path.abspath(first) == os.path.abspath(value) if flag in flags else _same(first, value)
            if not same:  # hq91 F10: `d` and `d/` are one; hq117 F3: 2 and 02 too
                listed = f", the names comma-separated ({first},{value})" if flag in NAME_LISTS else ""
                raise ConfigError(f"{flag} is given twice ({first} and {value}); give it once{listed}")


def takes(param: Any, kind: type) -> bool:
    """Whether a command's parameter is declared of `kind` (typer's type descriptor)."""
    return getattr(getattr(param, "type_descriptor", None), "annotation", None) is kind


NAME_LISTS = frozenset({"--exclude-nodes", "--exclude-op-types"})  # hq117 F1: they take a comma list


def _same(first: str, second: str) -> bool:
    """Whether two values of an option are one: equal text, or equal numbers written two ways (2 and 02,
    1,2,3 and 1.0,2.0,3.0)."""
    if first == second:
        return True
    a, b = first.split(","), second.split(",")
    try:
        return len(a) == len(b) and all(float(x) == float(y) for x, y in zip(a, b, strict=True))
    except ValueError:
        return False
