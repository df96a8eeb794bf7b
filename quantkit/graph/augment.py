"""Calibration outputs: which tensors to observe, and a copy of the model that outputs them."""

from __future__ import annotations

import math

import numpy as np
import onnx

from quantkit.errors import ModelError
from quantkit.graph import model_io
from quantkit.graph.query import GraphIndex
from quantkit.results import Feed

# Ops whose float activations quantkit may quantize (inputs and outputs are observed).
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# onnxruntime drops DQ -> op -> Q around these when input and output share scale/zero point.
SHARED_SCALE_OPS = frozenset(
    {
        "MaxPool",
        "Reshape",
        "Flatten",
        "Transpose",
        "Slice",
        "Squeeze",
        "Unsqueeze",
        "Resize",
        "Split",
        "Gather",
        "Expand",
        "Tile",
    }
)
# Ops that commute with a per-tensor Q/DQ pair: quantizing their data inputs with the output's params
# gives the output bit for bit (a max, a copy or a rearrangement of values already on that grid; Resize
# only in nearest mode). OpenVINO runs them on int8 data between quantized layers (planner.targets).
COMMUTING_OPS = frozenset(
    {
        "MaxPool",
        "Concat",
        "Reshape",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Slice",
        "Gather",
        "Identity",
        "Expand",
        "Tile",
        "Resize",
    }
)


def commuting_data_inputs(node: onnx.NodeProto) -> list[str]:
    """The inputs of a COMMUTING_OPS node that carry its values: every input of a Concat, the first of
    the others (the rest are shapes, indices, scales)."""
    return [n for n in node.input if n] if node.op_type == "Concat" else [node.input[0]]


# onnxruntime replaces DQ -> op -> Q by an integer (QLinear) kernel for these.
QLINEAR_OPS = frozenset({"AveragePool", "GlobalAveragePool", "Concat", "Add", "Mul", "Sigmoid", "LeakyRelu"})
# Folded into the range of the tensor they clip.
FOLDABLE_OPS = frozenset({"Relu", "Clip"})
# No integer kernel, but rewritten as QLinearAdd (+ QLinearMul) on the integer path (planner.patterns).
HARD_OPS = frozenset({"HardSigmoid", "HardSwish"})
# A Mul or Div by a positive constant folds into the scale of the Q node before it (planner.patterns).
SCALE_OPS = frozenset({"Mul", "Div"})
INTEGER_PATH_OPS = SHARED_SCALE_OPS | QLINEAR_OPS
OBSERVED_OPS = COMPUTE_OPS | INTEGER_PATH_OPS | FOLDABLE_OPS | HARD_OPS | SCALE_OPS

# Channel axis of the activation input of each compute op, for per-channel statistics.
CHANNEL_AXIS = {"Conv": 1, "ConvTranspose": 1, "Gemm": -1, "MatMul": -1}


def observed_tensors(model: onnx.ModelProto) -> dict[str, int | None]:
    """Float activations read or written by an op quantkit may quantize -> per-channel axis (or None): a
    layer's input, and a Conv's output that is a model output (--prefer speed rounds it only where each
    channel spans enough of its grid: planner.ort_unfused).

    The model must be shape-inferred so that element types are known.
    """
    index = GraphIndex(model)
    outputs = set(index.graph_outputs)
    wanted: dict[str, int | None] = {}
    for node in index.nodes:
        if node.op_type not in OBSERVED_OPS:
            continue
        for position, name in enumerate([*node.input, *node.output]):
            if not name or index.is_constant(name) or not index.is_float(name):
                continue
            read = position == 0 or (
                node.op_type == "Conv" and position >= len(node.input) and name in outputs
            )
            axis = CHANNEL_AXIS.get(node.op_type) if read else None
            if wanted.get(name) is None:
                wanted[name] = axis
    return dict(sorted(wanted.items()))


def hard_params(node: onnx.NodeProto) -> tuple[float, float]:
    """(alpha, beta) of HardSigmoid(x) = clip(alpha x + beta, 0, 1): its attributes (defaults 0.2, 0.5), or
    HardSwish's fixed 1/6 and 1/2 (HardSwish(x) = x * HardSigmoid(x) with them)."""
    if node.op_type == "HardSwish":
        return 1.0 / 6.0, 0.5
    values = {a.name: float(a.f) for a in node.attribute}
    return values.get("alpha", 0.2), values.get("beta", 0.5)


