"""Forms onnxruntime mishandles, known by their form (quantkit.ort_quirks): a float16 3-D Transpose that a
MatMul reads crashes its NCHWc layout pass (SIGSEGV). quantkit's sessions run such a model without that
pass, and compare says so. The commands run in a child, where a crash is an exit code, not this test
process gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit.ort_quirks import crashing_transposes, nchwc_crash
from tests.conftest import SIZE, conv_params, rng


def _half_model(between: str = "Identity", perm: tuple[int, ...] = (1, 0, 2)) -> onnx.ModelProto:
    """x [1, 3, 16, 16] float32 -> Cast float16 -> Conv -> Relu -> Reshape [1, 128, 16] -> Transpose(perm)
    -> `between` -> MatMul [16, 6] -> Cast float32 -> y [128, 1, 6]: a float16 model as converters outside
    quantkit write one (keep_io_types), sequence-first as torch's nn.MultiheadAttention exports."""
    p = conv_params(8, 3, seed=2)
    half = {"to": TensorProto.FLOAT16} if between == "Cast" else {}
    inits = {
        "w": p["w"].astype(np.float16),
        "b": p["b"].astype(np.float16),
        "shape": np.array([0, 8 * SIZE, SIZE], np.int64),
        "wm": rng(3).normal(0, 0.2, (SIZE, 6)).astype(np.float16),
        **({"k": np.array(0.25, np.float16)} if between == "Mul" else {}),
    }
    nodes = [
        helper.make_node("Cast", ["x"], ["xh"], name="to_half", to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["xh", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["s"], name="flat"),
        helper.make_node("Transpose", ["s"], ["t"], name="swap", perm=list(perm)),
        helper.make_node(between, ["t", "k"] if between == "Mul" else ["t"], ["t2"], name="between", **half),
        helper.make_node("MatMul", ["t2", "wm"], ["m"], name="dense"),
        helper.make_node("Cast", ["m"], ["y"], name="to_float", to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8 * SIZE, 1, 6])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_the_crashing_form_is_found_through_what_onnxruntime_removes() -> None:
    """hq172 F2: an Identity, a Dropout or a Cast between the Transpose and the MatMul crashed it the same,
    and a scale by a constant (hq173 F1: torch's MultiheadAttention scales q after its transpose); a 4-D
    Transpose (attention's) or one the MatMul reads second does not. A float32 Transpose in a float16
    model (quantkit's own --to fp16 keeps it so) loads, and is timed with the pass on (hq173 F2)."""
    for between in ("Identity", "Dropout", "Cast", "Mul"):
        model = _half_model(between)
        assert [(t.name, m.name) for t, m in nchwc_crash(model)] == [("swap", "dense")], between
    second = _half_model()
    second.graph.node[6].input[:] = ["wm", "t2"]
    assert crashing_transposes(second.graph) == []
    float32 = _half_model()
    del float32.graph.node[0]
    float32.graph.node[0].input[0] = "x"
    for name in ("w", "b", "wm"):
        tensor = next(t for t in float32.graph.initializer if t.name == name)
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), name))
    float32.graph.node[-1].attribute[0].i = TensorProto.FLOAT
    assert crashing_transposes(float32.graph) and nchwc_crash(float32) == []  # float32: it loads
    kept = helper.make_graph(
        [
            helper.make_node("Transpose", ["x"], ["t"], name="swap", perm=[1, 0, 2]),
            helper.make_node("Cast", ["t"], ["th"], name="to_half", to=TensorProto.FLOAT16),
            helper.make_node("MatMul", ["th", "wm"], ["m"], name="dense"),
            helper.make_node("Cast", ["m"], ["y"], name="to_float", to=TensorProto.FLOAT),
        ],
        "kept",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 1, 6])],
        [numpy_helper.from_array(rng(3).normal(0, 0.2, (SIZE, 6)).astype(np.float16), "wm")],
    )
    own = helper.make_model(kept, opset_imports=[helper.make_opsetid("", 13)])
    assert crashing_transposes(own.graph) and nchwc_crash(own) == []


def test_a_float16_model_that_crashes_onnxruntime_is_run_without_the_pass_and_said(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq172 F2: `convert --to int8` of a float16 model holding the form, and `compare` against one made
    elsewhere, died with exit 139 and no word (onnxruntime's default session, in this process). Both run
    it without the NCHWc pass; compare says why, and what the user's own sessions need."""
    half = tmp_path / "half.onnx"
    onnx.save(_half_model(), str(half))
    crash = subprocess.run(
        [sys.executable, "-c", "import onnxruntime as o, sys; o.InferenceSession(sys.argv[1])", str(half)],
        capture_output=True,
        timeout=300,
    )
    assert crash.returncode < 0  # the form still crashes this onnxruntime: what the test is about
    table, out = tmp_path / "half.json", tmp_path / "half.int8.onnx"
    runs = {
        "calibrate": ["calibrate", str(half), "--images", str(image_dir), "-o", str(table), "-q"],
        "convert": ["convert", str(half), "-c", str(table), "-o", str(out), "-q"],
        "compare": ["compare", str(half), str(out), "--images", str(image_dir), "--runs", "2"],
        "compare the float16 model": [
            "compare",
            str(out),
            str(half),
            "--images",
            str(image_dir),
            "--runs",
            "2",
        ],
    }
    said = ""
    for what, argv in runs.items():
        done = subprocess.run(
            [sys.executable, "-m", "quantkit", *argv], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (what, done.returncode, done.stderr)
        said = " ".join(done.stderr.split())
    assert (
        "crashes making a default session for half.onnx (SIGSEGV): its float16 Transpose 'swap' feeds "
        "MatMul 'dense', which the NCHWc layout pass cannot take; these figures ran with that pass off, as "
        "your own sessions must (InferenceSession(..., disabled_optimizers=['NchwcTransformer']))"
    ) in said
