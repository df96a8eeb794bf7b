"""The calibration table: a versioned JSON file plus an .npz of arrays beside it. Never pickle.

The JSON holds provenance and per-tensor scalars; each tensor's arrays are stored in the .npz under
keys derived from its index in the JSON list (tensor names may hold any character). The smoke-test
samples: key `samples` for a model with one input; for several, `samples_K` per input, the JSON's
`sample_inputs` listing their names in order (a list a one-input table does not have: its bytes stay).
Key `stress`: the images with the most extreme activations (calib.extremes); `stress_K` per input where the
samples are per input (images beside inputs --input-value fixes).
The JSON records the sha256 of its .npz, so a pair mixed from two runs (or an .npz replaced by hand) is
refused, not misread.
Serialisation is deterministic: the same table gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from quantkit.config import Preprocess
from quantkit.errors import CalibrationError, ConfigError
from quantkit.results import TABLE_FORMAT, TABLE_VERSION, CalibrationTable, Feed, TensorStats

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SMOKE_SAMPLES = 8  # samples a table stores: convert's smoke test and --min-sqnr measure on them


def arrays_path(json_path: Path) -> Path:
    """The .npz that goes with a table's JSON file. A path with no file name ('.', '/') is refused (hq61:
    pathlib's 'has an empty name', as an internal error)."""
    if not json_path.name:
        raise ConfigError(
            f"{json_path} is a folder, not a calibration table's path; give its .json file (model.calib.json)"
        )
    return json_path.with_suffix(".npz")


def serialize(table: CalibrationTable) -> tuple[bytes, bytes]:
    """(JSON bytes, NPZ bytes) of a table."""
    entries: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for index, (name, s) in enumerate(sorted(table.stats.items())):
        entries.append(
            {
                "name": name,
                "min": s.minimum,
                "max": s.maximum,
                "hist_lo": s.hist_lo,
                "hist_hi": s.hist_hi,
                "count": s.count,
                "zeros": s.zeros,
                "bins": int(s.hist.size),
                "channels": None if s.channel_min is None else int(s.channel_min.size),
            }
        )
        if s.nonfinite:
            entries[-1]["nonfinite"] = s.nonfinite
        if s.image_min_mean is not None and s.image_max_mean is not None:
            entries[-1]["image_min_mean"] = s.image_min_mean
            entries[-1]["image_max_mean"] = s.image_max_mean
        arrays[f"hist_{index}"] = s.hist.astype(np.int64)
        if s.channel_min is not None and s.channel_max is not None:
            arrays[f"chmin_{index}"] = s.channel_min.astype(np.float32)
            arrays[f"chmax_{index}"] = s.channel_max.astype(np.float32)
        if s.channel_mean is not None:
            arrays[f"chmean_{index}"] = s.channel_mean.astype(np.float64)
    if isinstance(table.stress, np.ndarray):
        arrays["stress"] = table.stress.astype(np.float32)
    elif (
        table.stress is not None
        and isinstance(table.samples, dict)
        and list(table.stress) == list(table.samples)
    ):
        arrays |= {f"stress_{k}": v.astype(np.float32) for k, v in enumerate(table.stress.values())}
    inputs: list[str] | None = None
    if isinstance(table.samples, np.ndarray):
        arrays["samples"] = table.samples.astype(np.float32)
    elif table.samples is not None:
        inputs = list(table.samples)
        for k, name in enumerate(inputs):
            arrays[f"samples_{k}"] = table.samples[name].astype(np.float32)
    npz = _npz_bytes(arrays)
    doc: dict[str, Any] = {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "arrays_sha256": hashlib.sha256(npz).hexdigest(),
        "meta": table.meta,
        "tensors": entries,
    }
    if inputs is not None:
        doc["sample_inputs"] = inputs
    text = json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n"
    return text.encode(), npz


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Every array deflated at level 1: half the default level's time, 14 % more bytes (SqueezeNet's
    table: 0.36 s and 1.6 MB against 0.76 s and 1.4 MB)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            archive.writestr(info, member.getvalue(), compresslevel=1)
    return buffer.getvalue()


