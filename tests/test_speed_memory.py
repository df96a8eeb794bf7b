"""The same inputs give the same bytes though the speed-aware plan decides by timing: what it measured is
kept per candidate and machine and read back (pipeline.speed_memory)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from quantkit.config import ConvertConfig, Prefer
from quantkit.outcomes import Speed
from quantkit.pipeline import run_convert, speed_memory, speed_refine
from quantkit.reports import console
from tests.helpers import quantize
from tests.test_speed_cut import _fake_profile, _silu_chain


def _untimed(calls: list[str]) -> Callable[..., object]:
    def profile(*_: object) -> object:
        calls.append("profiled")
        raise AssertionError("timed again")

    return profile


def _kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "kept"
    monkeypatch.setenv(speed_memory.ENV, str(folder))
    return folder


def test_the_same_convert_twice_writes_the_same_bytes_however_the_timing_moves(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first convert times conv1 faster in float and keeps it float; by the second, the machine has
    changed its mind (the refined model would time slower): the kept decision is read back, nothing is
    timed, and the file is byte for byte the first one."""
    folder = _kept(tmp_path, monkeypatch)
    _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    first, out = quantize(_silu_chain(), tmp_path, image_dir)
    assert first.speed_plan is not None and first.speed_plan.floated == ("conv1",)
    assert first.speed_plan.recalled is None
    written = out.read_bytes()
    (record,) = folder.glob("*.plan.json")
    kept = json.loads(record.read_text())
    assert kept["report"]["floated"] == ["conv1"] and kept["machine"]["cpu"] and kept["measured"]

    builds = _fake_profile(monkeypatch, "conv1", refined_time=1.25)
    profiled: list[str] = []
    monkeypatch.setattr(speed_refine, "side_by_side", _untimed(profiled))
    second, out = quantize(_silu_chain(), tmp_path, image_dir)
    assert out.read_bytes() == written
    assert second.speed_plan == dataclasses.replace(first.speed_plan, recalled=str(record))
    assert "conv1" not in second.plan.quantized_nodes
    assert builds == [] and profiled == []
    text = console.convert_table(second, "model.int8.onnx")
    assert f"as measured before, kept in {record}" in "".join(str(part) for part in text.renderables)


