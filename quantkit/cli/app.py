"""The typer application every command registers on, and what the commands share: the consoles,
--quiet/--verbose, the output check, progress bars."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main
from rich.console import Console

from quantkit.config.base import as_names
from quantkit.errors import ConfigError, OutputError


class Switch(str, Enum):
    on = "on"
    off = "off"


def _loudness(
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            expose_value=False,
            help="Only files, errors, warnings that change a result's meaning, and the exit code.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", expose_value=False, help="Log each step with its time to stderr."),
    ] = False,
) -> None:
    """Declares --quiet and --verbose for every command's help; main() reads them from anywhere."""


_LOUDNESS: list[Any] = []


class Command(typer.core.TyperCommand):
    """A command whose help lists --quiet and --verbose (main() takes them off the line before parsing)."""

    def get_params(self, ctx: Any) -> list[Any]:
        if not _LOUDNESS:
            _LOUDNESS.extend(typer.main.get_command(_probe()).params)
        params = super().get_params(ctx)
        return [*params[:-1], *_LOUDNESS, *params[-1:]]  # before --help, which click adds last


def _probe() -> typer.Typer:
    probe = typer.Typer(add_completion=False)
    probe.command()(_loudness)
    return probe


CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}

ORDER = ("calibrate", "convert", "compare", "sensitivity", "shrink", "check", "demo")  # as --help lists them


class Group(typer.core.TyperGroup):
    """The commands in the order of a user's first run, not the order their modules were imported."""

    def list_commands(self, ctx: Any) -> list[str]:
        names: list[str] = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


app = typer.Typer(
    cls=Group,
    rich_markup_mode=None,  # click's plain help: whole option names and wrapped text at any width
    context_settings=CONTEXT,
    pretty_exceptions_enable=False,
    help="Post-training INT8 quantization for ONNX vision models: calibrate, convert, compare, shrink.\n\n"
    "Options may also come from [tool.quantkit] in ./pyproject.toml or quantkit.toml beside the model "
    "(flags win); add --print-config to a command to see its resolved settings. Every command takes "
    "--quiet (-q) and --verbose (-v).",
)


class _Stdout(Console):
    """stdout, where a failed write (a full disk, a reader gone: `| head`) loses only what it prints: the
    command goes on, its files written and its warnings on stderr, its exit code its own (hq61: exit 2
    blaming the output's disk, and exit 1 with nothing said, for a table written whole)."""

    def print(self, *objects: Any, **options: Any) -> None:
        try:
            super().print(*objects, **options)
        except OSError as exc:
            lose_stdout(exc)

    def on_broken_pipe(self) -> None:  # rich's own: stdout to /dev/null and exit 1, without a word
        lose_stdout(BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)))


stdout = _Stdout()


class _Stderr(Console):
    """stderr, where a failed write (a CI log on a full disk, fd 2 closed) loses only the lines: the
    exit code still says what happened (hq73 4: exit 1, shrink's 'a gate failed', with nothing said)."""

    def print(self, *objects: Any, **options: Any) -> None:
        with contextlib.suppress(OSError):
            super().print(*objects, **options)

    def on_broken_pipe(self) -> None:  # rich's own exits 1 (hq122 F2: `2>&1 | head -1` ended convert unsaid)
        self.quiet = True  # the lines from here on are lost, as any failed write's


stderr = _Stderr(stderr=True)
STDOUT_LOST: dict[str, str] = {}  # why stdout could not be written, once it could not
# set where stdout carries the run's result: its loss is an error then (lost_result), not also a warning
# that said "its files are written as usual" (hq101 F6, hq100 F12: --print-config, --version)
RESULT_ON_STDOUT: list[bool] = []


def lose_stdout(exc: OSError, say: bool = True) -> None:
    """Say once (where `say`) that stdout cannot be written, and send what follows there to /dev/null (the
    interpreter's own flush at exit would fail again, with a traceback of its own)."""
    if not STDOUT_LOST:
        STDOUT_LOST["why"] = exc.strerror or str(exc)
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), sys.stdout.fileno())
        if say and not RESULT_ON_STDOUT:
            say_stdout_lost()


def say_stdout_lost() -> None:
    """The warning that what the command prints on stdout is lost (STDOUT_LOST says why)."""
    warn(
        f"cannot write to stdout ({STDOUT_LOST['why']}); what the command prints there is lost (its files "
        "are written as usual)"
    )


# Commands whose result is a file (stdout carries only their summary), and those whose result stdout
# carries unless one of these flags names a file
WRITERS = frozenset({"calibrate", "convert", "shrink", "demo"})
RESULT_FILES = {
    "compare": ("--json", "--markdown"),
    "check": ("--json",),
    "sensitivity": ("--json", "--write-exclusions"),
}


