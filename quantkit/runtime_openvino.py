"""OpenVINO sessions for `compare --runtime openvino`. The only module that imports openvino (an optional
extra, `pip install 'openvino>=2024.0'`), imported when a session is made, never at module import.

A session is runtime.Session's interface where compare and the timing use it (`run`, `run_batch`,
`timed`, `output_names`, `fixed_batch`, `threads`): the CPU device, the latency hint, `threads` as
INFERENCE_NUM_THREADS and the precision hint f32, so that float layers run in float32 (the CPU plugin
would otherwise run them in bf16 on CPUs with avx512_bf16 or AMX), the FP32 reference included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit.errors import ConfigError, ModelError, shorten
from quantkit.results import Feed, batched, fed_as, feed_pad, feed_rows

INSTALL = "pip install 'openvino>=2024.0'"  # the `openvino` extra's (pyproject.toml)
DEVICE = "CPU"
PRECISION_HINT = "f32"
PERFORMANCE_HINT = "LATENCY"
# The CPU plugin's layer types that hold a Conv, ConvTranspose, Gemm or MatMul of the ONNX model
LINEAR_LAYERS = frozenset({"Convolution", "Deconvolution", "FullyConnected", "MatMul", "GroupConvolution"})
INTEGER_PRECISIONS = frozenset({"u8", "i8"})
LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# what OpenVINO folds into a linear layer and may name the fused layer after (bias Add, scale Mul)
FOLDED_AFTER = frozenset({"Add", "Mul", "Div", "Sub", "Identity"})


# OpenVINO nests each layer's exception in the next: "Exception from src/inference/src/cpp/core.cpp:117:"
_SOURCES = re.compile(r"Exception from \S+:\d+:\s*")


def openvino_reason(text: str) -> str:
    """OpenVINO's error on one line without the source files it was passed through, so that the line
    keeps the node it names (hunt52 B2: 'Exception from src/inference/src/cpp/core.cpp:117: Exception
    from ... [ReshapeTransformation] END: node:...' was cut where the node's name began)."""
    return shorten(_SOURCES.sub("", text), 320)


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
            raise ModelError(f"OpenVINO cannot load the model ({openvino_reason(str(exc))})") from exc
        self._request = self._compiled.create_infer_request()
        inputs = list(self._compiled.inputs)
        declared_inputs, declared_outputs = _declared(model)
        self.input_names = [port_name(i.get_names(), i.get_any_name(), declared_inputs) for i in inputs]
        self.input_name = self.input_names[0]
        self._types = {
            n: np.dtype(i.get_element_type().to_dtype())
            for n, i in zip(self.input_names, inputs, strict=True)
        }
        self._outputs = list(self._compiled.outputs)
        self.output_names = [
            port_name(o.get_names(), o.get_any_name(), declared_outputs) for o in self._outputs
        ]
        first = inputs[0].get_partial_shape()
        self._batch = first[0].get_length() if first.rank.is_static and first[0].is_static else None
        self.threads = threads

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's input fixes, or None for a dynamic batch."""
        return self._batch if self._batch and self._batch > 0 else None

    def feed(self, batch: Feed) -> dict[str, np.ndarray]:
        """A lone array goes to the first input; inputs of another type (float16, uint8 pixels, integer or
        bool arrays) are fed cast (results.fed_as)."""
        named = {self.input_name: batch} if isinstance(batch, np.ndarray) else dict(batch)
        return {k: fed_as(v, self._types[k]) if k in self._types else v for k, v in named.items()}

    def run(self, batch: Feed) -> dict[str, np.ndarray]:
        try:
            results = self._request.infer(self.feed(batch))
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types from C++
            raise ModelError(f"OpenVINO failed to run the model ({shorten(str(exc))})") from exc
        outputs = zip(self.output_names, self._outputs, strict=True)
        return {n: batched(np.array(results[o])) for n, o in outputs}

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
    """The model's Conv/Gemm/MatMul as OpenVINO's CPU plugin runs them: how many, how many on int8
    inputs, and the others with the runtime layer that holds each ("Convolution f32", "Subgraph f32")."""

    linear: int
    integer: int
    float_layers: tuple[str, ...]  # the ONNX node names of the ones that run in float
    held_by: tuple[str, ...] = ()  # for each float one, its runtime layer's type and precision

    def to_dict(self) -> dict[str, Any]:
        return {
            "linear": self.linear,
            "int8": self.integer,
            "float": list(self.float_layers),
            "float_held_by": dict(zip(self.float_layers, self.held_by, strict=False)),
        }


