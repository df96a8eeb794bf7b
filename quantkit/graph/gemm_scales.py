"""A Gemm's alpha and beta folded into its constant weight and bias, and a bias of one value written as
one value per output: Gemm(A, B, C; alpha, beta) = A (alpha B) + (beta C).

onnxruntime 1.32 fuses a Q/DQ Gemm into QGemm only at alpha 1 and beta 1 with a bias of one value per
output; other Gemms run in float on dequantized weights, so quantkit kept them float (hq155 F5: a
classifier head exported with alpha 0.5, or a scalar bias, stayed float though nothing stops the fold).
Folded, the Gemm computes the same values up to float32 rounding of the products and quantizes as any.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from quantkit.graph.naming import Namer
from quantkit.graph.query import GraphIndex, drop_unread_initializers


def fold_gemm_scales(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of `model` with every foldable Gemm at alpha 1, beta 1 and a bias of one value per output,
    the number changed); `model` itself where none is. Foldable: a default-domain Gemm whose weight B is
    a 2-D float32 constant, whose bias C (if any) is a float32 constant of one value or one per output,
    neither overridable by a graph input, with alpha or beta not 1 or a bias of one value."""
    if not any(node.op_type == "Gemm" for node in model.graph.node):
        return model, 0
    index = GraphIndex(model)
    overridable = {value.name for value in model.graph.input}
    found = {
        position: folded
        for position, node in enumerate(model.graph.node)
        if (folded := _folded(index, overridable, node)) is not None
    }
    if not found:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    namer = Namer(out)
    for position, (weight, bias) in found.items():
        node = out.graph.node[position]
        base = node.name or node.output[0]
        if weight is not None:
            node.input[1] = namer.fresh(f"{base}_weight")
            out.graph.initializer.append(numpy_helper.from_array(weight, node.input[1]))
        if bias is not None:
            node.input[2] = namer.fresh(f"{base}_bias")
            out.graph.initializer.append(numpy_helper.from_array(bias, node.input[2]))
        kept = [a for a in node.attribute if a.name not in ("alpha", "beta")]
        del node.attribute[:]
        node.attribute.extend(kept)
    drop_unread_initializers(out)
    return out, len(found)


def _folded(
    index: GraphIndex, overridable: set[str], node: onnx.NodeProto
) -> tuple[np.ndarray | None, np.ndarray | None] | None:
    """(alpha B, or None where alpha is 1; beta C as one value per output, or None without C) where
    `node` is a foldable Gemm that needs it, else None."""
    if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    if overridable & set(node.input[1:]):
        return None
    weight = index.constant(node.input[1])
    if weight is None or weight.dtype != np.float32 or weight.ndim != 2:
        return None
    alpha = float(index.attribute(node, "alpha", 1.0))  # type: ignore[arg-type]
    beta = float(index.attribute(node, "beta", 1.0))  # type: ignore[arg-type]
    if alpha == 0.0:  # the bias alone: left as it is, float and exact (zero weights would be quantized)
        return None
    outputs = weight.shape[0] if index.attribute(node, "transB", 0) else weight.shape[1]
    given = node.input[2] if len(node.input) > 2 else ""
    if not given:
        return None if alpha == 1.0 else ((alpha * weight).astype(np.float32), None)
    bias = index.constant(given)
    if bias is None or bias.dtype != np.float32 or bias.size not in (1, outputs):
        return None
    if bias.shape not in ((), (1,), (1, 1), (outputs,), (1, outputs)):
        return None
    per_output = bias.shape in ((outputs,), (1, outputs))
    if alpha == 1.0 and beta == 1.0 and per_output:
        return None
    full = np.broadcast_to(beta * bias.reshape(-1), (outputs,)).astype(np.float32)
    return (None if alpha == 1.0 else (alpha * weight).astype(np.float32)), full
