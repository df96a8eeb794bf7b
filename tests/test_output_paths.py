"""Where outputs land (hq85, hq86): a symbolic link is refused, neither replaced nor written through;
this process's own stdout is no output file; a calibration table's arrays are no report's path; shrink's
publish holds its folder's lock; a refused shrink leaves no earlier run's model, whatever model that run
was made from, and never its own input."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from tests.conftest import tiny_cnn
from tests.helpers import assert_one_line_error, run

Capsys = pytest.CaptureFixture[str]
FAST = ["--runs", "3", "--warmup", "0"]


def test_a_linked_output_path_is_refused_and_nothing_written(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq85 F1: `--json cmp.json` where cmp.json linked to store/cmp.json replaced the link by a file and
    left store/cmp.json holding the last run's report; written through instead (hq86 F2, F3), a link
    reached a model or a table elsewhere, and a table's .json and .npz landed in two folders. A link is
    refused before any work, whatever it names."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "cmp.json").write_text('{"old": true}')
    (store / "t.calib.json").write_text('{"format": "quantkit-calibration"}')
    link = tmp_path / "cmp.json"
    link.symlink_to(store / "cmp.json")
    argv = ["compare", str(cnn), str(cnn), "--images", str(image_dir), "--runs", "0", "--json", str(link)]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, f"the output {link} is a symbolic link (to {store / 'cmp.json'})")
    assert link.is_symlink() and (store / "cmp.json").read_text() == '{"old": true}'
    table = tmp_path / "t.calib.json"
    table.symlink_to(store / "t.calib.json")
    code, _, err = run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)
    assert_one_line_error(code, err, "is a symbolic link")
    model = tmp_path / "m.int8.onnx"
    model.symlink_to(store / "t.calib.json")
    good = tmp_path / "good.calib.json"
    assert run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(good)], capsys)[0] == 0
    code, _, err = run(["convert", str(cnn), "-c", str(good), "-o", str(model)], capsys)
    assert_one_line_error(code, err, "is a symbolic link")
    assert (store / "t.calib.json").read_text() == '{"format": "quantkit-calibration"}'
    assert sorted(p.name for p in store.iterdir()) == ["cmp.json", "t.calib.json"]


def test_this_processs_own_stdout_is_no_output_file(cnn: Path, tmp_path: Path, capsys: Capsys) -> None:
    """hq85 F1: `--json /dev/stdout > out.json` put the JSON where the link was and none in out.json: a
    path that is the file behind this process's stdout (by any name) is refused, '-' is the way."""
    out = tmp_path / "out.json"
    stdout = tmp_path / "stdout"  # as /dev/stdout is, without the risk of replacing that one
    stdout.symlink_to("/proc/self/fd/1")
    saved = os.dup(1)
    with out.open("w") as handle:
        os.dup2(handle.fileno(), 1)
        try:
            code, _, err = run(["check", str(cnn), "--json", str(stdout)], capsys)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    assert_one_line_error(code, err, f"the output {stdout} is this process's standard output", "'-'")
    assert stdout.is_symlink() and out.read_text() == ""


