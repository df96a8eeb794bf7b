"""The console entry point: option defaults from config files, --print-config, and every error as one
line with its exit code (2 for bad input, 130 on Ctrl-C)."""

from __future__ import annotations

import errno
import io
import itertools
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import typer
import typer.core
import typer.main

from quantkit.cli.app import (
    CONFIG_FILES,
    LOUDNESS_FLAGS,
    RESULT_FILES,
    RESULT_ON_STDOUT,
    STDOUT_LOST,
    VERBOSITY,
    app,
    carries_result,
    lose_stdout,
    lost_result,
    say_stdout_lost,
    stderr,
    stdout,
)
from quantkit.cli.argv_checks import refuse_empty_paths, takes
from quantkit.cli.print_config import SETTINGS, print_config, setting_files
from quantkit.errors import ConfigError, QuantkitError
from quantkit.files import NOTING, WRITTEN
from quantkit.runtime import quiet_kernel_logs


def main() -> None:
    """Console entry point: one line and exit code 2 for every QuantkitError, 130 on Ctrl-C, 143 on
    SIGTERM (CI's cancel and timeout: hq71 F1), cleaned up as Ctrl-C; the caller's handler back after."""
    TERMINATED.clear()
    SAID.clear()
    WRITTEN.clear()  # an earlier run's in this process are not this one's
    NOTING.append(True)  # the lines below name what this run wrote and removed
    cleanup = sys.modules.get("quantkit.pipeline.shrink_cleanup")
    if cleanup is not None:
        cleanup.REMOVED.clear()  # nor what an earlier run removed
        cleanup.KEPT.clear()
    # a caller's choice (hq77 5: SIGTERM ignored; nohup ignores SIGHUP) stays
    ignored = {s for s in STOPPING if signal.getsignal(s) is signal.SIG_IGN}
    interrupt = signal.getsignal(signal.SIGINT)  # _stopped ignores it as it says its line
    previous = {s: signal.getsignal(s) if s in ignored else signal.signal(s, _terminate) for s in STOPPING}
    try:
        quiet_kernel_logs()  # this process and its workers are quantkit's
        _main()
    except KeyboardInterrupt:  # before _main's own handlers (the command group being built: CI's stop 68)
        _stopped()
    finally:
        NOTING.pop()  # an API call after it in this process notes nothing
        WRITTEN.clear()  # nor finds this run's paths there (an API test after a CLI test in one process)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.signal(signal.SIGINT, interrupt)


