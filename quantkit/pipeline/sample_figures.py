"""What convert's figures on the calibration samples hide, said beside them (pipeline.writing's
measurement_notes): a Softmax / Sigmoid output's own smoke-test figure far above its logits' (the floors
and searches judge the logits)."""

from __future__ import annotations

import numpy as np
import onnx

from quantkit.evaluate.metrics import sqnr_db
from quantkit.evaluate.output_noise import OutputNoise
from quantkit.planner import fallback
from quantkit.results import Feed, Runs

# A Softmax / Sigmoid output whose smoke-test figure is this far above its logits' gets a note.
SATURATED_GAP_DB = 10.0


def saturated_note(
    converted: onnx.ModelProto,
    squashed: list[tuple[str, str]],
    reference: Runs,
    samples: Feed,
    smoke: dict[str, float],
) -> tuple[str, ...]:
    """A note naming the squashed outputs whose smoke-test SQNR is far above their logits': scores
    saturated on the samples hide their noise (hunt46 B1: a captcha digit's softmax 68.2 dB on 8 samples,
    its logits 37.9 dB, the softmax 33.4 dB held out; a VGG16 classifier's 51.1 dB, 32.3 dB held out)."""
    present = {name for node in converted.graph.node for name in node.output}
    pairs = [(o, lg) for o, lg in squashed if lg in present and np.isfinite(smoke.get(o, np.nan))]
    if not pairs or not reference:
        return ()
    noise = OutputNoise()
    runs = [{lg: r[lg] for _, lg in pairs} for r in reference]
    fallback.output_sqnr(converted, runs, samples, noise=noise)
    found: list[str] = []
    for output, logits in pairs:
        ratio = noise.powers[logits].relative() if logits in noise.powers else None
        judged = sqnr_db(1.0, ratio) if ratio is not None else np.inf
        if smoke[output] > judged + SATURATED_GAP_DB:
            found.append(f"{output!r} {smoke[output]:.1f} dB (its logits {judged:.1f} dB)")
    if not found:
        return ()
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return (
        f"smoke-test figures far above their logits': {', '.join(found[:3])}{more}: the scores are saturated "
        "on the samples, which hides their noise; on inputs with close calls they measure nearer their "
        "logits (quantkit compare on held-out images)",
    )
