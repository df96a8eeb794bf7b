"""compare's figures where an output is zero, NaN or Inf, or its models list outputs in another order (hq74):
each figure true, never a flattering one."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.evaluate.output_errors import OutputErrors
from quantkit.evaluate.sanity import ReferenceCheck
from quantkit.pipeline.loading import model_bytes
from quantkit.reports import formats
from tests.conftest import tiny_cnn
from tests.helpers import assert_one_line_error, run

Capsys = pytest.CaptureFixture[str]


def _errors(ref: np.ndarray, cand: np.ndarray) -> OutputErrors:
    errors = OutputErrors("y", values=True)
    errors.update(ref.astype(np.float32), cand.astype(np.float32))
    return errors


def test_a_candidate_of_zeros_is_no_perfect_cosine() -> None:
    """hq74 1 and 2: a dead candidate (all zeros) read cosine 1.00000 with no warning, and images a
    candidate zeroed counted as perfect, so 'mostly noise on some images' never fired."""
    ref = np.random.default_rng(0).normal(size=(4, 10))
    dead = _errors(ref, np.zeros_like(ref)).result()
    assert dead.cosine == 0.0 and dead.noise_images == 4 and dead.sqnr_db == 0.0
    zeroed = ref.copy()
    zeroed[1:3] = 0.0
    some = _errors(ref, zeroed).result()
    assert some.noise_images == 2 and some.cosine == pytest.approx(0.5)
    both = _errors(np.zeros((2, 3)), np.zeros((2, 3))).result()  # no direction to agree with
    assert math.isnan(both.cosine) and both.noise_images == 0 and both.sqnr_db == math.inf
    empty = np.zeros((10, 6))
    empty[0] = ref[0, :6]  # FP32 empty on 9 of 10 images (hq77 3: a dead candidate read 0.90)
    assert _errors(empty, np.zeros_like(empty)).result().cosine == 0.0
    pooled = OutputErrors("p", values=True)  # one value an image: the pooled cosine
    pooled.update(np.ones((3, 1), np.float32), np.zeros((3, 1), np.float32))
    assert pooled.result().cosine == 0.0


def test_nan_in_the_candidate_is_never_a_zero_error() -> None:
    """hq74 3: Python's max(0.0, nan) made a NaN output's largest error 0.0 and its cosine 1.0."""
    ref = np.random.default_rng(1).normal(size=(3, 6))
    cand = ref.copy()
    cand[1, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # hq74 9: numpy's RuntimeWarnings reached the terminal
        figures = _errors(ref, cand).result()
        inf = ref.copy()
        inf[0, 0] = np.inf
        infinite = _errors(ref, inf).result()
    assert math.isnan(figures.max_abs_error) and math.isnan(figures.cosine)
    assert figures.sqnr_db == -math.inf and figures.noise_images == 1
    assert infinite.max_abs_error == math.inf and infinite.noise_images == 1
    later = OutputErrors("y", values=True)
    later.update(ref.astype(np.float32), ref.astype(np.float32))
    first = OutputErrors("y", values=True)
    first.update(ref.astype(np.float32), cand.astype(np.float32))
    first.merge(later)
    assert math.isnan(first.result().max_abs_error)


def test_a_nan_fp32_writes_itself_is_fp32s_finding_not_the_candidates_error() -> None:
    """hq74 4: the same graph twice, NaN where FP32 takes a square root of a negative, measured -inf dB
    with 'the candidate's error is larger than the output itself' (then) and no finding about FP32."""
    ref = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    ref[[0, 3], 1] = np.nan
    figures = _errors(ref, ref.copy()).result()
    assert figures.sqnr_db == math.inf and figures.cosine == 1.0 and figures.max_abs_error == 0.0
    check = ReferenceCheck(inputs_from_images=False)
    check.update(np.zeros((5, 1), np.float32), {"y": ref})
    later = ReferenceCheck(inputs_from_images=False)
    later.update(np.zeros((1, 1), np.float32), {"y": ref[:1]})
    check.merge(later)
    assert [f for f in check.findings() if "NaN" in f] == [
        "FP32's output 'y' is NaN on 3 of 6 image(s): the model or what it is fed is broken there, not the "
        "conversion (those values are left out of the figures); check --preset, --mean/--std (0-255 "
        "units), --bgr and --resize"
    ]
    finite = ref.copy()  # hq115 F7: a finite candidate where FP32 alone is NaN read -inf dB, 'broken here'
    finite[[0, 3], 1] = 1.0
    assert _errors(ref, finite).result().sqnr_db == math.inf
    nothing = np.full_like(ref, np.nan)  # hq116 F1: FP32 NaN everywhere read 'inf dB', a passed gate
    assert math.isnan(_errors(nothing, finite).result().sqnr_db)


def test_figures_short_of_all_never_print_as_all() -> None:
    """hq74 8: 8 of 2.5 million mask elements apart printed '100.00%'; hq74 5: an FP32 output of zeros
    measured '-inf dB (NaN or Inf outputs)' where neither model gave one."""
    assert formats.percent(0.9999967) == ">99.99%" and formats.percent(1.0) == "100.00%"
    assert formats.percent(0.5) == "50.00%" and formats.percent(None) == "-"
    assert formats.cosine(0.999996) == ">0.99999" and formats.cosine(1.0) == "1.00000"
    assert formats.cosine(math.nan) == "n/a"
    assert formats.decibels(-math.inf) == "-inf dB (NaN/Inf outputs, or FP32's all zero)"


