"""Which graph outputs hold values (embeddings, features, regressions) rather than class scores, read from
the ops that compute them. An [N, C] output is read as class scores unless its graph says otherwise: top-1
agreement of an embedding's largest coordinate says nothing (hunt31: a 256-value person re-identification
embedding scored 'top-1 agree' and gated --max-drop on it)."""

from __future__ import annotations

import onnx

from quantkit.config import OutputKind
from quantkit.errors import ModelError
from quantkit.graph.model_io import infer_shapes
from quantkit.graph.query import SQUASHING_OPS, GraphIndex, label_writer

# ops that move or retype values without changing what they are
_PASSING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast", "Transpose"})
# elementwise ops that, with one constant operand, scale or shift values without changing their kind
# (logits times a temperature, a bias added after a MatMul)
_AFFINE = frozenset({"Add", "Sub", "Mul", "Div"})
# ops whose output no classifier gives as its scores: rectified or normalised features
_VALUE_OPS = frozenset(
    {
        "Relu",
        "PRelu",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Celu",
        "Tanh",
        "Clip",
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "LpNormalization",
    }
)
# ops that take a vector's norm: dividing by what they give is an L2 normalisation (an embedding), not a
# softmax (Div of Exp by ReduceSum)
_NORM_OPS = frozenset({"ReduceL2", "ReduceL1", "ReduceSumSquare", "Sqrt"})
_NORM_DEPTH = 4  # how many ops back from the divisor a norm is looked for
# a norm before one of these is an input the layer weighs (a cosine classifier: normalised features times
# normalised class weights, hunt33's MobileNetV2 variant, 85 % top-1), not the output's own normalisation
_LINEAR_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"})


def value_outputs(model: onnx.ModelProto, kind: OutputKind = OutputKind.auto) -> frozenset[str]:
    """The graph outputs that hold values, not class scores: every one (kind values), none (classes), or
    (auto) those computed, past reshapes and constant scales, by a rectifier or a normalisation (Relu,
    PRelu and its Relu + Mul form, BatchNormalization, LayerNormalization, LpNormalization, a division by
    a norm): features and embeddings, never a classifier's scores (its Gemm, MatMul + bias, pooled Conv or
    Softmax); a bare Gemm's or MatMul's output given beside a Softmax's or Sigmoid's (_regressions); one
    declared [N, T] with T not fixed (_sequences). A regression's lone Gemm (68 landmarks, [N, 136]) or a
    BatchNormalization folded into the Conv before an embedding's Reshape reads as scores: --output-kind
    values says otherwise."""
    index = GraphIndex(model)
    if kind is not OutputKind.auto:
        return frozenset(index.graph_outputs if kind is OutputKind.values else ())
    found = {name for name in index.graph_outputs if _holds_values(index, name) or _features(index, name)}
    return frozenset(found | _regressions(index) | _sequences(index, model))


def _features(index: GraphIndex, name: str) -> bool:
    """An output that a Conv, Gemm or MatMul of the graph reads (past reshapes): the features a head takes,
    given beside its scores (hq121 F4: a ResNet's pooled Relu features beside its logits gated --max-drop
    on their largest coordinate; hq127 F1: a ViT's class token, taken by a Gather). Not probabilities or
    logits a squashing op makes or reads: hq124 F1, MobileNetV2's probabilities, summed into superclasses
    by a MatMul, lost their top-1 agreement."""
    node = _computing(index, name)
    if node is not None and node.op_type in _SQUASHING:
        return False
    if any(reader.op_type in _SQUASHING for reader, _ in index.consumers.get(name, [])):
        return False
    names, seen = [name], {name}
    while names:
        for reader, _ in index.consumers.get(names.pop(), []):
            if reader.op_type in _LINEAR_OPS:
                return True
            if reader.op_type in _PASSING and reader.output and reader.output[0] not in seen:
                seen.add(reader.output[0])
                names.append(reader.output[0])
    return False


