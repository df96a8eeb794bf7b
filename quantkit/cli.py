"""The command line. The only module that imports typer; maps QuantkitError to one line and exit 2.

Heavy modules are imported inside the commands so that `quantkit --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
import typer.main
from rich.console import Console

from quantkit.config import (
    ActivationType,
    BudgetMetric,
    CalibMethod,
    FallbackPrecision,
    Precision,
    Preset,
    ResizeMode,
    WeightRange,
)
from quantkit.errors import ConfigError, QuantkitError


class Switch(str, Enum):
    on = "on"
    off = "off"


def _loudness(
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            expose_value=False,
            help="Only files, errors, warnings that change a result's meaning, and the exit code.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", expose_value=False, help="Log each step with its time to stderr."),
    ] = False,
) -> None:
    """Declares --quiet and --verbose for every command's help; main() reads them from anywhere."""


_LOUDNESS: list[Any] = []


class Command(typer.core.TyperCommand):
    """A command whose help lists --quiet and --verbose (main() takes them off the line before parsing)."""

    def get_params(self, ctx: Any) -> list[Any]:
        if not _LOUDNESS:
            _LOUDNESS.extend(typer.main.get_command(_probe()).params)
        params = super().get_params(ctx)
        return [*params[:-1], *_LOUDNESS, *params[-1:]]  # before --help, which click adds last


def _probe() -> typer.Typer:
    probe = typer.Typer(add_completion=False)
    probe.command()(_loudness)
    return probe


CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}
app = typer.Typer(
    rich_markup_mode=None,  # click's plain help: whole option names and wrapped text at any width
    context_settings=CONTEXT,
    pretty_exceptions_enable=False,
    help="Post-training INT8 quantization for ONNX vision models: calibrate, convert, compare, shrink.\n\n"
    "Options may also come from [tool.quantkit] in ./pyproject.toml or quantkit.toml beside the model "
    "(flags win); add --print-config to a command to see its resolved settings. Every command takes "
    "--quiet (-q) and --verbose (-v).",
)
stdout = Console()
stderr = Console(stderr=True)
# -1 with --quiet (no progress, no tables: files, errors and exit codes only), 1 with --verbose (each step
# logged to stderr with its time). Set by main() from anywhere on the command line.
VERBOSITY = {"level": 0}
CONFIG_FILES: list[Path] = []  # the config files this run read options from (set by main)
LOUDNESS_FLAGS = {"--quiet": -1, "-q": -1, "--verbose": 1, "-v": 1}


def _show(*renderables: Any, **options: Any) -> None:
    """Results go to stdout, unless --quiet."""
    if VERBOSITY["level"] >= 0:
        stdout.print(*renderables, **options)


def _warn(line: str) -> None:
    """A warning that changes what a result means: stderr, one line, kept under --quiet."""
    stderr.print(f"warning: {line}", highlight=False, markup=False, soft_wrap=True)


def _guard(
    outputs: Sequence[tuple[str, Path | None]],
    inputs: Sequence[tuple[str, Path | None]],
    folders: Sequence[tuple[str, Path | None]] = (),
) -> None:
    """No output of a command lands on any of its inputs (config files included), before any work."""
    from quantkit import files
    from quantkit.images import IMAGE_SUFFIXES

    configs = [("the config file", path) for path in CONFIG_FILES]
    files.check_outputs(
        [(role, path) for role, path in outputs if path is not None and str(path) != "-"],
        [*((role, path) for role, path in inputs if path is not None), *configs],
        [(role, path) for role, path in folders if path is not None],
        IMAGE_SUFFIXES,
    )