def load(json_path: Path) -> CalibrationTable:
    """Read a table; raise CalibrationError with a fix for anything missing, truncated or foreign."""
    npz_path = arrays_path(json_path)
    if json_path.is_dir():  # hq61: 'does not exist' of a folder that does
        raise CalibrationError(
            f"calibration table {json_path} is a folder; give the .json file `quantkit calibrate` wrote"
        )
    if json_path.exists() and not json_path.is_file():  # hq146 F8: a pipe read 'does not exist'
        raise CalibrationError(
            f"calibration table {json_path} is no regular file (a pipe or a device); give the .json file "
            "`quantkit calibrate` wrote"
        )
    if not json_path.is_file():
        raise CalibrationError(
            f"calibration table {json_path} does not exist; run `quantkit calibrate` first"
        )
    if json_path.suffix.lower() != ".json":  # hunt32: the model given as the table read 'mobilenetv2.npz ...
        # is missing'
        raise CalibrationError(
            f"{json_path} is not a calibration table (a .json file that `quantkit calibrate` writes, its "
            "arrays beside it as .npz); pass the table, not the model or its arrays"
        )
    if not npz_path.is_file():
        raise CalibrationError(_without_arrays(json_path, npz_path))
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{json_path} is not a valid calibration table ({exc}); recalibrate") from exc
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT:
        raise CalibrationError(f"{json_path} is not a quantkit calibration table; recalibrate")
    if doc.get("version") != TABLE_VERSION:
        raise CalibrationError(
            f"{json_path} has table version {doc.get('version')!r}, this quantkit reads {TABLE_VERSION}; "
            "recalibrate with this version"
        )
    npz_bytes = npz_path.read_bytes()
    if hashlib.sha256(npz_bytes).hexdigest() != doc.get("arrays_sha256"):
        raise CalibrationError(
            f"{npz_path.name} does not belong to {json_path.name} (replaced, or written by another run); "
            "recalibrate"
        )
    return _parsed(doc, npz_bytes, json_path)


def _without_arrays(json_path: Path, npz_path: Path) -> str:
    """Why a .json without arrays beside it is no table to read: its arrays are missing, or it is no
    table at all (hq172 F10: a compare report given as -c was a table 'whose arrays are missing')."""
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError):
        doc = None
    if isinstance(doc, dict) and doc.get("format") == TABLE_FORMAT:
        return f"{npz_path} (the arrays of {json_path.name}) is missing; recalibrate"
    schema = doc.get("schema") if isinstance(doc, dict) else None
    report = isinstance(schema, str) and schema.startswith("quantkit-")
    what = f" (it is a quantkit report, schema {schema})" if report else ""
    return (
        f"{json_path} is not a quantkit calibration table{what}: give the .json that `quantkit calibrate` "
        "wrote"
    )


def loads(json_bytes: bytes, npz_bytes: bytes) -> CalibrationTable:
    """A table from the bytes of its two files, as `load` read and checked them (a worker's copy)."""
    return _parsed(json.loads(json_bytes.decode("utf-8")), npz_bytes, Path("<table>"))


def _parsed(doc: dict[str, Any], npz_bytes: bytes, json_path: Path) -> CalibrationTable:
    try:
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
            stats = {e["name"]: _entry_stats(e, i, npz) for i, e in enumerate(doc["tensors"])}
            samples = _samples(doc, npz)
            stress = _stress(doc, npz)
        meta = doc["meta"]
        if not isinstance(meta, dict) or not isinstance(meta.get("model_sha256"), str):
            raise TypeError("its meta holds no model_sha256")  # hq57 D(c): read as another model's
        meta = dict(meta)
        _require_recorded_shape(meta, samples)
    # zipfile and np.load raise what their layers raise: zlib, struct, unsupported-compression errors
    except (
        KeyError,
        TypeError,
        ValueError,
        OSError,
        EOFError,
        OverflowError,
        NotImplementedError,
        RuntimeError,
        zipfile.BadZipFile,
        zlib.error,
        struct.error,
    ) as exc:
        raise CalibrationError(f"{json_path} or its .npz is damaged ({exc}); recalibrate") from exc
    return CalibrationTable(meta=meta, stats=stats, samples=samples, stress=stress)


