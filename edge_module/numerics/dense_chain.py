"""Consecutive BFP dense layers (each reading the previous one's float32 result) in one function: the
arithmetic of ``dot.bfp_dense_run``'s integer path layer after layer, without the per-layer dispatch,
checks, conversions and transposed copies (small batches, where numpy's per-call costs dominate). The
values between layers are interleaved (``DenseChain``), the last layer's block products come as rows.

The bits equal the per-layer path's: every layer takes the same block maxima (``|x|`` bits), the same
checks (``dot.admitted_bits``), the same scaling, ``rint``,
clip and exact block products, and ``dot._dense_sum``'s block-order sum and bias. Only the constants
differ in kind (0-d arrays of the same values: numpy then takes its fast loops). A folded ReLU is
``np.maximum`` of the result's bits as int32 with zeros: negative floats (and -0.0) are negative int32,
so they become +0.0, and nonnegative floats keep their bits, as ``np.maximum(y, 0)`` gives them (+0.0 for
-0.0; the result is never NaN: finite products and bias, see ``applies``); its bits are then the next
layer's ``|x|`` bits as they are. From ``dot.RELU_CLIP_ELEMENTS`` on, the per-layer path clips (keeping -0.0),
and so does the chain. When some layer declines (``None``), the caller runs the layers one by one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import dot

_ZERO_BITS = np.array(0, np.int32)


class _Layer(NamedTuple):
    plan: dot.DensePlan
    weights: np.ndarray  # plan.integer_weights (n_blocks, M, k), rows in the next layer's order; last: (n_blocks, k, M)
    bias: np.ndarray | None  # plan.bias, rows as the weights' (a column (M, 1)); last: a row (M,)
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


def interleaving(n_blocks: int, k: int) -> np.ndarray:
    """The row order ``j * n_blocks + b`` of the values ``b * k + j`` (value ``j`` of block ``b``): a
    result in this order, reshaped to ``(k, n_blocks, R)``, has the blocks along its first axis."""
    return np.arange(n_blocks * k).reshape(n_blocks, k).T.reshape(-1)


def _links(plans: list[dot.DensePlan], relus: list[bool]) -> list[_Layer]:
    """The layers with each one's rows (weights, bias) interleaved for the next layer's blocks, and the
    last one's weights transposed (its result comes as rows ``(R, M)``)."""
    layers = []
    for i, (plan, relu) in enumerate(zip(plans, relus, strict=True)):
        weights, bias = plan.integer_weights, plan.bias
        if i + 1 < len(plans):
            n_blocks, _, k = plans[i + 1].integer_weights.shape
            if weights.shape[1] != n_blocks * k:
                raise ValueError("a dense chain's layer does not read its predecessor's whole result")
            order = interleaving(n_blocks, k)
            weights = np.ascontiguousarray(weights[:, order, :])
            bias = None if bias is None else np.ascontiguousarray(bias.reshape(-1, 1)[order])
        else:
            weights = np.ascontiguousarray(weights.transpose(0, 2, 1))
            bias = None if bias is None else np.ascontiguousarray(bias.reshape(-1))
        up, top = np.array(plan.up_bits, np.uint32), np.array(plan.top, np.float32)
        bottom = np.array(-plan.top, np.float32)
        layers.append(_Layer(plan, weights, bias, up, top, bottom, relu))
    return layers


