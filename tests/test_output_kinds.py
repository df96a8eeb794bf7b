"""Outputs that hold features (embeddings, rectified or normalised values) are no class scores: no top-1
agreement in compare, no 'FP32 gives class k' warning, and --max-drop refused in one line (hunt31: a
person re-identification embedding scored 'top-1 agree' and gated --max-drop on it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from quantkit.graph.output_kinds import class_counts, value_outputs
from tests.conftest import conv_params, make_model, rng, save
from tests.helpers import assert_one_line_error, compared_rows, run

WIDTH = 12  # the head's width: an [N, 12] output


def _head(
    tail: list[onnx.NodeProto], extra: dict[str, np.ndarray] | None = None, outputs: list[str] | None = None
) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm ('z', [N, WIDTH]) -> `tail` (ending in 'y')."""
    p = conv_params(6, 3, 3, 3)
    g = rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["z"], name="fc", transB=1),
        *tail,
    ]
    weights = {
        "w1": p["w"],
        "b1": p["b"],
        "wf": g.normal(0, 0.5, (WIDTH, 6)).astype(np.float32),
        "bf": g.normal(0, 0.1, (WIDTH,)).astype(np.float32),
        **(extra or {}),
    }
    return make_model(nodes, weights, outputs=outputs)


def _bn() -> dict[str, np.ndarray]:
    g = rng(5)
    return {
        "s": g.uniform(0.5, 1.5, WIDTH).astype(np.float32),
        "t": g.normal(0, 0.1, WIDTH).astype(np.float32),
        "m": g.normal(0, 0.1, WIDTH).astype(np.float32),
        "v": g.uniform(0.5, 1.5, WIDTH).astype(np.float32),
    }


EMBEDDING = [helper.make_node("BatchNormalization", ["z", "s", "t", "m", "v"], ["y"], name="bn")]
L2_NORMALISED = [
    helper.make_node("Mul", ["z", "z"], ["sq"]),
    helper.make_node("ReduceSum", ["sq", "axes"], ["ss"], keepdims=1),
    helper.make_node("Sqrt", ["ss"], ["norm"]),
    helper.make_node("Div", ["z", "norm"], ["y"]),
]
POW_NORMALISED = [  # Normalize modules: x.div(x.pow(2).sum(1, keepdim=True).pow(0.5)) (hunt34)
    helper.make_node("Pow", ["z", "two"], ["sq"]),
    helper.make_node("ReduceSum", ["sq", "axes"], ["ss"], keepdims=1),
    helper.make_node("Pow", ["ss", "half"], ["norm"]),
    helper.make_node("Div", ["z", "norm"], ["y"]),
]
SOFTMAX_BY_HAND = [  # a softmax written out: Div of Exp by its ReduceSum, class probabilities
    helper.make_node("Exp", ["z"], ["e"]),
    helper.make_node("ReduceSum", ["e", "axes"], ["se"], keepdims=1),
    helper.make_node("Div", ["e", "se"], ["y"]),
]
PRELU_BY_HAND = [  # tf2onnx's PReLU: Relu(x) + alpha * -Relu(-x), then a reshape
    helper.make_node("Relu", ["z"], ["pos"]),
    helper.make_node("Neg", ["z"], ["nz"]),
    helper.make_node("Relu", ["nz"], ["rn"]),
    helper.make_node("Mul", ["rn", "alpha"], ["neg"]),
    helper.make_node("Sub", ["pos", "neg"], ["pr"]),
    helper.make_node("Reshape", ["pr", "shape"], ["y"]),
]
AXES = {"axes": np.array([1], np.int64)}
# hunt33: a cosine classifier (CLIP zero-shot, NormFace): normalised features times normalised class
# weights, scaled by exp(s): class scores, though a norm lies four ops back from its Mul
COSINE_CLASSIFIER = [
    helper.make_node("ReduceL2", ["z"], ["norm"], axes=[1], keepdims=1),
    helper.make_node("Div", ["z", "norm"], ["unit"]),
    helper.make_node("MatMul", ["unit", "wn"], ["cos"]),
    helper.make_node("Exp", ["log_scale"], ["scale"]),
    helper.make_node("Mul", ["cos", "scale"], ["y"]),
]