def test_model_size_counts_external_data_of_constant_nodes(tmp_path: Path) -> None:
    """hq74 6: a model whose Constant nodes hold external data read 299x smaller than itself."""
    weight = np.random.default_rng(3).normal(size=(64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(weight, "w")),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        location="m.data",
        size_threshold=0,
        convert_attribute=True,
    )
    data = tmp_path / "m.data"
    assert data.stat().st_size >= weight.nbytes
    assert model_bytes(path) == path.stat().st_size + data.stat().st_size


def _reordered(source: Path, target: Path, rename: bool = False) -> Path:
    model = onnx.load(str(source))
    model.graph.node.append(helper.make_node("Relu", ["y"], ["z"], name="second"))
    model.graph.output.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
    if target.name.startswith("swapped"):
        first, second = onnx.ValueInfoProto(), onnx.ValueInfoProto()
        first.CopyFrom(model.graph.output[0])
        second.CopyFrom(model.graph.output[1])
        del model.graph.output[:]
        model.graph.output.extend([second, first])
    if rename:
        model.graph.node[-1].output[0] = "w"
        model.graph.output[-1].name = "w"
    onnx.save(model, str(target))
    return target


def test_the_same_outputs_in_another_order_are_compared(tmp_path: Path, capsys: Capsys) -> None:
    """hq74 10: a re-export listing the same outputs in another order was refused as 'the models'
    outputs differ'; outputs that do differ are named."""
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    first = _reordered(cnn, tmp_path / "two.onnx")
    swapped = _reordered(cnn, tmp_path / "swapped.onnx")
    folder = tmp_path / "arrays"
    folder.mkdir()
    for k in range(3):
        np.save(folder / f"{k}.npy", np.random.default_rng(k).normal(size=(1, 3, 16, 16)).astype(np.float32))
    code, out, err = run(
        ["compare", str(first), str(swapped), "--inputs", str(folder), "--runs", "0"], capsys
    )
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith((" y ", " z "))]
    assert [row[:4] for row in rows] == [["y", "│", "inf", "│"], ["z", "│", "inf", "│"]]
    renamed = _reordered(cnn, tmp_path / "renamed.onnx", rename=True)
    code, _, err = run(["compare", str(first), str(renamed), "--inputs", str(folder), "--runs", "0"], capsys)
    assert_one_line_error(
        code, err, "the models' outputs differ (only the first has ['z']; only the second has ['w'])"
    )


def test_a_set_of_files_is_written_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq73 3: a full disk or an interrupt between two files of a set (a table's .npz and .json, compare's
    --json and --markdown) left the first file new beside the second one old, under 'nothing was
    written'; the table then failed every convert."""
    import errno
    import os

    from quantkit import files
    from quantkit.errors import OutputError

    first, second = tmp_path / "t.calib.npz", tmp_path / "t.calib.json"
    first.write_bytes(b"old npz")
    replace = os.replace
    for failure in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        calls: list[object] = []

        def failing(
            src: str, dst: object, error: BaseException = failure, calls: list[object] = calls
        ) -> None:
            calls.append(dst)
            if dst == second:
                raise error
            replace(src, dst)  # type: ignore[arg-type]

        monkeypatch.setattr(files.os, "replace", failing)
        with pytest.raises((OutputError, KeyboardInterrupt)) as raised:
            files.write_set([(first, b"new npz"), (second, b"new json")])
        monkeypatch.setattr(files.os, "replace", replace)
        assert first in calls and first.read_bytes() == b"old npz" and not second.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.calib.npz"]  # nothing staged left
        if isinstance(raised.value, OutputError):
            assert str(raised.value) == (
                f"writing {second} failed (No space left on device); nothing was written"
            )
    files.write_set([(first, b"new npz"), (second, b"new json")])
    assert (first.read_bytes(), second.read_bytes()) == (b"new npz", b"new json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.calib.json", "t.calib.npz"]


