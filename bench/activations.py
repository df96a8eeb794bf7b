"""Activation patterns of modern backbones, FP32 against quantkit INT8 against onnxruntime's quantizer.

Builds a MobileNetV3-small-shaped network (torchvision's layout: stem, 11 inverted-residual blocks, 9 of
them with a squeeze-excite gate, a last 1x1 convolution, GlobalAveragePool, two Gemm layers; BatchNorm
folded) with seeded random weights at 224x224, once per activation pattern:

- hardswish: the HardSwish op (opset 14), SE gate HardSigmoid
- hardsigmoid: HardSigmoid(alpha=1/6) + Mul, as Paddle2ONNX and older PyTorch exports write it
- div: x * (Clip(x + 3, 0, 6) / 6)
- mul: x * (Clip(x + 3, 0, 6) * (1/6))
- muldiv: (x * Clip(x + 3, 0, 6)) / 6, as `x * relu6(x + 3) / 6` exports
- silu: x * Sigmoid(x), SE gate Sigmoid (EfficientNet, YOLO)
- gelu_erf: 0.5 * x * (1 + Erf(x / sqrt 2)), SE gate Sigmoid (ViT-style blocks)
- gelu_tanh: 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
- mish: x * Tanh(Softplus(x))

Each is calibrated and converted by quantkit (defaults) and by onnxruntime.quantization.quantize_static
(per-channel MinMax, QDQ, bench.ort_peer) on the same images, then timed interleaved at batch 1: medians
in ms, and speedups as the median over rounds of FP32's time over the INT8 model's in the same round.
The outputs are random-weight logits: SQNR against FP32 is reported, accuracy is not.

    python -m bench.activations [--patterns hardswish,silu] [--images DIR] [--runs 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantkit import pipeline
from quantkit.config import CalibrateConfig, ConvertConfig, ImageSelection, PreprocessOptions
from quantkit.graph.model_inputs import image_input
from quantkit.image_folders import find_images
from quantkit.images import ImageLoader, resolve_preprocess
from quantkit.runtime import Session, interleaved_latency

# torchvision mobilenet_v3_small: (kernel, expanded, out, squeeze-excite, hard-swish, stride)
BLOCKS = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)
PATTERNS = ("hardswish", "hardsigmoid", "div", "mul", "muldiv", "silu", "gelu_erf", "gelu_tanh", "mish")
HARD = frozenset({"hardswish", "hardsigmoid", "div", "mul", "muldiv"})
EVAL_IMAGES = 8
ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"


class Builder:
    """Nodes and initializers of one model; every activation written in one pattern's form."""

    def __init__(self, pattern: str, seed: int = 0) -> None:
        self.pattern = pattern
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def const(self, value: float) -> str:
        name = self.name("const")
        self.weights.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        name = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, c_in: int, c_out: int, k: int = 1, stride: int = 1, group: int = 1) -> str:
        """Conv with BatchNorm folded (He-initialised weight, small bias)."""
        name = self.name("conv")
        fan_in = c_in // group * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (c_out, c_in // group, k, k)).astype(np.float32)
        b = self.rng.normal(0.0, 0.1, c_out).astype(np.float32)
        self.weights += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w", f"{name}.b"],
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=group,
            )
        )
        return name

    def gemm(self, x: str, c_in: int, c_out: int) -> str:
        name = self.name("gemm")
        w = self.rng.normal(0.0, np.sqrt(2.0 / c_in), (c_out, c_in)).astype(np.float32)
        b = self.rng.normal(0.0, 0.1, c_out).astype(np.float32)
        self.weights += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        self.nodes.append(
            helper.make_node("Gemm", [x, f"{name}.w", f"{name}.b"], [name], name=name, transB=1)
        )
        return name

    def gate(self, x: str) -> str:
        """The squeeze-excite gate's activation: hard-sigmoid in the pattern's form, else Sigmoid."""
        if self.pattern not in HARD:
            return self.op("Sigmoid", [x])
        if self.pattern in ("hardswish", "hardsigmoid"):
            return self.op("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)
        clipped = self.op("Clip", [self.op("Add", [x, self.const(3.0)]), self.const(0.0), self.const(6.0)])
        if self.pattern == "mul":
            return self.op("Mul", [clipped, self.const(1.0 / 6)])
        return self.op("Div", [clipped, self.const(6.0)])

    def act(self, x: str, hard: bool) -> str:
        """The block's nonlinearity: Relu where MobileNetV3 has one (for the hard patterns), else the
        pattern's activation."""
        p = self.pattern
        if p in HARD and not hard:
            return self.op("Relu", [x])
        if p == "hardswish":
            return self.op("HardSwish", [x])
        if p in ("hardsigmoid", "div", "mul"):
            return self.op("Mul", [x, self.gate(x)])
        if p == "muldiv":
            clipped = self.op(
                "Clip", [self.op("Add", [x, self.const(3.0)]), self.const(0.0), self.const(6.0)]
            )
            return self.op("Div", [self.op("Mul", [x, clipped]), self.const(6.0)])
        if p == "silu":
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        if p == "gelu_erf":
            erf = self.op("Erf", [self.op("Div", [x, self.const(float(np.sqrt(2.0)))])])
            half = self.op("Mul", [x, self.op("Add", [erf, self.const(1.0)])])
            return self.op("Mul", [half, self.const(0.5)])
        if p == "gelu_tanh":
            cube = self.op("Mul", [self.op("Mul", [x, x]), x])
            inner = self.op("Add", [x, self.op("Mul", [cube, self.const(0.044715)])])
            tanh = self.op("Tanh", [self.op("Mul", [inner, self.const(float(np.sqrt(2.0 / np.pi)))])])
            half = self.op("Mul", [x, self.const(0.5)])
            return self.op("Mul", [half, self.op("Add", [tanh, self.const(1.0)])])
        if p == "mish":
            return self.op("Mul", [x, self.op("Tanh", [self.op("Softplus", [x])])])
        raise ValueError(f"unknown pattern {p}")

    def squeeze_excite(self, x: str, channels: int) -> str:
        squeezed = max(8, int(channels / 4 + 4) // 8 * 8)
        s = self.op("GlobalAveragePool", [x])
        s = self.op("Relu", [self.conv(s, channels, squeezed)])
        return self.op("Mul", [x, self.gate(self.conv(s, squeezed, channels))])

    def block(self, x: str, c_in: int, spec: tuple[int, int, int, bool, bool, int]) -> str:
        k, expanded, out, se, hard, stride = spec
        y = x if expanded == c_in else self.act(self.conv(x, c_in, expanded), hard)
        y = self.act(self.conv(y, expanded, expanded, k, stride, group=expanded), hard)
        if se:
            y = self.squeeze_excite(y, expanded)
        y = self.conv(y, expanded, out)
        return self.op("Add", [y, x]) if stride == 1 and c_in == out else y


def build(pattern: str, seed: int = 0, size: int = 224) -> onnx.ModelProto:
    """MobileNetV3-small layout in the pattern's activations; input `input` [1, 3, size, size]."""
    b = Builder(pattern, seed)
    x = b.act(b.conv("input", 3, 16, 3, 2), True)
    channels = 16
    for spec in BLOCKS:
        x = b.block(x, channels, spec)
        channels = spec[2]
    x = b.act(b.conv(x, channels, 576), True)
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    x = b.act(b.gemm(x, 576, 1024), True)
    logits = b.gemm(x, 1024, 1000)
    graph = helper.make_graph(
        b.nodes,
        f"mobilenetv3_small_{pattern}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 1000])],
        b.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    model.producer_name = "quantkit bench"
    onnx.checker.check_model(model)
    return model


def float_compute(path: Path) -> int:
    """Conv/Gemm/MatMul nodes onnxruntime still runs in float after its QDQ fusions."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(str(Path(tmp) / "opt.onnx")).graph.node)
    return ops["Conv"] + ops["Gemm"] + ops["MatMul"] + ops["FusedConv"] + ops["FusedGemm"]


def sqnr(reference: Session, candidate: Session, samples: np.ndarray) -> float:
    signal = noise = 0.0
    for sample in samples:
        r = next(iter(reference.run(sample[None]).values())).astype(np.float64)
        c = next(iter(candidate.run(sample[None]).values())).astype(np.float64)
        signal += float(np.sum(r * r))
        noise += float(np.sum((r - c) ** 2))
    return float(10 * np.log10(signal / max(noise, 1e-30)))


def measure(
    pattern: str, images: Path, work: Path, num_images: int, runs: int, threads: int, config: ConvertConfig
) -> dict[str, Any]:
    from bench.ort_peer import quantize_with_ort

    fp32, table = work / f"{pattern}.onnx", work / f"{pattern}.calib.json"
    ours, peer = work / f"{pattern}.quantkit.onnx", work / f"{pattern}.ort.onnx"
    onnx.save(build(pattern), str(fp32))
    options = PreprocessOptions()
    pipeline.calibrate(fp32, table, CalibrateConfig(ImageSelection(images, num_images), options))
    summary = pipeline.convert(fp32, table, ours, config)
    quantize_with_ort(fp32, images, peer, num_images, options, "minmax")
    pre = resolve_preprocess(options, image_input(onnx.load(str(fp32))))
    paths = find_images(images)[-EVAL_IMAGES:]  # the last images: mostly outside the calibration subset
    samples = np.concatenate([b.data for b in ImageLoader(paths, pre, 1)])
    ref = Session(fp32, threads=threads, spin=False)
    sessions = [Session(p, threads=threads, spin=False) for p in (fp32, ours, peer)]
    timed = interleaved_latency(sessions, samples[:1], 10, runs)
    times = [float(np.median(t)) for t in timed]
    # FP32 over INT8 per round, then the median: robust to load that drifts during the loop
    ratios = [float(np.median(timed[0] / t)) for t in timed[1:]]
    kept = Counter(s.op_type for s in summary.plan.skipped if s.op_type in ("Conv", "Gemm", "MatMul"))
    return {
        "pattern": pattern,
        "ms": times,
        "speedup": ratios,
        "sqnr": [sqnr(ref, Session(p), samples) for p in (ours, peer)],
        "float_compute": [float_compute(p) for p in (ours, peer)],
        "kept": dict(kept),
        "fallback": [s.node for s in summary.fallback],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--images", type=Path, default=ASSETS / "images" / "coco-calib")
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="folder to keep the models in")
    parser.add_argument("--smoothquant", default="auto", help="quantkit's --smoothquant (default auto)")
    parser.add_argument(
        "--min-sqnr", type=float, default=ConvertConfig().min_sqnr, help="quantkit's --min-sqnr"
    )
    args = parser.parse_args()
    config = ConvertConfig(smoothquant=args.smoothquant, min_sqnr=args.min_sqnr)
    print(
        f"{'pattern':<12} {'fp32 ms':>8} {'quantkit':>9} {'ort':>7} {'qk x':>6} {'ort x':>6} "
        f"{'qk dB':>6} {'ort dB':>6} {'float qk/ort':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for pattern in args.patterns.split(","):
            r = measure(pattern, args.images, work, args.num_images, args.runs, args.threads, config)
            f, q, o = r["ms"]
            print(
                f"{pattern:<12} {f:8.2f} {q:9.2f} {o:7.2f} {r['speedup'][0]:6.2f} {r['speedup'][1]:6.2f} "
                f"{r['sqnr'][0]:6.1f} {r['sqnr'][1]:6.1f} "
                f"{r['float_compute'][0]:>5}/{r['float_compute'][1]:<5}"
                + (f"  fallback kept {len(r['fallback'])} float" if r["fallback"] else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
