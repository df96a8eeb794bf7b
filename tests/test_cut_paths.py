"""A layer the accuracy fallback keeps float takes its full input path or, where measured better for the
target, the path cut at tensors other layers read too (planner.cut_paths; hunt47 B2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from quantkit.config import ConvertConfig, Prefer
from quantkit.graph.query import GraphIndex
from quantkit.planner.cut_paths import Choice, preferred, token, untoken
from quantkit.planner.placement import input_path
from tests.conftest import conv_params, make_model, rng
from tests.helpers import quantize


def _residual_net(blocks: int) -> onnx.ModelProto:
    """stem Conv -> Relu, `blocks` residual blocks (Conv -> Relu -> Conv, + the block's input, Relu), global
    average pool, Flatten, Gemm: a ResNet in small."""
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["s"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["r0"], name="relu0"),
    ]
    weights: dict[str, np.ndarray] = {}
    pads = [1, 1, 1, 1]
    names = [("0", 3)] + [(f"{i}{j}", 8) for i in range(1, blocks + 1) for j in "ab"]
    for k, (name, c_in) in enumerate(names):
        p = conv_params(8, c_in, 3, 20 + k)
        weights[f"w{name}"], weights[f"b{name}"] = p["w"] * 0.5, p["b"]
    for i in range(1, blocks + 1):
        nodes += [
            helper.make_node("Conv", [f"r{i - 1}", f"w{i}a", f"b{i}a"], [f"c{i}a"], f"conv{i}a", pads=pads),
            helper.make_node("Relu", [f"c{i}a"], [f"h{i}"], name=f"relu{i}a"),
            helper.make_node("Conv", [f"h{i}", f"w{i}b", f"b{i}b"], [f"c{i}b"], f"conv{i}b", pads=pads),
            helper.make_node("Add", [f"c{i}b", f"r{i - 1}"], [f"a{i}"], name=f"add{i}"),
            helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
    nodes += [
        helper.make_node("GlobalAveragePool", [f"r{blocks}"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    weights["wf"], weights["bf"] = rng(30).normal(0, 0.3, (5, 8)).astype(np.float32), np.zeros(5, np.float32)
    return make_model(nodes, weights)


def test_the_cut_path_stops_where_other_layers_read_a_tensor_too() -> None:
    index = GraphIndex(_residual_net(3))
    full = input_path(index, "f")
    assert {"r2", "a2", "r1", "a1", "r0", "c1b", "c2b", "s"} <= full  # every residual Add, back to the stem
    assert input_path(index, "f", cut=True) == {"f", "g", "r3", "a3", "c3b"}  # r2 feeds conv3a too
    assert input_path(index, "h2", cut=True) == input_path(index, "h2") == {"h2", "c2a"}
    assert input_path(index, "r1", cut=True) == {"r1", "a1", "c1b"}  # its own readers: conv2a and add2


def test_tokens_name_the_cut_path() -> None:
    assert untoken(["a", token("b", True), token("c", False)]) == (["a", "b", "c"], frozenset({"b"}))


def _choice(full_score: float, cut_score: float, quantized: dict[str, int], target: float = 40.0) -> Choice:
    """preferred() for layer 'n' on top of 'k' (the round started at 30 dB): quantized[...] by the last
    name of the trial ('k', 'n', or 'cut' for n's cut path)."""

    def count(keep: list[str]) -> int:
        last = keep[-1]
        return quantized["cut" if last == token("n", True) else last]

    def score(keep: list[str]) -> float:
        assert keep == ["k", token("n", True)]
        return cut_score

    return preferred(["k"], "n", full_score, 30.0, target, score, count, 0.1)


def test_the_cut_path_is_taken_where_it_serves_the_target_with_more_layers_quantized() -> None:
    # both reach the target: the one leaving more layers quantized
    assert _choice(np.inf, 44.1, {"k": 10, "n": 0, "cut": 6}) == Choice(44.1, True, 3)
    assert _choice(45.0, 41.0, {"k": 10, "n": 5, "cut": 8}) == Choice(41.0, True, 1)
    # the cut one short of it: the full path, with the layers it takes counted
    assert _choice(45.0, 39.0, {"k": 10, "n": 5, "cut": 8}) == Choice(45.0, False, 4)
    # the full path leaves no layer quantized (an FP32 copy): the cut one where it lifts the round
    assert _choice(np.inf, 36.0, {"k": 10, "n": 0, "cut": 6}, target=60) == Choice(36.0, True, 3)
    assert _choice(np.inf, 30.05, {"k": 10, "n": 0, "cut": 6}, target=60) == Choice(np.inf, False, 9)


def test_the_cut_path_is_not_measured_where_it_could_not_be_chosen() -> None:
    def never(keep: list[str]) -> float:
        raise AssertionError(f"measured {keep}")

    counts = {"k": 10, "n": 6, "cut": 6}
    same = preferred(
        ["k"], "n", 50.0, 30.0, 40.0, never, lambda keep: counts[keep[-1].split("\x00")[-1]], 0.1
    )
    assert same == Choice(50.0, False, 3)  # the cut path takes as many layers float
    fewer = {"k": 10, "n": 5, "cut": 8}
    short = preferred(
        ["k"], "n", 35.0, 30.0, 40.0, never, lambda keep: fewer[keep[-1].split("\x00")[-1]], 0.1
    )
    assert short == Choice(35.0, False, 4)  # the full path short of the target, and some layers quantized


def test_min_sqnr_keeps_a_resnets_stream_quantized_where_the_cut_path_reaches_the_target(
    tmp_path: Path, image_dir: Path
) -> None:
    """hunt47 B2: the final Gemm kept float with its full input path took every residual Add and all Convs
    float (an FP32 copy, "recovers inf dB alone"). With its path cut it reaches the target with the last
    block's Conv float beside it, and the stream and the other Convs stay int8."""
    summary, out = quantize(
        _residual_net(3), tmp_path, image_dir, ConvertConfig(min_sqnr=57, prefer=Prefer.accuracy)
    )
    assert summary.fallback_start_db is not None and summary.fallback_start_db < 57
    [step] = summary.fallback
    assert (step.node, step.cut) == ("fc", True)
    assert 57 <= step.sqnr_db < np.inf
    skipped = {s.node: s.reason for s in summary.plan.skipped if s.op_type in ("Conv", "Gemm")}
    assert set(skipped) == {"fc", "conv3b"}
    taken = "with its input path taking 1 more layer(s) float"
    assert skipped["fc"].endswith(f"{taken}; its input path ends where other layers read it too)")
    assert summary.plan.cut_paths == frozenset({"fc"})
    written = onnx.load(str(out))
    assert sum(n.op_type == "QuantizeLinear" for n in written.graph.node) >= 5


def test_the_fallback_off_cuts_no_path(tmp_path: Path, image_dir: Path) -> None:
    config = ConvertConfig(min_sqnr=0, prefer=Prefer.accuracy)
    summary, _ = quantize(_residual_net(2), tmp_path, image_dir, config)
    assert summary.plan.cut_paths == frozenset() and summary.fallback == ()
