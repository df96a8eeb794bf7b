"""An INT8 plan placed for a runtime other than onnxruntime's CPU kernels (`convert --target`).

The plan is first made as for onnxruntime (planner.core: which layers are quantized, every tensor's range
and params, corrections); a target then keeps the Q/DQ pairs its runtime turns into integer kernels and
drops the others. quantkit/docs/targets.md states each target's rules and where they come from.

tensorrt (NVIDIA's explicit-quantization placement guidance):
- Q/DQ on every input of a quantized Conv / ConvTranspose / Gemm / MatMul (int8, symmetric, zero point 0,
  per tensor; weights per output channel, as planned);
- on the residual input of an Add whose other input a quantized layer writes, so TensorRT fuses the Add
  into that layer's int8 kernel;
- nowhere else: no Q/DQ on a weighted layer's output (it would sit between the layer and its ReLU or
  BatchNormalization and block their fusion), none around pooling, Concat or data movement (TensorRT
  propagates scales across them itself);
- biases stay float (TensorRT dequantizes int8 and fp8, not int32), corrected for the weights' rounding.

openvino (its CPU plugin): the tensorrt placement with uint8 activations, each pair then moved up through
the ops that commute with it (`hoisted`), so that pools and Concats run between u8 tensors as they do in
NNCF's models.

fp8 (--to fp8, for TensorRT on Hopper / Ada / Blackwell): the same placement with E4M3FN Q/DQ, zero point
0; each activation's scale its observed amax / 448 (FP8's exponent covers the range, so nothing is
clipped: the calibration practice of NVIDIA's ModelOpt), weights per output channel at absmax / 448.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.query import GraphIndex
from quantkit.qmath.fp8 import FLOAT8, tensor_scale
from quantkit.results import CalibrationTable, QuantParams, QuantPlan, Skip

FREE = "no Q/DQ of its own: {} fuses it or runs it in the precision of its neighbours"
# Ops that commute with a per-tensor Q/DQ pair: quantizing their data inputs with the output's params
# gives the output bit for bit (a max, a copy or a rearrangement of values already on that grid).
COMMUTING_OPS = frozenset(
    {
        "MaxPool",
        "Concat",
        "Reshape",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Slice",
        "Gather",
        "Identity",
        "Expand",
        "Tile",
        "Resize",
    }
)


def for_tensorrt(plan: QuantPlan, index: GraphIndex, runtime: str = "TensorRT") -> QuantPlan:
    """The plan with Q/DQ only where TensorRT fuses them (module docstring); biases float."""
    layers = {n: op for n, op in plan.quantized_nodes.items() if op in COMPUTE_OPS}
    kept: set[str] = set()
    for name in sorted(layers):
        kept.update(_live_inputs(index, name, plan))
    adds = _residual_adds(index, plan, layers)
    for tensor in adds.values():
        kept.add(tensor)
    quantized = {**layers, **{name: "Add" for name in adds}}
    layer_skips = tuple(s for s in plan.skipped if s.op_type in COMPUTE_OPS)
    free = [
        n
        for n in index.nodes
        if n.op_type not in COMPUTE_OPS and n.op_type != "Constant" and n.name not in quantized
    ]
    return dataclasses.replace(
        plan,
        activations={t: p for t, p in plan.activations.items() if t in kept},
        weights=tuple(w for w in plan.weights if w.node in layers and w.kind != "constant"),
        quantized_nodes=quantized,
        folds={},
        skipped=layer_skips + tuple(Skip(n.name, n.op_type, FREE.format(runtime)) for n in free),
        ranges={t: r for t, r in plan.ranges.items() if t in kept},
        float_bias=True,
    )


def _live_inputs(index: GraphIndex, node: str, plan: QuantPlan) -> list[str]:
    """The non-constant inputs of a quantized layer that the plan quantizes (its data input; both inputs
    of an activation x activation MatMul)."""
    inputs = index.by_name[node].input
    return [t for t in inputs[:2] if t and not index.is_constant(t) and t in plan.activations]


def _residual_adds(index: GraphIndex, plan: QuantPlan, layers: dict[str, str]) -> dict[str, str]:
    """Add node -> its residual input: an Add of two live tensors, one written by a quantized layer read by
    nothing else (the branch TensorRT fuses the Add into), the other with params in the plan. With both
    written so, the second input is the residual."""
    found = {}
    for node in index.nodes:
        if node.op_type != "Add" or len(node.input) != 2 or any(index.is_constant(t) for t in node.input):
            continue
        branch = [t for t in node.input if _fusable_branch(index, t, layers)]
        if not branch:
            continue
        residual = next(t for t in node.input if t != branch[0]) if len(branch) == 1 else node.input[1]
        if residual in plan.activations:
            found[node.name] = residual
    return found


def _fusable_branch(index: GraphIndex, tensor: str, layers: dict[str, str]) -> bool:
    producer = index.producer.get(tensor)
    return (
        producer is not None
        and producer.name in layers
        and len(index.consumers.get(tensor, [])) == 1
        and tensor not in index.graph_outputs
    )


def for_fp8(plan: QuantPlan, table: CalibrationTable) -> QuantPlan:
    """A tensorrt-placed plan with E4M3FN params: activations at the table's observed amax / 448."""
    activations = {}
    for tensor, params in plan.activations.items():
        stats = table.stats.get(tensor)
        lo, hi = (stats.minimum, stats.maximum) if stats is not None else plan.ranges.get(tensor, (0.0, 0.0))
        activations[tensor] = QuantParams(tensor_scale(lo, hi), np.zeros((), FLOAT8), params.axis)
    ranges = {t: (-float(p.scale) * 448.0, float(p.scale) * 448.0) for t, p in activations.items()}
    return dataclasses.replace(plan, activations=activations, ranges=ranges, fp8=True)


