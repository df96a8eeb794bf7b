"""Shards on worker processes: the same bytes for any number of workers, retries when a worker dies,
one line when a shard cannot be done."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantkit.calib import table as table_io
from quantkit.errors import ConfigError, WorkerError
from quantkit.parallel import Parallel, pool_for
from quantkit.parallel.local import LocalPool
from quantkit.pipeline import shards
from tests.conftest import tiny_cnn
from tests.helpers import assert_one_line_error, run, timeless

# Workers plan with the real payoff rule (conftest's monkeypatch does not reach their processes), so
# the driver here does too.
JUDGE_PAYOFF = True


def square_unless_marked(marker_dir: str, job: int) -> int:
    """A task that kills its own worker process the first time it sees job 3 (a marker file records it)."""
    marker = Path(marker_dir) / f"killed-{job}"
    if job == 3 and not marker.exists():
        marker.write_text("once")
        os.kill(os.getpid(), signal.SIGKILL)
    return job * job


def always_dies(_: str, job: int) -> int:
    if job == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return job


def refuses(_: str, job: int) -> int:
    if job == 1:
        raise ConfigError("job 1 is not allowed")
    return job


def test_a_killed_worker_is_replaced_and_its_job_rerun(tmp_path: Path) -> None:
    with LocalPool(2) as pool:
        results = list(pool.run(square_unless_marked, str(tmp_path), list(range(8)), str))
    assert results == [k * k for k in range(8)]  # in job order, none lost
    assert (tmp_path / "killed-3").read_text() == "once"


def test_the_callers_start_method_is_left_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hq90 F5: after a pool ran, the process-wide default start method was fixed ('fork', a side effect
    of the standard library's pools), and a caller's set_start_method('spawn') raised 'context has
    already been set'. One the caller had set stays."""
    import multiprocessing

    default = multiprocessing.context._default_context
    monkeypatch.setattr(default, "_actual_context", None)
    with LocalPool(2) as pool:
        assert list(pool.run(square_unless_marked, str(tmp_path), [1, 2], str)) == [1, 4]
    assert multiprocessing.get_start_method(allow_none=True) is None
    multiprocessing.set_start_method("spawn")  # the caller's own choice, taken
    with LocalPool(2) as pool:
        assert list(pool.run(square_unless_marked, str(tmp_path), [2], str)) == [4]
    assert multiprocessing.get_start_method(allow_none=True) == "spawn"


def test_a_job_that_kills_two_workers_is_named(tmp_path: Path) -> None:
    with LocalPool(2) as pool, pytest.raises(WorkerError, match=r"^shard 2 failed 2 times: its worker"):
        list(pool.run(always_dies, str(tmp_path), list(range(4)), lambda j: f"shard {j}"))


def sleeps_after_noting_its_pid(folder: str, job: int) -> int:
    (Path(folder) / "worker.pid").write_text(str(os.getpid()))
    time.sleep(120)
    return job


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_workers_end_when_the_run_is_killed(tmp_path: Path) -> None:
    """hq100 F8: a SIGKILLed run (the OOM killer, a CI hard timeout) left its fork server, resource tracker
    and workers, each holding a model session, asleep for ever: the workers' parent is the fork server,
    which the kernel's parent-death signal would watch. Workers now watch the run itself."""
    driver = (
        "from quantkit.parallel.local import LocalPool\n"
        "from tests.test_workers import sleeps_after_noting_its_pid\n"
        "with LocalPool(1) as pool:\n"
        f"    list(pool.run(sleeps_after_noting_its_pid, {str(tmp_path)!r}, [1], str))\n"
    )
    run_process = subprocess.Popen([sys.executable, "-c", driver], cwd=Path(__file__).parents[1])
    pid_file = tmp_path / "worker.pid"
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and run_process.poll() is None, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        run_process.kill()
        run_process.wait()
        assert _gone(worker, within_s=10), "the worker outlived the run"
    finally:
        run_process.kill()
        run_process.wait()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_an_ended_run_is_seen_without_process_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    from quantkit.parallel import orphans

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # reaped: its pid names no process now
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    monkeypatch.setattr(orphans, "POLL_S", 0.01)
    orphans._wait_for_end(ended.pid)  # returns (a wait for ever would time the suite out)
    assert not orphans.running(ended.pid)
    assert orphans.running(os.getpid())


