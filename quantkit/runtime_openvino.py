"""OpenVINO sessions for `compare --runtime openvino`. The only module that imports openvino (an optional
extra: `pip install 'quantkit[openvino]'`), imported when a session is made, never at module import.

A session is runtime.Session's interface where compare and the timing use it (`run`, `run_batch`,
`timed`, `output_names`, `fixed_batch`, `threads`): the CPU device, the latency hint, `threads` as
INFERENCE_NUM_THREADS and the precision hint f32, so that float layers run in float32 (the CPU plugin
would otherwise run them in bf16 on CPUs with avx512_bf16 or AMX), the FP32 reference included.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.errors import ConfigError, ModelError, shorten
from quantkit.results import Feed, feed_pad, feed_rows

INSTALL = "pip install 'quantkit[openvino]'"
DEVICE = "CPU"
PRECISION_HINT = "f32"
PERFORMANCE_HINT = "LATENCY"
# The CPU plugin's layer types that hold a Conv, ConvTranspose, Gemm or MatMul of the ONNX model
LINEAR_LAYERS = frozenset({"Convolution", "Deconvolution", "FullyConnected", "MatMul", "GroupConvolution"})
INTEGER_PRECISIONS = frozenset({"u8", "i8"})


def load_openvino() -> Any:
    """The openvino module, or the one-line error that says how to install it."""
    try:
        import openvino
    except ImportError:
        raise ConfigError(
            f"--runtime openvino needs OpenVINO, which is not installed; install it with {INSTALL}"
        ) from None
    return openvino


def version() -> str | None:
    """OpenVINO's version, or None where it is not installed (for the environment record)."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.get_version()).split("-", 1)[0]


def settings() -> dict[str, str]:
    """How every session is compiled: what the report states beside the figures."""
    return {
        "device": DEVICE,
        "precision_hint": PRECISION_HINT,
        "performance_hint": PERFORMANCE_HINT,
    }


class OpenVinoSession:
    """One model compiled for OpenVINO's CPU device with fixed threads (0: OpenVINO's choice); runs a
    float32 feed (an array for one input, {input name: array} for several), returns outputs by name."""

    def __init__(self, model: bytes | Path, threads: int = 0) -> None:
        ov = load_openvino()
        core = ov.Core()
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": PERFORMANCE_HINT,
            "INFERENCE_PRECISION_HINT": PRECISION_HINT,
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            # a path lets the ONNX frontend find external weights beside the file
            read = core.read_model(str(model) if isinstance(model, Path) else model)
            self._compiled = core.compile_model(read, DEVICE, config)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types from C++
            raise ModelError(f"OpenVINO cannot load the model ({shorten(str(exc))})") from exc
        self._request = self._compiled.create_infer_request()
        inputs = list(self._compiled.inputs)
        self.input_names = [i.get_any_name() for i in inputs]
        self.input_name = self.input_names[0]
        self._types = {i.get_any_name(): np.dtype(i.get_element_type().to_dtype()) for i in inputs}
        self._outputs = list(self._compiled.outputs)
        self.output_names = [o.get_any_name() for o in self._outputs]
        first = inputs[0].get_partial_shape()
        self._batch = first[0].get_length() if first.rank.is_static and first[0].is_static else None
        self.threads = threads

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's input fixes, or None for a dynamic batch."""
        return self._batch if self._batch and self._batch > 0 else None

    def feed(self, batch: Feed) -> dict[str, np.ndarray]:
        """A lone array goes to the first input; inputs of another float type (float16) are fed cast."""
        named = {self.input_name: batch} if isinstance(batch, np.ndarray) else dict(batch)
        return {k: v.astype(self._types[k]) if k in self._types else v for k, v in named.items()}

    def run(self, batch: Feed) -> dict[str, np.ndarray]:
        try:
            results = self._request.infer(self.feed(batch))
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types from C++
            raise ModelError(f"OpenVINO failed to run the model ({shorten(str(exc))})") from exc
        return {n: np.array(results[o]) for n, o in zip(self.output_names, self._outputs, strict=True)}

    def run_batch(self, batch: Feed) -> dict[str, np.ndarray]:
        """As runtime.Session.run_batch: a short batch padded to a fixed batch, outputs cut back."""
        size, real = self.fixed_batch, feed_rows(batch)
        if size is None or real == size:
            return self.run(batch)
        padded = feed_pad(batch, size)
        return {k: v[:real] if v.ndim and v.shape[0] == size else v for k, v in self.run(padded).items()}

    def timed(self, batch: Feed) -> float:
        """Run once; wall time in milliseconds."""
        feed = self.feed(batch)
        start = time.perf_counter_ns()
        self._request.infer(feed)
        return (time.perf_counter_ns() - start) / 1e6

    def layers(self, nodes: Mapping[str, str] | None = None) -> LayerPrecisions:
        """What the compiled model runs in which precision (see layer_precisions); `nodes`: the ONNX
        model's Conv/Gemm/MatMul by node name and by output name, to name the float ones."""
        return layer_precisions(self.runtime_layers(), nodes)

    def runtime_layers(self) -> list[dict[str, str]]:
        """The compiled model's layers in execution order, each its rt_info as text (layerType,
        runtimePrecision, originalLayersNames, primitiveType...)."""
        layers = []
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layers.append({str(k): str(info[k].astype(str)) for k in info})
        return layers


@dataclass(frozen=True)
class LayerPrecisions:
    """The compiled model's Conv/Gemm/MatMul layers (after OpenVINO's fusions: one per ONNX Conv,
    ConvTranspose, Gemm or MatMul with weights) and which of them run on int8 inputs."""

    linear: int
    integer: int
    float_layers: tuple[str, ...]  # the ONNX node names of the layers that run in float

    def to_dict(self) -> dict[str, Any]:
        return {"linear": self.linear, "int8": self.integer, "float": list(self.float_layers)}


def layer_precisions(
    layers: Iterable[dict[str, str]], nodes: Mapping[str, str] | None = None
) -> LayerPrecisions:
    """From the runtime model's rt_info per layer (layerType, runtimePrecision, originalLayersNames);
    a float layer is named by the ONNX node (`nodes`: by node or output name, as OpenVINO names an op
    after its output where that is a graph output) of the first of its original names found there."""
    linear = [layer for layer in layers if layer.get("layerType") in LINEAR_LAYERS]
    floats = [layer for layer in linear if layer.get("runtimePrecision") not in INTEGER_PRECISIONS]
    return LayerPrecisions(
        linear=len(linear),
        integer=len(linear) - len(floats),
        float_layers=tuple(_onnx_name(layer, nodes or {}) for layer in floats),
    )


def _onnx_name(layer: dict[str, str], nodes: Mapping[str, str]) -> str:
    """The ONNX node a fused layer came from: the first of its original names in `nodes`, else the
    first name without the suffix OpenVINO gives the parts it splits off (name/WithoutBiases)."""
    names = [n for n in layer.get("originalLayersNames", "").split(",") if n]
    known = [nodes[n] for n in names if n in nodes]
    return (known or [n.split("/", 1)[0] for n in names] or ["?"])[0]
