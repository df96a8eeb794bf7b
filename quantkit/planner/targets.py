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
import onnx

from quantkit.config import ActivationType
from quantkit.graph.augment import COMMUTING_OPS, COMPUTE_OPS, commuting_data_inputs
from quantkit.graph.query import GraphIndex
from quantkit.planner.gemm_bias import gemm_biases
from quantkit.planner.planning_state import ATTENTION_FLOAT, ATTENTION_INT8_INPUTS, EXCLUDED
from quantkit.planner.range_plan import activation_params
from quantkit.qmath.fp8 import FLOAT8, tensor_scale
from quantkit.results import CalibrationTable, QuantParams, QuantPlan, Skip

FREE = "no Q/DQ of its own: {} fuses it or runs it in the precision of its neighbours"


def for_tensorrt(plan: QuantPlan, index: GraphIndex, runtime: str = "TensorRT") -> QuantPlan:
    """The plan with Q/DQ only where TensorRT fuses them (module docstring); biases float."""
    return dataclasses.replace(
        _on_inputs(plan, index, FREE.format(runtime), residual_adds=True), float_bias=True
    )


def inputs_only(plan: QuantPlan, index: GraphIndex, reason: str | None = None) -> QuantPlan:
    """An onnxruntime plan with its Q/DQ pairs on the inputs of its quantized weighted layers only, with
    its own params (uint8 activations): onnxruntime's CPU provider runs such a MatMul as
    MatMulIntegerToFloat and a Gemm as QGemm, both with float outputs, and every op between them
    (LayerNormalization, Softmax, GELU, residual Adds) in float with no conversions around it. Biases stay
    int32 as planned (a float bias keeps a Gemm from QGemm). The speed-aware plan's candidate for models led
    by MatMul / Gemm (pipeline.speed_refine): vit_mnist's plain INT8 model ran 0.85-0.96x FP32 here with
    each small op between Q/DQ pairs, this one 1.02-1.06x.
    Two kinds of layer keep their output pair as planned, or onnxruntime would run them in float on
    dequantized weights: a Conv / ConvTranspose (no integer Conv with a float output; a ViT-S's patch
    embedding), and a MatMul on a 2-D input whose output only a constant Add reads (onnxruntime fuses the
    two into a Gemm before its QDQ fusions, and that Gemm, with a float bias and no Q after it, is not
    fused: vit_mnist's head); with the pair they run as QLinearConv and QLinearMatMul. A MatMul whose
    bias Add onnxruntime fuses with it gets that bias int32 instead (planner.gemm_bias): QGemm.
    reason: why the ops between them run float (INPUTS_ONLY: faster)."""
    placed = _on_inputs(plan, index, reason or INPUTS_ONLY, residual_adds=False)
    excluded = {s.node for s in plan.skipped if s.reason == EXCLUDED}  # an excluded Add stays as it is
    biases = gemm_biases(index, placed.quantized_nodes, placed.weights, {*placed.quantized_nodes, *excluded})
    placed = dataclasses.replace(placed, weights=(*placed.weights, *biases))
    fused = [t for t in _output_paired(index, placed) if t in plan.activations]
    activations = {**placed.activations, **{t: plan.activations[t] for t in fused}}
    ranges = {**placed.ranges, **{t: plan.ranges[t] for t in fused if t in plan.ranges}}
    return dataclasses.replace(placed, activations=dict(sorted(activations.items())), ranges=ranges)


def _output_paired(index: GraphIndex, plan: QuantPlan) -> list[str]:
    """The outputs of the plan's Conv / ConvTranspose, and of its MatMuls on 2-D inputs that only an Add
    of a constant reads."""
    found = []
    for name, op in sorted(plan.quantized_nodes.items()):
        node = index.by_name[name]
        if op in ("Conv", "ConvTranspose"):
            found.append(node.output[0])
            continue
        if op == "MatMul" and fused_into_gemm(index, node) and not any(w.layer == name for w in plan.weights):
            found.append(node.output[0])  # its bias int32 makes the fused Gemm QGemm (planner.gemm_bias)
    return found


