"""The ops of early opsets onnx's version converter cannot upgrade, written as the standard ops they compute,
so that the model upgrades to the opset per-channel weights need.

ONNX removed ImageScaler, Crop, Affine, Scale and ScaledTanh (experimental, opsets 1-9); onnxruntime still
runs them at the opset a model declares, but onnx's version converter has no schema for them and stops:
the ONNX model zoo's FNS-Candy (opset 7: 1 ImageScaler, 7 Crop, 1 Affine) was refused with "Op '%s' has
no registered schema" (hunt33), and Tiny YOLOv2 begins with an ImageScaler. Each is written as its
definition, in the opset-7 forms the converter then upgrades:

- ImageScaler(X; scale, bias[C]): scale * X + bias, bias along the channel axis of an NCHW image.
- Affine(X; alpha, beta) and Scale(X; scale): alpha * X + beta, scale * X.
- ScaledTanh(X; alpha, beta): alpha * Tanh(beta * X).
- Crop(X; border = left, top, right, bottom, scale = height, width): a Slice of the spatial axes, from
  (top, left), of (height, width) where scale is given, else to the far borders.
- BatchNormalization with spatial=0 (opsets 7-8: scale, B, mean and var of [C, D1, ...], one value per
  element), which the converter refuses ("Attribute spatial must have value 1"; hq134 F5): X k + (B - mean
  k), k = scale / sqrt(var + epsilon), computed here where the four are initializers, else as nodes;
  with one value per channel ([C]), which onnxruntime runs as spatial=1, that BatchNormalization.
- Hardmax before opset 13 (the input coerced to 2-D at `axis`, one-hot over all the axes from it): onnx's
  11 -> 13 adapter keeps the node as it is, where 13 takes one axis (hq155 F6: a 4-D Hardmax(axis=1)
  upgraded with relative error 2.4, refused). Written Flatten(axis) -> Hardmax(axis=1) -> Reshape to
  the input's shape: the same values, on a 2-D input where both definitions agree.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.graph.unfuse import Rewritten, written_out

LEGACY_OPS = frozenset({"ImageScaler", "Affine", "Scale", "ScaledTanh", "Crop"})
SINGLE_AXIS_OPSET = 13  # Hardmax reads one axis from here, its input coerced to 2-D before
FIRST_BROADCAST_OPSET = 7  # Mul and Add broadcast as numpy does from here (earlier: a broadcast attribute)
_END = 2**31 - 1  # Slice's "to the end"
# IR 3 wants every initializer a graph input, which the constants written here and a conversion's scales
# and weights are not: onnx's light_inception_v1 and a 3DDFA model at IR 3 failed onnx.checker. From IR 4
# they need not be (model_io.load_model raises every model's IR to it).
FREE_INITIALIZERS_IR = 4


def write_out(model: onnx.ModelProto, opset: int) -> Rewritten:
    """model (at ai.onnx `opset`) with every legacy op of the default domain written as standard ops (the
    same model where there is none, or where the opset predates numpy broadcasting)."""
    if opset < FIRST_BROADCAST_OPSET:
        return Rewritten(model, ())

    def picked(node: onnx.NodeProto) -> bool:
        coerced = node.op_type == "Hardmax" and node.domain in ("", "ai.onnx") and opset < SINGLE_AXIS_OPSET
        return coerced or _legacy(node)

    return written_out(model, picked, _written, FREE_INITIALIZERS_IR)


def _legacy(node: onnx.NodeProto) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    return node.op_type in LEGACY_OPS or (
        node.op_type == "BatchNormalization"
        and any(a.name == "spatial" and a.i == 0 for a in node.attribute)
        and len(node.input) == 5
        and not any(node.output[1:])  # a training step's running statistics: left to the converter
    )


def _written(node: onnx.NodeProto, name: str, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    x, y = node.input[0], node.output[0]
    if node.op_type == "Crop":
        return [_crop(x, y, name, attributes)]
    if node.op_type == "Hardmax":
        flat, hot, shape = f"{name}_2d", f"{name}_one_hot", f"{name}_shape"
        return [
            helper.make_node("Flatten", [x], [flat], name=flat, axis=int(attributes.get("axis", 1))),
            helper.make_node("Hardmax", [flat], [hot], name=name, axis=1),
            helper.make_node("Shape", [x], [shape], name=shape),
            helper.make_node("Reshape", [hot, shape], [y], name=f"{name}_reshape"),
        ]
    if node.op_type == "BatchNormalization":
        return _per_element_norm(node, name, graph, float(attributes.get("epsilon", 1e-5)))
    if node.op_type == "ScaledTanh":
        alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
        inner = _scaled(x, f"{name}_inner", beta, 0.0, graph, f"{name}_in")
        tanh = helper.make_node("Tanh", [f"{name}_inner"], [f"{name}_tanh"], name=f"{name}_tanh")
        return [*inner, tanh, *_scaled(f"{name}_tanh", y, alpha, 0.0, graph, name)]
    if node.op_type == "ImageScaler":
        bias = np.asarray(attributes.get("bias", []), np.float32).reshape(1, -1, 1, 1)
        return _scaled(x, y, float(attributes.get("scale", 1.0)), bias, graph, name)
    if node.op_type == "Scale":
        return _scaled(x, y, float(attributes.get("scale", 1.0)), 0.0, graph, name)
    alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 0.0))  # Affine
    return _scaled(x, y, alpha, beta, graph, name)


def _scaled(
    x: str, y: str, scale: float, shift: float | np.ndarray, graph: onnx.GraphProto, name: str
) -> list[onnx.NodeProto]:
    """y = scale * x + shift, as a Mul and an Add by constants (a Mul by 1 or an Add of 0 left out, an
    Identity where both are)."""
    shifted = np.any(np.asarray(shift) != 0)
    nodes = []
    scaled = x
    if scale != 1.0:
        scaled = y if not shifted else f"{name}_scaled"
        factor = _constant(graph, f"{name}_scale", np.array(scale, np.float32))
        nodes.append(helper.make_node("Mul", [x, factor], [scaled], name=f"{name}_mul"))
    if shifted:
        term = _constant(graph, f"{name}_shift", np.asarray(shift, np.float32))
        nodes.append(helper.make_node("Add", [scaled, term], [y], name=f"{name}_add"))
    if not nodes:
        nodes.append(helper.make_node("Identity", [x], [y], name=name))
    return nodes


def _per_element_norm(
    node: onnx.NodeProto, name: str, graph: onnx.GraphProto, epsilon: float
) -> list[onnx.NodeProto]:
    """BatchNormalization(X, scale, B, mean, var) with spatial=0 as X k + (B - mean k), k = scale /
    sqrt(var + epsilon): two constants where the four are initializers, else the nodes computing them."""
    x, y = node.input[0], node.output[0]
    held = {t.name: t for t in graph.initializer}
    if _rank(graph, node.input[1]) == 1:  # one value per channel: onnxruntime runs it as spatial=1, the
        spatial = helper.make_node(  # converter's only form (hq149 F4: [C] broadcast along W)
            "BatchNormalization", list(node.input), [y], name=name, epsilon=epsilon
        )
        return [spatial]
    if all(name_ in held for name_ in node.input[1:]):
        scale, bias, mean, var = (numpy_helper.to_array(held[n]).astype(np.float64) for n in node.input[1:])
        k = scale / np.sqrt(var + epsilon)
        factor = _constant(graph, f"{name}_factor", k.astype(np.float32))
        shift = _constant(graph, f"{name}_shift", (bias - mean * k).astype(np.float32))
    else:
        scale, bias, mean, var = node.input[1:]
        eps = _constant(graph, f"{name}_epsilon", np.array(epsilon, np.float32))
        factor, shift = f"{name}_factor", f"{name}_shift"
        make = helper.make_node
        return [
            make("Add", [var, eps], [f"{name}_var"], name=f"{name}_var_add"),
            make("Sqrt", [f"{name}_var"], [f"{name}_std"], name=f"{name}_sqrt"),
            make("Div", [scale, f"{name}_std"], [factor], name=f"{name}_div"),
            make("Mul", [mean, factor], [f"{name}_mean_k"], name=f"{name}_mean_mul"),
            make("Sub", [bias, f"{name}_mean_k"], [shift], name=f"{name}_sub"),
            make("Mul", [x, factor], [f"{name}_scaled"], name=f"{name}_mul"),
            make("Add", [f"{name}_scaled", shift], [y], name=f"{name}_add"),
        ]
    return [
        helper.make_node("Mul", [x, factor], [f"{name}_scaled"], name=f"{name}_mul"),
        helper.make_node("Add", [f"{name}_scaled", shift], [y], name=f"{name}_add"),
    ]


def _rank(graph: onnx.GraphProto, name: str) -> int | None:
    """The rank of tensor `name` as an initializer or a declared input or value holds it; None unknown."""
    for tensor in graph.initializer:
        if tensor.name == name:
            return len(tensor.dims)
    for value in [*graph.input, *graph.value_info]:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return None


def _crop(x: str, y: str, name: str, attributes: dict[str, object]) -> onnx.NodeProto:
    border, size = _ints(attributes, "border"), _ints(attributes, "scale")
    left, top, right, bottom = [*border, 0, 0, 0, 0][:4]
    if size:
        ends = [top + size[0], left + size[1]]
    else:
        ends = [-bottom if bottom else _END, -right if right else _END]
    return helper.make_node("Slice", [x], [y], name=name, axes=[2, 3], starts=[top, left], ends=ends)


def _ints(attributes: dict[str, object], name: str) -> list[int]:
    value = attributes.get(name, [])
    return [int(v) for v in value] if isinstance(value, list | tuple) else []


def _constant(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name
