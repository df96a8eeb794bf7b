"""Where a tensor's values go unchanged: the ops that only move or pick values (MOVING_OPS), the consumers
they carry a tensor to, and whether they carry it into a model output, where an op of the integer path
stays float (output_reason: what it writes is the model's answer, not an activation a uint8 range may
clip at the calibration images' extremes)."""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from quantkit.graph.augment import SHARED_SCALE_OPS
from quantkit.graph.query import GraphIndex

# ops that move or pick values without changing them: a logit stays a logit through them
MOVING_OPS = frozenset(
    {
        "Concat",
        "Reshape",
        "Transpose",
        "Split",
        "Slice",
        "Gather",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Identity",
    }
)


def moved_consumers(
    index: GraphIndex, name: str, through: frozenset[str] = MOVING_OPS
) -> Iterator[tuple[onnx.NodeProto, str]]:
    """(consumer, the tensor it reads) for each consumer of `name` and of the tensors that ops which only
    move values (`through`: MOVING_OPS) carry it to."""
    seen, todo = {name}, [name]
    while todo:
        tensor = todo.pop()
        for node, _ in index.consumers.get(tensor, []):
            yield node, tensor
            if node.op_type in through:
                fresh = [o for o in node.output if o and o not in seen]
                seen.update(fresh)
                todo.extend(fresh)


OUTPUT_REASON = "its output is a model output (kept float)"

# hq169 F4: SqueezeNet's pooled logits (AveragePool -> Flatten -> output) took their own uint8 range from
# the calibration images and were clipped at its top on other photos, so that several classes tied at the
# maximum: from one calibration photo 38.8 % top-1 agreement on 500 imagenet-dev (the pool float: 78.8 %),
# from 100, 5 of 100 held-out photos tied (95.0 -> 96.0 %, 34.49 -> 34.94 dB, the same speed).
CARRIED_OUT = (
    "its output reaches a model output through ops that only move values (kept float, as a model output "
    "is: one uint8 range would clip what the model gives at the calibration images' extremes)"
)


def output_reason(index: GraphIndex, node: onnx.NodeProto) -> str:
    """Why an op of the integer path stays float for the model output it writes, or carries there
    through MOVING_OPS or SHARED_SCALE_OPS (CARRIED_OUT); "" where it does neither. An op that shares its
    input's scale (SHARED_SCALE_OPS: MaxPool, Reshape...) rounds nothing new and is judged only where it
    writes one."""
    outputs = [o for o in node.output if o]
    if any(o in index.graph_outputs for o in outputs):
        return OUTPUT_REASON
    through = MOVING_OPS | SHARED_SCALE_OPS  # hq170 F7: a MaxPool, which picks values, carries them too
    if node.op_type not in SHARED_SCALE_OPS and any(moves_to_output(index, o, through) for o in outputs):
        return CARRIED_OUT
    return ""


def moves_to_output(index: GraphIndex, name: str, through: frozenset[str] = MOVING_OPS) -> bool:
    """`name` is a model output, or ops that only move values (`through`: MOVING_OPS) carry it into one."""
    return name in index.graph_outputs or any(
        o in index.graph_outputs
        for node, _ in moved_consumers(index, name, through)
        if node.op_type in through
        for o in node.output
    )
