"""A ViT-style test model (onnx.helper, seeded) with planted outlier channels in its LayerNorm outputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.conftest import make_model

N = helper.make_node
WIDTH, TOKENS, HIDDEN, CLASSES = 32, 16, 64, 10
HOT = [3, 17, 29]  # the outlier channels


def tiny_vit(seed: int = 3, outlier: float = 40.0, blocks: int = 2) -> onnx.ModelProto:
    """Patch embedding (4x4 Conv on 16x16 images: 16 tokens of width 32), `blocks` pre-norm blocks of
    single-head attention and an Erf-GELU MLP, a final LayerNorm, mean pooling and a Gemm head.

    Every LayerNormalization's gamma is `outlier` times larger on HOT channels, as in trained
    transformers; the linear layers that read them have those rows smaller by as much, as training
    leaves them, so that the FP32 function stays well conditioned. Opset 17."""
    g = np.random.default_rng(seed)

    def linear(fan_in: int, fan_out: int, tamed: bool = True) -> np.ndarray:
        w = g.normal(0, 1 / np.sqrt(fan_in), (fan_in, fan_out)).astype(np.float32)
        if tamed:
            w[HOT] /= outlier
        return w

    def norm(prefix: str) -> dict[str, np.ndarray]:
        gamma = g.uniform(0.5, 1.5, WIDTH).astype(np.float32)
        gamma[HOT] *= outlier * np.array([1.0, -0.8, 0.6], np.float32)
        return {f"{prefix}_gamma": gamma, f"{prefix}_beta": g.normal(0, 0.1, WIDTH).astype(np.float32)}

    inits: dict[str, np.ndarray] = {
        "patch_w": g.normal(0, 0.2, (WIDTH, 3, 4, 4)).astype(np.float32),
        "patch_b": np.zeros(WIDTH, np.float32),
        "tokens_shape": np.array([0, WIDTH, TOKENS], np.int64),
        "scale": np.array(1 / np.sqrt(WIDTH), np.float32),
        "half": np.array(0.5, np.float32),
        "one": np.array(1.0, np.float32),
        "rsqrt2": np.array(1 / np.sqrt(2), np.float32),
    }
    nodes = [
        N("Conv", ["x", "patch_w", "patch_b"], ["p"], name="patch", strides=[4, 4]),
        N("Reshape", ["p", "tokens_shape"], ["pt"], name="flatten"),
        N("Transpose", ["pt"], ["t0"], name="tokens", perm=[0, 2, 1]),
    ]
    x = "t0"
    for b in range(blocks):
        inits.update({**norm(f"ln1_{b}"), **norm(f"ln2_{b}")})
        inits.update({f"wq{b}": linear(WIDTH, WIDTH), f"wk{b}": linear(WIDTH, WIDTH)})
        inits.update({f"wv{b}": linear(WIDTH, WIDTH), f"wo{b}": linear(WIDTH, WIDTH, tamed=False)})
        inits.update({f"w1{b}": linear(WIDTH, HIDDEN), f"w2{b}": linear(HIDDEN, WIDTH, tamed=False)})
        inits[f"b1{b}"] = np.zeros(HIDDEN, np.float32)
        nodes += [
            N("LayerNormalization", [x, f"ln1_{b}_gamma", f"ln1_{b}_beta"], [f"h{b}"], name=f"ln1_{b}"),
            N("MatMul", [f"h{b}", f"wq{b}"], [f"q{b}"], name=f"q_{b}"),
            N("MatMul", [f"h{b}", f"wk{b}"], [f"k{b}"], name=f"k_{b}"),
            N("MatMul", [f"h{b}", f"wv{b}"], [f"v{b}"], name=f"v_{b}"),
            N("Transpose", [f"k{b}"], [f"kt{b}"], name=f"kt_{b}", perm=[0, 2, 1]),
            N("MatMul", [f"q{b}", f"kt{b}"], [f"s{b}"], name=f"scores_{b}"),
            N("Mul", [f"s{b}", "scale"], [f"ss{b}"], name=f"scale_{b}"),
            N("Softmax", [f"ss{b}"], [f"a{b}"], name=f"softmax_{b}", axis=-1),
            N("MatMul", [f"a{b}", f"v{b}"], [f"av{b}"], name=f"attend_{b}"),
            N("MatMul", [f"av{b}", f"wo{b}"], [f"o{b}"], name=f"proj_{b}"),
            N("Add", [x, f"o{b}"], [f"r{b}"], name=f"res1_{b}"),
            N("LayerNormalization", [f"r{b}", f"ln2_{b}_gamma", f"ln2_{b}_beta"], [f"m{b}"], name=f"ln2_{b}"),
            N("MatMul", [f"m{b}", f"w1{b}"], [f"f{b}"], name=f"fc1_{b}"),
            N("Add", [f"f{b}", f"b1{b}"], [f"fb{b}"], name=f"fc1_bias_{b}"),
            N("Mul", [f"fb{b}", "rsqrt2"], [f"fs{b}"], name=f"gelu_scale_{b}"),
            N("Erf", [f"fs{b}"], [f"fe{b}"], name=f"gelu_erf_{b}"),
            N("Add", [f"fe{b}", "one"], [f"fe1{b}"], name=f"gelu_add_{b}"),
            N("Mul", [f"fb{b}", f"fe1{b}"], [f"fg{b}"], name=f"gelu_mul_{b}"),
            N("Mul", [f"fg{b}", "half"], [f"gl{b}"], name=f"gelu_half_{b}"),
            N("MatMul", [f"gl{b}", f"w2{b}"], [f"f2{b}"], name=f"fc2_{b}"),
            N("Add", [f"r{b}", f"f2{b}"], [f"x{b + 1}"], name=f"res2_{b}"),
        ]
        x = f"x{b + 1}"
    inits.update(
        {**norm("ln_final"), "head_w": linear(WIDTH, CLASSES), "head_b": np.zeros(CLASSES, np.float32)}
    )
    nodes += [
        N("LayerNormalization", [x, "ln_final_gamma", "ln_final_beta"], ["z"], name="ln_final"),
        N("ReduceMean", ["z"], ["pooled"], name="pool", axes=[1], keepdims=0),
        N("Gemm", ["pooled", "head_w", "head_b"], ["y"], name="head"),
    ]
    return make_model(nodes, inits, opset=17)