def class_counts(model: onnx.ModelProto) -> list[int]:
    """Per graph output, how many classes it scores or picks from (0: unknown, or not a class output): axis
    1 of its declared shape as class_scores.class_view reads it (C of [N, C, 1, 1] and of channels-last
    [N, 1, 1, C]: hq121 F3, such scores refused their own labels), and for an ArgMax's labels (through
    Casts and reshapes) the width of the axis it picks along (hq121 F2: a 4-class ArgMax took a 6-class
    labels file, its images of the other 2 classes scored as misses)."""
    index = GraphIndex(model)
    counts = [_declared_classes(o.type.tensor_type) for o in model.graph.output]
    pickers = [label_writer(index, o.name) for o in model.graph.output]
    if not any(pickers):
        return counts
    try:
        shapes = {v.name: v.type.tensor_type for v in infer_shapes(model).graph.value_info}
    except ModelError:
        return [0 if picker else count for count, picker in zip(counts, pickers, strict=True)]
    shapes |= {v.name: v.type.tensor_type for v in model.graph.input}
    for k, picker in enumerate(pickers):
        if picker is not None:
            axis = next((a.i for a in picker.attribute if a.name == "axis"), 0)
            scored = shapes.get(picker.input[0])
            dims = scored.shape.dim if scored is not None and scored.HasField("shape") else []
            counts[k] = dims[axis].dim_value if -len(dims) <= axis < len(dims) else 0
    return counts


def _declared_classes(tensor: onnx.TypeProto.Tensor) -> int:
    """C of a declared [N, C, ...] (or [N, 1, 1, C]) output; 0 where not declared, or labels (integers of
    16 bits or more, booleans: class_scores.holds_labels), whose count is their ArgMax's."""
    dims = [d.dim_value for d in tensor.shape.dim] if tensor.HasField("shape") else []
    if tensor.elem_type in _LABEL_TYPES or len(dims) < 2:
        return 0
    if len(dims) == 4 and dims[1] == dims[2] == 1 and dims[3] >= 2:
        return dims[3]
    return dims[1]


def _sequences(index: GraphIndex, model: onnx.ModelProto) -> set[str]:
    """Float outputs declared [N, T] with T not fixed, and not computed by a classifier's head (a Gemm,
    MatMul or Conv, a pooled Conv, a Softmax or Sigmoid: an export may leave its class count unnamed): a
    value per step of a sequence of any length (hunt48 B5: a recognizer's per-step confidence, written
    1/sum(exp) by hand, read 'top-1 agree 40 %' for a float16 model at 49.5 dB: the argmax over time
    steps of near-1 ties)."""
    found = set()
    for value in model.graph.output:
        tensor = value.type.tensor_type
        dims = tensor.shape.dim if tensor.HasField("shape") else []
        if tensor.elem_type not in _FLOATS or len(dims) != 2 or dims[1].HasField("dim_value"):
            continue
        node = _computing(index, value.name)
        if node is not None and node.op_type not in _SQUASHING | _LINEAR_OPS | _POOLS:
            found.add(value.name)
    return found


# ops that give a classifier's scores from its last Conv's map (a pooled head: Conv -> GlobalAveragePool)
_POOLS = frozenset(
    {"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "ReduceMean", "ReduceMax"}
)
_FLOATS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})
_LABEL_TYPES = frozenset(
    getattr(onnx.TensorProto, t) for t in ("INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64", "BOOL")
)
# ops that make an output class probabilities (or a score) from its logits
_SQUASHING = SQUASHING_OPS | {"LogSoftmax"}


def _regressions(index: GraphIndex) -> set[str]:
    """Outputs a bare Gemm or MatMul computes (past reshapes and constant scales) beside an output that a
    Softmax or Sigmoid makes, and that no Softmax or Sigmoid reads: regressions given beside a score
    (MTCNN's box offsets and 10 landmark coordinates beside its face probability, a hand-pose model's
    63 landmark coordinates beside its presence score), whose largest coordinate is no class (hunt41 F4,
    hunt44 F6: 'top-1 agree 100 %' on them, and shrink's --max-drop gate judged them). A classifier's
    logits given beside its probabilities feed the Softmax: scores still."""
    kinds = {name: _computing(index, name) for name in index.graph_outputs}
    if not any(node is not None and node.op_type in _SQUASHING for node in kinds.values()):
        return set()
    return {
        name
        for name, node in kinds.items()
        if node is not None
        and node.op_type in ("Gemm", "MatMul")
        and not any(reader.op_type in _SQUASHING for reader, _ in index.consumers.get(name, []))
    }


# ops that compute a segmenter's per-pixel class logits: its last Conv, the Resize back to the input's size, a
# pixel shuffle (DepthToSpace) or a per-pixel Dense layer (MatMul: Keras's on an NHWC map, hq62)
MAP_OPS = frozenset({"Conv", "ConvTranspose", "Resize", "Upsample", "DepthToSpace", "MatMul", "Gemm"})


