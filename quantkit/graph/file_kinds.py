"""What a file that does not parse as ONNX is instead, and an opset newer than onnx knows: the fix
differs (gunzip it; give the .onnx an .ort was made from; convert a TFLite model first), and "re-export
it" is wrong advice for most of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from quantkit.graph.query import GraphIndex
from quantkit.graph.unfuse import unfusable

# (what the first bytes show, at which offset, the fix)
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x1f\x8b", 0, "is a gzip archive, not an .onnx file: gunzip it and give the .onnx inside"),
    (b"ORTM", 4, "is an onnxruntime .ort model: give the .onnx model it was converted from"),
    (b"TFL3", 4, "is a TensorFlow Lite model: convert it to ONNX first (tf2onnx --tflite)"),
    (
        b"PK\x03\x04",
        0,
        "is a zip archive (a PyTorch checkpoint or a zipped model): export or unzip the .onnx",
    ),
    (b"\x89HDF", 0, "is an HDF5 file (a Keras model): convert it to ONNX first (tf2onnx)"),
    (b"\x80", 0, "looks like a Python pickle (a PyTorch or scikit-learn file): export the model to ONNX"),
    (
        b"version https://git-lfs",
        0,
        "is a Git LFS pointer, not the model: run `git lfs pull` in its repository, or download the file "
        "itself",
    ),
)
_TEXT = frozenset(b"\t\n\r" + bytes(range(32, 127)))  # printable ASCII
# a web page saved in place of the model (a repository's page rather than its raw file)
_HTML = (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<!--")


def not_onnx(path: Path, reason: str) -> str:
    """The message for a file onnx cannot parse: what it is where its first bytes tell, else the parse
    error and "re-export it"."""
    head = _start(path, 64)
    for magic, offset, fix in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return f"{path} {fix}"
    if head.removeprefix(b"\xef\xbb\xbf").lstrip().lower().startswith(_HTML):
        return (
            f"{path} is a web page (HTML), not the model: a page was saved in its place; download the raw "
            "file (on GitHub: 'Download raw file', not the page's address)"
        )
    if b'"quantkit-calibration"' in _start(path):  # hunt38 F5: the table given as the model
        return (
            f"{path} is a quantkit calibration table, not an ONNX model: give the model file (convert and "
            "sensitivity take the table as --calibration (-c))"  # hq172 F8: check and compare take none
        )
    if head and all(b in _TEXT for b in head):  # a placeholder, a JSON or YAML file (hunt34)
        begins = head.decode("ascii").split("\n")[0].strip()[:40]
        return f"{path} is a text file, not an ONNX model (it begins {begins!r}): give the model file itself"
    if head[:1] == b"\x08":  # ModelProto's first field, ir_version: an ONNX file that ends or breaks early
        return (
            f"{path} begins as an ONNX model but does not parse ({reason}): it is cut short or damaged "
            f"({path.stat().st_size:,} bytes); download or copy it again, or re-export it"
        )
    return f"{path} is not a valid ONNX model ({reason}); re-export it"


def no_graph(model: onnx.ModelProto, path: Path) -> str:
    """The message for a file that parsed but holds no nodes or no opset: a graph whose outputs are its
    inputs (it computes nothing, so nothing converts), or bytes that only happened to parse."""
    if model.opset_import and model.graph.input and model.graph.output:
        return (
            f"{path} holds a graph with no nodes (its outputs are its inputs or constants): nothing to "
            "convert"
        )
    if model.graph.node:  # a PyTorch 0.2 export of ESPCN (IR 1, 14 nodes) was called truncated: hunt30
        return (
            f"{path} declares no opset (IR version {model.ir_version}: written before ONNX 1.0, which "
            "onnxruntime cannot load either); re-export it at opset 7 or later"
        )
    return f"{path} holds no ONNX graph (truncated or not a model); re-export it"


def newer_opset(version: int, path: Path) -> str:
    """The message for an ai.onnx opset newer than this onnx defines ("" otherwise): onnxruntime's own
    ran on past its warning and was cut mid-sentence, without a fix."""
    known = onnx.defs.onnx_opset_version()
    if version <= known:
        return ""
    return (
        f"{path.name} uses opset {version}, newer than onnx {onnx.__version__} defines ({known}); "
        f"re-export it at opset {known} or lower"
    )


# What onnxruntime's graph optimizer writes (SessionOptions.optimized_model_filepath at ORT_ENABLE_EXTENDED
# or ORT_ENABLE_ALL): kernels fused or laid out for one CPU, which no quantizer plans on. An NCHWc model
# was refused as "custom ops onnxruntime cannot run", and a FusedConv one came out with no layer int8.
# FusedConv / FusedGemm with a known activation are written back as their standard ops (graph.unfuse).
ORT_LAYOUT_DOMAIN = "com.microsoft.nchwc"
ORT_FUSED_OPS = frozenset(
    {"FusedConv", "FusedGemm", "FusedMatMul", "NhwcConv", "NhwcFusedConv", "NhwcMaxPool"}
)


BEFORE_OPTIMIZATION = (
    "give quantkit the model before optimization (the exported file, or one saved at ORT_ENABLE_BASIC)"
)


def optimized_by_ort(model: onnx.ModelProto, path: Path) -> str:
    """The message for a model saved after onnxruntime's optimizations ("" otherwise)."""
    found = _ort_written(model, ORT_FUSED_OPS, unfusable)
    if not found:
        return ""
    return (
        f"{path.name} was saved after onnxruntime's graph optimizations ({found}): its layers are fused for "
        f"one CPU and cannot be quantized; {BEFORE_OPTIMIZATION}"
    )


