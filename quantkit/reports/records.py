"""The JSON records (versioned schemas) of compare, sensitivity and shrink, and sensitivity's exclusions
file."""

from __future__ import annotations

from typing import Any

from quantkit.outcomes import ComparisonResult, SensitivityReport, ShrinkResult


def comparison_dict(result: ComparisonResult) -> dict[str, Any]:
    """compare's JSON record (ComparisonResult.to_dict)."""
    return result.to_dict()


def sensitivity_dict(result: SensitivityReport) -> dict[str, Any]:
    """sensitivity's JSON record (SensitivityReport.to_dict)."""
    return result.to_dict()


def shrink_dict(result: ShrinkResult) -> dict[str, Any]:
    """shrink's report.json (ShrinkResult.to_dict)."""
    return result.to_dict()


def exclusions_file(result: SensitivityReport, keep: int, model: str) -> str:
    """The top `keep` layers, one per line, for convert --exclude-from."""
    lines = [
        f"# quantkit sensitivity of {model}: the {keep} layers whose float recovers the most output error"
    ]
    for row in result.layers[:keep]:
        lines.append(f"{row.node}  # {row.op_type}, recovers {100 * row.recovered:.0f}% alone")
    return "\n".join(lines) + "\n"