def map_outputs(model: onnx.ModelProto, kind: OutputKind) -> frozenset[str]:
    """Graph outputs computed, past reshapes and constant scales, by a Conv, ConvTranspose or Resize: where
    such an output is a map at the input's own size, per-pixel class logits (class_scores.logits_axis), but
    only where --output-kind classes says so: CRAFT's region and affinity heatmaps, resized to the input,
    measured '99.99 % of pixels agree' whatever the candidate did (hunt34), as flow, keypoint heatmaps or a
    colouriser's maps would. None for auto or values."""
    if kind is not OutputKind.classes:
        return frozenset()
    index = GraphIndex(model)
    return frozenset(
        name
        for name in index.graph_outputs
        if (node := _computing(index, name)) is not None and node.op_type in MAP_OPS
    )


def mask_outputs(model: onnx.ModelProto) -> frozenset[str]:
    """Graph outputs a Sigmoid (or HardSigmoid) writes from a map op's output, past reshapes and constant
    scales: independent per-pixel masks where they are maps at the input's size (hq111 F1: a skin / clothes /
    hair segmenter), which neither a class argmax nor a value figure judges."""
    index = GraphIndex(model)
    found = set()
    for name in index.graph_outputs:
        node = _computing(index, name)
        if node is not None and node.op_type in ("Sigmoid", "HardSigmoid") and node.input:
            inner = _computing(index, node.input[0])
            if inner is not None and inner.op_type in MAP_OPS:
                found.add(name)
    return frozenset(found)


def computing_op(model: onnx.ModelProto, output: str) -> str | None:
    """The op type that gives a graph output its kind, past reshapes and constant scales (Softmax for a
    segmenter's class probabilities transposed to NHWC); None for an input or a constant."""
    node = _computing(GraphIndex(model), output)
    return node.op_type if node is not None else None


def _holds_values(index: GraphIndex, name: str) -> bool:
    node = _computing(index, name)
    if node is None:
        return False
    if node.op_type in _VALUE_OPS:
        return True
    computed = [i for i in node.input if i and not index.is_constant(i)]
    if node.op_type in ("Div", "Mul") and len(computed) == 2:
        return any(_norm_within(index, operand, _NORM_DEPTH) for operand in computed)
    if node.op_type in ("Add", "Sub", "Max") and len(computed) == 2:  # PReLU: Relu(x) + alpha * -Relu(-x)
        return any(_rectified(index, operand) for operand in computed)
    return False


def _computing(index: GraphIndex, name: str) -> onnx.NodeProto | None:
    """The node that gives `name` its kind: past reshapes and elementwise ops with one constant operand."""
    node = index.producer.get(name)
    for _ in range(len(index.nodes)):  # a graph is acyclic: at most every node once
        if node is None:
            return None
        computed = [i for i in node.input if i and not index.is_constant(i)]
        passing = node.op_type in _PASSING and computed
        affine = node.op_type in _AFFINE and len(computed) == 1 and len(node.input) == 2
        if not (passing or affine):
            return node
        node = index.producer.get(computed[0])
    return node


def _norm_within(index: GraphIndex, name: str, depth: int) -> bool:
    """`name` is computed from a norm within `depth` ops back."""
    node = index.producer.get(name)
    if node is None or depth == 0 or node.op_type in _LINEAR_OPS:
        return False
    if node.op_type in _NORM_OPS or _root(index, node):
        return True
    return any(_norm_within(index, i, depth - 1) for i in node.input if i and not index.is_constant(i))


def _root(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """A square root or its reciprocal as a Pow: x.pow(2).sum(1).pow(0.5), the L2 norm of the Normalize
    modules of re-identification and contrastive code (hunt34: a 1280-value embedding read as scores)."""
    if node.op_type != "Pow" or len(node.input) < 2:
        return False
    exponent = index.constant(node.input[1])
    return (
        exponent is not None and exponent.size == 1 and abs(abs(float(exponent.reshape(-1)[0])) - 0.5) < 1e-6
    )


def _rectified(index: GraphIndex, name: str) -> bool:
    """`name` is a Relu's output, or a constant times one (PReLU's negative part)."""
    node = index.producer.get(name)
    if node is None:
        return False
    if node.op_type == "Relu":
        return True
    computed = [i for i in node.input if i and not index.is_constant(i)]
    if node.op_type in ("Mul", "Neg") and len(computed) == 1:
        inner = index.producer.get(computed[0])
        return inner is not None and inner.op_type in ("Relu", "Neg")
    return False


def label_outputs(model: onnx.ModelProto) -> frozenset[str]:
    """The graph outputs an ArgMax or ArgMin writes (through Casts and reshapes: query.label_writer):
    labels, agreed on as they are (no scores to rank)."""
    index = GraphIndex(model)
    return frozenset(o.name for o in model.graph.output if label_writer(index, o.name) is not None)
