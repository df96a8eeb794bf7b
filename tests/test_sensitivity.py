"""quantkit sensitivity: the probe's semantics, the ranking on a model with a planted weak layer, the
exclusions file round trip through convert --exclude-from, and (on the assets) a ranking validated
against random choices on held-out images."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit import pipeline
from quantkit.calib import table as table_io
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection, Preprocess
from quantkit.graph import model_io
from quantkit.graph.probe import local_probe
from quantkit.graph.query import name_nodes
from quantkit.image_folders import select_images
from quantkit.images import ImageLoader
from quantkit.planner import sensitivity as sens
from quantkit.planner.core import plan
from quantkit.runtime import Session
from tests.conftest import ASSETS, conv_params, make_model, requires_assets, rng, save
from tests.helpers import assert_one_line_error, run


def _planted(path: Path, classifier: bool = False, width: int = 6, out: int = 4) -> Path:
    """c1 -> c2 -> c3, where c2 writes one channel 300x larger than the others: the per-tensor
    activation scale of c3's input then crushes the other channels, so c3 is the weak layer. width: c1's
    and c2's channels; out: c3's."""
    p1, p2 = conv_params(width, 3, seed=1), conv_params(width, width, seed=2)
    p3 = conv_params(out, width, seed=3)
    p2["w"][0] *= 300.0
    p2["b"][0] *= 300.0
    p3["w"][:, 0] /= 300.0  # c3 undoes the gain: the float function stays ordinary
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2", "b2"], ["b"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "w3", "b3"], ["c"], name="c3", pads=[1, 1, 1, 1]),
    ]
    if classifier:  # scores [N, 1024]: top-1 agreement applies, and c3's noise flips it
        nodes.append(helper.make_node("Flatten", ["c"], ["y"], name="flat"))
    else:  # a Conv writing the model output itself stays float (onnxruntime has no such integer Conv)
        nodes.append(helper.make_node("Identity", ["c"], ["y"], name="out"))
    weights = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"], "w3": p3["w"], "b3": p3["b"]}
    return save(make_model(nodes, weights), path)


@pytest.fixture
def planted(image_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    model = _planted(tmp_path / "planted.onnx")
    table = tmp_path / "planted.calib.json"
    pipeline.calibrate(model, table, CalibrateConfig(ImageSelection(image_dir, 16)))
    return model, table


def test_probe_reproduces_each_layer_and_adds_only_its_own_error(planted: tuple[Path, Path]) -> None:
    model_path, table_path = planted
    model = model_io.infer_shapes(model_io.load_model(model_path))
    name_nodes(model)
    table = table_io.load(table_path)
    base = plan(model, table, ConvertConfig(smoothquant="off"))
    probe, pairs = local_probe(model, base, ["c1", "c2", "c3"])
    x = table.samples[:2] if table.samples is not None else None
    out = Session.of(probe).run(x)
    exact = Session.of(model).run(x)
    assert np.array_equal(out["y"], exact["y"])  # the original path is untouched
    for node in ("c1", "c2"):
        reference, local = pairs[node]
        error = out[local] - out[reference]
        assert 0 < np.abs(error).max() < 0.2 * np.abs(out[reference]).max(), node
    # c3 alone: its input's per-tensor scale is set by the 300x channel, the others are crushed
    c3 = np.sum((out[pairs["c3"][1]] - out["y"]) ** 2)
    c1 = np.sum((out[pairs["c1"][1]] - out["a"]) ** 2) / np.sum(out["a"] ** 2)
    assert c3 / np.sum(out["y"] ** 2) > 10 * c1


def test_sensitivity_finds_the_planted_layer(planted: tuple[Path, Path], image_dir: Path) -> None:
    model, table = planted
    report = pipeline.sensitivity(model, table, ImageSelection(image_dir, 12), ConvertConfig(), cumulative=3)
    rows = {r.node: r for r in report.layers}
    # alone, c3 is the layer that breaks (its input's scale is set by the 300x channel)
    assert rows["c3"].local_sqnr_db < 3.0 < 30.0 < min(rows["c1"].local_sqnr_db, rows["c2"].local_sqnr_db)
    # kept float, c3 or c2 each keep that tensor float (c3 as its input, c2 as its output): both recover
    assert {r.node for r in report.layers[:2]} == {"c2", "c3"}
    assert rows["c3"].recovered > 0.99 and rows["c1"].recovered < 0.05
    assert [k for k, _, _ in report.cumulative] == [1, 2, 3]
    assert report.cumulative[-1][2] == pytest.approx(1.0)  # every layer float: no error left
    assert report.num_images == 12
    settings = report.to_dict()["settings"]  # hq107 F5: what was ranked, named
    assert settings["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert settings["table_sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()
    assert (
        settings["seed"] == 0
        and len(settings["images_list_sha256"]) == 64
        and "onnxruntime" in settings["versions"]
    )
    # hunt39 F5: what goes float with a layer is said (c3 float makes its input, c2's output, float, and
    # c2 with it: onnxruntime has no int8 Conv with a float output)
    assert rows["c3"].with_it == ("c2",) and report.to_dict()["layers"][0]["float_with_it"] is not None
    from quantkit.reports.formats import float_in_all

    top_c3 = [k for k in (1, 2) if report.layers[k - 1].node == "c3"]
    assert not top_c3 or "layers float in all" in float_in_all(report, top_c3[0])


def test_sensitivity_says_what_calibrate_says_of_its_images(
    planted: tuple[Path, Path], image_dir: Path, tmp_path: Path
) -> None:
    """hunt39 F8: unreadable files and a --num-images above the folder's count went unsaid."""
    from tests.helpers import images_and_a_broken_one

    model, table = planted
    folder = images_and_a_broken_one(image_dir, tmp_path / "imgs", "dogs/broken.png")
    report = pipeline.sensitivity(model, table, ImageSelection(folder, 40), ConvertConfig(), cumulative=1)
    assert report.num_images == 24
    assert any("asks for more images than" in w for w in report.warnings), report.warnings
    assert "1 of the 25 images could not be read and were left out" in " ".join(report.warnings)
    assert report.to_dict()["warnings"] == list(report.warnings)
    few = pipeline.sensitivity(model, table, ImageSelection(image_dir, 2), ConvertConfig(), cumulative=1)
    assert any(w.startswith("the ranking rests on 2 image(s)") for w in few.warnings)