def _require_recorded_shape(meta: dict[str, Any], samples: Feed | None) -> None:
    """The preprocessing the table records (not bound to its arrays' sha256) gives its samples' shape, or
    this raises: an edited "height": 16 for a 32x32 model was written into the converted model, and compare
    then failed in onnxruntime (hunt47 C3)."""
    recorded = meta.get("preprocess")
    if not recorded or not isinstance(samples, np.ndarray):
        return
    try:
        expected = Preprocess.from_dict(recorded).sample_shape
    except ConfigError as exc:  # its own words, not a flag's: the table's "std": [0, 0, 0]
        said = re.sub(r"--(?=[a-z])", "", str(exc).removesuffix("; recalibrate"))  # no flag was passed
        raise ValueError(f"its recorded preprocessing: {said}") from exc
    if tuple(samples.shape[1:]) != expected:
        held = list(samples.shape[1:])
        raise ValueError(f"its preprocessing gives samples of shape {list(expected)}, its samples are {held}")


def _stress(doc: dict[str, Any], npz: Any) -> Feed | None:
    """The stored stress samples: one array, {input name: array} as the samples are, or None."""
    if "stress" in npz.files:
        return np.asarray(npz["stress"], np.float32)
    names = [str(n) for n in doc.get("sample_inputs", [])]
    if not names or not all(f"stress_{k}" in npz.files for k in range(len(names))):
        return None
    found = {n: np.asarray(npz[f"stress_{k}"], np.float32) for k, n in enumerate(names)}
    if len({v.shape[0] for v in found.values()}) != 1 or any(np.isnan(v).any() for v in found.values()):
        raise ValueError("the stored stress samples of the inputs do not match")
    return found


def _samples(doc: dict[str, Any], npz: Any) -> Feed | None:
    """The stored smoke-test samples: one array, {input name: array} for several inputs, or None. Each is
    free of NaN: calibrate refuses inputs that hold one (hq57 D(i): read as the model's fault); +-Inf is a
    float input's attention mask (hq150 F5)."""
    samples: Feed | None = None
    if "sample_inputs" in doc:
        names = [str(n) for n in doc["sample_inputs"]]
        found = {n: np.asarray(npz[f"samples_{k}"], np.float32) for k, n in enumerate(names)}
        if not found or len({v.shape[0] for v in found.values()}) != 1:
            raise ValueError("the stored samples of the inputs do not match")
        samples = found
    elif "samples" in npz.files:
        samples = np.asarray(npz["samples"], np.float32)
    arrays = list(samples.values()) if isinstance(samples, dict) else [] if samples is None else [samples]
    if any(np.isnan(a).any() for a in arrays):
        raise ValueError("its stored samples hold NaN")
    return samples


def _entry_stats(entry: dict[str, Any], index: int, npz: Any) -> TensorStats:
    hist = np.asarray(npz[f"hist_{index}"])
    if hist.dtype != np.int64 or hist.ndim != 1 or hist.size != int(entry["bins"]) or (hist < 0).any():
        raise ValueError(f"histogram of {entry['name']!r} does not match the table")
    low = high = mean = None
    if f"chmean_{index}" in npz.files:
        mean = np.asarray(npz[f"chmean_{index}"], dtype=np.float64)
    if entry.get("channels") is not None:
        low = np.asarray(npz[f"chmin_{index}"], dtype=np.float32)
        high = np.asarray(npz[f"chmax_{index}"], dtype=np.float32)
        if low.shape != (int(entry["channels"]),) or high.shape != low.shape or not (low <= high).all():
            raise ValueError(f"channel ranges of {entry['name']!r} do not match the table")
    values = [float(entry[k]) for k in ("min", "max", "hist_lo", "hist_hi")]
    if not all(np.isfinite(values)) or values[0] > values[1] or values[2] > values[3]:
        raise ValueError(f"ranges of {entry['name']!r} are not finite and ordered")
    image = [float(entry[k]) for k in ("image_min_mean", "image_max_mean") if k in entry]
    if image and (len(image) != 2 or not all(np.isfinite(image)) or image[0] > image[1]):
        raise ValueError(f"image extremes of {entry['name']!r} are not finite and ordered")
    return TensorStats(
        minimum=values[0],
        maximum=values[1],
        hist=hist,
        hist_lo=values[2],
        hist_hi=values[3],
        count=int(entry["count"]),
        channel_min=low,
        channel_max=high,
        channel_mean=mean,
        zeros=int(entry.get("zeros", 0)),
        image_min_mean=image[0] if image else None,
        image_max_mean=image[1] if image else None,
        nonfinite=int(entry.get("nonfinite", 0)),
    )
