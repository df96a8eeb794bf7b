"""A trial that changes one node runs only that node and what depends on it (graph.suffix,
planner.suffix_screen): the same figures as the whole model, from less work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from quantkit import pipeline
from quantkit.config import CalibrateConfig, Float16Config, ImageSelection
from quantkit.graph import suffix
from quantkit.graph.suffix import Base, downstream_reads, suffix_of
from quantkit.planner import fallback, suffix_screen
from quantkit.runtime import Session
from tests.conftest import SIZE, conv_params, make_model, rng, save
from tests.test_fp16 import _cancelling_model


@pytest.fixture
def fallback_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The float16 fallback's ranking alone: the float16-hardware check (which keeps c1 and c2 of the
    cancelling model float32 before the fallback ranks anything) off."""
    from quantkit.pipeline import run_fp16

    monkeypatch.setattr(run_fp16, "BF16_FLOOR_DB", 0.0)
    monkeypatch.setattr(run_fp16, "BF16_SYNTHETIC_FLOOR_DB", 0.0)


def _branching() -> onnx.ModelProto:
    """x -> c0 -> r0 -> c1 -> y, and r0 -> c2 -> z."""
    p0, p1, p2 = conv_params(4, 3, seed=1), conv_params(4, 4, seed=2), conv_params(2, 4, k=1, seed=3)
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["h"], name="c0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"], name="r0"),
        helper.make_node("Conv", ["r", "w1", "b1"], ["y"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["z"], name="c2"),
    ]
    weights = {"w0": p0["w"], "b0": p0["b"], "w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"]}
    return make_model(nodes, weights, outputs=["y", "z"])


def _with_weight(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    for init in changed.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(value, name))
    return changed


def test_a_suffix_holds_the_changed_node_and_what_depends_on_it() -> None:
    base = _branching()
    reads = downstream_reads(base, ["c0", "c1", "c2"])
    assert reads == {"c0": frozenset({"x"}), "c1": frozenset({"r"}), "c2": frozenset({"r"})}
    assert downstream_reads(base, ["gone"]) == {}
    fed = {"r": np.zeros((1, 4, 8, 8), np.float32), "x": np.zeros((1, 3, 8, 8), np.float32)}
    w1 = numpy_helper.to_array(next(i for i in base.graph.initializer if i.name == "w1"))
    one = suffix_of(_with_weight(base, "w1", w1 * 2), Base.of(base), ["y", "z"], fed)
    assert [n.name for n in one.model.graph.node] == ["c1"]
    assert one.reads == ("r",) and one.passed == ("z",)
    assert [o.name for o in one.model.graph.output] == ["y"]
    # the same node under its name with another attribute computes differently, and so does all after it
    moved = onnx.ModelProto()
    moved.CopyFrom(base)
    moved.graph.node[0].attribute.append(helper.make_attribute("dilations", [1, 1]))
    whole = suffix_of(moved, Base.of(base), ["y", "z"], fed)
    assert [n.name for n in whole.model.graph.node] == ["c0", "r0", "c1", "c2"]
    assert whole.reads == ("x",) and whole.passed == ()
    # nothing changed: nothing to run, every output passed on
    same = suffix_of(base, Base.of(base), ["y", "z"], fed)
    assert len(same.model.graph.node) == 0 and same.passed == ("y", "z")
    # a tensor the suffix needs that was not held
    with pytest.raises(KeyError):
        suffix_of(moved, Base.of(base), ["y"], {"r": fed["r"]})


def test_a_suffix_measures_what_the_whole_model_measures() -> None:
    base = _branching()
    samples = rng(5).normal(0, 1, (3, 3, SIZE, SIZE)).astype(np.float32)
    reference = Session.of(base).run_samples(samples)
    screen = suffix_screen.SuffixScreen(base, ["c0", "c1", "c2"], reference, samples)
    w2 = numpy_helper.to_array(next(i for i in base.graph.initializer if i.name == "w2"))
    noisy = rng(6).normal(0, 0.05, w2.shape).astype(np.float32)
    candidate = _with_weight(base, "w2", w2 + noisy)
    whole = fallback.output_sqnr(candidate, reference, samples)
    assert 10.0 < whole < 80.0  # the premise: the change is measurable
    assert screen.sqnr(candidate) == pytest.approx(whole, abs=1e-9)
    # held beyond the budget: nothing held, the caller measures the whole model
    small = suffix_screen.HELD_BYTES
    try:
        suffix_screen.HELD_BYTES = 1
        assert suffix_screen.SuffixScreen(base, ["c2"], reference, samples).sqnr(candidate) is None
    finally:
        suffix_screen.HELD_BYTES = small


