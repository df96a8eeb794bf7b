"""Where Q/DQ go: which compute ops are quantized (rules 1-3 of planner.core), what joins the integer
path around them, and why the rest stays float."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import numpy as np
import onnx

from quantkit.config import ActivationType, ConvertConfig, Target
from quantkit.errors import ConfigError
from quantkit.graph.augment import COMPUTE_OPS, INTEGER_PATH_OPS, SHARED_SCALE_OPS, clips_at_zero
from quantkit.graph.query import GraphIndex
from quantkit.planner.moving import output_reason
from quantkit.planner.ort_unfused import DILATED_POOL, dilated_pool, unfused_on_ort
from quantkit.planner.patterns import (
    FLOAT_BESIDE,
    HARD_OPS,
    SCALE_OPS,
    SCORE_REASON,
    try_hard,
    try_scale_fold,
    writer,
)
from quantkit.planner.planning_state import ATTENTION_FLOAT, MULTI_INPUT_OPS, Planning
from quantkit.planner.targets import fused_into_gemm
from quantkit.results import (
    WeightPlan,
)


def input_path(index: GraphIndex, tensor: str, cut: bool = False) -> set[str]:
    """`tensor` and the tensors it is computed from, back to (and including) the outputs of the previous
    linear layers or the graph inputs; cut: not past a tensor that also feeds a linear layer `tensor` does
    not (a residual stream, which stays quantized where the path reads it: kept float, it takes every layer
    reading or writing it float too; planner.fallback measures both paths, hunt47 B2)."""
    fed = _layers_fed(index, tensor) if cut else frozenset()
    path, todo = set(), [tensor]
    while todo:
        name = todo.pop()
        if name in path or index.is_constant(name):
            continue
        if cut and name != tensor and not _layers_fed(index, name) <= fed:
            continue
        path.add(name)
        producer = index.producer.get(name)
        if producer is not None and producer.op_type not in COMPUTE_OPS:
            todo.extend(n for n in producer.input if n)
    return path


def _layers_fed(index: GraphIndex, tensor: str) -> frozenset[str]:
    """The linear layers (COMPUTE_OPS) that read `tensor`, directly or through other ops, by name."""
    found: set[str] = set()
    seen, todo = set(), [tensor]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node, _ in index.consumers.get(name, ()):
            if node.op_type in COMPUTE_OPS:
                found.add(node.name)
            else:
                todo.extend(o for o in node.output if o)
    return frozenset(found)


def data_path(index: GraphIndex, node: onnx.NodeProto, cut: bool = False) -> set[str]:
    """The node's data inputs and the tensors they are computed from, back to the previous linear layers'
    outputs (input_path of each): what stays float with a layer kept float."""
    return set().union(*(input_path(index, tensor, cut) for tensor in data_inputs(node)))


# A layer that writes a kept layer's input (float by that: onnxruntime has no int8 Conv with a float output)
# and reads an SPP / SPPF block (a MaxPool of at least this kernel area on its own input path) is kept float
# with its input path too. Otherwise it reads the block through a Q/DQ pair, and onnxruntime runs the pools
# in plain NCHW, neither in the NHWC int8 region of an int8 consumer nor in the NCHWc float one of a float
# chain: YOLOX-Nano with Conv_181 kept float ran 0.63x FP32 (its SPP pools 6.2 ms against 0.16 ms), with
# Conv_175 (which reads the SPP) kept float too 0.91x (0.95x with neither).
SLOW_POOL_AREA = 25


def pooled_writers(
    index: GraphIndex, keep_float: dict[str, str], cut: frozenset[str] = frozenset()
) -> dict[str, str]:
    """keep_float (node -> why) with such writers added, until none is; cut: the kept layers whose input
    path is cut (input_path)."""
    kept = dict(keep_float)
    todo = list(kept)
    while todo:
        name = todo.pop()
        for tensor in sorted(data_path(index, index.by_name[name], name in cut)):
            layer = index.producer.get(tensor)
            if layer is None or layer.op_type not in COMPUTE_OPS or layer.name in kept:
                continue
            pool = _slow_pool(index, layer)
            if pool is not None:
                kept[layer.name] = (
                    f"kept float with {name}, whose input it writes: it reads {pool}, which onnxruntime's "
                    "CPU runs far slower between Q/DQ pairs than in a float chain"
                )
                todo.append(layer.name)
    return kept


def _slow_pool(index: GraphIndex, layer: onnx.NodeProto) -> str | None:
    """The first MaxPool of at least SLOW_POOL_AREA on the layer's input path, by name; None if none."""
    for tensor in sorted(data_path(index, layer)):
        node = index.producer.get(tensor)
        if node is not None and node.op_type == "MaxPool" and _area(index, node) >= SLOW_POOL_AREA:
            return f"MaxPool {node.name}"
    return None


