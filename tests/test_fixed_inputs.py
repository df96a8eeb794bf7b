"""Images feed a model whose other inputs get one value for every image (--input-value NAME=V[,V...]):
RT-DETR's orig_target_sizes, PaddleDetection's scale_factor. Refused before ('the model has 2 inputs');
now calibrate, convert, compare and shrink run on images, the value is recorded with the preprocessing,
and what is computed from it stays float."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantkit.calib.table import load
from tests.conftest import conv_params, make_model
from tests.helpers import assert_one_line_error, run

Capsys = pytest.CaptureFixture[str]
SIZE = "orig_target_sizes"


def _detector(path: Path, size_shape: list[int | str] | None = None) -> Path:
    """image [N,3,32,32] -> 3 Conv+Relu -> pooled features [N,32]; times the larger of the int64 size
    [N,2] (cast), then a MatMul: the product's range is the size's, which the deployment changes."""
    g = np.random.default_rng(3)
    weights, nodes, x, c = [], [], "image", 3
    for k, co in enumerate((16, 32, 32)):
        w = g.normal(0, np.sqrt(2 / (9 * c)), (co, c, 3, 3)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [
            helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], name=f"conv{k}", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{k}"], [f"r{k}"], name=f"relu{k}"),
        ]
        x, c = f"r{k}", co
    weights.append(numpy_helper.from_array(g.normal(0, 0.2, (32, 8)).astype(np.float32), "head_w"))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Cast", [SIZE], ["size_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["size_f"], ["side"], name="side", axes=[1], keepdims=1),
        helper.make_node("Mul", ["flat", "side"], ["scaled"], name="scale"),
        helper.make_node("MatMul", ["scaled", "head_w"], ["boxes"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "sized",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32]),
            helper.make_tensor_value_info(SIZE, TensorProto.INT64, size_shape or ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 8]),
            helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 32]),
        ],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _calibrate(model: Path, images: Path, table: Path, capsys: Capsys, *values: str) -> tuple[int, str, str]:
    """quantkit calibrate MODEL --images IMAGES -o TABLE with an --input-value for each of `values`."""
    argv = ["calibrate", str(model), "--images", str(images), "-o", str(table)]
    return run([*argv, *(a for v in values for a in ("--input-value", v))], capsys)


def _outputs(path: Path, image: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sizes = np.tile(np.asarray([size], np.int64), (len(image), 1))
    values = session.run(None, {"image": image, SIZE: sizes})
    return {o.name: v for o, v in zip(session.get_outputs(), values, strict=True)}


def _db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    return 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / max(noise, 1e-30))


def test_images_feed_a_model_with_a_fixed_size_input(image_dir: Path, tmp_path: Path, capsys: Capsys) -> None:
    model = _detector(tmp_path / "det.onnx")
    before = model.read_bytes()
    table, out = tmp_path / "t.json", tmp_path / "q.onnx"
    code, stdout, err = _calibrate(model, image_dir, table, capsys, f"{SIZE}=640,480")
    assert code == 0, err
    assert f"; images feed 'image'; {SIZE}=640,480" in " ".join(stdout.split())  # the preprocessing line
    assert "reach 640" not in err  # the size is no pixel value (the inputs' range check reads images)
    recorded = load(table)
    assert recorded.meta["preprocess"]["fixed_inputs"] == [
        {"name": SIZE, "shape": [2], "values": [640.0, 480.0]}
    ]
    assert isinstance(recorded.samples, dict) and set(recorded.samples) == {"image", SIZE}
    assert np.array_equal(recorded.samples[SIZE], np.tile([[640.0, 480.0]], (len(recorded.samples[SIZE]), 1)))
    assert isinstance(recorded.stress, dict) and set(recorded.stress) == {
        "image",
        SIZE,
    }  # --range-cap's images

    code, _, err = run(
        ["convert", str(model), "-c", str(table), "-o", str(out), "--prefer", "accuracy"], capsys
    )
    assert code == 0, err
    written = onnx.load(str(out))
    assert [i.name for i in written.graph.input] == ["image", SIZE]
    assert sum(n.op_type == "QuantizeLinear" for n in written.graph.node) > 0  # the convolutions are int8
    writers = {o: n.op_type for n in written.graph.node for o in n.output}
    reads = {n.name: [writers.get(i, "") for i in n.input] for n in written.graph.node}
    assert reads["scale"] == ["Flatten", "ReduceMax"] and reads["head"][0] == "Mul", (
        reads
    )  # float from the size
    image = np.random.default_rng(0).normal(0, 1, (4, 3, 32, 32)).astype(np.float32)
    for size in ((640, 480), (1920, 1080)):  # a deployment's size, never calibrated, is not clipped
        fp32, int8 = _outputs(model, image, size), _outputs(out, image, size)
        assert _db(fp32["boxes"], int8["boxes"]) > 25.0, size
        assert _db(fp32["boxes"], int8["boxes"]) == pytest.approx(_db(fp32["flat"], int8["flat"]), abs=0.5)

    # compare reads the value the converted model records; the FP32 model gets it too
    report = tmp_path / "c.json"
    code, stdout, err = run(
        ["compare", str(model), str(out), "--images", str(image_dir), "--json", str(report)], capsys
    )
    assert code == 0, err
    assert f"; {SIZE}=640,480" in " ".join(stdout.split())
    assert json.loads(report.read_text())["settings"]["preprocess"]["fixed_inputs"][0]["values"] == [
        640.0,
        480.0,
    ]
    assert model.read_bytes() == before


def test_shrink_takes_the_value(image_dir: Path, tmp_path: Path, capsys: Capsys) -> None:
    model = _detector(tmp_path / "det.onnx")
    out = tmp_path / "shrunk"
    argv = ["shrink", str(model), "--images", str(image_dir), "--output-dir", str(out)]
    code, _, err = run([*argv, "--input-value", f"{SIZE}=320,320"], capsys)
    assert code == 0, err
    assert [i.name for i in onnx.load(str(out / "det.int8.onnx")).graph.input] == ["image", SIZE]


def test_a_size_input_without_a_batch_axis(image_dir: Path, tmp_path: Path, capsys: Capsys) -> None:
    """PicoDet's scale_factor [1, 2] beside a dynamic image batch: one image a run, fed [1, 2]."""
    model = _detector(tmp_path / "det.onnx", size_shape=[1, 2])
    table = tmp_path / "t.json"
    code, _, err = _calibrate(model, image_dir, table, capsys, f"{SIZE}=1,1")
    assert code == 0, err
    assert load(table).meta["batch_size"] == 1


