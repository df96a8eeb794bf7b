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
        if math.prod(shape) != len(values) or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"fixed input {data['name']!r} holds {len(values)} values for shape {list(shape)}"
            )
        return cls(str(data["name"]), shape, values)


def parse_value(text: str) -> tuple[str, tuple[float, ...]]:
    """'NAME=V[,V...]' -> (NAME, values); a bad form or a value that is not a finite number raises."""
    name, sep, numbers = text.partition("=")
    name = name.strip()
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
    """The Python API's forms ({name: numbers}, pairs, or 'NAME=V,...' strings) as (name, values) pairs
    in the order given; a name given twice raises."""
    if isinstance(items, dict):
        items = list(items.items())
    pairs: list[tuple[str, tuple[float, ...]]] = []
    for item in items or ():
        if isinstance(item, str):
            pairs.append(parse_value(item))
            continue
        name, values = item
        numbers = [values] if isinstance(values, (int, float)) else list(np.asarray(values).ravel())
        pairs.append(parse_value(f"{name}={','.join(repr(float(v)) for v in numbers)}"))
    names = [name for name, _ in pairs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{OPTION} gives {twice[0]!r} twice; give each input once")
    return tuple(pairs)


def resolve(
    given: Sequence[tuple[str, tuple[float, ...]]],
    image: str,
    inputs: Sequence[tuple[str, tuple[int | None, ...], bool]],
) -> tuple[FixedInput, ...]:
    """The given values checked against the model's inputs (name, shape, integer type), in the model's
    input order. `image` is the input the images feed. Each value fills one sample's shape (the input's
    without its batch dimension, or the whole of a scalar's); a dynamic dimension there takes the count
    given (a 1-D sample only); an integer input takes whole numbers."""
    shapes = {name: (shape, integer) for name, shape, integer in inputs}
    values = dict(given)
    check_names(values, list(shapes))
    if image in values:
        raise ConfigError(f"{OPTION} names {image!r}, the input the images feed; give values for the others")
    return tuple(_fixed(name, *shapes[name], values[name]) for name in shapes if name in values)


def check_names(given: Iterable[str], inputs: Sequence[str]) -> None:
    """Raises where a name given is not one of the model's `inputs`."""
    for name in given:
        if name not in inputs:
            known = ", ".join(inputs) or "none"
            raise ConfigError(
                f"{OPTION} names {name!r}, which is not an input of the model (inputs: {known})"
            )


def _fixed(name: str, shape: tuple[int | None, ...], integer: bool, values: tuple[float, ...]) -> FixedInput:
    sample = list(shape[1:])
    if sample.count(None) == 1 and len(sample) == 1:
        sample = [len(values)]
    if None in sample or math.prod(d or 0 for d in sample) != len(values):
        count = "a fixed number of" if None in sample else str(math.prod(d or 0 for d in sample))
        declared = ",".join("?" if d is None else str(d) for d in shape)
        raise ConfigError(
            f"{OPTION} {name}= gives {len(values)} value(s); input {name!r} [{declared}] takes {count} "
            "values an image (its shape without the batch dimension)"
        )
    if integer and not all(v == int(v) for v in values):
        raise ConfigError(f"{OPTION} {name}= gives a fraction; the input holds integers")
    return FixedInput(name, tuple(int(d) for d in sample if d is not None), values)
