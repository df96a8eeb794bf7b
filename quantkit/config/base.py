"""What every configuration module shares."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from quantkit.errors import ConfigError

E = TypeVar("E", bound=Enum)


def as_enum(kind: type[E], value: object, option: str) -> E:
    """value as a member of `kind` (members and their string values are accepted)."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise ConfigError(f"{option} must be one of {choices}; got {value!r}") from None
