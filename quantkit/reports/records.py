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
    """The top layers, one per line, for convert --exclude-from: the top `keep`, or fewer where the top
    layers kept float together measured best with fewer (result.cumulative; fewest on a tie). A PP-OCRv5
    recogniser's top 3 together measured 5.59 dB, below its top 1 alone (7.48 dB); all 3 were written."""
    measured = [(k, db) for k, db, _ in result.cumulative if k <= keep]
    top = min(keep, len(result.layers))
    best = result.best_together(keep)
    count = top if best is None else best
    header = (
        f"# quantkit sensitivity of {model}: the {count} layers whose float recovers the most output error"
    )
    if count < top:
        together = ", ".join(f"top {k}: {db:.2f} dB" for k, db in measured)
        header = (
            f"# quantkit sensitivity of {model}: the top {count} layer(s), not {keep}: kept float together "
            f"they measured best ({together})"
        )
    lines = [header]
    for row in result.layers[:count]:
        lines.append(f"{row.node}  # {row.op_type}, recovers {100 * row.recovered:.0f}% alone")
    return "\n".join(lines) + "\n"
