"""The JSON records (versioned schemas) of compare, sensitivity and shrink, and sensitivity's exclusions
file."""

from __future__ import annotations

from typing import Any

from quantkit import __version__
from quantkit.reports.formats import finite_or_text
from quantkit.results import (
    ComparisonResult,
    LatencyStats,
    SensitivityReport,
    ShrinkResult,
)

REPORT_SCHEMA = "quantkit-compare/1"

SCHEMA = "quantkit-shrink/1"


def _latency_dict(stats: LatencyStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {
        "p50_ms": stats.p50,
        "p90_ms": stats.p90,
        "p99_ms": stats.p99,
        "mean_ms": stats.mean,
        "runs": stats.runs,
    }


def comparison_dict(result: ComparisonResult) -> dict[str, Any]:
    """Every figure of a comparison, JSON-ready (non-finite numbers as strings)."""

    def acc(a: Any) -> dict[str, Any] | None:
        return None if a is None else {"top1": a.top1, "top5": a.top5, "images": a.count}

    return {
        "schema": REPORT_SCHEMA,
        "reference": result.reference,
        "candidate": result.candidate,
        "images": result.num_images,
        "outputs": [
            {
                "name": m.name,
                "sqnr_db": finite_or_text(m.sqnr_db),
                "cosine": finite_or_text(m.cosine),
                "max_abs_error": finite_or_text(m.max_abs_error),
                "top1_agreement": m.top1_agreement,
                "top5_overlap": m.top5_overlap,
                "detection_recall": m.detection_recall,
                "detections": m.detections,
                "boxes": m.boxes,
                "boxes_found": m.boxes_found,
                "boxes_extra": m.boxes_extra,
                "boxes_borderline": m.boxes_borderline,
            }
            for m in result.outputs
        ],
        "reference_findings": list(result.reference_findings),
        "warnings": list(result.warnings),
        "accuracy": {
            "reference": acc(result.reference_accuracy),
            "candidate": acc(result.candidate_accuracy),
            "top1_delta_points": None if result.top1_delta is None else 100 * result.top1_delta,
        },
        "latency": {
            "reference": _latency_dict(result.reference_latency),
            "candidate": _latency_dict(result.candidate_latency),
            "speedup_p50": result.speedup,
        },
        "size": {
            "reference_bytes": result.reference_bytes,
            "candidate_bytes": result.candidate_bytes,
            "ratio": result.size_ratio,
        },
        "settings": result.settings,
        "environment": result.environment,
        "candidate_conversion": result.candidate_conversion,
    }


def sensitivity_dict(result: SensitivityReport) -> dict[str, object]:
    return {
        "schema": "quantkit-sensitivity/1",
        "int8_output_sqnr_db": finite_or_text(result.int8_output_sqnr_db),
        "num_images": result.num_images,
        "seconds": result.seconds,
        "settings": result.settings,
        "layers": [
            {
                "node": r.node,
                "op_type": r.op_type,
                "local_sqnr_db": finite_or_text(r.local_sqnr_db),
                "output_sqnr_db_when_float": finite_or_text(r.output_sqnr_db),
                "recovered": r.recovered,
            }
            for r in result.layers
        ],
        "cumulative": [
            {
                "layers": [r.node for r in result.layers[:k]],
                "output_sqnr_db": finite_or_text(db),
                "recovered": rec,
            }
            for k, db, rec in result.cumulative
        ],
    }


def shrink_dict(result: ShrinkResult) -> dict[str, Any]:
    summary = result.convert
    corrections = summary.corrections
    return {
        "schema": SCHEMA,
        "quantkit_version": __version__,
        "passed": result.passed,
        "gates": [
            {"name": g.name, "measured": g.measured, "limit": g.limit, "unit": g.unit, "passed": g.passed}
            for g in result.gates
        ],
        "model": result.model,
        "output": result.output,
        "calibration": {
            "table": result.table,
            "cache_hit": result.cache_hit,
            "seconds": result.calibration_seconds,
            "images": result.settings.get("calibration_images"),
            "count": result.settings.get("calibration_count"),
            "set_sha256": result.settings.get("calibration_set_sha256"),
        },
        "conversion": {
            "opset_before": summary.opset_before,
            "opset_after": summary.opset_after,
            "quantized_by_type": summary.quantized_by_type,
            "folded_by_type": summary.folded_by_type,
            "float_nodes": sum(summary.float_by_reason.values()),
            "rebalanced": [{"tensor": r.tensor, "alpha": r.alpha} for r in summary.plan.rebalances],
            "bias_corrected_layers": len(summary.plan.input_means),
            "calibration_sqnr_db": {
                "plain": corrections.sqnr_plain_db if corrections else None,
                "final": dict(summary.smoke_sqnr_db),
            },
            "kept_float_by_fallback": [s.node for s in summary.fallback],
        },
        "warnings": list(result.warnings),
        "comparison": comparison_dict(result.comparison),
        "settings": result.settings,
    }


def exclusions_file(result: SensitivityReport, keep: int, model: str) -> str:
    """The top `keep` layers, one per line, for convert --exclude-from."""
    lines = [
        f"# quantkit sensitivity of {model}: the {keep} layers whose float recovers the most output error"
    ]
    for row in result.layers[:keep]:
        lines.append(f"{row.node}  # {row.op_type}, recovers {100 * row.recovered:.0f}% alone")
    return "\n".join(lines) + "\n"