def fused_into_gemm(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """Whether `node` is a MatMul on a 2-D input whose output only an Add of a constant reads: onnxruntime
    fuses the two into a Gemm before its QDQ fusions, and that Gemm, with a float bias and no Q after it,
    runs float on dequantized weights (vit_mnist's head); with a Q/DQ pair on its output it runs as
    QLinearMatMul."""
    if node.op_type != "MatMul" or index.ranks.get(node.input[0]) != 2:
        return False
    readers = index.consumers.get(node.output[0], [])
    if len(readers) != 1 or readers[0][0].op_type != "Add" or node.output[0] in index.graph_outputs:
        return False
    return any(index.is_constant(t) for t in readers[0][0].input if t != node.output[0])


INPUTS_ONLY = "runs float between integer layers (Q/DQ on the inputs of weighted layers only: faster here)"
INPUTS_ONLY_ACCURATE = (
    "runs float between integer layers (Q/DQ on the inputs of weighted layers only: more accurate here)"
)


def _on_inputs(plan: QuantPlan, index: GraphIndex, reason: str, residual_adds: bool) -> QuantPlan:
    """The plan with Q/DQ on the live inputs of its quantized weighted layers only (and on the residual
    input of the Adds a layer's output feeds, with residual_adds); every other op float for `reason`."""
    layers = {n: op for n, op in plan.quantized_nodes.items() if op in COMPUTE_OPS}
    kept: set[str] = set()
    for name in sorted(layers):
        kept.update(_live_inputs(index, name, plan))
    adds = _residual_adds(index, plan, layers) if residual_adds else {}
    for tensor in adds.values():
        kept.add(tensor)
    quantized = {**layers, **{name: "Add" for name in adds}}
    layer_skips = tuple(
        # hq160 F3: an attention MatMul said to run on its inputs' int8 values, which now stay float
        dataclasses.replace(s, reason=ATTENTION_FLOAT)
        if s.reason == ATTENTION_INT8_INPUTS and not set(index.by_name[s.node].input) <= kept
        else s
        for s in plan.skipped
        if s.op_type in COMPUTE_OPS
    )
    free = [
        n
        for n in index.nodes
        if n.op_type not in COMPUTE_OPS and n.op_type != "Constant" and n.name not in quantized
    ]
    return dataclasses.replace(
        plan,
        activations={t: p for t, p in plan.activations.items() if t in kept},
        weights=tuple(w for w in plan.weights if (w.layer or w.node) in layers and w.kind != "constant"),
        quantized_nodes=quantized,
        folds={},
        skipped=layer_skips + tuple(Skip(n.name, n.op_type, reason) for n in free),
        ranges={t: r for t, r in plan.ranges.items() if t in kept},
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


def unified(plan: QuantPlan, index: GraphIndex, ratio: float) -> QuantPlan:
    """One set of params for each group of tensors that commuting ops join (a Concat's inputs and output,
    a pool's or an upsample's input and output): the widest paired member's, where the paired members'
    ranges differ by at most `ratio` (--concat-range-ratio), no member is a model output, and every member
    without a pair is read only by the group's own commuting ops. NNCF's unified scales: `hoisted` then
    moves the pairs onto the group's sources, and the ops between run on int8 values with no
    requantization (YOLOX-Nano's PAN: a tensor feeding one Concat directly and another through an
    upsample). The narrower members get the coarser grid, which clipped less and measured better there
    (14.13 -> 14.70 dB, recall 93.4 -> 94.2 % in OpenVINO)."""
    activations, ranges = dict(plan.activations), dict(plan.ranges)
    for members in _commuting_groups(index):
        paired = sorted(m for m in members if m in activations)
        if len(paired) < 2 or not _unifiable(index, members, paired, activations):
            continue
        widths = {m: max(ranges[m][1] - ranges[m][0], 1e-12) for m in paired if m in ranges}
        if len(widths) < len(paired) or max(widths.values()) > ratio * min(widths.values()):
            continue
        widest = max(paired, key=lambda m: (widths[m], m))
        for member in paired:
            activations[member], ranges[member] = activations[widest], ranges[widest]
    return dataclasses.replace(plan, activations=activations, ranges=ranges)


def _commuting_groups(index: GraphIndex) -> list[set[str]]:
    """The tensors joined through ops that commute with a per-tensor Q/DQ pair, as sets."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for node in index.nodes:
        out = [o for o in node.output if o]
        if node.op_type not in COMMUTING_OPS or len(out) != 1 or not _nearest(index, node):
            continue
        for name in commuting_data_inputs(node):
            if not index.is_constant(name):
                parent[root(name)] = root(out[0])
    groups: dict[str, set[str]] = {}
    for name in list(parent):
        groups.setdefault(root(name), set()).add(name)
    return [groups[k] for k in sorted(groups)]


def _unifiable(
    index: GraphIndex, members: set[str], paired: list[str], activations: dict[str, QuantParams]
) -> bool:
    if any(activations[m].scale.size != 1 for m in paired) or members & set(index.graph_outputs):
        return False
    for member in members - set(paired):
        for reader, _ in index.consumers.get(member, []):
            out = [o for o in reader.output if o]
            inside = reader.op_type in COMMUTING_OPS and len(out) == 1 and out[0] in members
            if not inside or member not in commuting_data_inputs(reader) or not _nearest(index, reader):
                return False
    return True


def near_commuting(index: GraphIndex, tensor: str) -> bool:
    """Whether a commuting op writes or reads `tensor`: `unified` and `hoisted` may give its pair other
    params or move it, so it is no candidate for rebalancing (whose params are its own) on openvino."""
    producer = index.producer.get(tensor)
    readers = [n for n, _ in index.consumers.get(tensor, [])]
    return any(n.op_type in COMMUTING_OPS for n in [*readers, *([producer] if producer else [])])


def _nearest(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """Not a Resize that interpolates (its values would fall between the grid's steps)."""
    return node.op_type != "Resize" or index.attribute(node, "mode", b"nearest") == b"nearest"


def hoisted(plan: QuantPlan, index: GraphIndex) -> QuantPlan:
    """The plan with the per-tensor activation Q/DQ pairs moved up through COMMUTING_OPS onto their data
    inputs, with the same params: the same numbers, with pooling, Concat and data movement between int8
    tensors, so that OpenVINO's CPU plugin runs them in u8 with no FakeQuantize of their own (NNCF's
    placement). First each pair is copied up onto all of its writer's data inputs or none, as far as every
    reader of an input is a commuting op whose output carries those params (YOLOX's SPP: x read by three
    MaxPools and the Concat of all four); then a pair is dropped where its writer commutes and every data
    input carries the same params (its values are on that grid already)."""
    activations, ranges = dict(plan.activations), dict(plan.ranges)
    work = sorted(activations)
    while work:
        tensor = work.pop()
        node = _commuting_writer(index, tensor, activations)
        if node is None:
            continue
        params, inputs = activations[tensor], commuting_data_inputs(node)
        if not all(_same(activations[n], params) for n in inputs if n in activations):
            continue  # an input with params of its own: the writer requantizes, nothing moves
        fresh = [n for n in inputs if n not in activations]
        trial = {**activations, **dict.fromkeys(fresh, params)}  # all of a Concat's inputs, or none
        if fresh and all(_takes(index, n, params, trial) for n in fresh):
            activations.update(dict.fromkeys(fresh, params))
            ranges.update(dict.fromkeys(fresh, ranges[tensor]) if tensor in ranges else {})
            work.extend(fresh)
    on_grid = [t for t in activations if _on_grid(index, t, activations)]
    for tensor in on_grid:
        del activations[tensor]
        ranges.pop(tensor, None)
    return dataclasses.replace(plan, activations=dict(sorted(activations.items())), ranges=ranges)


def _commuting_writer(
    index: GraphIndex, tensor: str, activations: dict[str, QuantParams]
) -> onnx.NodeProto | None:
    """The node writing `tensor` where it commutes with a per-tensor Q/DQ pair and writes nothing else."""
    node = index.producer.get(tensor)
    if node is None or node.op_type not in COMMUTING_OPS or activations[tensor].scale.size != 1:
        return None
    if [o for o in node.output if o] != [tensor]:
        return None
    return node if _nearest(index, node) else None


def _on_grid(index: GraphIndex, tensor: str, activations: dict[str, QuantParams]) -> bool:
    """Whether `tensor`'s writer commutes and reads only tensors with the same params as its own."""
    node = _commuting_writer(index, tensor, activations)
    return node is not None and all(
        _same(activations.get(n), activations[tensor]) for n in commuting_data_inputs(node)
    )


def _takes(index: GraphIndex, name: str, params: QuantParams, activations: dict[str, QuantParams]) -> bool:
    """Whether a pair with `params` on `name` leaves every reader's output as it was: a live tensor, not a
    model output, read only as data by commuting ops whose outputs carry those params."""
    if index.is_constant(name) or name in index.graph_outputs:
        return False
    for reader, _ in index.consumers.get(name, []):
        if (
            reader.output[0] not in activations
            or _commuting_writer(index, reader.output[0], activations) is None
        ):
            return False
        if name not in commuting_data_inputs(reader) or not _same(activations[reader.output[0]], params):
            return False
    return True


def _same(a: QuantParams | None, b: QuantParams) -> bool:
    return (
        a is not None
        and np.array_equal(a.scale, b.scale)
        and np.array_equal(a.zero_point, b.zero_point)
        and a.zero_point.dtype == b.zero_point.dtype
    )


def signed_inputs(plan: QuantPlan, index: GraphIndex) -> QuantPlan:
    """Model inputs that take negative values (a normalized image) quantized int8 symmetric (zero point 0),
    as NNCF quantizes them: OpenVINO's first convolution then needs no zero-point compensation (SqueezeNet
    2.51x -> 2.62x FP32 at 1 thread, 35.79 -> 35.15 dB). Only there: signed int8 on layer activations measured
    broken in OpenVINO 2026.4 (targets.md)."""
    activations = dict(plan.activations)
    for name in index.graph_inputs:
        params, span = activations.get(name), plan.ranges.get(name)
        if params is None or span is None or params.scale.size != 1 or span[0] >= 0.0:
            continue
        activations[name] = activation_params(span[0], span[1], ActivationType.int8)
    return dataclasses.replace(plan, activations=activations)


def with_exact_folds(placed: QuantPlan, decided: QuantPlan) -> QuantPlan:
    """The ReLU / Clip nodes the onnxruntime plan folded into the Q after them, where that Q is still
    there with the same uint8 params of zero point 0 (its grid clamps at 0 and saturates within the
    Clip's bound, as the fold requires): the fold is exact for OpenVINO too. Written out instead, a Clip
    that rebalancing scaled becomes Relu + a per-channel Min, which OpenVINO's CPU plugin runs as float
    element-wise layers between the convolutions (MobileNetV2: 19 of them, 1.62x FP32 against 2.00x)."""
    op_of = {s.node: s.op_type for s in placed.skipped}  # every non-weighted node is there
    folds = {}
    for node, tensor in decided.folds.items():
        if op_of.get(node) not in ("Relu", "Clip"):
            continue  # a Mul / Div folded into a Q's scale needs its source's pair, which may be gone
        now, then = placed.activations.get(tensor), decided.activations.get(tensor)
        if now is None or then is None or now.zero_point.dtype != np.uint8 or now.zero_point.any():
            continue
        if np.array_equal(now.scale, then.scale) and np.array_equal(now.zero_point, then.zero_point):
            folds[node] = tensor
    skipped = tuple(s for s in placed.skipped if s.node not in folds)
    return dataclasses.replace(placed, folds=folds, skipped=skipped)