def _unit_rows() -> np.ndarray:
    w = rng(6).normal(size=(WIDTH, 7)).astype(np.float32)
    return w / np.linalg.norm(w, axis=0, keepdims=True)


@pytest.mark.parametrize(
    ("tail", "extra", "values"),
    [
        ([helper.make_node("Identity", ["z"], ["y"])], None, False),  # logits
        ([helper.make_node("Softmax", ["z"], ["y"], axis=1)], None, False),
        ([helper.make_node("Mul", ["z", "temp"], ["y"])], {"temp": np.float32(0.5)}, False),  # scaled logits
        ([helper.make_node("Add", ["z", "z"], ["y"])], None, False),  # a sum of two computed scores
        (SOFTMAX_BY_HAND, AXES, False),
        (COSINE_CLASSIFIER, {"wn": _unit_rows(), "log_scale": np.float32(np.log(30.0))}, False),
        (EMBEDDING, _bn(), True),
        ([helper.make_node("Relu", ["z"], ["q"]), helper.make_node("Flatten", ["q"], ["y"])], None, True),
        (L2_NORMALISED, AXES, True),
        (POW_NORMALISED, {**AXES, "two": np.float32(2.0), "half": np.float32(0.5)}, True),
        (
            PRELU_BY_HAND,
            {"alpha": np.full(WIDTH, -0.25, np.float32), "shape": np.array([-1, WIDTH], np.int64)},
            True,
        ),
    ],
)
def test_value_outputs_read_from_the_graph(
    tail: list[onnx.NodeProto], extra: dict[str, np.ndarray] | None, values: bool
) -> None:
    assert value_outputs(_head(tail, extra)) == (frozenset({"y"}) if values else frozenset())


def test_features_a_layer_reads_hold_values() -> None:
    """hq121 F4: a ResNet-style export gave its pooled Relu features beside its logits; --max-drop with no
    labels gated on the features' largest coordinate (25 points where the logits lost 12.5). A classifier
    whose scores are Relu -> pool (SqueezeNet's head) feeds no layer: scores still."""
    pooled = _head([helper.make_node("Softmax", ["z"], ["y"], axis=1)], outputs=["y", "z", "f"])
    assert value_outputs(pooled) == frozenset({"f"})
    # hq124 F1: probabilities a MatMul sums into superclasses are scores still
    superclasses = [
        helper.make_node("Softmax", ["z"], ["y"], axis=1),
        helper.make_node("MatMul", ["y", "groups"], ["g"]),
    ]
    groups = {"groups": np.eye(WIDTH, 3, dtype=np.float32)}
    assert not {"y", "z"} & value_outputs(_head(superclasses, groups, outputs=["y", "g", "z"]))
    # hq127 F1: a flattened Conv map (or a ViT's class token) a Gemm reads is features, not only a pool's
    p, g = conv_params(4, 3, 1), rng(7)
    flat = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c1"),
        helper.make_node("Flatten", ["c"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    head = {"wf": g.normal(0, 0.1, (5, 4 * 16 * 16)).astype(np.float32), "bf": np.zeros(5, np.float32)}
    assert value_outputs(make_model(flat, {**p, **head}, outputs=["y", "f"])) == frozenset({"f"})
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["a"], name="c1"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["y"], name="flat"),
    ]
    squeezenet = make_model(nodes, dict(conv_params(WIDTH, 3, 1)))
    assert value_outputs(squeezenet) == frozenset()


def test_class_counts_of_argmax_labels_and_channels_last_scores() -> None:
    """hq121 F2: a 4-class ArgMax model took a 6-class labels file (its images of 2 classes scored as
    misses, no word); F3: scores given as [N, 1, 1, C] refused their own C labels ('declared: 1')."""
    argmax = [helper.make_node("ArgMax", ["z"], ["y"], axis=1, keepdims=0)]
    cast = [
        helper.make_node("ArgMax", ["z"], ["i"], axis=-1),
        helper.make_node("Cast", ["i"], ["y"], to=6),
    ]
    nhwc = [helper.make_node("Reshape", ["z", "shape"], ["y"])]
    assert class_counts(_head(argmax)) == class_counts(_head(cast)) == [WIDTH]
    assert class_counts(_head(nhwc, {"shape": np.array([-1, 1, 1, WIDTH], np.int64)})) == [WIDTH]
    assert class_counts(_head([helper.make_node("Identity", ["z"], ["y"])])) == [WIDTH]


