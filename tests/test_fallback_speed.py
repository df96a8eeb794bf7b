"""The --min-sqnr fallback without one model per layer: layers screened in groups, on fewer samples where
samples are expensive, and the choice still the layer that recovers the most."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from quantkit import pipeline
from quantkit.calib.table import load
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection
from quantkit.graph.prepare import prepare
from quantkit.planner import fallback, screening
from quantkit.planner.core import plan
from quantkit.results import CalibrationTable, TensorStats
from tests.conftest import SIZE, conv_params, make_model, save
from tests.helpers import count_sessions

LAYERS = 26  # more than screening.UNGROUPED_LAYERS: the first round screens groups
LOUD = 17  # a layer that adds a large bias to one channel: the layers after it lose the most to int8


def _chain(loud_bias: float = 60.0) -> onnx.ModelProto:
    """LAYERS 3x3 Convs with ReLUs; layer LOUD adds loud_bias to one channel of its output. Keeping one
    of conv18-conv21 float recovers 1-2.5 dB each, within 1 dB of one another: the groups must find the
    best of near equals."""
    nodes, inits = [], {}
    source = "x"
    for i in range(LAYERS):
        p = conv_params(8, 3 if i == 0 else 8, 3, seed=i)
        w = p["w"] * (1.0 if i == 0 else 0.45)
        b = p["b"].copy()
        if i == LOUD:
            b[0] += loud_bias
        inits[f"w{i}"], inits[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        out = "y" if i == LAYERS - 1 else f"r{i}"
        nodes.append(
            helper.make_node("Conv", [source, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4)
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out], name=f"relu{i}"))
        source = out
    return make_model(nodes, inits)


@pytest.fixture(scope="module")
def chain_table(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> tuple[onnx.ModelProto, Path]:
    tmp = tmp_path_factory.mktemp("chain")
    src = save(_chain(), tmp / "chain.onnx")
    table = tmp / "chain.calib.json"
    pipeline.calibrate(src, table, CalibrateConfig(images=ImageSelection(image_dir)))
    return onnx.load(str(src)), table


def _table(count_per_sample: int, samples: int = 8, meta: bool = True) -> CalibrationTable:
    """A table of one Conv output ('c0', 3*3*3 multiply-adds per element) seen on 4 samples."""
    stats = TensorStats(0.0, 1.0, np.ones(8, np.int64), 0.0, 1.0, count_per_sample * 4)
    return CalibrationTable(
        meta={"images": {"count": 4}} if meta else {},
        stats={"c0": stats},
        samples=np.zeros((samples, 3, SIZE, SIZE), np.float32),
    )


def _one_conv() -> onnx.ModelProto:
    p = conv_params(8, 3, 3)
    node = helper.make_node("Conv", ["x", "w", "b"], ["c0"], name="conv", pads=[1] * 4)
    return make_model([node], {"w": p["w"], "b": p["b"]}, output="c0")


def test_screening_runs_fit_the_budget_of_multiply_adds() -> None:
    model, reference = _one_conv(), [{}] * 8
    per_element = 3 * 3 * 3  # one 3x3 Conv over 3 channels
    cheap = _table(1000)
    assert screening.macs_per_sample(model, cheap) == pytest.approx(per_element * 1000)
    assert fallback.screening_runs(model, cheap, reference) == 8
    fits_three = int(screening.SCREEN_MACS / per_element / 3.5)
    assert fallback.screening_runs(model, _table(fits_three), reference) == 3
    expensive = _table(int(screening.SCREEN_MACS))  # one sample is over the budget alone
    assert fallback.screening_runs(model, expensive, reference) == screening.MIN_SCREEN_RUNS
    # unknown cost, or runs of several samples (a fixed batch): every run
    assert fallback.screening_runs(model, _table(int(screening.SCREEN_MACS), meta=False), reference) == 8
    assert fallback.screening_runs(model, expensive, [{}] * 2) == 2


class _Scored:
    """A stand-in for the search's trials: an additive SQNR, and a record of every set measured."""

    def __init__(self, gains: dict[str, float]) -> None:
        self.gains, self.asked = gains, list[frozenset[str]]()

    def screen(self, keep: list[str]) -> float:
        self.asked.append(frozenset(keep))
        return 3.0 + sum(self.gains.get(n, 0.0) for n in keep)

    def screen_all(self, keeps: list[list[str]]) -> list[float]:
        return [self.screen(keep) for keep in keeps]


