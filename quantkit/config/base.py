"""What every configuration module shares."""

from __future__ import annotations

import contextlib
import errno
import math
import os
from enum import Enum
from pathlib import Path
from typing import TypeVar

from quantkit.errors import ConfigError

E = TypeVar("E", bound=Enum)


SWITCHES = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}


def as_switch(value: object, option: str) -> bool:
    """value as a bool: True / False (or 1 / 0), or the CLI's words on / off (true / false, yes / no). Any
    other value is an error: hunt38 F1, bias_correction="off" was a non-empty string, so True, and the
    model's metadata recorded "off" beside a bias-corrected model."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in SWITCHES:
        return SWITCHES[value.strip().lower()]
    if type(value).__name__ == "bool_":  # numpy's
        return bool(value)
    raise ConfigError(f"{option} takes True or False (or 'on' / 'off'); got {value!r}")


def as_floats(value: object, option: str) -> tuple[float, ...]:
    """Numbers as floats: a sequence, one number, or the CLI's text ('123.7,116.3,103.5'); never a string
    read character by character (hunt38 F7: mean="128" became (1.0, 2.0, 8.0))."""
    parts: list[object]
    if isinstance(value, str):
        parts = list(value.split(","))
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        try:
            parts = list(value)  # type: ignore[call-overload]
        except TypeError:
            parts = [value]
    try:
        if any(isinstance(v, bool) or type(v).__name__ == "bool_" for v in parts):  # hq72 15: True as 1
            raise TypeError
        values = tuple(float(v) for v in parts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{option} takes comma-separated numbers like 123.7,116.3,103.5; got {value!r}"
        ) from None
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def as_size(value: object, option: str = "--input-size") -> tuple[int, int]:
    """(height, width) from the CLI's 'HxW' text or a pair of positive integers."""
    parts: list[object] = []
    if isinstance(value, str):
        parts = [p.strip() for p in value.lower().replace(",", "x").split("x")]  # a file's [16, 16] too
    elif not isinstance(value, (int, float)):
        try:
            parts = list(value)  # type: ignore[call-overload]
        except TypeError:
            parts = []
    try:
        size = tuple(int(p) for p in parts)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        size = ()
    exact = all(not isinstance(p, float) or p.is_integer() for p in parts)
    if len(size) != 2 or min(size) < 1 or not exact:
        raise ConfigError(
            f"{option} takes HxW like 224x224 (or a pair of integers), each at least 1; got {value!r}"
        )
    return size[0], size[1]


def as_types(value: object) -> tuple[str, ...]:
    """Op-type names as as_names reads them, each stripped: no op type holds white space (hq173 F6)."""
    return tuple(name.strip() for name in as_names(value))


def as_names(value: object) -> tuple[str, ...]:
    """Node or op-type names: a sequence of them (each as given), or one comma-separated string (as on the
    command line; each stripped)."""
    if isinstance(value, (bytes, bytearray)):  # hq72 12: iterated as numbers, 'nodes 99, 111, 110'
        raise ConfigError(f"node and op-type names take str, not bytes; got {value!r}")
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    # a list's names as given: a node's name may start or end with white space, as the quoted line of an
    # --exclude-from file gives it (hq172 F3: ' fc ' was stripped to 'fc', and no route could exclude it)
    return tuple(str(n) for n in value if str(n).strip())  # type: ignore[attr-defined]


def as_count(value: object, option: str) -> int:
    """A whole-number option: an int (not a bool), a numpy integer, or a float or text holding a whole
    number; anything else is an error (hunt38 F6: num_images=2.5 raised numpy's TypeError from inside
    the image selection, threads="2" a comparison's)."""
    if isinstance(value, bool):
        raise ConfigError(f"{option} takes a whole number; got {value!r}")
    if isinstance(value, int):
        return value
    if type(value).__name__.startswith(("int", "uint")) and hasattr(value, "item"):  # numpy's
        return int(value.item())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().removeprefix("-").isdigit():
        return int(value)
    raise ConfigError(f"{option} takes a whole number; got {value!r}")


