"""A zero Pad before a Conv folded into the Conv's own pads, as onnxruntime's PadFusion does at its basic
level and exporters of explicit padding leave it (Keras ZeroPadding2D before a strided depthwise
convolution, through tf2onnx; Paddle2ONNX).

Left in place, the Pad sits between the Conv and the DequantizeLinear that would feed it, which no
integer kernel reads: in Keras MobileNetV3Small the four strided depthwise convolutions after one stayed
float. Folded, Conv(Pad(x)) is Conv(x) with the Pad's spatial sizes added to its pads: exact, since a
Conv pads with zeros.
"""

from __future__ import annotations

import numpy as np
import onnx

from quantkit.graph.query import GraphIndex, drop_unread_initializers


def fold_pads(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of `model` with every foldable Pad -> Conv made one Conv, the number folded); `model` itself
    where none is. Foldable: a constant-mode Pad by zero, with constant, non-negative pads on the spatial
    axes only, whose output only that Conv reads (as its data input, not a graph output or in a body);
    the Conv pads explicitly (no auto_pad)."""
    index = GraphIndex(model)
    overridable = {value.name for value in model.graph.input}
    folds: dict[str, tuple[str, list[int]]] = {}  # Conv name -> (its new input, its new pads)
    for node in index.nodes:
        found = _foldable(index, overridable, node)
        if found is not None:
            conv, pads = found
            folds[conv.name] = (node.input[0], pads)
    if not folds:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    dropped = set()
    for node in out.graph.node:
        if node.name in folds:
            source, pads = folds[node.name]
            dropped.add(node.input[0])
            node.input[0] = source
            kept = [a for a in node.attribute if a.name != "pads"]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute("pads", pads)])
    nodes = [node for node in out.graph.node if not (node.op_type == "Pad" and node.output[0] in dropped)]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    drop_unread_initializers(out)
    return out, len(folds)


def _foldable(
    index: GraphIndex, overridable: set[str], pad: onnx.NodeProto
) -> tuple[onnx.NodeProto, list[int]] | None:
    """(the Conv `pad` feeds, the Conv's pads with the Pad's added) when foldable, else None."""
    if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx") or len(pad.output) != 1:
        return None
    if index.attribute(pad, "mode", b"constant") not in (b"constant", "constant"):
        return None
    output = pad.output[0]
    readers = index.consumers.get(output, [])
    if len(readers) != 1 or output in index.graph_outputs or output in index.captured:
        return None
    conv, position = readers[0]
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or position != 0:
        return None
    if index.attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    pads = _pads(index, overridable, pad)
    if pads is None or len(pads) % 2 or min(pads, default=0) < 0:
        return None
    rank = len(pads) // 2
    begins, ends = pads[:rank], pads[rank:]
    if rank < 3 or any(begins[:2]) or any(ends[:2]):
        return None  # batch or channels padded: not a Conv's padding
    spatial = rank - 2
    conv_pads = index.attribute(conv, "pads", [0] * (2 * spatial))
    assert isinstance(conv_pads, list)
    if len(conv_pads) != 2 * spatial:
        return None
    merged = [conv_pads[i] + begins[2 + i] for i in range(spatial)]
    merged += [conv_pads[spatial + i] + ends[2 + i] for i in range(spatial)]
    return conv, merged


def _pads(index: GraphIndex, overridable: set[str], pad: onnx.NodeProto) -> list[int] | None:
    """The Pad's pads when known and the value it pads with is 0, else None."""
    if len(pad.input) > 1:  # opset 11 and later: pads, constant_value, axes as inputs
        if len(pad.input) > 3 and pad.input[3]:
            return None
        if pad.input[1] in overridable or (len(pad.input) > 2 and pad.input[2] in overridable):
            return None
        pads = index.constant(pad.input[1])
        value = index.constant(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
        if pads is None or value is None or value.size != 1 or float(value.reshape(())) != 0.0:
            return None
        return [int(v) for v in pads.reshape(-1)]
    attribute = index.attribute(pad, "pads")
    if not isinstance(attribute, list) or index.attribute(pad, "value", 0.0) != 0.0:
        return None
    return [int(v) for v in attribute]
