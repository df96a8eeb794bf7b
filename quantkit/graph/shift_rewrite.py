"""Write a shifted Q/DQ pair (planner.tensorrt_shift): x + c quantized, every reader's bias absorbing c.

producer -> x + c -> Q -> DQ -> each reader, whose output is then the one it computed from x plus
c * sum(W_q) along its input axis; that sum (over the dequantized weight the reader actually reads) comes
off the reader's bias, so the model computes what it did before, with x on a symmetric grid:
- a Conv without padding: its bias input B[o] (added where there was none), minus c * sum W_q[o, ...];
- a Gemm (transA 0), Y = alpha A B + beta C: C minus (alpha / beta) c * the sum of B_q over its K axis
  (C added where there was none, beta then 1 by default);
- a MatMul on a constant [K, N] whose output only an Add of a constant [N] (or [1, ..., N]) reads: that
  constant minus c * the sum of B_q over K (a copy: the constant may be read elsewhere).
The Add of c goes up through ops that commute with it (a MaxPool, a Concat, data movement) onto what they
read, as far as each input is read by nothing else (`_shifted`; `Shifting`: what it reads, taken once).
`absorber` says whether a reader is one of the above; the planner decides which tensors are shifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.graph.augment import COMMUTING_OPS
from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex
from quantkit.qmath.params import along_axis
from quantkit.results import QuantParams


class Rewriter(Protocol):  # graph.qdq._Rewriter
    graph: onnx.GraphProto
    namer: Namer
    new_nodes: list[onnx.NodeProto]
    weight_scales: dict[str, np.ndarray]
    weight_dq: dict[str, tuple[onnx.NodeProto, np.ndarray, np.ndarray, int, int]]

    def add_initializer(self, base: str, array: np.ndarray) -> str: ...

    def qdq_pair(
        self, source: str, target: str, base: str, params: QuantParams, factor: float = 1.0
    ) -> None: ...


def absorber(index: GraphIndex, node: onnx.NodeProto, position: int) -> bool:
    """Whether `node`, reading a tensor at input `position`, can absorb a shift of it (module docstring)."""
    if position != 0:
        return False
    if node.op_type == "Conv":
        return _unpadded(index, node)
    if node.op_type == "Gemm":
        beta = float(index.attribute(node, "beta", 1.0))  # type: ignore[arg-type]
        return not index.attribute(node, "transA", 0) and beta != 0.0
    if node.op_type == "MatMul":
        weight = index.constant(node.input[1]) if len(node.input) > 1 else None
        return weight is not None and weight.ndim == 2 and bias_add(index, node, weight.shape[1]) is not None
    return False


def bias_add(index: GraphIndex, node: onnx.NodeProto, columns: int) -> tuple[onnx.NodeProto, int] | None:
    """(the Add, its constant's input position) where a MatMul of `columns` outputs is read only by an
    Add of a constant of that many values along the last axis; else None."""
    readers = index.consumers.get(node.output[0], [])
    if len(readers) != 1 or node.output[0] in index.graph_outputs:
        return None
    add, position = readers[0]
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    other = 1 - position
    value = index.constant(add.input[other])
    if value is None or value.size != columns or value.ndim == 0 or value.shape[-1] != columns:
        return None
    return add, other


@dataclass(frozen=True)
class Shifting:
    """What apply_plan's shifted pairs read, taken once after the weights are quantized: the graph's index
    (its readers and writers: no rewrite before or during the shifts changes how many nodes read a tensor
    the Adds go up to), the initializers (the biases as corrected), the names If/Loop/Scan bodies read and
    the tensors with Q/DQ pairs of their own (never gone up through: their pair's range is x's)."""

    index: GraphIndex
    initializers: dict[str, onnx.TensorProto]
    captured: frozenset[str]
    quantized: frozenset[str]

    def alone(self, tensor: str) -> bool:
        """Read by one node and nothing else (no model output, no subgraph), without a pair of its own."""
        return (
            len(self.index.consumers.get(tensor, [])) == 1
            and tensor not in self.index.graph_outputs
            and tensor not in self.captured
            and tensor not in self.quantized
        )


def shifted_pair(rewriter: Rewriter, graph: Shifting, tensor: str, params: QuantParams, shift: float) -> None:
    """Rewrite producer -> tensor as producer -> tensor + shift -> Q -> DQ -> its readers (each an
    absorber), their biases lowered by what the shift adds (module docstring)."""
    producer = graph.index.producer[tensor]
    pre = rewriter.namer.fresh(f"{tensor}_prequant")
    producer.output[list(producer.output).index(tensor)] = pre
    offset = rewriter.add_initializer(f"{tensor}_shift", np.asarray(shift, np.float32))
    moved = _shifted(rewriter, graph, producer, pre, offset, tensor)
    read = rewriter.namer.fresh(f"{tensor}_shifted_dequantized")
    rewriter.qdq_pair(moved, read, tensor, params)
    for node, position in graph.index.consumers[tensor]:
        node.input[position] = read
        _absorb(rewriter, graph, node, shift * _input_sums(rewriter, graph.index, node))


def _shifted(
    rewriter: Rewriter, graph: Shifting, writer: onnx.NodeProto, value: str, offset: str, base: str
) -> str:
    """`value` (written by `writer`) plus the shift: the name that holds it. Through an op that commutes
    with adding a constant (PUSHED_THROUGH: a MaxPool, a Concat, data movement) the Add goes on the op's
    inputs instead, as far up as each is read by nothing else, so that it follows the activation a layer
    ends with (TensorRT fuses it there) and the Q still follows the Concat / MaxPool it quantizes (TensorRT
    moves such a Q up across them, into the layers' int8 outputs; an Add between would stop it)."""
    outputs = [o for o in writer.output if o]
    if writer.op_type not in PUSHED_THROUGH or outputs != [value]:
        moved = rewriter.namer.fresh(f"{base}_shifted")
        rewriter.new_nodes.append(
            helper.make_node("Add", [value, offset], [moved], name=rewriter.namer.fresh(f"{base}_Shift"))
        )
        return moved
    for position in _data_positions(writer):  # a Concat of x with itself reads x twice: not alone
        source = writer.input[position]
        upstream = graph.index.producer.get(source) if graph.alone(source) else None
        writer.input[position] = _shifted(rewriter, graph, upstream or _NO_WRITER, source, offset, source)
    return value


# ops for which op(x + c) = op(x) + c, c a scalar: the values they output are values they read (a Resize
# can extrapolate a constant, an AveragePool count its pads: not here)
PUSHED_THROUGH = COMMUTING_OPS - {"Resize"}
_NO_WRITER = onnx.NodeProto()  # what _shifted puts an Add after


def _data_positions(node: onnx.NodeProto) -> list[int]:
    """The input positions of a PUSHED_THROUGH node that carry its values (augment.commuting_data_inputs)."""
    if node.op_type == "Concat":
        return [i for i, name in enumerate(node.input) if name]
    return [0]


def _input_sums(rewriter: Rewriter, index: GraphIndex, node: onnx.NodeProto) -> np.ndarray:
    """The reader's dequantized weight summed over everything but its output axis: [O] (Conv), [N]."""
    _, q, _, axis, _ = rewriter.weight_dq[node.name]
    weight = q.astype(np.float64) * along_axis(
        rewriter.weight_scales[node.name].astype(np.float64), q.ndim, axis
    )
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1).sum(axis=1)  # [O, C/g, k...]
    transposed = node.op_type == "Gemm" and bool(index.attribute(node, "transB", 0))
    return weight.sum(axis=1 if transposed else 0)  # B [N, K] or [K, N]


def _absorb(rewriter: Rewriter, graph: Shifting, node: onnx.NodeProto, added: np.ndarray) -> None:
    """Take `added` [O] off what the reader adds after its product (module docstring)."""

    def constant(name: str) -> np.ndarray:
        found = graph.initializers.get(name)
        value = numpy_helper.to_array(found) if found is not None else graph.index.constant(name)
        assert value is not None, name
        return np.asarray(value, np.float64)

    if node.op_type == "MatMul":
        found = bias_add(graph.index, node, added.size)
        assert found is not None, node.name  # the planner shifted only what absorber() accepted
        add, position = found
        value = constant(add.input[position])
        lowered = value - added.reshape(value.shape)
        add.input[position] = rewriter.add_initializer(f"{add.name}_shifted", lowered.astype(np.float32))
        return
    if node.op_type == "Gemm":
        alpha = float(graph.index.attribute(node, "alpha", 1.0))  # type: ignore[arg-type]
        added = added * alpha / float(graph.index.attribute(node, "beta", 1.0))  # type: ignore[arg-type]
    has_bias = len(node.input) > 2 and bool(node.input[2])
    bias = constant(node.input[2]) if has_bias else np.zeros(())
    name = rewriter.add_initializer(f"{node.name}_bias_shifted", (bias - added).astype(np.float32))
    if len(node.input) > 2:
        node.input[2] = name
    else:
        node.input.append(name)


def _unpadded(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """No explicit pads and no auto_pad SAME_*: every input value the Conv reads is one of x's."""
    pads = index.attribute(node, "pads", [])
    auto_pad = index.attribute(node, "auto_pad", b"NOTSET")
    mode = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    return mode in ("NOTSET", "VALID") and not any(int(p) for p in pads)  # type: ignore[attr-defined]