ImagesOpt = Annotated[
    Path, typer.Option("--images", help="Folder of images (.jpg .jpeg .png .bmp .webp), recursive.")
]
NumImagesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-images", help="Use a seeded subset of N images (all, with a warning, if N is larger)."
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the --num-images subset.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="Intra-op threads for the latency runs.")]
RunsOpt = Annotated[int, typer.Option("--runs", help="Timed runs per model, interleaved.")]
WarmupOpt = Annotated[int, typer.Option("--warmup", help="Untimed runs per model first.")]
DetectorOpt = Annotated[
    str | None,
    typer.Option(
        "--detector",
        help="Detector head [N, A, 4 box + objectness + classes]: yolo (boxes in pixels) or yolox (raw, "
        "decoded on the stride 8/16/32 grids). Adds detection recall and the final boxes matched.",
    ),
]
CompactOpt = Annotated[
    bool,
    typer.Option(
        "--compact",
        help="Fewer bytes, same outputs: identical weights stored once, default attributes dropped, "
        "inner tensors renamed to numbers (node names, inputs and outputs kept).",
    ),
]
ScoreOpt = Annotated[float, typer.Option("--score-threshold", help="Detection score for --detector.")]
PresetOpt = Annotated[
    Preset | None, typer.Option("--preset", help="Normalisation preset [default: imagenet].")
]
MeanOpt = Annotated[
    str | None, typer.Option("--mean", help="Per-channel mean in 0-255 units, e.g. 123.7,116.3,103.5.")
]
StdOpt = Annotated[
    str | None, typer.Option("--std", help="Per-channel std in 0-255 units, e.g. 58.4,57.1,57.4.")
]
BgrOpt = Annotated[
    bool | None, typer.Option("--bgr/--rgb", help="Channel order the model expects [default: rgb].")
]
ResizeOpt = Annotated[
    ResizeMode | None,
    typer.Option(
        "--resize", help="crop: shorter side to size/0.875 then centre crop; squash; letterbox (pad 114)."
    ),
]
SizeOpt = Annotated[
    str | None, typer.Option("--input-size", help="HxW for models with dynamic spatial size.")
]


def _version(value: bool) -> None:
    if value:
        from quantkit import __version__
        from quantkit.runtime import versions

        found = versions()
        found.pop("quantkit", None)
        stdout.print(
            f"quantkit {__version__} (" + ", ".join(f"{k} {v}" for k, v in found.items()) + ")",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            callback=_version,
            help="Print the versions of quantkit, onnx, onnxruntime, numpy and Python, and exit.",
        ),
    ] = False,
) -> None:
    """Post-training INT8 quantization for ONNX vision models."""


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"{option} takes comma-separated numbers like 123.7,116.3,103.5; got {text!r}"
        ) from None
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--input-size takes HxW like 224x224; got {text!r}")
    return int(parts[0]), int(parts[1])


def _preprocess_options(
    preset: Preset | None,
    mean: str | None,
    std: str | None,
    bgr: bool | None,
    resize: ResizeMode | None,
    input_size: str | None,
) -> Any:
    from quantkit.config import PreprocessOptions

    return PreprocessOptions(
        preset=preset or Preset.imagenet,
        mean=_floats(mean, "--mean"),
        std=_floats(std, "--std"),
        bgr=bool(bgr),
        resize=resize or ResizeMode.crop,
        input_size=_size(input_size),
    )


def _detector(detector: str | None, threshold: float) -> dict[str, Any]:
    """CompareConfig's detector fields."""
    from quantkit.config import DetectorHead

    if detector is None:
        return {}
    if detector not in DetectorHead.__members__:
        raise ConfigError(
            "--detector knows 'yolo' (boxes in pixels) and 'yolox' (raw YOLOX head), outputs "
            f"[N, anchors, 4 box + objectness + classes]; got {detector!r}"
        )
    return {"detection_threshold": threshold, "detector": DetectorHead(detector)}


