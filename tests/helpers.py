"""Test helpers: run the pipeline on tiny models and inspect what onnxruntime makes of the result."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from quantkit import pipeline
from quantkit.cli import main
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection
from quantkit.evaluate.metrics import sqnr_db
from quantkit.image_folders import find_images
from quantkit.images import ImageLoader
from quantkit.outcomes import ConvertSummary
from quantkit.runtime import Session

# convert's warning (stderr, kept under --quiet) when the plan left every layer float
NOTHING_QUANTIZED = (
    "no layer was quantized: the model written computes as the FP32 model does; each op's reason is in "
    "convert's table (too small for int8 to pay for its Q/DQ, slower in int8 on this CPU, kept float for "
    "accuracy with their input paths, no statistics, or excluded)"
)
# ... followed by this where the speed-aware plan floated a layer that only timed slower in int8
UNDONE_BY_ACCURACY = "; --prefer accuracy writes the layers that only timed slower in int8"


def quantize(
    model: onnx.ModelProto,
    tmp: Path,
    images: Path,
    config: ConvertConfig | None = None,
) -> tuple[ConvertSummary, Path]:
    src = tmp / "model.onnx"
    onnx.save(model, str(src))
    table = tmp / "model.calib.json"
    pipeline.calibrate(src, table, CalibrateConfig(images=ImageSelection(images)))
    out = tmp / "model.int8.onnx"
    summary = pipeline.convert(src, table, out, config or ConvertConfig())
    return summary, out


def output_sqnr(reference: Path, candidate: Path, images: Path) -> float:
    """SQNR (dB) of the candidate's first output against the reference's, over the image folder."""
    return output_agreement(reference, candidate, images)[0]


def output_agreement(
    reference: Path, candidate: Path, images: Path, table: Path | None = None
) -> tuple[float, float]:
    """(SQNR in dB, top-1 agreement in [0, 1]) of the candidate's first output against the reference's
    over the image folder; preprocessed as recorded in `table` (default: model.calib.json beside it)."""
    from quantkit.calib.table import load
    from quantkit.config import Preprocess

    recorded = load(table or reference.with_name("model.calib.json"))
    pre = Preprocess.from_dict(recorded.meta["preprocess"])
    ref = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    cand = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"])
    signal = noise = 0.0
    agree = total = 0
    for batch in ImageLoader(find_images(images), pre, 8):
        feed = {ref.get_inputs()[0].name: batch.data}
        r = ref.run(None, feed)[0].astype(np.float64)
        c = cand.run(None, feed)[0].astype(np.float64)
        signal += float(np.sum(r * r))
        noise += float(np.sum((r - c) ** 2))
        agree += int(np.sum(r.reshape(len(r), -1).argmax(1) == c.reshape(len(c), -1).argmax(1)))
        total += len(r)
    return sqnr_db(signal, noise), agree / max(total, 1)


def optimized_graph(
    path: Path, tmp: Path, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
) -> onnx.ModelProto:
    """The graph onnxruntime runs after its QDQ fusions (by default the extended level: no layout-specific
    rewrites; ORT_ENABLE_ALL adds them, NhwcMaxPool among them)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp / "optimized.onnx"))


def run_outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """Every output of `model` (its input named x) in onnxruntime, on x."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, {"x": x})]


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


def dq_feeds_q(model: onnx.ModelProto) -> list[str]:
    """Names of Q nodes that read a DQ's output directly (a needless pair)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
        and getattr(producers.get(n.input[0]), "op_type", "") == "DequantizeLinear"
    ]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["quantkit", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def compared_rows(
    reference: Path, candidate: Path, images: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> dict[str, dict[str, Any]]:
    """`quantkit compare` of the two models over `images` (no timing), which must exit 0: its JSON
    report's output rows by name."""
    report = candidate.with_name(candidate.stem + ".compare.json")
    argv = ["compare", str(reference), str(candidate), "--images", str(images), "--runs", "0", *extra]
    code, _, err = run([*argv, "--json", str(report)], capsys)
    assert code == 0, err
    return {row["name"]: row for row in json.loads(report.read_text())["outputs"]}


def timeless(summary: str) -> str:
    """convert's console summary without its measured speed (timing differs run to run; the bytes and the
    rest of the summary must not)."""
    gain = r"note: of the [0-9.]+x, int8 gives .*?offline optimization\)\n"  # reports.formats.prepared_gain
    summary = re.sub(gain, "", summary, flags=re.S)
    return re.sub(r"speed on this CPU:.*?calibration sample\)\n", "", summary, flags=re.S)


def assert_one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def count_sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every session the accuracy fallback opens (each one a model built and run) appends to the list
    returned; the sessions themselves are the real ones."""
    opened: list[int] = []
    real_of = Session.of

    def counted(model: onnx.ModelProto, *args: object, **kwargs: object) -> Session:
        opened.append(1)
        return real_of(model, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Session, "of", counted)
    return opened


def images_and_a_broken_one(image_dir: Path, folder: Path, broken: str) -> Path:
    """A copy of image_dir at `folder` with one unreadable file more (`broken`, relative to it)."""
    import shutil

    shutil.copytree(image_dir, folder)
    (folder / broken).write_bytes(b"\xff\xd8\xff\xe0 not an image")
    return folder
