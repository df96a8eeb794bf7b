"""FP32's reference outputs kept on disk where they are large (spill.spilled): the same runs read back,
the folder gone with the last view, and a convert that spills writes the same bytes as one that does not."""

from __future__ import annotations

import gc
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest

from quantkit import pipeline, spill
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection
from quantkit.planner import at_output
from quantkit.spill import SpilledRuns, spilled
from tests.conftest import tiny_cnn


def _runs() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"logits": rng.standard_normal((1, 5), np.float32), "map": rng.random((1, 2))} for _ in range(3)]


def test_small_runs_stay_a_list_in_memory() -> None:
    runs = _runs()
    kept = spilled(iter(runs), len(runs))
    assert isinstance(kept, list) and kept == runs


def test_large_runs_are_read_back_as_written_and_removed_with_the_last_view() -> None:
    runs = _runs()
    kept = spilled(iter(runs), len(runs), limit=0)
    assert isinstance(kept, SpilledRuns) and len(kept) == 3
    for got, want in zip(kept, runs, strict=True):
        assert list(got) == list(want)
        assert all(got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]) for k in want)
    tail = kept[1:]
    assert isinstance(tail, SpilledRuns) and np.array_equal(tail[0]["map"], runs[1]["map"])
    logits = kept.only(["logits"])
    assert [list(run) for run in logits] == [["logits"]] * 3
    assert np.array_equal(logits[2]["logits"], runs[2]["logits"])
    sent = pickle.loads(pickle.dumps(kept))  # to worker processes and Ray: a plain list
    assert isinstance(sent, list) and np.array_equal(sent[0]["logits"], runs[0]["logits"])
    folder = kept._files[0].parent
    assert folder.is_dir()
    del kept, tail
    gc.collect()
    assert folder.is_dir()  # `logits` still reads from it
    del logits
    gc.collect()
    assert not folder.exists()


def test_a_convert_that_keeps_its_reference_on_disk_writes_the_same_bytes(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_cnn(tmp_path / "cnn.onnx")
    table = tmp_path / "t.json"
    pipeline.calibrate(model, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    made: list[object] = []

    def on_disk_always(runs: Iterable[dict[str, np.ndarray]], count: int) -> Sequence[dict[str, np.ndarray]]:
        made.append(kept := spill.spilled(runs, count, limit=0))
        return kept

    def written(name: str) -> bytes:
        pipeline.convert(model, table, tmp_path / name, ConvertConfig())
        return (tmp_path / name).read_bytes()

    plain = written("plain.onnx")
    monkeypatch.setattr(at_output, "spilled", on_disk_always)
    on_disk = written("spilled.onnx")
    assert made and all(isinstance(runs, SpilledRuns) for runs in made)
    assert on_disk == plain