def _heads(logits_out: bool) -> onnx.ModelProto:
    """MTCNN's ONet: a face probability (Softmax [N, 2]) beside box offsets [N, 4] and 10 landmark
    coordinates, each a bare Gemm; logits_out: the probability's logits given as an output too."""
    g = rng(6)
    tail = [
        helper.make_node("Gemm", ["z", "wp", "bp"], ["logits"], name="prob_fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], name="prob", axis=1),
        helper.make_node("Gemm", ["z", "wb", "bb"], ["box"], name="box_fc", transB=1),
        helper.make_node("MatMul", ["z", "wl"], ["lm"], name="lm_fc"),
        helper.make_node("Add", ["lm", "bl"], ["landmarks"], name="lm_bias"),
    ]
    extra = {
        "wp": g.normal(0, 0.5, (2, WIDTH)).astype(np.float32),
        "bp": np.zeros(2, np.float32),
        "wb": g.normal(0, 0.5, (4, WIDTH)).astype(np.float32),
        "bb": np.zeros(4, np.float32),
        "wl": g.normal(0, 0.5, (WIDTH, 10)).astype(np.float32),
        "bl": np.zeros(10, np.float32),
    }
    names = ["logits", "prob", "box", "landmarks"] if logits_out else ["prob", "box", "landmarks"]
    return _head(tail, extra, names)


def test_regressions_beside_a_score_hold_values() -> None:
    """hunt44 F6 (MTCNN's ONet) and hunt41 F4 (a hand pose's landmarks): 'top-1 agree 100 %' on box
    offsets and landmark coordinates; a classifier's logits beside its probabilities stay scores."""
    assert value_outputs(_heads(logits_out=False)) == frozenset({"box", "landmarks"})
    assert value_outputs(_heads(logits_out=True)) == frozenset({"box", "landmarks"})
    assert value_outputs(_head([helper.make_node("Identity", ["z"], ["y"])])) == frozenset()  # alone


def test_a_value_per_step_of_a_sequence_holds_values() -> None:
    """hunt48 B5: a recognizer's per-step confidence [N, T] (1 / sum(exp(x - max)), by hand) read as class
    scores: 'top-1 agree 40 %' over time steps for a float16 model at 49.5 dB. Declared [N, T] with T
    unnamed it holds values; a classifier's head stays scores whatever its class count is called."""
    tail = [
        helper.make_node("Exp", ["z"], ["e"], name="exp"),
        helper.make_node("ReduceSum", ["e", "axes"], ["s"], name="sum", keepdims=0),
        helper.make_node("Reciprocal", ["e"], ["y"], name="conf"),
    ]
    model = _head(tail, {"axes": np.array([1], np.int64)})
    for out in model.graph.output:
        out.type.tensor_type.shape.dim[1].dim_param = "T"  # the steps, of any count
    assert value_outputs(model) == frozenset({"y"})
    scores = _head([helper.make_node("Identity", ["z"], ["y"])])
    scores.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"
    assert value_outputs(scores) == frozenset()  # a Gemm's: a classifier's head
    fixed = _head(tail, {"axes": np.array([1], np.int64)})
    assert value_outputs(fixed) == frozenset()  # [N, 12]: read as scores, as before
    p = conv_params(5, 3, 3, 7)
    pooled = make_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c", pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
            helper.make_node("Flatten", ["g"], ["y"], name="flat"),
        ],
        {"w": p["w"], "b": p["b"]},
    )
    pooled.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"
    assert value_outputs(pooled) == frozenset()  # a pooled Conv head (review): scores


