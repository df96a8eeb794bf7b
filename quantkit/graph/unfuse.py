"""onnxruntime's fused CPU nodes written back as the standard ops they fuse, so that they quantize.

A model saved after onnxruntime's graph optimizations (SessionOptions.optimized_model_filepath at
ORT_ENABLE_EXTENDED) holds com.microsoft nodes that no quantizer plans on: hunt31's LightWeightPersonDetector
saved so had 104 QuickGelu (its SiLUs) and 6 FusedConv (Conv + Sigmoid), and was refused. Each is the
composition onnxruntime's contrib schema defines, so the rewrite computes what the node did:

- FusedConv(X, W, B, Z) with `activation` and `activation_params`: activation(Conv(X, W, B) + Z), the Conv
  attributes as they are; the activations its CPU kernel takes (Relu, Tanh, Sigmoid, LeakyRelu,
  HardSigmoid, Clip).
- FusedGemm(A, B, C) with `activation` and activation_alpha / _beta: activation(Gemm(A, B, C)).
- QuickGelu(X) with `alpha`: X * Sigmoid(alpha * X).
- Gelu(X): X * (1 + Erf(X / sqrt 2)) / 2; BiasGelu(A, B): Gelu(A + B); FastGelu(X[, bias]): with x = X (+
  bias), x * (1 + Tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2 (in the form onnxruntime fuses back to
  FastGelu). An onnxruntime-optimized transformer holds
  them; TensorRT's parser reads no com.microsoft op (hq104 F3: convert --target tensorrt wrote one), and
  onnxruntime fuses the standard form back.

Layouts (com.microsoft.nchwc, the Nhwc ops) and fusions of other kinds stay refused (file_kinds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantkit.graph.naming import fresh_prefix, names_within

ORT_DOMAIN = "com.microsoft"
GELUS = frozenset({"QuickGelu", "Gelu", "BiasGelu", "FastGelu"})  # no activation attribute
UNFUSED_OPS = frozenset({"FusedConv", "FusedGemm", *GELUS})
# activation -> its attributes, named as the standard op names them, in activation_params' order
ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "Relu": (),
    "Tanh": (),
    "Sigmoid": (),
    "LeakyRelu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"),
    "Clip": ("min", "max"),
}


@dataclass(frozen=True)
class Rewritten:
    model: onnx.ModelProto
    counts: tuple[tuple[str, int], ...]  # (op type, how many were written as standard ops)


def unfusable(node: onnx.NodeProto) -> bool:
    """Whether `node` is an onnxruntime fusion this module writes back (its activation one it knows)."""
    if node.domain != ORT_DOMAIN or node.op_type not in UNFUSED_OPS:
        return False
    return node.op_type in GELUS or _activation(node)[0] in ACTIVATIONS


def unfuse(model: onnx.ModelProto, opset: int) -> Rewritten:
    """model (at ai.onnx `opset`) with every unfusable node written as the standard ops it fuses (the same
    model where none is); new tensors are named after the node."""
    return written_out(model, unfusable, lambda node, name, graph: _written(node, name, graph, opset))


Write = Callable[[onnx.NodeProto, str, onnx.GraphProto], list[onnx.NodeProto]]


def written_out(
    model: onnx.ModelProto, picked: Callable[[onnx.NodeProto], bool], write: Write, ir: int = 0
) -> Rewritten:
    """A copy of `model` (at IR `ir` at least) with each node `picked` replaced by the nodes `write` gives
    for it, its name (or op type and index) and the graph (for constants); the model itself where none is
    picked. Also graph.legacy_ops'."""
    if not any(picked(n) for n in model.graph.node):
        return Rewritten(model, ())
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.ir_version = max(out.ir_version, ir)
    graph = out.graph
    nodes: list[onnx.NodeProto] = []
    counts: Counter[str] = Counter()
    taken = names_within(graph)
    for k, node in enumerate(graph.node):
        if not picked(node):
            nodes.append(node)
            continue
        before = len(graph.initializer)
        written = write(node, fresh_prefix(node.name or f"{node.op_type}_{k}", taken), graph)
        taken.update(t.name for t in graph.initializer[before:])
        taken.update(name for n in written for name in (n.name, *n.output))
        nodes.extend(written)
        counts[node.op_type] += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return Rewritten(out, tuple(sorted(counts.items())))


