"""One CLI step of `make zoo` in a child process: exit code, time, the last line it printed, and the
tables of what `quantkit convert` kept float, read from its output."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TABLE_SEPARATOR = re.compile(r"^[\s─━┼╇╋┿╪-]+$")


@dataclass
class Step:
    """What one command did. rc None: not run (reason in `last_line`); -9: killed at its timeout."""

    name: str
    argv: list[str]
    rc: int | None = None
    seconds: float = 0.0
    last_line: str = ""
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rc": self.rc,
            "seconds": round(self.seconds, 2),
            "last_line": self.last_line,
            "log": self.log,
            "command": " ".join(self.argv),
            **self.extra,
        }


def skipped(name: str, reason: str) -> Step:
    return Step(name=name, argv=[], rc=None, last_line=f"not run: {reason}")


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_step(name: str, argv: list[str], log: Path, timeout: float) -> Step:
    """Run argv in the log's folder (what a tool leaves in its working directory stays there); its
    stdout and stderr go to `log`. The last line is stderr's, else stdout's."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "COLUMNS": "240", "NO_COLOR": "1", "TERM": "dumb", "PYTHONPATH": path}
    start = time.perf_counter()
    step = Step(name=name, argv=argv, log=str(log))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=log.parent)
    except subprocess.TimeoutExpired as exc:
        step.seconds = time.perf_counter() - start
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        log.write_text(f"$ {' '.join(argv)}\n{out}\n--- stderr ---\n{err}", encoding="utf-8")
        step.rc = -9
        step.last_line = f"timed out after {timeout:.0f} s"
        return step
    step.seconds = time.perf_counter() - start
    step.rc = done.returncode
    log.write_text(f"$ {' '.join(argv)}\n{done.stdout}\n--- stderr ---\n{done.stderr}", encoding="utf-8")
    step.last_line = last_line(done.stderr) or last_line(done.stdout)
    step.extra["stdout"] = done.stdout
    return step


def table_rows(text: str, title: str) -> list[list[str]]:
    """Rows of the rich table titled `title` in a command's output (cells split on │), header dropped."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == title)
    except StopIteration:
        return []
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if TABLE_SEPARATOR.match(line):
            continue
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        if len(cells) >= 2:
            rows.append(cells)
    return rows[1:] if rows else []


def kept_float_int8(stdout: str) -> list[dict[str, Any]]:
    """`convert --to int8`'s 'kept in float' table: op type, count, why."""
    kept = []
    for cells in table_rows(stdout, "kept in float"):
        if len(cells) >= 3:
            count = int(cells[1]) if cells[1].isdigit() else cells[1]
            kept.append({"op": cells[0], "count": count, "why": " ".join(cells[2:]).strip()})
    return kept


def kept_float_fp16(stdout: str) -> list[dict[str, Any]]:
    """`convert --to fp16`'s 'kept float32' table (node, op type, why), counted by op type and why."""
    counts: dict[tuple[str, str], int] = {}
    for cells in table_rows(stdout, "kept float32"):
        if len(cells) >= 3:
            key = (cells[1], " ".join(cells[2:]).strip())
            counts[key] = counts.get(key, 0) + 1
    return [{"op": op, "count": n, "why": why} for (op, why), n in counts.items()]


def notes(stdout: str) -> list[str]:
    """Lines of a convert summary that say what was upgraded, read or checked (not the tables)."""
    keys = ("opset", "Constant node", "range check", "smoke test", "size ", "SQNR", "kept", "upgrade")
    return [ln.strip() for ln in stdout.splitlines() if "│" not in ln and any(k in ln for k in keys)][:12]
