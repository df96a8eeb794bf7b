"""Per-layer sensitivity: the models whose outputs, streamed over images, score each quantized layer.

- local: one FP32 probe model (graph.probe) where every quantized layer also runs on its own quantized
  input and int8 weights: the SQNR of that layer's output when only it is quantized;
- recovery: for each layer, the INT8 model with only that layer (and its input path, as the accuracy
  fallback does) kept float: how much of the model's output error comes back;
- cumulative: the INT8 model with the top 1..k layers of the ranking kept float together.
Measured with rebalancing off (its per-channel scales change which tensors exist); the rest of the
convert settings apply.
"""

from __future__ import annotations

import dataclasses

import onnx

from quantkit.config import ConvertConfig
from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.probe import local_probe
from quantkit.graph.qdq import WeightMemo, apply_plan
from quantkit.planner.core import plan
from quantkit.results import CalibrationTable, QuantPlan


@dataclasses.dataclass(frozen=True)
class Probes:
    base: onnx.ModelProto  # every layer quantized
    layers: tuple[tuple[str, str], ...]  # (node, op type) of each quantized linear layer, graph order
    local: onnx.ModelProto
    local_outputs: dict[str, tuple[str, str]]  # node -> (float output, locally quantized output)


def measured_config(config: ConvertConfig) -> ConvertConfig:
    return dataclasses.replace(config, smoothquant="off", min_sqnr=0.0)


def layers(
    model: onnx.ModelProto, table: CalibrationTable, config: ConvertConfig
) -> tuple[tuple[tuple[str, str], ...], QuantPlan]:
    """((node, op type) of each quantized linear layer in graph order, the plan quantizing them all).
    model: opset >= 13, every node named, shapes inferred."""
    base_plan = plan(model, table, measured_config(config))
    found = tuple(
        (n.name, n.op_type)
        for n in model.graph.node
        if n.name in base_plan.quantized_nodes and n.op_type in COMPUTE_OPS
    )
    return found, base_plan


def probes(
    model: onnx.ModelProto, table: CalibrationTable, config: ConvertConfig
) -> tuple[Probes, QuantPlan]:
    """model: opset >= 13, every node named, shapes inferred."""
    found, base_plan = layers(model, table, config)
    local, outputs = local_probe(model, base_plan, [name for name, _ in found])
    return Probes(apply_plan(model, base_plan), found, local, outputs), base_plan


def with_float(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    nodes: list[str],
    cache: dict[str, tuple[float, float]],
    memo: WeightMemo | None = None,
) -> onnx.ModelProto:
    """The INT8 model with `nodes` (and their input paths) kept float, as convert --exclude-from does."""
    measured = dataclasses.replace(measured_config(config), float_layers=(*config.float_layers, *nodes))
    return apply_plan(model, plan(model, table, measured, range_cache=cache), memo)


def floated_with(
    model: onnx.ModelProto,
    table: CalibrationTable,
    config: ConvertConfig,
    nodes: tuple[str, ...],
    cache: dict[str, tuple[float, float]],
    base: QuantPlan,
) -> tuple[str, ...]:
    """The other quantized layers that go float when `nodes` are kept float as with_float keeps them
    (their input paths, and the layers writing or reading them that onnxruntime then runs in float), in
    graph order; base: the plan quantizing them all (`layers`'). hunt39 F5: 'conv_4 alone' floated six
    convolutions, and the top 1, 2 and 3 sets were one model, with nothing said."""
    kept = dataclasses.replace(measured_config(config), float_layers=(*config.float_layers, *nodes))
    after = plan(model, table, kept, range_cache=cache)
    return tuple(
        n.name
        for n in model.graph.node
        if n.name in base.quantized_nodes and n.name not in after.quantized_nodes and n.name not in nodes
    )
