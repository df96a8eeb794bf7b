"""Fuzz targets for the three loaders that read user files: models, calibration tables and images.

Run by `make fuzz` (not by `make test`): QUANTKIT_FUZZ_EXAMPLES inputs per target (default 2000 there,
about 25 s in all on 2 cores; a new random draw each run, failures kept in .hypothesis/ and replayed first),
each a valid seed file mutated by bit flips, overwrites, cuts, insertions and duplications, or plain
random bytes. A loader may accept the input or raise the tool's own error (QuantkitError); anything else
(an exception from onnx, protobuf, numpy, zipfile or Pillow leaking out) is a crash and fails the run
with the shrunk input printed by hypothesis.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper
from PIL import Image

from quantkit.calib import table as table_io
from quantkit.config import Layout, Preprocess, ResizeMode
from quantkit.errors import QuantkitError
from quantkit.graph import model_inputs, model_io
from quantkit.images import load_sample
from quantkit.results import CalibrationTable, TensorStats
from tests.conftest import conv_params, make_model

pytestmark = pytest.mark.fuzz

FUZZ = settings(
    max_examples=int(os.environ.get("QUANTKIT_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PRE = Preprocess(
    height=12,
    width=12,
    channels=3,
    layout=Layout.NCHW,
    mean=(0.0, 0.0, 0.0),
    std=(255.0, 255.0, 255.0),
    bgr=False,
    resize=ResizeMode.crop,
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with 1-8 random edits, or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "dup"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "dup" and data:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def survives(action: Callable[[], object]) -> None:
    """The action returns, or raises QuantkitError: nothing else may escape."""
    try:
        action()
    except QuantkitError as exc:
        assert "\n" not in str(exc)


# ---------------------------------------------------------------- models


def _model_seeds() -> list[bytes]:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["y"]),
    ]
    model = make_model(nodes, conv_params(4, 3))
    return [model.SerializeToString(), make_model(nodes, conv_params(2, 3, k=1)).SerializeToString()]


MODEL_SEEDS = _model_seeds()


@FUZZ
@given(data=mutated(MODEL_SEEDS))
def test_model_loader(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.onnx"
        path.write_bytes(data)

        def load() -> None:
            model = model_io.load_model(path)
            model_inputs.image_input(model)
            model_io.infer_shapes(model)

        survives(load)


# ---------------------------------------------------------------- calibration tables


def _table_seed() -> tuple[bytes, bytes]:
    g = np.random.default_rng(0)
    stats = {
        name: TensorStats(
            minimum=-1.0,
            maximum=2.0,
            hist=g.integers(0, 50, 2048).astype(np.int64),
            hist_lo=-1.0,
            hist_hi=2.0,
            count=1000,
            channel_min=np.full(4, -1.0, np.float32),
            channel_max=np.full(4, 2.0, np.float32),
            channel_mean=np.zeros(4),
        )
        for name in ("a", "b/1")
    }
    meta = {"model_sha256": "ab" * 32, "preprocess": {}, "images": {"count": 3}}
    table = CalibrationTable(meta=meta, stats=stats, samples=np.zeros((2, 3, 4, 4), np.float32))
    return table_io.serialize(table)


TABLE_JSON, TABLE_NPZ = _table_seed()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def edited_json(draw: st.DrawFn) -> bytes:
    """The seed table's JSON with one value replaced, as a hand edit would."""
    doc = json.loads(TABLE_JSON)
    entry = doc["tensors"][draw(st.integers(0, len(doc["tensors"]) - 1))]
    target = draw(st.sampled_from([doc, doc["meta"], entry]))
    key = draw(st.sampled_from(sorted(target)))
    target[key] = draw(JSON_VALUES)
    return json.dumps(doc).encode()


def _load_table(json_bytes: bytes, npz_bytes: bytes, fix_hash: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.json"
        if fix_hash:  # let the mutation reach the parser behind the hash check
            try:
                doc = json.loads(json_bytes)
                doc["arrays_sha256"] = hashlib.sha256(npz_bytes).hexdigest()
                json_bytes = json.dumps(doc).encode()
            except (ValueError, TypeError):
                pass
        path.write_bytes(json_bytes)
        table_io.arrays_path(path).write_bytes(npz_bytes)
        survives(lambda: table_io.load(path))


@FUZZ
@given(json_bytes=mutated([TABLE_JSON]) | edited_json(), fix_hash=st.booleans())
def test_table_loader_json(json_bytes: bytes, fix_hash: bool) -> None:
    _load_table(json_bytes, TABLE_NPZ, fix_hash)


@FUZZ
@given(npz_bytes=mutated([TABLE_NPZ]), fix_hash=st.booleans())
def test_table_loader_arrays(npz_bytes: bytes, fix_hash: bool) -> None:
    _load_table(TABLE_JSON, npz_bytes, fix_hash)


# ---------------------------------------------------------------- images


def _image_seeds() -> list[bytes]:
    g = np.random.default_rng(1)
    pixels = Image.fromarray(g.integers(0, 255, (10, 14, 3), dtype=np.uint8))
    seeds = []
    for image, fmt in [
        (pixels, "PNG"),
        (pixels, "JPEG"),
        (pixels, "BMP"),
        (pixels, "WEBP"),
        (pixels.convert("P"), "PNG"),
        (pixels.convert("RGBA"), "PNG"),
        (pixels.convert("CMYK"), "JPEG"),
        (Image.fromarray(g.integers(0, 65535, (9, 9), dtype=np.uint16)), "PNG"),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        seeds.append(buffer.getvalue())
    return seeds


@FUZZ
@given(data=mutated(_image_seeds()))
def test_image_loader(data: bytes) -> None:
    def load() -> None:
        sample = load_sample(data, PRE)
        assert sample.shape == (3, 12, 12) and sample.dtype == np.float32
        assert np.isfinite(sample).all()

    survives(load)
