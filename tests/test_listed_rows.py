"""Outputs whose number of rows the data decides (the boxes a NonMaxSuppression or a score threshold kept,
hunt31's YOLOX export with its post-process: [detections, 7]): FP32 and the converted model may keep other
rows, or none. The smoke test and compare say so instead of failing with an internal error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.config import BudgetMetric
from quantkit.errors import ConfigError, ConversionError
from quantkit.evaluate.budget_validator import _choose
from quantkit.evaluate.end2end import rows_differ
from quantkit.evaluate.output_errors import OutputErrors
from quantkit.pipeline import writing
from quantkit.planner.at_output import output_sqnrs
from tests.conftest import SIZE, make_model
from tests.helpers import run


def _kept(threshold: float) -> onnx.ModelProto:
    """x [N, 3, S, S] -> y [k, 2]: (mean, mean) of each pixel whose channel mean passes `threshold`."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
        helper.make_node("Reshape", ["m", "column"], ["col"]),
        helper.make_node("Reshape", ["m", "flat"], ["values"]),
        helper.make_node("Concat", ["col", "col"], ["rows"], axis=1),
        helper.make_node("Greater", ["values", "threshold"], ["keep"]),
        helper.make_node("Compress", ["rows", "keep"], ["y"], axis=0),
    ]
    constants = {
        "column": np.array([-1, 1], np.int64),
        "flat": np.array([-1], np.int64),
        "threshold": np.array(threshold, np.float32),
    }
    return make_model(nodes, constants)


def test_rows_differ_only_in_one_axis_but_the_last() -> None:
    assert rows_differ((3, 7), (5, 7)) and rows_differ((1, 3, 6), (1, 0, 6))
    assert not rows_differ((2, 1000), (2, 1001))  # another class count: other models
    assert not rows_differ((3, 7), (3, 7)) and not rows_differ((3, 7), (5, 6))
    assert rows_differ((3,), (5,)) and not rows_differ((5,), (5,))  # a NonZero's picks [K] (hq59 B1)


def test_an_output_without_rows_has_errors_of_none() -> None:
    errors = OutputErrors("y")
    errors.update(np.zeros((0, 7), np.float32), np.zeros((0, 7), np.float32))  # was: cannot reshape
    errors.update(np.ones((2, 7), np.float32), np.ones((2, 7), np.float32))
    assert errors.result().sqnr_db == float("inf") and errors.result().cosine == pytest.approx(1.0)


def test_the_smoke_test_leaves_out_rows_of_other_boxes() -> None:
    samples = np.random.default_rng(0).uniform(0.0, 1.0, (4, 3, SIZE, SIZE)).astype(np.float32)
    reference = _kept(0.5)
    assert writing._smoke_test(reference, _kept(0.45), samples) == {}  # other rows: no SQNR, no crash
    assert writing._smoke_test(reference, _kept(0.5), samples) == {"y": float("inf")}
    assert writing._smoke_test(_kept(2.0), _kept(2.0), samples) == {}  # no rows on any sample


