"""Sessions for models whose activations are large run without onnxruntime's arena and memory pattern
(runtime.lean_sessions): the same outputs, memory handed back after each run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantkit import pipeline, runtime
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection
from quantkit.graph import augment
from quantkit.graph.model_io import load_model
from quantkit.runtime import Session, lean_sessions, set_lean
from tests.conftest import tiny_cnn


def _arena(session: Session) -> bool:
    options = session._session.get_session_options()
    assert options.enable_mem_pattern == options.enable_cpu_mem_arena  # both on or both off here
    return bool(options.enable_cpu_mem_arena)


def test_sessions_run_lean_inside_the_block_unless_they_choose_their_arena(tmp_path: Path) -> None:
    model = load_model(tiny_cnn(tmp_path / "cnn.onnx"))
    assert _arena(Session.of(model))
    with lean_sessions():
        assert not _arena(Session.of(model))
        assert _arena(Session.of(model, arena=True))  # a session that chooses its arena keeps it
    with lean_sessions(False):
        assert _arena(Session.of(model))
        set_lean(True)  # decided inside, once the activations are known
        assert not _arena(Session.of(model))
    assert _arena(Session.of(model))  # the block's end undoes it
    assert not runtime._LEAN.get()


def test_large_activations_compares_one_samples_activations_with_the_batch_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    model = load_model(tiny_cnn(tmp_path / "cnn.onnx"))
    samples = np.zeros((8, 3, 16, 16), np.float32)
    assert not augment.large_activations(model, samples)
    monkeypatch.setattr(augment, "BATCH_ACTIVATION_BYTES", 1)
    assert augment.large_activations(model, samples)
    assert augment.large_activations(model, {"x": samples})


@pytest.mark.parametrize("to", ["int8", "fp16"])
def test_a_lean_convert_writes_the_same_bytes(
    to: str, image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantkit.config import Float16Config

    model = tiny_cnn(tmp_path / "cnn.onnx")
    table = tmp_path / "t.json"
    pipeline.calibrate(model, table, CalibrateConfig(ImageSelection(image_dir, 8)))
    made: list[bool] = []
    real = runtime.Session.__init__

    def spied(self: Session, *args: object, **kwargs: object) -> None:
        made.append(runtime._LEAN.get() and kwargs.get("arena") is None)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime.Session, "__init__", spied)

    def written(name: str) -> bytes:
        out = tmp_path / name
        if to == "int8":
            pipeline.convert(model, table, out, ConvertConfig())
        else:
            pipeline.convert_float16(model, table, out, Float16Config())
        return out.read_bytes()

    plain = written("plain.onnx")
    assert not any(made)
    monkeypatch.setattr(augment, "BATCH_ACTIVATION_BYTES", 1)
    lean = written("lean.onnx")
    assert any(made)  # sessions were made lean
    assert lean == plain


def test_timing_sessions_run_lean_inside_the_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate.speed and the profiler time FP32 and the candidate alike: lean inside the block (three
    timing sessions with their arenas took img.ly's IS-Net at 1024x1024 to 5.0 GB), as deployed outside."""
    from quantkit.evaluate import profiler, speed

    model = load_model(tiny_cnn(tmp_path / "cnn.onnx"))
    made: list[bool] = []
    real = runtime.Session.__init__

    def spied(self: Session, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(_arena(self))

    monkeypatch.setattr(runtime.Session, "__init__", spied)
    samples = np.zeros((1, 3, 16, 16), np.float32)
    speed.measure(model, model, samples, runs=2, seconds=1.0)
    profiler.side_by_side([model, model], samples, runs=2)
    assert made == [True] * 4
    made.clear()
    with lean_sessions():
        speed.measure(model, model, samples, runs=2, seconds=1.0)
        profiler.side_by_side([model, model], samples, runs=2)
    assert made == [False] * 4
