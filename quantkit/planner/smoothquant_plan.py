"""Where to rebalance (SmoothQuant-style), with which scales, and where 1/s goes.

A quantized activation X is a candidate when every consumer is a quantized Conv, Gemm or MatMul reading
it as the data input (one s per activation, shared by all its consumers). For an alpha,
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (qmath.smoothquant_math): the consumers' weights are
multiplied by s along their input channels and X is divided by s, where that is exact and free:
- the absorber, X's producer: a Conv/Gemm/MatMul with constant weights (its output channels and bias),
  a BatchNormalization (scale and B), a LayerNormalization over the channel axis (scale and B), a float
  Mul by a constant, or a float Div by one (hardswish written out ends in x * Clip(x + 3, 0, 6) / 6;
  where the Div folds into the Q/DQ scales instead, it is quantized and absorbs nothing);
- between the absorber and X: ReLU (positive scales commute with it), a folded Clip(0, c) (channel j's
  bound becomes c / s_j: the Q node saturates at or below the lowest of them, so it clips exactly as the
  Clip would, and the rewrite of the float graph writes the per-channel bounds out), and a float Add of a
  constant (the constant times 1/s).
The tensors between the absorber and X have no other consumer and no Q/DQ of their own. Where nothing
absorbs 1/s, a float Mul is inserted before the consumers (X then stays float).
Which activations and alphas: every candidate at a fixed --smoothquant ALPHA; under auto, the choices
measured by planner.smoothquant_search (passed in as `alphas`).
The rebalanced tensor's range follows from X's per-channel min/max, no second calibration pass: X / s
spans [min_j min_j(X)/s_j, max_j max_j(X)/s_j]. (Narrower ranges measured better on the table's 8
samples but clipped the other calibration images: 14.9 dB where the observed range gave 42.7.) Where
activation ranges are capped at the images' mean extremes (--range-cap on), that span is narrowed by the
share X's own cap keeps (planner.range_plan.capped_share), as every other activation is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quantkit.config import ConvertConfig
from quantkit.graph.augment import clip_top
from quantkit.graph.query import SHAPE_OPS, GraphIndex
from quantkit.planner.range_plan import activation_params, becomes_probability, capped_share, caps
from quantkit.qmath.smoothquant_math import rebalanced_range, smoothing_scales
from quantkit.results import CalibrationTable, QuantParams, Rebalance

REBALANCED_OPS = frozenset({"Conv", "Gemm", "MatMul"})
WEIGHTED_ABSORBERS = frozenset({"Conv", "Gemm", "MatMul"})
NORM_ABSORBERS = frozenset({"BatchNormalization", "LayerNormalization"})


@dataclass(frozen=True)
class _Absorber:
    node: str | None  # None: a float Mul is inserted
    through: tuple[str, ...]  # Relu / Clip / Add nodes between it and the tensor, producer first
    bound: float | None  # the folded Clip's upper bound c, where there is one


class Rebalancer:
    """Rebalance records for the activations of one plan (its quantized nodes, folds and params)."""

    def __init__(
        self,
        index: GraphIndex,
        table: CalibrationTable,
        config: ConvertConfig,
        quantized: dict[str, str],
        folds: dict[str, str],
        activations: dict[str, QuantParams],
        shared: set[str],
    ) -> None:
        """shared: tensors whose params are tied to another tensor's (they are left alone)."""
        self.index, self.table, self.config = index, table, config
        self.quantized, self.folds, self.activations = quantized, folds, activations
        self.shared = shared

    def eligible(self) -> list[str]:
        """Activations that may be rebalanced, sorted."""
        return [t for t in sorted(self.activations) if self._consumers(t)]

    def chosen(self, alphas: Mapping[str, float] | None) -> list[Rebalance]:
        """Every candidate at a fixed alpha; under auto, those of `alphas`; none when off."""
        if self.config.smoothquant == "off":
            return []
        if self.config.smoothquant != "auto":
            fixed = float(self.config.smoothquant)
            found = [self.candidate(t, fixed) for t in self.eligible()]
        else:
            found = [self.candidate(t, alpha) for t, alpha in sorted((alphas or {}).items())]
        return [r for r in found if r is not None]

    def candidate(self, tensor: str, alpha: float) -> Rebalance | None:
        """The rebalance of `tensor` at `alpha`, or None where it cannot be rebalanced (any more)."""
        stats = self.table.stats.get(tensor)
        consumers = self._consumers(tensor)
        if not consumers or stats is None or stats.channel_absmax is None:
            return None
        assert stats.channel_min is not None and stats.channel_max is not None
        channels = stats.channel_min.size
        rank = self.index.ranks.get(tensor, 4 if consumers[0].op_type == "Conv" else 2)
        axis = 1 if consumers[0].op_type == "Conv" else rank - 1
        w_absmax = [_input_absmax(self.index, node, channels) for node in consumers]
        if any(w is None for w in w_absmax) or any(_axis(n, rank) != axis for n in consumers):
            return None
        weights = np.max([w for w in w_absmax if w is not None], axis=0)
        scales = smoothing_scales(stats.channel_absmax, weights, alpha)
        absorber = self._absorber(tensor, channels, axis, rank)
        if absorber is None:
            return None
        lo, hi = rebalanced_range(stats.channel_min, stats.channel_max, scales)
        cut = absorber.bound is not None and hi > absorber.bound / float(np.max(scales)) * (1 + 1e-6)
        if cut and self.config.smoothquant != "auto":
            # a fixed alpha is measured nowhere: through a ReLU6 the Q's one saturation, at the lowest bound
            # c / max(s), would cut channels the samples take above it (hq156 F1: 38.65 -> 16.58 dB held
            # out, exit 0); a float Mul by 1/s after it is exact. Folded where it cuts none (hq163 F4:
            # MobileNetV2's 34 Muls cost 0.24 dB held out), and by auto, which measures the fold
            absorber = _Absorber(None, (), None)
        if caps(self.config) and not becomes_probability(self.index, tensor):
            lo, hi = capped_share(lo, hi, stats)
        if absorber.bound is not None:
            hi = min(hi, absorber.bound / float(np.max(scales)))  # Q saturates within every channel's c/s_j
        return Rebalance(
            tensor=tensor,
            scales=scales.astype(np.float32),
            alpha=alpha,
            consumers=tuple(n.name for n in consumers),
            producer=absorber.node,
            channel_axis=axis,
            rank=rank,
            params=activation_params(lo, hi, self.config.activations),
            through=absorber.through,
        )

    def _consumers(self, tensor: str) -> list[onnx.NodeProto]:
        """The consumers of `tensor` if all are quantized linear layers reading it as data, none of their
        weights read by another layer; else []."""
        uses = self.index.consumers.get(tensor, [])
        if not uses or tensor in self.index.graph_outputs or tensor in self.shared:
            return []
        nodes = [n for n, position in uses if position == 0 and self.quantized.get(n.name) in REBALANCED_OPS]
        # a Gemm with transA reads X's channels along axis 0, which no rebalance here scales (hq131 F2)
        nodes = [n for n in nodes if not (n.op_type == "Gemm" and self.index.attribute(n, "transA", 0))]
        if len(nodes) != len(uses) or self._tied([n.input[1] for n in nodes], {n.name for n in nodes}):
            return []
        return nodes

    def _tied(self, names: list[str], readers: set[str]) -> bool:
        """Whether a constant of `names` is read by a node outside `readers`: a weight tied to another
        layer (a siamese network's twin branches) would be stored twice once scaled (hq61: CapSpot's
        matcher written 28.1 MB where 15.1 MB held it, and measured 2 dB worse held out)."""
        consumers = self.index.consumers
        return any(
            reader.name not in readers and reader.op_type not in SHAPE_OPS  # a Shape reads no value
            for name in names
            if name and self.index.is_constant(name)
            for reader, _ in consumers.get(name, [])
        )

    def _absorber(self, tensor: str, channels: int, axis: int, rank: int) -> _Absorber | None:
        """Walk back from `tensor` through ReLU, folded Clip and float Add-constant to an absorber; None
        where the absorber's constants are tied to another node (no rebalance: see _tied)."""
        index, name = self.index, tensor
        through: list[str] = []
        bound: float | None = None
        none = _Absorber(None, (), None)
        while True:
            node = index.producer.get(name)
            if node is None or (name != tensor and not self._private(name)):
                return none
            if self._absorbs(node, channels, axis, rank):
                # its weight, copied once scaled; a bias or a norm's [C] params copy in bytes
                if node.op_type in WEIGHTED_ABSORBERS and self._tied(list(node.input[1:2]), {node.name}):
                    return None
                return _Absorber(node.name, tuple(reversed(through)), bound)
            if node.op_type == "Clip" and node.name in self.folds:
                high = clip_top(index, node)
                if math.isfinite(high):
                    bound = min(high, bound if bound is not None else np.inf)
            elif not (
                node.op_type == "Relu" or (node.op_type == "Add" and self._float_with_constant(node, rank))
            ):
                return none
            through.append(node.name)
            name = _data_input(index, node)

    def _private(self, name: str) -> bool:
        """An intermediate tensor of the absorbing chain: one consumer, no Q/DQ, not a model output."""
        index = self.index
        return (
            len(index.consumers.get(name, [])) == 1
            and name not in self.activations
            and name not in index.graph_outputs
        )

    def _absorbs(self, node: onnx.NodeProto, channels: int, axis: int, rank: int) -> bool:
        index = self.index
        if node.op_type in WEIGHTED_ABSORBERS:
            return _weighted_absorbs(index, node, channels, axis, rank)
        if node.op_type == "BatchNormalization":
            params = [index.constant(n) for n in node.input[1:3]]
            return axis == 1 and all(p is not None and p.shape == (channels,) for p in params)
        if node.op_type == "LayerNormalization":
            norm_axis = int(index.attribute(node, "axis", -1))  # type: ignore[call-overload]
            params = [index.constant(n) for n in node.input[1:3] if n]
            last = norm_axis in (-1, rank - 1) and axis == rank - 1
            return last and all(p is not None and p.shape == (channels,) for p in params)
        if node.op_type == "Mul":
            return self._float_with_constant(node, rank)
        if node.op_type == "Div":  # x / c: the divisor c becomes c * s (a hardswish's / 6)
            return self._float_with_constant(node, rank) and self.index.is_constant(node.input[1])
        return False

    def _float_with_constant(self, node: onnx.NodeProto, rank: int) -> bool:
        """A float (not quantized) binary op with exactly one constant operand of rank <= `rank`."""
        if node.name in self.quantized or len(node.input) != 2:
            return False
        constants = [self.index.constant(n) for n in node.input]
        given = [c for c in constants if c is not None]
        return len(given) == 1 and given[0].ndim <= rank and given[0].dtype == np.float32


