"""quantkit: post-training quantization for ONNX vision models."""

from __future__ import annotations

__version__ = "0.1.0"