def _area(index: GraphIndex, pool: onnx.NodeProto) -> int:
    return int(np.prod(index.attribute(pool, "kernel_shape", [1])))  # type: ignore[call-overload]


def check_exclusions(index: GraphIndex, config: ConvertConfig) -> None:
    for option, names in (("--exclude-nodes", config.exclude_nodes), ("--exclude-from", config.float_layers)):
        check_node_names(index, option, names)
    check_op_types(config.exclude_op_types, {node.op_type for node in index.nodes})


def check_node_names(index: GraphIndex, option: str, names: Iterable[str]) -> None:
    unknown = [n for n in names if n not in index.by_name]
    if unknown:
        raise ConfigError(
            f"{option} names {len(unknown)} node(s) not in the model ({', '.join(map(repr, unknown[:3]))}); "
            "use node names as shown by the convert summary, quantkit sensitivity or Netron"
        )


def check_op_types(op_types: Iterable[str], present: set[str]) -> None:
    """Refuse an --exclude-op-types entry that is no operator at all (a typo would exclude nothing). One
    that this model lacks but ONNX defines is accepted: a shared configuration lists them for many models."""
    for op_type in op_types:
        if op_type in present or onnx.defs.has(op_type) or onnx.defs.has(op_type, "com.microsoft"):
            continue
        close = difflib.get_close_matches(op_type, sorted(present), n=1) or difflib.get_close_matches(
            op_type, sorted(schema.name for schema in onnx.defs.get_all_schemas()), n=1
        )
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"--exclude-op-types names {op_type!r}, which is no ONNX operator; {hint}give op types as the "
            "convert summary shows them (Conv, MatMul, Gemm...)"
        )


def excluded(node: onnx.NodeProto, config: ConvertConfig) -> bool:
    return node.name in config.exclude_nodes or node.op_type in config.exclude_op_types


LEFT_WEIGHT = "constant left operand (W @ x): quantkit quantizes a MatMul's right-hand weight only"


OVERRIDABLE_WEIGHT = (
    "weight computed from weights the model lists as graph inputs (a caller may feed them): kept float; "
    "remove them from the graph's inputs to quantize it"
)


def _from_overridable(index: GraphIndex, name: str, depth: int = 8) -> bool:
    """Whether tensor `name` is computed from weights listed as graph inputs and from no other input (a
    Reshape, Transpose or Cast of one), within `depth` nodes."""
    if name in index.overridable:
        return True
    node = index.producer.get(name)
    if node is None or depth == 0 or not any(node.input):
        return False
    live = [i for i in node.input if i and not (index.is_constant(i) and i not in index.overridable)]
    return bool(live) and all(_from_overridable(index, i, depth - 1) for i in live)


