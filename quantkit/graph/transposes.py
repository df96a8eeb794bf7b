"""Transposes that cancel through layout-free ops, taken out (as onnxruntime's transpose optimizer does
before it runs a model).

tf2onnx writes a Keras model's NHWC convolutions as Transpose(NHWC -> NCHW) -> Conv -> Transpose(NCHW ->
NHWC), with the batch norms, activations, squeeze-excite products and residual Adds between them in NHWC,
and relies on its own optimizer to cancel the pairs. Where that optimizer fails (Keras 3 MobileNetV3 with
include_preprocessing, tf2onnx 1.17: 108 Transposes kept), every int8 island is a Transpose sandwich that
profiles slower than float: 5 of 54 Convs went int8 (1.04x) where the same graph with the pairs cancelled
gets 34 of 54 (1.27x, hq62a C).

A region is a set of tensors that a Transpose with permutation p makes and that layout-free ops carry on:
elementwise ops whose other inputs are constants (transposed with them), reductions that keep their rank,
Softmax, Concat, Split, Pad and Slice with their axes renumbered. Stored untransposed (each region tensor
V as transpose(V, inverse p)), the region needs none of the Transposes entering it, and a Transpose
leaving it by the inverse permutation is the identity; a tensor read outside the region (another op, an
If body) gets one Transpose back, under its own name. An op that writes a graph output stays outside,
so that the output keeps its writer (a Sigmoid's output is measured by its logits). A region is
rewritten only where this removes Transposes. Exact: the same values, moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.graph import model_io
from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex, drop_unread_initializers
from quantkit.graph.value_info import drop_declarations

ELEMENTWISE = frozenset(
    {
        "Abs", "Add", "And", "Cast", "Ceil", "Celu", "Clip", "Cos", "Div", "Elu", "Equal", "Erf", "Exp",
        "Floor", "Gelu", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "IsInf",
        "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "Max", "Mean", "Min", "Mish", "Mod", "Mul",
        "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid",
        "Sign", "Sin", "Softplus", "Softsign", "Sqrt", "Sub", "Sum", "Tanh", "ThresholdedRelu", "Where",
        "Xor",
    }
)  # fmt: skip
REDUCTIONS = frozenset(
    {
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
        "ReduceProd", "ReduceSum", "ReduceSumSquare",
    }
)  # fmt: skip
MAX_ROUNDS = 4  # a rewrite can leave Transposes of a composed permutation for another round


@dataclass(frozen=True)
class _Region:
    perm: tuple[int, ...]
    members: dict[str, int]  # region tensor -> component
    entries: dict[str, str]  # output of an entering Transpose -> its input (the tensor untransposed)
    nodes: dict[str, int]  # region op's name -> component


def cancel_transposes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of `model` with the Transposes that cancel through layout-free ops taken out, the number
    taken out); `model` itself where none do. model: every node named, topologically ordered, weights
    as initializers."""
    before = sum(node.op_type == "Transpose" for node in model.graph.node)
    current = model
    for _ in range(MAX_ROUNDS):
        changed = False
        for perm in _perms(current):
            rewritten = _rewrite(current, perm)
            if rewritten is not None:
                current, changed = rewritten, True
        if not changed:
            break
    after = sum(node.op_type == "Transpose" for node in current.graph.node)
    return (current, before - after) if current is not model else (model, 0)