def lost_result(argv: Sequence[str]) -> str | None:
    """The error where stdout could not be written and it carried the run's result (compare's table without
    a report file, check's findings, --version, --print-config: a review found them exit 0), else None."""
    if not STDOUT_LOST or not carries_result(argv):
        return None
    return f"cannot write to stdout ({STDOUT_LOST['why']}), which carried the result; write it to a file"


def carries_result(argv: Sequence[str]) -> bool:
    """Whether what the command line prints on stdout is its result (lost_result): --help's text is
    (hq105 F5: `quantkit convert --help >&-` warned and exited 0, `quantkit --help >&-` exit 2)."""
    if any(a in ("--help", "-h") for a in argv):
        return True
    if argv and argv[0] in WRITERS:
        return False
    flags = RESULT_FILES.get(argv[0] if argv else "", ())
    pairs = [
        *zip(argv, [*argv[1:], ""], strict=True),
        *(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a),
    ]
    given = [value for flag, value in pairs if flag in flags]
    # one report to stdout carries a result there, whatever the others go to (hq124 F3: --json FILE
    # --markdown - >&- ran every image before its exit 2)
    return "-" in given or not any(value not in ("", "-") for value in given)


# -1 with --quiet (no progress, no tables: files, errors and exit codes only), 1 with --verbose (each step
# logged to stderr with its time). Set by main() from anywhere on the command line.
VERBOSITY = {"level": 0}

CONFIG_FILES: list[Path] = []  # the config files this run read options from (set by main)

LOUDNESS_FLAGS = {"--quiet": -1, "-q": -1, "--verbose": 1, "-v": 1}


def show(*renderables: Any, **options: Any) -> None:
    """Results go to stdout, unless --quiet."""
    if VERBOSITY["level"] >= 0:
        stdout.print(*renderables, **options)


def file_outputs(outputs: Sequence[tuple[str, Path | None]]) -> bool:
    """Each report file a command writes checked (files.check_output), at most one of them to stdout ('-');
    whether one goes there: the command's table then goes to stderr (show_table)."""
    from quantkit import files

    for flag, out in outputs:
        if out is not None and str(out) != "-":
            files.check_output(out)
            files.refuse_over_artifact(flag, out)
    to_stdout = [flag for flag, out in outputs if out is not None and str(out) == "-"]
    if len(to_stdout) > 1:  # hunt32: sensitivity's two documents and its table went to stdout, none readable
        flags = " and ".join(flag for flag, _ in outputs)
        raise ConfigError(f"only one of {flags} can go to stdout (-); write the other to a file")
    return bool(to_stdout)


def show_table(table: Any, beside_file: bool) -> None:
    """A command's table on stdout, or on stderr where stdout carries a file (file_outputs); none under
    --quiet."""
    if not beside_file:
        show(table)
    elif VERBOSITY["level"] >= 0:
        stderr.print(table)


def warn(line: str) -> None:
    """A warning that changes what a result means: stderr, one line, kept under --quiet."""
    stderr.print(f"warning: {line}", highlight=False, markup=False, soft_wrap=True)


def guard_outputs(
    outputs: Sequence[tuple[str, Path | None]],
    inputs: Sequence[tuple[str, Path | None]],
    folders: Sequence[tuple[str, Path | None]] = (),
) -> None:
    """No output of a command lands on any of its inputs (config files included), before any work."""
    from quantkit import files
    from quantkit.image_folders import IMAGE_SUFFIXES

    configs = [("the config file", path) for path in CONFIG_FILES]
    files.check_outputs(
        [(role, path) for role, path in outputs if path is not None and str(path) != "-"],
        [*((role, path) for role, path in inputs if path is not None), *configs],
        [(role, path) for role, path in folders if path is not None and role != "--inputs"],
        IMAGE_SUFFIXES,
        [(role, path) for role, path in folders if path is not None and role == "--inputs"],
    )


def _version(value: bool) -> None:
    if value:
        from quantkit.runtime import versions
        from quantkit.version import __version__

        found = versions()
        found.pop("quantkit", None)
        stdout.print(
            f"quantkit {__version__} (" + ", ".join(f"{k} {v}" for k, v in found.items()) + ")",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            callback=_version,
            help="Print the versions of quantkit, onnx, onnxruntime, numpy and Python, and exit.",
        ),
    ] = False,
) -> None:
    """Post-training INT8 quantization for ONNX vision models."""


# Where stderr is no terminal (a CI log), a line this often names the step at work: a convert that takes
# minutes is otherwise silent there until it ends, and looks hung.
HEARTBEAT_S = 60.0


