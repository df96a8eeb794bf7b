"""A ResNet-50-shaped model with seeded random weights: the dense-convolution speed case of the bench.

Same layers and shapes as torchvision's resnet50 with BatchNorm folded (stem 7x7/2, MaxPool, bottleneck
stages of 3, 4, 6, 3 blocks, GlobalAveragePool, Gemm 2048 -> 1000), opset 13, input [1, 3, 224, 224].
He-initialised weights with the last convolution of each block scaled down keep activations in a sane
range through 16 residual additions. Its outputs mean nothing: the bench reports its speed, size and
calibration cost, never its accuracy.

    python -m bench.resnet OUT.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, first stride)
EXPANSION = 4
RESIDUAL_GAIN = 0.2


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int, gain: float = 1.0) -> str:
        """Conv (BatchNorm folded into weight and bias); returns the output tensor's name."""
        name = self._name("conv")
        fan_in = c_in * k * k
        w = self.rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), (c_out, c_in, k, k)).astype(np.float32)
        b = self.rng.normal(0.0, 0.05, c_out).astype(np.float32)
        self.weights += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w", f"{name}.b"],
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        name = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def bottleneck(self, x: str, c_in: int, width: int, stride: int) -> str:
        out = width * EXPANSION
        y = self.op("Relu", [self.conv(x, c_in, width, 1, 1)])
        y = self.op("Relu", [self.conv(y, width, width, 3, stride)])
        y = self.conv(y, width, out, 1, 1, gain=RESIDUAL_GAIN)
        shortcut = x if stride == 1 and c_in == out else self.conv(x, c_in, out, 1, stride)
        return self.op("Relu", [self.op("Add", [y, shortcut])])


def build(seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 layout with seeded random weights; input `input` [1, 3, 224, 224], output `logits`."""
    b = _Builder(seed)
    x = b.op("Relu", [b.conv("input", 3, 64, 7, 2)])
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for width, blocks, stride in STAGES:
        for i in range(blocks):
            x = b.bottleneck(x, channels, width, stride if i == 0 else 1)
            channels = width * EXPANSION
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])])
    fc_w = b.rng.normal(0.0, np.sqrt(1.0 / channels), (channels, 1000)).astype(np.float32)
    b.weights += [
        numpy_helper.from_array(fc_w, "fc.w"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b"),
    ]
    b.nodes.append(helper.make_node("Gemm", [x, "fc.w", "fc.b"], ["logits"], name="fc"))
    graph = helper.make_graph(
        b.nodes,
        "resnet50_random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        b.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.producer_name = "quantkit bench"
    onnx.checker.check_model(model)
    return model


def main() -> None:
    onnx.save(build(), sys.argv[1] if len(sys.argv) > 1 else str(Path("resnet50_random.onnx")))


if __name__ == "__main__":
    main()