class DenseChain:
    """Layers with ``DensePlan``s (``applies``) whose inputs are the previous layer's outputs (``M`` of one
    is ``n_blocks * k`` of the next), each with its folded ReLU flag. Read-only after construction but for
    ``tiles`` (read-only arrays per batch size; safe to share between threads).

    Between layers the values are interleaved ``(k, n_blocks, R)`` (``interleaving``: each layer's rows
    are permuted once here): block maxima reduce over the first axis and the scales broadcast over it,
    numpy's fast loops, where ``(n_blocks, k, R)`` blocks broadcast over the middle axis."""

    def __init__(self, plans: list[dot.DensePlan], relus: list[bool]) -> None:
        self.layers = _links(plans, relus)
        self.n_blocks, _, self.k = plans[0].integer_weights.shape
        self.tiles: dict = {}  # per batch size (_tiles)

    def run(self, x: np.ndarray) -> np.ndarray | None:
        """The last layer's result ``(R, M)`` (C-contiguous) for float32 rows ``x (R, n_blocks * k)``, or
        None when some layer's blocks leave its plan's bounds (or are all zero, inf or NaN)."""
        n_blocks, k = self.n_blocks, self.k
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != n_blocks * k:
            return None
        rows = x.shape[0]
        if x.flags.f_contiguous:  # the columns as they are: blocks (n_blocks, k, R)
            values, axis = x.T.reshape(n_blocks, k, rows), 1
        else:  # one copy, interleaved
            values, axis = np.empty((k, n_blocks, rows), np.float32), 0
            np.copyto(values, x.reshape(rows, n_blocks, k).transpose(2, 1, 0))
        magnitude = np.bitwise_and(values.view(np.uint32), dot.MAGNITUDE)
        last = len(self.layers) - 1
        for i, (layer, (bias, zeros)) in enumerate(zip(self.layers, self._tiles(rows), strict=True)):
            y = self._layer(layer, values, magnitude, axis, i == last)
            if y is None:
                return None
            if bias is not None:  # the bias last (dot._dense_sum)
                y += bias
            if zeros is not None:
                bits = y.view(np.int32)
                np.maximum(bits, zeros, out=bits)
                magnitude = y.view(np.uint32)  # nonnegative: the bits are |y|'s
            else:
                if layer.relu:
                    np.clip(y, np.float32(0), np.float32(np.inf), out=y)
                magnitude = None if i == last else np.bitwise_and(y.view(np.uint32), dot.MAGNITUDE)
            if i == last:
                return y
            n_blocks, _, k = self.layers[i + 1].plan.integer_weights.shape
            values, magnitude, axis = y.reshape(k, n_blocks, rows), magnitude.reshape(k, n_blocks, rows), 0
        return None

    def _tiles(self, rows: int) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """Per layer for ``rows`` rows: what to add as the bias (tiled up to ``dot.TILE_MAX_ELEMENTS``
        results, else broadcast; None without a bias) and int32 zeros for the ReLU below
        ``dot.RELU_CLIP_ELEMENTS`` results (None: no ReLU, or a clip), kept for a few batch sizes."""
        tiles = self.tiles.get(rows)
        if tiles is None:
            tiles = []
            for i, layer in enumerate(self.layers):
                m = layer.weights.shape[2] if i == len(self.layers) - 1 else layer.weights.shape[1]
                shape = (rows, m) if i == len(self.layers) - 1 else (m, rows)
                bias = None if layer.bias is None else dot.small_tiled({}, None, layer.bias, shape)
                zeros = (
                    dot.tiled({}, None, _ZERO_BITS, shape) if layer.relu and rows * m < dot.RELU_CLIP_ELEMENTS else None
                )
                tiles.append((bias, zeros))
            if len(self.tiles) < 16:
                self.tiles[rows] = tiles
        return tiles

    @staticmethod
    def _layer(layer: _Layer, x: np.ndarray, magnitude: np.ndarray, axis: int, last: bool) -> np.ndarray | None:
        """One layer's block products summed in block order, as ``dot._dense_integers`` and
        ``dot._dense_sum`` compute them (see there), for blocks along ``axis`` of ``x`` (0: interleaved
        ``(k, n_blocks, R)``, 1: ``(n_blocks, k, R)``): ``(M, R)``, or ``(R, M)`` for the ``last`` layer
        (the block products are exact: any order of the same products gives the same sums)."""
        bits = np.maximum.reduce(magnitude, axis=axis, keepdims=True)
        bits = dot.admitted_bits(bits, layer.plan)
        if bits is None:
            return None
        exps = np.bitwise_and(bits, dot.EXPONENT)
        scaled = np.multiply(x, np.subtract(layer.up, exps).view(np.float32))
        np.rint(scaled, out=scaled)
        dot._CLIP(scaled, layer.bottom, layer.top, out=scaled)
        scaled *= exps.view(np.float32)
        blocks = scaled.transpose(1, 0, 2) if axis == 0 else scaled  # (n_blocks, k, R)
        partial = np.matmul(blocks.transpose(0, 2, 1), layer.weights) if last else np.matmul(layer.weights, blocks)
        return dot.block_sum(partial)