def _main() -> None:
    for stream in (sys.stdout, sys.stderr):  # a file name in another encoding: printed escaped (\udcff)
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    STDOUT_LOST.clear()  # what an earlier run in this process lost is not this one's
    closed = sys.stdout is None  # fd 1 closed at start (hq73 5: a result it carried lost, exit 0)
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the interpreter's own stream from here on)
    if sys.stderr is None:  # fd 2 closed: the lines are lost, the exit code says what happened
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    argv, loudness = _loudness(sys.argv[1:])
    if len(loudness) > 1:  # -qv was taken as neither (hq61), -q -v as the last (hq98 F3)
        _fail("--quiet and --verbose together: give one of them")
    VERBOSITY["level"] = loudness.pop() if loudness else 0
    plain = [a for a in argv if a != "--print-config"]
    RESULT_ON_STDOUT.clear()
    if plain and (len(plain) < len(argv) or carries_result(plain)):
        RESULT_ON_STDOUT.append(True)
    if closed:  # as a full one: an error where it carries the result, else a warning once the run is done
        lose_stdout(OSError(errno.EBADF, "it is closed"), say=False)  # (hq100 F13: none; hq105 F5: first,
        # it came before every error line too, and under -q, which prints nothing there)
    group = typer.main.get_command(app)  # built once: file defaults, --print-config and the run
    commands: dict[str, Any] = dict(getattr(group, "commands", {}))
    default_map: dict[str, dict[str, Any]] = {}  # the options config files give (set below)
    if os.environ.get("_QUANTKIT_COMPLETE"):  # the shell asks for completions: click answers and exits
        group.main(args=sys.argv[1:], prog_name="quantkit", complete_var="_QUANTKIT_COMPLETE")
    try:
        if not argv:  # bare `quantkit`: the help, and success
            with group.make_context("quantkit", ["--help"], resilient_parsing=True) as ctx:
                stdout.print(group.get_help(ctx), highlight=False, markup=False, soft_wrap=True)
            _lost(["--help"])
            return
        default_map = _file_defaults(commands, plain)
        if len(plain) < len(argv):
            print_config(commands, plain, default_map)
            _lost(["--print-config"])  # the settings are its result, whatever the command (hq98 F1)
            return
        effective = _with_file_results(commands, plain, default_map)  # hq124 F2: a file's json = path
        RESULT_ON_STDOUT[:] = [True] if carries_result(effective) else []  # before stdout's first line
        _say_file_options(commands, plain, default_map)  # (hq127 F3: its loss went unsaid)
        refuse_empty_paths(commands, plain)
        if closed:  # hq122 F9: a result stdout would carry is lost: said before the run, not after it
            _lost(effective)
        result = group.main(args=argv, prog_name="quantkit", standalone_mode=False, default_map=default_map)
        _lost(effective)
        if closed and not RESULT_ON_STDOUT and VERBOSITY["level"] >= 0:
            say_stdout_lost()
        if result == 130:  # click turns Ctrl-C into a return value when not in standalone mode
            raise KeyboardInterrupt
        if isinstance(result, int) and result:  # and typer.Exit(code) too: shrink's failed gate
            sys.exit(result)
    except QuantkitError as exc:
        removed = _drop_verdict(commands, plain, default_map, exc.exit_code)
        message = f"{exc}{_from_file(str(exc), plain, default_map)}{_removed_line(removed)}"
        stderr.print(f"error: {_one_line(message)}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _drop_verdict(commands, plain, default_map, 2)
        _stopped()
    except MemoryError:
        _drop_verdict(commands, plain, default_map, 2)
        _fail("out of memory; lower --batch-size or --num-images, or free memory" + _removed_line())
    except OSError as exc:  # the environment, not the input: a file vanished, a device failed
        _drop_verdict(commands, plain, default_map, 2)  # hq109 F3: the line said nothing of what went
        _fail(_os_error(exc) + _removed_line())
    except typer.Exit as exc:
        if exc.exit_code == 130:  # typer's own form of a Ctrl-C: the same line as ours
            _drop_verdict(commands, plain, default_map, 2)
            _stopped()
        _lost(plain)  # --version
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: unknown option, bad choice, missing argument
        usage = usage_message(exc, plain[0] if plain and plain[0] in commands else None)
        removed = _drop_verdict(commands, plain, default_map, 2)
        _fail(usage + _from_file(usage, plain, default_map) + _removed_line(removed))
    except Exception as exc:  # a bug in quantkit: still one line, the traceback on request
        if os.environ.get("QUANTKIT_DEBUG"):
            raise
        _drop_verdict(commands, plain, default_map, 2)
        _fail(
            f"internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); this is a quantkit "
            "bug: rerun with QUANTKIT_DEBUG=1 for the traceback and report it" + _removed_line()
        )


def _os_error(exc: OSError) -> str:
    """The line of an OSError no step turned into a QuantkitError: the environment, not the input."""
    if exc.errno == errno.EFBIG:  # hq73 12: `ulimit -f` was blamed on the disk
        return f"{exc.strerror or exc}: a file is larger than this shell lets a process write (ulimit -f)"
    if exc.errno == errno.ENAMETOOLONG:  # hq114 F10: an input's long name was blamed on the disk
        fix = "shorten the path, or a name in it (255 bytes at most)"
        return f"{exc.strerror or exc} ({exc.filename}): {fix}"
    if exc.filename:
        why = f"{exc.strerror or exc} ({exc.filename})"
        return f"{why}; check the path and that the disk is writable and not full"
    return (  # hq57 D(d): a write to the temporary folder failed, and nothing said where
        f"{exc.strerror or exc}; check that the output's disk and the temporary folder "
        f"({tempfile.gettempdir()}; TMPDIR sets it) are writable and not full"
    )


TERMINATED: list[int] = []  # the signal that ended the run, where one did
SAID: list[bool] = []  # whether the interrupt's line has been printed


def _stopped() -> NoReturn:
    """Ctrl-C (exit 130) or SIGTERM (143): one line; the run's own cleanup has already run. Files it had
    put in place whole before the signal (and that its cleanup kept) are named: hq85 F7, an interrupt
    just after the output had replaced an earlier one said only 'nothing partial was written'."""
    stopped = ("hung up" if TERMINATED[0] == SIGHUP else "terminated") if TERMINATED else "interrupted"
    kept = list(dict.fromkeys(str(path) for path in WRITTEN if path.exists()))
    done = f"; {', '.join(kept)} had been written whole before it" if kept else ""
    done += _removed_line()  # what shrink's cleanup, or entry's, removed of an earlier run
    for signum in (signal.SIGINT, *STOPPING):  # more Ctrl-Cs cut the line short, or said it twice
        signal.signal(signum, signal.SIG_IGN)  # (hq86 F5, hq87 F2); main puts the handlers back
    if not SAID:
        SAID.append(True)
        stderr.print(f"{stopped}; nothing partial was written{done}", highlight=False, soft_wrap=True)
    # CPython (3.8-3.13) marks a KeyboardInterrupt that ends any exec/eval of a string (dataclasses' and
    # namedtuple's generated methods) as unhandled even where it is caught, and `python -m` then dies by
    # SIGINT (exit -2) after this line; each string exec clears that mark first (Python/pythonrun.c)
    exec("None")
    sys.exit(128 + TERMINATED[0] if TERMINATED else 130)


# SIGTERM (CI's cancel and timeout) and SIGHUP (the terminal or ssh session closed: hq100 F5, exit 129 with
# no line, a model moved aside mid-write and never put back) end a run as Ctrl-C does
SIGHUP = getattr(signal, "SIGHUP", signal.SIGTERM)  # none on Windows
STOPPING = tuple(dict.fromkeys((signal.SIGTERM, SIGHUP)))


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM or SIGHUP as Ctrl-C: the run's cleanup runs (nothing partial, no earlier verdict left),
    exit 143 or 129."""
    TERMINATED.append(signum)
    raise KeyboardInterrupt


def _drop_verdict(
    commands: dict[str, Any], argv: list[str], default_map: dict[str, dict[str, Any]], code: int
) -> list[Path]:
    """Where shrink ends in exit 2, its --output-dir keeps no earlier run's verdict nor model (shrink_cleanup.
    drop_earlier_verdict), also for errors found before shrink() runs: usage, config files, gate values.
    Returns what this cleanup removed (shrink() says what its own removed in its error)."""
    if code != 2 or not argv or argv[0] != "shrink":
        return []
    try:  # what could be read of the command line, an unknown option or a bad value aside
        params = commands["shrink"].make_context("shrink", list(argv[1:]), resilient_parsing=True).params
    except Exception:  # a command line click cannot read at all: nothing is known of its folder
        params = {}
    given = params.get("output_dir") or default_map.get("shrink", {}).get("output_dir")
    from quantkit.pipeline.shrink_cleanup import CLEANED, drop_earlier_verdict

    cleaned = [str(path) for path in CLEANED]
    CLEANED.clear()
    if not given or str(Path(given)) in cleaned:  # shrink() ran and cleaned up its own (hq100 F1): not again
        return []
    # click reads no positional argument past an unknown option: every path the command line names
    # is kept (hq87 F1: `shrink --output-dir s s/m.int8.onnx --bogus` deleted its input)
    keep = [Path(a) for a in argv[1:] if a and not a.startswith("-")]  # the model's path among them
    try:
        return drop_earlier_verdict(Path(given), keep=keep)
    except (
        OSError
    ) as exc:  # a folder that cannot be locked or read (hq105 F12: a traceback hid the error line)
        from quantkit.pipeline.shrink_cleanup import KEPT, not_removed

        KEPT.append(not_removed(Path(given), exc))  # hq109 F5: said nowhere
        return []


def _removed_line(removed: list[Path] | None = None) -> str:
    """What a failed shrink removed of an earlier run's verdict (`removed`, or all this process's cleanups
    removed), as the end of its one line (hq100 F7: it said only "nothing was written"); '' where none."""
    cleanup = sys.modules.get("quantkit.pipeline.shrink_cleanup")  # not loaded: nothing was removed
    if cleanup is None:
        return ""
    line: str = cleanup.removed_line(cleanup.REMOVED if removed is None else removed)
    return line + "".join(cleanup.KEPT)  # what could not be removed, where no error message said it


def _from_file(message: str, argv: list[str], default_map: dict[str, dict[str, Any]]) -> str:
    """' (--x was set in quantkit.toml ...)' where the error names an option this run took from a config
    file and not from its command line (hunt38 F9: 'compare: --threads must be at least 1, got 0' for
    a top-level threads = 0 that suits the other commands, naming no file); '' otherwise."""
    used = default_map.get(argv[0], {}) if argv else {}
    for name in sorted(used):
        flag = "--" + name.replace("_", "-")
        if (flag in message or f"'{flag}'" in message) and flag not in argv:
            if name == "ray" and os.environ.get("RAY_ADDRESS"):  # hq109 F2: click ranks it over the files
                return ""
            key = flag.removeprefix("--")
            named = setting_files(argv[0], key)[-1:] or CONFIG_FILES  # hq128 F6: that file, not all read
            files = " or ".join(str(path) for path in named)
            tables = " / ".join(  # hq61: pyproject.toml's is [tool.quantkit.<command>]
                f"[tool.quantkit.{argv[0]}]" if path.name == "pyproject.toml" else f"[{argv[0]}]"
                for path in named
            )
            if not any(key in keys and not isinstance(keys[key], dict) for _, keys in SETTINGS):
                return f" ({flag} was set in {files}, in its {tables} table)"  # hq109 F10: told to use one
            return f" ({flag} was set in {files}; a {tables} table there sets it for this command alone)"
    return ""


def _say_file_options(
    commands: dict[str, Any], argv: list[str], default_map: dict[str, dict[str, Any]]
) -> None:
    """One line naming the config files a command takes options from, and which (none under --quiet); on
    stderr where stdout carries a report (`--json -`, `--markdown -`), which it broke for a parser (hunt38
    F4), else on stdout, beside the results (stderr keeps an error to one line)."""
    used = default_map.get(argv[0], {}) if argv else {}
    if not used or VERBOSITY["level"] < 0 or {"--help", "-h"} & set(argv):
        return
    options = {
        p.name: p.opts[0].lstrip("-") for p in commands[argv[0]].params if p.opts
    }  # json, not json-path
    names = ", ".join(sorted(options.get(name, name.replace("_", "-")) for name in used))
    files = ", ".join(str(path) for path in CONFIG_FILES)
    pairs = itertools.pairwise(argv)
    report = any(a in ("--json", "--markdown") and b == "-" for a, b in pairs) or any(
        a in ("--json=-", "--markdown=-") for a in argv
    )
    (stderr if report else stdout).print(
        f"options from {files}: {names} (flags given override them; --print-config shows each one's source)",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def usage_message(exc: typer.TyperException, command_name: str | None = None) -> str:
    """click's usage error as one clean line that points at the command's own help."""
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(text.split()).replace("Value error, ", "").rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    name = ctx.info_name if ctx is not None and ctx.parent is not None else command_name
    command = f"quantkit {name}" if name else "quantkit"
    return f"{message}; see `{command} --help`"


def _file_defaults(commands: dict[str, Any], argv: list[str]) -> dict[str, dict[str, Any]]:
    """Option defaults from [tool.quantkit] in ./pyproject.toml and quantkit.toml beside the model."""
    from quantkit.cli import config_files as cli_config

    options = {
        name: {p.opts[0].lstrip("-"): p.name for p in cmd.params if p.opts and p.opts[0].startswith("--")}
        for name, cmd in commands.items()
    }
    model = None
    if argv and argv[0] in commands:
        parsed = commands[argv[0]].make_context(argv[0], list(argv[1:]), resilient_parsing=True)
        found = parsed.params.get("model") or parsed.params.get("reference")
        model = Path(found) if found else None
    try:
        here = Path.cwd()
    except FileNotFoundError:  # hq73 9: 'No such file or directory; check that the output's disk ...'
        raise ConfigError("the current folder no longer exists; cd to an existing folder") from None
    found = cli_config.sources(here, model)
    CONFIG_FILES[:] = [path for path, _ in found]
    SETTINGS[:] = found
    numbers = {p.opts[0].lstrip("-") for cmd in commands.values() for p in cmd.params if _takes_number(p)}
    return cli_config.defaults(found, options, frozenset(numbers))


def _takes_number(param: Any) -> bool:
    """Whether a command's option is declared an int or a float (typer's type descriptor)."""
    return bool(param.opts) and (takes(param, int) or takes(param, float))


def _loudness(args: list[str]) -> tuple[list[str], set[int]]:
    """(the arguments without --quiet / --verbose, the levels they ask for: -1, 1). Short flags combine as
    click reads them: -qq, -qv, and the leading q / v letters of a group of letters such as -qo (hq98 F3:
    its -q was dropped). Not an argument with other characters (a value: --json -q.json, hq101 F1), nor
    anything after --."""
    kept: list[str] = []
    levels: set[int] = set()
    for k, arg in enumerate(args):
        if arg == "--":
            return [*kept, *args[k:]], levels
        if arg in LOUDNESS_FLAGS:
            levels.add(LOUDNESS_FLAGS[arg])
            continue
        grouped = arg[:1] == "-" and arg[1:].isascii() and arg[1:].isalpha()
        letters = len(arg) - len(arg[1:].lstrip("qv")) - 1 if grouped else 0
        levels.update(LOUDNESS_FLAGS[f"-{flag}"] for flag in arg[1 : 1 + letters])
        if not letters:
            kept.append(arg)  # '-' (stdout) and every other argument as given
        elif letters + 1 < len(arg):
            kept.append(f"-{arg[1 + letters :]}")
    return kept, levels


def _with_file_results(
    commands: dict[str, Any], argv: list[str], files: dict[str, dict[str, Any]]
) -> list[str]:
    """argv with the report files (--json, --markdown, --write-exclusions) config files give and argv does
    not: the result goes to them, not to stdout (app.carries_result reads the command line alone)."""
    command = commands.get(argv[0]) if argv else None
    extra: list[str] = []
    for param in command.params if command is not None else []:
        flag = param.opts[0] if param.opts else ""
        value = files.get(argv[0], {}).get(param.name)
        given = any(a in param.opts or a.startswith(f"{flag}=") for a in argv)
        if flag in RESULT_FILES.get(argv[0], ()) and value is not None and not given:
            extra += [flag, str(value)]
    return [*argv, *extra]


def _lost(argv: list[str]) -> None:
    """Exit 2 where stdout was lost with the run's result on it (app.lost_result)."""
    message = lost_result(argv)
    if message:
        _fail(message)


def _fail(message: str) -> NoReturn:
    stderr.print(f"error: {_one_line(message)}", highlight=False, soft_wrap=True, markup=False)
    sys.exit(2)


def _one_line(message: str) -> str:
    """A message whose path holds a line break, as one line (hq114 F10: it split the error in two)."""
    return message.replace("\r", "\\r").replace("\n", "\\n")
