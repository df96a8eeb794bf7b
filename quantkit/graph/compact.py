"""convert --compact: the same computation in fewer bytes, for targets where a few kilobytes count.

Three rewrites, none of which changes a single output value:
- identical initializers (same type, shape and bytes) are stored once;
- attributes equal to their default (the operator schema's, or the spec's stated default for Conv and
  pooling strides, dilations and pads) are left out;
- tensor names inside the graph become short numbers. Graph inputs and outputs and every node name are
  kept, so exclusion lists and reports still apply; what is lost is the link from an inner tensor to
  the framework's name for it.

On small models these bytes are a visible share of the file: vit_mnist's node definitions and names are
5 % of its float16 file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

# Ops whose strides, dilations and pads the spec defaults to 1, 1 and 0 without declaring it in the
# schema. Not ConvTranspose: its pads follow output_shape when that is given.
WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})


def compact(model: onnx.ModelProto, keep: Iterable[str] = ()) -> onnx.ModelProto:
    """A copy of `model` with shared initializers, default attributes dropped and short tensor names.
    keep: inner tensors whose names stay (those convert measures: a Softmax output's logits)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fixed = _fixed_names(out) | set(keep)
    _share_initializers(out.graph, fixed)
    _drop_default_attributes(out)
    _shorten_names(out.graph, fixed)
    return out


def _fixed_names(model: onnx.ModelProto) -> set[str]:
    """Names nothing may rename or merge away, nor a new name take: graph inputs and outputs, and every
    name used inside a subgraph (the outer tensors it reads, and its own, which outer names must not
    shadow)."""
    graph = model.graph
    return {v.name for v in [*graph.input, *graph.output]} | _subgraph_names(graph) | {""}


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names.update(i.name for i in [*sub.input, *sub.output, *sub.initializer, *sub.value_info])
                for inner in sub.node:
                    names.update(inner.input)
                    names.update(inner.output)
                names |= _subgraph_names(sub)
    return names


def share_weights(model: onnx.ModelProto, min_bytes: int = 1 << 10) -> onnx.ModelProto:
    """`model` with identical initializers of at least `min_bytes` stored once (the INT8 rewrite quantizes
    a weight once per reader: PyPI CapSpot's siamese VGG16 wrote both branches, 2.0x smaller, not 4x).
    The model itself (no copy) where there are none; smaller ones (scales, zero points) are left to
    --compact."""
    alias = _twins(model.graph, _fixed_names(model), min_bytes)
    if not alias:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _merge(out.graph, alias)
    return out


def _share_initializers(graph: onnx.GraphProto, fixed: set[str]) -> None:
    _merge(graph, _twins(graph, fixed))


def _twins(graph: onnx.GraphProto, fixed: set[str], min_bytes: int = 0) -> dict[str, str]:
    """Initializer name -> the earlier one with the same type, shape and values (found by a digest, so
    memory stays small on large models, and confirmed by comparing the values themselves). A name in
    `fixed` (a graph input may be fed at run time) neither merges nor is merged into, nor does one under
    `min_bytes`."""
    first: dict[bytes, onnx.TensorProto] = {}
    alias: dict[str, str] = {}
    for init in graph.initializer:
        if init.name in fixed or (min_bytes and init.ByteSize() < min_bytes):
            continue
        value = numpy_helper.to_array(init)
        digest = hashlib.blake2b(f"{init.data_type}{list(init.dims)}".encode(), digest_size=16)
        digest.update(value.tobytes())
        twin = first.get(digest.digest())
        if twin is not None and np.array_equal(numpy_helper.to_array(twin), value):
            alias[init.name] = twin.name
        else:
            first.setdefault(digest.digest(), init)
    return alias


def _merge(graph: onnx.GraphProto, alias: dict[str, str]) -> None:
    """Each aliased initializer dropped, its readers reading its twin."""
    if not alias:
        return
    kept = [init for init in graph.initializer if init.name not in alias]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in graph.node:
        node.input[:] = [alias.get(name, name) for name in node.input]
    infos = [v for v in graph.value_info if v.name not in alias]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def _drop_default_attributes(model: onnx.ModelProto) -> None:
    opsets = {o.domain or "": o.version for o in model.opset_import}
    for node in model.graph.node:
        domain = node.domain or ""
        if domain not in ("", "ai.onnx"):
            continue
        try:
            schema = defs.get_schema(node.op_type, opsets.get("", 1), "")
        except defs.SchemaError:
            continue
        kept = [a for a in node.attribute if not _is_default(node.op_type, a, schema)]
        if len(kept) < len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(kept)


def _is_default(op_type: str, attr: onnx.AttributeProto, schema: defs.OpSchema) -> bool:
    declared = schema.attributes.get(attr.name)
    if declared is not None and declared.default_value.type != onnx.AttributeProto.UNDEFINED:
        return bool(helper.get_attribute_value(attr) == helper.get_attribute_value(declared.default_value))
    if op_type in WINDOW_OPS and attr.type == onnx.AttributeProto.INTS:
        stated = {"strides": 1, "dilations": 1, "pads": 0}.get(attr.name)
        return stated is not None and all(v == stated for v in attr.ints)
    return False


def _shorten_names(graph: onnx.GraphProto, fixed: set[str]) -> None:
    """Every other tensor, in order of first appearance, becomes the shortest free decimal number."""
    fresh = _numbers(fixed)
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if name in fixed:
            return name
        if name not in renamed:
            renamed[name] = next(fresh)
        return renamed[name]

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    for info in graph.value_info:
        info.name = short(info.name)


def _numbers(taken: set[str]) -> Iterator[str]:
    k = 0
    while True:
        name = str(k)
        k += 1
        if name not in taken:
            yield name