def test_without_the_memory_the_bytes_follow_the_timing(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QUANTKIT_SPEED_CACHE=off (the tests' default): each convert measures, and where the timing moved
    the bytes move with it; nothing is kept anywhere."""
    _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    first, out = quantize(_silu_chain(), tmp_path, image_dir)
    written = out.read_bytes()
    _fake_profile(monkeypatch, "conv1", refined_time=1.25)
    second, out = quantize(_silu_chain(), tmp_path, image_dir)
    assert out.read_bytes() != written
    assert first.speed_plan is not None and first.speed_plan.floated == ("conv1",)
    assert second.speed_plan is not None and second.speed_plan.refined_speedup is None
    assert speed_memory.folder() is None


@pytest.mark.parametrize(
    "broken",
    ["not json", '{"version": 1}', '{"version": 0, "report": null}', "broken-node"],
)
def test_a_record_that_cannot_be_used_is_measured_again_and_replaced(
    broken: str, tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _kept(tmp_path, monkeypatch)
    _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    quantize(_silu_chain(), tmp_path, image_dir)
    (record,) = folder.glob("*.plan.json")
    if broken == "broken-node":  # a record naming an op this model does not have
        kept = json.loads(record.read_text())
        kept["report"]["floated"] = ["no_such_node"]
        broken = json.dumps(kept)
    record.write_text(broken)
    builds = _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    summary, _ = quantize(_silu_chain(), tmp_path, image_dir)
    assert builds and summary.speed_plan is not None and summary.speed_plan.recalled is None
    assert summary.speed_plan.floated == ("conv1",)
    assert json.loads(record.read_text())["report"]["floated"] == ["conv1"]


def test_a_plan_that_timed_nothing_is_kept_too(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a round is worth trying at all comes from the profiles (timing): that is kept as well."""
    folder = _kept(tmp_path, monkeypatch)
    summary, _ = quantize(_silu_chain(), tmp_path, image_dir)  # the tests' thresholds: nothing tried
    (record,) = folder.glob("*.plan.json")
    assert summary.speed_plan is None and json.loads(record.read_text())["report"] is None
    profiled: list[str] = []
    monkeypatch.setattr(speed_refine, "side_by_side", _untimed(profiled))
    again, _ = quantize(_silu_chain(), tmp_path, image_dir)
    assert again.speed_plan is None and profiled == []


def test_an_unwritable_folder_only_loses_the_memory(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv(speed_memory.ENV, str(blocker / "speed"))
    _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    summary, out = quantize(_silu_chain(), tmp_path, image_dir)
    assert out.is_file() and summary.speed_plan is not None and summary.speed_plan.floated == ("conv1",)


def test_prefer_speed_keeps_its_decision_for_the_written_model(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--prefer speed measures twice before keeping a slow model float; the second convert reads that
    decision back (only the speed line's own measurement runs) and writes the same float model."""
    _kept(tmp_path, monkeypatch)
    calls: list[str] = []

    def measured(*_: object) -> Speed:
        calls.append("measured")
        return Speed(0.5, 10, 1.0, 2.0)

    monkeypatch.setattr(run_convert, "measure_speed", measured)
    monkeypatch.setattr(speed_memory.speed, "measure", measured)
    config = ConvertConfig(prefer=Prefer.speed)
    first, out = quantize(_silu_chain(), tmp_path, image_dir, config)
    written = out.read_bytes()
    assert calls == ["measured", "measured"] and not first.plan.quantized_nodes
    calls.clear()
    second, out = quantize(_silu_chain(), tmp_path, image_dir, config)
    assert calls == ["measured"] and out.read_bytes() == written and not second.plan.quantized_nodes


def test_the_key_follows_the_candidate_the_samples_and_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _silu_chain()
    samples = np.ones((2, 3, 16, 16), np.float32)
    key = speed_memory.key(model, samples)
    assert key == speed_memory.key(_silu_chain(), samples.copy())
    other = _silu_chain()
    weight = other.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2, weight.name))
    assert speed_memory.key(other, samples) != key
    assert speed_memory.key(model, samples * 2) != key
    assert speed_memory.key(model, {"x": samples}) != key
    monkeypatch.setattr(speed_memory, "cpu_info", lambda: {"cpu": "another CPU"})
    assert speed_memory.key(model, samples) != key
    assert isinstance(model, onnx.ModelProto)


def test_where_decisions_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(speed_memory.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert speed_memory.folder() == tmp_path / "quantkit" / "speed"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert speed_memory.folder() == Path.home() / ".cache" / "quantkit" / "speed"
    monkeypatch.setenv(speed_memory.ENV, str(tmp_path / "mine"))
    assert speed_memory.folder() == tmp_path / "mine"
    for off in ("off", "OFF", ""):
        monkeypatch.setenv(speed_memory.ENV, off)
        assert speed_memory.folder() is None


def test_a_model_over_protobufs_limit_is_neither_hashed_nor_kept(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model over 2 GB cannot be serialised to key it (nor is it timed): convert goes on, keeps nothing."""
    folder = _kept(tmp_path, monkeypatch)
    monkeypatch.setattr(speed_memory, "fits_one_message", lambda model: False)
    monkeypatch.setattr(speed_memory, "key", _untimed([]))  # hashing would raise
    monkeypatch.setattr(run_convert, "measure_speed", lambda *_: Speed(2.0, 10, 2.0, 1.0))
    summary, out = quantize(_silu_chain(), tmp_path, image_dir, ConvertConfig(prefer=Prefer.speed))
    assert out.is_file() and summary.plan.quantized_nodes and not folder.exists()


def test_an_inputs_only_record_is_used_only_where_that_placement_can_be_built() -> None:
    """A kept inputs-only plan floats no op: rebuilt by a caller with no inputs-only builder it would be
    the plain plan, a different model under the recalled report, so such a caller measures again."""
    report = {"floated": [], "plain_speedup": 1.0, "refined_speedup": 1.1, "sqnr_db": [30.0, 31.0]}
    record = {"report": {**report, "placement": speed_refine.INPUTS}}
    kept = speed_memory._recalled_plan(record, {"conv1"})
    assert kept and kept.placement == speed_refine.INPUTS
    assert speed_memory._recalled_plan(record, {"conv1"}, (None,)) is None
    plain = speed_memory._recalled_plan({"report": report}, {"conv1"}, (None,))
    assert plain and plain.placement is None and plain.refined_speedup == 1.1


def test_a_faster_plan_that_breaks_the_floor_gives_way_to_the_plan() -> None:
    """PP-OCRv4's detector (zoo, 320x320): 27 layers kept float lifted its map to the 10 dB floor; the
    speed-aware plan then floated 42 ops more around them, the map measured 8.5 dB and convert refused
    the model it would have written. Such a faster plan gives way to the plan, with a note."""
    from onnx import helper

    from quantkit.planner.fallback import SqnrMemo, measured_reference
    from tests.conftest import make_model, rng

    plain = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], {})
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "k"], ["y"], name="off"),
    ]
    broken = make_model(nodes, {"k": np.array(0.2, np.float32)})  # noise 0.8 of the signal: 1.9 dB
    samples = rng(4).normal(0, 1, (2, 3, 16, 16)).astype(np.float32)
    reference = measured_reference(plain, samples)
    (note,) = speed_memory.below_floor(broken, plain, 10.0, reference, samples, SqnrMemo())
    assert note.startswith(
        "speed on this CPU: the plan with the ops that profiled slower float measured 1.9 dB"
    )
    assert speed_memory.below_floor(plain, broken, 10.0, reference, samples, SqnrMemo()) == ()  # faster: fine
    assert speed_memory.below_floor(broken, broken, 10.0, reference, samples, SqnrMemo()) == ()  # the same
    slightly = make_model(nodes, {"k": np.array(0.95, np.float32)})  # 26 dB: above the floor, it stands
    assert speed_memory.below_floor(slightly, plain, 10.0, reference, samples, SqnrMemo()) == ()


def test_the_speed_aware_choice_passes_over_faster_plans_that_break_the_floor() -> None:
    """Refined plans below the floor that the plain plan holds are no choice (their speedups read 0), so
    that the fastest plan that holds is kept rather than the plain plan below_floor falls back to."""
    models = [onnx.ModelProto() for _ in range(4)]
    broken = {id(models[2])}
    ratios = [1.2, 1.4, 1.6, 1.5]
    kept = speed_refine.within_floor(ratios, models, lambda m: id(m) not in broken)
    assert kept == [1.2, 1.4, 0.0, 1.5]
    assert speed_refine.chosen(kept, None)[0] == 3  # the fastest that holds, not the plain plan
    assert speed_refine.within_floor(ratios, models, None) == ratios
    plain_broken = {id(models[0]), id(models[2])}  # the floor is not the plan's to keep: all stand
    assert speed_refine.within_floor(ratios, models, lambda m: id(m) not in plain_broken) == ratios


def test_a_cache_folder_that_cannot_be_written_is_said(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq100 F10: with the speed cache unwritable (a read-only home, a fresh CI container) the same
    inputs wrote other bytes in 3 of 6 converts, and nothing said why without -v."""
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"not a folder")
    monkeypatch.setenv(speed_memory.ENV, str(blocked / "speed"))
    _fake_profile(monkeypatch, "conv1", refined_time=0.5)
    summary, _ = quantize(_silu_chain(), tmp_path, image_dir)
    (line,) = [w for w in summary.warnings if "could not be kept" in w]
    assert line.startswith(f"the speed-aware plan's timing could not be kept in {blocked / 'speed'} (")
    assert "the same inputs may give other bytes; set QUANTKIT_SPEED_CACHE to a writable folder" in line
    _kept(tmp_path, monkeypatch)  # a writable one: nothing to say
    again, _ = quantize(_silu_chain(), tmp_path, image_dir)
    assert not [w for w in again.warnings if "could not be kept" in w]


def test_a_timing_not_kept_is_said_by_the_thread_whose_convert_it_was(tmp_path: Path) -> None:
    """hq159 F1: the folders a timing could not be kept in were one module-level dict: a convert in
    another thread (prefer="accuracy", timing nothing) said the warning, and cleared it when it started."""
    import threading

    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"not a folder")
    speed_memory.start_run()
    speed_memory.Memory(blocked / "speed", "k").keep("plan", {})
    said: list[str | None] = []

    def other() -> None:
        speed_memory.start_run()
        said.append(speed_memory.unkept_warning())

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert said == [None]
    mine = speed_memory.unkept_warning()
    assert mine is not None and mine.startswith(
        f"the speed-aware plan's timing could not be kept in {blocked / 'speed'}"
    )


def test_the_cache_folders_do_not_hang_on_the_working_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """hq107 F7: QUANTKIT_SPEED_CACHE='~/qk' (as a CI env: passes it) made a folder named '~' in the
    working folder, and a relative XDG_CACHE_HOME missed the kept timings from another folder."""
    from quantkit.pipeline import shrink_cache, speed_memory

    monkeypatch.setenv("HOME", str(tmp_path / "ci"))
    (tmp_path / "ci").mkdir()
    monkeypatch.setenv("QUANTKIT_SPEED_CACHE", "~/qk")
    assert speed_memory.folder() == (tmp_path / "ci" / "qk")
    monkeypatch.delenv("QUANTKIT_SPEED_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec ignores a relative one
    assert speed_memory.folder() == (tmp_path / "ci" / ".cache/quantkit/speed")
    assert shrink_cache.default_cache_dir() == (tmp_path / "ci" / ".cache/quantkit/calibration")
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/ci")
    assert speed_memory.folder() == Path("/var/cache/ci/quantkit/speed")


def test_an_unknown_users_home_is_one_line_and_no_home_keeps_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq108 F4: QUANTKIT_SPEED_CACHE='~nosuchuser/qk' was an internal error (pathlib's RuntimeError);
    where no home folder can be told at all, nothing is kept and shrink asks for --cache-dir."""
    from quantkit.errors import ConfigError
    from quantkit.pipeline import shrink_cache
    from tests.conftest import tiny_cnn
    from tests.helpers import assert_one_line_error, run

    monkeypatch.setenv("QUANTKIT_SPEED_CACHE", "~nosuchuser-qk/qk")
    with pytest.raises(ConfigError, match="names the home folder of a user this machine does not know"):
        speed_memory.folder()
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    table = tmp_path / "t.calib.json"
    assert run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    code, _, err = run(["convert", str(cnn), "-c", str(table), "-o", str(tmp_path / "q.onnx")], capsys)
    assert_one_line_error(code, err, "QUANTKIT_SPEED_CACHE=~nosuchuser-qk/qk names the home folder")

    def homeless() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("QUANTKIT_SPEED_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(homeless))
    assert speed_memory.folder() is None and shrink_cache.default_cache_dir() is None
    monkeypatch.setattr(Path, "home", staticmethod(lambda: tmp_path / "nonexistent"))  # hq109 F13
    assert speed_memory.folder() is None and not (tmp_path / "nonexistent").exists()
    argv = ["shrink", str(cnn), "--images", str(image_dir), "--output-dir", str(tmp_path)]
    code, _, err = run(argv, capsys)
    assert_one_line_error(
        code, err, "shrink needs a cache folder for its calibration table, and there is no home"
    )