def test_sensitivity_names_its_default_image_count_as_a_default(
    planted: tuple[Path, Path], image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq68 12: every folder under 32 images was told '--num-images 32 asks for more images', a flag the
    user never gave."""
    from tests.helpers import run

    model, table = planted
    argv = ["sensitivity", str(model), "-c", str(table), "--images", str(image_dir), "--top", "1"]
    code, _, err = run(argv, capsys)
    said = " ".join(err.split())
    assert code == 0 and "the default --num-images 32 asks for more images than" in said, err
    code, _, err = run([*argv, "--num-images", "30"], capsys)
    assert code == 0 and "warning: --num-images 30 asks for more images than" in " ".join(err.split())


def test_sensitivity_reads_the_images_again_when_they_do_not_fit_in_memory(
    planted: tuple[Path, Path], image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each model measured runs on its own over every batch: the batches and FP32's outputs are kept for
    the passes, or read and run again past REPLAY_BYTES. Both give the same report."""
    from quantkit.pipeline import sensitivity_jobs

    model, table = planted
    images = ImageSelection(image_dir, 12)
    kept = pipeline.sensitivity(model, table, images, ConvertConfig(), cumulative=2)
    monkeypatch.setattr(sensitivity_jobs, "REPLAY_BYTES", 0)
    streamed = pipeline.sensitivity(model, table, images, ConvertConfig(), cumulative=2)
    assert dataclasses.replace(streamed, seconds=0.0) == dataclasses.replace(kept, seconds=0.0)


def test_sensitivity_runs_smaller_batches_where_one_images_activations_are_large(
    planted: tuple[Path, Path], image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PaddleOCR's seal detector at 736x992 held 2.1-3.4 GB through its trials in batches of 8 (1.3 GB in
    batches that fit graph.augment.BATCH_ACTIVATION_BYTES), the same report."""
    from quantkit.graph import augment
    from quantkit.pipeline import sensitivity_jobs

    model, table = planted
    images = ImageSelection(image_dir, 12)
    sizes: list[int] = []
    loader = sensitivity_jobs.ImageLoader

    def spied(paths: list[Path], preprocess: Preprocess, batch: int) -> ImageLoader:
        sizes.append(batch)
        return loader(paths, preprocess, batch)

    monkeypatch.setattr(sensitivity_jobs, "ImageLoader", spied)
    whole = pipeline.sensitivity(model, table, images, ConvertConfig(), cumulative=2)
    monkeypatch.setattr(augment, "BATCH_ACTIVATION_BYTES", 1)
    single = pipeline.sensitivity(model, table, images, ConvertConfig(), cumulative=2)
    assert sizes == [8, 1]
    assert [r.node for r in single.layers] == [r.node for r in whole.layers]
    for one, batched in zip(single.layers, whole.layers, strict=True):
        assert one.local_sqnr_db == pytest.approx(batched.local_sqnr_db, rel=1e-5)
        assert one.recovered == pytest.approx(batched.recovered, abs=1e-5)


def test_exclusions_file_round_trip_through_convert(
    planted: tuple[Path, Path], image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, table = planted
    keep, report = tmp_path / "keep.txt", tmp_path / "sens.json"
    argv = ["sensitivity", str(model), "-c", str(table), "--images", str(image_dir), "--num-images", "8"]
    code, out, err = run(  # --top 0: no layers measured together, so the file holds the top --keep
        [*argv, "--keep", "2", "--top", "0", "--write-exclusions", str(keep), "--json", str(report)], capsys
    )
    assert code == 0, err
    assert "layers by recovery (8 images" in out
    # its output SQNR is not compare's: the console says how it weighs (hunt27: 19.1 dB against 39.5 dB)
    assert "weighs each output and each output feature (a class score, a box coordinate) alike" in " ".join(
        out.split()
    )
    assert [
        line.split("#")[0].strip() for line in keep.read_text().splitlines() if line.split("#")[0].strip()
    ] == [r["node"] for r in json.loads(report.read_text())["layers"][:2]]
    data = json.loads(report.read_text())
    assert {r["node"] for r in data["layers"][:2]} == {"c2", "c3"} and len(data["layers"]) == 3
    assert "each measured alone (none together: --top 0" in keep.read_text().splitlines()[0]  # hunt32

    int8 = tmp_path / "o.onnx"
    code, out, err = run(
        ["convert", str(model), "-c", str(table), "-o", str(int8), "--exclude-from", str(keep)], capsys
    )
    assert code == 0, err
    converted = onnx.load(str(int8))
    c3 = next(n for n in converted.graph.node if n.name == "c3")
    assert c3.op_type == "Conv" and "--exclude-from" in out
    # hunt32: the ops beside the listed layers read 'kept float by the accuracy fallback', which kept none
    assert "accuracy fallback" not in out
    weights = {i.name: i.data_type for i in converted.graph.initializer}
    assert weights["w2"] == weights["w3"] == onnx.TensorProto.FLOAT  # kept float: weights not quantized


def test_the_exclusions_file_stops_where_the_top_layers_together_measure_best() -> None:
    """A PP-OCRv5 recogniser's top 3 layers kept float together measured 5.59 dB, below its top 1 alone
    (7.48 dB), and --write-exclusions --keep 3 wrote all 3."""
    from quantkit.outcomes import LayerSensitivity, SensitivityReport
    from quantkit.reports.records import exclusions_file

    rows = tuple(LayerSensitivity(f"conv_{k}", "Conv", 10.0, 7.0, 0.3 - 0.1 * k) for k in range(3))
    report = SensitivityReport(rows, 6.0, ((1, 7.48, 0.3), (2, 6.1, 0.1), (3, 5.59, -0.1)), 16, 1.0, {})
    written = exclusions_file(report, 3, "m.onnx").splitlines()
    assert [line.split("#")[0].strip() for line in written if line.split("#")[0].strip()] == ["conv_0"]
    assert "top 1: 7.48 dB, top 2: 6.10 dB, top 3: 5.59 dB" in written[0]
    assert written[1].startswith("# measured with rebalancing off, as quantkit sensitivity measures;")
    rising = dataclasses.replace(report, cumulative=((1, 7.0, 0.1), (2, 8.0, 0.2), (3, 9.0, 0.3)))
    assert len([line for line in exclusions_file(rising, 3, "m.onnx").splitlines() if "conv_" in line]) == 3
    # the console says which sets do no better than fewer layers (3DDFA's third: 30.95 -> 30.33 dB)
    from quantkit.reports import console
    from tests.test_golden import _render

    text = _render(console.sensitivity_table(report), 300)
    assert text.count("(no better than the top 1, which --write-exclusions keeps)") == 2
    assert "(no better" not in _render(console.sensitivity_table(rising), 300)


def test_the_exclusions_file_and_the_console_name_the_same_set() -> None:
    """PaddleOCR's seal detector measured best with its top 4 kept float (13.06 dB on held-out images,
    recall 93.1 %); the console said --write-exclusions keeps them, and the file (--keep 3 by default)
    held 3, which did worse than none (8.52 against 9.61 dB). Now --keep is a cap, by default none."""
    from quantkit.outcomes import LayerSensitivity, SensitivityReport
    from quantkit.reports import console
    from quantkit.reports.records import exclusions_file
    from tests.test_golden import _render

    rows = tuple(LayerSensitivity(f"conv_{k}", "Conv", 10.0, 7.0, 0.3 - 0.05 * k) for k in range(5))
    steps = ((1, 8.0, 0.1), (2, 9.0, 0.2), (3, 8.5, 0.15), (4, 13.0, 0.6), (5, 12.0, 0.5))
    report = SensitivityReport(rows, 6.0, steps, 16, 1.0, {})

    def layers(text: str) -> list[str]:
        return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]

    assert layers(exclusions_file(report, None, "m.onnx")) == ["conv_0", "conv_1", "conv_2", "conv_3"]
    assert layers(exclusions_file(report, 3, "m.onnx")) == ["conv_0", "conv_1"]  # the best of the top 1-3
    shown = " ".join(_render(console.sensitivity_table(report), 300).split())
    assert "(no better than the top 4, which --write-exclusions keeps): conv_0" in shown
    assert "(the set --write-exclusions keeps): conv_0, conv_1, conv_2, conv_3" in shown
    capped = " ".join(_render(console.sensitivity_table(report, 3), 300).split())
    assert "(the set --write-exclusions keeps): conv_0, conv_1" in capped
    unmeasured = dataclasses.replace(report, cumulative=())
    assert len(layers(exclusions_file(unmeasured, None, "m.onnx"))) == 3  # --top 0: the top 3
    # hunt52 C4: each line said 'alone' where the layer's input path took others float with it
    dragging = dataclasses.replace(
        report, layers=(dataclasses.replace(rows[0], with_it=("c", "d")), *rows[1:])
    )
    written = exclusions_file(dragging, None, "m.onnx")
    assert "conv_0  # Conv, recovers 30% with 2 more layer(s) float (its input path)" in written
    assert "conv_1  # Conv, recovers 25% alone" in written


def test_exclude_from_a_missing_file_is_one_clear_line(
    cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["convert", str(cnn), "--to", "fp16", "-o", str(tmp_path / "o.onnx")]
    code, _, err = run([*argv, "--exclude-from", str(tmp_path / "none.txt")], capsys)
    assert_one_line_error(code, err, "cannot read --exclude-from")


@requires_assets()
@pytest.mark.assets
def test_mobilenetv2_top5_recover_more_than_random_layers(tmp_path: Path) -> None:
    model = ASSETS / "models" / "mobilenetv2.onnx"
    table = tmp_path / "m.calib.json"
    pipeline.calibrate(model, table, CalibrateConfig(ImageSelection(ASSETS / "images" / "coco-calib", 32)))
    images = ASSETS / "images" / "imagenet-dev"
    report = pipeline.sensitivity(model, table, ImageSelection(images, 16), ConvertConfig(), cumulative=0)
    ranked = [r.node for r in report.layers]
    loaded = model_io.ensure_opset(model_io.load_model(model))
    name_nodes(loaded)
    inferred = model_io.infer_shapes(loaded)
    calib = table_io.load(table)
    choices = {"top": ranked[:5]} | {
        f"random{i}": list(rng(i).choice(ranked, 5, replace=False)) for i in range(3)
    }
    cache: dict[str, tuple[float, float]] = {}
    sessions = {
        k: Session.of(sens.with_float(inferred, calib, ConvertConfig(), v, cache)) for k, v in choices.items()
    }
    reference = Session.of(inferred)
    noise = dict.fromkeys(sessions, 0.0)
    held_out = select_images(ImageSelection(images, 24, seed=7))  # not the images that ranked them
    for batch in ImageLoader(held_out, Preprocess.from_dict(calib.meta["preprocess"]), 8):
        ref = reference.run_batch(batch.data)["output"]
        for k, session in sessions.items():
            noise[k] += float(np.sum((session.run_batch(batch.data)["output"] - ref) ** 2))
    assert all(noise["top"] < noise[k] for k in noise if k != "top"), noise


@pytest.mark.parametrize(("capped_db", "kept"), [(25.0, True), (19.0, False)])
def test_sensitivity_measures_the_range_cap_as_convert_decides_it(
    planted: tuple[Path, Path], image_dir: Path, monkeypatch: pytest.MonkeyPatch, capped_db: float, kept: bool
) -> None:
    """The INT8 model sensitivity ranks is the one convert would write: with the range cap where convert
    keeps it (the same measure, stubbed here), without it elsewhere."""
    from quantkit.planner import corrections_choice

    def final_db(model: object, table: object, resolved: corrections_choice.Resolved, *_: object) -> float:
        return capped_db if resolved.config.range_cap else 20.0

    monkeypatch.setattr(corrections_choice, "_final_db", final_db)
    model, table = planted
    report = pipeline.sensitivity(model, table, ImageSelection(image_dir, 4), ConvertConfig(), cumulative=1)
    assert report.settings["range_cap"] is kept


def test_the_set_written_is_the_fewest_layers_within_a_tenth_of_a_db_of_the_best() -> None:
    """A text detector's --write-exclusions listed 5 layers for 16.93 dB where 1 gave 16.89 dB: 4 more
    float layers for 0.04 dB. The fewest within 0.1 dB of the best are written."""
    from quantkit.outcomes import SensitivityReport

    def report(*dbs: float) -> SensitivityReport:
        steps = tuple((k, db, 0.0) for k, db in enumerate(dbs, 1))
        return SensitivityReport((), 15.0, steps, 16, 1.0, {})

    assert report(16.89, 16.89, 16.91, 16.93, 16.93).best_together(5) == 1
    assert report(16.0, 17.0, 17.05, 16.5).best_together(4) == 2
    assert report(16.0, 17.0, 17.5).best_together(2) == 2  # at most --keep
    assert report().best_together(3) is None


def test_every_layer_float_is_no_set_to_write() -> None:
    """hunt39 F13: --top 100 measured the all-float set at inf dB (FP32 itself), and the exclusions file
    listed all 49 layers, floating the whole model without a word."""
    from quantkit.outcomes import LayerSensitivity, SensitivityReport
    from quantkit.reports import records
    from quantkit.reports.formats import set_note

    layers = tuple(LayerSensitivity(f"conv{k}", "Conv", 20.0, 16.0, 0.1) for k in range(3))
    steps = ((1, 16.5, 0.2), (2, 17.0, 0.5), (3, float("inf"), 1.0))
    result = SensitivityReport(layers, 15.0, steps, 16, 1.0, {})
    assert result.best_together(3) == 2 and records.exclusion_count(result, None) == 2
    assert records.exclusions_warning(result, None) is None
    assert set_note(3, 2, float("inf")) == (
        " (FP32 itself: every ranked layer float; --write-exclusions keeps the top 2)"
    )
    assert set_note(2, 2, 17.0) == " (the set --write-exclusions keeps)" and set_note(1, 2, 16.5) == ""
    everything = SensitivityReport(layers, 15.0, ((3, float("inf"), 1.0),), 16, 1.0, {})
    assert records.exclusions_warning(everything, None) == (
        "the exclusions file lists all 3 ranked layers: convert --exclude-from it keeps every one float; "
        "give --keep a smaller count"
    )


def test_a_file_on_stdout_keeps_stdout_for_it(
    planted: tuple[Path, Path], image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt32: `sensitivity --json -` printed the table on stdout before the JSON, so the JSON could not be
    parsed; with --write-exclusions - too, both documents went there. As compare: the table on stderr,
    one file on stdout."""
    model, table = planted
    argv = ["sensitivity", str(model), "-c", str(table), "--images", str(image_dir), "--num-images", "4"]
    code, out, err = run([*argv, "--top", "1", "--json", "-"], capsys)
    assert code == 0, err
    assert json.loads(out)["layers"] and "layers by recovery" in err
    code, _, err = run([*argv, "--json", "-", "--write-exclusions", "-"], capsys)
    assert_one_line_error(code, err, "only one of --json and --write-exclusions can go to stdout")


