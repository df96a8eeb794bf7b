"""convert --target openvino where OpenVINO is installed: the written model run in OpenVINO on the
smoke-test samples beside onnxruntime's measure of it. The Q/DQ arithmetic is the same in both, but a
runtime computes it its own way: PP-OCRv4's detector placed for OpenVINO measures 15.7 dB in onnxruntime
and 3.5 dB in OpenVINO 2026.4.1. A gap that large is said, not handed over silently."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import onnx

from quantkit.errors import ConversionError, ModelError
from quantkit.evaluate.output_errors import OutputErrors
from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.query import GraphIndex
from quantkit.outcomes import Finding
from quantkit.results import Feed, sample_batches
from quantkit.runtime import Session
from quantkit.runtime_openvino import OpenVinoSession

GAP_DB = 6.0  # OpenVINO this far below onnxruntime on the same samples: a finding


class OpenVinoRefusal(ConversionError):
    """OpenVINO cannot compile the converted model; `layers`: the quantized linear layers its error names
    (convert keeps them float and converts again)."""

    def __init__(self, message: str, layers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.layers = layers


def refused_layers(converted: onnx.ModelProto, text: str) -> tuple[str, ...]:
    """The quantized Conv / ConvTranspose / Gemm / MatMul layers of `converted` that OpenVINO's error
    `text` names: its low-precision passes call a layer's dequantization '<layer>/DequantizationMultiply'
    (LYT-Net: 'Reshape .../dense_56/Tensordot (opset1::Multiply MatMul_60/DequantizationMultiply...'),
    or name the layer itself as the node that failed."""
    index = GraphIndex(converted)
    found = []
    for node in converted.graph.node:
        if node.op_type not in COMPUTE_OPS or not node.name:
            continue
        weight = index.producer.get(node.input[1]) if len(node.input) > 1 else None
        if weight is None or weight.op_type != "DequantizeLinear":
            continue
        if f"{node.name}/Dequantization" in text or re.search(rf"node: \S+ {re.escape(node.name)} \(", text):
            found.append(node.name)
    return tuple(found)


def openvino_gap(
    original: onnx.ModelProto, converted: onnx.ModelProto, samples: Feed, smoke: dict[str, float]
) -> tuple[Finding, ...]:
    """A finding per output whose SQNR against FP32 (onnxruntime) in OpenVINO is GAP_DB or more below the
    smoke test's in onnxruntime; none where OpenVINO is not installed (convert_notes.elsewhere says so).
    Raises ConversionError where OpenVINO cannot compile the converted model."""
    if importlib.util.find_spec("openvino") is None:
        return ()
    reference = Session.of(original)
    try:
        candidate = OpenVinoSession(converted.SerializeToString())
    except ModelError as exc:  # hunt52 B2: LYT-Net's attention Dense, placed for OpenVINO, fails its
        # low-precision Reshape pass; the FP32 model and the ort-cpu placement compile
        layers = refused_layers(converted, str(exc))
        named = f" (--exclude-nodes {','.join(layers)})" if layers else ""
        raise OpenVinoRefusal(
            f"{str(exc).replace('the model', 'the converted model', 1)}; nothing was written. Convert "
            f"with --target ort-cpu (OpenVINO runs that placement too), or keep float the linear layer "
            f"whose dequantization it names{named}",
            layers,
        ) from exc
    errors = {name: OutputErrors(name) for name in reference.output_names}
    runs = (candidate.run(chunk) for chunk in sample_batches(samples, reference.fixed_batch or 1))
    for ref, got in zip(reference.iter_samples(samples), runs, strict=True):
        for name, acc in errors.items():
            acc.update(ref[name], np.asarray(got[name], np.float32))
    found = []
    for name, acc in errors.items():
        there, here = acc.result().sqnr_db, smoke.get(name)
        if here is not None and there < here - GAP_DB:
            # hunt55 B1: a PP-OCRv6 detector placed for OpenVINO measured 14.9 dB there, its ort-cpu
            # placement 26 dB
            why = (
                f"output {name} measures {there:.1f} dB in OpenVINO on the smoke-test samples against "
                f"{here:.1f} dB in onnxruntime: OpenVINO computes this model differently; measure it with "
                "`quantkit compare FP32 MODEL --runtime openvino` before deploying it, beside the --target "
                "ort-cpu placement, which OpenVINO runs too and which can measure higher there"
            )
            found.append(Finding("openvino-gap", name, "output", why))
    return tuple(found)