def clips_at_zero(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """A Relu, or a Clip whose lower bound is the constant 0: max(x, 0) then at most an upper bound."""
    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip":
        return False
    low = index.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    return low is not None and low.size == 1 and float(low.reshape(())) == 0.0


def clip_top(index: GraphIndex, node: onnx.NodeProto) -> float:
    """A Clip's upper bound where it is one constant, else inf (a Relu, a Clip without one)."""
    if node.op_type != "Clip" or len(node.input) < 3 or not node.input[2]:
        return math.inf
    high = index.constant(node.input[2])
    return float(high.reshape(())) if high is not None and high.size == 1 else math.inf


def seen_through_clips(model: onnx.ModelProto, observed: dict[str, int | None]) -> dict[str, str]:
    """Observed tensors recorded with the statistics of the op that alone reads them, a Relu or a Clip(0,
    c) whose output is observed too: tensor -> that output. (The model must be shape-inferred.)

    Any quantization of such a tensor x is read through the clip: values below 0 become 0 whatever the
    range, so the error after the clip is that of quantizing clip(x) with the same range, and a range of
    clip(x) quantizes x exactly as well (the planner folds the clip into it where it can, and measures
    range errors after the consumer's function). Not observing x drops a graph output per Conv + ReLU
    pair, which lets onnxruntime fuse the pair again: calibration of SqueezeNet 1.1 and MobileNetV2 about
    a fifth faster."""
    index = GraphIndex(model)
    through: dict[str, str] = {}
    for name, axis in observed.items():
        uses = index.consumers.get(name, [])
        if axis is not None or len(uses) != 1 or name in index.graph_outputs:
            continue
        node, position = uses[0]
        if position == 0 and clips_at_zero(index, node) and node.output[0] in observed:
            through[name] = node.output[0]
    for name, view in through.items():  # a chain of clips: the last one's output is the one observed
        while view in through:
            view = through[view]
        through[name] = view
    return through


def with_outputs(model: onnx.ModelProto, names: list[str], typed: bool = True) -> onnx.ModelProto:
    """A copy of the model with `names` added as graph outputs (each once): float ones, or with `typed`
    off untyped, of whatever type they have (a float16 or integer tensor as well; onnxruntime types
    them)."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    for name in names:
        if name in present:
            continue
        added = augmented.graph.output.add()
        if typed:
            added.CopyFrom(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        else:
            added.name = name
        present.add(name)
    return augmented


def sample_bytes(model: onnx.ModelProto, names: list[str]) -> int | None:
    """float32 bytes that one sample adds to the outputs `names`: their dimensions past the first (the
    batch), from the shape-inferred model. None when a shape is not fully known."""
    sizes = tensor_bytes(model, names)
    return None if None in sizes.values() else sum(size or 0 for size in sizes.values())


def with_sample_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of the model with its graph inputs of `shapes` (input name -> one sample's shape) fixed to a
    batch of one of them, shapes inferred again (a symbolic NHWC input leaves every size unknown); the
    model as it is where onnx cannot infer them."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name not in shapes or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        wanted = (1, *shapes[value.name])
        if len(dims) != len(wanted):
            return model
        for dim, size in zip(dims, wanted, strict=True):
            dim.Clear()
            dim.dim_value = size
    del fixed.graph.value_info[:]
    try:
        return model_io.infer_shapes(fixed, data_prop=True)
    except ModelError:
        return model


def activation_bytes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """float32 bytes of every float activation of one sample with the graph inputs of `shapes` (input name
    -> one sample's shape): what a run would hold if nothing were freed (onnxruntime holds far less: its
    memory pattern reuses buffers), those of unknown size not counted."""
    fixed = with_sample_shapes(model, shapes)
    names = [v.name for v in fixed.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    return sum(size or 0 for size in tensor_bytes(fixed, names).values())


# Activations (summed, as if none were freed) that one batch of compare's may reach: afis' LEADER sums
# 2.3 GB an image at 320x320 (GELU blocks at 160x160x256), and its batches of 8 peaked at 3.9 GB for
# both models (1.1 GB for FP32 alone in plain onnxruntime); batches of 1 there. LORE's table detector at
# 768x768 (six heads, two of 256 channels) peaked at 2.64 GB with 2 GB here, 1.77 GB with 1 GB, the same
# figures and 21 % faster.
BATCH_ACTIVATION_BYTES = 1 << 30


def fitting_batch(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], batch: int) -> int:
    """The batch compare and sensitivity run: `batch`, or fewer where the batch's activations
    (graph.augment.activation_bytes of one sample) in two models would pass BATCH_ACTIVATION_BYTES (at
    least 1): both run FP32 beside another model, each session keeping its largest run's memory (a
    0.24 MB ESPCN at 320x480, 193 MB a sample, peaked at 2.0 GB in compare at batch 5: hunt30). The
    figures do not depend on it."""
    per_sample = activation_bytes(model, shapes)
    return max(1, min(batch, BATCH_ACTIVATION_BYTES // (2 * per_sample))) if per_sample else batch


def large_activations(model: onnx.ModelProto, samples: Feed) -> bool:
    """Whether one of `samples` ([K, ...] for the first input, or by input name) sums activations
    (activation_bytes) past BATCH_ACTIVATION_BYTES: the sessions measuring it then run lean
    (runtime.lean_sessions)."""
    weights = {t.name for t in model.graph.initializer}
    first = next((v.name for v in model.graph.input if v.name not in weights), None)
    feeds = {first: samples} if isinstance(samples, np.ndarray) and first else samples
    if not isinstance(feeds, dict):
        return False
    shapes = {name: tuple(int(d) for d in value.shape[1:]) for name, value in feeds.items()}
    return activation_bytes(model, shapes) > BATCH_ACTIVATION_BYTES


def declared_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Tensor name -> its dimensions as the model declares or infers them (0 where not known), for the
    graph's inputs, outputs and value_info with a shape."""
    dims: dict[str, list[int]] = {}
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims[value.name] = [
                d.dim_value if d.HasField("dim_value") else 0 for d in value.type.tensor_type.shape.dim
            ]
    return dims


def tensor_bytes(model: onnx.ModelProto, names: list[str]) -> dict[str, int | None]:
    """name -> float32 bytes of one sample of it (its dimensions past the batch), None where its shape is
    not fully known in the shape-inferred model."""
    shapes = declared_dims(model)
    sizes: dict[str, int | None] = {}
    for name in names:
        shape = shapes.get(name) or []
        known = bool(shape) and all(d > 0 for d in shape[1:])
        sizes[name] = 4 * int(np.prod(shape[1:], dtype=np.int64)) if known else None
    return sizes