def test_a_softmax_output_is_judged_by_its_logits_as_convert_judges_it(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hunt48 B4: on a classifier whose Softmax saturates, sensitivity ranked layers by the probabilities
    (48.3 dB on yahoo-open-nsfw) where convert judges the logits (29 dB held out): a different figure,
    noisy where one score flips. Its runs replay the tensors convert judges: the logits."""
    from quantkit.graph.augment import with_outputs
    from quantkit.pipeline.sensitivity_jobs import Replay

    model = onnx.load(str(_planted(tmp_path / "p.onnx", classifier=True)))
    model.graph.node.append(helper.make_node("Softmax", ["y"], ["probs"], name="soft", axis=1))
    model.graph.output[0].name = "probs"
    soft = save(model, tmp_path / "soft.onnx")
    table = tmp_path / "soft.calib.json"
    pipeline.calibrate(soft, table, CalibrateConfig(ImageSelection(image_dir, 16)))
    from quantkit.pipeline import sensitivity_jobs

    judged: list[list[str]] = []

    class Seen(sensitivity_jobs.Replay):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            judged.append(self.measured)

    monkeypatch.setattr(sensitivity_jobs, "Replay", Seen)
    report = pipeline.sensitivity(soft, table, ImageSelection(image_dir, 12), ConvertConfig(), cumulative=1)
    assert report.layers and np.isfinite(report.int8_output_sqnr_db)
    assert judged and all(names == ["y"] for names in judged)  # the run judges the logits
    preprocess = Preprocess.from_dict(table_io.load(table).meta["preprocess"])
    paths = select_images(ImageSelection(image_dir, 12))
    fp32 = Session.of(with_outputs(model, ["y"], typed=False))
    replay = Replay(fp32, paths, preprocess, 8, ["y"])
    assert replay.first_pass() == 12
    halved = onnx.load(str(soft))  # a candidate: logits halved, the Softmax's winners the same
    halved.graph.node.insert(
        len(halved.graph.node) - 1, helper.make_node("Mul", ["y", "half"], ["y2"], name="h")
    )
    halved.graph.node[-1].input[0] = "y2"
    halved.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    noise = replay.noise(halved)
    assert set(noise.powers) == {"y"} and noise.sqnr_db == np.inf  # the logits: the same in both
    plain = Replay(Session.of(model), paths, preprocess, 8)
    plain.first_pass()
    judged = plain.noise(halved)  # the probabilities, which the halved logits move
    assert set(judged.powers) == {"probs"} and judged.sqnr_db < 60


def test_a_node_name_holding_a_hash_reads_back_from_the_exclusions_file(tmp_path: Path) -> None:
    """hq169 F5: --exclude-from cut every line at its first '#': the file sensitivity writes for a node
    named 'fc#1' ('fc#1  # Gemm, ...') read back as 'fc', refused; a line 'conv#x' kept the node 'conv'
    float, another layer, with exit 0. A comment is a '#' that opens the line or follows a space."""
    from quantkit.cli.app import exclusion_names
    from quantkit.errors import ConfigError
    from quantkit.outcomes import LayerSensitivity, SensitivityReport
    from quantkit.reports.records import exclusions_file

    names = ("fc#1", "conv#x", "#c1", "c 3 #x", " fc ", 'say "hi"')  # hq170 F2: the last four too
    rows = tuple(LayerSensitivity(n, "Conv", 10.0 - k, 7.0, 0.3 - 0.01 * k) for k, n in enumerate(names))
    written = tmp_path / "keep.txt"
    written.write_text(exclusions_file(SensitivityReport(rows, 6.0, (), 16, 1.0, {}), 6, "m.onnx"))
    assert exclusion_names(written) == names
    assert '\n"#c1"  # Conv' in written.read_text()  # quoted where a plain line would not give it back
    hand = tmp_path / "hand.txt"
    hand.write_text("# layers to keep float\nconv#x\n  # indented comment\nfc#1 # the head\n\n")
    assert exclusion_names(hand) == ("conv#x", "fc#1")
    hand.write_text('conv\n"fc#1  # no closing quote\n')
    with pytest.raises(ConfigError, match="line 2 opens a quoted name it does not close"):
        exclusion_names(hand)
    hand.write_text('"fc#1"  # the head\n"conv#x"#no space\n')
    assert exclusion_names(hand) == ("fc#1", "conv#x")
    hand.write_text('"fc#1",\n"conv#x"\n')  # hq173 F4: a list pasted one item a line, its commas kept
    assert exclusion_names(hand) == ("fc#1", "conv#x")
    for pasted in ('"conv1", "conv2"', '"conv1" conv2'):  # hq172 F1: conv2 was dropped without a word
        hand.write_text(f"conv\n{pasted}\n")
        with pytest.raises(ConfigError) as refused:
            exclusion_names(hand)
        assert str(refused.value) == (
            f'--exclude-from {hand}: line 2 holds more than a comment after the quoted name "conv1": give '
            "one name per line"
        )


def test_a_node_named_with_edge_spaces_is_ranked_and_excluded_by_its_quoted_line(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq172 F3: the config stripped every listed name, so the node ' c2 ' (edge spaces: hand edits, some
    converters) could be excluded by no route, though sensitivity writes it quoted for that purpose; and
    sensitivity itself, listing it as a layer to keep float, refused the model citing --exclude-from."""
    from tests.conftest import tiny_cnn
    from tests.helpers import run

    model = onnx.load(str(tiny_cnn(tmp_path / "cnn.onnx")))
    next(n for n in model.graph.node if n.name == "c2").name = " c2 "
    path = tmp_path / "spaced.onnx"
    onnx.save(model, str(path))
    table, keep = tmp_path / "t.json", tmp_path / "keep.txt"
    assert run(["calibrate", str(path), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    argv = ["sensitivity", str(path), "-c", str(table), "--images", str(image_dir), "--write-exclusions"]
    code, _, err = run([*argv, str(keep), "--top", "2"], capsys)
    assert code == 0, err
    assert '\n" c2 "  # Conv' in keep.read_text()  # quoted, so that it reads back
    keep.write_text('" c2 "\n')
    out = tmp_path / "q.onnx"
    code, _, err = run(
        ["convert", str(path), "-c", str(table), "--exclude-from", str(keep), "-o", str(out)], capsys
    )
    assert code == 0, err
    written = onnx.load(str(out))
    conv = next(n for n in written.graph.node if n.name == " c2 ")
    assert not any(
        n.op_type == "DequantizeLinear" and n.output[0] == conv.input[1] for n in written.graph.node
    )


def test_listed_op_types_are_stripped_and_unknown_node_names_shown_quoted(
    cnn: Path, tmp_path: Path, image_dir: Path
) -> None:
    """hq173 F6: keeping listed names as given (node names may hold edge spaces) refused an API list's
    'Conv ', where no op type holds white space; and a node name with a trailing space was shown unquoted
    in the refusal, '(c1 )', the space that failed it unseen."""
    import re

    import quantkit
    from quantkit.errors import ConfigError

    assert ConvertConfig(exclude_op_types=["Conv "]).exclude_op_types == ("Conv",)
    table = tmp_path / "t.json"
    quantkit.calibrate(cnn, image_dir, output=table)
    with pytest.raises(ConfigError, match=re.escape("not in the model ('c1 ')")):
        quantkit.convert(cnn, calibration=table, output=tmp_path / "o.onnx", float_layers=["c1 "])