def test_groups_spare_the_layers_that_cannot_hold_the_best() -> None:
    layers = [f"l{i}" for i in range(64)]
    gains = {n: 0.01 for n in layers} | {"l61": 14.0}
    trials = _Scored(gains)
    found = screening.screen_layers(trials, [], layers, 3.0, 2, None)
    assert max(found, key=lambda n: found[n]) == "l61"
    assert set(found) == {f"l{i}" for i in range(56, 64)}  # its group of 8 only: the next cannot beat it
    assert len(trials.asked) == 8 + 8  # 8 groups, then the best group's layers


def test_groups_without_a_dominant_layer_expand_the_best_ones() -> None:
    layers = [f"l{i}" for i in range(64)]
    gains = {n: 0.05 for n in layers} | {"l11": 0.25, "l19": 0.2}  # every group beats every layer
    trials = _Scored(gains)
    found = screening.screen_layers(trials, ["k"], layers, 3.0, 2, None)
    assert set(found) == {f"l{i}" for i in range(8, 24)}  # the two groups holding l11 and l19
    assert all("k" in asked for asked in trials.asked)  # on top of what is kept float
    few = _Scored(gains)
    assert set(screening.screen_layers(few, [], layers[:20], 3.0, 2, None)) == set(layers[:20])
    assert len(few.asked) == 20


def _searchable(
    chain_table: tuple[onnx.ModelProto, Path], max_layers: int
) -> tuple[onnx.ModelProto, CalibrationTable, ConvertConfig, list[dict[str, np.ndarray]]]:
    """The chain prepared, its table, a config searching to 60 dB with max_layers, FP32's reference."""
    model, table_path = chain_table
    table = load(table_path)
    prepared = prepare(model).model
    config = ConvertConfig(
        smoothquant="off", bias_correction=False, min_sqnr=60.0, max_float_layers=max_layers
    )
    assert table.samples is not None
    return prepared, table, config, fallback.measured_reference(prepared, table.samples)