def test_an_interrupt_in_any_rename_of_a_set_puts_the_earlier_files_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq76 1, 2: an interrupt raised right after the rename that put the earlier file aside (as CPython
    raises one that lands in a system call) lost that file, hidden as .NAME.PID.old; a rollback removed a
    symlinked output instead of putting the link back."""
    import os

    from quantkit import files

    store = tmp_path / "store"
    store.mkdir()
    (store / "arrays.npz").write_bytes(b"shared npz")
    folder = tmp_path / "out"
    folder.mkdir()
    link, table = folder / "t.calib.npz", folder / "t.calib.json"
    link.symlink_to(store / "arrays.npz")
    table.write_bytes(b"old json")
    replace, hard_link = os.replace, os.link
    for nth in range(1, 5):  # every link and rename of the two-file set, the interrupt after it happened
        done: list[int] = []

        def after(call: Any, nth: int = nth, done: list[int] = done) -> Any:
            def interrupted(src: str, dst: object, **options: object) -> None:
                call(src, dst, **options)
                done.append(1)
                if len(done) == nth:
                    raise KeyboardInterrupt

            return interrupted

        monkeypatch.setattr(files.os, "replace", after(replace))
        monkeypatch.setattr(files.os, "link", after(hard_link))
        with pytest.raises(KeyboardInterrupt):
            files.write_set([(link, b"new npz"), (table, b"new json")])
        monkeypatch.setattr(files.os, "replace", replace)
        monkeypatch.setattr(files.os, "link", hard_link)
        assert link.is_symlink() and link.read_bytes() == b"shared npz", nth
        assert table.read_bytes() == b"old json", nth
        assert sorted(p.name for p in folder.iterdir()) == ["t.calib.json", "t.calib.npz"], nth
    assert (store / "arrays.npz").read_bytes() == b"shared npz"


def test_the_output_path_holds_a_whole_file_at_every_instant_of_a_set(tmp_path: Path) -> None:
    """hq100 F4: the earlier file was renamed aside before the new one was renamed in, and a SIGKILL
    between the two left no file at the output's path; it is kept aside as a second hard link now."""
    import os

    from quantkit import files

    first, second = tmp_path / "a.onnx", tmp_path / "t.calib.json"
    first.write_bytes(b"old model")
    second.write_bytes(b"old json")
    seen: list[bytes] = []
    replace = os.replace

    def watching(src: str, dst: object) -> None:
        if str(src).endswith(".tmp"):  # the new file's rename: what is at the path until then
            seen.append(Path(str(dst)).read_bytes())
        replace(src, dst)  # type: ignore[arg-type]

    files.os.replace = watching  # type: ignore[assignment]
    try:
        files.write_set([(first, b"new model"), (second, b"new json")])
    finally:
        files.os.replace = replace
    assert seen == [b"old model", b"old json"]
    assert (first.read_bytes(), second.read_bytes()) == (b"new model", b"new json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "t.calib.json"]  # no aside left


def test_an_undo_the_disk_refuses_says_where_the_earlier_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq100 F6: a disk failing every rename from one on (EIO: dying, remounted read-only) left a new
    .npz beside the old .json and the old .npz hidden aside, under 'nothing was written'."""
    import errno
    import os

    from quantkit import files
    from quantkit.errors import OutputError

    npz, table = tmp_path / "t.calib.npz", tmp_path / "t.calib.json"
    npz.write_bytes(b"old npz")
    table.write_bytes(b"old json")
    replace, calls = os.replace, []

    def failing(src: str, dst: object, **options: object) -> None:
        calls.append(1)
        if len(calls) >= 2:  # the first rename goes in; from the second on the disk refuses
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        replace(src, dst, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "replace", failing)
    with pytest.raises(OutputError) as raised:
        files.write_set([(npz, b"new npz"), (table, b"new json")])
    monkeypatch.setattr(files.os, "replace", replace)
    asides = [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
    assert len(asides) == 1 and asides[0].read_bytes() == b"old npz" and npz.read_bytes() == b"new npz"
    assert str(raised.value) == (
        f"writing {table} failed (Input/output error), and the earlier files could not all be put back: "
        f"{npz} is kept as {asides[0]}; check the disk, then rename them back"
    )
    npz.write_bytes(b"old npz")
    os.unlink(asides[0])
    calls[:] = [1]  # every rename refused: nothing went in, nothing is left aside
    monkeypatch.setattr(files.os, "replace", failing)
    with pytest.raises(OutputError, match=r"; nothing was written$"):
        files.write_set([(npz, b"new npz"), (table, b"new json")])
    assert (npz.read_bytes(), table.read_bytes()) == (b"old npz", b"old json")


def test_fp32_zero_images_have_no_cosine_and_a_dead_candidate_is_called_broken() -> None:
    """hq76 5: images where FP32's output is all zero (a ReLU map, an empty mask) and the candidate's a
    little off zero read cosine 0, and a 59 dB output 'mostly noise on 4 images'; hq74 1: a candidate of
    zeros measures exactly 0.0 dB, and neither 'broken' warning fired below 0 dB only."""
    from quantkit.evaluate.figure_warnings import broken_output, unrelated

    ref = np.random.default_rng(4).normal(size=(6, 8))
    ref[2:4] = 0.0
    cand = ref + 1e-4
    figures = _errors(ref, cand).result()
    assert figures.noise_images == 0 and figures.cosine == pytest.approx(1.0, abs=1e-6)
    dead = _errors(ref, np.zeros_like(ref)).result()
    assert dead.sqnr_db == 0.0
    line = broken_output(dead)
    assert line is not None and "the candidate's error is at least as large as the output itself" in line
    assert unrelated([dead]) is not None and broken_output(figures) is None and unrelated([figures]) is None
    import dataclasses

    labels = dataclasses.replace(dead, labels=True, top1_agreement=0.875)  # hq110 F5: an ArgMax's ids
    assert unrelated([labels]) is None and unrelated([labels, dead]) is not None


def test_a_second_interrupt_during_the_undo_still_puts_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq77 1, 2: an interrupt in the check after staging a file left the staged copy behind; a second
    Ctrl-C during the undo left the earlier file aside, nothing at its path."""
    import os

    from quantkit import files

    first, second = tmp_path / "t.calib.npz", tmp_path / "t.calib.json"
    first.write_bytes(b"old npz")
    second.write_bytes(b"old json")
    replace, hard_link, lexists = os.replace, os.link, os.path.lexists
    state = {"renames": 0, "checks": 0}

    def moved(call: Any) -> Any:
        def counted(src: str, dst: object, **options: object) -> None:
            call(src, dst, **options)
            state["renames"] += 1  # links and renames alike
            if state["renames"] == 3:  # the second file put aside: the first Ctrl-C
                raise KeyboardInterrupt

        return counted

    def checked(name: object) -> bool:
        found = lexists(name)  # type: ignore[arg-type]
        if state["renames"] >= 3:
            state["checks"] += 1
            if state["checks"] == 1:  # the undo's first look at the disk: the second Ctrl-C
                raise KeyboardInterrupt
        return found

    monkeypatch.setattr(files.os, "replace", moved(replace))
    monkeypatch.setattr(files.os, "link", moved(hard_link))
    monkeypatch.setattr(files.os.path, "lexists", checked)
    with pytest.raises(KeyboardInterrupt):
        files.write_set([(first, b"new npz"), (second, b"new json")])
    monkeypatch.undo()
    assert (first.read_bytes(), second.read_bytes()) == (b"old npz", b"old json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.calib.json", "t.calib.npz"]


def test_an_output_below_converts_floor_is_called_out() -> None:
    """hq80 1: a PAN segmenter written at 11.0 dB (the samples its corrections were fitted to) measured
    6.7 dB held out, mask IoU 0.70, and compare said nothing: only 0 dB and below was called broken."""
    import dataclasses

    from quantkit.evaluate.figure_warnings import broken_output

    g = np.random.default_rng(7)
    ref = g.normal(size=(6, 64))
    coarse = _errors(ref, ref + 0.45 * g.normal(size=ref.shape)).result()
    assert 0.0 < coarse.sqnr_db < 10.0
    line = broken_output(coarse)
    assert line is not None and "below the 10 dB under which convert calls a model broken" in line
    fine = _errors(ref, ref + 0.2 * g.normal(size=ref.shape)).result()
    assert fine.sqnr_db > 10.0 and broken_output(fine) is None
    assert broken_output(dataclasses.replace(coarse, detection_recall=0.97)) is None  # boxes judge it
    # hq81 H1: class scores that their top-1 agreement judges (logits x 0.4: 4.4 dB, 100 % agreement);
    # H2: a --detector head's other outputs, which its boxes' figure reads
    assert broken_output(dataclasses.replace(coarse, top1_agreement=1.0)) is None
    assert broken_output(coarse, judged=True) is None


def test_one_image_that_stands_apart_is_named_and_a_spread_is_not() -> None:
    """hq106 F1: a retouching net cast one bright photo green (11.4 dB) while the other 23 read 26-33 dB
    and compare said one pooled 24.4 dB, nothing else. A healthy classifier's worst of 200 images sits far
    below its median too, but close to the next worst: not named."""
    from quantkit.evaluate.figure_warnings import image_hidden
    from quantkit.evaluate.output_errors import worst_image
    from quantkit.outcomes import OutputMetrics

    def power(dbs: list[float], signal: float = 1.0) -> list[tuple[float, float]]:
        return [(signal, signal / 10 ** (db / 10)) for db in dbs]

    rng = np.random.default_rng(0)
    rest = list(rng.uniform(26.0, 33.0, 23))
    found = worst_image(power([*rest[:5], 11.4, *rest[5:]]))
    assert found is not None and found[0] == 5 and found[1] == pytest.approx(11.4)
    spread = sorted(rng.normal(36.0, 3.0, 200))
    spread[:3] = [22.0, 22.8, 25.4]  # SqueezeNet's worst three of 200: a tail, nobody apart
    assert worst_image(power(spread)) is None
    assert worst_image(power([*rest[:6], 11.4])) is None  # too few images to tell
    # hq137 F8: the image carrying the noise pulls the pooled figure (16.59 dB) to within 10 dB of
    # itself; the other 11 images pool to 36 dB
    twelve = [38.0, 35.4, 37.2, 11.95, 37.0, 37.0, 36.3, 35.6, 33.1, 35.3, 39.3, 42.0]
    brighter = [*power(twelve[:3]), *power([11.95], 4.0), *power(twelve[4:])]  # its output the largest
    found = worst_image(brighter)
    assert found is not None and found[0] == 3 and found[1] == pytest.approx(11.95)
    quiet = [*power(rest), (1e-4, 1e-4 / 10**1.14)]  # its output nearly empty: the noise warning's
    assert worst_image(quiet) is None
    m = OutputMetrics("y", 24.4, 0.999, 0.3, worst_image=(5, 11.4, 29.5))
    line = image_hidden(m, [f"{k}.jpg" for k in range(24)])
    assert line is not None and line.startswith(
        "output 'y' measures 24.4 dB pooled over all images, but 11.4 dB on 5.jpg on its own, where the "
        "other images pool to 29.5 dB"
    )
    fine = OutputMetrics("y", 52.0, 1.0, 0.01, worst_image=(5, 36.8, 55.0))  # hq111 F2: a float16 model's
    assert image_hidden(fine, [f"{k}.jpg" for k in range(24)]) is None


def test_the_image_named_is_the_one_compared_by_its_place_in_the_folder() -> None:
    """hq108 F1: after an unreadable file the next image was named (the index counted images read, the
    names every file); F8: a/img_3.jpg and b/img_3.jpg were both 'img_3.jpg'; F2: the rows of an output
    without a batch axis were named as images ('sample 2117' of 61)."""
    from quantkit.pipeline.compare_chunks import shown_names

    folder = Path("/data/imgs")
    paths = [folder / "a" / "img_0a.jpg", folder / "a" / "img_3.jpg", folder / "b" / "img_3.jpg"]
    skipped = [(paths[0], "not a decodable image")]
    assert shown_names(paths, skipped, folder) == ["a/img_3.jpg", "b/img_3.jpg"]
    rng = np.random.default_rng(0)
    errors = OutputErrors("y")
    for k in range(12):  # 12 images, one far worse than the rest
        ref = rng.normal(size=(1, 64)).astype(np.float32)
        noise = rng.normal(size=(1, 64)).astype(np.float32) * (0.5 if k == 7 else 0.01)
        errors.update(ref, ref + noise)
    assert errors.result(images=12).worst_image is not None
    assert errors.result(images=12).worst_image[0] == 7  # type: ignore[index]
    assert errors.result(images=3).worst_image is None  # 12 rows of 3 images: no row is an image


def test_reports_name_paths_under_the_home_folder_from_tilde(monkeypatch: pytest.MonkeyPatch) -> None:
    """hq107 F10: shrink's report.json, shared as a CI artifact, named $HOME/.cache/quantkit/... (the
    user's name on a workstation)."""
    from quantkit.strict_json import home_folder, json_safe

    record = {
        "table": "/home/ana/.cache/quantkit/calibration/k.calib.json",
        "other": ["/home/anabel/m.onnx", 1.0],
    }
    assert json_safe(record, "/home/ana") == {
        "table": "~/.cache/quantkit/calibration/k.calib.json",
        "other": ["/home/anabel/m.onnx", 1.0],
    }
    assert json_safe({"x": float("inf")}, "") == {"x": "inf"}
    monkeypatch.setenv("HOME", "/")
    assert home_folder() == ""  # nothing to shorten: every path would be under it


def test_a_comparison_records_what_it_is_of(tmp_path: Path, image_dir: Path) -> None:
    """hq107 F4: --seed 0 and 1 gave other figures under the same recorded settings, and neither model
    nor the image set was named but by the paths typed."""
    import hashlib

    import quantkit
    from tests.conftest import tiny_cnn

    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    first = quantkit.compare(cnn, cnn, data=image_dir, num_images=4, seed=1, runs=0).to_dict()["settings"]
    second = quantkit.compare(cnn, cnn, data=image_dir, num_images=4, seed=2, runs=0).to_dict()["settings"]
    sha = hashlib.sha256(cnn.read_bytes()).hexdigest()
    assert first["reference_sha256"] == first["candidate_sha256"] == sha
    assert (first["seed"], second["seed"]) == (1, 2)
    assert first["images_list_sha256"] != second["images_list_sha256"]
    assert first["preprocess_source"] == "defaults"


def test_a_table_made_with_other_versions_is_said_so_and_the_model_records_its_own(
    tmp_path: Path, image_dir: Path
) -> None:
    """hq107 F8: a table edited to look made with onnxruntime 1.16.3 and quantkit 0.0.9 converted without
    a word, and the model recorded quantkit's version alone."""
    import json

    import onnx

    from quantkit import pipeline
    from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection
    from quantkit.runtime import versions
    from tests.conftest import tiny_cnn

    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    table = tmp_path / "t.calib.json"
    pipeline.calibrate(cnn, table, CalibrateConfig(ImageSelection(image_dir)))
    here = pipeline.convert(cnn, table, tmp_path / "a.onnx", ConvertConfig())
    assert not [n for n in here.notes if "the table was made with" in n]
    meta = {p.key: p.value for p in onnx.load(tmp_path / "a.onnx").metadata_props}
    assert json.loads(meta["quantkit.versions"]) == versions()
    record = json.loads(table.read_text())
    record["meta"]["versions"] = {**record["meta"]["versions"], "onnxruntime": "1.16.3"}
    table.write_text(json.dumps(record))
    elsewhere = pipeline.convert(cnn, table, tmp_path / "b.onnx", ConvertConfig())
    said = [
        n for n in elsewhere.notes if n.startswith("the table was made with onnxruntime 1.16.3 (this run: ")
    ]
    assert len(said) == 1, elsewhere.notes
    for broken in (None, "1.0", ["quantkit"], 3):  # hq108 F3: a hand-edited record was an internal error
        record["meta"]["versions"] = broken
        table.write_text(json.dumps(record))
        result = pipeline.convert(cnn, table, tmp_path / "c.onnx", ConvertConfig())
        assert not [n for n in result.notes if "the table was made with" in n]


def test_json_files_write_home_paths_as_tilde_and_the_api_keeps_paths_it_can_open(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq108 F7: sensitivity's --json still named /home/<user>/..., and the API's to_dict() gave '~/...'
    paths that pathlib cannot open."""
    import json

    import quantkit
    from tests.conftest import tiny_cnn
    from tests.helpers import run

    monkeypatch.setenv("HOME", str(tmp_path))
    cnn = tiny_cnn(tmp_path / "cnn.onnx")
    assert quantkit.compare(cnn, cnn, data=image_dir, runs=0).to_dict()["reference"] == str(cnn)
    table = tmp_path / "t.calib.json"
    assert run(["calibrate", str(cnn), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    for argv in (
        ["compare", str(cnn), str(cnn), "--images", str(image_dir), "--runs", "0"],
        ["sensitivity", str(cnn), "-c", str(table), "--images", str(image_dir)],
    ):
        report = tmp_path / f"{argv[0]}.json"
        code, _, err = run([*argv, "--json", str(report)], capsys)
        assert code == 0, err
        text = report.read_text()
        assert str(tmp_path) not in text and ('"~/' in text or argv[0] == "sensitivity"), text[:400]
        json.loads(text)


def test_a_candidate_replaced_while_compare_runs_is_refused(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq122 F1: the candidate replaced by another model mid-run gave the first file's sha256 and SQNR
    beside the second one's size and latency (1.01x where each alone measured 1.9x), exit 0."""
    from quantkit.pipeline import run_compare

    reference, candidate = tiny_cnn(tmp_path / "ref.onnx"), tiny_cnn(tmp_path / "cand.onnx", seed=1)
    other = tiny_cnn(tmp_path / "other.onnx", seed=2)
    timed = run_compare._timed

    def replacing(*args: Any, **kwargs: Any) -> Any:
        other.replace(candidate)  # another job publishes its model where compare reads its candidate
        return timed(*args, **kwargs)

    monkeypatch.setattr(run_compare, "_timed", replacing)
    report = tmp_path / "c.json"
    argv = ["compare", str(reference), str(candidate), "--images", str(image_dir), "--runs", "3"]
    code, _, err = run([*argv, "--json", str(report)], capsys)
    assert_one_line_error(code, err, f"{candidate} changed while compare ran (another process wrote or")
    assert not report.exists()
    monkeypatch.setattr(run_compare, "_timed", timed)
    assert run([*argv, "--json", str(report)], capsys)[0] == 0  # nothing writes it now


def test_an_output_without_the_batch_axis_is_one_images_not_a_row_each() -> None:
    """hq133 F4: an output [A, 4] (RetinaFace-style exports write anchors with no batch axis) was split
    into A 'images': on 40 images compare said 'on 1883 image(s) on their own it is mostly noise', a
    cosine of 0.281 beside 41.6 dB. One run's output is its image's, whole."""
    g = np.random.default_rng(0)
    errors = OutputErrors("loc")
    for _ in range(5):  # five images, one a run; 3/4 of the anchors near 0, as background ones are
        ref = g.normal(0, 1, (1024, 4)) * np.r_[np.ones(256), np.full(768, 1e-3)][:, None]
        cand = ref + g.normal(0, 0.01, ref.shape)
        errors.update(ref, cand, 1)
    result = errors.result()
    assert result.noise_images == 0 and result.cosine > 0.99 and result.sqnr_db > 30
    rows = OutputErrors("loc")  # unknown images: its rows, as before
    rows.update(ref, cand)
    assert rows.result().noise_images > 100


def test_what_changes_between_images_of_an_output_without_the_batch_axis_is_measured() -> None:
    """hq137 F1: loc [20, 4] of one image a run: its rows were read as images, and what changes between
    images (-0.76 dB) went unmeasured: no warning, and --min-eval-sqnr 20 passed at the pooled 30.06 dB."""
    from quantkit.evaluate.variation import Variation

    g = np.random.default_rng(0)
    steady = g.normal(0, 1, (20, 4)) * 30  # the same on every image; what changes is small and noisy
    whole, rows = Variation(), Variation()
    for _ in range(8):
        ref = steady + g.normal(0, 0.1, (20, 4))
        cand = steady + g.normal(0, 0.1, (20, 4))
        whole.update(ref, cand, 1)
        rows.update(ref, cand)
    assert whole.varying_db() is not None and whole.varying_db() < 3.0
    assert rows.varying_db() is None or rows.varying_db() > 20.0  # rows of one image: another spread


def test_fp32_nan_scores_rank_nothing_in_top1_agreement() -> None:
    """hq137 F2: rows where FP32's scores are NaN counted in top-1 agreement (the warning says NaN values are
    left out): 60 % where the finite rows agreed on 20 %, and --max-drop 50 passed at 40 points."""
    g = np.random.default_rng(1)
    ref = g.normal(0, 1, (10, 5))
    cand = ref.copy()
    cand[2:] = -ref[2:]  # the finite rows 2..9 disagree, rows 0..1 agree
    ref[5:, 0] = np.nan  # FP32 NaN in rows 5..9: they rank nothing (their argmax read the NaN as 0)
    cand[5:, 0] = 100.0  # and where the candidate's is 0 too, they read as agreeing: 70 %
    errors = OutputErrors("y")
    errors.update(ref, cand, 10)
    result = errors.result()
    assert result.top1_agreement == pytest.approx(2 / 5)


def test_a_label_map_without_the_batch_axis_agrees_as_a_share_of_its_pixels() -> None:
    """hq138 F2: a label map [16, 64] of one image a run counted its agreement per row while the images
    were counted whole: 1588.12 % top-1 agree."""
    g = np.random.default_rng(0)
    errors = OutputErrors("labels", labelled=True)
    for _ in range(4):
        ref = g.integers(0, 5, (16, 64))
        cand = ref.copy()
        cand[0, :8] = (cand[0, :8] + 1) % 5  # 8 of 1024 pixels differ
        errors.update(ref, cand, 1)
    assert errors.result().top1_agreement == pytest.approx(1 - 8 / 1024)


def test_a_dynamically_quantized_model_is_compared_one_image_a_run(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq139 F1: DynamicQuantizeLinear takes one scale for the whole batch it runs in; compare ran 8 images
    at a time, so each image's figure depended on the others (12.45 dB, 89.8 % for onnxruntime's
    quantize_dynamic MobileNetV2, 12.96 dB and 92.4 % one image at a time, as it is deployed)."""
    import json

    import onnxruntime as ort

    from quantkit.graph.model_inputs import batch_coupled

    model = tiny_cnn(tmp_path / "m.onnx")
    fp32 = onnx.load(str(model))
    dynamic = onnx.load(str(model))
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dq"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="deq"),
    ]
    for node in dynamic.graph.node:
        node.input[:] = ["xd" if n == "x" else n for n in node.input]
    dynamic.graph.node.insert(0, nodes[1])
    dynamic.graph.node.insert(0, nodes[0])
    onnx.save(dynamic, str(tmp_path / "dyn.onnx"))
    assert batch_coupled(dynamic) and not batch_coupled(fp32)
    report = tmp_path / "c.json"
    argv = ["compare", str(model), str(tmp_path / "dyn.onnx"), "--images", str(image_dir), "--runs", "0"]
    code, _, err = run([*argv, "--json", str(report)], capsys)
    assert code == 0, err
    measured = json.loads(report.read_text())["outputs"][0]["sqnr_db"]
    from quantkit.config import Preprocess
    from quantkit.image_folders import find_images
    from quantkit.images import ImageLoader

    table = json.loads(report.read_text())
    pre = Preprocess.from_dict(table["settings"]["preprocess"])
    a, b = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for p in (model, tmp_path / "dyn.onnx")
    )
    signal = noise = 0.0
    for batch in ImageLoader(find_images(image_dir), pre, 1):
        r, c = a.run(None, {"x": batch.data})[0], b.run(None, {"x": batch.data})[0]
        signal, noise = signal + float(np.sum(r**2)), noise + float(np.sum((r - c) ** 2))
    assert measured == pytest.approx(10 * np.log10(signal / noise), abs=0.01)


def test_an_output_of_no_elements_measures_nothing_not_infinite_db() -> None:
    """hq137 F7: a Slice to nothing ([N, 0], or a batchless [0, 6]) read 'inf' dB and passed
    --min-eval-sqnr though nothing was compared."""
    for shape in ((4, 0), (0, 6)):
        m = _errors(np.zeros(shape), np.zeros(shape)).result(images=4)
        assert math.isnan(m.sqnr_db) and math.isnan(m.max_abs_error), shape


def test_the_json_gives_no_element_figures_of_class_ids(tmp_path: Path) -> None:
    """hq137 F5: the console showed '-' for an ArgMax's output while the JSON carried 9.09 dB and 9
    'mostly noise' images of class-id arithmetic."""
    from quantkit.outcomes import ComparisonResult, OutputMetrics

    ids = OutputMetrics("cls", 9.09, 0.9, 3.0, top1_agreement=0.9, labels=True, noise_images=9)
    scores = OutputMetrics("y", 30.0, 0.999, 0.1)
    result = ComparisonResult("a.onnx", "b.onnx", 10, (ids, scores), None, None, None, None, 1, 1, {}, {})
    cls, y = result.to_dict()["outputs"]
    assert [cls[k] for k in ("sqnr_db", "cosine", "max_abs_error", "noise_images")] == [None] * 4
    assert cls["top1_agreement"] == 0.9 and y["sqnr_db"] == 30.0 and y["noise_images"] == 0


@pytest.mark.parametrize(
    ("node", "coupled"),
    [
        (helper.make_node("ReduceSum", ["t"], ["y"], keepdims=0), True),  # every axis: the batch's too
        (helper.make_node("ReduceSum", ["t", "zero"], ["y"]), True),
        (helper.make_node("ReduceMean", ["t"], ["y"], axes=[0]), True),
        (helper.make_node("ReduceMean", ["t"], ["y"], axes=[1]), False),
        (helper.make_node("ReduceSum", ["t"], ["y"], noop_with_empty_axes=1), False),
        (helper.make_node("Softmax", ["t"], ["y"], axis=0), True),
        (helper.make_node("Softmax", ["t"], ["y"]), False),
        (helper.make_node("ArgMax", ["t"], ["y"]), True),  # axis 0 by default
        (helper.make_node("ArgMax", ["t"], ["y"], axis=1), False),
        (helper.make_node("ReduceMean", ["t"], ["y"], axes=[-2]), True),  # hq149 F3: axis 0 of a 2-D map
        (helper.make_node("ReduceMean", ["t"], ["y"], axes=[-1]), False),
        (helper.make_node("ReduceSum", ["weights"], ["y"], keepdims=0), False),  # F7: no batch there
        (helper.make_node("TopK", ["t", "one"], ["y", "i"]), False),  # hq148 F7: axis -1 by default
        (helper.make_node("Hardmax", ["t"], ["y"]), False),
    ],
)
def test_a_model_that_computes_across_the_batch_is_compared_one_image_a_run(
    node: onnx.NodeProto, coupled: bool
) -> None:
    """hq137 F3: y = ReduceSum over the whole output read 35.39 dB, cosine 0.99992, run over compare's
    batches of 8, where one image a run (as deployed at batch 1) reads 21.45 dB and is mostly noise."""
    from quantkit.graph.model_inputs import batch_coupled

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"]), node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [
            onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
            onnx.numpy_helper.from_array(np.ones(4, np.float32), "weights"),
            onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )
    assert (batch_coupled(helper.make_model(graph)) is not None) is coupled


def test_a_model_run_one_image_a_run_says_why_its_outputs_do_not_move(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq148 F5: a Softmax along axis 0, 1.0 on every image run alone, drew 'its input is likely wrong;
    check --preset, --mean/--std', and calibrate recorded --batch-size 8 as 1 without a word."""
    from tests.conftest import conv_params, make_model, save

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["h"], name="c0"),
        helper.make_node("GlobalAveragePool", ["h"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Softmax", ["f"], ["y"], name="sm", axis=0),
    ]
    path = save(make_model(nodes, conv_params(4, 3, k=1, seed=3)), tmp_path / "m.onnx")
    table = tmp_path / "m.calib.json"
    code, out, _ = run(["calibrate", str(path), "--images", str(image_dir), "-o", str(table)], capsys)
    said = "run one sample at a time: Softmax 'sm' computes across the batch axis, which a batch of several "
    said += "would change (--batch-size does not apply)"
    assert code == 0 and said in " ".join(out.split())
    code, _, err = run(["compare", str(path), str(path), "--images", str(image_dir)], capsys)
    lines = [line for line in err.splitlines() if "the same on all" in line]
    assert code == 0 and len(lines) == 1 and "likely wrong" not in lines[0]
    assert "each run alone as Softmax 'sm' computes across the batch axis" in lines[0]
    # hq160 F1: a candidate's DynamicQuantizeLinear runs both one image a run, but FP32's own steady
    # outputs are still its input's to explain
    weights = {**conv_params(4, 3, k=1, seed=3), "zero": np.zeros(1, np.float32)}
    steady = [*nodes[:3], helper.make_node("Mul", ["f", "zero"], ["y"], name="flat_out")]
    plain = save(make_model(steady, weights), tmp_path / "steady.onnx")
    dynamic = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dql"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xd"], name="dq"),
        helper.make_node("Conv", ["xd", "w", "b"], ["h"], name="c0"),
        *nodes[1:3],
        helper.make_node("Mul", ["f", "zero"], ["y"], name="flat_out"),
    ]
    candidate = save(make_model(dynamic, weights), tmp_path / "dynamic.onnx")
    code, _, err = run(["compare", str(plain), str(candidate), "--images", str(image_dir)], capsys)
    lines = [line for line in err.splitlines() if "the same on all" in line]
    assert code == 0 and len(lines) == 1 and "its input is likely wrong" in lines[0]


