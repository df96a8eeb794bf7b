"""`quantkit shrink --html`: one self-contained HTML page (inline SVG, no script, no network) with the
pictures people would rather look at than read: per-layer error, activation ranges against the chosen
clipping, and the latency distributions. Hand-written SVG: a plotting library would add a dependency for
three bar charts."""

from __future__ import annotations

import math
from html import escape

from quantkit.outcomes import ShrinkResult
from quantkit.reports.formats import decibels, shrink_warnings, verdict
from quantkit.strict_json import home_short
from quantkit.version import __version__

WIDTH, ROW, LABEL = 900, 16, 260
STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; max-width: 960px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.pass { color: #16794a; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
svg text { font: 11px monospace; fill: #333; }
.note { color: #555; }
"""


def render(result: ShrinkResult) -> str:
    headline = verdict(result)
    style = {"PASS": "pass", "FAIL": "fail"}.get(headline, "note")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>quantkit shrink: {headline}</title><style>{STYLE}</style></head><body>",
        f'<h1>quantkit shrink: <span class="{style}">{headline}</span></h1>',
        f"<p><code>{escape(home_short(result.model))}</code> &rarr; "
        f"<code>{escape(home_short(result.output))}</code></p>",
        _gates(result),
        *(f'<p class="fail">warning: {escape(line)}</p>' for line in shrink_warnings(result)),
        _summary(result),
        "<h2>Per-layer error</h2>",
        '<p class="note">SQNR of each quantizable layer\'s output when only that layer is quantized (whether '
        "or not the model written keeps it float), on the "
        "calibration table's samples (rebalancing off). Short bars are the layers to look at first; "
        "<code>quantkit sensitivity</code> measures what keeping each one float recovers.</p>",
        _layer_chart(result.layer_sqnr_db),
        "<h2>Activation ranges and clipping</h2>",
        '<p class="note">Grey: the range observed in calibration. Blue: the range quantized (what the range '
        "method kept); values outside it saturate.</p>",
        _range_chart(result.ranges),
        "<h2>Latency</h2>",
        _latency_chart(result.comparison.latency_samples_ms),
        f'<p class="note">quantkit {escape(__version__)}</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _gates(result: ShrinkResult) -> str:
    if not result.gates:
        return "<p>No gates were set: report only.</p>"
    rows = "".join(
        f"<tr><td>{escape(g.name)}</td><td>{_num(g.measured)}</td><td>{g.limit:g}</td><td>{escape(g.unit)}</td>"
        f'<td class="{"pass" if g.passed else "fail"}">{"pass" if g.passed else "FAIL"}</td></tr>'
        for g in result.gates
    )
    head = "".join(f"<th>{h}</th>" for h in ("gate", "measured", "limit", "unit", "result"))
    return f"<table><tr>{head}</tr>{rows}</table>"


def _summary(result: ShrinkResult) -> str:
    c = result.comparison
    rows = []
    if c.top1_delta is not None and c.reference_accuracy and c.candidate_accuracy:
        rows.append(
            (
                "top-1 FP32 / INT8",
                f"{100 * c.reference_accuracy.top1:.2f}% / {100 * c.candidate_accuracy.top1:.2f}%",
            )
        )
    for m in c.outputs:
        if not m.labels:  # of label numbers: the agreement below says it
            rows.append((f"{m.name} SQNR", decibels(m.sqnr_db)))
        if m.top1_agreement is not None:
            rows.append((f"{m.name} top-1 agreement", f"{100 * m.top1_agreement:.2f}%"))
    if c.speedup is not None:
        rows.append(("speedup (p50)", f"{c.speedup:.2f}x"))
    rows.append(("size", f"{c.reference_bytes / 1e6:.2f} MB &rarr; {c.candidate_bytes / 1e6:.2f} MB"))
    body = "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _svg(height: int, body: list[str]) -> str:
    return (
        f'<svg width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">' + "".join(body) + "</svg>"
    )


def _layer_chart(layers: tuple[tuple[str, str, float], ...]) -> str:
    if not layers:
        return "<p>No layer measured.</p>"
    finite = [db for _, _, db in layers if math.isfinite(db)]
    top = max([*finite, 40.0])
    span = WIDTH - LABEL - 60
    body = []
    for i, (node, op, db) in enumerate(layers):
        y = i * ROW
        value = top if not math.isfinite(db) else max(db, 0.0)
        colour = "#b3261e" if value < 15 else "#e0a100" if value < 25 else "#3b7dd8"
        body.append(f'<text x="0" y="{y + 12}">{escape(_short(node))} ({escape(op)})</text>')
        body.append(_rect(LABEL, y + 2, span * value / top, ROW - 4, colour))
        body.append(f'<text x="{LABEL + span * value / top + 4:.1f}" y="{y + 12}">{_num(db)} dB</text>')
    return _svg(len(layers) * ROW, body)


def _range_chart(ranges: tuple[tuple[str, float, float, float, float], ...]) -> str:
    if not ranges:
        return "<p>No activation quantized.</p>"
    span = WIDTH - LABEL - 90
    body = []
    for i, (tensor, lo_seen, hi_seen, lo, hi) in enumerate(ranges):
        y = i * ROW
        left, right = min(lo_seen, lo, 0.0), max(hi_seen, hi, 0.0)
        scale = span / max(right - left, 1e-12)

        def x(v: float, left: float = left, scale: float = scale) -> float:
            return LABEL + (v - left) * scale

        kept = (hi - lo) / max(hi_seen - lo_seen, 1e-12)
        body.append(f'<text x="0" y="{y + 12}">{escape(_short(tensor))}</text>')
        body.append(_rect(x(lo_seen), y + 3, x(hi_seen) - x(lo_seen), ROW - 6, "#ccc"))
        body.append(_rect(x(lo), y + 6, max(x(hi) - x(lo), 1), ROW - 12, "#3b7dd8"))
        body.append(
            f'<line x1="{x(0.0):.1f}" x2="{x(0.0):.1f}" y1="{y + 1}" y2="{y + ROW - 1}" stroke="#222"/>'
        )
        body.append(f'<text x="{LABEL + span + 6}" y="{y + 12}">{100 * min(kept, 9.99):.0f}% kept</text>')
    return _svg(len(ranges) * ROW, body)


def _latency_chart(samples: tuple[tuple[float, ...], ...]) -> str:
    if len(samples) != 2 or not samples[0] or not samples[1]:
        return "<p>No latency samples.</p>"
    everything = [*samples[0], *samples[1]]
    low, high = min(everything), max(everything)
    bins = 40
    width = (high - low) / bins or 1.0
    counts = [[0] * bins for _ in samples]
    for k, series in enumerate(samples):
        for v in series:
            counts[k][min(int((v - low) / width), bins - 1)] += 1
    tallest = max(max(c) for c in counts)
    height, plot = 220, WIDTH - 80
    bar = plot / bins
    body = []
    for k, (colour, name) in enumerate((("#999", "FP32"), ("#3b7dd8", "INT8"))):
        for b, count in enumerate(counts[k]):
            h = (height - 40) * count / tallest
            body.append(
                f'<rect x="{40 + b * bar + k * bar / 2:.1f}" y="{height - 20 - h:.1f}" width="{bar / 2:.1f}" '
                f'height="{h:.1f}" fill="{colour}"/>'
            )
        median = sorted(samples[k])[len(samples[k]) // 2]
        body.append(f'<text x="{40 + k * 160}" y="12" fill="{colour}">{name}: p50 {median:.2f} ms</text>')
    body.append(f'<text x="40" y="{height - 4}">{low:.2f} ms</text>')
    body.append(f'<text x="{WIDTH - 120}" y="{height - 4}">{high:.2f} ms</text>')
    return _svg(height, body)


def _rect(x: float, y: float, width: float, height: float, fill: str) -> str:
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{fill}"/>'


def _short(name: str, limit: int = 36) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
