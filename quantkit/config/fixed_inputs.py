"""Fixed values for a model's inputs beside the image (`--input-value NAME=V[,V...]`): RT-DETR, D-FINE and
DEIM's `orig_target_sizes`, PaddleDetection's `im_shape` and `scale_factor`. Every image sample gets the
same value, so images feed such a model as they feed a one-input model; the values are recorded with the
preprocessing (table, converted model) and compare reuses them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantkit.errors import ConfigError

OPTION = "--input-value"
EXAMPLE = "orig_target_sizes=640,640"
FLOAT32_MAX = float(np.finfo(np.float32).max)
EXACT_INTEGERS = 2**24  # whole numbers float32 holds exactly: samples are float32, cast to the input's type


@dataclass(frozen=True)
class FixedInput:
    """One input's value for every sample: `shape` is one sample's (the input's shape without its batch
    dimension; () for a scalar input), `values` its numbers in row-major order."""

    name: str
    shape: tuple[int, ...]
    values: tuple[float, ...]

    def rows(self, count: int) -> np.ndarray:
        """float32 [count, *shape]: the value once per sample (runtime.Session casts it to the input's
        type, and feeds a scalar input's [1] as the scalar)."""
        one = np.asarray(self.values, np.float32).reshape(self.shape)
        return np.ascontiguousarray(np.broadcast_to(one, (count, *self.shape)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FixedInput:
        shape = tuple(int(d) for d in data["shape"])
        values = tuple(float(v) for v in data["values"])
        if math.prod(shape) != len(values) or not all(abs(v) <= FLOAT32_MAX for v in values):
            raise ValueError(
                f"fixed input {data['name']!r} holds {len(values)} values for shape {list(shape)}"
            )
        return cls(str(data["name"]), shape, values)


def parse_value(text: str) -> tuple[str, tuple[float, ...]]:
    """'NAME=V[,V...]' -> (NAME, values): the name is all before the last '=' (an input may be named
    'a=b'), as it is; a bad form or a value that is not a finite number raises."""
    name, sep, numbers = text.rpartition("=")
    if not sep or not name or not numbers.strip():
        raise ConfigError(f"{OPTION} takes NAME=V[,V...] (e.g. {EXAMPLE}); got {text!r}")
    try:
        values = tuple(float(v) for v in numbers.split(","))
    except ValueError:
        raise ConfigError(
            f"{OPTION} {name}= takes numbers separated by commas (e.g. {EXAMPLE}); got {numbers!r}"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{OPTION} {name}= takes finite numbers; got {numbers!r}")
    return name, values


def given_values(items: Any) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The forms the CLI and the Python API give ('NAME=V,...' strings, one or a list of them; {name:
    numbers or 'V,...'}; (name, numbers) pairs) as (name, values) pairs in the order given; a name given
    twice, or a form none of these, raises."""
    if isinstance(items, str):
        items = [items]
    elif isinstance(items, dict):
        items = list(items.items())
    pairs: list[tuple[str, tuple[float, ...]]] = []
    for item in items or ():
        pairs.append(parse_value(item) if isinstance(item, str) else _pair(item))
    names = [name for name, _ in pairs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{OPTION} gives {twice[0]!r} twice; give each input once")
    return tuple(pairs)


def _pair(item: Any) -> tuple[str, tuple[float, ...]]:
    """(name, numbers) from the API: numbers a number, a sequence or array of them, or 'V,...'."""
    form = f"input_values takes {{name: numbers}}, e.g. {{'orig_target_sizes': [640, 640]}}; got {item!r}"
    if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str):
        raise ConfigError(form)
    name, values = item
    if values is None or isinstance(values, bool):
        raise ConfigError(form)
    if isinstance(values, str):
        return parse_value(f"{name}={values}")
    try:
        numbers = np.asarray(values, np.float64).ravel()
    except (TypeError, ValueError):
        raise ConfigError(form) from None
    if numbers.size == 0:
        raise ConfigError(form)
    return parse_value(f"{name}={','.join(repr(float(v)) for v in numbers)}")


def values_text(values: Sequence[float]) -> str:
    """Values as given: whole numbers without a decimal point (16777217, not 1.67772e+07)."""
    return ",".join(str(int(v)) if v.is_integer() and abs(v) < 1e18 else repr(v) for v in values)


def resolve(
    given: Sequence[tuple[str, tuple[float, ...]]],
    image: str,
    inputs: Sequence[tuple[str, tuple[int | None, ...], str]],
) -> tuple[FixedInput, ...]:
    """The given values checked against the model's inputs (name, shape, numpy dtype name), in the
    model's input order. `image` is the input the images feed. Each value fills one sample's shape (the
    input's without its batch dimension, or the whole of a scalar's); a dynamic dimension there takes the
    count given (a 1-D sample only); each value fits the input's type as float32 samples carry it."""
    specs = {name: (shape, dtype) for name, shape, dtype in inputs}
    values = dict(given)
    check_names(values, list(specs))
    if image in values:
        raise ConfigError(f"{OPTION} names {image!r}, the input the images feed; give values for the others")
    batch = specs[image][0][0] if image in specs and specs[image][0] else None
    return tuple(_fixed(name, *specs[name], values[name], batch) for name in specs if name in values)


def check_names(given: Iterable[str], inputs: Sequence[str]) -> None:
    """Raises where a name given is not one of the model's `inputs`."""
    for name in given:
        if name not in inputs:
            known = ", ".join(repr(i) for i in inputs) or "none"
            raise ConfigError(
                f"{OPTION} names {name!r}, which is not an input of the model (inputs: {known})"
            )


def _fixed(
    name: str, shape: tuple[int | None, ...], dtype: str, values: tuple[float, ...], batch: int | None
) -> FixedInput:
    declared = ",".join("?" if d is None else str(d) for d in shape)
    if shape and shape[0] not in (None, 1, batch):
        raise ConfigError(
            f"input {name!r} [{declared}] has no batch dimension like the image input's: quantkit gives "
            "each image its value along the first dimension; export the model with one there ([?,...] or "
            "[1,...])"
        )
    sample = list(shape[1:])
    if sample.count(None) == 1 and len(sample) == 1:
        sample = [len(values)]
    if None in sample or math.prod(d or 0 for d in sample) != len(values):
        count = "a fixed number of" if None in sample else str(math.prod(d or 0 for d in sample))
        raise ConfigError(
            f"{OPTION} {name}= gives {len(values)} value(s); input {name!r} [{declared}] takes {count} "
            "values an image (its shape without the batch dimension)"
        )
    _check_fits(name, dtype, values)
    return FixedInput(name, tuple(int(d) for d in sample if d is not None), values)


def _check_fits(name: str, dtype: str, values: tuple[float, ...]) -> None:
    """Each value is one the input's type holds, fed exactly through float32 samples; else one line."""
    given = f"{OPTION} {name}= gives {values_text(values)}"
    if dtype == "bool":
        if any(v not in (0.0, 1.0) for v in values):
            raise ConfigError(f"{given}; input {name!r} is bool: give 0 or 1 (false or true)")
        return
    kind: np.dtype[Any] = np.dtype(dtype or "float32")
    if np.issubdtype(kind, np.integer):
        limits = np.iinfo(kind.name)
        low, high = max(int(limits.min), -EXACT_INTEGERS), min(int(limits.max), EXACT_INTEGERS)
        if not all(v.is_integer() for v in values):
            raise ConfigError(f"{given}; input {name!r} is {kind.name}: give whole numbers")
        if not all(low <= v <= high for v in values):
            raise ConfigError(
                f"{given}; input {name!r} is {kind.name}: give whole numbers from {low} to {high} (quantkit "
                "feeds them through float32, exact to 2^24)"
            )
        return
    top = float(np.finfo(kind).max) if np.issubdtype(kind, np.floating) else FLOAT32_MAX
    if not all(abs(v) <= min(top, FLOAT32_MAX) for v in values):
        raise ConfigError(
            f"{given}; input {name!r} is {kind.name}: give values within +-{min(top, FLOAT32_MAX):g}"
        )