def _ort_written(
    model: onnx.ModelProto, ops: frozenset[str], written_back: Callable[[onnx.NodeProto], bool]
) -> str:
    """'domain::op, domain::op and k more' of the layout's nodes and the com.microsoft `ops` in the model
    but those `written_back` (graph.unfuse writes them as standard ops); "" where none is."""
    found = sorted(
        {
            f"{n.domain}::{n.op_type}"
            for n in model.graph.node
            if n.domain == ORT_LAYOUT_DOMAIN
            or (n.domain == "com.microsoft" and n.op_type in ops and not written_back(n))
        }
    )
    more = f" and {len(found) - 2} more" if len(found) > 2 else ""
    return f"{', '.join(found[:2])}{more}" if found else ""


# what onnxruntime's optimizers write that no exporter does (transformer fusions beside ORT_FUSED_OPS)
ORT_WRITTEN_OPS = ORT_FUSED_OPS | {"BiasGelu", "FastGelu", "SkipLayerNormalization", "QuickGelu", "BiasAdd"}


def checker_refusal(model: onnx.ModelProto, path: Path, reason: str) -> str:
    """The message for a model onnx's checker refuses: where onnxruntime's optimizer wrote it (its fused
    ops in the graph), that, with the file to give instead (hunt35: a ViT saved at ORT_ENABLE_EXTENDED
    holds LayerNormalization at opset 14, which only onnxruntime runs, and was told 'fix or re-export')."""
    if training := training_refusal(model, path):  # hq157 F3: no shape inferred past a training-mode op
        return training
    found = _ort_written(model, ORT_WRITTEN_OPS, lambda _: False)
    if not found:
        return f"{path} fails onnx.checker ({reason}); fix or re-export the model"
    return (
        f"{path.name} fails onnx.checker ({reason}): it was saved after onnxruntime's graph optimizations "
        f"({found}), which write ops only onnxruntime runs; {BEFORE_OPTIMIZATION}"
    )


def _start(path: Path, size: int = 512) -> bytes:
    """The file's first `size` bytes (none where it cannot be read)."""
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def non_tensor_output(model: onnx.ModelProto, path: Path) -> str | None:
    """The refusal of a graph output that is no tensor: a sequence (SequenceConstruct: scripted torch's
    `return [logits, feat]`), an optional or a map, which onnxruntime returns as a list, None or a dict,
    and which no figure of quantkit's reads (hq60 B: calibrate, convert and compare raised an internal
    error on one). None where every output is a tensor."""
    kinds = {
        "sequence_type": "a sequence of tensors",
        "optional_type": "an optional value",
        "map_type": "a map",
    }
    text = [o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.STRING]
    if text and len(text) == len(model.graph.output):  # hq116 F2: an internal error in convert and compare
        return (
            f"every output of {path.name} is text ({', '.join(repr(t) for t in text)}: class names), which "
            "quantkit cannot measure; export the model with the scores the names are chosen from as an "
            "output too"
        )
    for output in model.graph.output:
        kind = output.type.WhichOneof("value")
        inner = output.type.sequence_type.elem_type.WhichOneof("value") if kind == "sequence_type" else None
        if inner == "map_type":  # hq110 F8: a ZipMap's list of {class: score} was 'a sequence of tensors'
            return (
                f"{path.name}'s output {output.name!r} is a sequence of maps (an ONNX-ML ZipMap's {{class: "
                "score} per sample), not a tensor, which quantkit cannot compare; export the model without "
                "the ZipMap (its input holds the same scores as a tensor)"
            )
        if kind in kinds:
            return (
                f"{path.name}'s output {output.name!r} is {kinds[kind]}, not a tensor, which quantkit cannot "
                "compare; export its tensors as separate outputs (a tuple, not a list)"
            )
    return None


def training_mode(model: onnx.ModelProto) -> list[str]:
    """The nodes that compute as in training: BatchNormalization with training_mode=1 (batch statistics),
    Dropout whose training_mode input is a constant true (random masks) and whose ratio is not a constant
    0 (timm's Dropout(p=0) exported in training mode is an identity: hq116 F4)."""
    index = GraphIndex(model)
    found = []
    for node in index.nodes:
        batch_stats = node.op_type == "BatchNormalization" and bool(index.attribute(node, "training_mode", 0))
        random = node.op_type == "Dropout" and _constant_input(
            index, node, 2, lambda v: v.dtype == bool and v.any()
        )
        if batch_stats or (random and not _constant_input(index, node, 1, lambda v: not v.any())):
            found.append(f"{node.op_type} {node.name or node.output[0]!r}")
    return found


def _constant_input(
    index: GraphIndex, node: onnx.NodeProto, k: int, test: Callable[[np.ndarray], Any]
) -> bool:
    """Whether the node's k-th input is a constant (an initializer or a Constant's) that passes `test`."""
    value = index.constant(node.input[k]) if len(node.input) > k and node.input[k] else None
    return value is not None and bool(test(value))


def training_refusal(model: onnx.ModelProto, path: Path) -> str | None:
    """The line refusing a model exported in training mode (training_mode), or None (hq110 F6: read as
    float16 rounding error, or converted silently)."""
    training = training_mode(model)
    if not training:
        return None
    return (
        f"{path.name} holds {len(training)} op(s) in training mode (first: {training[0]}): its outputs "
        "depend on the batch or change from run to run; export it in eval mode (model.eval() before "
        "torch.onnx.export)"
    )
