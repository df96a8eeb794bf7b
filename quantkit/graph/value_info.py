"""Declared shapes of inner tensors (graph.value_info) that the graph contradicts.

An exporter's or an editing tool's value_info is a hint: onnxruntime meets a declaration that its own
inference contradicts, warns ("Falling back to lenient merge") and runs the model. onnx's inference,
which every quantkit pass relies on, stops at it instead: calibrate observed 12 of SqueezeNet's 66
tensors (those before the wrong declaration) and both converts failed in onnxruntime on the shape the
declaration had propagated (hunt42 F5). Such declarations are dropped on the way in; the rest stay (the
only type an op of no known schema may get).
"""

from __future__ import annotations

import onnx

from quantkit.errors import ModelError
from quantkit.graph import model_io


def stale_declarations(model: onnx.ModelProto) -> tuple[str, ...]:
    """Names of the model's value_info entries whose element type or shape the graph's own inference
    (without any value_info) contradicts: another type, another rank, or another size on an axis where
    both give one. () where the model declares none, or inference fails without them."""
    if not model.graph.value_info:
        return ()
    declared = [onnx.ValueInfoProto.FromString(v.SerializeToString()) for v in model.graph.value_info]
    del model.graph.value_info[:]  # inferred bare, then given back: the caller's model is unchanged
    try:
        inferred = model_io.infer_shapes(model)
    except ModelError:
        return ()
    finally:
        model.graph.value_info.extend(declared)
    found = {v.name: v.type.tensor_type for v in inferred.graph.value_info if v.type.HasField("tensor_type")}
    return tuple(
        v.name
        for v in declared
        if v.name in found
        and v.type.HasField("tensor_type")
        and _contradicts(v.type.tensor_type, found[v.name])
    )


def without_declarations(model: onnx.ModelProto, names: tuple[str, ...]) -> onnx.ModelProto:
    """A copy of the model without the value_info entries `names`; the model itself where there is none."""
    if not names:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    drop_declarations(out.graph, set(names))
    return out


def drop_declarations(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the value_info entries `names` from `graph`, in place (their shapes are stale)."""
    kept = [v for v in graph.value_info if v.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _contradicts(declared: onnx.TypeProto.Tensor, inferred: onnx.TypeProto.Tensor) -> bool:
    if declared.elem_type and inferred.elem_type and declared.elem_type != inferred.elem_type:
        return True
    if not (declared.HasField("shape") and inferred.HasField("shape")):
        return False
    ours, theirs = declared.shape.dim, inferred.shape.dim
    if len(ours) != len(theirs):
        return True
    return any(
        a.HasField("dim_value") and b.HasField("dim_value") and a.dim_value != b.dim_value
        for a, b in zip(ours, theirs, strict=True)
    )
