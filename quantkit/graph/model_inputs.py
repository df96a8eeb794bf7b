"""A model's inputs as quantkit feeds them (results.InputSpec): the one image input, or every input for
model-ready arrays; the element types each path takes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

import numpy as np
import onnx

from quantkit.config.fixed_inputs import OPTION, check_names
from quantkit.errors import ModelError
from quantkit.graph.query import SELECTING_OPS, GraphIndex, from_data, topological_order
from quantkit.results import InputSpec, fixed_batch_of

NO_INPUTS = (
    "the model has no inputs: it computes the same outputs on every run, and nothing is left for images or "
    "arrays to feed; export it with its image input as a graph input (not a Constant or an initializer)"
)
# hq170 F5: an input with an initializer of its name (IR 4+: a default value a feed may override) was
# called no input at all; quantkit reads such inputs as weights (IR 3 exporters listed every weight so)
DEFAULTED = (
    "every input of the model ({names}) has a default value stored as an initializer of its name, which "
    "quantkit reads as a weight: nothing is left for images or arrays to feed; export the image input "
    "without an initializer of its name"
)


def image_input(model: onnx.ModelProto, fixed: Collection[str] = ()) -> InputSpec:
    """The input images feed: float32, float16 (fed cast: a model exported in float16, or one convert
    --to fp16 --no-keep-io-types wrote), or uint8 pixels. The model's only input, or the only one besides
    those `fixed` names (given a value for every sample: config.fixed_inputs); more, or one of another
    type, are refused."""
    inputs = _graph_inputs(model)
    if not inputs:  # hq169 F1: read '--input-value gives every input of the model a value ()', not given
        listed = [i.name for i in model.graph.input][:3]
        raise ModelError(DEFAULTED.format(names=", ".join(listed)) if listed else NO_INPUTS)
    check_names(fixed, [i.name for i in inputs])
    rest = [i for i in inputs if i.name not in fixed]
    if not rest:  # hq114 F8: every input given a value read 'give the others a value for every image ()'
        raise ModelError(
            f"{OPTION} gives every input of the model a value ({', '.join(i.name for i in inputs)}), the one "
            "the images feed too; give values for the other inputs only"
        )
    if len(rest) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        image = next((i for i in rest if _rank(i) == 4), rest[0]) if rest else None
        others = ", ".join(f"{OPTION} {i.name}=..." for i in rest if i is not image)
        raise ModelError(
            f"the model has {len(inputs)} inputs ({names}); images feed one of them: give the others a value "
            f"for every image ({others}), or model-ready arrays to calibrate and compare (their --inputs: "
            ".npz files naming each input; shrink takes images only)"
        )
    images = [i.name for i in inputs if i.name in fixed and _rank(i) == 4]
    if images and _rank(rest[0]) != 4:  # hq67 F9: 'input s has shape [?,2]' for --input-value image=1
        raise ModelError(
            f"{OPTION} names {images[0]!r}, the input the images feed; give values for the others"
        )
    return _channels_read(model, _float_spec(rest[0], IMAGE_TYPES))


# what may stand between an image input and its first Conv: a normalisation by constants, an NHWC
# export's Transpose to NCHW (hq173 F7)
BEFORE_CONV = frozenset({"Sub", "Add", "Mul", "Div", "Cast", "Identity", "Transpose"})


def _channels_read(model: onnx.ModelProto, spec: InputSpec) -> InputSpec:
    """`spec` with its channels those of the first Conv that reads it (its weight's second dimension times
    its groups), through a normalisation by constants or a Transpose to NCHW (then NHWC), where it
    declares no channel axis of 1 or 3 and that axis is symbolic (hq172 F7: torch's dynamic_axes on every
    axis declares [N, C, H, W], refused as 'no channel dimension of 1 or 3')."""
    if len(spec.shape) != 4 or spec.shape[1] in (1, 3) or spec.shape[3] in (1, 3):
        return spec
    index = GraphIndex(model)
    tensor, last = spec.name, False
    for _ in range(8):
        readers = index.consumers.get(tensor, [])
        node = readers[0][0] if len(readers) == 1 else None
        if node is None or node.op_type not in BEFORE_CONV | {"Conv"}:
            return spec
        if node.op_type == "Conv":
            break
        if node.op_type == "Transpose":
            last = index.attribute(node, "perm", ()) in ([0, 3, 1, 2], (0, 3, 1, 2))
        elif any(not index.is_constant(i) for i in node.input if i and i != tensor):
            return spec
        tensor = node.output[0]
    else:
        return spec
    weight = index.constant(node.input[1]) if len(node.input) > 1 else None
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    channels = weight.shape[1] * group if weight is not None and weight.ndim == 4 else 0
    axis = 3 if last else 1
    if channels not in (1, 3) or spec.shape[axis] is not None:
        return spec
    shape = list(spec.shape)
    shape[axis] = channels
    return dataclasses.replace(spec, shape=tuple(shape))


def _rank(value: onnx.ValueInfoProto) -> int:
    return len(value.type.tensor_type.shape.dim)


def float_inputs(model: onnx.ModelProto) -> tuple[InputSpec, ...]:
    """Every input the model is fed (initializers excluded), in graph order: float32, float16, uint8, or
    (fed from arrays) another integer type or bool, which the sessions cast the samples to (a
    recognizer's int64 line widths, a bool mask)."""
    return tuple(_float_spec(value, ARRAY_TYPES) for value in _graph_inputs(model))


def run_batch(model: onnx.ModelProto) -> int:
    """The samples one run of the model takes (runtime.Session.fixed_batch, from the declared inputs): the
    batch its inputs fix, else 1. hq120 F1: float16's checks took one sample per run of a model of fixed
    batch 2, and convert --to fp16 ended in an internal error."""
    dims: list[int | None] = []
    for value in _graph_inputs(model):
        tensor = value.type.tensor_type
        first = tensor.shape.dim[0] if tensor.HasField("shape") and tensor.shape.dim else None
        dims.append(1 if first is None else first.dim_value if first.dim_value > 0 else None)
    return fixed_batch_of(dims) or 1


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


IMAGE_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.UINT8})
ARRAY_TYPES = IMAGE_TYPES | {
    onnx.TensorProto.INT8,
    onnx.TensorProto.INT16,
    onnx.TensorProto.INT32,
    onnx.TensorProto.INT64,
    onnx.TensorProto.BOOL,
}


