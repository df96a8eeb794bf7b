"""Shared fixtures: tiny models built with onnx.helper, generated image folders, the shared assets."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
SIZE = 16


@pytest.fixture(autouse=True)
def _thin_layers_pay(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny models here have 4-16 channels: too thin for int8 to pay for its Q/DQ passes beside a
    float op (planner.payoff), which would keep float the layers the other rules are tested on. Those
    tests plan as if every layer paid; a module that sets JUDGE_PAYOFF = True (test_speed_plan) tests
    the rule itself."""
    if not getattr(request.module, "JUDGE_PAYOFF", False):
        from quantkit.planner import payoff

        monkeypatch.setattr(payoff, "MIN_INTENSITY", 0.0)


@pytest.fixture(autouse=True)
def _no_timed_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default speed-aware plan (pipeline.speed_refine) keeps ops float by this machine's timing: on
    the tiny models here int8 is often slower, and a loaded machine could float the layers the other rules
    are tested on, some runs and not others. It never acts here unless a test lowers MIN_SAVING_US or
    MIN_TIMED_US, raises WHOLE_SLOWER_BELOW or sets TIE_MARGIN or INPUTS_ONLY again
    (tests/test_speed_cut.py, tests/test_inputs_only.py, with stubbed timings). Nor does the default's
    check that writes a model measured slower than FP32 float (evaluate.speed.KEEP_FLOAT_BELOW;
    tests/test_speed_check.py sets it back), nor a decision kept from another test or run
    (pipeline.speed_memory: off unless a test sets its own folder), nor compare's warning that its timings
    scattered, nor shrink's speed gate judging the runs' own ratios then (evaluate.speed.SCATTER_MIN_RUNS;
    tests/test_speed_check.py sets it back)."""
    from quantkit.config import Prefer
    from quantkit.evaluate import speed
    from quantkit.pipeline import speed_memory, speed_refine

    monkeypatch.setitem(speed.KEEP_FLOAT_BELOW, Prefer.balanced, None)
    monkeypatch.setattr(speed, "SCATTER_MIN_RUNS", 10**9)

    monkeypatch.setattr(speed_refine, "MIN_SAVING_US", float("inf"))
    monkeypatch.setattr(speed_refine, "MIN_TIMED_US", float("inf"))
    monkeypatch.setattr(speed_refine, "WHOLE_SLOWER_BELOW", 0.0)
    monkeypatch.setattr(speed_refine, "TIE_MARGIN", None)
    monkeypatch.setattr(speed_refine, "INPUTS_ONLY", False)
    monkeypatch.setenv(speed_memory.ENV, speed_memory.OFF)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`ray` tests need a running cluster (.ci/ray_cluster starts one and sets RAY_ADDRESS) and the
    `ray` extra; without either they are skipped with the reason."""
    ray_tests = [item for item in items if item.get_closest_marker("ray")]
    if not ray_tests:
        return
    if importlib.util.find_spec("ray") is None:
        reason = "ray is not installed: .venv/bin/python -m pip install -e '.[ray]'"
    elif not os.environ.get("RAY_ADDRESS"):
        reason = "no Ray cluster (RAY_ADDRESS unset): .ci/ray_cluster .venv/bin/python -m pytest -m ray"
    else:
        return
    for item in ray_tests:
        item.add_marker(pytest.mark.skip(reason=reason))


def requires_assets() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not (ASSETS / "models").is_dir(),
        reason=f"real models and images not found at {ASSETS} (CI has ../shared beside the checkout)",
    )


def make_model(
    nodes: Sequence[onnx.NodeProto],
    initializers: dict[str, np.ndarray],
    output: str = "y",
    input_shape: Sequence[int | str] = ("N", 3, SIZE, SIZE),
    opset: int = 13,
    input_name: str = "x",
    outputs: Sequence[str] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in (outputs or [output])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]  # undeclared outputs land in value_info, typed by inference
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(probe).graph.value_info}
    for out in model.graph.output:
        if out.name in inferred:
            out.type.CopyFrom(inferred[out.name].type)
    onnx.checker.check_model(model)
    return model


def checked_model(graph: onnx.GraphProto, path: Path, opset: int = 13) -> Path:
    """`graph` as a checked model of `opset` (IR 8), saved at `path`."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def conv_params(c_out: int, c_in: int, k: int = 3, seed: int = 0, group: int = 1) -> dict[str, np.ndarray]:
    g = rng(seed)
    return {
        "w": (g.normal(0, 0.3, (c_out, c_in // group, k, k))).astype(np.float32),
        "b": (g.normal(0, 0.1, (c_out,))).astype(np.float32),
    }


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small random photos-like images (smooth gradients plus noise), PNG and JPEG, in two folders."""
    folder = tmp_path_factory.mktemp("images")
    g = rng(42)
    for i in range(24):
        base = np.linspace(0, 255, 40)[None, :, None] * g.uniform(0.2, 1.0, (1, 1, 3))
        pixels = np.clip(base + g.normal(0, 40, (30, 40, 3)), 0, 255).astype(np.uint8)
        sub = folder / ("cats" if i % 2 else "dogs")
        sub.mkdir(exist_ok=True)
        suffix = ".png" if i % 3 else ".jpg"
        Image.fromarray(pixels).save(sub / f"img{i:02d}{suffix}")
    return folder


def nms_head(boxes: str = "boxes") -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """(nodes, initializers) of a tiny detector before its NonMaxSuppression: x [1, 3, 16, 16] -> Conv
    features -> `boxes` [1, 16, 4] and class scores 'scores' [1, 2, 16] (Sigmoid), with the NMS's
    constants 'most', 'iou' and 'least'."""
    p, box, score = conv_params(8, 3), conv_params(4, 8, 4, 1), conv_params(2, 8, 4, 2)
    consts = {"s1": np.array([1, 4, 16], np.int64), "s2": np.array([1, 2, 16], np.int64)}
    consts |= {"most": np.array([5], np.int64), "iou": np.array([0.5], np.float32)}
    consts |= {"least": np.array([0.3], np.float32)}
    weights = {"w": p["w"], "b": p["b"], "wb": box["w"], "bb": box["b"], "ws": score["w"], "bs": score["b"]}
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wb", "bb"], ["cb"], name="box", strides=[4, 4]),
        helper.make_node("Conv", ["r", "ws", "bs"], ["cs"], name="score", strides=[4, 4]),
        helper.make_node("Reshape", ["cb", "s1"], ["b3"], name="box_rows"),
        helper.make_node("Transpose", ["b3"], [boxes], name="boxes", perm=[0, 2, 1]),
        helper.make_node("Sigmoid", ["cs"], ["sg"], name="sigmoid"),
        helper.make_node("Reshape", ["sg", "s2"], ["scores"], name="scores"),
    ]
    return nodes, weights | consts


def tiny_cnn(path: Path, seed: int = 0, inputs: int = 1) -> Path:
    p1, p2 = conv_params(4, 3, 3, seed), conv_params(5, 4, 1, seed + 1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Conv", ["g", "w2", "b2"], ["h"], name="c2"),
        helper.make_node("Flatten", ["h"], ["y"], name="flat"),
    ]
    model = make_model(nodes, {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]})
    if inputs == 2:
        model.graph.input.append(helper.make_tensor_value_info("x2", onnx.TensorProto.FLOAT, [1, 3, 16, 16]))
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    return tiny_cnn(tmp_path / "cnn.onnx")