@pytest.mark.parametrize(
    ("values", "phrases"),
    [
        (
            [],
            (
                "the model has 2 inputs (image, orig_target_sizes); images feed one of them",
                "--input-value orig_target_sizes=...",
            ),
        ),
        (
            ["sizes=640,640"],
            (
                "--input-value names 'sizes', which is not an input of the model",
                "(inputs: 'image', 'orig_target_sizes')",
            ),
        ),
        (
            [f"{SIZE}=640"],
            (
                "--input-value orig_target_sizes= gives 1 value(s);",
                "input 'orig_target_sizes' [?,2] takes 2 values an image",
            ),
        ),
        (
            [f"{SIZE}=640.5,480"],
            (
                "--input-value orig_target_sizes= gives 640.5,480;",
                "input 'orig_target_sizes' is int64: give whole numbers",
            ),
        ),
        ([f"{SIZE}=640,x"], ("--input-value orig_target_sizes= takes numbers separated by commas",)),
        ([f"{SIZE}=640,inf"], ("--input-value orig_target_sizes= takes finite numbers",)),
        (
            [SIZE],
            ("--input-value takes NAME=V[,V...] (e.g. orig_target_sizes=640,640); got 'orig_target_sizes'",),
        ),
        ([f"{SIZE}=1,2", f"{SIZE}=3,4"], ("--input-value gives 'orig_target_sizes' twice",)),
    ],
)
def test_bad_values_fail_in_one_line(
    values: list[str], phrases: tuple[str, ...], image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    model = _detector(tmp_path / "det.onnx")
    table = tmp_path / "t.json"
    code, _, err = _calibrate(model, image_dir, table, capsys, *values)
    assert_one_line_error(code, err, *phrases)
    assert not table.exists() and not table.with_suffix(".npz").exists()


def test_the_image_input_takes_no_value(image_dir: Path, tmp_path: Path, capsys: Capsys) -> None:
    model = _detector(tmp_path / "det.onnx")
    code, _, err = _calibrate(model, image_dir, tmp_path / "t.json", capsys, f"{SIZE}=1,1", "image=0")
    assert code == 2 and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_the_api_takes_a_mapping(image_dir: Path, tmp_path: Path) -> None:
    import quantkit

    model = _detector(tmp_path / "det.onnx")
    options = quantkit.Preprocess(input_values={SIZE: np.array([640, 480])})
    assert options.input_values == ((SIZE, (640.0, 480.0)),)
    summary = quantkit.calibrate(model, data=image_dir, output=tmp_path / "t.json", preprocess=options)
    assert summary.preprocess is not None and summary.preprocess.fixed[0].values == (640.0, 480.0)
    with pytest.raises(quantkit.ConfigError, match="model-ready arrays name every input"):
        arrays = [{"image": np.zeros((3, 32, 32), np.float32), SIZE: np.array([1, 1])}]
        quantkit.calibrate(model, data=arrays, output=tmp_path / "a.json", preprocess=options)


def _typed(path: Path, kind: int, shape: list[int | str] | None = None, shape_only: bool = False) -> Path:
    """image [N,3,16,16] -> Conv -> Relu -> pooled [N,4]; s of type `kind` cast to float, [N,4] summed in;
    shape_only: s read only for its batch size (Shape -> Gather), which reshapes the pooled features."""
    g = np.random.default_rng(9)
    w = numpy_helper.from_array(g.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
    ]
    inits = [w]
    if shape_only:
        nodes += [
            helper.make_node("Shape", ["s"], ["n"], name="shape", start=0, end=1),
            helper.make_node("Concat", ["n", "four"], ["to"], name="to", axis=0),
            helper.make_node("Reshape", ["p", "to"], ["y"], name="flat"),
        ]
        inits.append(numpy_helper.from_array(np.array([4], np.int64), "four"))
    else:
        nodes += [
            helper.make_node("Flatten", ["p"], ["f"], name="flat"),
            helper.make_node("Cast", ["s"], ["sf"], name="cast", to=TensorProto.FLOAT),
            helper.make_node("Add", ["f", "sf"], ["y"], name="add"),
        ]
    graph = helper.make_graph(
        nodes,
        "typed",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 16, 16]),
            helper.make_tensor_value_info("s", kind, shape or ["N", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("kind", "value", "phrase"),
    [  # hq67 F1, F2, F10: each was accepted, recorded as given and fed as something else
        (TensorProto.FLOAT, "1e39,1,1,1", "input 's' is float32: give values within +-3.40282e+38"),
        (TensorProto.UINT8, "-5,300,0,0", "input 's' is uint8: give whole numbers from 0 to 255"),
        (TensorProto.UINT8, "0.5,1,1,1", "input 's' is uint8: give whole numbers"),
        (TensorProto.BOOL, "0.5,-3,1,0", "input 's' is bool: give 0 or 1 (false or true)"),
        (TensorProto.INT64, "16777217,1,1,1", "give whole numbers from -16777216 to 16777216"),
        (TensorProto.INT32, "1e30,1,1,1", "input 's' is int32: give whole numbers"),
    ],
)
def test_a_value_the_input_cannot_hold_is_refused(
    kind: int, value: str, phrase: str, image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    model = _typed(tmp_path / "m.onnx", kind)
    table = tmp_path / "t.json"
    code, _, err = _calibrate(model, image_dir, table, capsys, f"s={value}")
    assert_one_line_error(code, err, phrase)
    assert not table.exists()


def test_an_input_read_for_its_shape_keeps_nothing_float(
    image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq67 F3: a Shape reads no value; the Conv it never reaches stays int8."""
    model = _typed(tmp_path / "m.onnx", TensorProto.FLOAT, shape_only=True)
    table, out = tmp_path / "t.json", tmp_path / "q.onnx"
    assert _calibrate(model, image_dir, table, capsys, "s=1,2,3,4")[0] == 0
    code, _, err = run(
        ["convert", str(model), "-c", str(table), "-o", str(out), "--prefer", "accuracy"], capsys
    )
    assert code == 0, err
    written = onnx.load(str(out))
    conv = next(n for n in written.graph.node if n.op_type == "Conv")
    writers = {o: n.op_type for n in written.graph.node for o in n.output}
    assert writers[conv.input[0]] == "DequantizeLinear"


def test_a_config_file_and_the_api_forms(image_dir: Path, tmp_path: Path, capsys: Capsys) -> None:
    """hq67 F4, F5: a TOML array was joined into one value ('Value must be an iterable'); the API took a
    string character by character and raised numpy's errors for {'s': '3,4'}."""
    import quantkit
    from quantkit.config.fixed_inputs import given_values

    model = _typed(tmp_path / "m.onnx", TensorProto.FLOAT)
    (tmp_path / "quantkit.toml").write_text('input-value = ["s=1,2,3,4"]\n')
    table = tmp_path / "t.json"
    code, _, err = _calibrate(model, image_dir, table, capsys)
    assert code == 0, err
    assert load(table).meta["preprocess"]["fixed_inputs"][0]["values"] == [1.0, 2.0, 3.0, 4.0]
    expected = (("s", (3.0, 4.0)),)
    assert given_values("s=3,4") == given_values({"s": "3,4"}) == given_values([("s", [3, 4])]) == expected
    assert given_values(["a=b=1"]) == (("a=b", (1.0,)),)  # an input named 'a=b'
    for bad in ({"s": None}, [("s", 3, 4)], {"s": []}, [3]):
        with pytest.raises(quantkit.ConfigError, match="input_values takes"):
            given_values(bad)


def test_compare_merges_given_values_over_recorded_ones(
    image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq67 F6, F8: one --input-value threw the others recorded away; a recorded input the reference has
    not was blamed on a flag never given."""
    model = _detector(tmp_path / "det.onnx")
    table, out = tmp_path / "t.json", tmp_path / "q.onnx"
    assert _calibrate(model, image_dir, table, capsys, f"{SIZE}=64,64")[0] == 0
    assert run(["convert", str(model), "-c", str(table), "-o", str(out)], capsys)[0] == 0
    report = tmp_path / "c.json"
    argv = ["compare", str(model), str(out), "--images", str(image_dir), "--runs", "0", "--json", str(report)]
    code, stdout, err = run([*argv, "--input-value", f"{SIZE}=32,32"], capsys)
    assert code == 0, err
    assert "images feed 'image'; orig_target_sizes=32,32" in " ".join(stdout.split())
    other = _typed(tmp_path / "other.onnx", TensorProto.FLOAT)
    code, _, err = run(["compare", str(other), str(out), "--images", str(image_dir), "--runs", "0"], capsys)
    assert_one_line_error(
        code,
        err,
        "the candidate records a value for input 'orig_target_sizes' (calibrated with --input-value)",
    )


def test_an_input_without_a_batch_axis_and_the_image_named(
    image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq67 F7, F9: a value for an input [4] was said to take 1 value; a value for the image input was
    answered about another input's shape."""
    model = _typed(tmp_path / "m.onnx", TensorProto.FLOAT, shape=[4])
    code, _, err = _calibrate(model, image_dir, tmp_path / "t.json", capsys, "s=1,2,3,4")
    assert_one_line_error(code, err, "input 's' [4] has no batch dimension like the image input's")
    code, _, err = _calibrate(model, image_dir, tmp_path / "t.json", capsys, "image=1")
    assert_one_line_error(code, err, "--input-value names 'image', the input the images feed")


def test_float16_inputs_refuse_a_value_past_their_range(
    image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq67 F10: 100000 fed to the float16 input of --no-keep-io-types was numpy's overflow warning and
    'the float16 model fails ... even where every node stays float32'."""
    model = _typed(tmp_path / "m.onnx", TensorProto.FLOAT)
    table, out = tmp_path / "t.json", tmp_path / "h.onnx"
    assert _calibrate(model, image_dir, table, capsys, "s=100000,1,1,1")[0] == 0
    argv = ["convert", str(model), "-c", str(table), "-o", str(out), "--to", "fp16"]
    code, _, err = run([*argv, "--no-keep-io-types"], capsys)
    assert_one_line_error(code, err, "input 's' is fed values up to 100000 (the calibration samples), beyond")
    assert not out.exists()
    assert run(argv, capsys)[0] == 0  # float32 inputs take it


def test_a_value_for_the_only_input_says_it_is_the_image_one(
    image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq114 F8: --input-value x=1 on a one-input model read 'give the others a value for every image ()'."""
    from tests.conftest import tiny_cnn

    model = tiny_cnn(tmp_path / "cnn.onnx")
    argv = [
        "calibrate",
        str(model),
        "--images",
        str(image_dir),
        "-o",
        str(tmp_path / "t.json"),
        "--input-value",
        "x=1",
    ]
    code, _, err = run(argv, capsys)
    assert_one_line_error(
        code, err, "--input-value gives every input of the model a value (x), the one the images"
    )


@pytest.mark.parametrize("command", ["calibrate", "convert-fp16", "shrink"])
def test_a_model_with_no_inputs_says_so(
    command: str, image_dir: Path, tmp_path: Path, capsys: Capsys
) -> None:
    """hq169 F1: a model whose input was exported as a Constant (no graph input) read '--input-value gives
    every input of the model a value (), ...', an option nobody gave (convert has none)."""
    from quantkit.graph.model_inputs import NO_INPUTS

    p = conv_params(4, 3, seed=0)
    x = numpy_helper.from_array(np.ones((1, 3, 8, 8), np.float32), "x")
    nodes = [
        helper.make_node("Constant", [], ["k"], value=x),
        helper.make_node("Conv", ["k", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    model = make_model(nodes, p)
    del model.graph.input[:]
    path = tmp_path / "constant.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    out.mkdir()
    argv = {
        "calibrate": ["calibrate", str(path), "--images", str(image_dir), "-o", str(out / "t.json")],
        "convert-fp16": ["convert", str(path), "--to", "fp16", "-o", str(out / "m.onnx")],
        "shrink": ["shrink", str(path), "--images", str(image_dir), "--output-dir", str(out)],
    }[command]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, NO_INPUTS)
    assert not list(out.iterdir())
    # hq170 F5: an input with a default value (an initializer of its name) is no missing input
    defaulted = make_model(
        nodes[1:], {**p, "k": np.ones((1, 3, 8, 8), np.float32)}, input_name="k", input_shape=(1, 3, 8, 8)
    )
    onnx.save(defaulted, str(path))
    code, _, err = run(argv, capsys)
    assert_one_line_error(
        code, err, "every input of the model (k) has a default value stored as an initializer"
    )
    assert not list(out.iterdir())
