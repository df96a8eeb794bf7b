"""A Pad given `axes` (opset 18+) written as the same Pad with its pads listed for every axis.

onnxruntime 1.32's layout transformer (ORT_ENABLE_ALL, NHWC kernels for the integer Convs around it)
permutes a Pad's pads as if they listed every axis: a Pad with axes between two int8 Convs failed the first
run of the Q/DQ model ("Gather: indices element out of data bounds, idx=4 must be within the inclusive
range [-4,3]"), as resize_axes describes for Resize. Listed for every axis, zeros on the others, the Pad
computes exactly what it did, runs at every level, and a zero Pad before a Conv folds into it
(graph.fold_pads).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.errors import ModelError
from quantkit.graph import model_io
from quantkit.graph.augment import declared_dims
from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex, drop_unread_initializers


def pad_all_axes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(`model` with each Pad whose constant `axes` input lists some axes given constant pads for every
    axis and no axes; how many). The model itself where none, or where onnx cannot infer the input's
    rank."""
    pads = [n for n in model.graph.node if _has_axes(n)]
    if not pads:
        return model, 0
    try:
        shapes = declared_dims(model_io.infer_shapes(model))
    except ModelError:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    index, namer = GraphIndex(out), Namer(out)
    overridable = {value.name for value in out.graph.input}
    done = 0
    for node in out.graph.node:
        shape = shapes.get(node.input[0]) if node.input else None
        if _has_axes(node) and shape and not overridable & set(node.input[1:]):
            full = listed_pads(index.constant(node.input[1]), index.constant(node.input[3]), len(shape))
            if full is not None:
                node.input[1] = namer.fresh(f"{node.name or node.output[0]}_pads")
                out.graph.initializer.append(numpy_helper.from_array(full, node.input[1]))
                del node.input[3:]
                done += 1
    if not done:
        return model, 0
    drop_unread_initializers(out)
    return out, done


def listed_pads(pads: np.ndarray | None, axes: np.ndarray | None, rank: int) -> np.ndarray | None:
    """pads [2 k] (begins then ends) for the k `axes` as pads [2 rank] for every axis (zeros on the
    others); None where either is not a constant, they disagree in length or an axis is out of range or
    repeated."""
    if pads is None or axes is None or rank <= 0:
        return None
    listed = [int(a) for a in axes.reshape(-1)]
    if pads.size != 2 * len(listed) or any(not -rank <= a < rank for a in listed):
        return None
    positions = [a % rank for a in listed]
    if len(set(positions)) != len(positions):
        return None
    full = np.zeros(2 * rank, np.int64)
    given = pads.reshape(-1).astype(np.int64)
    for k, axis in enumerate(positions):
        full[axis], full[rank + axis] = given[k], given[len(positions) + k]
    return full


def _has_axes(node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "Pad"
        and node.domain in ("", "ai.onnx")
        and len(node.input) > 3
        and bool(node.input[3])
    )
