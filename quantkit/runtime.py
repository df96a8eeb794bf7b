"""onnxruntime sessions, batched runs and timing. The only module that imports onnxruntime."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
import onnxruntime as ort

from quantkit.errors import ConfigError, ModelError, load_reason, ort_reason
from quantkit.heap import HeapWatch
from quantkit.ort_quirks import NCHWC_PASS, has_float8, nchwc_crash
from quantkit.results import (
    Feed,
    batched,
    fed_as,
    feed_pad,
    feed_rows,
    fixed_batch_of,
    half_overflow,
    sample_batches,
)
from quantkit.room import short_of_room
from quantkit.scratch import held
from quantkit.version import __version__

PROTO_LIMIT = 2**31 - 1  # protobuf cannot serialise a message larger than this into one buffer
EXTERNAL_THRESHOLD = 1024  # initializers above this many bytes go to the external file of a large model
FED = ("float16", "uint8", "int8", "int16", "int32", "int64", "bool")  # inputs fed cast (results.fed_as)
QUIET_KERNELS = "QUANTKIT_QUIET_KERNELS"  # "1": set by the CLI, inherited by its worker processes


def quiet_kernel_logs() -> None:
    """Fatal lines only from onnxruntime's process-wide logger, which kernels log through (hunt33: LYT-Net
    printed 140 lines), here and in the workers this process starts. The CLI's processes only: the API
    leaves a caller's process as it was (hq72 6: its own sessions lost their warnings at our import)."""
    os.environ[QUIET_KERNELS] = "1"
    ort.set_default_logger_severity(4)


if os.environ.get(QUIET_KERNELS) == "1":  # a worker of the CLI's
    ort.set_default_logger_severity(4)


class Runner(Protocol):
    """What compare and the timing use of a session: runtime.Session, or the OpenVINO session of
    runtime_openvino (compare --runtime openvino)."""

    output_names: list[str]
    threads: int

    @property
    def fixed_batch(self) -> int | None: ...

    def run_batch(self, batch: Feed) -> dict[str, np.ndarray]: ...

    def timed(self, batch: Feed) -> float: ...


def _own(output: np.ndarray, fed: Iterable[np.ndarray]) -> np.ndarray:
    """The output, copied where it views a fed array (an input that is an output): the feed may go first."""
    return output.copy() if any(np.may_share_memory(output, f) for f in fed) else output


_LEAN: ContextVar[bool] = ContextVar("quantkit_lean_sessions", default=False)
LEAN_TRIM = 256 << 20


@contextmanager
def lean_sessions(on: bool = True) -> Iterator[None]:
    """Sessions made inside that do not choose their arena run without onnxruntime's arena and memory
    pattern, timing ones too, and trim the heap past LEAN_TRIM of growth (heap.HeapWatch): for large
    activations. IS-Net at 1024x1024: one FP32 run 2.2 GB with both, 1.2 GB without, as fast."""
    token = _LEAN.set(on)
    try:
        yield
    finally:
        _LEAN.reset(token)


def set_lean(on: bool) -> None:
    """Inside a `lean_sessions` block, decide there whether its sessions run lean (once the model's
    activations are known); the block's end undoes it."""
    _LEAN.set(on)