def test_prelu_written_as_relu_plus_scaled_relu_holds_values() -> None:
    """hunt31's re-identification model ends in Reshape(Add(Relu(x), Mul(Relu(Neg(x)), alpha)))."""
    tail = [*PRELU_BY_HAND[:4], helper.make_node("Add", ["pos", "neg"], ["pr"]), PRELU_BY_HAND[5]]
    extra = {"alpha": np.full(WIDTH, -0.25, np.float32), "shape": np.array([-1, WIDTH], np.int64)}
    assert value_outputs(_head(tail, extra)) == frozenset({"y"})


def test_a_pooled_classifier_keeps_its_scores(tmp_path: Path) -> None:
    """SqueezeNet's head: Conv -> Relu -> GlobalAveragePool -> Flatten are class scores, not features."""
    p = conv_params(WIDTH, 3, 1, 2)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["a"], name="c"),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    assert value_outputs(make_model(nodes, {"w": p["w"], "b": p["b"]})) == frozenset()


def test_an_embedding_has_no_class_figures(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(_head(EMBEDDING, _bn()), tmp_path / "embed.onnx")
    before = model.read_bytes()
    table, int8 = tmp_path / "t.json", tmp_path / "embed.int8.onnx"
    calibration = str(
        image_dir / "dogs"
    )  # the cats held apart: --validation below (dc28f23 refuses a subset)
    code, _, err = run(["calibrate", str(model), "--images", calibration, "--output", str(table)], capsys)
    assert code == 0, err
    assert "FP32 gives class" not in err  # an embedding's largest coordinate is no class
    code, _, err = run(["convert", str(model), "--calibration", str(table), "--output", str(int8)], capsys)
    assert code == 0, err
    report = tmp_path / "c.json"
    argv = ["compare", str(model), str(int8), "--images", str(image_dir), "--runs", "0"]
    code, out, err = run([*argv, "--json", str(report)], capsys)
    assert code == 0, err
    (figures,) = json.loads(report.read_text())["outputs"]
    assert figures["top1_agreement"] is None and figures["top5_overlap"] is None
    assert figures["cosine"] > 0.9
    assert "top-1 agree" in out and "FP32 gives class" not in err
    argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(tmp_path / "s")]
    code, _, err = run([*argv, "--max-drop", "1"], capsys)
    assert_one_line_error(
        code,
        err,
        "--max-drop needs class scores to agree on, and the model's output 'y' holds values",
        "give --min-eval-sqnr DB for a gate on the output's SQNR on the evaluation images instead, or "
        "--output-kind classes",
    )
    assert not (tmp_path / "s").exists()
    argv = ["convert", str(model), "--calibration", str(table), "--output", str(tmp_path / "b.onnx")]
    code, _, err = run([*argv, "--max-drop", "1", "--validation", str(image_dir / "cats")], capsys)
    assert_one_line_error(code, err, "--max-drop needs class scores to agree on")
    assert not (tmp_path / "b.onnx").exists()
    assert model.read_bytes() == before


def _landmarks(path: Path) -> Path:
    """A regression head as PFLD writes it: Gemm -> [N, WIDTH] coordinates, whose largest is nearly always
    the same one (a bias far above the rest): the graph cannot tell it from a classifier's logits."""
    bias = np.zeros(WIDTH, np.float32)
    bias[3] = 50.0
    return save(_head([helper.make_node("Add", ["z", "shift"], ["y"])], {"shift": bias}), path)


