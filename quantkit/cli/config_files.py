"""Option defaults from files: `[tool.quantkit]` in ./pyproject.toml, then a `quantkit.toml` beside the model
(it wins); command-line flags win over both.

Keys are option names without the dashes (`num-images = 100`). Top-level keys apply to every command
that has the option; a table per command (`[tool.quantkit.shrink]`, or `[shrink]` in quantkit.toml)
overrides them for that command. An unknown key is an error, never ignored. A relative path is read from
the folder of the file that sets it."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from quantkit.errors import ConfigError
from quantkit.files import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]

PROJECT_FILE = "pyproject.toml"
MODEL_FILE = "quantkit.toml"
# Options that name files or folders: a relative one is relative to the file that sets it, as in ruff's
# and mypy's files (hunt32: labels = "../labels.txt" beside the model failed from the repository root).
PATH_OPTIONS = frozenset(
    {
        "cache-dir",
        "calibration",
        "eval-images",
        "exclude-from",
        "images",
        "inputs",
        "json",
        "labels",
        "markdown",
        "output",
        "output-dir",
        "validation",
        "write-exclusions",
    }
)


def sources(cwd: Path, model: Path | None) -> list[tuple[Path, dict[str, Any]]]:
    """(file, its quantkit settings) in increasing precedence; files that do not exist are left out."""
    found = []
    project = cwd / PROJECT_FILE
    if _is_file(project, "the working folder"):
        tool = _read(project).get("tool", {})
        table = tool.get("quantkit") if isinstance(tool, dict) else None  # hq114 F4: tool = "x" broke all
        if table is not None:
            found.append((project, _table(table, project)))
    if model is not None:
        beside = model.parent / MODEL_FILE
        if _is_file(beside, "the model's folder"):
            found.append((beside, _read(beside)))
    return found


def _is_file(path: Path, where: str) -> bool:
    """Whether a config file is at `path`; one line where its folder cannot be searched (hq122 F7: a
    working folder 4441 characters deep failed 'File name too long (.../pyproject.toml)', a file the
    user never named, 'check ... that the disk is writable and not full')."""
    try:
        return path.is_file()
    except OSError as exc:
        raise ConfigError(
            f"cannot look for {path.name} in {where} ({exc.strerror}; {len(str(path.parent))} characters): "
            "run quantkit from a folder of a shorter path"
        ) from exc


def defaults(
    files: list[tuple[Path, dict[str, Any]]],
    commands: Mapping[str, Mapping[str, str]],
    numbers: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """click's default_map: command -> parameter name -> value. commands: command -> option name (no
    dashes) -> parameter name, for every option of every command; numbers: the options that take a
    number (a TOML boolean is refused there: click read `num-images = true` as 1, hq57 C2)."""
    options = {option for table in commands.values() for option in table}
    resolved: dict[str, dict[str, Any]] = {name: {} for name in commands}
    for path, settings in files:  # later files win; in a file, a command's table wins over top-level keys
        for key, value in settings.items():
            if isinstance(value, dict):
                if key == "tool" and path.name != "pyproject.toml":  # hunt30: [tool.quantkit] here
                    raise ConfigError(
                        f"{path}: [tool.quantkit] belongs in pyproject.toml; in {path.name}, put the "
                        "settings at the top level or under a command's table ([convert], ...)"
                    )
                if key in options and key not in commands:  # hq146 F7: mean = {a = 1} read as a command
                    raise ConfigError(f"{path}: {key} takes a value, not a table: {key} = ...")
                if key not in commands:
                    raise ConfigError(f"{path}: [{key}] is not a quantkit command; use {', '.join(commands)}")
            elif key in LOUDNESS:  # hq146 F7: 'unknown option', though every command takes it
                raise ConfigError(f"{path}: {key} is not read from files; pass {LOUDNESS[key]}")
            elif key not in options:
                raise ConfigError(
                    f"{path}: unknown option {key!r}{_near(key, options)}; keys are option names without "
                    "the dashes"
                )
            else:
                for command, table in commands.items():
                    if key in table:
                        resolved[command][table[key]] = _placed(key, value, path, numbers)
        for key, value in settings.items():
            if isinstance(value, dict):
                _apply(resolved[key], value, commands[key], path, f"[{key}] ", numbers)
    return resolved


LOUDNESS = {"quiet": "-q (--quiet)", "verbose": "-v (--verbose)"}  # each run's own choice, never a file's


def _apply(
    target: dict[str, Any],
    section: Mapping[str, Any],
    table: Mapping[str, str],
    path: Path,
    where: str,
    numbers: frozenset[str],
) -> None:
    for key, value in section.items():
        if key in LOUDNESS:
            raise ConfigError(f"{path}: {where}{key} is not read from files; pass {LOUDNESS[key]}")
        if key not in table:
            raise ConfigError(
                f"{path}: {where}unknown option {key!r}{_near(key, table)}; see the command's --help"
            )
        target[table[key]] = _placed(key, value, path, numbers)


# Options whose values are on / off: a TOML boolean is read as one (hunt38 F9: range-cap = false was
# refused with "False is not one of 'on', 'off'").
SWITCH_OPTIONS = frozenset({"range-cap", "bias-correction"})
REPEATED_OPTIONS = frozenset({"input-value"})  # multiple=True: a TOML array is its values, one a flag


def _placed(key: str, value: Any, path: Path, numbers: frozenset[str] = frozenset()) -> Any:
    """value, or for a path option a relative path read from `path`'s folder ('-', stdout, as it is). A
    TOML array is the comma-separated list the option takes (hunt32: exclude-nodes = ["a", "b"] reached
    the option as the text "['a', 'b']")."""
    if key in REPEATED_OPTIONS:  # given once per value, each with its own commas (input-value = ["s=1,1"])
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if isinstance(value, list) and key in PATH_OPTIONS:  # hq114 F1: ["a", "b"] made a folder named 'a,b'
        raise ConfigError(f"{path}: {key} takes one path; got a list of {len(value)}")
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool) and key in SWITCH_OPTIONS:
        return "on" if value else "off"
    if isinstance(value, bool) and key in numbers:
        raise ConfigError(f"{path}: {key} takes a number; got {str(value).lower()}")
    if key in PATH_OPTIONS and not isinstance(value, str):  # hq109 F9: pathlib's own words, no fix
        shown = str(value).lower() if isinstance(value, bool) else value
        raise ConfigError(f'{path}: {key} takes a path, as text; got {shown} (quote it: {key} = "{shown}")')
    if key == "ray" and value == "":  # hq114 F9: read as no address, the run stayed here
        raise ConfigError(f'{path}: ray = "" is empty (an unset variable?); give the address or leave it out')
    if key not in PATH_OPTIONS or value == "-" or Path(value).is_absolute():
        return value
    if not value:  # read from the file's folder, '' would be that folder (review of hq61's empty paths)
        raise ConfigError(f'{path}: {key} = "" is empty (an unset variable?); give a path or leave it out')
    return str(path.parent / value)


def _near(key: str, known: Iterable[str]) -> str:
    """' (did you mean 'num-images'?)' for num_images and other near misses; '' for none."""
    close = difflib.get_close_matches(key.replace("_", "-"), list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_text(path))  # hq61: a BOM (Notepad's) read as 'Invalid statement'
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({exc.__class__.__name__}); check the file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix the file") from exc


def _table(value: object, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [tool.quantkit] must be a table")
    return value
