"""A Resize given `axes` (opset 18+) written as the same Resize over every axis.

onnxruntime 1.32's layout transformer (ORT_ENABLE_ALL, NHWC kernels for the integer Convs around it)
renumbers a Resize's scales or sizes as if they listed every axis: between two quantized Convs, a Resize
with axes [2, 3] failed the first run of the Q/DQ model ("Gather: indices element out of data bounds",
or "Number of elements of input 'sizes' (0) does not match the number of axes") while the FP32 model ran
(hq78 F2; quantkit's and any Q/DQ model alike). Listed for every axis, scales of 1 and the input's own
sizes on the others, the Resize computes exactly what it did and runs at every level.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.errors import ModelError
from quantkit.graph import model_io
from quantkit.graph.augment import declared_dims
from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex


def resize_all_axes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(`model` with each Resize of an `axes` attribute listing its constant scales, or its constant
    sizes under the default 'stretch' policy, for every axis instead; how many). The model itself where
    none, or where the input's rank is not known (onnx cannot infer it)."""
    resizes = [n for n in model.graph.node if _has_axes(n)]
    if not resizes:
        return model, 0
    try:
        shapes = declared_dims(model_io.infer_shapes(model))  # 0 where not a fixed number
    except ModelError:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    index, namer = GraphIndex(out), Namer(out)
    nodes: list[onnx.NodeProto] = []
    done = 0
    for node in out.graph.node:
        shape = shapes.get(node.input[0]) if node.input else None
        if _has_axes(node) and shape is not None:
            added = _full_rank(node, index, namer, shape, out.graph)
            if added is not None:
                nodes.extend(added)
                done += 1
        nodes.append(node)
    if not done:
        return model, 0
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, done


def _has_axes(node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "Resize"
        and node.domain in ("", "ai.onnx")
        and any(a.name == "axes" for a in node.attribute)
    )


def _full_rank(
    node: onnx.NodeProto,
    index: GraphIndex,
    namer: Namer,
    shape: list[int],
    graph: onnx.GraphProto,
) -> list[onnx.NodeProto] | None:
    """Rewrite `node` (in place) to list its scales or sizes for all len(shape) axes (shape: its input's
    dimensions, 0 where not fixed), dropping `axes`; the nodes to insert before it (a Shape of the input
    where sizes of dynamic dimensions are needed). None, `node` untouched, where its scales / sizes are
    not constants or its policy is not stretch."""
    rank = len(shape)
    if rank == 0:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axes = [int(a) % rank for a in attrs["axes"]]
    if len(set(axes)) != len(axes):
        return None
    base = node.name or node.output[0]
    given = node.input[1] if len(node.input) > 1 else ""
    roi = index.constant(given) if given else None
    if given and (roi is None or roi.size):  # a roi lists the axes too (tf_crop_and_resize, hq81 R1)
        return None
    scales = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    sizes = index.constant(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    stretch = attrs.get("keep_aspect_ratio_policy", b"stretch") in (b"stretch", "stretch")
    added: list[onnx.NodeProto] = []
    if scales is not None and scales.size == len(axes):
        full = np.ones(rank, np.float32)
        full[axes] = scales.reshape(-1)
        node.input[2] = _initializer(graph, namer, f"{base}_scales", full)
    elif sizes is not None and sizes.size == len(axes) and stretch:
        sized = dict(zip(axes, sizes.reshape(-1).astype(np.int64).tolist(), strict=True))
        others = [k for k in range(rank) if k not in sized]
        lead = len(others)
        if all(shape[k] > 0 for k in others):
            full_sizes = np.array([sized.get(k, shape[k]) for k in range(rank)], np.int64)
            node.input[3] = _initializer(graph, namer, f"{base}_sizes", full_sizes)
        elif others == list(range(lead)):  # resized axes last: the others' sizes read from the input
            kept, tail = namer.fresh(f"{base}_kept_sizes"), [sized[k] for k in range(lead, rank)]
            full_name = namer.fresh(f"{base}_sizes")
            tail_name = _initializer(graph, namer, f"{base}_resized_sizes", np.array(tail, np.int64))
            added.append(helper.make_node("Shape", [node.input[0]], [kept], name=kept, end=lead))
            added.append(helper.make_node("Concat", [kept, tail_name], [full_name], name=full_name, axis=0))
            node.input[3] = full_name
        else:
            return None
    else:
        return None
    kept_attrs = [a for a in node.attribute if a.name != "axes"]
    del node.attribute[:]
    node.attribute.extend(kept_attrs)
    return added


def _initializer(graph: onnx.GraphProto, namer: Namer, base: str, value: np.ndarray) -> str:
    name = namer.fresh(base)
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name
