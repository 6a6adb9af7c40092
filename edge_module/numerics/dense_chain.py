"""Consecutive BFP dense layers (each reading the previous one's float32 result) in one function: the
arithmetic of ``dot.bfp_dense_run``'s integer path layer after layer on the transposed columns, without
the per-layer dispatch, checks and conversions (small batches, where numpy's per-call costs dominate).

The bits equal the per-layer path's: every layer takes the same block maxima (``|x|`` bits), the same
checks (``dot._dense_integers``' fast one, then ``dot.admit_zero_blocks``), the same scaling, ``rint``,
clip and exact block products, and ``dot._dense_sum``'s block-order sum and bias. Only the constants
differ in kind (0-d arrays of the same values: numpy then takes its fast loops). A folded ReLU is
``np.maximum`` of the result's bits as int32 with zeros: negative floats (and -0.0) are negative int32,
so they become +0.0, and nonnegative floats keep their bits, as ``np.maximum(y, 0)`` gives them (+0.0 for
-0.0; the result is never NaN: finite products and bias, see ``applies``); its bits are then the next
layer's ``|x|`` bits as they are. From ``RELU_CLIP_ELEMENTS`` on, the per-layer path clips (keeping -0.0),
and so does the chain. When some layer declines (``None``), the caller runs the layers one by one.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from . import dot

RELU_CLIP_ELEMENTS = 1 << 14  # emulate._relu_in_place clips from this size, else np.maximum(y, 0)
_MAGNITUDE = np.array(dot._MAGNITUDE_BITS, np.uint32)
_EXPONENT = np.array(dot._EXPONENT_BITS, np.uint32)
_ZERO_BITS = np.array(0, np.int32)


class _Layer(NamedTuple):
    plan: dot.DensePlan
    weights: np.ndarray  # plan.integer_weights (n_blocks, M, k)
    low: np.ndarray  # 0-d uint32 plan.low_bits
    span: int  # plan.high_bits - plan.low_bits
    up: np.ndarray  # 0-d uint32 plan.up_bits
    top: np.ndarray  # 0-d float32 plan.top
    bottom: np.ndarray  # 0-d float32 -plan.top
    relu: bool


def applies(plan: dot.DensePlan | None) -> bool:
    """Whether a layer with this plan can be a link: integer weights and a finite bias (so no result is
    NaN and the int32 ReLU equals the float one)."""
    if plan is None or plan.integer_weights is None:
        return False
    return plan.bias is None or bool(np.isfinite(plan.bias).all())


class DenseChain:
    """Layers with ``DensePlan``s (``applies``) whose inputs are the previous layer's outputs (``M`` of one
    is ``n_blocks * k`` of the next), each with its folded ReLU flag. Read-only after construction but for
    ``tiles`` (read-only arrays per batch size; safe to share between threads)."""

    def __init__(self, plans: list[dot.DensePlan], relus: list[bool]) -> None:
        self.layers = [
            _Layer(
                plan,
                plan.integer_weights,
                np.array(plan.low_bits, np.uint32),
                plan.high_bits - plan.low_bits,
                np.array(plan.up_bits, np.uint32),
                np.array(plan.top, np.float32),
                np.array(-plan.top, np.float32),
                relu,
            )
            for plan, relu in zip(plans, relus, strict=True)
        ]
        for before, after in itertools.pairwise(self.layers):
            if before.weights.shape[1] != after.weights.shape[0] * after.weights.shape[2]:
                raise ValueError("a dense chain's layer does not read its predecessor's whole result")
        self.tiles: dict = {}  # zeros for the ReLU per shape (dot.tiled)

    def run(self, xt: np.ndarray) -> np.ndarray | None:
        """The last layer's result ``(M, R)`` for float32 C-contiguous columns ``xt (n_blocks * k, R)``,
        or None when some layer's blocks leave its plan's bounds (or are all zero, inf or NaN)."""
        first = self.layers[0].weights
        if xt.dtype != np.float32 or xt.ndim != 2 or not xt.flags.c_contiguous or xt.shape[1] == 0:
            return None
        if xt.shape[0] != first.shape[0] * first.shape[2]:
            return None
        x, magnitude = xt, np.bitwise_and(xt.view(np.uint32), _MAGNITUDE)
        for layer in self.layers:
            x = self._layer(layer, x, magnitude)
            if x is None:
                return None
            if layer.relu and x.size < RELU_CLIP_ELEMENTS:
                bits = x.view(np.int32)
                np.maximum(bits, dot.tiled(self.tiles, "zeros", _ZERO_BITS, x.shape), out=bits)
                magnitude = x.view(np.uint32)  # nonnegative: the bits are |x|'s
            else:
                if layer.relu:
                    np.clip(x, np.float32(0), np.float32(np.inf), out=x)
                magnitude = np.bitwise_and(x.view(np.uint32), _MAGNITUDE)
        return x

    @staticmethod
    def _layer(layer: _Layer, x: np.ndarray, magnitude: np.ndarray) -> np.ndarray | None:
        """One layer as ``dot._dense_integers`` and ``dot._dense_sum`` compute it (see there)."""
        n_blocks, _, k = layer.weights.shape
        shape = (n_blocks, k, x.shape[1])
        bits = np.maximum.reduce(magnitude.reshape(shape), axis=1, keepdims=True)
        if int(np.maximum.reduce(np.subtract(bits, layer.low), axis=None)) >= layer.span:
            bits = dot.admit_zero_blocks(bits, layer.plan)
            if bits is None:
                return None
        exps = np.bitwise_and(bits, _EXPONENT)
        scaled = np.multiply(x.reshape(shape), np.subtract(layer.up, exps).view(np.float32))
        np.rint(scaled, out=scaled)
        dot._CLIP(scaled, layer.bottom, layer.top, out=scaled)
        scaled *= exps.view(np.float32)
        return dot._dense_sum(np.matmul(layer.weights, scaled), layer.plan)
