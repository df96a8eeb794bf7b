"""Models whose nodes are listed out of topological order (onnxconverter-common's float16 conversion
appends its input Casts after their readers): onnx.checker refuses them, onnxruntime runs them, and
quantkit sorts them on load instead of refusing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantkit.errors import ModelError
from quantkit.graph.model_io import load_model
from quantkit.graph.toposort import sort_nodes
from quantkit.runtime import Session
from tests.conftest import SIZE, conv_params, make_model, save
from tests.helpers import run


def _cast_listed_last() -> onnx.ModelProto:
    """x -> Cast(float16) -> Cast(float32) -> Conv -> Relu -> pool -> y, the two Casts listed last."""
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["x16"], ["x32"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x32", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ]
    model = make_model(nodes, conv_params(4, 3))
    moved = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(moved[2:] + moved[:2])
    return model


def test_a_model_listed_out_of_order_loads_sorted(tmp_path: Path) -> None:
    model = _cast_listed_last()
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)
    path = save(model, tmp_path / "unsorted.onnx")
    before = path.read_bytes()
    loaded = load_model(path)
    assert [n.op_type for n in loaded.graph.node] == [
        "Cast",
        "Cast",
        "Conv",
        "Relu",
        "GlobalAveragePool",
        "Flatten",
    ]
    assert path.read_bytes() == before  # the file itself is untouched
    x = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    ours = Session(loaded.SerializeToString()).run_batch(x)["y"]
    theirs = Session(path).run_batch(x)["y"]  # onnxruntime sorts on its own
    np.testing.assert_array_equal(ours, theirs)


def test_an_unsorted_model_calibrates_and_converts(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save(_cast_listed_last(), tmp_path / "unsorted.onnx")
    table, out = tmp_path / "t.json", tmp_path / "q.onnx"
    code, _, err = run(["calibrate", str(path), "--images", str(image_dir), "-o", str(table)], capsys)
    assert code == 0, err
    code, _, err = run(["convert", str(path), "-c", str(table), "-o", str(out)], capsys)
    assert code == 0, err
    onnx.checker.check_model(onnx.load(str(out)))


def test_a_subgraph_read_counts_as_a_dependency() -> None:
    """An If whose branch reads `t` from the outer graph goes after t's producer, though it reads t
    through no input of its own."""
    branch = helper.make_graph(
        [helper.make_node("Identity", ["t"], ["o"])],
        "then",
        [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["o2"])],
        "else",
        [],
        [helper.make_tensor_value_info("o2", TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [
            helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other),
            helper.make_node("Neg", ["x"], ["t"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    assert sort_nodes(graph)
    assert [n.op_type for n in graph.node] == ["Neg", "If"]
    assert not sort_nodes(graph)  # already in order: nothing moves


def test_a_dangling_input_still_fails_the_checker(tmp_path: Path) -> None:
    model = _cast_listed_last()
    model.graph.node[0].input[0] = "undefined"  # the Conv, listed first, now reads a name nothing makes
    with pytest.raises(ModelError, match=r"fails onnx\.checker"):
        load_model(save(model, tmp_path / "m.onnx"))