def test_an_error_the_task_raises_is_raised_as_in_one_process(tmp_path: Path) -> None:
    for workers in (1, 2):
        with pool_for(Parallel(workers)) as pool, pytest.raises(ConfigError, match="job 1 is not allowed"):
            list(pool.run(refuses, str(tmp_path), [0, 1, 2], str))


def test_ray_missing_is_one_line_that_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"--ray needs Ray.*pip install 'ray>=2\.40'"):
        pool_for(Parallel(ray="127.0.0.1:6379"))


def _digest(table: Path) -> tuple[str, str]:
    return tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in (table, table.with_suffix(".npz")))  # type: ignore[return-value]


def test_calibration_tables_are_byte_identical_for_any_number_of_workers(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "CHUNK_IMAGES", 4)  # 24 images: 6 chunks of 2 batches
    model = tiny_cnn(tmp_path / "cnn.onnx")
    digests = []
    for extra in ([], ["--workers", "2"], ["--workers", "3", "--threads", "1"]):
        table = tmp_path / f"t{len(digests)}.json"
        code, out, err = run(
            [
                "calibrate",
                str(model),
                "--images",
                str(image_dir),
                "-o",
                str(table),
                "--batch-size",
                "2",
                *extra,
            ],
            capsys,
        )
        assert code == 0, err
        assert "on 24 images" in out and json.loads(table.read_text())["meta"]["chunk_size"] == 4
        digests.append(_digest(table))
    assert len(set(digests)) == 1


def test_a_ray_address_nothing_answers_at_is_refused_at_once() -> None:
    """ray.init retried 127.0.0.1:1 for over 10 minutes; the address is tried first (loopback only)."""
    import socket

    from quantkit.parallel.ray_pool import _answers

    with pytest.raises(
        ConfigError, match=r"no Ray cluster answers at ray://127\.0\.0\.1:1 \(.*\); check --ray"
    ):
        _answers("ray://127.0.0.1:1")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        _answers(f"127.0.0.1:{listening.getsockname()[1]}")  # something answers: ray.init's turn
    _answers("auto")  # not HOST:PORT: ray.init finds the cluster


