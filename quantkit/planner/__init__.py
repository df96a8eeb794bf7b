"""Decide what to quantize: model + calibration table + config -> QuantPlan (plain data)."""

from __future__ import annotations

from quantkit.planner.core import plan
from quantkit.planner.range_plan import activation_params, consumer_transform, select_range

__all__ = ["activation_params", "consumer_transform", "plan", "select_range"]
