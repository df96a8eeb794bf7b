"""Weights stored in files beside a model, read into it (model_io.load_model): the locations that may be
read, and the bytes read by offset and length."""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from quantkit.errors import ModelError, shorten


def load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Each weight stored in a file beside the model (at `path`) read into it. A location that leaves the
    model's folder (absolute, or through '..') is refused; a file beside the model that is a link is read
    through it where onnxruntime reads it: to a file in the model file's own real folder (hq169 F3: a
    Hugging Face hub snapshot, where the model and its data are links into the cache's blobs/, was
    refused as 'points outside the model's folder'; onnx's own loader refuses links, so the bytes are
    read here). A link elsewhere is refused, as onnxruntime refuses it (hq170 F1: calibrate and convert
    took one that compare and shrink, handing onnxruntime the path, then could not load)."""
    root, real = path.parent.resolve(), path.resolve().parent
    stored = [
        (t, _info(t))
        for t in external_data_helper._get_all_tensors(model)
        if external_data_helper.uses_external_data(t)
    ]
    for tensor, info in stored:
        location = Path(info.location)
        if location.is_absolute() or ".." in location.parts:
            raise ModelError(
                f"weight {tensor.name!r} points outside the model's folder ({info.location}); refused. "
                "Keep external data files beside the model"
            )
        if not (root / location).is_file():
            raise ModelError(
                f"external data file {info.location} of weight {tensor.name!r} is missing: copy it beside "
                f"the model (into {root})"
            )
        target = (root / location).resolve()
        if not target.is_relative_to(real) and not target.is_relative_to(root):  # hq172 F4: a real file
            raise ModelError(  # beside a linked model, which onnxruntime reads, was refused as a link
                f"external data file {info.location} of weight {tensor.name!r} is a link to {target}, "
                f"outside the model file's own folder ({real}), which onnxruntime refuses to read: copy the "
                "data file itself beside the model"
            )
    for tensor, info in stored:
        try:
            _read_external(tensor, info, root)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"external weights could not be read ({shorten(str(exc), 160)}): the data file is truncated "
                "or from another export; copy it again from where the model was exported"
            ) from exc


def _info(tensor: onnx.TensorProto) -> external_data_helper.ExternalDataInfo:
    """Where `tensor`'s bytes are stored, as its record says; a record onnx cannot read is the model's
    fault, said so (hq172 F5: an offset 'abc' or a length -4 was an 'internal error')."""
    try:
        return external_data_helper.ExternalDataInfo(tensor)
    except ValueError as exc:
        raise ModelError(
            f"the external data record of weight {tensor.name!r} is malformed ({shorten(str(exc), 120)}); "
            "re-export the model"
        ) from exc


def _read_external(tensor: onnx.TensorProto, info: external_data_helper.ExternalDataInfo, root: Path) -> None:
    """The bytes of `tensor`'s external data (`info`: its file under root, offset and length) stored in
    it, as onnx's external_data_helper stores them."""
    with open(root / info.location, "rb") as file:
        file.seek(int(info.offset or 0))
        data = file.read(int(info.length) if info.length else -1)
        size = os.fstat(file.fileno()).st_size
    if not data and math.prod(tensor.dims) > 0:  # hq172 F5: an offset past the end left it empty, and
        raise ValueError(  # onnx's checker's words were all the user got
            f"{info.location} ({size} bytes) holds no bytes of {tensor.name} at offset {info.offset or 0}"
        )
    if info.length and len(data) != int(info.length):
        raise ValueError(
            f"{info.location} holds {len(data)} of the {int(info.length)} bytes of {tensor.name}"
        )
    tensor.raw_data = data
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]