@contextmanager
def _progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A progress factory for the pipeline, drawn on stderr when it is a terminal."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    level = VERBOSITY["level"]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=level < 0 or not stderr.is_terminal,
    ) as bars:

        def start(label: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(label, total=total)
            began, done = time.perf_counter(), [0]
            if level > 0:
                bars.console.print(f"{label}: {total} step(s)", highlight=False, markup=False)

            def advance(n: int) -> None:
                bars.advance(task, n)
                done[0] += n
                if level > 0 and done[0] >= total > done[0] - n:
                    seconds = time.perf_counter() - began
                    bars.console.print(f"{label}: done in {seconds:.1f} s", highlight=False, markup=False)

            return advance

        yield start


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit calibrate model.onnx --images calib/ --output model.calib.json "
    "--num-images 100",
)
def calibrate(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="FP32 ONNX model.")],
    images: ImagesOpt,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Table to write (.json, arrays beside it in .npz).")
    ],
    num_images: NumImagesOpt = None,
    seed: SeedOpt = 0,
    preset: PresetOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    bgr: BgrOpt = None,
    resize: ResizeOpt = None,
    input_size: SizeOpt = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images per run (models with a dynamic batch).")
    ] = 8,
    bins: Annotated[int, typer.Option("--bins", help="Histogram bins per tensor (at least 2048).")] = 2048,
) -> None:
    """Run the FP32 model over an image folder and record activation statistics in a calibration table."""
    from quantkit import pipeline
    from quantkit.config import CalibrateConfig, ImageSelection
    from quantkit.reports import console

    config = CalibrateConfig(
        images=ImageSelection(images, num_images, seed),
        preprocess=_preprocess_options(preset, mean, std, bgr, resize, input_size),
        batch_size=batch_size,
        bins=bins,
    )
    _guard(
        [("--output", output), ("the table's arrays", output.with_suffix(".npz"))],
        [("the model", model)],
        [("--images", images)],
    )
    with _progress() as progress:
        summary = pipeline.calibrate(model, output, config, progress)
    _show(
        console.calibrate_lines(
            str(summary.table),
            summary.images_used,
            summary.tensors,
            summary.seconds,
            summary.preprocess.to_dict(),
            summary.notes,
        ),
        end="",
        soft_wrap=True,
    )
    if summary.images_skipped:
        _warn(console.skipped_line(summary.images_skipped))
    for line in (*summary.warnings, *summary.reference_findings):
        _warn(line)


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit convert model.onnx --to int8 --calibration model.calib.json "
    "--output model.int8.onnx",
)
def convert(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="FP32 ONNX model.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the converted model.")],
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            "-c",
            help="Table written by `quantkit calibrate`. int8: required; fp16: checks activation ranges.",
        ),
    ] = None,
    to: Annotated[Precision, typer.Option("--to", help="Target precision.")] = Precision.int8,
    method: Annotated[
        CalibMethod, typer.Option("--method", help="Range selection from the statistics.")
    ] = CalibMethod.mse,
    percentile: Annotated[
        float, typer.Option("--percentile", help="Mass kept by --method percentile.")
    ] = 99.999,
    activations: Annotated[
        ActivationType, typer.Option("--activations", help="uint8 asymmetric or int8 symmetric.")
    ] = ActivationType.uint8,
    exclude_nodes: Annotated[
        str | None, typer.Option("--exclude-nodes", help="Comma-separated node names to keep float.")
    ] = None,
    exclude_op_types: Annotated[
        str | None,
        typer.Option("--exclude-op-types", help="Comma-separated op types to keep float, e.g. Gemm,Concat."),
    ] = None,
    smoothquant: Annotated[
        str,
        typer.Option(
            "--smoothquant",
            help=(
                "Rebalance outlier channels (SmoothQuant): auto (alpha per activation, where it lowers "
                "the measured error), off, or a fixed ALPHA in (0, 1) for every candidate."
            ),
        ),
    ] = "auto",
    bias_correction: Annotated[
        Switch,
        typer.Option(
            "--bias-correction",
            help="on: correct each bias for the mean shift of weight rounding E[(W_q - W) x].",
        ),
    ] = Switch.on,
    min_sqnr: Annotated[
        float | None,
        typer.Option(
            "--min-sqnr",
            help="Keep the fewest layers float (fp16: float32) that lift the output SQNR on the calibration "
            "samples to DB (0: off) [default: 12 for int8, 40 for fp16].",
        ),
    ] = None,
    max_float_layers: Annotated[
        int, typer.Option("--max-float-layers", help="At most this many layers kept float by --min-sqnr.")
    ] = 8,
    quantize_attention_matmul: Annotated[
        bool,
        typer.Option("--quantize-attention-matmul", help="Also quantize activation x activation MatMuls."),
    ] = False,
    max_drop: Annotated[
        float | None,
        typer.Option(
            "--max-drop",
            help="Accuracy budget in points of --metric: keep the fewest layers float that stay within it "
            "on --validation images.",
        ),
    ] = None,
    validation: Annotated[
        Path | None, typer.Option("--validation", help="--max-drop: images held apart from calibration.")
    ] = None,
    validation_images: Annotated[
        int | None,
        typer.Option("--validation-images", help="--max-drop: a seeded subset of N images [default: all]."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="--max-drop: class ids in output order, for top1.")
    ] = None,
    metric: Annotated[
        BudgetMetric,
        typer.Option(
            "--metric",
            help="--max-drop unit: top1 points (needs --labels), agreement points, recall (anchors above the "
            "score lost), boxes (final boxes missed or added per 100; needs --detector); auto picks top1 "
            "with labels, on a YOLO head boxes with --detector else recall, else agreement.",
        ),
    ] = BudgetMetric.auto,
    max_trials: Annotated[
        int, typer.Option("--max-trials", help="--max-drop: models measured at most.")
    ] = 16,
    timeout: Annotated[
        float, typer.Option("--timeout", help="--max-drop: seconds of search at most.")
    ] = 900.0,
    weight_range: Annotated[
        WeightRange,
        typer.Option(
            "--weight-range",
            help="int8 weights on [-127, 127] (full) or [-63, 63] (reduced: x86 CPUs without VNNI saturate "
            "full ones); auto picks for this machine.",
        ),
    ] = WeightRange.auto,
    fallback: Annotated[
        FallbackPrecision,
        typer.Option(
            "--fallback", help="Layers left float run in fp32 (CPUs) or fp16 (targets with fp16 kernels)."
        ),
    ] = FallbackPrecision.fp32,
    exclude_from: Annotated[
        Path | None,
        typer.Option(
            "--exclude-from", help="File of node names to keep float (quantkit sensitivity writes one)."
        ),
    ] = None,
    keep_io_types: Annotated[
        bool,
        typer.Option(
            "--keep-io-types/--no-keep-io-types", help="fp16: graph inputs and outputs stay float32."
        ),
    ] = True,
    compact: CompactOpt = False,
    detector: DetectorOpt = None,
    input_size: Annotated[
        str | None,
        typer.Option("--input-size", help="fp16 without a table: HxW of the synthetic smoke-test inputs."),
    ] = None,
) -> None:
    """Write an INT8 QDQ model (per-channel int8 weights, int32 bias, per-tensor activations) or an FP16
    model (float32 inputs and outputs)."""
    from quantkit import pipeline
    from quantkit.config import AccuracyBudget, ConvertConfig, Float16Config, ImageSelection
    from quantkit.reports import console

    _refuse_other_precision(ctx, to)
    _guard(
        [("--output", output)],
        [
            ("the model", model),
            ("--calibration", calibration),
            ("the table's arrays", calibration.with_suffix(".npz") if calibration else None),
            ("--exclude-from", exclude_from),
            ("--labels", labels),
        ],
        [("--validation", validation)],
    )
    excluded_nodes = tuple(n for n in (exclude_nodes or "").split(",") if n)
    excluded_types = tuple(n for n in (exclude_op_types or "").split(",") if n)
    float_layers = _exclusions(exclude_from)
    if to is Precision.fp16:
        fp16 = Float16Config(
            excluded_nodes + float_layers,
            excluded_types,
            keep_io_types=keep_io_types,
            min_sqnr=Float16Config.min_sqnr if min_sqnr is None else min_sqnr,
            max_float32_layers=max_float_layers,
            compact=compact,
            input_size=_size(input_size),
        )
        with _progress() as progress:
            half = pipeline.convert_float16(model, calibration, output, fp16, progress)
        _show(console.float16_table(half, str(output)))
        return
    if calibration is None:
        raise ConfigError("--to int8 needs --calibration TABLE; run `quantkit calibrate` first")
    config = ConvertConfig(
        method=method,
        percentile=percentile,
        activations=activations,
        exclude_nodes=excluded_nodes,
        exclude_op_types=excluded_types,
        float_layers=float_layers,
        fallback=fallback,
        quantize_attention_matmul=quantize_attention_matmul,
        smoothquant=smoothquant,
        bias_correction=bias_correction is Switch.on,
        min_sqnr=ConvertConfig.min_sqnr if min_sqnr is None else min_sqnr,
        max_float_layers=max_float_layers,
        compact=compact,
        weight_range=weight_range,
    )
    budget = None
    if max_drop is not None:
        if validation is None:
            raise ConfigError("--max-drop needs --validation DIR: images held apart from calibration")
        budget = AccuracyBudget(
            max_drop=max_drop,
            validation=ImageSelection(validation, validation_images),
            metric=metric,
            labels=labels,
            max_trials=max_trials,
            timeout_s=timeout,
            **_detector(detector, AccuracyBudget.detection_threshold),
        )
    elif detector is not None:
        raise ConfigError("convert reads --detector only with --max-drop; add the budget or leave it out")
    with _progress() as progress:
        summary = pipeline.convert(model, calibration, output, config, progress, budget)
    _show(console.convert_table(summary, str(output)))


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit compare model.onnx model.int8.onnx --images val/ --labels synset.txt "
    "--json out.json",
)
def compare(
    reference: Annotated[Path, typer.Argument(metavar="REFERENCE", help="Reference (FP32) model.")],
    candidate: Annotated[Path, typer.Argument(metavar="CANDIDATE", help="Candidate (quantized) model.")],
    images: ImagesOpt,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Class ids in output order; images in DIR/<class>/ or <class>_*."),
    ] = None,
    num_images: NumImagesOpt = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    runs: RunsOpt = 100,
    warmup: WarmupOpt = 10,
    detector: DetectorOpt = None,
    score_threshold: ScoreOpt = 0.3,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON here.")] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write a Markdown table here.")
    ] = None,
    preset: PresetOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    bgr: BgrOpt = None,
    resize: ResizeOpt = None,
    input_size: SizeOpt = None,
) -> None:
    """Accuracy, output error, latency and size of a candidate model against its reference.

    Preprocessing is read from the candidate's quantkit metadata unless given here."""
    from quantkit import files, pipeline
    from quantkit.config import CompareConfig, ImageSelection, LatencyConfig
    from quantkit.reports import console, markdown, records

    explicit = any(v is not None for v in (preset, mean, std, bgr, resize, input_size))
    config = CompareConfig(
        images=ImageSelection(images, num_images, seed),
        preprocess=_preprocess_options(preset, mean, std, bgr, resize, input_size),
        labels=labels,
        latency=LatencyConfig(threads=threads, warmup=warmup, runs=runs),
        **_detector(detector, score_threshold),
    )
    outputs = [("--json", json_path), ("--markdown", markdown_path)]
    _guard(outputs, [("the reference", reference), ("the candidate", candidate), ("--labels", labels)])
    for _, out in outputs:
        if out is not None and str(out) != "-":
            files.check_output(out)
    to_stdout = [flag for flag, out in outputs if out is not None and str(out) == "-"]
    if len(to_stdout) > 1:
        raise ConfigError("only one of --json and --markdown can go to stdout (-); write the other to a file")
    if VERBOSITY["level"] < 0 and json_path is None and markdown_path is None:
        raise ConfigError("compare with --quiet prints nothing; add --json FILE (or --json - for stdout)")
    with _progress() as progress:
        result = pipeline.compare(reference, candidate, config, explicit, progress)
    if to_stdout:  # stdout carries the file: the table goes to stderr
        if VERBOSITY["level"] >= 0:
            stderr.print(console.compare_table(result))
    else:
        _show(console.compare_table(result))
    for line in (*result.warnings, *result.reference_findings):
        _warn(line)
    if json_path is not None:
        _write_text(json_path, json.dumps(records.comparison_dict(result), indent=1) + "\n")
    if markdown_path is not None:
        _write_text(markdown_path, markdown.comparison_markdown(result))