class Session:
    """One onnxruntime CPU session with fixed threads; runs a float32 feed (an array for a model with one
    input, {input name: array} for several), returns outputs by name."""

    @classmethod
    def of(
        cls,
        model: onnx.ModelProto,
        threads: int = 0,
        optimize: bool = True,
        spin: bool = True,
        observing: bool = False,
        arena: bool | None = None,
    ) -> Session:
        """A session for an in-memory model. One over protobuf's 2 GB limit is saved with its weights in
        an external file in a temporary folder, which onnxruntime reads while the session is made."""
        float8, crash = has_float8(model), bool(nchwc_crash(model))
        made = functools.partial(cls, float8=float8, observing=observing, arena=arena, nchwc_off=crash)
        if fits_one_message(model):
            return made(model.SerializeToString(deterministic=True), threads, optimize, spin)
        with held() as folder:
            path = Path(folder) / "model.onnx"
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # save_model rewrites the tensors it stores externally
            onnx.save_model(
                copy,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location="model.onnx.data",
                size_threshold=EXTERNAL_THRESHOLD,
            )
            return made(path, threads, optimize, spin)

    def __init__(
        self,
        model: bytes | Path,
        threads: int = 0,
        optimize: bool = True,
        spin: bool = True,
        float8: bool | None = None,
        profile: Path | None = None,
        observing: bool = False,
        arena: bool | None = None,
        nchwc_off: bool | None = None,
    ) -> None:
        """threads: intra-op threads (0: onnxruntime's choice). spin=False stops idle worker threads from
        spinning between runs: needed when sessions take turns (interleaved timing), where one session's
        spinning workers would steal the cores of the next one's run. A model with float8 Q/DQ runs at the
        basic optimization level: onnxruntime 1.32's extended (QDQ) optimizations miscompute it (SqueezeNet in
        FP8: 27.6 dB against FP32 at the basic level, 11.9 dB above it). float8: whether it does (None: read
        from the model). profile: a file prefix; onnxruntime's profiler then records every kernel of every
        run, in the file end_profiling returns. observing: the model outputs every activation (calibration),
        or the many branches of a probe whose outputs are folded at once (rebalancing's). Its session then
        runs without onnxruntime's memory pattern (a block planned for a run's tensors, on top of the outputs:
        90 MB more peak on YOLOX-Nano) and without the NCHWc layout (each observed output was reordered back
        to NCHW: 1.5x the run time there). arena=False: memory goes back after each run (onnxruntime's arena
        keeps a run's peak for the next: one of several sessions that take turns would keep its own). None:
        on, but inside `lean_sessions`, where the memory pattern is off too. nchwc_off: without the NCHWc
        layout pass, which crashes on the model (ort_quirks.nchwc_crash; None: read from the model)."""
        proto = _proto(model) if float8 is None or nchwc_off is None else None
        float8 = has_float8(proto) if float8 is None and proto is not None else bool(float8)
        nchwc_off = bool(nchwc_crash(proto)) if nchwc_off is None and proto is not None else bool(nchwc_off)
        lean = arena is None and _LEAN.get()
        self._heap = HeapWatch(LEAN_TRIM) if lean else None
        options = ort.SessionOptions()
        if profile is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile)
        options.intra_op_num_threads = threads
        options.enable_mem_pattern = not observing and not lean
        options.enable_cpu_mem_arena = not lean if arena is None else arena
        if not spin or observing:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if not optimize
            else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            if float8
            else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            if observing
            else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        options.log_severity_level = 4  # fatal only: a failure reaches the user as one line of ours
        source = _source(model)
        try:
            off = {"disabled_optimizers": [NCHWC_PASS]} if nchwc_off else {}
            self._session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"], **off)
        except Exception as exc:  # onnxruntime raises its own exception types from C++
            raise ModelError(f"onnxruntime cannot load the model ({load_reason(str(exc))})") from exc
        inputs = self._session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_name = self.input_names[0]
        # float16 (--to fp16 --no-keep-io-types), uint8 pixels, integer and bool arrays: samples fed cast
        kinds = {i.name: i.type.removeprefix("tensor(").removesuffix(")") for i in inputs}
        self._types = {name: np.dtype(kind) for name, kind in kinds.items() if kind in FED}
        self._scalars = {i.name for i in inputs if i.shape == []}  # fed one sample a run, as [1]
        # text outputs (class names a LabelEncoder writes from an ArgMax's index) are not fetched: no figure
        # reads text, and the index they are written from is measured (hq110 F4: an internal error)
        self.output_names = [o.name for o in self._session.get_outputs() if o.type != "tensor(string)"]
        # an observing session's tensor outputs come back as views of onnxruntime's own buffers
        # (OrtValue.numpy), not copies: calibration's outputs are every activation of the batch, twice that
        # memory when copied. Only there: a view held after its batch keeps all of the session's memory
        # alive (float16's check of CRAFT at 384x512 held 800 MB for the model's 8 small outputs)
        self._views = observing and all(o.type.startswith("tensor(") for o in self._session.get_outputs())
        self.threads = threads

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's inputs fix (results.fixed_batch_of), or None for a dynamic batch."""
        dims = [i.shape[0] if i.shape else 1 for i in self._session.get_inputs()]  # a scalar: 1 a run
        return fixed_batch_of([d if isinstance(d, int) and d > 0 else None for d in dims])

    def feed(self, batch: Feed) -> dict[str, np.ndarray]:
        """onnxruntime's feed: a lone array goes to the first input; inputs of the FED types fed cast."""
        named = {self.input_name: batch} if isinstance(batch, np.ndarray) else dict(batch)
        named = {k: v.reshape(()) if k in self._scalars and v.shape == (1,) else v for k, v in named.items()}
        for k, v in named.items():
            peak = float(np.max(np.abs(v), initial=0.0)) if self._types.get(k) == np.float16 else 0.0
            if (reason := half_overflow(k, peak)) is not None:
                raise ConfigError(reason)  # hq115 F8: compare fed it, numpy warned raw, -inf dB followed
        return {k: fed_as(v, self._types[k]) if k in self._types else v for k, v in named.items()}

    def run(self, batch: Feed) -> dict[str, np.ndarray]:
        feed = self.feed(batch)
        try:
            if self._views:
                fed = {k: np.ascontiguousarray(v) for k, v in feed.items()}
                values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in fed.items()}
                fetched = self._session.run_with_ort_values(self.output_names, values)
                results = [_own(v.numpy(), fed.values()) for v in fetched]
            else:
                results = self._session.run(self.output_names, feed)
        except Exception as exc:  # onnxruntime raises its own exception types from C++
            raise ModelError(f"onnxruntime failed to run the model ({ort_reason(str(exc))})") from exc
        if self._heap is not None:
            self._heap.check()
        return {name: batched(value) for name, value in zip(self.output_names, results, strict=True)}

    def run_batch(self, batch: Feed) -> dict[str, np.ndarray]:
        """Run a batch of any size up to a fixed batch: a short one is padded (every input), and outputs
        whose leading dimension is the batch are cut back to the real samples."""
        size, real = self.fixed_batch, feed_rows(batch)
        if size is None or real == size:
            return self.run(batch)
        padded = feed_pad(batch, size)
        return {k: v[:real] if v.ndim and v.shape[0] == size else v for k, v in self.run(padded).items()}

    def run_samples(self, samples: Feed) -> list[dict[str, np.ndarray]]:
        """Run samples [K, ...] (per input) in batches of the size the model fixes (1 when dynamic), the
        last one padded by repeating its final sample; one output dict per batch."""
        return list(self.iter_samples(samples))

    def iter_samples(self, samples: Feed) -> Iterator[dict[str, np.ndarray]]:
        """run_samples one batch at a time: a caller that folds each batch's outputs holds one batch's
        (a model with every tensor as an output returns them all on every run)."""
        for chunk in sample_batches(samples, self.fixed_batch or 1):
            yield self.run(chunk)

    def run_count(self, samples: Feed) -> int:
        """How many runs iter_samples makes of samples [K, ...]."""
        return -(-feed_rows(samples) // (self.fixed_batch or 1))

    def end_profiling(self) -> Path:
        """The profile of the runs so far (a session made with `profile`): onnxruntime's JSON trace."""
        return Path(self._session.end_profiling())

    def timed(self, batch: Feed) -> float:
        """Run once; wall time in milliseconds."""
        feed = self.feed(batch)
        start = time.perf_counter_ns()
        self._session.run(None, feed)
        return (time.perf_counter_ns() - start) / 1e6


def interleaved_latency(
    sessions: Sequence[Runner],
    batch: Feed,
    warmup: int,
    runs: int,
    progress: Callable[[int], None] | None = None,
    seconds: float | None = None,
    min_runs: int = 1,
) -> list[np.ndarray]:
    """Latency samples (ms, float64 [rounds]) per session, their runs interleaved so that noise on a
    shared machine hits every model alike, each round in its own order (round_orders). `runs` rounds, or
    fewer where `seconds` is given: no new round after it, once min_runs are done."""
    for _ in range(warmup):
        for session in sessions:
            session.timed(batch)
    samples = [np.empty(runs) for _ in sessions]
    deadline = None if seconds is None else time.monotonic() + seconds
    done = 0
    orders = round_orders(len(sessions))
    while done < runs and (deadline is None or done < min_runs or time.monotonic() < deadline):
        for k in next(orders):
            samples[k][done] = sessions[k].timed(batch)
        done += 1
        if progress is not None:
            progress(1)
    return [s[:done] for s in samples]


def round_orders(n: int, seed: int = 0) -> Iterator[list[int]]:
    """The order of the n sessions in each round: a seeded shuffle, drawn again where it would run the
    previous round's last session twice in a row (two sessions: strict alternation). A session that runs
    right after itself finds its weights and code in cache: with the order alternating forward and back,
    the first and last of three copies of one model measured 2-3 % faster than the middle one (OpenVINO,
    SqueezeNet 1.1, 1 thread), which made the last model of a comparison look faster than its peers."""
    rng = np.random.default_rng(seed)
    last = -1
    while True:
        order = [int(k) for k in rng.permutation(n)]
        while n > 1 and order[0] == last:
            order = [int(k) for k in rng.permutation(n)]
        last = order[-1] if order else -1
        yield order


def versions() -> dict[str, str]:
    return {
        "quantkit": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def fits_one_message(model: onnx.ModelProto) -> bool:
    """Whether the model serialises into one protobuf (under 2 GB). Tensor data under half the limit
    leaves room for any graph, which spares upb's ByteSize, slow on every model a loop builds."""
    return _tensor_bytes(model) < PROTO_LIMIT // 2 or model.ByteSize() <= PROTO_LIMIT


def _tensor_bytes(model: onnx.ModelProto) -> int:
    """The bulk of a model's size, cheaply: the data of its initializers and Constant nodes (upb's
    ByteSize walks the whole message, 30 ms on MobileNetV2, and loops build dozens of models)."""
    constants = [
        a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t")
    ]
    return sum(
        len(t.raw_data)
        + 4 * (len(t.float_data) + len(t.int32_data))
        + 8 * (len(t.int64_data) + len(t.double_data))
        for t in [*model.graph.initializer, *constants]
    )


# What onnxruntime says where it made the session but could not open the file asked for the optimized graph
# (SystemError : errno), or could not save it there (Model::Save: also what a graph past 2 GB gives)
_OPEN_FAILED = re.compile(r"SystemError : \d+|System error number|No space left|File too large")
_SAVE_FAILED = "Protobuf serialization failed"


def optimized_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime's CPU provider runs after its extended optimizations (the QDQ fusions into
    QLinearConv, MatMulIntegerToFloat, QLinearAdd...), before layout rewrites: what it made integer."""
    with held() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 4
        source: str | bytes
        if fits_one_message(model):
            source = model.SerializeToString(deterministic=True)
        else:
            source = str(Path(folder) / "model.onnx")
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.save_model(copy, source, save_as_external_data=True, location="model.onnx.data")
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", "optimized.onnx.data"
            )
        try:
            ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types from C++
            reason = ort_reason(str(exc))
            short = short_of_room(folder, _tensor_bytes(model)) if _SAVE_FAILED in reason else 0
            if _OPEN_FAILED.search(reason) or short:  # hq57 D(e): a full disk or `ulimit -f`, not the model
                # hq85 F8: with its errno, so that `ulimit -f` is named, not the disk
                raise OSError(short, f"onnxruntime could not write its optimized graph ({reason})") from exc
            raise ModelError(f"onnxruntime cannot load the model ({load_reason(str(exc))})") from exc
        return onnx.load(str(Path(folder) / "optimized.onnx"))


# A child loads the model from the path it is given, with onnxruntime's default session options.
_LOAD_IN_CHILD = (
    "import sys, onnxruntime as ort\no = ort.SessionOptions()\no.log_severity_level = 4\n"
    "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])"
)


def crash_on_load(model: onnx.ModelProto, timeout: float = 600.0) -> str | None:
    """Why onnxruntime dies making a default CPU session for `model`, tried in a child process, or None
    where it does not die (an error it raises is left to the caller's own session, which gives it).

    A crash is no exception: onnxruntime 1.32's NCHWc layout pass segfaults on an FP16 PP-OCRv2
    recognizer (an fp16 MatMul after LSTM -> Transpose -> Reshape -> Transpose), which took quantkit down
    with no message. Models over protobuf's 2 GB are not tried."""
    if not fits_one_message(model):
        return None
    with held() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(model.SerializeToString(deterministic=True))
        try:
            done = subprocess.run(
                [sys.executable, "-c", _LOAD_IN_CHILD, str(path)], capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return f"onnxruntime {ort.__version__} did not finish loading it in {timeout:.0f} s"
        except OSError:  # no interpreter to start (an embedded Python): the in-process load is all there is
            return None
    if done.returncode >= 0:
        return None
    name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else "?"
    return f"onnxruntime {ort.__version__} crashes loading it ({name})"


def _proto(model: bytes | Path) -> onnx.ModelProto | None:
    """A serialized model or a model file read (its external weights not), None where it cannot be."""
    try:
        if isinstance(model, Path):
            return onnx.load(str(model), format="protobuf", load_external_data=False)
        return onnx.load_from_string(model)
    except Exception:  # an unreadable model: onnxruntime's own error says what is wrong with it
        return None


def _source(model: Path | bytes) -> str | bytes:
    """The path onnxruntime opens, or the bytes where the name is no UTF-8 (hq71 F12: binding refused)."""
    if not isinstance(model, Path):
        return model
    name = str(model)
    return model.read_bytes() if any(0xD800 <= ord(c) <= 0xDFFF for c in name) else name