def test_the_search_keeps_the_layer_that_recovers_most_and_builds_fewer_models(
    chain_table: tuple[onnx.ModelProto, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared, table, config, reference = _searchable(chain_table, 1)
    base = plan(prepared, table, config)
    alone = fallback.layer_recovery(prepared, table, config, reference, base)  # one model per layer
    assert len(alone) == LAYERS
    built = count_sessions(monkeypatch)
    _, steps, start = fallback.search(prepared, table, config, 60.0, 1, reference=reference)
    assert [s.node for s in steps] == [max(alone, key=lambda n: alone[n])]
    assert steps[0].sqnr_db == pytest.approx(max(alone.values()))
    assert start < steps[0].sqnr_db
    # the base model, 5 groups of 6, the layers of at most 2 groups: fewer models than layers
    assert len(built) <= 1 + 5 + 2 * 6 < LAYERS


def test_a_second_search_on_the_same_memo_builds_none_of_the_first_ones_sets_again(
    chain_table: tuple[onnx.ModelProto, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The floor's search (each output at 10 dB) follows --min-sqnr's on the same model and memo and asks
    for its first sets again: found by what builds them, not built again to be found (YOLOX-Nano: 16 s
    of an 86 s convert). The same steps as a search on a fresh memo."""
    prepared, table, config, reference = _searchable(chain_table, 2)
    memo = fallback.SqnrMemo()
    fallback.search(prepared, table, config, 60.0, 2, reference=reference, measured=memo)
    builds: list[tuple[str, ...]] = []
    real = fallback.Trials.build

    def counted(self: fallback.Trials, keep: Iterable[str]) -> onnx.ModelProto:
        builds.append(tuple(keep))
        return real(self, keep)

    monkeypatch.setattr(fallback.Trials, "build", counted)
    guarded = dataclasses.replace(config, min_sqnr=61.0, max_float_layers=3)
    again = fallback.search(prepared, table, guarded, 60.0, 2, reference=reference, measured=memo)
    assert builds == []
    fresh = fallback.search(prepared, table, guarded, 60.0, 2, reference=reference)
    assert [s.node for s in again[1]] == [s.node for s in fresh[1]] and builds


def test_a_memo_never_takes_a_freed_model_for_the_one_allocated_in_its_place(
    chain_table: tuple[onnx.ModelProto, Path],
) -> None:
    """The memo's keys name the model by id(): a model freed after its search and another allocated at
    its address must not read the first one's scores (YOLOX once kept Conv_67 or Conv_70 float from run to
    run). The memo keeps what it keys alive, so the second search measures as a fresh memo would."""
    prepared, table, config, reference = _searchable(chain_table, 1)
    memo = fallback.SqnrMemo()
    first = onnx.ModelProto()
    first.CopyFrom(prepared)
    first_id = id(first)
    fallback.search(first, table, config, 60.0, 1, reference=reference, measured=memo)
    del first
    gc.collect()
    # where the first's address is free, one of these takes it
    candidates = [onnx.ModelProto() for _ in range(256)]
    second = next((m for m in candidates if id(m) == first_id), candidates[0])
    assert id(second) != first_id  # the memo still holds the first
    second.CopyFrom(prepared)
    for init in second.graph.initializer:
        if init.dims and len(init.dims) == 4:
            weights = numpy_helper.to_array(init) * 1.7
            init.CopyFrom(numpy_helper.from_array(weights.astype(np.float32), init.name))
    again = fallback.search(second, table, config, 60.0, 1, reference=reference, measured=memo)
    fresh = fallback.search(second, table, config, 60.0, 1, reference=reference)
    assert again[2] == fresh[2] and [s.sqnr_db for s in again[1]] == [s.sqnr_db for s in fresh[1]]


def test_screening_on_fewer_samples_decides_on_all_of_them(
    chain_table: tuple[onnx.ModelProto, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With samples over the budget the screening runs MIN_SCREEN_RUNS of them; the step reported (and
    chosen among the finalists) is measured on every sample: the same as screening on all."""
    model, table_path = chain_table
    table = load(table_path)
    prepared = prepare(model).model
    config = ConvertConfig(smoothquant="off", bias_correction=False, min_sqnr=60.0, max_float_layers=2)
    runs: list[int] = []
    real_runs = fallback.screening_runs

    def on_all(*args: object) -> int:
        runs.append(real_runs(*args))  # type: ignore[arg-type]
        return runs[-1]

    monkeypatch.setattr(fallback, "screening_runs", on_all)
    plan_all, steps_all, _ = fallback.search(prepared, table, config, 60.0, 2)
    assert table.samples is not None and runs == [len(table.samples)]  # a tiny model screens on all
    monkeypatch.setattr(screening, "SCREEN_MACS", 1.0)
    plan_few, steps_few, _ = fallback.search(prepared, table, config, 60.0, 2)
    assert runs[-1] == screening.MIN_SCREEN_RUNS
    assert [s.node for s in steps_few] == [s.node for s in steps_all]
    assert [s.sqnr_db for s in steps_few] == [s.sqnr_db for s in steps_all]
    assert plan_few == plan_all


def test_a_layer_that_lifts_the_output_less_than_the_minimum_gain_stays_int8(
    chain_table: tuple[onnx.ModelProto, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round keeps its best layer only where it lifts the output MIN_GAIN_DB or reaches the target:
    PP-OCRv4's text detector at 640x640 kept three Convs float for +0.01 to +0.03 dB each."""
    prepared, table, config, reference = _searchable(chain_table, 5)
    gains = {"conv5": 2.0, "conv9": fallback.MIN_GAIN_DB / 2}

    def scored(self: fallback.Trials, keep: frozenset[str], *_: object) -> float:
        return 3.0 + sum(gains.get(n, 0.0) for n in keep)

    monkeypatch.setattr(fallback.Trials, "_scored", scored)
    monkeypatch.setattr(fallback, "output_sqnr", lambda *_, **__: 3.0)
    _, steps, start = fallback.search(prepared, table, config, 60.0, 5, reference=reference)
    assert start == 3.0 and [s.node for s in steps] == ["conv5"]
    reached = 5.0 + gains["conv9"]  # the small lift that reaches the target is taken
    _, steps, _ = fallback.search(prepared, table, config, reached, 5, reference=reference)
    assert [s.node for s in steps] == ["conv5", "conv9"]


def test_every_round_of_the_search_moves_a_count(
    chain_table: tuple[onnx.ModelProto, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PP-OCRv4's text detector at 640x640 showed '0 of 64 step(s) done' for the first round's 26 s (its
    count moved once, at the end) and then nothing for the later rounds' 40 s: the first round counts
    each group's layers as the group is settled, and each later round counts as it starts."""
    prepared, table, config, reference = _searchable(chain_table, 5)
    gains = {"conv5": 2.0, "conv9": 2.0, "conv12": 2.0}

    def scored(self: fallback.Trials, keep: frozenset[str], *_: object) -> float:
        return 3.0 + sum(gains.get(n, 0.0) for n in keep)

    monkeypatch.setattr(fallback.Trials, "_scored", scored)
    monkeypatch.setattr(fallback, "output_sqnr", lambda *_, **__: 3.0)
    layers: list[int] = []
    rounds: list[int] = []
    _, steps, _ = fallback.search(
        prepared, table, config, 60.0, 5, layers.append, reference=reference, rounds=rounds.append
    )
    assert [s.node for s in steps] == ["conv5", "conv9", "conv12"]
    assert sum(layers) == LAYERS and len(layers) > 1 and all(n > 0 for n in layers[:-1]), layers
    assert rounds == [1, 1, 1]  # rounds 2, 3 and 4 started (the 4th found no layer that lifts it)


@pytest.mark.parametrize("start, blocks", [(12.0, 10.0), (8.0, 10.0), (8.0, None)])
def test_a_search_stalled_short_of_its_target_tries_a_block_at_one_end(
    chain_table: tuple[onnx.ModelProto, Path],
    monkeypatch: pytest.MonkeyPatch,
    start: float,
    blocks: float | None,
) -> None:
    """hunt44: PP-OCRv5's text detector stalled at 13.9 dB under --min-sqnr 20 with no single layer
    lifting it MIN_GAIN_DB, where 8 Convs at its output end lift it 3.5 dB: kept, as a block. Not from
    below `blocks` (the floor's own search tries one there), and never with blocks=None."""
    prepared, table, config, reference = _searchable(chain_table, 5)
    last = {f"conv{i}" for i in range(LAYERS - 4, LAYERS)}

    def scored(self: fallback.Trials, keep: frozenset[str], *_: object) -> float:
        return start + (3.0 if last <= keep else 0.01 * len(keep))

    monkeypatch.setattr(fallback.Trials, "_scored", scored)
    monkeypatch.setattr(fallback, "output_sqnr", lambda *_, **__: start)
    _, steps, _ = fallback.search(prepared, table, config, 60.0, 5, reference=reference, blocks=blocks)
    if blocks is not None and start >= blocks:
        assert {s.node for s in steps} >= last and len(steps) <= 5
        assert steps[-1].sqnr_db == pytest.approx(start + 3.0)
    else:
        assert steps == []