def hoisted(plan: QuantPlan, index: GraphIndex) -> QuantPlan:
    """The plan with each per-tensor activation Q/DQ moved up through COMMUTING_OPS to their data inputs
    (same params; each of a Concat's inputs), as far as each input is read by that op alone: the same
    numbers, with pooling, Concat and data movement between int8 tensors. OpenVINO's CPU plugin then runs
    them in u8 and needs no FakeQuantize of their own (SqueezeNet: its 4 pools and 8 Concats)."""
    activations, ranges = dict(plan.activations), dict(plan.ranges)
    work = sorted(activations)
    while work:
        tensor = work.pop()
        inputs = _commuting_inputs(index, tensor, activations)
        if inputs is None:
            continue
        params, span = activations.pop(tensor), ranges.pop(tensor, None)
        for name in inputs:
            activations[name] = params
            if span is not None:
                ranges[name] = span
            work.append(name)
    return dataclasses.replace(plan, activations=dict(sorted(activations.items())), ranges=ranges)


def _commuting_inputs(
    index: GraphIndex, tensor: str, activations: dict[str, QuantParams]
) -> list[str] | None:
    """The data inputs a per-tensor Q/DQ on `tensor` can move to, or None: its writer commutes with it,
    writes nothing else, and each data input is a live tensor read by that writer only, not yet quantized."""
    node = index.producer.get(tensor)
    if node is None or node.op_type not in COMMUTING_OPS or activations[tensor].scale.size != 1:
        return None
    if [o for o in node.output if o] != [tensor]:
        return None
    if node.op_type == "Resize" and index.attribute(node, "mode", b"nearest") != b"nearest":
        return None  # interpolation writes values between the grid's steps
    inputs = list(node.input) if node.op_type == "Concat" else [node.input[0]]
    for name in inputs:
        readers = {n.name for n, _ in index.consumers.get(name, [])}
        if (
            index.is_constant(name)
            or name in activations
            or name in index.graph_outputs
            or readers != {node.name}
        ):
            return None
    return inputs
