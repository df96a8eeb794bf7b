"""convert's speed lines as the CLI prints them (rich, as reports.console): what the speed-aware plan
tried and kept, and the written model's speed against FP32."""

from __future__ import annotations

from rich.text import Text

from quantkit.outcomes import Speed, SpeedPlan
from quantkit.reports.formats import speed_line


def speed_plan_text(plan: SpeedPlan | None) -> Text:
    """Starts as the speed line does ("speed on this CPU:"): both are timing, read together (but for
    --prefer accuracy's placement, which nothing timed)."""
    if plan is None:
        return Text("")
    if plan.plain_speedup is None:  # --prefer accuracy's placement (pipeline.speed_step.more_accurate)
        full, kept = plan.sqnr_db or (0.0, 0.0)
        return Text(
            "--prefer accuracy: Q/DQ on the inputs of weighted layers only, every op between them float: "
            f"{kept:.2f} dB on the calibration samples, against {full:.2f} dB with Q/DQ around every op "
            "(chosen with no timing)\n"
        )
    how = "1 thread, interleaved on a calibration sample"
    if plan.recalled is not None:
        how += f"; as measured before, kept in {plan.recalled} (QUANTKIT_SPEED_CACHE=off measures again)"
    head, plain = "speed on this CPU: Q/DQ on the inputs of weighted layers only", plan.plain_speedup
    if plan.placement is not None and plan.refined_speedup is None:  # tried, the plain plan stood
        return Text(f"{head} was tried, not faster as a whole ({plain:.2f}x FP32 as planned; {how})\n")
    if plan.placement is not None:
        ratios = f"{plan.placement}: {plain:.2f}x -> {plan.refined_speedup:.2f}x FP32"
        return Text(f"{head}, every op between them float ({ratios}; {how})\n")
    if plan.refined_speedup is None:
        return Text(
            "speed on this CPU: ops whose int8 form profiled slower were tried in float, not faster as a "
            f"whole ({plan.plain_speedup:.2f}x FP32 as planned; {how})\n"
        )
    most = "; kept over the fastest plan, more accurate at nearly its speed: {:.1f} -> {:.1f} dB on the"
    most += " calibration samples"
    gain = most.format(*plan.sqnr_db) if plan.sqnr_db is not None else ""
    return Text(
        f"speed on this CPU: {len(plan.floated)} op(s) kept float where their int8 form profiled slower "
        f"({plan.plain_speedup:.2f}x -> {plan.refined_speedup:.2f}x FP32{gain}; {how})\n"
    )


def speed_text(speed: Speed | None) -> Text:
    """The speed line; a slower model's warning is among the summary's (convert_notes.slower_kept)."""
    return Text("") if speed is None else Text(speed_line(speed))
