"""The house: quantkit/docs/architecture.md's layer list is the import-linter contract, no two modules
share a base name, and no module grows past what a newcomer reads in one sitting."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "quantkit" / "docs" / "architecture.md"
MODULES = [p for p in (ROOT / "quantkit").rglob("*.py") if p.name != "__init__.py"]


def _documented_layers() -> list[str]:
    """The first column of the fenced block under '## Layers' (continuation lines start with spaces)."""
    block = GUIDE.read_text(encoding="utf-8").split("## Layers", 1)[1].split("```")[1]
    rows = [line for line in block.splitlines() if line.strip() and not line.startswith(" ")]
    return [re.split(r"\s{2,}", row.strip())[0] for row in rows]


def test_the_guide_lists_the_enforced_layers() -> None:
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    enforced = [layer.replace("quantkit.", "") for layer in contract["layers"]]
    assert _documented_layers() == enforced


def test_the_guide_stays_short() -> None:
    assert len(GUIDE.read_text(encoding="utf-8").splitlines()) < 250


def test_no_two_modules_share_a_base_name() -> None:
    twins = [name for name, n in Counter(p.name for p in MODULES).items() if n > 1]
    assert twins == [], [str(p.relative_to(ROOT)) for p in MODULES if p.name in twins]


def test_every_module_reads_in_one_sitting() -> None:
    long = {str(p.relative_to(ROOT)): n for p in MODULES if (n := len(p.read_text().splitlines())) >= 450}
    assert long == {}
