"""bfloat16 in numpy and the float32 emulation of a bfloat16 model: its rounding is onnxruntime's Cast
bit for bit, and every tensor the model stores in bfloat16 holds bfloat16 values in the emulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantkit.graph import fp16_rewrite
from quantkit.graph.emulate import emulate, stored_as
from quantkit.graph.float_formats import BFLOAT16
from quantkit.graph.prepare import prepare
from quantkit.qmath.bfloat16 import bfloat16_bits, round_to_bfloat16
from quantkit.runtime import Session
from tests.conftest import SIZE, rng

BF16 = TensorProto.BFLOAT16


def _x(seed: int = 0) -> np.ndarray:
    return rng(seed).normal(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)


def _cast_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Cast", ["x"], ["b"], to=BF16),
        helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])


def test_rounding_is_onnxruntimes_cast_bit_for_bit() -> None:
    g = rng(1)
    spread = g.normal(0, 1, 20000) * 10.0 ** g.integers(-30, 30, 20000)
    ties = ((np.arange(1 << 16, dtype=np.uint32) << 16) | 0x8000).view(np.float32)  # exactly halfway
    special = np.array([0.0, -0.0, np.inf, -np.inf, 3.4028235e38, 1e-45, -1e-40, 1.0], np.float32)
    x = np.concatenate([spread.astype(np.float32), ties[np.isfinite(ties)], special])
    got = Session.of(_cast_model()).run(x)["y"]
    assert np.array_equal(got.view(np.uint32), round_to_bfloat16(x).view(np.uint32))
    nan = bfloat16_bits(np.array([np.nan, -np.nan], np.float32))
    assert np.isnan(round_to_bfloat16(np.array([np.nan], np.float32))).all() and nan[0] == 0x7FC0


def test_the_emulation_rounds_every_stored_tensor(cnn: Path, tmp_path: Path) -> None:
    """Each tensor of the bfloat16 model, read from the emulation, holds bfloat16 values; the emulation
    is built from the written model's own types, the same set the rewrite reports."""
    prepared = prepare(onnx.load(str(cnn)), minimum=22).model
    rewritten = fp16_rewrite.rewrite(prepared, [], True, BFLOAT16)
    assert stored_as(rewritten.model, BF16) == rewritten.stored
    emulated = emulate(rewritten.model, rewritten.stored, BF16)
    inner = sorted(rewritten.stored - {i.name for i in rewritten.model.graph.initializer})
    probe = onnx.ModelProto()
    probe.CopyFrom(emulated)
    for name in inner:
        probe.graph.output.add().name = name
    values = Session.of(probe).run(_x(1))
    for name in inner:
        assert values[name].dtype == np.float32
        assert np.array_equal(values[name], round_to_bfloat16(values[name])), name
    assert not np.array_equal(values["y"], Session.of(prepared).run(_x(1))["y"])  # it did round