def _float_spec(value: onnx.ValueInfoProto, allowed: frozenset[int] = IMAGE_TYPES) -> InputSpec:
    kind_of = value.type.WhichOneof("value")
    if kind_of != "tensor_type":  # hq110 F8: an optional input read as 'UNDEFINED'
        what = {"optional_type": "an optional value", "sequence_type": "a sequence", "map_type": "a map"}
        raise ModelError(
            f"input {value.name!r} is {what.get(kind_of or '', 'no tensor')}, not a tensor, which quantkit "
            "cannot feed: export the model with a tensor input there (or without it)"
        )
    tensor_type = value.type.tensor_type
    kind = tensor_type.elem_type
    if kind == onnx.TensorProto.BFLOAT16:
        raise ModelError(
            f"input {value.name!r} is BFLOAT16, which quantkit cannot feed (numpy has no bfloat16): export "
            "the model with a float32 or float16 input (if its weights are 16-bit too, give its float32 "
            "original)"
        )
    if kind not in allowed:
        # hq104 F5: an only input of INT64 fed integer arrays read as if arrays could not be integers
        beside = "; an integer or bool input only beside one (fed from arrays)"
        also = beside if allowed == IMAGE_TYPES else "; arrays also integer or bool"
        raise ModelError(
            f"input {value.name!r} is {onnx.TensorProto.DataType.Name(kind)}; quantkit feeds float32 or "
            f"float16 images, or uint8 pixels{also}: export the model with such an input"
        )
    dims = tensor_type.shape.dim
    if zero := [k for k, d in enumerate(dims) if d.HasField("dim_value") and d.dim_value == 0]:
        raise ModelError(  # onnxruntime then wants exactly 0 there: 'Got: 50 Expected: 0'
            f"input {value.name!r} declares dimension {zero[0]} as 0: no sample fits it; export the model "
            "with that dimension dynamic (a name) or at its size"
        )
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)
    return InputSpec(value.name, shape, onnx.helper.tensor_dtype_to_np_dtype(kind).name)


def require_same_form(reference: tuple[str, InputSpec], candidate: tuple[str, InputSpec]) -> None:
    """compare feeds both models the same samples: refuse two inputs that take them in other forms, 0-255
    pixels in one and normalised floats in the other (hq102 F1: an identical network read -11.4 dB, 8 %
    top-1 agreement, "broken here", exit 0: the floats were cast to uint8), or other fixed sizes or
    layouts (F2: onnxruntime's shape error blamed the reference's preprocessing). (model name, spec)."""
    (first, a), (second, b) = reference, candidate
    kinds = ("pixels" if a.pixels else a.dtype, "pixels" if b.pixels else b.dtype)
    floats = all(kind.startswith(("float", "bfloat")) for kind in kinds)
    fixed = [(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=False) if x and y]
    if (kinds[0] == kinds[1] or floats) and len(a.shape) == len(b.shape) and all(x == y for x, y in fixed):
        return
    raise ModelError(
        f"{first} takes {_form(a)} and {second} takes {_form(b)}: compare feeds both the same samples; "
        "compare two models that take the same input (export them alike), or score each on its own task"
    )