def plan_compute(state: Planning, node: onnx.NodeProto) -> None:
    index = state.index
    x, w = node.input[0], node.input[1] if len(node.input) > 1 else ""
    weight = index.constant(w) if w else None
    if weight is None and node.op_type == "MatMul" and index.constant(x) is not None:
        state.reasons[node.name] = LEFT_WEIGHT  # not an attention product (hunt42 F6 read it as one)
        return
    if weight is None:
        both_live = w and state.has_stats(w)
        if w and _from_overridable(index, w):  # hq102 F4: a weight read through a Reshape was 'attention'
            state.reasons[node.name] = OVERRIDABLE_WEIGHT
        elif node.op_type == "MatMul" and both_live and not state.config.quantize_attention_matmul:
            state.reasons[node.name] = ATTENTION_FLOAT
        elif node.op_type == "MatMul" and both_live:
            _plan_attention(state, node)
        else:
            state.reasons[node.name] = "weight is not a constant"
        return
    if x in state.float_tensors:
        state.reasons[node.name] = state.float_why.get(x, f"its input is {FLOAT_BESIDE}")
        return
    if x in state.scores or (node.output[0] in state.scores and _float_output_unfused(state, node)):
        state.reasons[node.name] = SCORE_REASON
        return
    if node.output[0] in state.float_tensors and state.config.target is Target.ort_cpu:
        # int8 weights under a float output would make onnxruntime dequantize them every run and lose its
        # pre-packed float kernel (measured on YOLOX: 1.03x instead of 1.20x): run the layer in float.
        # TensorRT and OpenVINO run an int8 layer with a float output as one kernel: it stays int8 there.
        state.reasons[node.name] = f"its output is {FLOAT_BESIDE}"
        return
    if state.nonfinite(x):
        state.reasons[node.name] = "its input holds NaN or Inf on the calibration images (kept float)"
        return
    if weight.dtype != np.float32 or not state.has_stats(x):
        state.reasons[node.name] = "no calibration statistics for its input; recalibrate"
        return
    if x in index.graph_outputs and not _rounded_anyway(state, x):  # a model output stays float (CRAFT's
        # `feature`), so no Q/DQ can feed it
        state.reasons[node.name] = "its input is also a model output, which stays float"
        return
    if not np.isfinite(weight).all():
        state.reasons[node.name] = "weight holds NaN or Inf"
        return
    unfused = unfused_on_ort(state, node)
    if unfused:
        state.reasons[node.name] = unfused
        return
    axis = _weight_axis(index, node, weight)
    if axis is None:
        state.reasons[node.name] = "weight layout not supported for per-channel quantization"
        return
    state.quantized[node.name] = node.op_type
    state.add_q(x)
    state.weights.append(WeightPlan(node.name, 1, w, "weight", axis))
    if len(node.input) > 2 and node.input[2] and _bias_ok(index, node, weight, axis):
        state.weights.append(WeightPlan(node.name, 2, node.input[2], "bias", 0))
    out = node.output[0]
    if state.has_stats(out) and out not in state.float_tensors:
        state.add_q(out, model_output=_float_output_unfused(state, node))


def _rounded_anyway(state: Planning, name: str) -> bool:
    """A model output that a Q/DQ pair for a reader leaves as it is, or that is rounded already (an int8
    Conv's output under --prefer speed). A graph input echoed as an output: the pair goes after it, for
    its readers (hq155 F8), where none of them writes a model output (Planning.echo_quantizable)."""
    return state.echo_quantizable(name) or name in state.q


def _plan_attention(state: Planning, node: onnx.NodeProto) -> None:
    """--quantize-attention-matmul: an activation x activation MatMul with Q/DQ on both its inputs and its
    output, which onnxruntime fuses into QLinearMatMul (hq150 F3: the option only changed the reason)."""
    x, w = node.input[0], node.input[1]
    checks = {
        f"an input is {FLOAT_BESIDE}": x in state.float_tensors or w in state.float_tensors,
        "an input holds NaN or Inf on the calibration images (kept float)": state.nonfinite(x)
        or state.nonfinite(w),
        "no calibration statistics for an input; recalibrate": not (
            state.has_stats(x) and state.has_stats(w)
        ),
        "an input is also a model output, which stays float": bool({x, w} & set(state.index.graph_outputs)),
    }
    why = next((reason for reason, holds in checks.items() if holds), None)
    if why is not None:
        state.reasons[node.name] = why
        return
    state.quantized[node.name] = node.op_type
    state.add_q(x)
    state.add_q(w)
    out = node.output[0]
    if state.has_stats(out) and out not in state.float_tensors:
        state.add_q(out)


