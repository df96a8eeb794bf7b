"""The JSON records of what the commands report (outcomes' to_dict): every figure, in a fixed order, under
a versioned schema. Plain data: no I/O."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from quantkit.version import __version__

if TYPE_CHECKING:
    from quantkit.outcomes import (
        ComparisonResult,
        ConvertSummary,
        LatencyStats,
        SensitivityReport,
        ShrinkResult,
    )

REPORT_SCHEMA, SCHEMA = "quantkit-compare/1", "quantkit-shrink/1"


def _latency_dict(stats: LatencyStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {**{f"{n}_ms": getattr(stats, n) for n in ("p50", "p90", "p99", "mean")}, "runs": stats.runs}


# an output's figures in the comparison record, in this order (then its worst kind and image)
OUTPUT_FIELDS = (
    *("name", "sqnr_db", "cosine", "max_abs_error", "top1_agreement", "labels", "top5_overlap"),
    *("detection_recall", "detections", "boxes", "boxes_found", "boxes_extra", "boxes_borderline"),
    *("varying_sqnr_db", "noise_images", "selected", "probabilities"),
)

# what the numbers of labels (an ArgMax's class ids) say nothing in: the console and markdown show '-', the
# JSON null (hq137 F5: it gave an ArgMax's 9.09 dB and 9 'mostly noise' images of class-id arithmetic)
ELEMENT_FIGURES = ("sqnr_db", "cosine", "max_abs_error", "noise_images")


def comparison_record(result: ComparisonResult) -> dict[str, Any]:
    """Every figure of a comparison (ComparisonResult.to_dict makes it JSON-ready)."""

    def acc(a: Any) -> dict[str, Any] | None:
        return None if a is None else {"top1": a.top1, "top5": a.top5, "images": a.count}

    return {
        "schema": REPORT_SCHEMA,
        "reference": result.reference,
        "candidate": result.candidate,
        "images": result.num_images,
        "outputs": [
            {
                **{field: getattr(m, field) for field in OUTPUT_FIELDS},
                **(dict.fromkeys(ELEMENT_FIGURES) if m.labels else {}),  # of class ids: as the console, none
                "worst_kind": None
                if m.worst_kind is None
                else {"axis": m.worst_kind[0], "index": m.worst_kind[1], "sqnr_db": m.worst_kind[2]},
                "worst_image": m.worst_image
                and dict(zip(("index", "sqnr_db", "others_sqnr_db"), m.worst_image, strict=True)),
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


def sensitivity_record(result: SensitivityReport) -> dict[str, object]:
    return {
        "schema": "quantkit-sensitivity/1",
        "int8_output_sqnr_db": result.int8_output_sqnr_db,
        "num_images": result.num_images,
        "seconds": result.seconds,
        "settings": result.settings,
        "layers": [
            {
                "node": r.node,
                "op_type": r.op_type,
                "local_sqnr_db": r.local_sqnr_db,
                "output_sqnr_db_when_float": r.output_sqnr_db,
                "recovered": r.recovered,
                "float_with_it": list(r.with_it),
            }
            for r in result.layers
        ],
        "cumulative": [
            {
                "layers": [r.node for r in result.layers[:k]],
                "output_sqnr_db": db,
                "recovered": rec,
            }
            for k, db, rec in result.cumulative
        ],
        "warnings": list(result.warnings),
    }


def shrink_record(result: ShrinkResult) -> dict[str, Any]:
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
        "conversion": convert_record(result.convert),
        "warnings": list(dict.fromkeys((*result.warnings, *result.comparison.reference_findings))),  # printed
        "comparison": comparison_record(result.comparison),
        "settings": result.settings,
    }


def convert_record(summary: ConvertSummary) -> dict[str, Any]:
    """What convert did, as shrink's report.json and ConvertSummary.to_dict give it."""
    return {
        "opset_before": summary.opset_before,
        "opset_after": summary.opset_after,
        "quantized_by_type": summary.quantized_by_type,
        "folded_by_type": summary.folded_by_type,
        "float_nodes": sum(summary.float_by_reason.values()),
        "rebalanced": [{"tensor": r.tensor, "alpha": r.alpha} for r in summary.plan.rebalances],
        "bias_corrected_layers": len(summary.plan.input_means),
        "calibration_sqnr_db": {
            "plain": summary.corrections.sqnr_plain_db if summary.corrections else None,
            "final": dict(summary.smoke_sqnr_db),
            "samples": summary.samples,
        },
        "kept_float_by_fallback": [s.node for s in summary.fallback],
        "speed": None if summary.speed is None else dataclasses.asdict(summary.speed),
        "speed_plan": None if summary.speed_plan is None else dataclasses.asdict(summary.speed_plan),
        "target_findings": [dataclasses.asdict(f) for f in summary.target_findings],
    }