def _write_text(path: Path, text: str) -> None:
    """A report to its file, atomically, or to stdout for '-'."""
    from quantkit import files

    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        files.write_atomic(path, text.encode())


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit sensitivity model.onnx -c model.calib.json --images val/ --num-images 32 "
    "--write-exclusions keep-float.txt",
)
def sensitivity(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="FP32 ONNX model.")],
    calibration: Annotated[
        Path, typer.Option("--calibration", "-c", help="Table written by `quantkit calibrate`.")
    ],
    images: ImagesOpt,
    num_images: NumImagesOpt = 32,
    seed: SeedOpt = 0,
    method: Annotated[
        CalibMethod, typer.Option("--method", help="Range selection, as for convert.")
    ] = CalibMethod.mse,
    activations: Annotated[
        ActivationType, typer.Option("--activations", help="uint8 asymmetric or int8 symmetric.")
    ] = ActivationType.uint8,
    top: Annotated[int, typer.Option("--top", help="Measure the top 1..N layers kept float together.")] = 5,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON here.")] = None,
    write_exclusions: Annotated[
        Path | None,
        typer.Option(
            "--write-exclusions", help="Write the top --keep layers here, for convert --exclude-from."
        ),
    ] = None,
    keep: Annotated[int, typer.Option("--keep", help="How many layers --write-exclusions lists.")] = 3,
) -> None:
    """Rank the quantized layers: each one's own error, and the output error keeping it float recovers."""
    from quantkit import files, pipeline
    from quantkit.config import ConvertConfig, ImageSelection
    from quantkit.reports import console, records

    if top < 0 or keep < 1:
        raise ConfigError("--top must be at least 0 and --keep at least 1")
    _guard(
        [("--json", json_path), ("--write-exclusions", write_exclusions)],
        [
            ("the model", model),
            ("--calibration", calibration),
            ("the table's arrays", calibration.with_suffix(".npz")),
        ],
        [("--images", images)],
    )
    for out in (json_path, write_exclusions):
        if out is not None and str(out) != "-":
            files.check_output(out)
    config = ConvertConfig(method=method, activations=activations)
    with _progress() as progress:
        result = pipeline.sensitivity(
            model, calibration, ImageSelection(images, num_images, seed), config, top, progress
        )
    _show(console.sensitivity_table(result))
    if json_path is not None:
        _write_text(json_path, json.dumps(records.sensitivity_dict(result), indent=1) + "\n")
    if write_exclusions is not None:
        _write_text(write_exclusions, records.exclusions_file(result, keep, model.name))


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit shrink model.onnx --images calib/ --eval-images val/ --labels labels.txt "
    "--output-dir shrink/ --max-drop 1 --min-speedup 1.5 --max-size-ratio 0.3",
)
def shrink(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="FP32 ONNX model.")],
    images: Annotated[Path, typer.Option("--images", help="Calibration image folder.")],
    output_dir: Annotated[
        Path,
        typer.Option("--output-dir", help="Where the INT8 model, report.json, report.md and junit.xml go."),
    ],
    eval_images: Annotated[
        Path | None,
        typer.Option("--eval-images", help="Held-out images for the comparison [default: --images]."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Class ids in output order: --max-drop is then in top-1 points."),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            "--max-drop",
            help="Gate: accuracy points lost at most (top-1 with --labels; final boxes missed or added per "
            "100 with --detector; else top-1 disagreement with FP32).",
        ),
    ] = None,
    min_speedup: Annotated[
        float | None, typer.Option("--min-speedup", help="Gate: FP32 p50 latency / INT8 p50 at least this.")
    ] = None,
    max_size_ratio: Annotated[
        float | None, typer.Option("--max-size-ratio", help="Gate: INT8 bytes / FP32 bytes at most this.")
    ] = None,
    exit_zero: Annotated[
        bool, typer.Option("--exit-zero", help="Exit 0 even when a gate fails (report-only runs).")
    ] = False,
    allow_degenerate_reference: Annotated[
        bool,
        typer.Option(
            "--allow-degenerate-reference",
            help="Pass although FP32 itself looks fed wrongly (one class for every image, inputs far out "
            "of range, top-1 near chance): for models that really behave so on these images.",
        ),
    ] = False,
    html: Annotated[
        bool,
        typer.Option(
            "--html", help="Also report.html: per-layer error, activation ranges, latency pictures."
        ),
    ] = False,
    compact: CompactOpt = False,
    num_images: NumImagesOpt = None,
    eval_num_images: Annotated[
        int | None, typer.Option("--eval-num-images", help="Use this many of the evaluation images.")
    ] = None,
    seed: SeedOpt = 0,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Calibration tables, reused when model, preprocessing and images match "
            "[default: $XDG_CACHE_HOME/quantkit or ~/.cache/quantkit].",
        ),
    ] = None,
    threads: ThreadsOpt = 1,
    runs: RunsOpt = 100,
    warmup: WarmupOpt = 10,
    detector: DetectorOpt = None,
    score_threshold: ScoreOpt = 0.3,
    preset: PresetOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    bgr: BgrOpt = None,
    resize: ResizeOpt = None,
    input_size: SizeOpt = None,
) -> None:
    """Calibrate (or reuse a cached table), convert to INT8 and compare in one step, with gates that set
    the exit code: 0 all pass, 1 a gate failed (reports still written), 2 an error."""
    from quantkit.config import (
        CalibrateConfig,
        CompareConfig,
        ConvertConfig,
        Gates,
        ImageSelection,
        LatencyConfig,
        ShrinkConfig,
    )
    from quantkit.pipeline import run_shrink as shrinking
    from quantkit.reports import console

    preprocess = _preprocess_options(preset, mean, std, bgr, resize, input_size)
    config = ShrinkConfig(
        calibration=CalibrateConfig(ImageSelection(images, num_images, seed), preprocess),
        convert=ConvertConfig(compact=compact),
        evaluation=CompareConfig(
            images=ImageSelection(eval_images or images, eval_num_images, seed, "--eval-num-images"),
            preprocess=preprocess,
            labels=labels,
            latency=LatencyConfig(threads=threads, warmup=warmup, runs=runs),
            **_detector(detector, score_threshold),
        ),
        gates=Gates(
            max_drop=max_drop,
            min_speedup=min_speedup,
            max_size_ratio=max_size_ratio,
            allow_degenerate_reference=allow_degenerate_reference,
        ),
        cache_dir=cache_dir or _default_cache(),
    )
    _guard(
        [(f"--output-dir's {name}", output_dir / name) for name in shrinking.outputs(model)]
        + [("$GITHUB_STEP_SUMMARY", _step_summary())],
        [("the model", model), ("--labels", labels)],
        [("--images", images), ("--eval-images", eval_images)],
    )
    with _progress() as progress:
        result = shrinking.shrink(model, output_dir, config, progress, _step_summary(), html)
    _show(console.shrink_table(result, str(output_dir)))
    for line in (*result.warnings, *result.comparison.reference_findings):
        _warn(line)
    if not result.passed and not exit_zero:
        raise typer.Exit(1)


