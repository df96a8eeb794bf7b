"""Every command's help, golden at 80 and 120 columns: whole option names, no boxes cut mid-word.

After an intended change of a help text: QUANTKIT_UPDATE_GOLDEN=1 pytest tests/test_help.py, review the
diff of tests/golden/help/, then `make readme`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from quantkit.cli import app

GOLDEN = Path(__file__).parent / "golden" / "help"
GROUP: Any = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)


def _help(command: str | None, width: int) -> str:
    """The help as a terminal of `width` columns shows it (click keeps a 2-column margin)."""
    target = GROUP if command is None else GROUP.commands[command]
    parent = GROUP.make_context("quantkit", [], resilient_parsing=True, terminal_width=width - 2)
    ctx = (
        parent
        if command is None
        else target.make_context(command, [], parent=parent, resilient_parsing=True, terminal_width=width - 2)
    )
    return "\n".join(line.rstrip() for line in target.get_help(ctx).splitlines()) + "\n"


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_matches_its_golden_file(command: str | None, width: int) -> None:
    text = _help(command, width)
    path = GOLDEN / f"{command or 'quantkit'}_{width}.txt"
    if os.environ.get("QUANTKIT_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"{path.name} changed; see the module docstring"
    assert max(len(line) for line in text.splitlines()) <= width


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_name_is_whole_at_80_columns(command: str) -> None:
    words = set(re.findall(r"--?[A-Za-z][\w-]*", _help(command, 80)))
    names = {opt for p in GROUP.commands[command].params for opt in (*p.opts, *p.secondary_opts)}
    options = {n for n in names if n.startswith("-")}
    assert options and options <= words, sorted(options - words)
    assert {"-q", "--quiet", "-v", "--verbose", "-h", "--help"} <= words  # the conventions, everywhere
    assert "…" not in _help(command, 80) and "╭" not in _help(command, 80)


def _run(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "quantkit", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_real_terminal_width_is_used_for_help() -> None:
    done = _run("convert", "-h")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == _help("convert", 80).strip()