def set_counts(config: object, *names: str, flag: str | None = None) -> None:
    """Each field `names` of the frozen dataclass `config` as a whole number (as_count), named by its flag
    (--field-name unless `flag` is given)."""
    for name in names:
        option = flag or "--" + name.replace("_", "-")
        object.__setattr__(config, name, as_count(getattr(config, name), option))


def set_names(config: object, *names: str) -> None:
    """Each field `names` of the frozen dataclass `config` as node names (as_names), or as op types
    (as_types) for exclude_op_types, the one field of op types: they hold no white space, node names may."""
    for name in names:
        read = as_types if name == "exclude_op_types" else as_names
        object.__setattr__(config, name, read(getattr(config, name)))


def set_switches(config: object, *names: str) -> None:
    """Each field `names` of the frozen dataclass `config` as a bool (as_switch), named by its flag."""
    for name in names:
        object.__setattr__(config, name, as_switch(getattr(config, name), "--" + name.replace("_", "-")))


def as_number(value: object, option: str) -> float:
    """One number as a float: an int or float (numpy's too) or text holding one; True, a sequence or nan
    is an error (hq72 15: min_sqnr=True was 1 dB, concat_range_ratio=nan passed its check)."""
    if type(value).__name__.startswith(("int", "uint", "float")) and hasattr(value, "item"):  # numpy's
        # a float32's own shortest digits: np.float32(0.3) is 0.3, not 0.30000001192092896
        value = value.item() if type(value).__name__.startswith(("int", "uint")) else str(value)
    number = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            number = float(value)
    if math.isnan(number):
        raise ConfigError(f"{option} takes one number; got {value!r}")
    return number


def set_floats(config: object, *names: str, flag: str | None = None) -> None:
    """Each field `names` of the frozen dataclass `config` that is set, as_number, named by its flag
    (--field-name unless `flag` is given; the API's 50 is the CLI's 50.0 in every report)."""
    for name in names:
        if (value := getattr(config, name)) is not None:
            option = flag or "--" + name.replace("_", "-")
            object.__setattr__(config, name, as_number(value, option))


def as_enum(kind: type[E], value: object, option: str) -> E:
    """value as a member of `kind` (members and their string values are accepted)."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise ConfigError(f"{option} must be one of {choices}; got {value!r}") from None


# Threads per core an inference may ask for. `--threads 10000` made onnxruntime start 10000 threads on a
# 2-core machine: calibrate ran 15 minutes before it was killed.
THREADS_PER_CORE = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container or taskset limits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: int, automatic: bool) -> None:
    """Refuse more threads than THREADS_PER_CORE per usable core here (automatic: 0 means all cores)."""
    cores = usable_cores()
    most = THREADS_PER_CORE * cores
    if threads > most:
        raise ConfigError(
            f"--threads {threads} is more than {THREADS_PER_CORE} per core of the {cores} here; "
            f"give at most {most}{', or 0 for all cores' if automatic else ''}"
        )


def as_path(value: object, name: str) -> Path:
    """An API path argument (hunt38 F6: None, bytes or "" raised pathlib's TypeError or ValueError). A
    result that stands for a file it wrote (a CalibrateSummary) gives that file, checked unchanged."""
    current = getattr(value, "current_table", None)
    if callable(current):
        value = current()
    if isinstance(value, (str, os.PathLike)) and isinstance(os.fspath(value), str) and str(value):
        path = Path(value)
        try:  # hq72 10: a NUL byte's ValueError, a name too long's OSError, raised bare from pathlib
            os.stat(path)
        except ValueError as exc:
            raise ConfigError(f"{name} {str(value)!r} is no path ({exc}); check it") from exc
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise ConfigError(f"{name}: {exc.strerror} ({path}); check the path") from exc
        return path
    raise ConfigError(f"{name} takes a path (a str or os.PathLike); got {_described(value)}")


def _described(value: object) -> str:
    """What was given instead of a path, in few words (s49: a model's bytes or ModelProto printed whole)."""
    kind, text = type(value).__name__, repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{kind} of {len(value)} bytes; write them to a file and pass its path"
    if kind == "ModelProto":
        return "an onnx.ModelProto; onnx.save it to a file and pass its path"
    return text if len(text) <= 60 else f"a {kind} ({text[:40]}...)"