def test_compare_warns_where_the_models_kept_other_rows(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, candidate = tmp_path / "ref.onnx", tmp_path / "cand.onnx"
    onnx.save(_kept(0.5), str(reference))
    onnx.save(_kept(0.45), str(candidate))
    report = tmp_path / "cmp.json"
    argv = ["compare", str(reference), str(candidate), "--images", str(image_dir), "--runs", "0"]
    code, _, err = run([*argv, "--json", str(report)], capsys)
    assert code == 0, err
    record = json.loads(report.read_text())
    shown = " ".join(err.split())
    assert f"output 'y' holds a different number of rows in the two models on {record['images']} of " in shown
    assert "it has no figures" in shown and record["outputs"] == []
    # hq93 F1: a detector that lost a third of its final boxes showed a healthy SQNR over the images that
    # kept as many rows; the rows each model kept in all are said
    said = re.search(r"\((\d+) rows in all in the reference, (\d+) in the candidate: ", shown)
    assert said is not None and int(said.group(1)) < int(said.group(2))  # the candidate's threshold is lower


def test_a_converted_form_onnxruntime_cannot_run_is_named_so() -> None:
    """hunt31: onnxruntime's transpose optimizer failed on NanoDet's Q/DQ form at its first run, and
    convert said 'onnxruntime failed to run the model', which the user's FP32 model does not."""
    node = helper.make_node("Gather", ["x", "index"], ["y"], axis=1)  # channel 7 of 3: fails at run
    broken = make_model([node], {"index": np.array([7], np.int64)})
    samples = np.zeros((1, 3, SIZE, SIZE), np.float32)
    with pytest.raises(ConversionError) as caught:
        output_sqnrs(broken, [{"y": np.zeros((1, 1, SIZE, SIZE), np.float32)}], samples)
    assert str(caught.value).startswith("onnxruntime failed to run a converted form of the model (")
    assert "where the FP32 model runs" in str(caught.value)


def test_rows_of_anchors_are_no_class_scores() -> None:
    """hunt31: YuNet's [1076, 14] box and landmark offsets of one image read as 'top-1 agree 97 %' and
    passed shrink's --max-drop gate as class scores. An [N, C] output is an image's scores only with a
    row per image run."""
    offsets = np.random.default_rng(1).normal(size=(1076, 14)).astype(np.float32)
    for images, scored in ((1, False), (1076, True), (None, True)):
        errors = OutputErrors("loc")
        errors.update(offsets, offsets * 1.01, images)
        assert (errors.result().top1_agreement is not None) is scored
    with pytest.raises(ConfigError, match="--metric agreement needs an output shaped"):
        _choose(BudgetMetric.agreement, {"loc": offsets}, False, None, images=1)
    assert _choose(BudgetMetric.auto, {"scores": offsets[:1]}, False, None, images=1) == (
        BudgetMetric.agreement,
        ("scores",),
    )


def test_the_cosine_of_one_value_an_image_is_pooled_over_the_images() -> None:
    """hunt41 F8: a hand-presence score [N, 1] read 'cosine 1.00000' beside 2.30 dB: the cosine of a
    one-element vector is its sign. Pooled over the images it says what the values do."""
    from quantkit.evaluate.output_errors import OutputErrors

    ref = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    cand = np.array([[1.0], [2.0], [3.0], [-4.0]], np.float32)
    single = OutputErrors("presence", values=True)
    single.update(ref[:2], cand[:2])
    later = OutputErrors("presence", values=True)
    later.update(ref[2:], cand[2:])
    single.merge(later)
    assert single.result().cosine == pytest.approx((1 + 4 + 9 - 16) / 30.0)
    rows = OutputErrors("scores")
    rows.update(np.tile(ref, (1, 3)), np.tile(cand, (1, 3)))
    assert rows.result().cosine == pytest.approx(0.5)  # [N, 3]: the mean of the images' own cosines


def test_an_output_that_barely_changes_between_images_is_judged_on_what_changes() -> None:
    """hunt41 F5: a FastestDet head that is mostly its biases read 87 dB INT8 where what the image changes
    measured 19.5 dB; hunt42 F4: logits all near -1000 read 58.5 dB at 65.6 % top-1 agreement."""
    from quantkit.evaluate.variation import FEW_IMAGES, Variation, steady_warning

    g = np.random.default_rng(0)
    varying = g.normal(0, 1, (8, 10))
    ref = -1000.0 + varying
    cand = ref + g.normal(0, 0.1, ref.shape)  # noise 20 dB below what changes, 80 dB below the whole
    first, later = Variation(), Variation()
    first.update(ref[:4], cand[:4])
    later.update(ref[4:], cand[4:])
    first.merge(later)
    varying_db = first.varying_db()
    assert varying_db is not None and 17.0 < varying_db < 21.0
    warning = steady_warning("logits", 80.0, varying_db)
    assert warning is not None and warning.startswith("output 'logits' measures 80.0 dB pooled, but its")
    assert steady_warning("logits", varying_db + 5.0, varying_db) is None  # an ordinary output
    # hq96 F1: landmarks with --method entropy, 17.4 dB pooled and 0.3 dB on what changes between faces
    assert steady_warning("output", 17.44, 0.32) is not None
    assert steady_warning("output", 40.5, 23.4) is None  # the default method's, 0.62 px off: fine
    assert steady_warning("output", 15.0, 9.0) is None  # low, but not hidden: the pooled figure says so
    assert steady_warning("output", 27.68, 11.18) is not None  # hq119 F1: PFLD's FP8, 5.9 % off
    assert steady_warning("output", 33.87, 17.4) is not None  # hq119 F2: its --target tensorrt, 1.9 % off
    assert steady_warning("output", 85.0, 54.8) is None  # hq127 F4: an FP16 output, fine on what changes
    few = Variation()
    few.update(ref[: FEW_IMAGES - 1], cand[: FEW_IMAGES - 1])
    assert few.varying_db() is None
    other = Variation()
    other.update(ref[:2], cand[:2])
    other.update(ref[:2, :5], cand[:2, :5])  # another shape: not followed
    assert other.varying_db() is None
    # hunt53 C1: an NMS's box count, 40 on every image in FP32 and 31 once in INT8: nothing changes between
    # images to measure, where '-inf dB; judge it on that' was said
    count, counted = np.full((8, 1), 40.0), np.full((8, 1), 40.0)
    counted[3] = 31.0
    constant = Variation()
    constant.update(count, counted)
    assert constant.varying_db() is None and steady_warning("count", 25.8, constant.varying_db()) is None


def test_convert_warns_where_the_output_barely_changes_between_samples(
    tmp_path: Path, image_dir: Path
) -> None:
    """hunt42 F4: logits all near -1000 were written at 58.5 dB on the calibration samples and agreed
    on 65.6 % of held-out images, with no word: the weights' rounding times the offset is noise that the
    offset's power hides."""
    from quantkit import pipeline
    from quantkit.config import ConvertConfig, Float16Config, Prefer
    from tests.conftest import conv_params, make_model
    from tests.helpers import quantize

    p1, p2 = conv_params(4, 3, seed=1), conv_params(5, 4, 1, seed=2)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "k"], ["s"], name="shift"),
        helper.make_node("Conv", ["s", "w2", "b2"], ["c"], name="c2"),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flat"),
    ]
    weights = {"w1": p1["w"], "b1": p1["b"], "w2": p2["w"], "b2": p2["b"], "k": np.float32(1000.0)}
    summary, _ = quantize(
        make_model(nodes, weights), tmp_path, image_dir, ConvertConfig(prefer=Prefer.accuracy)
    )
    (warning,) = [w for w in summary.warnings if "barely change" in w]
    assert warning.startswith("output 'y' measures ") and "between the calibration samples" in warning
    # compare records the figure to judge it on, which shrink's --min-eval-sqnr gate reads (hunt51 B3)
    from quantkit.config import CompareConfig, ImageSelection, LatencyConfig

    config = CompareConfig(images=ImageSelection(image_dir), latency=LatencyConfig(runs=0))
    compared = pipeline.compare(tmp_path / "model.onnx", tmp_path / "model.int8.onnx", config, given=False)
    (y,) = compared.outputs
    assert y.varying_sqnr_db is not None and y.varying_sqnr_db <= y.sqnr_db - 20.0
    assert compared.to_dict()["outputs"][0]["varying_sqnr_db"] == y.varying_sqnr_db
    # synthetic inputs (--to fp16 without a table) vary too little between them to judge by
    half = pipeline.convert_float16(tmp_path / "model.onnx", None, tmp_path / "h.onnx", Float16Config())
    assert not [w for w in half.warnings if "barely change" in w]