def _form(spec: InputSpec) -> str:
    """'x' as uint8 pixels [1, 32, 32, 3] / 'x' as float32 [N, 3, 32, 32]."""
    dims = ", ".join(
        "N" if k == 0 and d is None else "?" if d is None else str(d) for k, d in enumerate(spec.shape)
    )
    what = "uint8 pixels (0-255)" if spec.pixels else spec.dtype
    return f"{spec.name!r} as {what} [{dims}]"


# ops whose result for one sample depends on the others run with it: one scale for the whole tensor
BATCH_COUPLED_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})


def batch_coupled(*models: onnx.ModelProto) -> str | None:
    """What in `models` computes a sample's outputs from the whole batch it runs in (dynamic
    quantization's per-run scale), as "Softmax 'name'", or None: such a model is measured one sample a
    run, as it is deployed (hq139 F1: onnxruntime's quantize_dynamic MobileNetV2 read 12.45 dB and 89.8 %
    top-1 run 8 images at a time, 12.96 dB and 92.4 % one at a time)."""
    for model in models:
        found = next((n for n in model.graph.node if n.op_type in BATCH_COUPLED_OPS), None)
        if found is not None:
            return _named(found)
        candidates = [n for n in model.graph.node if n.op_type in REDUCE_OPS | set(AXIS_OPS) and n.input]
        if not candidates:
            continue
        index = GraphIndex(_typed(model))
        for node in candidates:  # hq149 F7: over a weight or a shape, no batch to couple
            rank = index.ranks.get(node.input[0])
            if _across_first_axis(node, index.constant, rank) and from_data(index, node.input[0]):
                return _named(node)
    return None


def _named(node: onnx.NodeProto) -> str:
    """ "Softmax 'name'" (its first output's name where the node has none)."""
    return f"{node.op_type} {node.name or (node.output[0] if node.output else '')!r}"


def _typed(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its tensors' ranks where onnx infers them (the model itself where it cannot)."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model onnx cannot infer: negative axes are read as unknown
        return model


REDUCE_OPS = frozenset(
    {
        *("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2"),
        *("ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"),
    }
)
# the ops that compute along one axis, and the axis they take without the attribute (hq148 F7: TopK and
# Hardmax take -1, not 0); CumSum's is an input
AXIS_OPS = {"ArgMax": 0, "ArgMin": 0, "Softmax": -1, "LogSoftmax": -1, "Hardmax": -1, "CumSum": 0, "TopK": -1}


def _across_first_axis(
    node: onnx.NodeProto, constant: Callable[[str], np.ndarray | None], rank: int | None = None
) -> bool:
    """Whether `node` computes across axis 0, the batch's in a model's inputs (hq137 F3: y = ReduceSum of
    the whole output read 35.39 dB over compare's batches of 8, 21.45 dB one image at a time): a reduction
    over every axis or axis 0, an ArgMax / Softmax / CumSum / TopK along axis 0. Past a Transpose or a
    Reshape axis 0 may be another: such a model is measured one sample a run, slower but as deployed.
    rank: its input's, where known: -rank is axis 0 too (hq149 F3: axes=[-4] of a 4-D map was missed)."""

    def first(axis: int) -> bool:
        return axis == 0 or (rank is not None and axis == -rank)

    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in AXIS_OPS:
        axis = node.input[2] if node.op_type == "CumSum" and len(node.input) > 2 else None
        found = constant(axis) if axis else attributes.get("axis", AXIS_OPS[node.op_type])
        return found is not None and first(int(np.asarray(found).reshape(-1)[0]))
    if node.op_type not in REDUCE_OPS:
        return False
    axes = attributes.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        given = constant(node.input[1])
        if given is None:
            return False  # computed axes: unknown
        axes = list(np.asarray(given).reshape(-1))
    if not axes:  # every axis, unless told to do nothing
        return not attributes.get("noop_with_empty_axes", 0)
    return any(first(int(a)) for a in axes)


# ops whose outputs' shapes can follow the data: their rows may differ between two models of one function
# (hq151 F2: an NMS in an If body, a TopK of a K computed from the data, a Loop of a data trip count)
DATA_SHAPED_OPS = frozenset({*SELECTING_OPS, "Unique", "If", "Loop", "Scan"})


def shaped_by_data(model: onnx.ModelProto) -> set[str]:
    """The tensors whose shapes can follow the data: written by a DATA_SHAPED_OPS op or computed from one
    (hq153 F1: an If anywhere in the model let a size changed elsewhere through)."""
    index = GraphIndex(model)
    shaped: set[str] = set()
    for node in topological_order(index.nodes, [*index.graph_inputs, *index.initializers]):
        if node.op_type in DATA_SHAPED_OPS or any(name in shaped for name in node.input):
            shaped.update(o for o in node.output if o)
    return shaped