def _float_output_unfused(state: Planning, node: onnx.NodeProto) -> bool:
    """Whether onnxruntime would run this layer in float were its output left float: a Conv on the CPU
    (Gemm and MatMul have integer kernels with float outputs; TensorRT and OpenVINO fuse any)."""
    return node.op_type not in ("Gemm", "MatMul") and state.config.target is Target.ort_cpu


def _weight_axis(index: GraphIndex, node: onnx.NodeProto, weight: np.ndarray) -> int | None:
    if node.op_type == "Conv":
        return 0 if weight.ndim >= 3 else None
    if node.op_type == "ConvTranspose":
        return 1 if weight.ndim >= 3 else None
    if weight.ndim != 2:
        return None
    if node.op_type == "Gemm":
        return 0 if index.attribute(node, "transB", 0) else 1
    return 1  # MatMul: [K, N]


def _bias_ok(index: GraphIndex, node: onnx.NodeProto, weight: np.ndarray, axis: int) -> bool:
    bias = index.constant(node.input[2])
    if bias is None or bias.dtype != np.float32 or not np.isfinite(bias).all():
        return False
    if node.op_type == "Gemm":
        return (
            bias.ndim == 1 and bias.size == weight.shape[axis] and index.attribute(node, "beta", 1.0) == 1.0
        )
    return bias.ndim == 1


def drop_unread_outputs(state: Planning) -> None:
    """Take the Q/DQ pair off the output of an integer Gemm or MatMul that no integer kernel reads: its
    readers all stay float, and onnxruntime has integer kernels writing float (QGemm,
    MatMulIntegerToFloat), so the pair only rounded it once more (hunt43's masked MobileNetV2: the logits
    before a float `Add(logits, -inf mask)` lost 1 dB to it). Kept where a reader is an op onnxruntime
    moves a DQ over (Reshape, Transpose...), fuses when both inputs carry Q/DQ (an attention MatMul), or
    runs quantized (Softmax), and on a MatMul onnxruntime would fuse with its bias into a float Gemm
    (targets.fused_into_gemm)."""
    if state.config.target is not Target.ort_cpu:
        return
    index = state.index
    for tensor in sorted(state.q):
        node = index.producer.get(tensor)
        if node is None or node.op_type not in ("Gemm", "MatMul") or node.name not in state.quantized:
            continue
        if fused_into_gemm(index, node):  # its pair keeps it integer (QLinearMatMul)
            continue
        readers = index.consumers.get(tensor, [])
        if readers and all(_float_reader(state, reader) for reader, _ in readers):
            state.q.discard(tensor)


def _float_reader(state: Planning, node: onnx.NodeProto) -> bool:
    """Whether `node` reads its inputs in float whatever Q/DQ they carry."""
    kept = node.name not in state.quantized and node.name not in state.folds
    fused = node.op_type == "Softmax" and all(o in state.q for o in node.output)
    return kept and not fused and node.op_type not in SHARED_SCALE_OPS | COMPUTE_OPS


def data_inputs(node: onnx.NodeProto) -> list[str]:
    if node.op_type in MULTI_INPUT_OPS:
        return [n for n in node.input if n]
    return [node.input[0]] if node.input and node.input[0] else []


def propagate(state: Planning) -> None:
    changed = True
    while changed:
        changed = False
        for node in state.index.nodes:
            if node.name in state.quantized or node.name in state.folds or node.name in state.reasons:
                continue
            if node.op_type in ("Relu", "Clip"):
                changed |= _try_fold(state, node)
            elif node.op_type in HARD_OPS:
                changed |= try_hard(state, node)
            elif node.op_type in SCALE_OPS and try_scale_fold(state, node):
                changed = True
            elif node.op_type in INTEGER_PATH_OPS:
                changed |= _try_integer(state, node)