def test_an_inf_mask_both_models_share_is_no_error() -> None:
    """hunt43 F3: class logits masked with -inf by design read '-inf dB', cosine NaN and numpy warnings in
    compare for a float16 model that measures 44.4 dB on its finite values, agreeing on every image."""
    import warnings

    from quantkit.evaluate.output_errors import OutputErrors
    from quantkit.evaluate.sanity import _constant

    g = np.random.default_rng(1)
    ref = g.normal(0, 3, (8, 10))
    ref[:, 7:] = -np.inf  # three classes masked on every image
    cand = ref + np.where(np.isfinite(ref), g.normal(0, 0.01, ref.shape), 0.0)
    errors = OutputErrors("logits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        errors.update(ref.astype(np.float32), cand.astype(np.float32))
        result = errors.result()
        assert not _constant([ref])
    finite = ref[:, :7]
    expected = 10 * np.log10(np.sum(finite**2) / np.sum((finite - cand[:, :7]) ** 2))
    assert result.sqnr_db == pytest.approx(expected, abs=0.01)
    assert result.top1_agreement == 1.0 and result.cosine > 0.999
    other = OutputErrors("logits")
    flipped = cand.copy()
    flipped[0, 0] = -np.inf  # an infinity only one model has is an error
    with np.errstate(invalid="ignore"):
        other.update(ref.astype(np.float32), flipped.astype(np.float32))
    assert not other.result().sqnr_db > 0


def test_outputs_a_topk_chose_are_no_classifier_to_check_the_input_by(
    tmp_path: Path, image_dir: Path
) -> None:
    """hunt53 C1: a one-class detector's class ids after its NonMaxSuppression (0 on every image) read as
    'FP32 gives class 0 ... its input is likely wrong'; a TopK's sorted scores put their top at index 0 on
    every image the same way."""
    from quantkit import pipeline
    from quantkit.config import CalibrateConfig, ImageSelection
    from tests.conftest import conv_params, save

    p = conv_params(12, 3, 3, 5)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["s"]),
        helper.make_node("TopK", ["s", "k"], ["y", "picked"], axis=1),
    ]
    weights = {"w": p["w"], "b": p["b"], "k": np.array([10], np.int64)}
    model = save(make_model(nodes, weights), tmp_path / "topk.onnx")
    summary = pipeline.calibrate(model, tmp_path / "t.json", CalibrateConfig(ImageSelection(image_dir)))
    assert summary.images_used >= 10
    assert not [f for f in summary.reference_findings if f.startswith("FP32 gives class")]
