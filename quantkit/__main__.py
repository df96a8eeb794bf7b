"""`python -m quantkit` entry point."""

from __future__ import annotations

from quantkit.cli import main

main()
