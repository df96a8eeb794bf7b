"""Integer layers that cost more than they save: kept float.

An int8 layer saves time in proportion to its multiply-adds, but where its input arrives in float a
QuantizeLinear pass converts it, and where its output is read in float a DequantizeLinear pass converts
that back. A layer with few multiply-adds per converted element loses: its int8 kernel is no faster than
float (onnxruntime's u8s8 GEMM on a reduction of 27, a 3-channel 3x3 Conv, runs 2-4x slower than its
float NCHWc Conv on AVX2 without VNNI) and the conversions come on top. Measured as isolated layers on
that CPU (1 thread, float/int8 time): 3->10 3x3 0.25x, 10->16 3x3 0.84x, 8->8 3x3 0.69x, 64->64 1x1
0.98x, 16->16 3x3 1.58x, 16->32 3x3 1.21x, 64->64 3x3 2.2x. The rule keeps a layer float when

    intensity = K * elements(output) / (elements converted if int8 - elements converted if float
                                        + PASS_ELEMENTS * (passes if int8 - passes if float))

is below MIN_INTENSITY, with K its multiply-adds per output element and the element counts read from
the calibration statistics (the same images for every tensor). Float converts too where the layer sits
beside integer ops (a DQ of an integer input, a Q of an output integer ops read): a thin layer between
integer layers, or one writing a model output from an integer input, converts no more as int8 and
stays int8. Conversions are counted where they happen: the walk goes through integer-path ops with one
data input (MaxPool, Reshape, Transpose..., and an Add or Mul of a constant: a bias or a scale, integer
only because the layer is) to the tensor a Q node really reads or a DQ node writes.

One kernel costs far more than its conversions: a uint8 MaxPool in NCHW. onnxruntime moves a Q node up
over the MaxPool before it (QDQ propagation) and runs the pool on integers; it turns that into its fast
NhwcMaxPool only where the data is already channels-last, i.e. where an integer Conv writes it (through
elementwise ops such as PRelu). After a float Conv, the pool runs a generic NCHW uint8 kernel measured at
3-4.5 ns per window read (output elements x kernel area) against 0.4-0.9 ns per input element for the
float pool and 0.3-0.5 ns per element for a Q pass (1 thread, AVX2; 3x3/2 on 32x46x46: 583 us against
58 us float). mtcnn_onet's second Conv, int8 behind such a pool, made the model 0.73x FP32. The rule
counts that pool as SLOW_POOL_PASSES converted elements per window read on the int8 side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    from quantkit.planner.planning_state import Planning

# Below this many multiply-adds per converted element a layer runs faster in float (measured above).
MIN_INTENSITY = 64.0
JUDGED_OPS = frozenset({"Conv", "Gemm", "MatMul"})  # ConvTranspose's cost per output differs: not judged
ORT_FUSED_OPS = frozenset({"Softmax"})  # not planned as integer, but fused by onnxruntime when Q/DQ'd
WALKED_OPS = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Resize"})
# Ops onnxruntime moves a Q node up over (QDQ propagation), where their output has one reader.
PROPAGATED_OPS = frozenset({"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice"})
# Ops a channels-last layout passes through: onnxruntime's layout transformer moves its transposes over them.
LAYOUT_FREE_OPS = frozenset(
    {
        "Relu",
        "PRelu",
        "LeakyRelu",
        "Clip",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Elu",
        "Add",
        "Mul",
        "Concat",
    }
)
# A Q or DQ node's fixed cost (about 1 us per run, as long as converting 3000 elements; measured on the
# same CPU): what decides thin layers of small inputs (mtcnn_rnet's 576 -> 128 MatMul: 0.97x FP32 int8).
PASS_ELEMENTS = 3000.0
# A uint8 NCHW MaxPool window read, in Q-pass elements (3-4.5 ns against 0.3-0.5 ns; measured above).
SLOW_POOL_PASSES = 8.0


def intensity_text(score: float) -> str:
    """'54', '2.5', '0.16': a small layer's figure is no '0' (MTCNN O-Net's 256 -> 4 MatMul read so)."""
    return f"{score:.0f}" if score >= 10 else f"{score:.2g}"


def unpaid(state: Planning) -> dict[str, str]:
    """Quantized compute nodes whose intensity is below MIN_INTENSITY -> why they stay float."""
    found = {}
    for name, op_type in state.quantized.items():
        if op_type not in JUDGED_OPS:
            continue
        score = intensity(state, name)
        if score is not None and score < MIN_INTENSITY:
            pooled = _slow_pools(state, state.index.by_name[name]) > 0
            found[name] = (
                f"int8 would not pay for its Q/DQ ({intensity_text(score)} multiply-adds per element "
                f"converted, each Q/DQ pass also counted as {PASS_ELEMENTS:.0f} elements of overhead; int8 "
                f"pays from {MIN_INTENSITY:.0f}"
                + ("; the MaxPool before it would run onnxruntime's slow NCHW uint8 kernel" if pooled else "")
                + "; kept float)"
            )
    return found


def intensity(state: Planning, name: str) -> float | None:
    """Multiply-adds per element that int8 makes convert beyond what float would (inf when int8
    converts no more); None when the statistics do not say how large its tensors are."""
    index = state.index
    node = index.by_name[name]
    weight = index.constant(node.input[1])
    out = _final_output(state, node.output[0])
    if weight is None or out not in state.table.stats:
        return None
    k = _reduction(node.op_type, weight, bool(index.attribute(node, "transB", 0)))
    before, after = _input_side(state, node.input[0]), _output_side(state, out)
    if before is None or after is None:
        return None
    passes = sum(n > 0 for n in (before[0], after[0])) - sum(n > 0 for n in (before[1], after[1]))
    fixed = PASS_ELEMENTS * passes * max(state.table.samples_seen, 1)  # counts sum over the samples
    extra = before[0] + after[0] - before[1] - after[1] + fixed + _slow_pools(state, node)
    macs = float(k) * float(state.table.stats[out].count)
    return macs / extra if extra > 0 else float("inf")


def _reduction(op_type: str, weight: np.ndarray, trans_b: bool) -> int:
    """Multiply-adds per output element. weight: Conv [C_out, C_in/group, k...], Gemm [K, N] ([N, K]
    transposed), MatMul [K, N]."""
    if op_type == "Conv":
        return int(np.prod(weight.shape[1:]))
    return int(weight.shape[1] if trans_b else weight.shape[0])


def _final_output(state: Planning, tensor: str) -> str:
    """The tensor a compute node's Q node writes: through the folds (Relu, Clip, scale) after it."""
    while True:
        readers = [node for node, _ in state.index.consumers.get(tensor, [])]
        if len(readers) != 1 or readers[0].name not in state.folds or readers[0].name in state.reads:
            return tensor
        tensor = state.folds[readers[0].name]


