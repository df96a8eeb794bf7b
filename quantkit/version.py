"""The version, in one place for the code (tests/test_api.py checks it equals pyproject.toml's)."""

__version__ = "0.1.0"
