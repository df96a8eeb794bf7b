"""graph.transposes: Transposes that cancel through layout-free ops taken out, exactly (hq62a C)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quantkit.graph.prepare import prepare
from quantkit.graph.transposes import cancel_transposes
from tests.conftest import conv_params, make_model, rng
from tests.helpers import run

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _t(src: str, dst: str, perm: list[int]) -> onnx.NodeProto:
    return helper.make_node("Transpose", [src], [dst], name=f"t_{dst}", perm=perm)


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return list(ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x}))


def _assert_same(before: onnx.ModelProto, after: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    x = rng(3).normal(0, 1, shape).astype(np.float32)
    onnx.checker.check_model(after)
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    for ref, new in zip(_outputs(before, x), _outputs(after, x), strict=True):
        assert ref.shape == new.shape
        np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)


def _sandwich() -> onnx.ModelProto:
    """tf2onnx's NHWC Keras layers without its optimizer: every Conv between Transposes, its batch norm
    (Mul, Add by [C]) and activation in NHWC."""
    p1, p2 = conv_params(4, 3, seed=1), conv_params(5, 4, k=1, seed=2)
    nodes = [
        _t("x", "xc", TO_NCHW),
        helper.make_node("Conv", ["xc", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _t("c1", "a", TO_NHWC),
        helper.make_node("Mul", ["a", "k"], ["m"], name="bn_mul"),
        helper.make_node("Add", ["m", "s"], ["n"], name="bn_add"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        _t("r", "rc", TO_NCHW),
        helper.make_node("Conv", ["rc", "w2", "b2"], ["c2"], name="conv2"),
        _t("c2", "y", TO_NHWC),
    ]
    weights = {"w1": p1["w"], "w2": p2["w"], "b2": p2["b"]}
    weights |= {"k": np.linspace(0.5, 2, 4, dtype=np.float32), "s": np.linspace(-1, 1, 4, dtype=np.float32)}
    return make_model(nodes, weights, input_shape=(1, 8, 8, 3))


def test_a_conv_pair_cancels_and_its_batch_norm_constants_are_moved() -> None:
    model = _sandwich()
    rewritten, count = cancel_transposes(model)
    assert count == 2  # after conv1 and before conv2; the input's and the output's stay
    assert _ops(rewritten)["Transpose"] == 2
    shapes = {t.name: tuple(t.dims) for t in rewritten.graph.initializer}
    assert shapes["k_untransposed"] == shapes["s_untransposed"] == (1, 4, 1, 1)
    assert "k" not in shapes  # nothing else read it
    _assert_same(model, rewritten, (1, 8, 8, 3))


def test_prepare_then_folds_the_batch_norm_into_the_conv() -> None:
    prepared = prepare(_sandwich())
    assert prepared.transposes_cancelled == 2
    assert prepared.affines_folded == 2
    assert _ops(prepared.model) == Counter({"Transpose": 2, "Conv": 2, "Relu": 1})
    assert any("2 Transpose node(s) that cancel" in note for note in prepared.notes())
    _assert_same(_sandwich(), prepared.model, (1, 8, 8, 3))


@pytest.mark.parametrize("opset", [13, 18])
def test_axes_pads_and_slices_are_renumbered(opset: int) -> None:
    """Squeeze-excite (ReduceMean over H, W, then Mul), a residual Add, Pad, Concat, Softmax, Split and
    Slice on the channel-last tensors, all read on the untransposed ones."""
    p1, p2 = conv_params(4, 3, seed=4), conv_params(2, 4, k=1, seed=5)
    mean = (
        helper.make_node("ReduceMean", ["r", "hw"], ["se"], name="mean", keepdims=1)
        if opset >= 18
        else helper.make_node("ReduceMean", ["r"], ["se"], name="mean", axes=[1, 2], keepdims=1)
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _t("c1", "a", TO_NHWC),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        mean,
        helper.make_node("Sigmoid", ["se"], ["gate"], name="gate"),
        helper.make_node("Mul", ["r", "gate"], ["e"], name="excite"),
        helper.make_node("Add", ["e", "a"], ["res"], name="residual"),
        helper.make_node("Pad", ["res", "pads"], ["p"], name="pad"),
        helper.make_node("Concat", ["p", "p"], ["cat"], name="cat", axis=-1),
        helper.make_node("Softmax", ["cat"], ["sm"], name="softmax", axis=-1),
        helper.make_node("Split", ["sm", "halves"], ["h0", "h1"], name="split", axis=3),
        helper.make_node("Slice", ["h0", "starts", "ends"], ["sl"], name="slice"),
        _t("sl", "back", TO_NCHW),
        helper.make_node("Conv", ["back", "w2", "b2"], ["y"], name="conv2"),
    ]
    weights = {"w1": p1["w"], "w2": p2["w"], "b2": p2["b"], "hw": np.array([1, 2], np.int64)}
    weights |= {
        "pads": np.array([0, 1, 2, 0, 0, 1, 0, 0], np.int64),
        "halves": np.array([4, 4], np.int64),
        "starts": np.array([1], np.int64),
        "ends": np.array([9], np.int64),
    }
    if opset < 18:
        del weights["hw"]
    model = make_model(nodes, weights, input_shape=(1, 3, 8, 8), opset=opset)
    rewritten, count = cancel_transposes(model)
    assert count == 2
    assert _ops(rewritten)["Transpose"] == 0
    _assert_same(model, rewritten, (1, 3, 8, 8))


def test_a_slice_of_int32_indices_gets_int32_axes() -> None:
    """Review of graph.transposes: the axes it gave a Slice were int64 beside int32 starts and ends, which
    onnxruntime refuses to load, and prepare kept every Transpose pair."""
    p1, p2 = conv_params(4, 3, seed=4), conv_params(2, 4, k=1, seed=5)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _t("c1", "a", TO_NHWC),
        helper.make_node("Slice", ["a", "starts", "ends"], ["sl"], name="slice"),
        _t("sl", "back", TO_NCHW),
        helper.make_node("Conv", ["back", "w2", "b2"], ["y"], name="conv2"),
    ]
    weights = {"w1": p1["w"], "w2": p2["w"], "b2": p2["b"]}
    weights |= {"starts": np.array([0, 1], np.int32), "ends": np.array([1, 7], np.int32)}
    model = make_model(nodes, weights, input_shape=(1, 3, 8, 8))
    prepared = prepare(model)
    assert prepared.transposes_cancelled == 2
    (axes,) = [t for t in prepared.model.graph.initializer if t.name == "slice_axes"]
    assert axes.data_type == TensorProto.INT32
    _assert_same(model, prepared.model, (1, 3, 8, 8))


def test_a_region_tensor_read_outside_keeps_its_layout_under_its_name() -> None:
    """A Shape of a channel-last tensor still sees channel-last dimensions."""
    p1, p2 = conv_params(4, 3, seed=6), conv_params(2, 4, k=1, seed=7)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _t("c1", "a", TO_NHWC),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["shape"], name="shape"),
        _t("r", "back", TO_NCHW),
        helper.make_node("Conv", ["back", "w2", "b2"], ["y"], name="conv2"),
    ]
    weights = {"w1": p1["w"], "w2": p2["w"], "b2": p2["b"]}
    model = make_model(nodes, weights, input_shape=(1, 3, 8, 6))
    model.graph.output.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [4]))
    rewritten, count = cancel_transposes(model)
    assert count == 1  # the entry and the exit gone, one Transpose back for 'r'
    back = [n for n in rewritten.graph.node if n.op_type == "Transpose"]
    assert [(n.input[0], n.output[0]) for n in back] == [("r_untransposed", "r")]
    _assert_same(model, rewritten, (1, 3, 8, 6))


def test_an_output_keeps_its_writer() -> None:
    """A Sigmoid writing a channel-last output stays where it is: the output is measured by its logits."""
    p1 = conv_params(4, 3, seed=6)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _t("c1", "a", TO_NHWC),
        helper.make_node("Add", ["a", "k"], ["s"], name="add"),
        helper.make_node("Sigmoid", ["s"], ["y"], name="sigmoid"),
    ]
    model = make_model(nodes, {"w1": p1["w"], "k": np.ones(4, np.float32)}, input_shape=(1, 3, 8, 8))
    rewritten, count = cancel_transposes(model)
    assert (rewritten, count) == (model, 0)  # 'a' and 's' would need a Transpose back: nothing gained


def _one_pair(
    after: list[onnx.NodeProto], weights: dict[str, np.ndarray], inputs: int = 1
) -> onnx.ModelProto:
    p1 = conv_params(4, 3, seed=8)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _t("c1", "a", TO_NHWC),
        *after,
    ]
    model = make_model(nodes, {"w1": p1["w"], **weights}, input_shape=(1, 3, 8, 8))
    if inputs == 2:  # the weight named as an input too: the caller may feed another value
        model.graph.input.append(helper.make_tensor_value_info("k", TensorProto.FLOAT, [4]))
    return model


@pytest.mark.parametrize(
    ("after", "weights", "inputs"),
    [
        # no op that reads it channel-first: nothing gained
        ([helper.make_node("MatMul", ["a", "m"], ["y"], name="mm")], {"m": np.ones((4, 2), np.float32)}, 1),
        (
            [helper.make_node("Relu", ["a"], ["r"], name="relu"), helper.make_node("Flatten", ["r"], ["y"])],
            {},
            1,
        ),
        # a reduction that drops axes and leaves the others in another order stored untransposed
        (
            [
                helper.make_node("ReduceMean", ["a"], ["mean"], name="m", axes=[1], keepdims=0),
                helper.make_node("Unsqueeze", ["mean", "ax"], ["u"], name="u"),
                helper.make_node("Unsqueeze", ["u", "ax2"], ["y"], name="u2"),
            ],
            {"ax": np.array([1], np.int64), "ax2": np.array([3], np.int64)},
            1,
        ),
        # a constant a graph input overrides is not known
        (
            [helper.make_node("Add", ["a", "k"], ["s"], name="add"), _t("s", "y", TO_NCHW)],
            {"k": np.ones(4, np.float32)},
            2,
        ),
    ],
)
def test_what_cannot_cancel_is_left_alone(
    after: list[onnx.NodeProto], weights: dict[str, np.ndarray], inputs: int
) -> None:
    model = _one_pair(after, weights, inputs)
    rewritten, count = cancel_transposes(model)
    assert (rewritten, count) == (model, 0)


@pytest.mark.parametrize("opset", [13, 18])
def test_a_pool_that_drops_its_axes_ends_the_region_without_a_transpose(opset: int) -> None:
    """hq64a F1: tf2onnx writes a squeeze-excite's global pool as ReduceMean over H, W with keepdims 0
    ([N, C] from NHWC or NCHW alike), and each block kept a Transpose into it (EfficientNetB0: 34 left,
    onnxruntime 18; 1.08x against 1.16x)."""
    p1, p2 = conv_params(4, 3, seed=4), conv_params(2, 4, k=1, seed=5)
    mean = (
        helper.make_node("ReduceMean", ["r", "hw"], ["pooled"], name="pool", keepdims=0)
        if opset >= 18
        else helper.make_node("ReduceMean", ["r"], ["pooled"], name="pool", axes=[1, 2], keepdims=0)
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _t("c1", "a", TO_NHWC),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        mean,
        helper.make_node("Reshape", ["pooled", "shape"], ["se_map"], name="to_map"),  # [N, 1, 1, C]
        _t("se_map", "se_in", TO_NCHW),
        helper.make_node("Conv", ["se_in", "ws", "bs"], ["se_out"], name="se_conv"),
        _t("se_out", "gate_in", TO_NHWC),
        helper.make_node("Sigmoid", ["gate_in"], ["gate"], name="gate"),
        helper.make_node("Mul", ["r", "gate"], ["e"], name="excite"),
        _t("e", "back", TO_NCHW),
        helper.make_node("Conv", ["back", "w2", "b2"], ["y"], name="conv2"),
    ]
    se = conv_params(4, 4, k=1, seed=6)
    weights = {"w1": p1["w"], "w2": p2["w"], "b2": p2["b"], "shape": np.array([1, 1, 1, 4], np.int64)}
    weights |= {"ws": se["w"], "bs": se["b"]}
    if opset >= 18:
        weights["hw"] = np.array([1, 2], np.int64)
    model = make_model(nodes, weights, input_shape=(1, 3, 8, 8), opset=opset)
    rewritten, count = cancel_transposes(model)
    # the pool reads 'r' untransposed and writes [N, C] as before; only the Transpose into the
    # squeeze-excite's Conv stays (a Conv reads it)
    assert count == 3 and _ops(rewritten)["Transpose"] == 1
    _assert_same(model, rewritten, (1, 3, 8, 8))


def test_an_opset_18_pad_by_axes_is_renumbered() -> None:
    """hq64a F2: a Pad whose pads an axes input lists (opset 18) kept its Transposes; onnxruntime's own
    optimizer then broke it ('indices element out of data bounds') and convert failed."""
    model = _pad_sandwich()
    rewritten, count = cancel_transposes(model)
    assert count == 2 and _ops(rewritten)["Transpose"] == 0
    _assert_same(model, rewritten, (1, 3, 8, 8))


def test_convert_runs_a_model_onnxruntime_breaks_as_quantkit_prepares_it(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq64a F2's other half: the prepared model ran, but convert's smoke test and timing ran the file as
    given at onnxruntime's default level, where its optimizer breaks it: rc 2. Now they run the prepared
    form, with a note that says so, where the given one fails there."""
    model = _pad_sandwich(channels=16, size=32)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    feed = {"x": np.zeros((1, 3, 32, 32), np.float32)}
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
        breaks = False
    except Exception:  # onnxruntime 1.32: 'Gather ... indices element out of data bounds'
        breaks = True
    table, out = tmp_path / "t.json", tmp_path / "q.onnx"
    assert run(["calibrate", str(path), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    code, stdout, err = run(["convert", str(path), "-c", str(table), "-o", str(out)], capsys)
    assert code == 0, err
    said = "the FP32 model as given fails in onnxruntime at its default optimization level" in " ".join(
        stdout.split()
    )
    assert said == breaks
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)  # runs as written


def _pad_sandwich(channels: int = 4, size: int = 8) -> onnx.ModelProto:
    """Conv -> NHWC -> Pad by axes (opset 18) -> NCHW -> Conv."""
    p1, p2 = conv_params(channels, 3, seed=4), conv_params(2, channels, k=1, seed=5)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _t("c1", "a", TO_NHWC),
        helper.make_node("Pad", ["a", "pads", "", "hw"], ["p"], name="pad"),
        _t("p", "back", TO_NCHW),
        helper.make_node("Conv", ["back", "w2", "b2"], ["y"], name="conv2"),
    ]
    weights = {"w1": p1["w"], "w2": p2["w"], "b2": p2["b"]}
    weights |= {"pads": np.array([2, 1, 1, 2], np.int64), "hw": np.array([1, 2], np.int64)}
    return make_model(nodes, weights, input_shape=(1, 3, size, size), opset=18)