def test_an_output_of_no_channel_is_no_internal_error() -> None:
    """hq148 F4: an output [N, 0, H, W] stopped compare, convert and fp16 with numpy's 'cannot reshape
    array of size 0' as an internal error."""
    from quantkit.evaluate.output_noise import channel_signs

    empty = np.zeros((2, 0, 4, 4), np.float32)
    assert channel_signs(empty, empty).shape == (0, 5)
    m = _errors(empty, empty).result(images=2)
    assert math.isnan(m.sqnr_db)


def test_a_reduction_across_the_batch_of_an_if_bodys_output_is_seen() -> None:
    """hq151 F1: the batch check followed no read an If body makes from the outer graph, so a ReduceSum
    of every axis over an If's output read as computed from no input (623f465)."""
    from quantkit.graph.model_inputs import batch_coupled

    branch = {
        kind: helper.make_graph(
            [helper.make_node(kind, ["x"], [f"{kind}_out"])],
            kind,
            [],
            [helper.make_tensor_value_info(f"{kind}_out", onnx.TensorProto.FLOAT, ["N", 4])],
        )
        for kind in ("Relu", "Neg")
    }
    graph = helper.make_graph(
        [
            helper.make_node("If", ["c"], ["b"], then_branch=branch["Relu"], else_branch=branch["Neg"]),
            helper.make_node("ReduceSum", ["b"], ["y"], keepdims=0),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array(True), "c")],
    )
    assert batch_coupled(helper.make_model(graph)) == "ReduceSum 'y'"