def _try_fold(state: Planning, node: onnx.NodeProto) -> bool:
    index = state.index
    source, out = node.input[0], node.output[0]
    if source not in state.q or writer(state, source) is None:
        return False
    if out in state.float_tensors:
        state.reasons[node.name] = f"its output is {FLOAT_BESIDE}"
        return False
    if (
        state.config.activations is not ActivationType.uint8
        or len(index.consumers[source]) != 1
        or source in index.captured  # an If/Loop body reads the values before it (hq60 B)
        or out in index.graph_outputs
        or source in index.graph_outputs  # folded, the model output would lose its writer (hq167 F1)
        or not state.has_stats(out)
        or not clips_at_zero(index, node)
    ):
        state.reasons[node.name] = "not foldable into the range of its input (kept float)"
        return False
    state.folds[node.name] = out
    state.q.discard(source)
    state.add_q(out)
    return True


def _try_integer(state: Planning, node: onnx.NodeProto) -> bool:
    index = state.index
    data = data_inputs(node)
    outputs = [o for o in node.output if o]
    if not any(n in state.q for n in [*data, *outputs]):
        return False
    if dilated_pool(index, node):
        state.reasons[node.name] = DILATED_POOL
        return False
    floats = [n for n in [*data, *outputs] if n in state.float_tensors]
    if floats:
        state.reasons[node.name] = state.float_why.get(floats[0], f"reads or writes a tensor {FLOAT_BESIDE}")
        return False
    if any(n in state.scores for n in outputs):
        state.reasons[node.name] = SCORE_REASON
        return False
    live = [n for n in data if not index.is_constant(n)]
    if not live or not all(state.has_stats(n) for n in live):
        return False
    constants = [index.constant(n) for n in data if index.is_constant(n)]
    if constants and (
        node.op_type not in ("Add", "Mul") or any(c is None or c.dtype != np.float32 for c in constants)
    ):
        return False
    out_why = output_reason(index, node)
    if out_why:
        state.reasons[node.name] = out_why
        return False
    if any(state.nonfinite(o) for o in outputs):  # a -inf mask added by design (hunt45: "recalibrate")
        state.reasons[node.name] = "its output holds NaN or Inf on the calibration images (kept float)"
        return False
    if not all(state.has_stats(o) for o in outputs):
        state.reasons[node.name] = "no calibration statistics for its output; recalibrate"
        return False
    if node.op_type == "Concat" and len(live) > 1:
        widths = [max(hi - lo, 1e-12) for lo, hi in (state.range_of(n) for n in live)]
        if max(widths) / min(widths) > state.config.concat_range_ratio:
            state.reasons[node.name] = (
                f"inputs' ranges differ {max(widths) / min(widths):.0f}x: one scale would crush the narrower "
                "(e.g. scores beside boxes)"
            )
            return False
    state.quantized[node.name] = node.op_type
    for name in [*live, *outputs]:
        state.add_q(name)
    for position, name in enumerate(node.input):
        if name in data and index.is_constant(name):
            state.weights.append(WeightPlan(node.name, position, name, "constant", None))
    return True


# ops whose float form is quantkit's choice, not onnxruntime's lack of a kernel (hunt35 F8: a classifier's
# Gemm inside an If stayed float under 'no integer kernel in onnxruntime')
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})


def float_reason(node: onnx.NodeProto) -> str:
    if node.op_type in INTEGER_PATH_OPS:
        return "not between quantized ops"
    if node.op_type in COMPUTE_OPS:
        return "not quantizable"
    if node.op_type in SUBGRAPH_OPS:
        return "quantkit does not quantize inside subgraphs: the layers in its branches or body stay float"
    if node.op_type in RECURRENT_OPS:
        return "quantkit does not quantize recurrent layers (their weights stay float)"
    return "no integer kernel in onnxruntime (kept float)"
