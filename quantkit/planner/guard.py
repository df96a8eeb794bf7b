"""The layer guard: measure each quantized linear layer's own error on the calibration samples.

A layer's error is measured after the activation that follows it (a folded ReLU/Clip, or SiLU/Sigmoid),
because that is what the next layer sees: a convolution whose outputs all land where SiLU is flat can
be coarse, one whose useful outputs come from cancelling a large bias cannot.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from quantkit.evaluate.metrics import sqnr_db
from quantkit.graph import model_io
from quantkit.graph.query import GraphIndex
from quantkit.graph.shadow import shadow_model
from quantkit.planner.core import consumer_transform
from quantkit.results import QuantPlan
from quantkit.runtime import Session


def layer_errors(model: onnx.ModelProto, plan: QuantPlan, samples: np.ndarray) -> dict[str, float]:
    """node name -> SQNR (dB) of its output, after its activation, when only it is quantized.

    samples: float32 [K, ...], run one at a time (models may fix batch 1).
    """
    shadow, twins = shadow_model(model, plan)
    session = Session(model_io.serialize(shadow))
    index = GraphIndex(model)
    transforms = {name: _output_transform(index, plan, fp) for name, (fp, _) in twins.items()}
    signal = dict.fromkeys(twins, 0.0)
    noise = dict.fromkeys(twins, 0.0)
    for sample in samples:
        outputs = session.run(sample[None])
        for name, (fp, alone) in twins.items():
            g = transforms[name]
            ref, got = g(outputs[fp].astype(np.float64)), g(outputs[alone].astype(np.float64))
            signal[name] += float(np.sum(ref * ref))
            noise[name] += float(np.sum((ref - got) ** 2))
    return {name: sqnr_db(signal[name], noise[name]) for name in twins}


def _output_transform(index: GraphIndex, plan: QuantPlan, tensor: str) -> Callable[[np.ndarray], np.ndarray]:
    uses = index.consumers.get(tensor, [])
    if len(uses) == 1 and uses[0][0].name in plan.folds:
        node = uses[0][0]
        if node.op_type == "Relu":
            return lambda x: np.maximum(x, 0.0)
        low = index.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        high = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        lo = float(low) if low is not None else -np.inf
        hi = float(high) if high is not None else np.inf
        return lambda x: np.clip(x, lo, hi)
    transform = consumer_transform(index, tensor)
    return transform if transform is not None else (lambda x: x)
