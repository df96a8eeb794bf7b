"""The values a selection carries rather than ranks: the boxes a NonMaxSuppression compares by overlap,
the boxes or keypoints a TopK's indices gather, beside the scores it ranks.

Such a tensor is mostly where its anchors sit: a YOLOX detector's boxes in pixels, the grid position of
each anchor plus a small regression. Pooled, that fixed part measures its error: hq93's hand-sign
detector with NonMaxSuppression inside, placed for TensorRT, read 27.7 dB on its boxes (the floors
passed it) while what moves between images measured 4.5 dB, and it kept 15 of FP32's 33 final boxes
on held-out photos. Its scores measured 14.7 dB either way. So the floors read a carried tensor by how
it moves between the samples (evaluate.output_noise's `centred`), the scores as before.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx

from quantkit.graph.query import GraphIndex, selected_region

# each selecting op's input that holds what it ranks or thresholds (its other float inputs it carries)
RANKED_INPUT = {"TopK": 0, "NonMaxSuppression": 1, "NonZero": 0, "Compress": 1}


def carried(model: onnx.ModelProto, names: Collection[str]) -> frozenset[str]:
    """The tensors of `names` that flow into a selection (query.selected_region: a node that reads one,
    directly or through other ops, writes a selected tensor) and never into what a selecting op ranks
    (RANKED_INPUT). Read on any form of the graph: a converted model's Q/DQ pairs pass values on like
    any other op, and only node inputs and outputs are read (no types)."""
    index = GraphIndex(model)
    region = selected_region(index)
    if not region:
        return frozenset()  # most models: nothing selected
    return frozenset(name for name in names if _role(index, region, name) == "carried")


def _role(index: GraphIndex, region: set[str], name: str) -> str:
    """'ranked' where `name` reaches what a selecting op ranks, 'carried' where it reaches the selection
    otherwise, '' where it does not reach it. The walk stops at the selection's nodes."""
    seen, pending, reached = {name}, [name], False
    while pending:
        current = pending.pop()
        for node, position in index.consumers.get(current, ()):
            if RANKED_INPUT.get(node.op_type) == position:
                return "ranked"
            if any(out in region for out in node.output):
                reached = True
                continue
            for out in node.output:
                if out and out not in seen:
                    seen.add(out)
                    pending.append(out)
    return "carried" if reached else ""
