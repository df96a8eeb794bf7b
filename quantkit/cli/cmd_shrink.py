"""`quantkit shrink`: the CI step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import typer.core
import typer.main

from quantkit.cli.app import (
    CONTEXT,
    VERBOSITY,
    Command,
    app,
    comma_names,
    default_cache,
    exclusion_names,
    guard_outputs,
    progress_bars,
    show,
    stderr,
    step_summary_path,
    warn,
)
from quantkit.cli.options import (
    BgrOpt,
    CompactOpt,
    DetectorOpt,
    EvalWorkersOpt,
    ExcludeFromOpt,
    ExcludeNodesOpt,
    InputValueOpt,
    MeanOpt,
    MethodOpt,
    NumImagesOpt,
    OutputKindOpt,
    PadOpt,
    PreferOpt,
    PresetOpt,
    RayOpt,
    ResizeOpt,
    RunsOpt,
    ScoreOpt,
    SeedOpt,
    SizeOpt,
    StdOpt,
    TargetOpt,
    ThreadsOpt,
    WarmupOpt,
    preprocess_options,
)
from quantkit.config import CalibMethod, OutputKind, Prefer, Target


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
    min_eval_sqnr: Annotated[
        float | None,
        typer.Option(
            "--min-eval-sqnr",
            help="Gate: the worst output's SQNR on the evaluation images at least this many dB (models whose "
            "outputs hold values: embeddings, landmarks, images, depth).",
        ),
    ] = None,
    exit_zero: Annotated[
        bool,
        typer.Option(
            "--exit-zero/--no-exit-zero",
            help="Exit 0 even when a gate fails (report-only runs; --no-exit-zero undoes a config file's).",
        ),
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
    target: TargetOpt = Target.ort_cpu,
    method: MethodOpt = CalibMethod.mse,
    prefer: PreferOpt = Prefer.balanced,
    min_sqnr: Annotated[
        float | None,
        typer.Option(
            "--min-sqnr",
            help="Keep the fewest layers float that lift the output SQNR on the calibration samples to DB "
            "(0: off) [default: 12].",
        ),
    ] = None,
    exclude_nodes: ExcludeNodesOpt = None,
    exclude_from: ExcludeFromOpt = None,
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
            "[default: $XDG_CACHE_HOME/quantkit/calibration or ~/.cache/quantkit/calibration].",
        ),
    ] = None,
    threads: ThreadsOpt = 1,
    workers: EvalWorkersOpt = 1,
    ray: RayOpt = None,
    runs: RunsOpt = 100,
    warmup: WarmupOpt = 10,
    detector: DetectorOpt = None,
    score_threshold: ScoreOpt = None,
    output_kind: OutputKindOpt = OutputKind.auto,
    preset: PresetOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    bgr: BgrOpt = None,
    resize: ResizeOpt = None,
    pad: PadOpt = None,
    input_size: SizeOpt = None,
    input_value: InputValueOpt = None,
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
    from quantkit.evaluate.detector_options import detector_fields
    from quantkit.parallel import Parallel
    from quantkit.pipeline import run_shrink as shrinking
    from quantkit.pipeline.shrink_cleanup import outputs
    from quantkit.pipeline.step_summary import require_step_summary
    from quantkit.reports import console
    from quantkit.reports.formats import failed_gates, shrink_warnings

    preprocess = preprocess_options(preset, mean, std, bgr, resize, input_size, pad, input_value)
    config = ShrinkConfig(
        calibration=CalibrateConfig(
            ImageSelection(images, num_images, seed), preprocess, output_kind=output_kind
        ),
        convert=ConvertConfig(
            method=method,
            prefer=prefer,
            min_sqnr=ConvertConfig.min_sqnr if min_sqnr is None else min_sqnr,
            exclude_nodes=comma_names(exclude_nodes),
            float_layers=exclusion_names(exclude_from),
            compact=compact,
            target=target,
        ),
        evaluation=CompareConfig(
            images=ImageSelection(eval_images or images, eval_num_images, seed, "--eval-num-images"),
            preprocess=preprocess,
            labels=labels,
            latency=LatencyConfig(threads=threads, warmup=warmup, runs=runs),
            output_kind=output_kind,
            **detector_fields(detector, score_threshold),
        ),
        gates=Gates(
            max_drop=max_drop,
            min_speedup=min_speedup,
            max_size_ratio=max_size_ratio,
            min_eval_sqnr=min_eval_sqnr,
            allow_degenerate_reference=allow_degenerate_reference,
        ),
        cache_dir=cache_dir or default_cache(),
    )
    cache = config.cache_dir
    cached = sorted(cache.glob("*.calib.*")) if cache is not None and cache.is_dir() else []
    guard_outputs(
        [(f"--output-dir's {name}", output_dir / name) for name in outputs(model)]
        + [("$GITHUB_STEP_SUMMARY", step_summary_path())],
        [("the model", model), ("--labels", labels), ("--exclude-from", exclude_from)]
        + [("a calibration table in --cache-dir", path) for path in cached],  # hq57 A1: appended to
        [("--images", images), ("--eval-images", eval_images)],
    )
    require_step_summary(step_summary_path())
    with progress_bars() as progress:
        result = shrinking.shrink(
            model, output_dir, config, progress, step_summary_path(), html, Parallel(workers, ray or None)
        )
    show(console.shrink_table(result, str(output_dir), exit_zero, html))
    for line in shrink_warnings(result):
        warn(line)
    if not result.passed and VERBOSITY["level"] < 0:  # hq169: -q failed a CI step without a word of why
        stderr.print(failed_gates(result), highlight=False, markup=False, soft_wrap=True)
    if not result.passed and not exit_zero:
        raise typer.Exit(1)
