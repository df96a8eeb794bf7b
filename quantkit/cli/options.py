"""The options several commands share, and how their text becomes configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main

from quantkit.config import (
    CalibMethod,
    OutputKind,
    Prefer,
    Preset,
    ResizeMode,
    Target,
)
from quantkit.config.base import as_floats, as_size
from quantkit.image_folders import SUFFIX_TEXT

IMAGES_HELP = f"Folder of images ({SUFFIX_TEXT}), recursive."
ImagesOpt = Annotated[Path, typer.Option("--images", help=IMAGES_HELP)]
# calibrate and compare read images or, instead, model-ready arrays: exactly one of the two
ImagesOrArraysOpt = Annotated[
    Path | None,
    typer.Option("--images", help=IMAGES_HELP),
]
InputsOpt = Annotated[
    Path | None,
    typer.Option(
        "--inputs",
        help="Instead of --images: a folder of model-ready .npy/.npz files, one sample per file (an "
        ".npz names the model's inputs), fed as they are.",
    ),
]

NumImagesOpt = Annotated[
    int | None,
    typer.Option(
        "--num-images", help="Use a seeded subset of N images (all, with a warning, if N is larger)."
    ),
]

TargetOpt = Annotated[
    Target,
    typer.Option(
        "--target",
        help="Runtime the INT8 model is placed for: ort-cpu (onnxruntime's CPU kernels), tensorrt (int8 "
        "symmetric, Q/DQ on weighted layers' inputs and residual Adds; layers float, FP16 there, to within "
        "0.5 dB of uint8 activations' accuracy), openvino (that placement, uint8).",
    ),
]

SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the --num-images subset.")]

ThreadsOpt = Annotated[int, typer.Option("--threads", help="Intra-op threads for the latency runs.")]

WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Local worker processes; results are the same for any number at one --threads (the default "
        "gives one worker every core, two half each: onnxruntime then rounds a few sums differently).",
    ),
]

# compare's and shrink's --threads time the latency runs only: their evaluation (and shrink's calibration)
# runs at onnxruntime's default threads, one worker every core, two half each (hq82 4)
EvalWorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Local worker processes; figures are the same for any number but for onnxruntime's rounding of "
        "sums it splits by thread (about 1e-8 dB; --threads here sets the latency runs only).",
    ),
]

RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="<address>",
        envvar="RAY_ADDRESS",
        show_envvar=False,
        help="Run the shards as Ray tasks on the cluster at this address (or $RAY_ADDRESS); needs "
        "pip install 'ray>=2.40' and the images on a path every node reads.",
    ),
]

WorkerThreadsOpt = Annotated[
    int,
    typer.Option("--threads", help="Inference threads per worker (0: all cores, shared among workers)."),
]

RunsOpt = Annotated[int, typer.Option("--runs", help="Timed runs per model, interleaved (0: no timing).")]

WarmupOpt = Annotated[int, typer.Option("--warmup", help="Untimed runs per model first.")]

DetectorOpt = Annotated[
    str | None,
    typer.Option(
        "--detector",
        help="Detector head [N, A, 4 box + objectness + classes]: yolo (boxes in pixels) or yolox (raw, "
        "decoded on the stride 8/16/32 grids); yolov8: [N, 4 box + classes, A] (Ultralytics); db: a text "
        "detector's probability map [N, 1, H, W] (DBNet, PaddleOCR; text pixels and boxes at the score "
        "threshold, 0.3 or compare's --score-threshold, box score 0.6); end2end: final detections [N, K, "
        "x0 y0 x1 y1 score class] (YOLOv10, "
        "YOLO26, exports with NMS), or boxes [N, K, 4] with scores and labels [N, K] (RT-DETR, D-FINE, "
        "DEIM, the TensorFlow Object Detection API); gfl: class scores [N, A, C] and box distributions "
        "[N, A, 4 (R + 1)] per stride 8/16/32/64 (PP-PicoDet; NanoDet's one [N, A, C + 4 (R + 1)]); ssd: "
        "class scores [N, A, C] (a softmax's background its first or last class) beside decoded boxes "
        "[N, A, 4] as x0 y0 x1 y1 (SSD, RFB, RetinaNet exports). Adds "
        "detection recall and the final boxes matched "
        "(convert: to --max-drop's budget, which it needs).",
    ),
]

OutputKindOpt = Annotated[
    OutputKind,
    typer.Option(
        "--output-kind",
        help="What the model's [N, C] outputs hold: classes (scores: top-1 agreement, FP32's check that one "
        "class does not win every image; and a map at the input's size from a Conv, Resize or per-pixel "
        "layer, a segmenter's logits: per pixel), values (embeddings, landmarks, regressions: SQNR and "
        "cosine only), or auto (values where the graph computes them with a rectifier or a normalisation, or "
        "with a bare Gemm/MatMul beside a Softmax's or Sigmoid's output, else classes; maps only where a "
        "Softmax gives them).",
    ),
]

MethodOpt = Annotated[CalibMethod, typer.Option("--method", help="Range selection from the statistics.")]
PreferOpt = Annotated[
    Prefer,
    typer.Option(
        "--prefer",
        help="balanced: profile the INT8 model beside FP32 on this CPU and keep float the ops whose "
        "int8 form runs slower (where the model then measures faster, or as fast and 1 dB more "
        "accurate; a transformer also tries Q/DQ on its MatMuls' inputs only); a model still measured "
        "slower than FP32 twice (below 0.97x) is written float, with a warning; speed: the same, below "
        "1.0x, and a Conv writing a model output int8 (that output rounded to uint8); accuracy: plan "
        "with no timing, write every layer the plan quantizes int8 (a transformer's with "
        "Q/DQ on its MatMuls' inputs only where that measures 1 dB more accurate on the calibration "
        "samples; the same bytes on any machine; the ops balanced keeps float lose no rounding, so it "
        "may measure more accurate), then time the model written once for the summary, with a warning "
        "where it ran slower than FP32. "
        "What was measured is kept per model and CPU, so a convert run again writes the same bytes "
        "(QUANTKIT_SPEED_CACHE: its folder, or off).",
    ),
]
ExcludeNodesOpt = Annotated[
    str | None,
    typer.Option(
        "--exclude-nodes",
        help="Comma-separated node names to keep float, each alone (its input still quantized).",
    ),
]
ExcludeFromOpt = Annotated[
    Path | None,
    typer.Option(
        "--exclude-from",
        help="File of layer names to keep float on exact inputs: with the path back to the layer before "
        "(quantkit sensitivity writes one and says what goes float with them).",
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

ScoreOpt = Annotated[
    float | None, typer.Option("--score-threshold", help="Detection score for --detector [default: 0.3].")
]

PresetOpt = Annotated[
    Preset | None,
    typer.Option(
        "--preset",
        help="Normalisation preset, its values in the model's channel order (after --bgr) [default: "
        "imagenet; raw for a uint8 input].",
    ),
]

MeanOpt = Annotated[
    str | None,
    typer.Option(
        "--mean",
        help="Per-channel mean in 0-255 units, in the model's channel order (after --bgr), e.g. "
        "123.7,116.3,103.5.",
    ),
]

StdOpt = Annotated[
    str | None,
    typer.Option(
        "--std", help="Per-channel std in 0-255 units, in the model's channel order, e.g. 58.4,57.1,57.4."
    ),
]

BgrOpt = Annotated[
    bool | None, typer.Option("--bgr/--rgb", help="Channel order the model expects [default: rgb].")
]

ResizeOpt = Annotated[
    ResizeMode | None,
    typer.Option(
        "--resize",
        help="crop: shorter side to size/0.875 then centre crop; squash; letterbox: aspect kept, image at "
        "the top-left, padded with --pad (114: YOLOX); letterbox-center: the same, centred (Ultralytics).",
    ),
]

PadOpt = Annotated[
    float | None,
    typer.Option(
        "--pad",
        help="letterbox: the padding's fill, a pixel value 0-255 [default: 114]; 0 where the model's own "
        "code pads with black (cv2.copyMakeBorder's default).",
    ),
]

InputValueOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input-value",
        metavar="NAME=V[,V...]",
        help="A value for a model input beside the image, the same for every image (RT-DETR's "
        "orig_target_sizes=640,640; PaddleDetection's im_shape=640,640 and scale_factor=1,1); once per "
        "such input. Recorded with the preprocessing; what is computed from it stays float.",
    ),
]

SizeOpt = Annotated[
    str | None, typer.Option("--input-size", help="HxW for models with dynamic spatial size.")
]


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    return None if text is None else as_floats(text, option)


def parse_size(text: str | None) -> tuple[int, int] | None:
    return None if text is None else as_size(text)


def preprocess_options(
    preset: Preset | None,
    mean: str | None,
    std: str | None,
    bgr: bool | None,
    resize: ResizeMode | None,
    input_size: str | None,
    pad: float | None = None,
    input_values: list[str] | None = None,
) -> Any:
    from quantkit.config import PreprocessOptions
    from quantkit.config.fixed_inputs import given_values

    return PreprocessOptions(
        preset=preset,
        mean=_floats(mean, "--mean"),
        std=_floats(std, "--std"),
        bgr=bool(bgr),
        resize=resize or ResizeMode.crop,
        input_size=parse_size(input_size),
        pad=pad,
        input_values=given_values(input_values or ()),
    )


def array_run_options(ctx: typer.Context, *values: Any) -> tuple[Any, ...]:
    """--inputs: the options that shape images (config.preprocessing.IMAGE_OPTIONS' order), each checked
    for its form and, where a config file set it, dropped (None): they shape no array, and a file's
    [calibrate] mean = ... made every array run refused (hq151 F4, hq153 F7); the same options given as
    flags are refused by the pipeline."""
    from quantkit.config.preprocessing import IMAGE_OPTIONS

    preprocess_options(*values)  # a malformed one is refused, wherever it was set
    sources = [getattr(ctx.get_parameter_source(name), "name", "") for name in IMAGE_OPTIONS]
    return tuple(None if where == "DEFAULT_MAP" else v for where, v in zip(sources, values, strict=True))
