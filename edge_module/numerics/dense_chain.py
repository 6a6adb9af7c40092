"""Consecutive BFP dense layers (each reading the previous one's float32 result) in one function: the
arithmetic of ``dot.bfp_dense_run``'s integer path layer after layer, without the per-layer dispatch,
checks, conversions and transposed copies (small batches, where numpy's per-call costs dominate). The
values between layers are interleaved (``DenseChain``), the last layer's block products come as rows.

The bits equal the per-layer path's: every layer takes the same block maxima (``|x|`` bits), the same
checks (``dot.admitted_bits``), the same scaling, ``rint``, clip and exact block products, and
``dot.column_block_sum``'s block-order sum, the bias last (``dot._with_bias``). Only the constants
differ in kind (0-d arrays of the same values: numpy then takes its fast loops). A folded ReLU is
``np.maximum`` of the result's bits as int32 with zeros: negative floats (and -0.0) are negative int32,
so they become +0.0, and nonnegative floats keep their bits, as ``np.maximum(y, 0)`` gives them (+0.0 for
-0.0; the result is never NaN: finite products and bias, see ``applies``); its bits are then the next
layer's ``|x|`` bits as they are. From ``dot.RELU_CLIP_ELEMENTS`` on, the per-layer path clips (keeping -0.0),
and so does the chain. When some layer declines (``None``), the caller runs the layers one by one.

At batch sizes like 64 every numpy call costs about a microsecond whatever its size, so each thread keeps
its buffers per batch size (``_Work``): every call writes into them (``out=``), their float32 views exist
already, and each layer's bias sits as one more term after its block products, so one ``np.add.reduce``
gives ``dot.column_block_sum``'s block-order sum and the bias last (measured on the digits MLP at batch 64, one
thread, best of 25 rounds: 43 -> 37 us per chain). Only the result is a new array.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from . import dot


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


WORK_CACHE_BYTES = 1 << 22  # a thread keeps buffers up to this size per batch size (else made per call)
WORK_CACHE_ENTRIES = 4  # batch sizes kept per thread


class _Step(NamedTuple):
    """One layer's buffers for one batch size ``R``: its values' blocks run along ``axis`` 0 of interleaved
    ``(k, n_blocks, R)`` values, or along axis 1 of ``(n_blocks, k, R)`` (the first layer's columns)."""

    layer: _Layer
    axis: int  # the block values' axis (0: interleaved, 1: columns)
    bits: np.ndarray  # block maxima (|x| bits), (1, n_blocks, R) or (n_blocks, 1, R)
    less: np.ndarray  # bits less plan.low (the bounds check)
    exps: np.ndarray  # the maxima's exponent bits ...
    powers: np.ndarray  # ... as float32: 2**E
    scale_bits: np.ndarray  # the bits of 2**(m-1-E) ...
    scales: np.ndarray  # ... as float32
    codes: np.ndarray  # the values scaled, rounded, clipped and scaled back, in the values' layout
    blocks: np.ndarray  # codes as (n_blocks, k, R), the last layer's as (n_blocks, R, k)
    terms: np.ndarray  # the block products (n_blocks, M, R) (last: (n_blocks, R, M)), then the bias
    products: np.ndarray  # terms[:n_blocks]
    sums: np.ndarray | None  # the layer's result (M, R) (None for the last: a new array each call)
    zeros: np.ndarray | None  # int32 zeros for the folded ReLU below dot.RELU_CLIP_ELEMENTS results
    sums_bits: np.ndarray | None  # sums as int32 (the ReLU), or the last layer's none
    magnitude: np.ndarray | None  # |sums| bits: a view of sums after the int32 ReLU, else a buffer
    next_values: np.ndarray | None  # sums and ...
    next_magnitude: np.ndarray | None  # ... magnitude in the next layer's (k, n_blocks, R)


class _Work(NamedTuple):
    values: np.ndarray | None  # the first layer's interleaved copy of rows (None: columns as they are) ...
    magnitude: np.ndarray | None  # ... and its |x| bits
    steps: list[_Step]
    nbytes: int


def _work(layers: list[_Layer], rows: int, columns: bool) -> _Work:
    """The buffers of every layer for ``rows`` rows (``columns``: the input comes as F-contiguous
    columns, read as they are)."""
    steps, last = [], len(layers) - 1
    for i, layer in enumerate(layers):
        n_blocks = layer.weights.shape[0]
        k, m = (layer.weights.shape[1], layer.weights.shape[2]) if i == last else layer.weights.shape[2:0:-1]
        axis = 1 if i == 0 and columns else 0
        small = (n_blocks, 1, rows) if axis else (1, n_blocks, rows)
        bits, less, exps, scale_bits = (np.empty(small, np.uint32) for _ in range(4))
        codes = np.empty((n_blocks, k, rows) if axis else (k, n_blocks, rows), np.float32)
        blocks = codes if axis else codes.transpose(1, 0, 2)
        result = (rows, m) if i == last else (m, rows)
        terms = np.empty((n_blocks + (layer.bias is not None), *result), np.float32)
        if layer.bias is not None:
            terms[n_blocks] = layer.bias
        zeros = np.zeros(result, np.int32) if layer.relu and rows * m < dot.RELU_CLIP_ELEMENTS else None
        sums = sums_bits = magnitude = next_values = next_magnitude = None
        if i < last:
            sums = np.empty(result, np.float32)
            sums_bits = sums.view(np.int32)
            magnitude = sums.view(np.uint32) if zeros is not None else np.empty(result, np.uint32)
            w_next = layers[i + 1].weights  # (n_blocks, M, k); the last's (n_blocks, k, M)
            n_next, k_next = w_next.shape[0], w_next.shape[1 if i + 1 == last else 2]
            next_values = sums.reshape(k_next, n_next, rows)
            next_magnitude = magnitude.reshape(k_next, n_next, rows)
        steps.append(
            _Step(
                layer,
                axis,
                bits,
                less,
                exps,
                exps.view(np.float32),
                scale_bits,
                scale_bits.view(np.float32),
                codes,
                blocks.transpose(0, 2, 1) if i == last else blocks,
                terms,
                terms[:n_blocks],
                sums,
                zeros,
                sums_bits,
                magnitude,
                next_values,
                next_magnitude,
            )
        )
    first = layers[0].weights
    values = magnitude = None
    if not columns:
        values = np.empty((first.shape[2], first.shape[0], rows), np.float32)
        magnitude = np.empty(values.shape, np.uint32)
    arrays = [a for a in (values, magnitude) if a is not None]
    for step in steps:
        arrays += [step.bits, step.less, step.exps, step.scale_bits, step.codes, step.terms]
        arrays += [a for a in (step.sums, step.zeros) if a is not None]
        arrays += [step.magnitude] if step.magnitude is not None and step.zeros is None else []
    return _Work(values, magnitude, steps, sum(a.nbytes for a in arrays))


class DenseChain:
    """Layers with ``DensePlan``s (``applies``) whose inputs are the previous layer's outputs (``M`` of one
    is ``n_blocks * k`` of the next), each with its folded ReLU flag. Read-only after construction; each
    thread keeps its own buffers (``_Work``), so one chain serves many threads.

    Between layers the values are interleaved ``(k, n_blocks, R)`` (``interleaving``: each layer's rows
    are permuted once here): block maxima reduce over the first axis and the scales broadcast over it,
    numpy's fast loops, where ``(n_blocks, k, R)`` blocks broadcast over the middle axis."""

    def __init__(self, plans: list[dot.DensePlan], relus: list[bool]) -> None:
        self.layers = _links(plans, relus)
        self.n_blocks, _, self.k = plans[0].integer_weights.shape
        self._local = threading.local()

    def run(self, x: np.ndarray) -> np.ndarray | None:
        """The last layer's result ``(R, M)`` (C-contiguous, a new array) for float32 rows ``x (R,
        n_blocks * k)``, or None when some layer's blocks leave its plan's bounds (or are all zero, inf
        or NaN)."""
        n_blocks, k = self.n_blocks, self.k
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != n_blocks * k:
            return None
        rows = x.shape[0]
        work = self._buffers(rows, bool(x.flags.f_contiguous))
        if work.values is None:  # the columns as they are: blocks (n_blocks, k, R)
            values = x.T.reshape(n_blocks, k, rows)
            magnitude = np.bitwise_and(values.view(np.uint32), dot.MAGNITUDE)
        else:  # one copy, interleaved
            values = work.values
            np.copyto(values, x.reshape(rows, n_blocks, k).transpose(2, 1, 0))
            magnitude = np.bitwise_and(values.view(np.uint32), dot.MAGNITUDE, out=work.magnitude)
        for step in work.steps:
            if not self._quantize(step, values, magnitude):
                return None
            layer, sums = step.layer, step.sums
            if sums is None:  # the last layer
                np.matmul(step.blocks, layer.weights, out=step.products)
                y = np.add.reduce(step.terms, axis=0)  # block order, the bias last (dot._with_bias)
                if step.zeros is not None:
                    bits = y.view(np.int32)
                    np.maximum(bits, step.zeros, out=bits)
                elif layer.relu:
                    np.clip(y, np.float32(0), np.float32(np.inf), out=y)
                return y
            np.matmul(layer.weights, step.blocks, out=step.products)
            np.add.reduce(step.terms, axis=0, out=sums)
            if step.zeros is not None:  # nonnegative after it: the bits are |y|'s (step.magnitude)
                np.maximum(step.sums_bits, step.zeros, out=step.sums_bits)
            else:
                if layer.relu:
                    np.clip(sums, np.float32(0), np.float32(np.inf), out=sums)
                np.bitwise_and(sums.view(np.uint32), dot.MAGNITUDE, out=step.magnitude)
            values, magnitude = step.next_values, step.next_magnitude
        return None

    def _buffers(self, rows: int, columns: bool) -> _Work:
        """This thread's buffers for ``rows`` rows (kept up to ``WORK_CACHE_BYTES``, for
        ``WORK_CACHE_ENTRIES`` batch sizes)."""
        kept = getattr(self._local, "work", None)
        if kept is None:
            kept = self._local.work = {}
        work = kept.get((rows, columns))
        if work is None:
            work = _work(self.layers, rows, columns)
            if work.nbytes <= WORK_CACHE_BYTES and len(kept) < WORK_CACHE_ENTRIES:
                kept[(rows, columns)] = work
        return work

    @staticmethod
    def _quantize(step: _Step, x: np.ndarray, magnitude: np.ndarray) -> bool:
        """``step.codes``: ``x``'s values as ``dot._dense_integers`` quantizes them (block maxima, the plan's
        bounds, ``rint(x * 2**(m-1-E))`` clipped, times ``2**E``); False when the bounds fail."""
        layer, plan = step.layer, step.layer.plan
        bits = np.maximum.reduce(magnitude, axis=step.axis, keepdims=True, out=step.bits)
        less = np.subtract(bits, plan.low, out=step.less)
        fits = int(np.maximum.reduce(less, axis=None)) < plan.high_bits - plan.low_bits
        if not fits and dot.admit_zero_blocks(bits, plan) is None:  # dot.admitted_bits, in these buffers
            return False
        np.bitwise_and(bits, dot.EXPONENT, out=step.exps)
        np.subtract(layer.up, step.exps, out=step.scale_bits)
        codes = np.multiply(x, step.scales, out=step.codes)
        np.rint(codes, out=codes)
        dot._CLIP(codes, layer.bottom, layer.top, out=codes)
        np.multiply(codes, step.powers, out=codes)
        return True
