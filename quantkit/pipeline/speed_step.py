"""convert's speed-aware step: the plan made again with the ops whose int8 form profiles slower on this
CPU kept float (pipeline.speed_memory, pipeline.speed_refine), where that keeps every output above the
INT8 floor that the plan itself keeps."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from quantkit.config import ConvertConfig
from quantkit.graph import model_io
from quantkit.graph.query import GraphIndex
from quantkit.pipeline import speed_memory
from quantkit.pipeline.int8_model import quantized_model, runnable
from quantkit.pipeline.speed_refine import Refined
from quantkit.pipeline.writing import INT8_FLOOR_DB
from quantkit.planner import fallback, targets
from quantkit.planner import plan as make_plan
from quantkit.results import CalibrationTable, Feed, QuantPlan, Runs


def refined(
    inferred: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    made: tuple[QuantPlan, onnx.ModelProto],
    fallen: Mapping[str, str],
    cache: dict[str, tuple[float, float]],
    alphas: Mapping[str, float] | None,
    measured: tuple[Runs, Feed, fallback.SqnrMemo],
) -> tuple[Refined | None, tuple[str, ...]]:
    """made: the plan and its model; fallen: node -> why, the layers the fallback kept float (kept so in
    every plan tried); measured: FP32's outputs on the table's samples, the samples, the memo of output
    SQNRs. (the faster plan and its model, or None where the plan stands; the note where the faster one
    put an output below the floor that the plan keeps, and so was not taken)."""
    base, quantized = made
    reference, samples, memo = measured

    def build(slower: Mapping[str, str]) -> tuple[QuantPlan, onnx.ModelProto]:
        again = make_plan(inferred, table, config, dict(fallen), cache, alphas, base.rounded, slower)
        return again, quantized_model(inferred, again, config)

    def accuracy(model: onnx.ModelProto) -> float:
        return fallback.output_sqnr(model, reference, samples, memo)

    def inputs_only() -> tuple[QuantPlan, onnx.ModelProto]:
        placed = targets.inputs_only(base, GraphIndex(inferred))
        return placed, quantized_model(inferred, placed, config)

    def holds(model: onnx.ModelProto) -> bool:  # measured with accuracy's run (the memo)
        return fallback.output_sqnr(model, reference, samples, memo, worst=True) >= INT8_FLOOR_DB

    fixed = model_io.weights_fixed(inferred)[0]  # profiled as the network, not its overridable form
    faster = speed_memory.refine(fixed, table, base, quantized, samples, build, accuracy, inputs_only, holds)
    pair = (runnable(faster.model, config), runnable(quantized, config))
    below = speed_memory.below_floor(*pair, INT8_FLOOR_DB, reference, samples, memo)
    return (None, below) if below else (faster, ())
