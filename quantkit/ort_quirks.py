"""Model forms onnxruntime 1.32's CPU provider mishandles, known by their form alone (no session): a
session for one is made so that it runs right (runtime.Session), and the figures of one say how.

- float8 Q/DQ: its extended (QDQ) optimizations miscompute them (SqueezeNet in FP8: 27.6 dB against FP32
  at the basic level, 11.9 dB above it); they run at ORT_ENABLE_BASIC.
- a 3-D Transpose whose output a MatMul reads as its first input, in float16: the NCHWc layout pass
  (NchwcTransformer, ORT_ENABLE_ALL) segfaults making the session, no exception (hq168 F1: a Keras CNN +
  BiLSTM's Dense after Cast -> Transpose(1, 0, 2); perms [1, 0, 2] and [1, 2, 0] crash it, [0, 2, 1] and
  2-D or 4-D ones do not). Ops onnxruntime removes or passes before that pass (Identity, Dropout, a Cast)
  or a scale by a constant between the two crash it the same (hq172 F2, hq173 F1); a torch transformer
  exported sequence-first holds the pattern (its MultiheadAttention's Transpose -> Mul(scale) -> MatMul).
  A session for such a model runs without that pass; the float16 rewrite keeps the Transpose float32
  (planner.fp16_plan)."""

from __future__ import annotations

import onnx

_FLOAT8 = ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
FLOAT8_TYPES = frozenset(getattr(onnx.TensorProto, name) for name in _FLOAT8)


def has_float8(model: onnx.ModelProto) -> bool:
    """Whether the model holds float8 tensors (the zero points of float8 Q/DQ)."""
    if any(t.data_type in FLOAT8_TYPES for t in model.graph.initializer):
        return True
    return any(
        a.t.data_type in FLOAT8_TYPES
        for n in model.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
    )


# what onnxruntime removes, or what passes the values on unchanged in layout, between a Transpose and a MatMul
PASSED_THROUGH = frozenset({"Identity", "Dropout", "Cast"})
# a scale by a constant between them crashes it the same (hq173 F1: torch's MultiheadAttention scales q
# after its transpose(0, 1): Transpose(1, 0, 2) -> Mul(constant) -> MatMul)
SCALES = frozenset({"Mul", "Div"})
NCHWC_PASS = "NchwcTransformer"  # onnxruntime's name for it (InferenceSession's disabled_optimizers)


def crashing_transposes(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """(Transpose, MatMul) for each 3-D Transpose of `graph` (its subgraphs not read) whose output a
    MatMul reads as its first input, directly or through PASSED_THROUGH ops: the form whose float16
    version crashes the NCHWc pass."""
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, k))
    constants = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    found = []
    for node in graph.node:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
        if node.op_type != "Transpose" or len(perm) != 3 or not node.output:
            continue
        seen, todo = {node.output[0]}, [node.output[0]]
        while todo:
            for reader, k in readers.get(todo.pop(), []):
                if reader.op_type == "MatMul" and k == 0:
                    found.append((node, reader))
                elif (reader.op_type in PASSED_THROUGH and k == 0) or (
                    reader.op_type in SCALES and len(reader.input) == 2 and reader.input[1 - k] in constants
                ):
                    fresh = [o for o in reader.output[:1] if o and o not in seen]
                    seen.update(fresh)
                    todo.extend(fresh)
    return found


def holds_float16(model: onnx.ModelProto) -> bool:
    """Whether any value of the main graph is float16: a weight, a Constant, a Cast's target, an input,
    an output or a typed intermediate."""
    graph, half = model.graph, onnx.TensorProto.FLOAT16
    if any(t.data_type == half for t in graph.initializer):
        return True
    if any(v.type.tensor_type.elem_type == half for v in (*graph.input, *graph.output, *graph.value_info)):
        return True
    return any(
        (node.op_type == "Cast" and a.name == "to" and a.i == half) or a.t.data_type == half
        for node in graph.node
        for a in node.attribute
    )


def nchwc_crash(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """crashing_transposes of a model that holds float16 values, those whose Transpose is not known to be
    of another type by shape inference (hq173 F2: quantkit's own --to fp16 models keep it float32 and load;
    timed without the NCHWc pass, a PP-OCRv2 recognizer's read 0.72x where a default session runs 0.97x);
    [] for any other."""
    found = crashing_transposes(model.graph) if holds_float16(model) else []
    if not found:
        return []
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # onnx's checker raises its own types; untyped, each is kept
        return found
    types = {
        v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)
    }
    half = onnx.TensorProto.FLOAT16
    return [(t, m) for t, m in found if types.get(t.output[0], half) in (half, onnx.TensorProto.UNDEFINED)]