def _gelu(node: onnx.NodeProto, name: str, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Gelu, BiasGelu and FastGelu as standard ops (the module's docstring)."""
    make = helper.make_node
    written, x = [], node.input[0]
    if len(node.input) > 1 and node.input[1]:  # BiasGelu's B, FastGelu's bias
        written.append(make("Add", [x, node.input[1]], [f"{name}_biased"], name=f"{name}_bias"))
        x = f"{name}_biased"
    half = _constant(graph, f"{name}_half", np.array(0.5, np.float32))
    one = _constant(graph, f"{name}_one", np.array(1.0, np.float32))
    if node.op_type == "FastGelu":  # onnxruntime's FastGeluFusion formula, which it fuses back (hq150 F2)
        return _fast_gelu(x, node.output[0], name, graph, written, half, one)
    root2 = _constant(graph, f"{name}_sqrt2", np.array(np.sqrt(2.0), np.float32))
    return [
        *written,
        make("Div", [x, root2], [f"{name}_arg"], name=f"{name}_scale"),
        make("Erf", [f"{name}_arg"], [f"{name}_curve"], name=f"{name}_erf"),
        make("Add", [f"{name}_curve", one], [f"{name}_gate1"], name=f"{name}_add_one"),
        make("Mul", [x, f"{name}_gate1"], [f"{name}_gated"], name=f"{name}_gate"),
        make("Mul", [f"{name}_gated", half], [node.output[0]], name=name),
    ]


def _fast_gelu(
    x: str, y: str, name: str, graph: onnx.GraphProto, written: list[onnx.NodeProto], half: str, one: str
) -> list[onnx.NodeProto]:
    """y = (x * 0.5) * (1 + Tanh((x * sqrt(2 / pi)) * (1 + (x * 0.044715) * x))), in the order and with
    the constants onnxruntime's FastGeluFusion matches (its first formula): written in another order (x * x
    first) it was not fused again, and a ViT of FastGelus written with no layer quantized ran 0.86x its
    input (hq150 F2)."""
    make = helper.make_node
    cube = _constant(graph, f"{name}_k", np.array(0.044715, np.float32))
    root = _constant(graph, f"{name}_root", np.array(np.sqrt(2.0 / np.pi), np.float32))
    return [
        *written,
        make("Mul", [x, cube], [f"{name}_kx"], name=f"{name}_scale_x"),
        make("Mul", [f"{name}_kx", x], [f"{name}_kx2"], name=f"{name}_scale_square"),
        make("Add", [f"{name}_kx2", one], [f"{name}_poly"], name=f"{name}_poly_add"),
        make("Mul", [x, root], [f"{name}_rx"], name=f"{name}_scale"),
        make("Mul", [f"{name}_poly", f"{name}_rx"], [f"{name}_arg"], name=f"{name}_poly_mul"),
        make("Tanh", [f"{name}_arg"], [f"{name}_curve"], name=f"{name}_tanh"),
        make("Add", [f"{name}_curve", one], [f"{name}_gate1"], name=f"{name}_add_one"),
        make("Mul", [x, half], [f"{name}_halfx"], name=f"{name}_halve"),
        make("Mul", [f"{name}_gate1", f"{name}_halfx"], [y], name=name),
    ]


def _written(node: onnx.NodeProto, name: str, graph: onnx.GraphProto, opset: int) -> list[onnx.NodeProto]:
    if node.op_type in GELUS - {"QuickGelu"}:
        return _gelu(node, name, graph)
    if node.op_type == "QuickGelu":
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.702)
        x, y = node.input[0], node.output[0]
        factor = _constant(graph, f"{name}_alpha", np.array(alpha, np.float32))
        return [
            helper.make_node("Mul", [x, factor], [f"{name}_scaled"], name=f"{name}_scale"),
            helper.make_node("Sigmoid", [f"{name}_scaled"], [f"{name}_gate"], name=f"{name}_sigmoid"),
            helper.make_node("Mul", [x, f"{name}_gate"], [y], name=name),
        ]
    activation, params = _activation(node)
    base = "Conv" if node.op_type == "FusedConv" else "Gemm"
    keep = {"activation", "activation_params", "activation_alpha", "activation_beta", "activation_gamma"}
    attributes = [a for a in node.attribute if a.name not in keep]
    inputs = list(node.input[:3])
    pre = f"{name}_{base.lower()}"
    core = helper.make_node(base, inputs, [pre], name=f"{name}_{base}")
    core.attribute.extend(attributes)
    written = [core]
    summed = node.input[3] if base == "Conv" and len(node.input) > 3 and node.input[3] else ""
    if summed:  # FusedConv's Z: added before the activation
        written.append(helper.make_node("Add", [pre, summed], [f"{name}_sum"], name=f"{name}_add"))
        pre = f"{name}_sum"
    if activation == "Clip":
        low, high = (params + [-np.inf, np.inf][len(params) :])[:2]
        if opset < 11:  # Clip's bounds were attributes
            written.append(helper.make_node("Clip", [pre], [node.output[0]], name=name, min=low, max=high))
            return written
        bounds = [
            _constant(graph, f"{name}_min", np.array(low, np.float32)),
            _constant(graph, f"{name}_max", np.array(high, np.float32)),
        ]
        written.append(helper.make_node("Clip", [pre, *bounds], [node.output[0]], name=name))
    else:
        last = helper.make_node(activation, [pre], [node.output[0]], name=name)
        last.attribute.extend(
            helper.make_attribute(k, v) for k, v in zip(ACTIVATIONS[activation], params, strict=False)
        )
        written.append(last)
    return written


def _activation(node: onnx.NodeProto) -> tuple[str, list[float]]:
    """(the activation's op type, its parameters): FusedConv's activation_params, FusedGemm's
    activation_alpha and activation_beta where given."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kind = attributes.get("activation", b"")
    activation = kind.decode() if isinstance(kind, bytes) else str(kind)
    if "activation_params" in attributes:
        return activation, [float(v) for v in attributes["activation_params"]]
    named = ("activation_alpha", "activation_beta")
    return activation, [float(attributes[k]) for k in named if k in attributes]


def _constant(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name
