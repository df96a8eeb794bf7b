"""The README's command reference is what --help prints today."""

from __future__ import annotations

import re

from tests.readme_reference import README, current, render


def _words(text: str) -> list[str]:
    """The text without box drawing and layout: a change of rich's frames is not a stale reference."""
    return re.sub(r"[│╭╮╰╯─━┃┏┓┗┛]", " ", text).split()


def test_the_command_reference_is_generated_from_help() -> None:
    documented = current(README.read_text(encoding="utf-8"))
    assert _words(documented) == _words(render()), (
        "the README's command reference is stale: run `make readme`"
    )