def test_weights_listed_as_graph_inputs_are_read_from_the_model_not_the_feed() -> None:
    """IR 3 exports list every initializer as a graph input too (CenterFace, opset 9): the screen took
    them for feeds and failed with an internal KeyError on the first weight."""
    base = _branching()
    base.graph.input.extend(
        helper.make_tensor_value_info(i.name, onnx.TensorProto.FLOAT, list(i.dims))
        for i in base.graph.initializer
    )
    samples = rng(5).normal(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)
    reference = Session.of(base).run_samples(samples)
    screen = suffix_screen.SuffixScreen(base, ["c0", "c1", "c2"], reference, samples)
    w2 = numpy_helper.to_array(next(i for i in base.graph.initializer if i.name == "w2"))
    candidate = _with_weight(base, "w2", w2 * 1.05)
    whole = fallback.output_sqnr(candidate, reference, samples)
    assert 10.0 < whole < 80.0  # the changed weight is seen (it measured inf, read as the base's input)
    assert screen.sqnr(candidate) == pytest.approx(whole, abs=1e-4)  # an overridable weight: not folded


def test_a_subgraph_reading_the_graph_around_it_is_measured_whole() -> None:
    """An If's branches read `r` without naming it: a suffix could not tell they changed."""
    base = _branching()
    branch = helper.make_graph(
        [helper.make_node("Identity", ["r"], ["picked"])],
        "branch",
        [],
        [helper.make_tensor_value_info("picked", onnx.TensorProto.FLOAT, None)],
    )
    base.graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
    base.graph.node.append(
        helper.make_node("If", ["flag"], ["chosen"], name="if0", then_branch=branch, else_branch=branch)
    )
    base.graph.output.append(helper.make_tensor_value_info("chosen", onnx.TensorProto.FLOAT, None))
    fed = {"r": np.zeros((1, 4, SIZE, SIZE), np.float32), "x": np.zeros((1, 3, SIZE, SIZE), np.float32)}
    with pytest.raises(ValueError, match="subgraph"):
        suffix_of(base, Base.of(base), ["y", "chosen"], fed)
    samples = rng(5).normal(0, 1, (2, 3, SIZE, SIZE)).astype(np.float32)
    reference = Session.of(base).run_samples(samples)
    assert suffix_screen.SuffixScreen(base, ["c0"], reference, samples).sqnr(base) is None


def test_float16_ranks_its_layers_by_their_suffixes_and_keeps_what_whole_runs_keep(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback_alone: None
) -> None:
    path = save(_cancelling_model(), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    sizes: list[tuple[int, int]] = []
    real = suffix_screen.suffix_of

    def counted(candidate: onnx.ModelProto, *args: object) -> suffix.Suffix:
        made = real(candidate, *args)  # type: ignore[arg-type]
        sizes.append((len(made.model.graph.node), len(candidate.graph.node)))
        return made

    monkeypatch.setattr(suffix_screen, "suffix_of", counted)
    ranked = pipeline.convert_float16(path, table, tmp_path / "a.onnx", Float16Config())
    # c1, c2, c3 in order: c1 changes all after the input, c3 only itself and its Casts
    assert len(sizes) == 3 and sizes[0][0] == sizes[0][1] and sizes[2][0] < sizes[2][1]
    monkeypatch.setattr(suffix_screen, "HELD_BYTES", 0)
    whole = pipeline.convert_float16(path, table, tmp_path / "b.onnx", Float16Config())
    assert [k[0] for k in ranked.kept_float32] == [k[0] for k in whole.kept_float32] == ["c1"]
    assert ranked.smoke_sqnr_db == whole.smoke_sqnr_db
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_float16_of_a_model_listing_its_weights_as_inputs_keeps_what_the_plain_model_keeps(
    image_dir: Path, tmp_path: Path, fallback_alone: None
) -> None:
    """CenterFace's opset-9 export (IR 3: every weight a graph input too) failed its float16 convert with
    an internal KeyError in the ranking's screen."""
    plain = _cancelling_model()
    listed = onnx.ModelProto()
    listed.CopyFrom(plain)
    listed.graph.input.extend(
        helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in listed.graph.initializer
    )
    results = []
    for name, model in (("plain", plain), ("listed", listed)):
        path = save(model, tmp_path / f"{name}.onnx")
        table = tmp_path / f"{name}.calib.json"
        pipeline.calibrate(path, table, CalibrateConfig(ImageSelection(image_dir, 8)))
        results.append(pipeline.convert_float16(path, table, tmp_path / f"{name}.fp16.onnx", Float16Config()))
    assert [k[0] for k in results[1].kept_float32] == [k[0] for k in results[0].kept_float32] == ["c1"]
    assert results[1].smoke_sqnr_db == pytest.approx(results[0].smoke_sqnr_db, abs=1e-3)
