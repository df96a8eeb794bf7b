"""Model load, checks, opset conversion and serialisation. Raises ModelError with a fix."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError, Message
from onnx import external_data_helper, numpy_helper, version_converter

from quantkit import runtime
from quantkit.errors import ModelError, shorten
from quantkit.files import data_files
from quantkit.graph.contrib_types import inferred_types
from quantkit.graph.external_data import load_external_data
from quantkit.graph.file_kinds import checker_refusal, newer_opset, no_graph, non_tensor_output, not_onnx
from quantkit.graph.finite_weights import check_finite_weights
from quantkit.graph.legacy_ops import FREE_INITIALIZERS_IR, write_out
from quantkit.graph.query import function_nodes
from quantkit.graph.toposort import passes_sorted
from quantkit.graph.unfuse import unfuse

MIN_OPSET = 7  # onnxruntime runs opset 7 and later; quantkit upgrades below 13 with onnx's converter
PER_CHANNEL_OPSET = 13
# Operator domains onnxruntime's CPU provider runs without a custom-op library.
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc"})
TRAINING_DOMAIN = "ai.onnx.preview.training"


def file_sha256(path: Path) -> str:
    """The model's sha256: its file's bytes, then the name and bytes of each external-data file it names
    that exists (ModelError, as load_model says it, for a missing path or a folder). A model without
    external data hashes as its file alone; one whose weights live beside it changes its hash with them
    (a table calibrated before its .onnx.data was replaced passed for it, and convert wrote a float copy)."""
    _require_file(path)
    digest = hashlib.sha256()
    for block in _blocks(path):
        digest.update(block)
    for data in data_files(path):
        if data.is_file():
            digest.update(f"\0{data.relative_to(path.parent)}\0".encode(errors="surrogateescape"))
            for block in _blocks(data):
                digest.update(block)
    return digest.hexdigest()


def _missing(path: Path) -> str:
    """Why a model path names no file: a URL given in its place (hq172 F11: 'model file https:/... does not
    exist', a Path's one slash; hq173 F5: a file: URL names a path), else it does not exist."""
    url = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):/+(.*)", str(path))
    if url and url[1].lower() == "file":
        return f"{path} is a file: URL; give the path itself (/{url[2]})"
    if url:
        return f"{url[1]}://{url[2]} is a URL: quantkit reads model files on disk; download it first"
    return f"model file {path} does not exist; check the path"


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


def _require_file(path: Path) -> None:
    if not path.exists():
        raise ModelError(_missing(path))
    if not path.is_file():
        raise ModelError(f"{path} is not a file; pass an .onnx model file")


def load_model(path: Path) -> onnx.ModelProto:
    """Load and validate a model; external weights must lie inside the model's folder."""
    _require_file(path)
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty; re-export the model")
    try:
        model = onnx.load(str(path), format="protobuf", load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(not_onnx(path, _short(exc))) from exc
    if not model.graph.node or not model.opset_import:
        raise ModelError(no_graph(model, path))
    _check_supported(model, path)
    # a training algorithm stored beside the inference graph, which runtimes ignore: what quantkit writes
    # is for inference, whose weights it would not match (hq155 F7: refused as 'a training graph')
    model.ClearField("training_info")
    load_external_data(model, path)
    try:  # the legacy ops written out: onnx's checker printed a warning for them, which prepare handles
        onnx.checker.check_model(write_out(model, opset_version(model)).model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        if not passes_sorted(model) and not (_shapes_given(model) and _passes_check(model)):
            raise ModelError(checker_refusal(model, path, _short(exc))) from exc
    check_finite_weights(model, path)
    if model.ir_version < FREE_INITIALIZERS_IR:
        model.ir_version = FREE_INITIALIZERS_IR  # every IR 3 model is a valid IR 4 one, whose weights
        # IR 3 had to list as inputs too are weights, as onnxruntime reads an IR 3 file, not inputs a caller
        # may feed: listed at IR 4 they were, and onnxruntime could fold nothing (hq102 F3: a float16
        # SqueezeNet's --to fp16 output ran 0.46-0.70x the file it came from)
        _unlist_weights(model)
    return model


def symbolic_dims(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(the model with every declared dimension below 0 made a named one, how many): Paddle exports write
    -1 for a dynamic size, which ONNX does not define; onnx's shape inference then meets (32) vs (-1) and
    refuses the model written from it, and the opset converter's copy of a PP-OCR recognizer stopped
    running. The model itself if it has none."""
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    if not any(d.HasField("dim_value") and d.dim_value < 0 for v in values for d in _dims(v)):
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    named = 0
    for value in [*out.graph.input, *out.graph.output, *out.graph.value_info]:
        for axis, dim in enumerate(_dims(value)):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_param = f"{value.name}_{axis}"  # clears dim_value (a oneof)
                named += 1
    return out, named


def _dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    tensor = value.type.tensor_type
    return list(tensor.shape.dim) if value.type.HasField("tensor_type") and tensor.HasField("shape") else []


def _shapes_given(model: onnx.ModelProto) -> bool:
    """Give each graph output declared with a type but no shape (which onnx's checker refuses and
    onnxruntime runs: hunt43 F4) the shape inference finds for it, in place; whether any was given."""
    bare = [
        o
        for o in model.graph.output
        if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")
    ]
    if not bare:
        return False
    version = opset_version(model)
    try:  # inferred through the standard ops that legacy and fused ones stand for (hq134 F4); a node of
        # theirs missing its inputs (hq138 F4) is inferred as it stands, and refused by the checker
        standard = unfuse(write_out(model, version).model, version).model
    except (IndexError, KeyError, ValueError, TypeError):
        standard = model
    try:
        found = {o.name: o for o in infer_shapes(standard).graph.output}
    except ModelError:
        return False
    given = [o for o in bare if o.name in found and found[o.name].type.tensor_type.HasField("shape")]
    for output in given:
        output.type.tensor_type.shape.CopyFrom(found[output.name].type.tensor_type.shape)
    return bool(given)


def _passes_check(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(write_out(model, opset_version(model)).model)
    except (onnx.checker.ValidationError, ValueError):
        return False
    return True


def _check_supported(model: onnx.ModelProto, path: Path) -> None:
    """Refuse what quantkit cannot run, before anything else: old opsets, training graphs, custom ops."""
    if line := twice_imported(model, path):
        raise ModelError(line)
    version = opset_version(model)
    if newer := newer_opset(version, path):
        raise ModelError(newer)
    if version < MIN_OPSET:
        raise ModelError(
            f"{path.name} uses opset {version}; quantkit needs opset {MIN_OPSET} or later (onnxruntime's "
            "oldest). Re-export with a newer opset"
        )
    if line := non_tensor_output(model, path):
        raise ModelError(line)
    if any(n.domain == TRAINING_DOMAIN for n in model.graph.node):
        raise ModelError(
            f"{path.name} is a training graph; export the model for inference (model.eval(), "
            "torch.onnx.export with training=TrainingMode.EVAL)"
        )
    local = {(f.domain, f.name) for f in model.functions}  # called, not custom (graph.functions inlines)
    nodes = [*model.graph.node, *function_nodes(model)]
    custom = sorted({(n.domain, n.op_type) for n in nodes if n.domain not in KNOWN_DOMAINS} - local)
    if custom:
        domain, op = custom[0]
        raise ModelError(
            f"{path.name} uses {len(custom)} custom op type(s) onnxruntime cannot run without their "
            f"library (first: {domain}::{op}); export with standard ONNX ops"
        )


def twice_imported(model: onnx.ModelProto, path: Path) -> str | None:
    """The refusal of a model that imports one domain at two versions, or None: which one its ops follow
    is ambiguous, and onnxruntime runs the last listed (hq78 F3: ai.onnx 13 then 11 was calibrated as 13
    and its Q/DQ model refused by onnxruntime as 11, with advice that could not help; 11 then 13 stopped
    in onnx's version converter)."""
    used = {n.domain or "ai.onnx" for n in [*model.graph.node, *function_nodes(model)]} | {"ai.onnx"}
    versions: dict[str, list[int]] = {}
    for entry in model.opset_import:  # a domain no node uses, listed twice, decides nothing (hq81 R3)
        if (entry.domain or "ai.onnx") in used:
            versions.setdefault(entry.domain or "ai.onnx", []).append(int(entry.version))
    for domain, listed in versions.items():
        if len(set(listed)) > 1:
            both = " and ".join(str(v) for v in listed)
            return (
                f"{path.name} imports opset {domain} twice ({both}), so which one its ops follow is "
                f"ambiguous (onnxruntime runs {listed[-1]}); keep the one it was exported for in "
                "model.opset_import and save the model again"
            )
    return None


def _short(exc: BaseException) -> str:
    return shorten(str(exc), 160)


def opset_version(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelError("the model imports no ai.onnx opset; re-export it")


def ensure_opset(model: onnx.ModelProto, minimum: int = PER_CHANNEL_OPSET) -> onnx.ModelProto:
    """The model at opset >= minimum, converted up with onnx's version converter if needed (per-channel
    Q/DQ needs 13). graph.prepare checks the converted graph against the original."""
    version = opset_version(model)
    if version >= minimum:
        return model
    try:
        converted = version_converter.convert_version(model, minimum)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises bare RuntimeError/IndexError from C++
        unknown = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")} - defined_ops())
        op = ", ".join(unknown) or _op_named(model, str(exc))  # its own message says 'Op %s' for these
        culprit = f"it {'knows no schema' if unknown else 'has no adapter'} for {op}" if op else _short(exc)
        raise ModelError(
            f"onnx's version converter could not take opset {version} to {minimum} ({culprit}); re-export "
            f"the model at opset {minimum} or later"
        ) from exc
    return converted


@functools.cache
def defined_ops() -> frozenset[str]:
    """The op types onnx defines in its default domain, at any opset."""
    return frozenset(
        schema.name for schema in onnx.defs.get_all_schemas_with_history() if schema.domain == ""
    )


def _op_named(model: onnx.ModelProto, message: str) -> str | None:
    """The model's op type that the converter's message names, if any (longest match first)."""
    for op in sorted({n.op_type for n in model.graph.node}, key=lambda o: (-len(o), o)):
        if re.search(rf"\b{re.escape(op)}\b", message):
            return op
    return None


# Initializers at least this large (bytes) are left out of shape inference's copy of the model and given
# to it as typed inputs: their values never decide a shape, and onnx's inference serialises, parses and
# returns the whole model (ResNet-50, 100 MB: 290 MB more peak memory).
INFERENCE_WEIGHT_BYTES = 1 << 10


def weight_inputs(model: onnx.ModelProto) -> set[str]:
    """The graph inputs an initializer backs: weights that may be fed at run time (IR 3 exporters list
    every weight as one), which onnxruntime cannot fold."""
    weights = {t.name for t in model.graph.initializer}
    return {i.name for i in model.graph.input if i.name in weights}


def weights_fixed(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(the model with the weights it lists as graph inputs no longer inputs, how many it listed): the
    same network, which onnxruntime can fold. The model itself where it lists none."""
    if not weight_inputs(model):
        return model, 0
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    return fixed, _unlist_weights(fixed)


def _unlist_weights(model: onnx.ModelProto) -> int:
    """The weights `model` lists as graph inputs taken off its inputs, in place; how many it listed."""
    listed = weight_inputs(model)
    kept = [value for value in model.graph.input if value.name not in listed]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return len(listed)


def infer_shapes(model: onnx.ModelProto, data_prop: bool = False) -> onnx.ModelProto:
    """A copy of the model with the shapes onnx infers (value_info); the model is not changed. Large
    initializers take no part but their type and shape (INFERENCE_WEIGHT_BYTES). data_prop: onnx's data
    propagation too (the sizes a Shape -> Gather -> Reshape chain computes)."""
    skeleton, heavy = _skeleton(model)
    try:
        inferred = inferred_types(skeleton, data_prop)  # what ops of no known schema write: guessed
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        why = f"shape inference failed ({_short(exc)}); check the model with onnx.checker"
        raise ModelError(why) from exc
    if not heavy:
        return inferred
    del inferred.graph.input[:], inferred.graph.initializer[:]
    inferred.graph.input.extend(model.graph.input)
    inferred.graph.initializer.extend(model.graph.initializer)
    return inferred


def _skeleton(model: onnx.ModelProto) -> tuple[onnx.ModelProto, set[str]]:
    """A copy of the model without its large initializers (each a graph input of its type and shape in
    their place), and their names; the model itself where none is large."""
    graph = model.graph
    heavy = {init.name for init in graph.initializer if init.ByteSize() >= INFERENCE_WEIGHT_BYTES}
    if not heavy:
        return model, heavy
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip=("graph",))
    _copy_fields(graph, skeleton.graph, skip=("initializer", "input"))
    skeleton.graph.initializer.extend(init for init in graph.initializer if init.name not in heavy)
    skeleton.graph.input.extend(i for i in graph.input if i.name not in heavy)
    skeleton.graph.input.extend(
        onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in graph.initializer
        if init.name in heavy
    )
    return skeleton, heavy


def _copy_fields(source: Message, target: Message, skip: tuple[str, ...]) -> None:
    """The fields set in `source`, but `skip`, copied into `target` (a message of the same type)."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        if isinstance(value, Message):
            getattr(target, field.name).CopyFrom(value)
        elif isinstance(value, (str, bytes, int, float, bool)):
            setattr(target, field.name, value)
        else:  # a repeated field
            getattr(target, field.name).extend(value)


def serialize(model: onnx.ModelProto) -> bytes:
    """The model's bytes, deterministic. For a model that fits in one protobuf (under 2 GB)."""
    if not runtime.fits_one_message(model):
        raise ModelError("the model exceeds protobuf's 2 GB limit; store its weights externally")
    return model.SerializeToString(deterministic=True)


def serialize_files(model: onnx.ModelProto, name: str) -> list[tuple[str, bytes]]:
    """The files that store `model` under the file name `name`: the model alone when it fits in one
    protobuf, else the model plus `name`.data holding its large initializers (onnx's external-data
    format, 4 KiB-aligned offsets), as onnx writes models over 2 GB. Deterministic."""
    if runtime.fits_one_message(model):
        return [(name, serialize(model))]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    location, blob = f"{name}.data", bytearray()
    for tensor in external_data_helper._get_all_tensors(copy):
        if not tensor.HasField("raw_data"):
            if tensor.data_type == onnx.TensorProto.STRING:
                continue
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
        if len(tensor.raw_data) <= runtime.EXTERNAL_THRESHOLD:
            continue
        blob += bytes(-len(blob) % 4096)
        offset, length = len(blob), len(tensor.raw_data)
        blob += tensor.raw_data
        external_data_helper.set_external_data(tensor, location, offset, length)
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
    return [(name, serialize(copy)), (location, bytes(blob))]


def check(model: onnx.ModelProto) -> None:
    """onnx.checker with full shape inference."""
    onnx.checker.check_model(model, full_check=True)


def check_like(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """`check`, unless `original` fails it too, at the model's opset: an exporter's declared output shapes
    that shape inference contradicts (a rank-3 declaration of NonMaxSuppression's rank-2 indices) are the
    original's, carried into every model made from it; then the check the original passed on loading
    (load_model). At the model's opset, since newer shape inference finds more: ddddocr's OCR model
    declares its rank-3 output rank 2, which opset 12 cannot infer and opset 19 (--to fp8) can."""
    try:
        check(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        if not (_fails_check(original) or _fails_check_at(original, opset_version(model))):
            raise
        onnx.checker.check_model(model)


def _fails_check(model: onnx.ModelProto) -> bool:
    try:
        check(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return True
    return False


def _fails_check_at(model: onnx.ModelProto, version: int) -> bool:
    """Whether `model` taken up to opset `version` fails `check` (False where it is there already or the
    version converter cannot take it: nothing shows the failure is the original's then)."""
    if opset_version(model) >= version:
        return False
    try:
        converted = version_converter.convert_version(model, version)
    except Exception:  # the converter raises bare RuntimeError/IndexError from C++
        return False
    return _fails_check(converted)