@app.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: quantkit demo   (offline: the embedded digits CNN)  |  quantkit demo --zoo mobilenetv2 "
    "--images photos/",
)
def demo(
    zoo_name: Annotated[
        str | None,
        typer.Option(
            "--zoo",
            help="Instead: a model zoo model (mobilenetv2, shufflenetv2, densenet121), downloaded once.",
        ),
    ] = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="With --zoo: ImageNet-like photos to calibrate on.")
    ] = None,
    eval_images: Annotated[
        Path | None, typer.Option("--eval-images", help="With --zoo: held-out photos [default: --images].")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="With --zoo: class ids in output order.")
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where the INT8 model and the reports go.")
    ] = Path("quantkit-demo"),
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Downloads and calibration tables [default: ~/.cache/quantkit]."),
    ] = None,
) -> None:
    """Shrink a model end to end and show the report: by default the digits CNN that ships inside the
    package, on its held-out digits, offline."""
    from quantkit import demo as demos
    from quantkit.reports import console

    cache = cache_dir or _default_cache().parent
    step_summary = _step_summary()
    with _progress() as progress:
        if zoo_name is None:
            result = demos.embedded(output_dir, cache, progress, step_summary)
        elif images is None:
            raise ConfigError("--zoo needs --images DIR: ImageNet-like photos to calibrate and evaluate on")
        else:
            result = demos.from_zoo(
                zoo_name, images, eval_images, labels, output_dir, cache, progress, step_summary
            )
    _show(console.compare_table(result.comparison))
    _show()
    _show(console.shrink_table(result, str(output_dir)))
    for line in (*result.warnings, *result.comparison.reference_findings):
        _warn(line)
    if not result.passed:
        raise typer.Exit(1)


