"""A rank-4 map's channel axis read from the graph that lays it out (graph.layouts): an NHWC map that is
not square was judged row by row (its height read as channels) by every figure that reads a map per
channel: the fallback's sigmoid reading, compare's and convert's warnings of moved signs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from quantkit.evaluate.output_noise import OutputNoise, channel_signs
from quantkit.graph.layouts import NCHW, NHWC, channel_axes
from tests.conftest import conv_params, make_model, rng, save
from tests.helpers import run


def test_channel_axes_are_read_from_the_ops_that_lay_a_map_out() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Sigmoid", ["t"], ["s"], name="sig"),
        helper.make_node("Mul", ["s", "two"], ["scaled"], name="scale"),  # still NHWC
        helper.make_node("Transpose", ["t"], ["back"], name="nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Transpose", ["r"], ["hw"], name="swap", perm=[0, 1, 3, 2]),  # H and W swapped
        helper.make_node("Transpose", ["r"], ["crnn"], name="crnn", perm=[0, 3, 1, 2]),  # [N, W, C, H]
        helper.make_node("Transpose", ["t"], ["twice"], name="twice", perm=[0, 2, 3, 1]),  # [N, W, C, H]
        helper.make_node("Resize", ["s", "", "scales"], ["big"], name="resize"),  # NHWC, resized last
        helper.make_node("Resize", ["t", "", "half"], ["big_half"], name="same_size"),
        helper.make_node("Add", ["s", "big_half"], ["joined"], name="joined"),  # two NHWC operands
        helper.make_node("Add", ["s", "back"], ["clash"], name="clash"),  # NHWC + NCHW: cannot tell
        helper.make_node("Reshape", ["t", "shape"], ["flat"], name="flat"),  # a Reshape's: unknown
    ]
    consts = {**conv_params(4, 3), "two": np.float32(2.0), "shape": np.array([0, -1], np.int64)}
    consts |= {"scales": np.array([1, 2, 2, 1], np.float32), "half": np.array([1, 1, 1, 1], np.float32)}
    outputs = ["c", "r", "t", "s", "scaled", "back", "hw", "crnn", "twice", "big", "joined", "flat"]
    model = make_model(nodes, consts, outputs=outputs, input_shape=(1, 3, 4, 4))
    assert channel_axes(model, [*outputs, "clash", "x"]) == {
        "c": NCHW,
        "r": NCHW,
        "t": NHWC,
        "s": NHWC,
        "scaled": NHWC,
        "back": NCHW,
        "hw": NCHW,
        "crnn": 2,
        "twice": 2,
        "big": NHWC,
        "joined": NHWC,
    }


def _two_channels() -> tuple[np.ndarray, np.ndarray]:
    """[1, 2, 20, 30] logits mostly far below 0: channel 0's values above 0 hold, channel 1's move."""
    ref = np.full((1, 2, 20, 30), -100.0)
    ref[0, 0].flat[::20] = 5.0
    ref[0, 1].flat[::30] = 5.0
    got = ref.copy()
    got[0, 1].flat[1::15] = 2.0  # 40 values pushed above 0 beside channel 1's 20
    return ref, got


def test_a_non_square_nhwc_map_is_judged_by_the_channels_its_graph_gives() -> None:
    ref, got = _two_channels()
    nchw = OutputNoise()
    nchw.update({"hm": ref}, {"hm": got})
    last = (ref.transpose(0, 2, 3, 1), got.transpose(0, 2, 3, 1))  # [1, 20, 30, 2]
    by_shape = OutputNoise()
    by_shape.update({"hm": last[0]}, {"hm": last[1]})
    laid_out = OutputNoise(axes={"hm": NHWC})
    laid_out.update({"hm": last[0]}, {"hm": last[1]})
    assert laid_out.sqnr_db == pytest.approx(nchw.sqnr_db, abs=1e-9)
    assert by_shape.sqnr_db != pytest.approx(nchw.sqnr_db, abs=0.1)  # its 20 rows read as channels
    assert channel_signs(*last).shape == (20, 5)
    assert np.array_equal(channel_signs(*last, NHWC), channel_signs(ref, got))
    yolo = np.zeros((1, 255, 6, 10))  # an NCHW head stays NCHW where the graph says so, too
    assert channel_signs(yolo, yolo, NCHW).shape == (255, 5)


def _shifted(flip: bool) -> list[helper.NodeProto]:
    """x [N, 3, 16, 24] -> 3 x - by (of -x where `flip`) -> NHWC [N, 16, 24, 3]."""
    nodes = [helper.make_node("Mul", ["x", "minus"], ["neg"], name="neg")] if flip else []
    nodes += [
        helper.make_node("Mul", ["neg" if flip else "x", "three"], ["t"], name="scale"),
        helper.make_node("Sub", ["t", "by"], ["m"], name="shift"),
        helper.make_node("Transpose", ["m"], ["y"], name="nhwc", perm=[0, 2, 3, 1]),
    ]
    return nodes


def test_compare_and_convert_name_the_channel_of_an_nhwc_map_whose_signs_moved(
    image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quantkit.pipeline.sample_figures import steady_outputs

    shape = ("N", 3, 16, 24)
    consts = {"three": np.float32(3.0), "by": np.float32(3.0)}  # a few % of these images above 0
    kept = make_model(_shifted(False), consts, input_shape=shape)
    moved = make_model(_shifted(True), {**consts, "minus": np.float32(-1.0)}, input_shape=shape)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        code, _, err = run(
            ["compare", str(save(kept, tmp / "a.onnx")), str(save(moved, tmp / "b.onnx")), "--images",
             str(image_dir), "--runs", "0"],
            capsys,
        )  # fmt: skip
    assert code == 0, err
    assert "output 'y' (its channel " in err and " of 3): FP32 puts " in err  # not ' of 16)', its rows
    samples = rng(5).normal(0.0, 1.0, (4, 3, 16, 24)).astype(np.float32)
    reference = [{"y": (samples[k : k + 1] * 3.0 - 6.0).transpose(0, 2, 3, 1)} for k in range(4)]
    consts = {"three": np.float32(3.0), "by": np.float32(6.0), "minus": np.float32(-1.0)}  # about 2 %
    moved = make_model(_shifted(True), consts, input_shape=shape)
    lines = [w for w in steady_outputs(moved, reference, samples) if "above 0" in w]
    assert len(lines) == 1 and lines[0].startswith("output 'y' (its channel "), lines
    assert " of 3): FP32 puts " in lines[0]


def test_a_per_pixel_dense_or_pixel_shuffle_map_is_a_map_of_classes() -> None:
    """hq62: Keras segmenters whose NHWC logits come from a per-pixel Dense layer (MatMul on [N, H, W, C])
    or a pixel shuffle (DepthToSpace, then a Transpose to NHWC): the Dense map was read by rows, and
    --output-kind classes, which shrink's refusal advised, changed nothing for either (their map read as
    no segmenter's: only a Conv or a Resize computed one)."""
    from quantkit.config import OutputKind
    from quantkit.graph.output_kinds import map_outputs

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["t", "dense"], ["m"], name="dense"),
        helper.make_node("Add", ["m", "bias"], ["per_pixel"], name="bias"),
        helper.make_node("Reshape", ["t", "rows"], ["flat_rows"], name="rows"),  # tf2onnx's Tensordot
        helper.make_node("MatMul", ["flat_rows", "dense"], ["row_logits"], name="row_dense"),
        helper.make_node("Reshape", ["row_logits", "map"], ["tensordot"], name="back"),
        helper.make_node("DepthToSpace", ["c"], ["up"], name="shuffle", blocksize=2),
        helper.make_node("Transpose", ["up"], ["shuffled"], name="to_nhwc", perm=[0, 2, 3, 1]),
    ]
    consts = {**conv_params(8, 3), "dense": np.ones((8, 5), np.float32), "bias": np.zeros(5, np.float32)}
    consts |= {"rows": np.array([-1, 8], np.int64), "map": np.array([1, 6, 10, 5], np.int64)}
    outputs = ["per_pixel", "shuffled", "tensordot"]
    model = make_model(nodes, consts, outputs=outputs, input_shape=(1, 3, 6, 10))
    assert channel_axes(model, outputs) == {"per_pixel": NHWC, "shuffled": NHWC, "tensordot": NHWC}
    assert map_outputs(model, OutputKind.classes) == {"per_pixel", "shuffled", "tensordot"}


def test_a_classifier_s_scores_channels_last_are_its_scores() -> None:
    """hq62 E: a Keras classifier's unflattened 1x1 Conv head, [N, 1, 1, C] as tf2onnx writes it, got no
    top-1 agreement (68.75 % by hand) and shrink --max-drop refused it twice; [N, C, 1, 1] was gated."""
    from quantkit.evaluate.class_scores import class_view, has_class_scores

    scores = np.random.default_rng(0).normal(0, 1, (4, 10)).astype(np.float32)
    for laid_out in (scores[:, :, None, None], scores[:, None, None, :]):
        assert np.array_equal(class_view(laid_out), scores) and has_class_scores(class_view(laid_out), 4)
    assert class_view(scores[:, None, None, :1]).shape == (4, 1, 1, 1)  # one value: no classes