def test_workers_refuse_arrays_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    model = tiny_cnn(tmp_path / "cnn.onnx")
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "a.npy", np.zeros((3, 16, 16), np.float32))
    code, _, err = run(
        [
            "calibrate",
            str(model),
            "--inputs",
            str(tmp_path / "arrays"),
            "-o",
            str(tmp_path / "t.json"),
            "--workers",
            "2",
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1
    assert "--workers and --ray read images from a folder" in err


def test_compare_figures_are_byte_identical_for_any_number_of_workers(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --runs 0 (no timing) the whole JSON report is the same bytes on 1 or N workers."""
    monkeypatch.setattr(shards, "CHUNK_IMAGES", 4)
    model = tiny_cnn(tmp_path / "cnn.onnx")
    table, int8 = tmp_path / "t.json", tmp_path / "q.onnx"
    assert run(["calibrate", str(model), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    assert run(["convert", str(model), "-c", str(table), "-o", str(int8)], capsys)[0] == 0
    digests = set()
    for extra in ([], ["--workers", "2"], ["--workers", "3"]):
        report = tmp_path / f"r{len(digests)}-{len(extra)}.json"
        argv = ["compare", str(model), str(int8), "--images", str(image_dir), "--runs=0"]
        code, _, err = run([*argv, "--json", str(report), *extra], capsys)
        assert code == 0, err
        doc = json.loads(report.read_text())
        assert doc["images"] == 24 and doc["latency"]["reference"] is None
        digests.add(hashlib.sha256(report.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_sensitivity_report_is_the_same_for_any_number_of_workers(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each measured model runs over every image on one worker: the whole report (all but its run time)
    and the exclusions file are those of one process."""
    model = tiny_cnn(tmp_path / "cnn.onnx")
    table = tmp_path / "t.json"
    assert run(["calibrate", str(model), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    reports, exclusions = [], set()
    for extra in ([], ["--workers", "2"], ["--workers", "3", "--threads", "1"]):
        report, keep = tmp_path / f"s{len(reports)}.json", tmp_path / f"k{len(reports)}.txt"
        argv = ["sensitivity", str(model), "-c", str(table), "--images", str(image_dir), "--top", "2"]
        code, _, err = run([*argv, "--json", str(report), "--write-exclusions", str(keep), *extra], capsys)
        assert code == 0, err
        doc = json.loads(report.read_text())
        assert doc.pop("seconds") > 0 and doc["num_images"] == 24 and doc["layers"][0]["node"] == "c1"
        reports.append(doc)
        exclusions.add(keep.read_text())
    assert reports[0] == reports[1] == reports[2] and len(exclusions) == 1


@pytest.fixture
def wide_planted(image_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """test_sensitivity's planted weak layer, wide enough that int8 pays for its layers under the real
    payoff rule (the workers plan with it)."""
    from quantkit import pipeline
    from quantkit.config import CalibrateConfig, ImageSelection
    from tests.test_sensitivity import _planted

    model = _planted(tmp_path / "planted.onnx", classifier=True, width=24, out=16)
    table = tmp_path / "planted.calib.json"
    pipeline.calibrate(model, table, CalibrateConfig(ImageSelection(image_dir, 8, seed=1)))
    return model, table


def test_max_drop_on_workers_gives_the_one_process_search_and_model(
    wide_planted: tuple[Path, Path],
    image_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The validation images are scored chunk by chunk on the workers (chunks of 4 here: 6 of them);
    every trial's drop, the layers chosen and the model written are those of one process."""
    from quantkit.pipeline import shards

    monkeypatch.setattr(shards, "CHUNK_IMAGES", 4)
    model, table = wide_planted
    written, reports = set(), []
    for extra in ([], ["--workers", "2"], ["--workers", "3", "--threads", "1"]):
        out = tmp_path / f"o{len(reports)}.onnx"
        argv = ["convert", str(model), "-c", str(table), "-o", str(out), "--max-drop", "5"]
        code, stdout, err = run(
            [*argv, "--validation", str(image_dir), "--metric", "agreement", *extra], capsys
        )
        assert code == 0, err
        reports.append(timeless(stdout.replace(out.name, "OUT")))
        written.add(out.read_bytes())
    assert len(written) == 1 and reports[0] == reports[1] == reports[2]
    assert "kept float by --max-drop 5" in reports[0]


def test_min_sqnr_search_on_workers_gives_the_one_process_model(
    wide_planted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fallback's trials (and the screening of groups) run on the workers, each built there from the
    model and table sent once: the same scores, so the same layers kept float and the same bytes."""
    model, table = wide_planted
    written, summaries = set(), set()
    for extra in ([], ["--workers", "2"], ["--workers", "3", "--threads", "1"]):
        out = tmp_path / f"f{len(summaries)}-{len(extra)}.onnx"
        argv = ["convert", str(model), "-c", str(table), "-o", str(out), "--min-sqnr", "60"]
        code, stdout, err = run([*argv, "--max-float-layers", "2", *extra], capsys)
        assert code == 0, err
        assert "--min-sqnr 60" in stdout
        summaries.add(timeless(stdout.replace(out.name, "OUT")))
        written.add(out.read_bytes())
    assert len(written) == 1 and len(summaries) == 1


def test_shrink_on_workers_writes_the_one_process_model(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "CHUNK_IMAGES", 4)
    model = tiny_cnn(tmp_path / "cnn.onnx")
    digests = set()
    for extra in ([], ["--workers", "2"]):
        out = tmp_path / f"out{len(extra)}"
        argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(out), "--runs", "2"]
        code, _, err = run([*argv, "--cache-dir", str(tmp_path / f"cache{len(extra)}"), *extra], capsys)
        assert code == 0, err
        digests.add(hashlib.sha256((out / "cnn.int8.onnx").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_a_worker_that_cannot_see_the_images_says_so_in_one_line(tmp_path: Path) -> None:
    from quantkit.errors import ImageError
    from quantkit.pipeline.shards import require_visible

    seen = tmp_path / "a.png"
    seen.write_bytes(b"")
    with pytest.raises(ImageError, match=r"cannot see .*b\.png \(1 of 2 images of its chunk\): workers need"):
        require_visible([seen, tmp_path / "b.png"], worker=True)
    require_visible([seen, tmp_path / "b.png"], worker=False)  # hq122 F5: here, removed is no NFS matter


def test_an_image_removed_mid_run_in_process_is_skipped_and_named(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq122 F5: an image deleted while calibrate ran in one process failed 'vm cannot see ...: workers
    need the images on a path every node reads (NFS ...)'. Here it is skipped and named."""
    import shutil

    from quantkit.pipeline import run_calibrate

    images = tmp_path / "images"
    shutil.copytree(image_dir, images)
    gone = sorted(images.rglob("*.png"))[-1]
    real = run_calibrate.run_chunk

    def removing(*args: object, **kwargs: object) -> object:
        gone.unlink(missing_ok=True)  # after the listing, before the chunk reads it
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run_calibrate, "run_chunk", removing)
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    code, _, err = run(
        ["calibrate", str(cnn), "--images", str(images), "-o", str(tmp_path / "t.json")], capsys
    )
    assert code == 0 and gone.name in err and "NFS" not in err, err


def test_fp32_outputs_travel_to_trial_workers_unchanged() -> None:
    """The search's reference (FP32's outputs per run) crosses to the workers as an .npz: every run and
    tensor back in order, names with slashes and colons included, values bit for bit."""
    import numpy as np

    from quantkit.pipeline.trial_jobs import _reference_of, reference_bytes

    reference = [
        {"/model/conv/Conv_output_0": np.full((1, 3), k, np.float32), "scores:0": np.arange(k + 2.0)}
        for k in range(12)
    ]
    back = _reference_of(reference_bytes(reference))
    assert [list(run) for run in back] == [list(run) for run in reference]
    for got, sent in zip(back, reference, strict=True):
        for name in sent:
            np.testing.assert_array_equal(got[name], sent[name])
            assert got[name].dtype == sent[name].dtype


def test_a_script_without_the_main_guard_is_told_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hunt32: workers=2 from a script without the guard died with 165 lines of tracebacks and an error
    pointing at memory; the error now names the guard where the script has none."""
    import sys
    import types

    from quantkit.parallel import local

    script = tmp_path / "run.py"
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    script.write_text("import quantkit\nquantkit.calibrate('m.onnx', 'img', workers=2)\n")
    assert 'needs its calls under `if __name__ == "__main__":`' in local._guard_hint()
    script.write_text(
        "import quantkit\nif __name__ == '__main__':\n    quantkit.calibrate('m.onnx', 'img')\n"
    )
    assert local._guard_hint() == ""


def test_the_tables_samples_are_spread_over_the_images_for_any_number_of_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hunt39 F11: the smoke test, --min-sqnr and rounding measured the first 8 files by name, in a folder
    sorted by class all of the first class. They are the middle of each eighth of the list now."""
    monkeypatch.setattr(shards, "CHUNK_IMAGES", 4)
    folder = tmp_path / "classes"
    for i in range(20):  # gray level 10 i + 5 tells the file's place in the list
        sub = folder / f"class{i // 5}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 12, 3), 10 * i + 5, np.uint8)).save(sub / f"{i:02d}.png")
    model = tiny_cnn(tmp_path / "cnn.onnx")
    for workers in ("1", "2"):
        table = tmp_path / f"t{workers}.json"
        options = [
            "--mean",
            "0,0,0",
            "--std",
            "1,1,1",
            "--batch-size",
            "2",
            "--workers",
            workers,
            "-o",
            str(table),
        ]
        code, _, err = run(["calibrate", str(model), "--images", str(folder), *options], capsys)
        assert code == 0, err
        samples = table_io.load(table).samples
        assert isinstance(samples, np.ndarray)
        places = [(round(float(s.mean())) - 5) // 10 for s in samples]
        assert places == [1, 3, 6, 8, 11, 13, 16, 18]  # (2k + 1) * 20 // 16


def test_a_picked_image_that_cannot_be_read_leaves_the_table_its_8_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable file among the picked ones left 7 samples: the 8 are spread over the images read."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.full((12, 12, 3), 10 * i + 5, np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "01.png").write_text("not an image")  # the first pick
    table = tmp_path / "t.json"
    argv = ["calibrate", str(tiny_cnn(tmp_path / "cnn.onnx")), "--images", str(folder), "-o", str(table)]
    code, _, err = run([*argv, "--mean", "0,0,0", "--std", "1,1,1", "--batch-size", "2"], capsys)
    assert code == 0 and "01.png" in err, err
    samples = table_io.load(table).samples
    assert isinstance(samples, np.ndarray)
    assert [(round(float(s.mean())) - 5) // 10 for s in samples] == [2, 4, 6, 9, 11, 14, 16, 18]


def test_a_ray_address_from_the_environment_is_named_where_it_fails(
    cnn: Path,
    image_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq61: RAY_ADDRESS left in the environment sends every command to Ray without --ray on its line, and
    the failure did not say where the address came from."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "garbage")
    table = tmp_path / "t.json"
    code, _, err = run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)
    assert_one_line_error(code, err, "cannot reach the Ray cluster at 'garbage' (", "(RAY_ADDRESS; unset it")
    assert not table.exists()


def test_each_thread_holds_its_own_sessions_and_sensitivity_state() -> None:
    """hq113 F1, F3, F4: a service's second thread replaced a running compare's candidate session (its
    last images scored on another model) and emptied every call's sessions at its end ('No graph was
    found in the protobuf'); two sensitivity() threads cleared each other's state."""
    import threading

    from quantkit.pipeline import sensitivity_jobs, shards

    mine = object()
    shards.prime("cand.onnx", 1, mine)  # type: ignore[arg-type]
    sensitivity_jobs._states()["run"] = mine  # type: ignore[assignment]

    def other() -> None:
        shards.prime("cand.onnx", 1, object())  # type: ignore[arg-type]
        shards.release()
        sensitivity_jobs.release()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert shards.session_for(b"", "cand.onnx", 1) is mine
    assert sensitivity_jobs._states()["run"] is mine
    shards.release()
    sensitivity_jobs.release()


def _calibrate_in_child(model: str, images: str, out: str) -> None:
    import quantkit

    quantkit.calibrate(model, data=images, output=out, workers=2, threads=1)


def test_a_child_forked_after_local_workers_runs_its_own(cnn: Path, image_dir: Path, tmp_path: Path) -> None:
    """hq113 F5: a service that forks after a workers=2 call: every workers=2 call in the child raised a bare
    ChildProcessError (the parent's forkserver, inherited, is no child of the child)."""
    import multiprocessing

    import quantkit

    quantkit.calibrate(cnn, data=image_dir, output=tmp_path / "parent.calib.json", workers=2, threads=1)
    child = multiprocessing.get_context("fork").Process(
        target=_calibrate_in_child, args=(str(cnn), str(image_dir), str(tmp_path / "child.calib.json"))
    )
    child.start()
    child.join(300)
    assert child.exitcode == 0 and (tmp_path / "child.calib.json").exists()


def test_an_interrupted_pool_whose_manager_waits_is_woken_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hq113 F2: an interrupt landing while a worker was forked left the pool's manager thread on a pipe
    nobody closed, and shutdown(wait=True) joined it for ever; it is woken and waited for a bounded time."""
    import threading

    from quantkit.parallel import local

    monkeypatch.setattr(local, "SHUTDOWN_WAIT", 0.05)
    woken = threading.Event()

    class Wakeup:
        def wakeup(self) -> None:
            woken.set()

    class Stuck:
        def __init__(self) -> None:
            self._executor_manager_thread = threading.Thread(target=woken.wait, daemon=True)
            self._executor_manager_thread_wakeup = Wakeup()
            self._executor_manager_thread.start()

        def shutdown(self, wait: bool, cancel_futures: bool) -> None:
            assert not wait

    stuck = Stuck()
    local._shut_down(stuck)  # type: ignore[arg-type]
    assert woken.is_set()  # returned though the thread did not end by itself; woken, it ends
    stuck._executor_manager_thread.join(5)
    assert not stuck._executor_manager_thread.is_alive()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_the_fork_server_ignores_ctrl_c_and_writes_nowhere() -> None:
    """hq122 F3: Ctrl-C reaches the whole process group; the fork server caught importing the task's
    module printed a KeyboardInterrupt traceback around the one line, and a worker forked as the run
    stopped a FileNotFoundError's. The server starts with SIGINT ignored and stderr on /dev/null; this
    process's own stderr is never redirected meanwhile (hq159 F3: another thread of a long-lived process
    lost 2 of its 1268 log lines while it pointed at /dev/null), and its preload list is as it was."""
    script = (
        "import os, signal, time\n"
        "from multiprocessing import forkserver\n"
        "from quantkit.parallel import local\n"
        "moved = []\n"
        "dup2 = os.dup2\n"
        "os.dup2 = lambda a, b, *rest: (moved.append(b), dup2(a, b, *rest))[1]\n"
        "local._start_forkserver()\n"
        "os.dup2 = dup2\n"
        "pid = forkserver._forkserver._forkserver_pid\n"
        "for _ in range(600):  # the server points its stderr at /dev/null as it preloads\n"
        "    if os.readlink(f'/proc/{pid}/fd/2') == '/dev/null':\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "mask = next(l for l in open(f'/proc/{pid}/status') if l.startswith('SigIgn:')).split()[1]\n"
        "print(int(mask, 16) >> (signal.SIGINT - 1) & 1, os.readlink(f'/proc/{pid}/fd/2'))\n"
        "mine = signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
        "print(mine, os.readlink('/proc/self/fd/2'), 2 in moved, forkserver._forkserver._preload_modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "QUANTKIT_DEBUG"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    server, here = done.stdout.splitlines()
    assert server == "1 /dev/null", done.stderr
    assert here.startswith("True ") and here.endswith(" False ['__main__']")  # its own, as they were
    assert "/dev/null" not in here


def test_compare_on_workers_sends_external_weights_inside(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq128 F1: shrink --workers 2 of a model saved with its weights in an external file calibrated and
    converted, then failed 'keeps its weights in external files: compare it in one process'. The model
    travels with its weights inside; the figures are those of one process."""
    import onnx

    model = onnx.load(str(tiny_cnn(tmp_path / "plain.onnx")))
    external = tmp_path / "external.onnx"
    onnx.save(model, str(external), save_as_external_data=True, location="external.data", size_threshold=0)
    assert (tmp_path / "external.data").is_file()
    figures = []
    for workers in ("1", "2"):
        report = tmp_path / f"c{workers}.json"
        argv = ["compare", str(external), str(tmp_path / "plain.onnx"), "--images", str(image_dir)]
        code, _, err = run([*argv, "--runs", "0", "--workers", workers, "--json", str(report)], capsys)
        assert code == 0, err
        figures.append(json.loads(report.read_text())["outputs"])
    assert figures[0] == figures[1]


def _pool_kind(workers: int) -> str:
    return type(pool_for(Parallel(workers))).__name__


def test_workers_inside_a_daemonic_process_run_in_it() -> None:
    """hq159 F2: calibrate(workers=2) inside a multiprocessing.Pool's worker (daemonic) raised Python's
    'daemonic processes are not allowed to have children'; the result is the same run in the process."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_pool_kind, (2,)) == "InProcess"
    assert _pool_kind(2) == "LocalPool" and _pool_kind(1) == "InProcess"