INT8_ONLY = (
    "method",
    "percentile",
    "activations",
    "smoothquant",
    "bias_correction",
    "quantize_attention_matmul",
    "max_drop",
    "validation",
    "validation_images",
    "labels",
    "metric",
    "max_trials",
    "timeout",
    "weight_range",
    "fallback",
    "detector",
)
FP16_ONLY = ("keep_io_types", "input_size")


def _refuse_other_precision(ctx: typer.Context, to: Precision) -> None:
    """An option of the other precision given on the command line is an error, not silently ignored
    (a config file may set both kinds: only flags are checked)."""
    other = INT8_ONLY if to is Precision.fp16 else FP16_ONLY
    given = [p for p in ctx.command.params if p.name in other and _on_command_line(ctx, p.name)]
    if given:
        flags = ", ".join(p.opts[0] for p in given)
        kind = "--to int8" if to is Precision.fp16 else "--to fp16"
        raise ConfigError(f"{flags} only apply to {kind}; leave them out or convert {kind}")


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", "") == "COMMANDLINE"


def _step_summary() -> Path | None:
    """GitHub's step summary file, where shrink appends report.md."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    return Path(path) if path else None


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "quantkit" / "calibration"


def _exclusions(path: Path | None) -> tuple[str, ...]:
    """Node names from a --exclude-from file: one per line; blank lines and # comments ignored."""
    if path is None:
        return ()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read --exclude-from {path} ({exc.__class__.__name__}); check the path"
        ) from exc
    return tuple(line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip())


