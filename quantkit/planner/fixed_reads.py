"""What a plan keeps float because it is computed from an input given one value for every calibration image
(`--input-value`: RT-DETR's orig_target_sizes, PaddleDetection's scale_factor). Its calibrated range is
that value's; the deployment feeds each image's own (a 1920x1080 photo's size where calibration gave
640,640), which int8 ranges measured on one value would clip."""

from __future__ import annotations

from quantkit.graph.query import GraphIndex
from quantkit.results import CalibrationTable

FROM_FIXED_INPUT = (
    "computed from an input --input-value fixed: its range is that value's, the deployment's differ"
)


def fixed_input_names(table: CalibrationTable) -> frozenset[str]:
    """The inputs the table's calibration gave a value for every image (its recorded preprocessing)."""
    recorded = table.meta.get("preprocess")
    fixed = recorded.get("fixed_inputs", []) if isinstance(recorded, dict) else []
    return frozenset(str(f.get("name")) for f in fixed if isinstance(f, dict))


SHAPE_READERS = frozenset({"Shape", "Size"})  # they read a tensor's shape, never its values


def from_fixed_inputs(index: GraphIndex, names: frozenset[str]) -> tuple[set[str], set[str]]:
    """(the tensors computed from the values of the inputs `names`, those inputs included; the nodes that
    read one). A Shape or Size reads no value (hq67 F3: an input read for its batch size kept the rest of
    the network float)."""
    tensors, readers = set(names), set()
    pending = list(names)
    while pending:
        for node, _ in index.consumers.get(pending.pop(), []):
            if node.op_type in SHAPE_READERS:
                continue
            readers.add(node.name)
            for out in node.output:
                if out and out not in tensors:
                    tensors.add(out)
                    pending.append(out)
    return tensors, readers