def _data_input(index: GraphIndex, node: onnx.NodeProto) -> str:
    """The non-constant input of a chain node (Relu, Clip: input 0; Add: the live operand)."""
    if node.op_type == "Add":
        return next(n for n in node.input if not index.is_constant(n))
    return node.input[0]


def _weighted_absorbs(index: GraphIndex, node: onnx.NodeProto, channels: int, axis: int, rank: int) -> bool:
    """A Conv/Gemm/MatMul with a constant weight whose output channels are X's channels on `axis`."""
    weight = index.constant(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.ndim < 2:
        return False
    if node.op_type == "Conv":
        return axis == 1 and weight.shape[0] == channels
    if weight.ndim != 2 or axis != rank - 1:
        return False
    out_axis = 0 if node.op_type == "Gemm" and index.attribute(node, "transB", 0) else 1
    if weight.shape[out_axis] != channels:
        return False
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        bias = index.constant(node.input[2])
        return bias is not None and bias.ndim == 1
    return True


def _axis(node: onnx.NodeProto, rank: int) -> int:
    return 1 if node.op_type == "Conv" else rank - 1


def _input_absmax(index: GraphIndex, node: onnx.NodeProto, channels: int) -> np.ndarray | None:
    """max |W| per input channel of X [C] over every output and tap; None if the layout does not fit."""
    weight = index.constant(node.input[1])
    if weight is None:
        return None
    w = np.abs(weight.astype(np.float64))
    if node.op_type == "Conv":
        group = int(index.attribute(node, "group", 1))  # type: ignore[call-overload]
        c_out, c_per_group = w.shape[0], w.shape[1]
        if c_per_group * group != channels:
            return None
        blocks = w.reshape(group, c_out // group, c_per_group, -1)
        return blocks.max(axis=(1, 3)).reshape(channels)
    matrix = w if node.op_type == "MatMul" or not index.attribute(node, "transB", 0) else w.T  # [C, O]
    if matrix.ndim != 2 or matrix.shape[0] != channels:
        return None
    return matrix.max(axis=1)