def main() -> None:
    """Console entry point: one line and exit code 2 for every QuantkitError, 130 on Ctrl-C."""
    argv = [a for a in sys.argv[1:] if a not in LOUDNESS_FLAGS]
    VERBOSITY["level"] = 0
    for flag in sys.argv[1:]:
        VERBOSITY["level"] = LOUDNESS_FLAGS.get(flag, VERBOSITY["level"])
    plain = [a for a in argv if a != "--print-config"]
    group = typer.main.get_command(app)  # built once: file defaults, --print-config and the run
    commands: dict[str, Any] = dict(getattr(group, "commands", {}))
    if os.environ.get("_QUANTKIT_COMPLETE"):  # the shell asks for completions: click answers and exits
        group.main(args=sys.argv[1:], prog_name="quantkit", complete_var="_QUANTKIT_COMPLETE")
    try:
        if not argv:  # bare `quantkit`: the help, and success
            with group.make_context("quantkit", ["--help"], resilient_parsing=True) as ctx:
                stdout.print(group.get_help(ctx), highlight=False, markup=False, soft_wrap=True)
            return
        default_map = _file_defaults(commands, plain)
        if len(plain) < len(argv):
            _print_config(commands, plain, default_map)
            return
        result = group.main(args=argv, prog_name="quantkit", standalone_mode=False, default_map=default_map)
        if result == 130:  # click turns Ctrl-C into a return value when not in standalone mode
            raise KeyboardInterrupt
        if isinstance(result, int) and result:  # and typer.Exit(code) too: shrink's failed gate
            sys.exit(result)
    except QuantkitError as exc:
        stderr.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        stderr.print("interrupted; nothing partial was written", highlight=False)
        sys.exit(130)
    except MemoryError:
        _fail("out of memory; lower --batch-size or --num-images, or free memory")
    except OSError as exc:  # the environment, not the input: a file vanished, a device failed
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}; check the path and that the disk is writable and not full")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: unknown option, bad choice, missing argument
        _fail(usage_message(exc, plain[0] if plain and plain[0] in commands else None))
    except Exception as exc:  # a bug in quantkit: still one line, the traceback on request
        if os.environ.get("QUANTKIT_DEBUG"):
            raise
        _fail(
            f"internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); this is a quantkit "
            "bug: rerun with QUANTKIT_DEBUG=1 for the traceback and report it"
        )