def test_no_report_is_written_over_a_calibration_tables_arrays(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq85 F2: compare --json, check --json and the rest wrote over another table's .npz (exit 0); that
    table was then refused as "does not belong ... recalibrate"."""
    table = tmp_path / "other.calib.json"
    assert run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    arrays = tmp_path / "other.calib.npz"
    before = arrays.read_bytes()
    code, _, err = run(["check", str(cnn), "--json", str(arrays)], capsys)
    assert_one_line_error(
        code, err, f"--json {arrays} is a calibration table's arrays; a report would replace"
    )
    argv = [
        "compare",
        str(cnn),
        str(cnn),
        "--images",
        str(image_dir),
        "--runs",
        "0",
        "--markdown",
        str(arrays),
    ]
    assert run(argv, capsys)[0] == 2
    assert arrays.read_bytes() == before


def test_a_refused_shrink_removes_an_earlier_runs_model_of_another_name(
    tmp_path: Path, image_dir: Path, capsys: Capsys
) -> None:
    """hq85 F4: a shrink of one model, then of another into the same folder, then a refused one: the
    folder kept the second run's model (named after the other model) beside no reports."""
    out = tmp_path / "release"
    first, other = tiny_cnn(tmp_path / "first.onnx"), tiny_cnn(tmp_path / "other.onnx")
    common = ["--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)]
    assert run(["shrink", str(other), *common, *FAST], capsys)[0] == 0
    assert (out / "other.int8.onnx").is_file()
    code, _, err = run(
        ["shrink", str(first), *common, *FAST, "--labels", str(tmp_path / "missing.txt")], capsys
    )
    assert code == 2, err
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_shrink_of_another_model_replaces_the_earlier_runs_model_with_its_reports(
    tmp_path: Path, image_dir: Path, capsys: Capsys
) -> None:
    """hq145 F1: classifier_v1.int8.onnx stayed beside classifier_v2's reports after a passing run, and
    CI uploaded both; a file of the user's of that name, with other bytes, stays."""
    out = tmp_path / "release"
    first, other = tiny_cnn(tmp_path / "first.onnx"), tiny_cnn(tmp_path / "other.onnx")
    common = ["--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)]
    assert run(["shrink", str(other), *common, *FAST], capsys)[0] == 0
    assert run(["shrink", str(first), *common, *FAST], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "first.int8.onnx",
        "junit.xml",
        "report.json",
        "report.md",
    ]
    (out / "first.int8.onnx").write_bytes(b"the user's own")  # no longer what report.json recorded
    assert run(["shrink", str(other), *common, *FAST], capsys)[0] == 0
    assert (out / "first.int8.onnx").read_bytes() == b"the user's own"
    # hq149 F2: a model no layer of which paid for int8 (the FP32 graph), shrunk again from its folder, is
    # that run's input: it stays
    names = ",".join(n.name for n in onnx.load(str(other)).graph.node if n.op_type in ("Conv", "Gemm"))
    assert run(["shrink", str(other), *common, *FAST, "--exclude-nodes", names], capsys)[0] == 0
    earlier = (out / "other.int8.onnx").read_bytes()
    code, _, err = run(["shrink", str(out / "other.int8.onnx"), *common, *FAST], capsys)
    assert code == 0, err
    assert (out / "other.int8.onnx").read_bytes() == earlier and (out / "other.int8.int8.onnx").is_file()


def test_a_folder_named_report_html_refuses_only_a_run_that_writes_one(
    tmp_path: Path, image_dir: Path, capsys: Capsys
) -> None:
    """hq145 F7: without --html, a folder report.html in --output-dir refused the run: 'give a file path'."""
    out = tmp_path / "release"
    (out / "report.html").mkdir(parents=True)
    model = tiny_cnn(tmp_path / "m.onnx")
    common = ["--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)]
    assert run(["shrink", str(model), *common, *FAST], capsys)[0] == 0
    code, _, err = run(["shrink", str(model), *common, *FAST, "--html"], capsys)
    assert code == 2 and "report.html is a folder" in err


def test_a_refused_shrink_keeps_an_earlier_report_it_reads(
    tmp_path: Path, image_dir: Path, capsys: Capsys
) -> None:
    """hq146 F0: shrink --exclude-from OUT/report.md said it would overwrite --exclude-from, then its exit-2
    cleanup removed that input as the earlier run's verdict."""
    out = tmp_path / "release"
    model = tiny_cnn(tmp_path / "m.onnx")
    common = ["--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)]
    assert run(["shrink", str(model), *common, *FAST], capsys)[0] == 0
    report = (out / "report.md").read_bytes()
    code, _, err = run(
        ["shrink", str(model), *common, *FAST, "--exclude-from", str(out / "report.md")], capsys
    )
    assert code == 2 and "would overwrite --exclude-from" in err
    assert (out / "report.md").read_bytes() == report and not (out / "junit.xml").exists()
    assert "could not be removed" not in err  # hq151 F8: kept as the input it is, not "not this run's"


def test_shrink_publishes_under_its_folders_lock(
    tmp_path: Path, image_dir: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq85 F3: shrink moved its files into --output-dir without the folder's lock: two runs publishing
    at once left report.md of one beside report.json and junit.xml of the other."""
    import fcntl

    from quantkit.pipeline import shrink_cleanup

    out = tmp_path / "release"
    model = tiny_cnn(tmp_path / "m.onnx")
    held: list[bool] = []
    replace = os.replace

    def moved(source: str | Path, target: str | Path) -> None:
        if Path(target).parent == out:
            fd = os.open(out, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open of the folder: refused if held
                held.append(False)
            except BlockingIOError:
                held.append(True)
            finally:
                os.close(fd)
        replace(source, target)

    monkeypatch.setattr(shrink_cleanup.os, "replace", moved)
    argv = ["shrink", str(model), "--images", str(image_dir), "--cache-dir", str(tmp_path / "c"), *FAST]
    assert run([*argv, "--output-dir", str(out)], capsys)[0] == 0
    assert held and all(held), held


def test_an_interrupt_after_the_output_is_in_place_names_it(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq85 F7: a Ctrl-C just after the new table had replaced the earlier one said only 'nothing partial
    was written' (exit 130): the files put in place whole are named."""
    from quantkit.pipeline import run_calibrate

    table = tmp_path / "t.calib.json"
    write_set = run_calibrate.write_set

    def then_stopped(written: list[tuple[Path, bytes]]) -> None:
        write_set(written)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_calibrate, "write_set", then_stopped)
    code, out, err = run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)
    assert code == 130 and out == "", err
    both = f"{table.with_suffix('.npz')}, {table}"
    assert err == f"interrupted; nothing partial was written; {both} had been written whole before it\n"
    monkeypatch.setattr(run_calibrate, "write_set", write_set)
    code, out, err = run(["check", str(tmp_path / "missing.onnx")], capsys)  # a later run names none
    assert code == 2 and "written whole" not in err


def test_once_the_run_has_ended_a_signal_cannot_change_its_exit(tmp_path: Path) -> None:
    """hq85 F7: a SIGINT or SIGTERM in the quarter second of the interpreter's teardown killed the process
    with no line and exit -2 / -15, its outputs written: they are ignored there. hq86 F4: not before, in a
    caller that runs quantkit.launch.main and goes on (its next run could not be interrupted)."""
    import subprocess
    import sys

    script = (
        "import atexit, signal\n"
        "from quantkit import launch\n"
        "from quantkit.cli import entry\n"
        "entry.main = lambda: None\n"
        "atexit.register(lambda: print(all(signal.getsignal(s) is signal.SIG_IGN"
        " for s in (signal.SIGINT, signal.SIGTERM))))\n"
        "launch.main()\n"
        "launch.main()\n"
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": root},
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "True\nTrue\n"), done.stderr


def test_another_path_to_an_input_folder_is_that_folder(
    cnn: Path, image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq85 F5: by a bind mount of its parent (Docker's -v), the table's .npz landed among the --inputs
    arrays, read as a sample next time, and a report named .png among the images."""
    import shutil
    import subprocess

    import numpy as np

    arrays = tmp_path / "data" / "arrays"
    arrays.mkdir(parents=True)
    for k in range(3):
        np.save(arrays / f"s{k}.npy", np.random.default_rng(k).random((3, 16, 16), np.float32))
    alias = tmp_path / "alias"
    alias.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "--bind", str(tmp_path / "data"), str(alias)], capture_output=True
        ).returncode
    ):
        pytest.skip("bind mounts need root and mount(8) here")
    try:
        out = alias / "arrays" / "t.json"
        code, _, err = run(["calibrate", str(cnn), "--inputs", str(arrays), "-o", str(out)], capsys)
        assert_one_line_error(code, err, "would land among the arrays read from --inputs")
        assert sorted(p.name for p in arrays.iterdir()) == ["s0.npy", "s1.npy", "s2.npy"]
    finally:
        subprocess.run(["umount", str(alias)], check=True)


def test_a_refused_shrink_of_an_earlier_release_keeps_that_input(
    tmp_path: Path, image_dir: Path, capsys: Capsys
) -> None:
    """hq86 F1: `shrink OUT/m.int8.onnx --output-dir OUT` ending in exit 2 deleted its own input, the model
    the earlier report.json named (removed there as an earlier run's)."""
    out = tmp_path / "release"
    model = tiny_cnn(tmp_path / "m.onnx")
    common = ["--images", str(image_dir), "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)]
    assert run(["shrink", str(model), *common, *FAST], capsys)[0] == 0
    earlier = out / "m.int8.onnx"
    before = earlier.read_bytes()
    code, _, err = run(["shrink", str(earlier), *common, *FAST, "--labels", str(tmp_path / "no.txt")], capsys)
    assert code == 2, err
    code, _, err = run(["shrink", str(earlier), *common, "--max-dorp", "1"], capsys)
    assert code == 2, err
    assert earlier.read_bytes() == before


def test_a_shrink_refused_before_it_reads_its_model_keeps_every_path_it_names(
    tmp_path: Path, image_dir: Path, capsys: Capsys
) -> None:
    """hq87 F1: `shrink --output-dir s s/m.int8.onnx --bogus-flag` (click reads no positional past an
    unknown option) deleted its input, the model the earlier report.json named. hq87 F5: a report that is
    a link was refused as an output, then removed by the refused run. hq87 F4: a dangling --output-dir
    link was 'File exists'."""
    out = tmp_path / "s"
    model = tiny_cnn(tmp_path / "m.onnx")
    common = ["--images", str(image_dir), "--cache-dir", str(tmp_path / "cache")]
    assert run(["shrink", str(model), *common, "--output-dir", str(out), *FAST], capsys)[0] == 0
    earlier = out / "m.int8.onnx"
    before = earlier.read_bytes()
    code, _, err = run(["shrink", "--output-dir", str(out), str(earlier), *common, "--bogus-flag"], capsys)
    assert code == 2, err
    assert earlier.read_bytes() == before
    assert run(["shrink", str(model), *common, "--output-dir", str(out), *FAST], capsys)[0] == 0
    (tmp_path / "kept.json").write_bytes((out / "report.json").read_bytes())
    (out / "report.json").unlink()
    (out / "report.json").symlink_to(tmp_path / "kept.json")
    code, _, err = run(["shrink", str(model), *common, "--output-dir", str(out), *FAST], capsys)
    assert_one_line_error(code, err, "is a symbolic link")
    assert (out / "report.json").is_symlink()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    code, _, err = run(["shrink", str(model), *common, "--output-dir", str(dangling)], capsys)
    assert_one_line_error(code, err, f"the output folder {dangling} is a link to a missing folder")


def test_an_output_folder_that_is_a_file_is_not_called_missing(tmp_path: Path) -> None:
    """hq100 F14: an output folder replaced by a file mid-run read 'does not exist; create it first'."""
    from quantkit import files
    from quantkit.errors import OutputError

    folder = tmp_path / "out"
    folder.write_bytes(b"a file")
    with pytest.raises(OutputError) as raised:
        files.write_set([(folder / "a.onnx", b"model")])
    assert (
        str(raised.value)
        == f"output folder {folder} is not a folder (a file, or a link to none); give a folder"
    )
    with pytest.raises(OutputError) as raised:
        files.write_set([(tmp_path / "none" / "a.onnx", b"model")])
    assert str(raised.value) == f"output folder {tmp_path / 'none'} does not exist; create it first"
    assert folder.read_bytes() == b"a file"


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "an image (WebP)"),
        (b"BM\x36\x00\x0c\x00\x00\x00\x00\x00\x36\x00", "an image (BMP)"),
        (b"II*\x00\x08\x00\x00\x00", "an image (TIFF)"),
        (b"GIF89a\x01\x00", "an image (GIF)"),
        (b"P6\n8 8\n255\n", "an image (PNM)"),  # hq105 F1: the formats quantkit reads itself
        (b"\x00\x00\x00\x1cftypavif\x00\x00", "an image (AVIF / HEIF)"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00", "an image (JPEG 2000)"),
        (b"PK\x03\x04\x14\x00", "a ZIP archive (a NumPy .npz, say)"),
        (b"%PDF-1.7\n", "a PDF document"),
        (b"Plan: two steps\n", ""),  # a note that begins with P
        (b"P6 is the plan\n", ""),  # hq108 F9: refused as a PNM image
        (b"P7\nWIDTH 4\nHEIGHT 4\n", "an image (PNM)"),
        (b"BMW notes: the 3 series\n", ""),  # a note that begins with the letters of a bitmap's mark
        (b'{"format": "mine"}', ""),
        (b"", ""),
    ],
)
def test_a_data_file_is_known_by_its_first_bytes(tmp_path: Path, head: bytes, kind: str) -> None:
    """hq98 F7: what a report may not replace, whatever the file's name."""
    from quantkit import file_heads

    path = tmp_path / "any.name"
    path.write_bytes(head)
    assert file_heads.holds_data(path) == kind
    assert file_heads.holds_data(tmp_path / "missing") == ""


def test_what_a_killed_write_left_is_swept_by_a_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq100 F4: a SIGKILL mid-write left the staged copy (a whole model's size) and the earlier file's
    second link beside the output, never swept. A later write of that output removes them once their
    process has ended and they are STALE_S old; what a live process left, or a dead one moments ago,
    stays, and so does an aside that is not a link to the output's file (maybe its only copy), and any
    file whose name is not exactly ours (hq105 F2: a user's `.out.onnx.2024.draft.tmp` went; F4: a name
    of other digits, '²3', was an internal error)."""
    import subprocess
    import sys

    from quantkit import file_undo, files

    out = tmp_path / "m.onnx"
    out.write_bytes(b"earlier")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ours = f".m.onnx.quantkit-{dead.pid}"
    staged = tmp_path / f"{ours}-abc12345.tmp"
    staged.write_bytes(b"half a model")
    aside = tmp_path / f"{ours}-0.old"
    os.link(out, aside)
    only = tmp_path / f"{ours}-1.old"
    only.write_bytes(b"renamed aside")
    running = tmp_path / f".m.onnx.quantkit-{os.getppid()}-abcdef12.tmp"
    running.write_bytes(b"being written")
    other = tmp_path / f".n.onnx.quantkit-{dead.pid}-abcdef12.tmp"  # another output's
    other.write_bytes(b"n")
    users = [tmp_path / name for name in (".m.onnx.2024.draft.tmp", f".m.onnx.{dead.pid}.0.old")]
    users += [
        tmp_path / ".m.onnx.quantkit-\u00b23-abcdef12.tmp",
        tmp_path / ".m.onnx.quantkit-99999999999-ab.tmp",
    ]
    for path in users:
        path.write_bytes(b"the user's")
    os.link(out, tmp_path / ".m.onnx.quantkit-123-0.old.bak")
    files.write_set([(tmp_path / "x.json", b"{}")])  # moments after, and another output
    assert all(p.exists() for p in (staged, aside, only, running, other))

    later = file_undo.time.time() + file_undo.STALE_S + 1
    monkeypatch.setattr(file_undo.time, "time", lambda: later)
    files.write_atomic(out, b"later")
    assert out.read_bytes() == b"later" and not staged.exists() and not aside.exists()
    assert only.read_bytes() == b"renamed aside" and running.exists() and other.exists()
    assert all(path.read_bytes() == b"the user's" for path in users)
    assert (tmp_path / ".m.onnx.quantkit-123-0.old.bak").exists()


def test_a_long_name_of_many_bytes_still_gets_its_staged_file(tmp_path: Path) -> None:
    """hq105 F11: 59 emoji + .onnx (241 bytes, a legal name) failed 'File name too long': the name kept in
    the staged file's was cut by characters, not bytes."""
    from quantkit import files

    out = tmp_path / ("\U0001f600" * 59 + ".onnx")
    files.write_atomic(out, b"model")
    files.write_set([(out, b"again")])
    assert out.read_bytes() == b"again" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_pipe_named_like_a_table_is_not_opened_to_be_read(tmp_path: Path) -> None:
    """Reading a report path's first bytes (is it a table, an image?) waited for ever on a pipe with no
    writer: the hq98 F2 step-summary pipe named summary.json, and the report check of a photo (hq98 F7)
    on any pipe."""
    import subprocess
    import sys

    for name in ("summary.json", "summary.md"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        probe = "from pathlib import Path; from quantkit import files; "
        probe += f"files.refuse_over_artifact('x', Path({str(fifo)!r}))"
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr


def test_outputs_take_the_umask_of_the_moment_they_are_written(tmp_path: Path) -> None:
    """hq103 F2: the mode was worked out from the umask once, at import: a service that set a private
    umask (077) afterwards got world-readable tables and models (0644)."""
    from quantkit import files

    for mask, mode in ((0o077, 0o600), (0o022, 0o644), (0o002, 0o664)):
        earlier = os.umask(mask)
        try:
            files.write_atomic(tmp_path / f"a{mask}.json", b"{}")
            files.write_set([(tmp_path / f"b{mask}.onnx", b"x"), (tmp_path / f"b{mask}.npz", b"y")])
        finally:
            os.umask(earlier)
        for name in (f"a{mask}.json", f"b{mask}.onnx", f"b{mask}.npz"):
            assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_a_tables_arrays_never_replace_a_file_no_table_owns(tmp_path: Path, image_dir: Path) -> None:
    """hq105 F1: `calibrate -o sample.json` replaced the user's model-ready sample.npz beside it."""
    import numpy as np

    from quantkit import pipeline
    from quantkit.config import CalibrateConfig, ImageSelection
    from quantkit.errors import OutputError

    model = tiny_cnn(tmp_path / "cnn.onnx")
    sample = tmp_path / "sample.npz"
    np.savez(sample, x=np.zeros((3, 16, 16), np.float32))
    held = sample.read_bytes()
    config = CalibrateConfig(images=ImageSelection(image_dir))
    with pytest.raises(
        OutputError, match=r"sample.npz would replace a ZIP archive .* that no calibration table"
    ):
        pipeline.calibrate(model, tmp_path / "sample.json", config)
    assert sample.read_bytes() == held and not (tmp_path / "sample.json").exists()
    pipeline.calibrate(model, tmp_path / "t.json", config)  # a table's own arrays are replaced as asked
    pipeline.calibrate(model, tmp_path / "t.json", config)


def test_an_output_folder_swapped_for_a_link_to_the_inputs_is_refused_at_the_rename(
    image_dir: Path, tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq100 F2: the check before any work passed, then the output's folder was replaced by a link to the
    model's folder while convert ran: the INT8 model was renamed over its FP32 input, exit 0, no word.
    Each write asks again at its rename (file_inputs); the input stays, nothing lands, one line."""
    from quantkit import files

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    model = tiny_cnn(src / "m.onnx")
    table = tmp_path / "t.calib.json"
    assert run(["calibrate", str(model), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    before = model.read_bytes()
    staged = files._staged

    def swap_then_stage(path: Path, data: bytes) -> str:
        if path.parent == out and out.is_dir() and not out.is_symlink():
            out.rmdir()
            out.symlink_to(src)  # what a script cleaning the output folder mid-run might do
        return staged(path, data)

    monkeypatch.setattr(files, "_staged", swap_then_stage)
    code, _, err = run(["convert", str(model), "-c", str(table), "-o", str(out / "m.onnx")], capsys)
    assert_one_line_error(code, err, f"the output {out / 'm.onnx'} now names the input {model}")
    assert model.read_bytes() == before
    assert sorted(p.name for p in src.iterdir()) == ["m.onnx"]  # no staged file left either


def test_a_later_command_may_write_over_an_earlier_commands_input(tmp_path: Path) -> None:
    """The inputs guarded are the latest check's: a pipeline that converts a -> b, then writes a new a
    from c, is not refused."""
    from quantkit import files

    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    for path in (a, c):
        path.write_bytes(b"model")
    files.check_output(b, a)
    files.write_atomic(b, b"one")
    files.check_output(a, c)
    files.write_atomic(a, b"two")
    assert a.read_bytes() == b"two" and c.read_bytes() == b"model"
    with pytest.raises(files.OutputError, match="now names the input"):
        files.write_atomic(c, b"three")  # c is this check's input (no check_output would let it by)
    assert c.read_bytes() == b"model"


def test_shrink_into_a_dash_makes_no_folder_named_dash(
    tmp_path: Path, image_dir: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq146 F10: --output-dir - made a folder named '-' (reports take '-' as stdout elsewhere)."""
    monkeypatch.chdir(tmp_path)
    model = tiny_cnn(tmp_path / "m.onnx")
    code, _, err = run(["shrink", str(model), "--images", str(image_dir), "--output-dir", "-", *FAST], capsys)
    assert_one_line_error(code, err, "--output-dir - would be a folder named '-'")
    assert not (tmp_path / "-").exists()