def _count(state: Planning, tensor: str) -> float | None:
    stats = state.table.stats.get(tensor)
    return float(stats.count) if stats is not None else None


def _integer(state: Planning, node: onnx.NodeProto) -> bool:
    """Runs on integers: planned so, or an op onnxruntime fuses between a DQ and a Q of its own
    (Softmax, as QLinearSoftmax: a layer kept float after one would cost it that kernel)."""
    if node.name in state.quantized or node.name in state.folds:
        return True
    tensors = [node.input[0], node.output[0]] if node.input and node.output else []
    return node.op_type in ORT_FUSED_OPS and bool(tensors) and all(t in state.q for t in tensors)


def _walked(state: Planning, node: onnx.NodeProto) -> bool:
    """An integer-path op that belongs to the layer beside it: data movement, or an Add/Mul of one live
    input and a constant (a bias or a scale; integer only because the layer is)."""
    kind = state.quantized.get(node.name)
    if kind in WALKED_OPS:
        return True
    return kind in ("Add", "Mul") and len(_live_inputs(state, node)) == 1


def _live_inputs(state: Planning, node: onnx.NodeProto) -> list[str]:
    return [name for name in node.input if name and not state.index.is_constant(name)]


def _input_side(state: Planning, tensor: str) -> tuple[float, float] | None:
    """(elements a Q node converts for `tensor` if the layer is int8, elements a DQ node converts if it
    is float): (n, 0) when a float op or the graph writes it, (0, n) when an integer op does."""
    index, start = state.index, tensor
    while True:
        producer = index.producer.get(tensor)
        if producer is not None and _walked(state, producer):
            tensor = _live_inputs(state, producer)[0]
            continue
        if producer is not None and _integer(state, producer):
            count = _count(state, start)
            return None if count is None else (0.0, count)
        count = _count(state, tensor)
        return None if count is None else (count, 0.0)


def _output_side(state: Planning, tensor: str) -> tuple[float, float] | None:
    """(elements DQ nodes convert back to float from what `tensor` feeds if the layer is int8, elements
    a Q node converts for its integer readers if it is float)."""
    index = state.index
    dequantized, integer_read = 0.0, False
    todo, seen = [tensor], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        readers = [node for node, _ in index.consumers.get(name, [])]
        if name in index.graph_outputs or any(not _integer(state, r) for r in readers):
            count = _count(state, name)
            if count is None:
                return None
            dequantized += count
        for reader in readers:
            if _walked(state, reader):
                todo.extend(o for o in reader.output if o)
            elif _integer(state, reader):
                integer_read = True
    quantized = _count(state, tensor) if integer_read else 0.0
    return None if quantized is None else (dequantized, quantized)


def _slow_pools(state: Planning, node: onnx.NodeProto) -> float:
    """Q-pass elements the uint8 NCHW MaxPools before `node`'s input cost if it is int8: the pools
    onnxruntime runs on integers only for this layer (the walk stops at a tensor read elsewhere), where no
    integer Conv writes the data channels-last."""
    index, tensor, cost = state.index, node.input[0], 0.0
    while True:
        producer = index.producer.get(tensor)
        readers = index.consumers.get(tensor, [])
        if producer is None or producer.op_type not in PROPAGATED_OPS or len(readers) != 1:
            break
        if tensor in index.graph_outputs:
            break
        if producer.op_type == "MaxPool":
            out = _count(state, tensor)
            kernel = index.attribute(producer, "kernel_shape", [])
            if out is None or not isinstance(kernel, list):
                return 0.0
            cost += SLOW_POOL_PASSES * out * float(np.prod(kernel))
        tensor = producer.input[0]
    return 0.0 if cost == 0.0 or _channels_last(state, tensor) else cost


def _channels_last(state: Planning, tensor: str) -> bool:
    """Whether onnxruntime can have `tensor` channels-last: not where a float Conv (NCHWc) or the graph
    input writes it, directly or through layout-free ops (their first live input). Other writers are
    given the benefit of the doubt: the rule only acts on the case measured."""
    index = state.index
    while True:
        producer = index.producer.get(tensor)
        if producer is None:
            return False  # a graph input: NCHW
        if producer.op_type == "Conv":
            return state.quantized.get(producer.name) == "Conv"
        live = _live_inputs(state, producer)
        if producer.op_type not in LAYOUT_FREE_OPS | PROPAGATED_OPS or not live:
            return True
        tensor = live[0]
