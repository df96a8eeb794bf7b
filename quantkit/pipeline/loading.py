"""What every command checks before it works: a float model, a quantizable one, the table made for it."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from queue import Full, Queue
from threading import Thread
from typing import Any, TypeVar

import numpy as np
import onnx

from quantkit.calib import table as table_io
from quantkit.config import (
    ConvertConfig,
    ImageSelection,
    Preprocess,
    Target,
    WeightRange,
)
from quantkit.cpu import int8_saturates
from quantkit.data import feed_side
from quantkit.errors import (
    CalibrationError,
    ConfigError,
    ModelError,
    OutputError,
)
from quantkit.files import data_files
from quantkit.graph import model_io
from quantkit.graph.already_quantized import low_bit_weights, quantized_ops
from quantkit.graph.augment import COMPUTE_OPS
from quantkit.graph.file_kinds import optimized_by_ort, training_refusal
from quantkit.graph.float_formats import FLOAT16
from quantkit.graph.prepare import Prepared, prepare
from quantkit.graph.query import function_nodes
from quantkit.graph.unfuse import unfusable
from quantkit.graph.widen import widenable
from quantkit.image_folders import left_out
from quantkit.images import TOO_LARGE
from quantkit.results import CalibrationTable, Feed, feed_rows, feed_take, half_overflow, sample_batches
from quantkit.runtime import Session

T = TypeVar("T")


def require_float(model: onnx.ModelProto, path: Path) -> None:
    """Refuse a model that is quantized already (QDQ or QOperator), or saved after onnxruntime's graph
    optimizations (file_kinds.optimized_by_ort): its float original is what converts."""
    if optimized := optimized_by_ort(model, path):
        raise ModelError(optimized)
    if training := training_refusal(model, path):
        raise ModelError(training)
    found = quantized_ops(model)
    low = low_bit_weights(model)
    if found or low:
        ops = [f"{count} {op}" for op, count in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))]
        weights = [f"{count} layer weight(s) stored as {kind}" for kind, count in sorted(low.items())]
        raise ModelError(
            f"{path.name} is quantized already ({', '.join(ops + weights)}); quantkit converts float models: "
            "give it the FP32 original"
        )
    # mixed precision and float16 interfaces are read as float32 (graph.widen); bfloat16 ones are not
    halves = {} if widenable(model) else _half_weights(model)
    if halves:
        kinds = "/".join(sorted({onnx.TensorProto.DataType.Name(t) for t in halves.values()}))
        layers = sum(node.op_type in COMPUTE_OPS for node in model.graph.node)
        raise ModelError(
            f"{path.name} is {kinds.lower()} already ({len(halves)} of its {layers} Conv/Gemm/MatMul weights "
            f"are {kinds}) and its inputs or outputs are bfloat16, which quantkit cannot feed: give it the "
            "FP32 original, or export it again with float32 (or float16) inputs and outputs"
        )


BF16_FIX = (
    "convert's summary gives its SQNR, measured on its float32 emulation, and --runtime openvino runs it"
)


def refuse_bfloat16(*models: tuple[Path, onnx.ModelProto], fix: str = BF16_FIX) -> None:
    """Refuse, for onnxruntime, a model that stores bfloat16 (its CPU provider runs none): the candidate
    (hunt51 C2) or the reference (hq69 F6: onnxruntime's 'Could not find an implementation for
    Conv(22)'), and shrink's model before it calibrates and converts."""
    for path, model in models:
        halves = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.BFLOAT16}
        # read through a Cast to float, it runs (hq70 3: such a reference was refused, once compared)
        if any(n.op_type != "Cast" and halves.intersection(n.input) for n in model.graph.node):
            raise ConfigError(
                f"{path.name} stores bfloat16, which onnxruntime's CPU provider cannot run; {fix}"
            )


def _half_weights(model: onnx.ModelProto) -> dict[str, int]:
    """Weight name -> its 16-bit float type, for each Conv/ConvTranspose/Gemm/MatMul weight stored in
    float16 or bfloat16 (quantkit's own --to fp16 output among them: its inputs may be float32)."""
    halves = {
        init.name: init.data_type
        for init in model.graph.initializer
        if init.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    }
    return {
        node.input[1]: halves[node.input[1]]
        for node in model.graph.node
        if node.op_type in COMPUTE_OPS and len(node.input) > 1 and node.input[1] in halves
    }


def require_quantizable(model: onnx.ModelProto, path: Path) -> None:
    require_float(model, path)
    nodes = [*model.graph.node, *function_nodes(model)]  # torch dynamo's calls: graph.functions inlines
    if not any(node.op_type in COMPUTE_OPS or unfusable(node) for node in nodes):
        raise ModelError(
            f"{path.name} has no op quantkit quantizes ({', '.join(sorted(COMPUTE_OPS))}); "
            "there is nothing to convert to INT8"
        )


def require_table_of(table: CalibrationTable, table_path: Path, sha: str, hint: str = "") -> None:
    """The table was made for the model whose file hashes to `sha`, or this raises."""
    if table.model_sha256 != sha:
        raise CalibrationError(
            f"{table_path.name} was made for another model (sha256 {table.model_sha256[:12]}..., this model "
            f"is {sha[:12]}...); run `quantkit calibrate` on this model{hint}"
        )


def load_for_int8(
    model_path: Path, table_path: Path, opset: int = 0, reason: str = ""
) -> tuple[onnx.ModelProto, CalibrationTable, Prepared]:
    """(model as loaded, its table, the model prepared as calibrate prepared it: opset >= 13, weights as
    initializers, named nodes, inferred shapes). opset: a later opset to take it to (--fallback bf16:
    22), for `reason`; the converter keeps tensor names, so the table's still apply."""
    table = table_io.load(table_path)
    model = model_io.load_model(model_path)
    require_quantizable(model, model_path)
    require_table_of(table, table_path, model_io.file_sha256(model_path))
    if opset > model_io.PER_CHANNEL_OPSET:
        return model, table, prepare(model, opset, table_side(table), reason)
    return model, table, prepare(model, size=table_side(table))


def table_side(table: CalibrationTable) -> tuple[int, int] | None:
    """The HxW the table was calibrated at: its preprocessing's, or its samples' for array data (with
    several inputs, the first image-like one's)."""
    recorded = table.meta.get("preprocess")
    if recorded:
        pre = Preprocess.from_dict(recorded)
        return pre.height, pre.width
    return feed_side(table.samples) if table.samples is not None else None


def table_preprocess(table: CalibrationTable, needed_for: str, model: onnx.ModelProto) -> Preprocess:
    """The table's preprocessing, which `needed_for` reads images with; a table made from arrays has none.
    model: the one measured, whose inputs say whether images could feed it at all."""
    recorded = table.meta.get("preprocess")
    if not recorded and isinstance(table.samples, dict) and len(table.samples) > 1:  # hunt35: it looped
        raise ConfigError(
            f"{needed_for} reads images through one image input, and the table was calibrated on arrays "
            f"for the model's {len(table.samples)} inputs: it cannot measure this model; convert's "
            "--min-sqnr fallback measures it on the table's arrays"
        )
    if not recorded and not _image_like(model):  # hq168 F2: 'calibrate on images', which refuses it
        raise ConfigError(
            f"{needed_for} reads images into a 4-D image input, and the model's input takes arrays (the "
            "table was calibrated on them): it cannot measure this model; convert's --min-sqnr fallback "
            "measures it on the table's arrays"
        )
    if not recorded:
        raise ConfigError(
            f"the table was calibrated on arrays, not images, so it records no preprocessing for "
            f"{needed_for}; calibrate on images (--images) for it"
        )
    return Preprocess.from_dict(recorded)


def _image_like(model: onnx.ModelProto) -> bool:
    """Whether one of the model's inputs (initializers aside) is 4-D, as images feed one."""
    weights = {t.name for t in model.graph.initializer}
    return any(len(i.type.tensor_type.shape.dim) == 4 for i in model.graph.input if i.name not in weights)


def require_model_path(output: Path) -> None:
    """A converted model goes to a .onnx path, as a table to a .json one: `-o photo.jpg` replaced a photo
    with a model (hunt28), and `-o model_int8` wrote a file without a suffix (hunt27)."""
    if output.suffix.lower() != ".onnx":
        raise OutputError(f"the converted model must be a .onnx path (got {output.name}); give one")


def table_paths(table: Path) -> tuple[Path, Path]:
    arrays = table_io.arrays_path(table)  # a path with no file name ('/') is said first
    if table.suffix.lower() != ".json":
        raise OutputError(f"the calibration table must be a .json path (got {table}); arrays go beside it")
    return table, arrays


def table_samples(table: CalibrationTable, prepared: Prepared | None = None) -> Feed:
    """The table's samples; with `prepared`, fed as its file declares them (as_declared)."""
    if table.samples is None or feed_rows(table.samples) == 0:
        raise CalibrationError("the calibration table holds no sample inputs; recalibrate with this version")
    return table.samples if prepared is None else as_declared(table.samples, prepared)


def runs_as_given(
    model: onnx.ModelProto, prepared: onnx.ModelProto, samples: Feed
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """The FP32 model the smoke test and the timing run: the model as given, or, where onnxruntime fails to
    run it at its default optimization level (its optimizer breaks some valid graphs: an opset-18 Pad by
    axes between NHWC Transposes, hq64a F2, 'Gather ... indices element out of data bounds'), the model
    as quantkit prepares it (which the reference ran already), with a note."""
    try:  # one sample, padded to the batch the model fixes (hq133 F5: [10, ...] was fed 1 and 'failed')
        session = Session.of(model, spin=False)
        session.run(next(sample_batches(feed_take(samples, 0, 1), session.fixed_batch or 1)))
    except ModelError as exc:
        return prepared, (
            f"the FP32 model as given fails in onnxruntime at its default optimization level ({exc}); it is "
            "measured and timed as quantkit prepares it, which computes the same outputs and runs there, as "
            "the model written does",
        )
    return model, ()


def as_declared(samples: Feed, prepared: Prepared) -> Feed:
    """`samples` (float32) with each input that the file declares float16 (prepared.interface: made float32
    inside) rounded to float16, as the model as given and as written read it: FP32 measured on the raw
    float32 samples is what no file computes (hunt46 C2: an FP16-I/O document unwarper, equal to its own
    file bit for bit after --to fp16, measured 71.97 dB, 74.09 dB on rounded inputs; the rest is its
    float16 outputs' rounding, which run_fp16 states)."""
    halves = {name for name, kind in prepared.interface if kind == onnx.TensorProto.FLOAT16}
    weights = {t.name for t in prepared.model.graph.initializer}
    inputs = [v.name for v in prepared.model.graph.input if v.name not in weights]
    if not halves.intersection(inputs):
        return samples
    named = {inputs[0]: samples} if isinstance(samples, np.ndarray) else dict(samples)
    for name in halves.intersection(named):
        require_half_fits(name, float(np.max(np.abs(named[name]), initial=0.0)))
    if isinstance(samples, np.ndarray):
        return FLOAT16.rounded(samples) if inputs[0] in halves else samples
    return {name: FLOAT16.rounded(value) if name in halves else value for name, value in samples.items()}


def require_half_fits(name: str, peak: float) -> None:
    """Refuse values a float16 model input cannot hold (hq69 F8: calibrate took arrays up to 1e5 for a
    float16-fed model, and convert then measured -inf dB and told the user to keep layers float)."""
    reason = half_overflow(name, peak)
    if reason is not None:
        raise ConfigError(reason)


def model_bytes(path: Path) -> int:
    """The file's size plus the external data files it names (files.data_files: every tensor's, a
    Constant node's too; hq74 6: counting the initializers' alone made an unchanged model 299x smaller)."""
    return path.stat().st_size + sum(data.stat().st_size for data in data_files(path) if data.is_file())


def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """`items` produced by a background thread, at most `depth` ahead of the consumer, in order: image
    decoding (Pillow releases the GIL) overlaps inference. An exception in the producer is raised here;
    a consumer that stops early (an error, Ctrl-C, a cancelling progress callback) stops the thread at
    its next item (hq72 7: it stayed parked on the full queue for the life of the process, holding
    decoded batches, one per cancelled call)."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    # a flag set in one store, not an Event: a second Ctrl-C inside Event.set (its lock, its notify) as
    # the generator closed printed "Exception ignored in: <generator object read_ahead>" (hq87 F3)
    stop: list[bool] = []

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop:
            with contextlib.suppress(Full):
                queue.put(entry, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, raised in its thread
            put((False, exc))

    Thread(target=produce, name="quantkit-read-ahead", daemon=True).start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.append(True)


def resolve_weight_range(config: ConvertConfig) -> ConvertConfig:
    """config with weight_range auto decided for this machine's onnxruntime kernels."""
    if config.weight_range is not WeightRange.auto:
        return config
    on_this_cpu = config.target is not Target.tensorrt  # TensorRT's GPU kernels do not saturate
    chosen = WeightRange.reduced if on_this_cpu and int8_saturates() else WeightRange.full
    return dataclasses.replace(config, weight_range=chosen)


def too_few_read(
    used: int, total: int, skipped: Sequence[tuple[Path, str]], selection: ImageSelection | None = None
) -> str:
    """The one line for a folder whose images could not be read, naming the first failures and, where
    the selection is the folder's images, what it left out of the folder (left_out)."""
    first = "; ".join(f"{p.name}: {why}" for p, why in skipped[:3])
    failures = f" (first failures: {first})" if first else ""
    what = f"none of the {total} images" if used == 0 else f"only {used} of {total} images"
    folder = selection.folder if selection is not None and selection.files is None else None
    gone = left_out(folder).text() if folder is not None else ""
    links = f"; under {folder}, {gone}" if gone else ""
    # hunt52 C3: a valid 108-megapixel photo was among the 'broken files'
    large = any(why.startswith(TOO_LARGE) for _, why in skipped)
    fix = (
        "downscale the files too large, remove or replace the broken ones"
        if large
        else "remove or replace the broken files"
    )
    return f"{what} could be read{failures}{links}; {fix}"