def _perms(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    """The distinct non-identity permutations of the graph's Transposes, sorted."""
    found = set()
    for node in model.graph.node:
        if node.op_type == "Transpose" and node.domain in ("", "ai.onnx"):
            perm = _perm_of(node)
            if perm is not None and not _identity(perm):
                found.add(perm)
    return sorted(found)


def _perm_of(node: onnx.NodeProto) -> tuple[int, ...] | None:
    for attr in node.attribute:
        if attr.name == "perm":
            return tuple(attr.ints)
    return None  # reverses the axes, rank unknown here


def _rewrite(model: onnx.ModelProto, perm: tuple[int, ...]) -> onnx.ModelProto | None:
    """A copy of `model` with the profitable regions of `perm` stored untransposed, or None."""
    index = GraphIndex(model)
    fixed = frozenset(index.initializers) - {value.name for value in model.graph.input}
    region, parent = _grow(index, fixed, perm, model_io.opset_version(model))
    if not region.members:
        return None
    gains = _gains(index, region, parent)
    kept = {root for root, gain in gains.items() if gain > 0}
    if not kept:
        return None
    chosen = _Region(
        perm,
        {t: parent_root for t, c in region.members.items() if (parent_root := _find(parent, c)) in kept},
        {y: x for y, x in region.entries.items() if _find(parent, region.members[y]) in kept},
        {n: c for n, c in region.nodes.items() if _find(parent, c) in kept},
    )
    return _apply(model, chosen)


def _grow(
    index: GraphIndex, fixed: frozenset[str], perm: tuple[int, ...], opset: int
) -> tuple[_Region, list[int]]:
    """The region tensors of `perm`, found in one pass in graph order, and the union-find parents of
    their components."""
    members: dict[str, int] = {}
    entries: dict[str, str] = {}
    nodes: dict[str, int] = {}
    parent: list[int] = []
    for node in index.nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Transpose" and _perm_of(node) == perm and node.input[0] not in members:
            parent.append(len(parent))
            members[node.output[0]] = parent[-1]
            entries[node.output[0]] = node.input[0]
            continue
        inside = [name for name in node.input if name in members]
        if any(out in index.graph_outputs for out in node.output):
            continue  # an output keeps its writer: what measures it looks there (a Sigmoid's logits)
        if not inside or not _layout_free(index, fixed, node, inside, perm, opset):
            continue
        roots = sorted({_find(parent, members[name]) for name in inside})
        for other in roots[1:]:
            parent[other] = roots[0]
        nodes[node.name] = roots[0]
        if _closes(index, node, perm):
            continue  # its output is the same either way: not a region tensor
        for out in node.output:
            if out:
                members[out] = roots[0]
    return _Region(perm, members, entries, nodes), parent


def _find(parent: list[int], item: int) -> int:
    while parent[item] != item:
        parent[item] = parent[parent[item]]
        item = parent[item]
    return item


def _layout_free(
    index: GraphIndex,
    fixed: frozenset[str],
    node: onnx.NodeProto,
    inside: Sequence[str],
    perm: tuple[int, ...],
    opset: int,
) -> bool:
    """Whether `node`, reading the region tensors `inside` (of `perm`'s rank), computes the same values on
    them stored untransposed, given its other inputs transposed or renumbered as _apply does."""
    rank = len(perm)
    data = _data_inputs(node)
    others = [name for i, name in enumerate(node.input) if name and name not in inside and i in data]
    settings = [name for i, name in enumerate(node.input) if name and i not in data]
    if any(name not in fixed for name in [*others, *settings]):
        return False
    if node.op_type in ELEMENTWISE:
        return all(_rank_at_most(index, name, rank) for name in others)
    if node.op_type in REDUCTIONS:
        return _axes_known(index, node) and (
            index.attribute(node, "keepdims", 1) == 1 or _closes(index, node, perm)
        )
    if node.op_type in ("Softmax", "LogSoftmax", "Hardmax"):
        return opset >= 13
    if node.op_type == "Concat":
        return all(_rank_at_most(index, name, rank, exact=True) for name in others)
    if node.op_type == "Split":
        return True
    if node.op_type == "Pad":  # opset 18's axes input too (hq64a F2: onnxruntime broke such a Pad
        return opset >= 11 and len(node.input) > 1 and bool(node.input[1])  # between Transposes)
    if node.op_type == "Slice":
        return opset >= 10
    return False


def _data_inputs(node: onnx.NodeProto) -> set[int]:
    """Positions of the node's inputs that hold the tensor's data (the rest: axes, pads, sizes)."""
    if (node.op_type in ELEMENTWISE and node.op_type != "Clip") or node.op_type == "Concat":
        return set(range(len(node.input)))
    return {0}


def _rank_at_most(index: GraphIndex, name: str, rank: int, exact: bool = False) -> bool:
    value = index.constant(name)
    return value is not None and (value.ndim == rank if exact else value.ndim <= rank)


def _axes_known(index: GraphIndex, node: onnx.NodeProto) -> bool:
    if len(node.input) > 1 and node.input[1]:
        return index.constant(node.input[1]) is not None
    return True


def _closes(index: GraphIndex, node: onnx.NodeProto, perm: Sequence[int]) -> bool:
    """Whether `node` is a reduction that drops the axes it reduces (keepdims 0) and keeps the others in
    the same order stored either way: its output is the same tensor from the region tensor untransposed,
    and the region ends there without a Transpose back (a squeeze-excite's global pool as tf2onnx writes
    it, ReduceMean over H, W of NHWC: [N, C] either way; hq64a F1, one Transpose left per block)."""
    if node.op_type not in REDUCTIONS or index.attribute(node, "keepdims", 1) != 0:
        return False
    rank = len(perm)
    if len(node.input) > 1 and node.input[1]:
        listed = _ints(index, node.input[1])
        if not listed and index.attribute(node, "noop_with_empty_axes", 0):
            return False  # reduces nothing: the tensor itself, still in the region's layout
    else:
        attribute = index.attribute(node, "axes")
        listed = list(attribute) if isinstance(attribute, list) else []
    reduced = {a % rank for a in listed} if listed else set(range(rank))
    left = [perm[a] for a in range(rank) if a not in reduced]
    return left == sorted(left)


def _exits(index: GraphIndex, region: _Region) -> tuple[set[str], dict[str, tuple[int, ...]]]:
    """(the region tensors read outside the region, which keep a Transpose back under their own name;
    the Transposes leaving the region -> their permutation from the untransposed tensor)."""
    kept: set[str] = set()
    leaving: dict[str, tuple[int, ...]] = {}
    for name in region.members:
        if _read_by_name(index, name):
            kept.add(name)
        for node, _ in index.consumers.get(name, []):
            if node.name in region.nodes:
                continue
            perm = _perm_of(node) if node.op_type == "Transpose" else None
            if perm is None or node.domain not in ("", "ai.onnx"):
                kept.add(name)
            else:
                leaving[node.name] = tuple(region.perm[i] for i in perm)
    return kept, leaving


def _gains(index: GraphIndex, region: _Region, parent: list[int]) -> dict[int, int]:
    """Component root -> Transposes the rewrite removes there (entries and identity exits, less the
    Transposes back that it adds)."""
    kept, leaving = _exits(index, region)
    gains: dict[int, int] = {}
    for name, component in region.members.items():
        root = _find(parent, component)
        gain = (name in region.entries) - (name in kept)
        gains[root] = gains.get(root, 0) + gain
    for node_name, perm in leaving.items():
        if _identity(perm):
            source = index.by_name[node_name].input[0]
            root = _find(parent, region.members[source])
            gains[root] = gains.get(root, 0) + 1
    return gains


def _apply(model: onnx.ModelProto, region: _Region) -> onnx.ModelProto:
    """A copy of `model` with `region` stored untransposed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    index = GraphIndex(out)
    namer = Namer(out)
    kept, leaving = _exits(index, region)
    base = {name: region.entries.get(name, name) for name in region.members}
    nodes: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {}  # an identity exit's output -> the untransposed tensor it equals
    for node in index.nodes:
        if node.output and node.output[0] in region.entries:
            if node.output[0] in kept:
                nodes.append(node)
            continue
        if node.name in region.nodes:
            nodes.append(node)
            nodes.extend(_untransposed(out, index, namer, node, region, base, kept))
        elif node.name in leaving:
            perm = leaving[node.name]
            node.input[0] = base[node.input[0]]
            if _identity(perm) and not _read_by_name(index, node.output[0]):
                renamed[node.output[0]] = node.input[0]
                continue
            _set_perm(node, perm)
            nodes.append(node)
        else:
            nodes.append(node)
    for node in nodes:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    drop_declarations(out.graph, set(region.members))  # their shapes are the untransposed ones now
    drop_unread_initializers(out)
    return out


def _read_by_name(index: GraphIndex, name: str) -> bool:
    """Whether something other than a node's input reads `name`: a graph output, an If body."""
    return name in index.graph_outputs or name in index.captured


def _identity(perm: Sequence[int]) -> bool:
    return list(perm) == list(range(len(perm)))


def _set_perm(node: onnx.NodeProto, perm: tuple[int, ...]) -> None:
    if _identity(perm):
        node.op_type = "Identity"
        del node.attribute[:]
        return
    for attr in node.attribute:
        if attr.name == "perm":
            attr.ints[:] = perm


def _untransposed(
    out: onnx.ModelProto,
    index: GraphIndex,
    namer: Namer,
    node: onnx.NodeProto,
    region: _Region,
    base: dict[str, str],
    kept: set[str],
) -> list[onnx.NodeProto]:
    """Rewrite region op `node` in place to read and write untransposed tensors; the Transposes back
    for its outputs read outside the region."""
    perm = region.perm
    data = _data_inputs(node)
    for position, name in enumerate(node.input):
        if name in region.members:
            node.input[position] = base[name]
        elif name and position in data:
            node.input[position] = _constant(out, namer, index, name, perm)
    _renumber(out, namer, index, node, perm)
    back = []
    for position, name in enumerate(node.output):
        if name not in kept:
            continue
        inner = namer.fresh(f"{name}_untransposed")
        base[name] = inner
        node.output[position] = inner
        back.append(
            helper.make_node(
                "Transpose", [inner], [name], name=namer.fresh(f"{node.name}_transpose_back"), perm=perm
            )
        )
    return back


def _constant(out: onnx.ModelProto, namer: Namer, index: GraphIndex, name: str, perm: Sequence[int]) -> str:
    """The name of constant `name` (rank <= len(perm), broadcast against region tensors) stored
    untransposed: [1, ..., 1, *shape] transposed by the inverse of perm. A scalar stays as it is."""
    value = index.constant(name)
    assert value is not None
    if value.ndim == 0:
        return name
    full = value.reshape((1,) * (len(perm) - value.ndim) + value.shape)
    moved = np.ascontiguousarray(np.transpose(full, np.argsort(perm)))
    fresh = namer.fresh(f"{name}_untransposed")
    out.graph.initializer.append(numpy_helper.from_array(moved, fresh))
    return fresh


def _renumber(
    out: onnx.ModelProto, namer: Namer, index: GraphIndex, node: onnx.NodeProto, perm: Sequence[int]
) -> None:
    """Point `node`'s axes (attribute or input), pads or slice axes at the untransposed tensor's axes:
    axis a of a region tensor is axis perm[a] of it untransposed."""
    rank = len(perm)

    def moved(axes: Sequence[int]) -> list[int]:
        return [perm[a % rank] for a in axes]

    for attr in node.attribute:
        if attr.name == "axis":
            attr.i = perm[attr.i % rank]
        elif attr.name == "axes":
            attr.ints[:] = moved(attr.ints)
        elif attr.name == "pads":
            attr.ints[:] = _moved_pads(list(attr.ints), perm)
    if node.op_type in ("Softmax", "LogSoftmax", "Hardmax") and index.attribute(node, "axis") is None:
        node.attribute.append(helper.make_attribute("axis", perm[-1]))
    if node.op_type == "Split" and index.attribute(node, "axis") is None:
        node.attribute.append(helper.make_attribute("axis", perm[0]))
    if node.op_type in REDUCTIONS and len(node.input) > 1 and node.input[1]:
        node.input[1] = _int_initializer(out, namer, f"{node.name}_axes", moved(_ints(index, node.input[1])))
    elif node.op_type == "Pad" and len(node.input) > 3 and node.input[3]:  # pads listed by these axes
        kind = index.elem_types.get(node.input[3], onnx.TensorProto.INT64)
        node.input[3] = _int_initializer(
            out, namer, f"{node.name}_axes", moved(_ints(index, node.input[3])), kind
        )
    elif node.op_type == "Pad" and len(node.input) > 1:
        pads = _moved_pads(_ints(index, node.input[1]), perm)
        node.input[1] = _int_initializer(out, namer, f"{node.name}_pads", pads)
    elif node.op_type == "Slice":
        starts = _ints(index, node.input[1])
        axes = (
            _ints(index, node.input[3]) if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
        )
        while len(node.input) < 4:
            node.input.append("")
        kind = index.elem_types.get(node.input[1], onnx.TensorProto.INT64)  # starts, ends, axes: one type
        node.input[3] = _int_initializer(out, namer, f"{node.name}_axes", moved(axes), kind)


def _moved_pads(pads: list[int], perm: Sequence[int]) -> list[int]:
    """[begin_0..begin_r-1, end_0..end_r-1] of a region tensor -> the same of it untransposed."""
    rank = len(perm)
    moved = [0] * (2 * rank)
    for axis, target in enumerate(perm):
        moved[target], moved[rank + target] = pads[axis], pads[rank + axis]
    return moved


def _ints(index: GraphIndex, name: str) -> list[int]:
    value = index.constant(name)
    assert value is not None
    return [int(v) for v in value.reshape(-1)]


def _int_initializer(
    out: onnx.ModelProto, namer: Namer, base: str, values: Sequence[int], kind: int = onnx.TensorProto.INT64
) -> str:
    """The name of a new initializer of `values`, int64 or `kind` (a Slice's int32 starts want int32 axes)."""
    fresh = namer.fresh(base)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(kind)
    out.graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), fresh))
    return fresh