def port_name(names: Iterable[str], fallback: str, declared: Iterable[str]) -> str:
    """The ONNX name of a compiled model's port: the model's declared input / output among the port's
    names, else its any-name. OpenVINO may hand an output the name of a tensor before an op it moved:
    YuNet's cls_8 = Sigmoid(Reshape(...)) came back as '291' (hunt51 A1: convert --target openvino's check
    failed with KeyError 'cls_8', compare labelled the probabilities with the logits' name)."""
    held = set(names)
    return next((name for name in declared if name in held), fallback)


def _declared(model: bytes | Path) -> tuple[list[str], list[str]]:
    """The ONNX graph's input and output names (weights stay on disk)."""
    proto = (
        onnx.load(str(model), load_external_data=False)
        if isinstance(model, Path)
        else onnx.load_from_string(model)
    )
    return [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]


def linear_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """The model's Conv/Gemm/MatMul by every name OpenVINO may give the layer that runs one: the node's
    name, its output's, and those of up to two Add/Mul/Div/Sub/Identity that alone read it in turn (a
    bias or a scale the layer absorbs), each mapped to the node's name."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    names: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in LINEAR_OPS:
            continue
        aliases, last = [node.name, node.output[0]], node
        for _ in range(2):  # MatMul -> bias Add -> Identity (a graph output) names the layer `logits`
            after = readers.get(last.output[0], [])
            if len(after) != 1 or after[0].op_type not in FOLDED_AFTER:
                break
            last = after[0]
            aliases += [last.name, last.output[0]]
        for alias in reversed(aliases):  # a node's own names win over another's folded ones
            names.setdefault(alias, node.name)
    return names


def layer_precisions(
    layers: Iterable[dict[str, str]], nodes: Mapping[str, str] | None = None
) -> LayerPrecisions:
    """From the runtime model's rt_info per layer (layerType, runtimePrecision, originalLayersNames).
    With `nodes` (the ONNX model's Conv/Gemm/MatMul by node name and by output name, as OpenVINO names
    an op after its output where that is a graph output), each of them is counted once, in the layer that
    holds it: int8 where that is a Convolution/FullyConnected/MatMul layer on u8/i8 inputs, float
    otherwise (a float layer, or a fused Subgraph such as the CPU plugin's attention block). Without
    `nodes`, the runtime model's own linear layers are counted."""
    layers = list(layers)
    if not nodes:
        linear = [layer for layer in layers if _is_linear(layer)]
        floats = [layer for layer in linear if not _is_integer(layer)]
        return LayerPrecisions(
            len(linear),
            len(linear) - len(floats),
            tuple(_onnx_name(layer) for layer in floats),
            tuple(_kind(layer) for layer in floats),
        )
    holder: dict[str, dict[str, str]] = {}
    for layer in layers:
        for name in _names(layer):
            node = nodes.get(name)
            if node is not None and (
                node not in holder or (_is_linear(layer) and not _is_linear(holder[node]))
            ):
                holder[node] = layer
    ordered = list(dict.fromkeys(nodes.values()))
    kept = [n for n in ordered if n not in holder or not _is_integer(holder[n])]
    return LayerPrecisions(
        len(ordered),
        len(ordered) - len(kept),
        tuple(kept),
        tuple(_kind(holder[n]) if n in holder else "not in the runtime model" for n in kept),
    )


def _is_linear(layer: dict[str, str]) -> bool:
    return layer.get("layerType") in LINEAR_LAYERS


def _is_integer(layer: dict[str, str]) -> bool:
    return _is_linear(layer) and layer.get("runtimePrecision") in INTEGER_PRECISIONS


def _kind(layer: dict[str, str]) -> str:
    return f"{layer.get('layerType')} {layer.get('runtimePrecision')}"


def _names(layer: dict[str, str]) -> list[str]:
    """A layer's original names, each also without the suffix OpenVINO gives the parts it splits off or
    rewrites (Conv_3/WithoutBiases, matmul_7/DequantizationMultiply)."""
    names = [n for n in layer.get("originalLayersNames", "").split(",") if n]
    return list(dict.fromkeys(part for n in names for part in (n, n.split("/", 1)[0])))


def _onnx_name(layer: dict[str, str]) -> str:
    """A layer's ONNX node without a name map: the first original name, less the suffix OpenVINO gives
    the parts it splits off (name/WithoutBiases)."""
    return next((n for n in _names(layer) if "/" not in n), "?")