@contextmanager
def _heartbeat(beat: Callable[[float], None], every: float, on: bool) -> Iterator[None]:
    """Calls beat(seconds since the start) every `every` seconds from a daemon thread, while `on`."""
    import threading
    import time

    if not on:
        yield
        return
    began, stop = time.perf_counter(), threading.Event()

    def run() -> None:
        while not stop.wait(every):
            beat(time.perf_counter() - began)

    thread = threading.Thread(target=run, name="quantkit-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A progress factory for the pipeline, drawn on stderr when it is a terminal; elsewhere (a CI log)
    a line every HEARTBEAT_S names the latest step not done yet, unless --quiet."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    level = VERBOSITY["level"]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=level < 0 or not stderr.is_terminal,
    ) as bars:
        unfinished: dict[int, tuple[str, int, float, list[int]]] = {}  # steps not (yet) done

        def beat(seconds: float) -> None:
            steps = dict(unfinished)  # a copy: the pipeline's thread adds and removes steps
            if steps:  # the latest step started: an outer one's count stands while it runs
                label, total, _, done = steps[max(steps)]
                line = f"still working after {_elapsed(seconds)}: {label}, {done[0]} of {total} step(s) done"
                bars.console.print(line, highlight=False, markup=False, soft_wrap=True)

        def start(label: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(label, total=total)
            began, done = time.perf_counter(), [0]
            unfinished[task] = (label, total, began, done)
            if level > 0:
                bars.console.print(f"{label}: {total} step(s)", highlight=False, markup=False)

            def advance(n: int) -> None:
                bars.advance(task, n)
                done[0] += n
                if done[0] >= total > done[0] - n:
                    unfinished.pop(task, None)
                    if level > 0:
                        seconds = time.perf_counter() - began
                        bars.console.print(f"{label}: done in {seconds:.1f} s", highlight=False, markup=False)

            return advance

        try:
            with _heartbeat(beat, HEARTBEAT_S, level >= 0 and not stderr.is_terminal):
                yield start
        finally:  # a search that stops early (the fallback once its target is met), or a failure
            for label, total, began, done in unfinished.values() if level > 0 else ():
                seconds = time.perf_counter() - began
                line = f"{label}: ended after {done[0]} of {total} step(s) in {seconds:.1f} s"
                bars.console.print(line, highlight=False, markup=False)


def _elapsed(seconds: float) -> str:
    """'45 s', '3 min 05 s'."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def write_text(path: Path, text: str) -> None:
    """A report to its file, atomically, or to stdout for '-'."""
    from quantkit import files

    if str(path) == "-":
        try:
            if STDOUT_LOST:  # closed at start (hq73 5: 'internal error (AttributeError)'), or lost since
                raise OSError(errno.EBADF, STDOUT_LOST["why"])
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as exc:  # the report was the output asked for: not delivered, a failure
            lose_stdout(exc, say=False)
            raise OutputError(
                f"cannot write the report to stdout ({STDOUT_LOST['why']}); give a file path"
            ) from None
    else:
        files.write_atomic(path, text.encode(errors="backslashreplace"))  # a file name in another encoding


def write_texts(reports: Sequence[tuple[Path | None, str]]) -> None:
    """Reports (path None: not asked for) to their files as one set, all or none (hq73 3: a full disk
    left the --json file without the --markdown one, under "nothing was written"); '-' to stdout."""
    from quantkit import files

    given = [(path, text) for path, text in reports if path is not None]
    for path, text in given:  # first: a report stdout cannot take leaves no file (hq76 4)
        if str(path) == "-":
            write_text(path, text)
    files.write_set([(p, text.encode(errors="backslashreplace")) for p, text in given if str(p) != "-"])


def step_summary_path() -> Path | None:
    """GitHub's step summary file, where shrink appends report.md."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    return Path(path) if path else None


def default_cache() -> Path | None:
    from quantkit.pipeline.shrink_cache import default_cache_dir

    return default_cache_dir()


def comma_names(text: str | None) -> tuple[str, ...]:
    """The names of a comma-separated option (--exclude-nodes, --exclude-op-types); empty ones dropped."""
    return as_names(text or "")


def exclusion_names(path: Path | None) -> tuple[str, ...]:
    """Node names from a --exclude-from file: one per line (a JSON string where the name needs one:
    reports.records.exclusion_entry); blank lines and comments ignored, a comment being a '#' that opens
    the line or follows white space (hq169 F5: a node named 'fc#1', which sensitivity writes as
    'fc#1  # Gemm, ...', read back as 'fc'; a line 'conv#x' kept the node 'conv' float)."""
    from quantkit import files

    if path is None:
        return ()
    try:
        text = files.read_text(path)
    except UnicodeDecodeError as exc:  # hq146 F8: "check the path" of a path that was right
        raise ConfigError(
            f"--exclude-from {path} is not text quantkit can read; save it as UTF-8 (or UTF-16 with a BOM), "
            "one node name per line"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read --exclude-from {path} ({exc.__class__.__name__}); check the path"
        ) from exc
    from quantkit.reports.records import exclusion_name

    names = []
    for at, line in enumerate(text.splitlines(), 1):
        try:
            names.append(exclusion_name(line))
        except ValueError as exc:
            raise ConfigError(f"--exclude-from {path}: line {at} {exc}") from None
    return tuple(name for name in names if name)