def test_a_shared_constant_is_copied_not_changed() -> None:
    model = _sandwich()
    model.graph.node.append(helper.make_node("Neg", ["s"], ["z"], name="other_reader"))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [4]))
    rewritten, _ = cancel_transposes(model)
    values = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    assert values["s"].shape == (4,)
    assert values["s_untransposed"].shape == (1, 4, 1, 1)
    _assert_same(model, rewritten, (1, 8, 8, 3))


def test_a_model_of_fixed_batch_is_run_as_given_at_its_batch(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq133 F5: a LeNet exported with a fixed batch of 10 was fed one sample and said to fail in
    onnxruntime 'at its default optimization level' (Got: 1 Expected: 10), then timed as quantkit prepared
    it, not as the file declares."""
    from tests.conftest import conv_params, make_model

    p, q = conv_params(8, 3, 3, 4), conv_params(8, 8, 3, 5)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="c2", pads=[1, 1, 1, 1]),
    ]
    weights = {"w1": p["w"], "b1": p["b"], "w2": q["w"], "b2": q["b"]}
    path = tmp_path / "m.onnx"
    onnx.save(make_model(nodes, weights, input_shape=(10, 3, 16, 16)), str(path))
    table, out = tmp_path / "t.json", tmp_path / "q.onnx"
    assert run(["calibrate", str(path), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    code, stdout, err = run(["convert", str(path), "-c", str(table), "-o", str(out)], capsys)
    assert code == 0, err
    assert "as given fails" not in " ".join((stdout + err).split())
