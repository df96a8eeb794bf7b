"""Types for the tensors onnx's shape inference leaves untyped after ops it knows no schema for.

onnx knows no schema for com.microsoft's SkipLayerNormalization, BiasGelu, Attention, FastGelu ... (what
onnxruntime's transformer optimizer writes into the ViT and BERT files people ship): their outputs, and
every tensor computed from them, came out of onnx's inference untyped. Untyped, they were neither observed
by calibrate nor measured by convert: hunt35's optimized ViT kept 60 of its 72 weight MatMuls float
("recalibrate") and its float16 convert failed on a logit it had not fetched. Such an op's outputs are of
the float type it reads (an untyped output of an op onnx does know is too: a Reshape of one), but for the
few listed that write integers; with those types given, onnx's inference runs again for the shapes.
(onnxruntime's symbolic shape inference knows these ops, but needs sympy, which quantkit does not
install.)
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})

# (op type, output index) of contrib ops whose output is no float though their first input is one
INTEGER_OUTPUTS = frozenset(
    {("EmbedLayerNormalization", 1), ("QuantizeLinear", 0), ("DynamicQuantizeLSTM", 0)}
)


def inferred_types(skeleton: onnx.ModelProto, data_prop: bool) -> onnx.ModelProto:
    """onnx's shape inference of skeleton, with guessed types where ops of no known schema left outputs
    untyped (with_guessed_types); raises as onnx's inference does."""
    inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=data_prop)
    return with_guessed_types(skeleton, inferred, data_prop)


def with_guessed_types(
    skeleton: onnx.ModelProto, inferred: onnx.ModelProto, data_prop: bool
) -> onnx.ModelProto:
    """inferred (onnx's inference of skeleton, data_prop as given) where an op of no known schema left
    node outputs untyped: those typed as the float they read (guessed_types), then onnx's inference again
    with them; where that fails (a guess it disputes), inferred with the guesses only. inferred itself
    where nothing is untyped."""
    guessed = guessed_types(inferred)
    if not guessed:
        return inferred
    values = [helper.make_tensor_value_info(name, elem, None) for name, elem in sorted(guessed.items())]
    given = onnx.ModelProto()
    given.CopyFrom(skeleton)
    given.graph.value_info.extend(values)
    try:
        return onnx.shape_inference.infer_shapes(given, data_prop=data_prop)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
        inferred.graph.value_info.extend(values)
        return inferred


# the input that holds a QOperator kernel's output zero point, whose type its output has (hq69 F5: a
# QLinearConcat, whose first input is its float Y_scale, was guessed float, and check called the int8
# DequantizeLinear after it a 'float Q/DQ')
OUTPUT_ZERO_POINT = {
    "QLinearConcat": 1,
    "QLinearAveragePool": 4,
    "QLinearGlobalAveragePool": 4,
    "QLinearSigmoid": 4,
    "QLinearLeakyRelu": 4,
    "QLinearSoftmax": 4,
    "QLinearReduceMean": 4,
    "QLinearAdd": 7,
    "QLinearMul": 7,
    "QLinearConv": 7,
    "QLinearConvTranspose": 7,
    "QLinearMatMul": 7,
    "QLinearWhere": 8,
    "QGemm": 8,
}


def guessed_types(model: onnx.ModelProto) -> dict[str, int]:
    """Node output -> a type, for the outputs the model's inference left untyped (in graph order, so a
    guess reaches the ops after it): of an op onnx knows, the type of the input its schema gives the same
    type variable (hq78 F1: onnx 1.23 types no output of opset 21's GroupNormalization, so nothing after
    one was calibrated); of an op of no known schema, the type of its first input where that is a float
    (a quantized op, QLinearConv or MatMulIntegerToFloat, reads integers first and is left alone)."""
    graph = model.graph
    versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types = {name: elem for name, elem in types.items() if elem}
    types.update((init.name, init.data_type) for init in graph.initializer)
    guessed: dict[str, int] = {}
    for node in graph.node:
        if not any(name and name not in types for name in node.output):
            continue
        schema = _schema(node, versions)
        if schema is not None:
            for name, elem in _by_schema(schema, node, types).items():
                types[name] = guessed[name] = elem
            continue
        first = types.get(node.input[0]) if node.input else None
        at = OUTPUT_ZERO_POINT.get(node.op_type, len(node.input))
        if at < len(node.input) and node.input[at] and types.get(node.input[at]):  # a QOperator kernel's
            first = types[node.input[at]]
            if node.output and node.output[0] not in types:
                types[node.output[0]] = guessed[node.output[0]] = first
            continue
        if first not in FLOAT_TYPES:
            continue
        for k, name in enumerate(node.output):
            if name and name not in types and (node.op_type, k) not in INTEGER_OUTPUTS:
                types[name] = guessed[name] = first
    return guessed


def _schema(node: onnx.NodeProto, versions: dict[str, int]) -> onnx.defs.OpSchema | None:
    """onnx's schema of a node of a standard domain at the model's opset, or None (a contrib op)."""
    domain = node.domain or "ai.onnx"
    if domain not in ("ai.onnx", "ai.onnx.ml") or domain not in versions:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, versions[domain], "" if domain == "ai.onnx" else domain)
    except onnx.defs.SchemaError:
        return None


def _by_schema(schema: onnx.defs.OpSchema, node: onnx.NodeProto, types: dict[str, int]) -> dict[str, int]:
    """The untyped outputs of `node` whose schema type variable an input of known type shares -> that
    type (GroupNormalization's Y is its X's T); outputs of a fixed type or an unbound variable: none."""
    if not schema.outputs or not schema.inputs or any(a.type == a.GRAPH for a in node.attribute):
        return {}  # a Loop's or Scan's outputs are each of their own type (hq81 R2: 'V' is no one type)
    bound: dict[str, int] = {}
    for k, name in enumerate(node.input):
        formal = schema.inputs[min(k, len(schema.inputs) - 1)]  # the last one may be variadic
        if not formal.is_homogeneous:  # a variadic of mixed types (Loop's, Scan's 'V')
            continue
        if name and types.get(name):
            bound.setdefault(formal.type_str, types[name])
    found: dict[str, int] = {}
    for k, name in enumerate(node.output):
        formal = schema.outputs[min(k, len(schema.outputs) - 1)]
        if name and name not in types and formal.type_str in bound:
            found[name] = bound[formal.type_str]
    return found