def test_output_kind_says_what_the_graph_cannot(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt33: PFLD's [N, 136] landmarks (Gemm) read 'top-1 agree 84 %'; a face-quality model's ordinal
    scores drew 'FP32 gives class 0 for 24 of 24 images: its input is likely wrong', and shrink failed its
    FP32 gate on it."""
    model = _landmarks(tmp_path / "pfld.onnx")
    table, int8 = tmp_path / "t.json", tmp_path / "p.int8.onnx"
    calibrate = ["calibrate", str(model), "--images", str(image_dir), "--output", str(table)]
    code, _, err = run(calibrate, capsys)
    assert code == 0 and "FP32 gives class 3 of output 'y' for 24 of 24 images" in err
    assert "say so with --output-kind values" in err
    code, _, err = run([*calibrate, "--output-kind", "values"], capsys)
    assert code == 0 and "FP32 gives class" not in err, err
    code, _, err = run(["convert", str(model), "--calibration", str(table), "--output", str(int8)], capsys)
    assert code == 0, err
    report = tmp_path / "c.json"
    argv = ["compare", str(model), str(int8), "--images", str(image_dir), "--runs", "0"]
    for kind, scored in (("auto", True), ("values", False)):
        code, _, err = run([*argv, "--output-kind", kind, "--json", str(report)], capsys)
        assert code == 0, err
        (figures,) = json.loads(report.read_text())["outputs"]
        assert (figures["top1_agreement"] is not None) is scored
        findings = json.loads(report.read_text())["reference_findings"]
        assert [line.startswith("FP32 gives class 3 of output 'y'") for line in findings] == [scored] * scored
    argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(tmp_path / "s")]
    code, _, err = run([*argv, "--max-drop", "1", "--output-kind", "values"], capsys)
    assert_one_line_error(code, err, "--max-drop needs class scores to agree on, and --output-kind values")
    code, _, err = run([*argv, "--min-speedup", "0.01", "--runs", "2", "--output-kind", "values"], capsys)
    assert code == 0, err  # no 'FP32 reference' gate failure on the values' own largest coordinate
    argv = ["convert", str(model), "-c", str(table), "-o", str(tmp_path / "b.onnx")]
    code, _, err = run([*argv, "--output-kind", "values"], capsys)
    assert_one_line_error(code, err, "convert reads --output-kind only with --max-drop")


def test_output_kind_classes_keeps_an_embedding_s_top1(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import quantkit

    model = save(_head(EMBEDDING, _bn()), tmp_path / "embed.onnx")
    table = quantkit.calibrate(model, image_dir, output=tmp_path / "t.json").table
    int8 = tmp_path / "e.int8.onnx"
    quantkit.convert(model, calibration=table, output=int8)
    for kind, scored in (("auto", False), ("classes", True)):
        result = quantkit.compare(model, int8, data=image_dir, runs=0, output_kind=kind)
        assert (result.outputs[0].top1_agreement is not None) is scored
    with pytest.raises(quantkit.ConfigError, match="output_kind must be one of"):
        quantkit.compare(model, int8, data=image_dir, runs=0, output_kind="embedding")


def test_shrink_gates_an_embedding_on_its_held_out_sqnr(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt33: an image retoucher measured 10.1 dB on held-out photos and shrink said 'all gates pass':
    --max-drop has no figure for values, and nothing else looked at the output. --min-eval-sqnr does."""
    model = save(_head(EMBEDDING, _bn()), tmp_path / "embed.onnx")
    argv = ["shrink", str(model), "--images", str(image_dir), "--runs", "0"]
    for limit, code_wanted in (("5", 0), ("300", 1)):
        out = tmp_path / f"s{limit}"
        code, shown, err = run([*argv, "--output-dir", str(out), "--min-eval-sqnr", limit], capsys)
        assert code == code_wanted, err
        (gate,) = json.loads((out / "report.json").read_text())["gates"]
        assert gate["name"] == "min_eval_sqnr" and gate["limit"] == float(limit)
        assert gate["passed"] is (code_wanted == 0) and 5 < gate["measured"] < 300
        assert "output SQNR" in shown and f">= {limit}" in shown
    code, _, err = run([*argv, "--output-dir", str(tmp_path / "x"), "--min-eval-sqnr", "nan"], capsys)
    assert_one_line_error(code, err, "--min-eval-sqnr takes one number; got nan")


def test_a_rank_0_output_converts_and_compares(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model returning a scalar beside its logits (torch: `return logits, feat.mean()`; a ReduceMean
    over every axis, keepdims=0) crashed every convert and compare: 'len() of unsized object' (hq59 B2).
    It is read as one value a run."""
    tail = [
        helper.make_node("Identity", ["z"], ["y"]),
        helper.make_node("ReduceMean", ["r"], ["energy"], keepdims=0),
    ]
    model = save(_head(tail, outputs=["y", "energy"]), tmp_path / "m.onnx")
    assert onnx.load(str(model)).graph.output[1].type.tensor_type.shape.dim == []
    table = tmp_path / "t.calib.json"
    code, _, err = run(["calibrate", str(model), "--images", str(image_dir), "-o", str(table)], capsys)
    assert code == 0, err
    for name, extra in (("i8", ["-c", str(table)]), ("f16", ["--to", "fp16"])):
        out = tmp_path / f"{name}.onnx"
        code, _, err = run(["convert", str(model), *extra, "-o", str(out), "-q"], capsys)
        assert code == 0, err
        rows = compared_rows(model, out, image_dir, capsys)
        assert rows["energy"]["sqnr_db"] > 30.0 and rows["y"]["sqnr_db"] > 20.0


def test_a_class_name_output_is_carried_and_measured_by_its_index(
    tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq110 F4: a classifier that also outputs its class name (ArgMax, then ai.onnx.ml's LabelEncoder)
    calibrated, then every convert, compare and shrink stopped in an internal error on the text. The
    text is not fetched; the scores it is written from are measured; the model written keeps it."""
    import onnxruntime as ort

    model = _head([helper.make_node("Identity", ["z"], ["y"], name="id")])
    names = helper.make_node(
        "LabelEncoder",
        ["k"],
        ["label"],
        name="names",
        domain="ai.onnx.ml",
        keys_int64s=list(range(WIDTH)),
        values_strings=[f"class {c}" for c in range(WIDTH)],
    )
    model.graph.node.extend([helper.make_node("ArgMax", ["y"], ["k"], name="am", axis=1, keepdims=0), names])
    model.graph.output.append(helper.make_tensor_value_info("label", onnx.TensorProto.STRING, ["N"]))
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    path = save(model, tmp_path / "named.onnx")
    table = tmp_path / "t.calib.json"
    assert run(["calibrate", str(path), "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    x = np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32)
    for to in ("int8", "fp16"):
        out = tmp_path / f"{to}.onnx"
        argv = ["convert", str(path), "--to", to, "-c", str(table), "-o", str(out)]
        argv += ["--prefer", "accuracy"] if to == "int8" else []
        code, _, err = run(argv, capsys)
        assert code == 0, err
        read = [ort.InferenceSession(str(m)).run(["label"], {"x": x})[0] for m in (path, out)]
        assert read[1].dtype == object and (read[0] == read[1]).mean() >= 0.75
    argv = ["compare", str(path), str(tmp_path / "int8.onnx"), "--images", str(image_dir), "--runs", "0"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    del model.graph.output[0]  # hq116 F2: text alone was an internal error in convert and compare
    only = save(model, tmp_path / "only.onnx")
    code, _, err = run(
        ["calibrate", str(only), "--images", str(image_dir), "-o", str(tmp_path / "o.json")], capsys
    )
    assert_one_line_error(code, err, "every output of only.onnx is text ('label': class names)")


def test_a_sigmoid_mask_map_is_said_to_have_no_per_pixel_figure() -> None:
    """hq111 F1: a skin / clothes / hair segmenter (Conv -> Sigmoid, 3 masks at the input's size) measured
    14.1 dB, mask IoU 0.42 on one image, and compare said nothing under auto or --output-kind classes."""
    from quantkit.config import OutputKind
    from quantkit.pipeline.compare_notes import maps_unscored

    p = conv_params(4, 3, 3, 3)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["z"], name="c", pads=[1, 1, 1, 1])
    masks = make_model(
        [conv, helper.make_node("Sigmoid", ["z"], ["y"], name="s")], {"w": p["w"], "b": p["b"]}
    )
    for kind in (OutputKind.auto, OutputKind.classes):
        line = maps_unscored(masks, kind, {"y": [1, 4, 16, 16]}, (16, 16))
        assert line is not None and line.startswith("output(s) 'y' [1, 4, 16, 16] are per-pixel masks")
    logits = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="c", pads=[1, 1, 1, 1])], p)
    assert "per-pixel masks" not in (
        maps_unscored(logits, OutputKind.auto, {"y": [1, 4, 16, 16]}, (16, 16)) or ""
    )
