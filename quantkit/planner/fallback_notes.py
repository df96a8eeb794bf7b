"""The note convert gives where its --min-sqnr search (planner.fallback) ended below the floor asked for."""

from __future__ import annotations

import math
from collections.abc import Mapping

from quantkit.results import FallbackStep


def short_of_target(
    target_db: float,
    max_layers: int,
    start_db: float | None,
    steps: list[FallbackStep],
    written: Mapping[str, float] | None = None,
    final_db: float | None = None,
    placed: str | None = None,
) -> tuple[str, ...]:
    """A note where the --min-sqnr search ended below target_db (no layer lifted the output further, or
    max_layers were float) and the model written still measures below it (written: its SQNR per output on
    the calibration samples, the smoke test's; the speed plan may have lifted it since): the model is
    written, but not to the floor asked for. final_db: its --min-sqnr figure where the floor's search (the
    worst output's) ran last. placed: the placement the model was written with after the search, where
    it is another (SpeedPlan.placement: Q/DQ on the weighted layers' inputs only)."""
    reached = (steps[-1].sqnr_db if steps else start_db) if final_db is None else final_db
    if start_db is None or reached is None or not target_db or reached >= target_db:
        return ()
    if final_db is None and written and min(written.values()) >= target_db:
        return ()
    measured = f"{reached:.2f} dB" if math.isfinite(reached) else "NaN or Inf outputs"
    limit = f"at most {max_layers}" if len(steps) <= max_layers else f"past {max_layers} for convert's floor"
    one = written and (final_db is None or len(written) == 1)  # hq90 F4: a floor's 10.86 dB stood alone
    final = min(written.values()) if written and one else reached
    pooled = f" (the model written: {final:.2f} dB in the smoke test, which pools each output's values)"
    since = pooled if abs(final - reached) >= 0.05 else ""
    # hq80 2: a search stopped short of the limit (no layer lifted it further) was told to raise it
    more = "raise --max-float-layers, " if len(steps) >= max_layers else "no further layer float lifted it; "
    if placed and len(steps) < max_layers:  # hq171 F2: a transformer written inputs-only, 41.05 dB, where
        more = (  # one MatMul float lifted it to 43.8: the search had measured the Q/DQ-everywhere plan
            "the search measured the plan with Q/DQ everywhere, and the model is written with Q/DQ on the "
            "weighted layers' inputs only, where a layer kept float may lift it further; "
        )
    return (  # hunt45: 14.70 dB quoted where the speed-aware plan had lifted the model written to 20.3 dB
        f"--min-sqnr {target_db:g} not reached: {measured} on the calibration samples with {len(steps)} "
        f"layer(s) kept float ({limit}){since}; {more}exclude layers with --exclude-nodes (quantkit "
        "sensitivity ranks them), or calibrate on more images like the ones the model will see",
    )