def usage_message(exc: typer.TyperException, command_name: str | None = None) -> str:
    """click's usage error as one clean line that points at the command's own help."""
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(text.split()).replace("Value error, ", "").rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    name = ctx.info_name if ctx is not None and ctx.parent is not None else command_name
    command = f"quantkit {name}" if name else "quantkit"
    return f"{message}; see `{command} --help`"


def _file_defaults(commands: dict[str, Any], argv: list[str]) -> dict[str, dict[str, Any]]:
    """Option defaults from [tool.quantkit] in ./pyproject.toml and quantkit.toml beside the model."""
    from quantkit import cli_config

    options = {
        name: {p.opts[0].lstrip("-"): p.name for p in cmd.params if p.opts and p.opts[0].startswith("--")}
        for name, cmd in commands.items()
    }
    model = None
    if argv and argv[0] in commands:
        parsed = commands[argv[0]].make_context(argv[0], list(argv[1:]), resilient_parsing=True)
        found = parsed.params.get("model") or parsed.params.get("reference")
        model = Path(found) if found else None
    found = cli_config.sources(Path.cwd(), model)
    CONFIG_FILES[:] = [path for path, _ in found]
    return cli_config.defaults(found, options)


def _print_config(commands: dict[str, Any], argv: list[str], default_map: dict[str, dict[str, Any]]) -> None:
    """The command's settings as it would run them, and where each comes from (flag, file, default)."""
    if not argv or argv[0] not in commands:
        raise ConfigError(
            f"--print-config goes with a command: quantkit COMMAND ... --print-config ({', '.join(commands)})"
        )
    name = argv[0]
    ctx = commands[name].make_context(
        name, list(argv[1:]), default_map=default_map[name], resilient_parsing=True
    )
    origin = {"COMMANDLINE": "command line", "DEFAULT_MAP": "config file", "ENVIRONMENT": "environment"}
    stdout.print(
        f"# quantkit {name}: resolved settings (flags > quantkit.toml > pyproject.toml > defaults)",
        soft_wrap=True,
    )
    for param in commands[name].params:
        if param.name is None or param.name == "help":
            continue
        value = ctx.params.get(param.name)
        shown = value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value
        key = param.opts[0].lstrip("-") if param.opts and param.opts[0].startswith("--") else param.name
        source = ctx.get_parameter_source(param.name)
        where = origin.get(getattr(source, "name", ""), "default")
        stdout.print(f"{key} = {json.dumps(shown)}  # {where}", highlight=False, markup=False)


def _fail(message: str) -> NoReturn:
    stderr.print(f"error: {message}", highlight=False, soft_wrap=True, markup=False)
    sys.exit(2)
