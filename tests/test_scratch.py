"""Scratch folders (quantkit.scratch): one a SIGKILLed run left is removed by the next run that makes one
of its kind in that place; one a live process holds, one of another kind, a link and a file of the user's
are never touched (hq85 F10: each killed shrink left a hidden folder holding a whole model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantkit.scratch import LOCK, Scratch, contents
from tests.conftest import tiny_cnn
from tests.helpers import run

# a process that makes a scratch folder in argv[2] with prefix argv[1], says its path, then dies as asked
MAKER = """
import os, signal, sys, time
from pathlib import Path
from quantkit.scratch import Scratch
folder = Scratch(sys.argv[1], Path(sys.argv[2]))
(folder.path / "model.onnx").write_bytes(b"x" * 1000)
print(folder.path, flush=True)
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def _made(prefix: str, place: Path, end: str) -> tuple[Path, subprocess.Popen[str]]:
    child = subprocess.Popen(
        [sys.executable, "-c", MAKER, prefix, str(place), end], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    return Path(child.stdout.readline().strip()), child


def test_a_folder_a_killed_run_left_goes_and_a_live_ones_stays(tmp_path: Path) -> None:
    live, holder = _made("quantkit-runs-", tmp_path, "live")
    killed, child = _made("quantkit-runs-", tmp_path, "kill")
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert (killed / "model.onnx").exists()  # no code ran at its end
    other, child = _made("quantkit-workers-", tmp_path, "kill")  # another kind: its own kind's business
    child.wait(timeout=60)
    linked = tmp_path / "quantkit-runs-link"
    linked.symlink_to(killed.parent / "elsewhere", target_is_directory=True)
    mine = tmp_path / "quantkit-runs-notes.txt"
    mine.write_text("mine")
    try:
        assert live.exists()  # the killed run's folder did not take the live one for abandoned
        fresh = Scratch("quantkit-runs-", tmp_path)
        assert not killed.exists()
        assert (live / "model.onnx").exists() and (other / "model.onnx").exists()
        assert linked.is_symlink() and mine.read_text() == "mine"
        assert contents(fresh.path) == [] and (fresh.path / LOCK).exists()
        again = Scratch("quantkit-runs-", tmp_path)  # this process's own live folder is held too
        assert fresh.path.exists()
        fresh.remove()
        again.remove()
        assert not fresh.path.exists() and not again.path.exists()
    finally:
        holder.kill()
        holder.wait(timeout=60)
    Scratch("quantkit-runs-", tmp_path).remove()  # its holder is gone now
    assert not live.exists()


def test_a_folder_without_its_lock_file_is_never_removed(tmp_path: Path) -> None:
    """hq91 F1: a folder of the user's named like a scratch folder went, files and all, once a day old."""
    mine = tmp_path / "quantkit-runs-mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    past = time.time() - 30 * 24 * 3600
    os.utime(mine, (past, past))
    Scratch("quantkit-runs-", tmp_path).remove()
    assert (mine / "notes.txt").read_text() == "mine"


def test_shrink_removes_the_staging_folder_a_killed_shrink_left(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stage, child = _made(".quantkit-shrink-", out, "kill")
    child.wait(timeout=60)
    assert stage.exists()
    model = tiny_cnn(tmp_path / "model.onnx")
    argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(out), "--runs", "3"]
    code, _, err = run([*argv, "--warmup", "0", "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 0, err
    published = ["junit.xml", "model.int8.onnx", "report.json", "report.md"]
    assert sorted(p.name for p in out.iterdir()) == published  # no staging folder, theirs or its own


def test_shrink_names_its_outputs_place_never_its_staging_folder(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq85 F9: errors named `.quantkit-shrink-xxxx`; a folder removed mid-run was "onnxruntime cannot
    load the model"; the API's error named a flag."""
    import shutil

    import quantkit
    from quantkit.errors import OutputError
    from quantkit.pipeline import run_shrink

    model = tiny_cnn(tmp_path / "model.onnx")
    out, cache = tmp_path / "out", tmp_path / "new" / "cache"
    argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(out)]
    argv += ["--cache-dir", str(cache)]
    real = run_shrink.convert

    def full_disk(model_path: Path, table: Path, output: Path, *args: object, **kwargs: object) -> object:
        raise OutputError(f"writing {output} failed (No space left on device); nothing was written")

    monkeypatch.setattr(run_shrink, "convert", full_disk)
    code, _, err = run(argv, capsys)
    said = f"error: writing {out / 'model.int8.onnx'} failed (No space left on device); nothing was written\n"
    assert err == said
    assert code == 2 and not out.exists()

    def folder_removed(
        model_path: Path, table: Path, output: Path, *args: object, **kwargs: object
    ) -> object:
        shutil.rmtree(out)
        return real(model_path, table, output, *args, **kwargs)

    monkeypatch.setattr(run_shrink, "convert", folder_removed)
    code, _, err = run(argv, capsys)
    assert err == f"error: the output folder {out} went away while shrink ran; nothing written\n"
    assert code == 2 and not out.exists()

    def folder_made_again(
        model_path: Path, table: Path, output: Path, *args: object, **kwargs: object
    ) -> object:
        shutil.rmtree(out)
        out.mkdir()  # hq91 F7: 'does not exist; create it first' of a folder that did
        return real(model_path, table, output, *args, **kwargs)

    monkeypatch.setattr(run_shrink, "convert", folder_made_again)
    code, _, err = run(argv, capsys)
    assert err == f"error: the output folder {out} went away while shrink ran; nothing written\n"
    with pytest.raises(OutputError, match=r"^the output folder \S+ is a file; give a folder$"):
        quantkit.shrink(model, data=image_dir, output_dir=model)


def test_a_with_blocks_temporary_folder_a_killed_run_left_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq100 F9: onnxruntime's copies of a model (runtime.optimized_graph, crash_on_load, the profiler)
    went to tempfile.TemporaryDirectory folders, which a SIGKILL left in the temporary folder for good."""
    import tempfile

    from quantkit.scratch import held

    code = (
        "import os, signal\nfrom pathlib import Path\nfrom quantkit.scratch import held\n"
        "with held() as folder:\n    (Path(folder) / 'model.onnx').write_bytes(b'x' * 1000)\n"
        "    print(folder, flush=True)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    left = Path(done.stdout.strip())
    assert done.returncode == -signal.SIGKILL and left.parent == tmp_path and (left / "model.onnx").exists()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with held() as folder:
        assert Path(folder).parent == tmp_path and not left.exists()
    assert sorted(tmp_path.iterdir()) == []
