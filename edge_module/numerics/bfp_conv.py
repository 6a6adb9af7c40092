"""BFP convolutions (numpy only): a Conv layer of the ``bfp`` scheme on its NCHW input, bit-exact with
``dot.bfp_dot`` on its im2col patches, by the first of several paths that applies (``run``): patches of
one block, blocks of whole kernel positions, folded values (few channels in columns, channel blocks
(block-major on a backend's ordered block sums when it has them), or patch rows), channel blocks quantized
once; None leaves the layer to the emulator's generic patch-row path. The results are values before the
conversion to the layer's output format (``Result``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from . import dot, patches

BFP_COLUMN_PIXELS = 16384  # BFP ones when the batch has this many input pixels (measured: smaller ones gain nothing)
CONV_PLAN_CHUNK = 1 << 20  # block products per chunk of columns (measured on the CIFAR-sized first layer)
BLOCK_MAJOR_CHUNK = 1 << 18  # im2col values per chunk on the ordered block sums (measured: 1 MiB, in L2)


class Result(NamedTuple):
    """A convolution's values before the conversion to its output format: ``values`` NCHW when ``grid``
    is None, else rows ``(N * OH * OW, M)`` for the output pixels ``grid = (N, OH, OW)`` (converted as
    rows, then laid out as NCHW); ``relu_applied``: a folded ReLU is in the values already."""

    values: np.ndarray
    grid: tuple[int, int, int] | None
    relu_applied: bool


def run(x: np.ndarray, geometry: tuple, layer: Mapping, relu: bool = False) -> Result | None:
    """The BFP convolution layer ``layer`` on ``x`` (``geometry``: ``patches.geometry`` of its attributes)
    by the first path that takes it, in this order: one-block patches and blocks of whole kernel
    positions on the layer's ``conv_plan`` (both with ``relu`` folded in), folded values
    (``_bfp_conv_folded``, few channels in columns with ``relu`` folded in), channel blocks quantized
    once (``_bfp_conv``); None when none applies."""
    plan = layer["data"].get("conv_plan")
    y = _one_block_conv(x, geometry, plan, relu)
    if y is not None:
        return Result(y.transpose(1, 0, 2, 3), None, relu)
    y = _position_block_conv(x, geometry, plan, relu)
    if y is not None:
        n, _, h, w = x.shape
        return Result(y, (n, *patches.out_hw(h, w, geometry)), relu)
    result = _bfp_conv_folded(layer, x, geometry, relu)
    if result is not None:
        return result
    channels = dot.bfp_quantize_channels(x, layer["bfp"])
    if channels is not None:  # quantized once per value, not once per patch: the same codes
        return _bfp_conv(layer, *channels, geometry)
    return None


def _one_block_conv(
    x: np.ndarray, geometry: tuple, plan: dot.DensePlan | None, relu: bool = False
) -> np.ndarray | None:
    """A BFP convolution whose patches are one block (``kh * kw * C <= k``) without an im2col copy, as
    ``(M, N, OH, OW)`` (a view), or None where ``dot.bfp_dense_run``'s bounds do not hold (the other
    paths decide, with the same bits). The input sits zero-padded in flat per-channel planes, so a shift
    by ``i * dh * Wp + j * dw`` reaches kernel position ``(i, j)`` from every pixel at once: the block
    maxima are a max filter of the magnitude bits (one ``maximum`` of two long contiguous slices per
    kernel column, then per row) and the patches a strided view ``(kh, kw, C, N * Hp * Wp)`` with
    contiguous rows. Everything is computed for every padded pixel (windows running past a row's end
    too, never picked; an out-of-bounds value there only sends the batch to the other paths): long
    inner loops beat numpy's strided ones over short image rows several times. Then
    ``dot._dense_integers``' arithmetic: codes ``rint(x * 2**(m-1-E))`` clipped to ``±(2**m - 1)``, all-zero
    blocks given the exponent ``low``, the one block's exact product with the integer weights, scaled by
    ``2**E`` (exact: the same value as scaling the codes first), the bias added last; ``relu``: then
    ``dot.relu_values``' arithmetic (chosen by the size of the result, as the ReLU layer chooses it)."""
    if plan is None or plan.integer_weights is None or x.dtype != np.float32 or plan.weights.shape[0] != 1:
        return None
    (kh, kw), _, _, (dh, dw) = geometry
    c = x.shape[1]
    length = kh * kw * c
    if length > plan.block_size or x.size == 0:
        return None
    flat = patches.padded_flat(x.transpose(1, 0, 2, 3), geometry)  # (C, N * Hp * Wp + slack)
    size, wp, down = flat.size, flat.wp, (kh - 1) * dh * flat.wp
    magnitude = np.bitwise_and(flat.values.view(np.uint32), dot.MAGNITUDE)
    magnitude = magnitude[0] if c == 1 else np.maximum.reduce(magnitude, axis=0)
    across = magnitude[: size + down]
    for j in range(1, kw):
        across = np.maximum(across, magnitude[j * dw : j * dw + size + down])
    bits = across[:size]
    for i in range(1, kh):
        bits = np.maximum(bits, across[i * dh * wp : i * dh * wp + size])
    bits = dot.admitted_bits(bits, plan)
    if bits is None:
        return None
    exps = np.bitwise_and(bits, dot.EXPONENT)
    plane, item = flat.values.strides
    shifted = np.lib.stride_tricks.as_strided(
        flat.values, (kh, kw, c, size), (dh * wp * item, dw * item, plane, item), writeable=False
    )
    codes = np.empty((length, size), np.float32)
    np.multiply(shifted, np.subtract(plan.up_bits, exps).view(np.float32), out=codes.reshape(shifted.shape))
    np.rint(codes, out=codes)
    dot._CLIP(codes, -plan.top, plan.top, out=codes)
    y = np.matmul(plan.integer_weights[0, :, :length], codes)  # exact integer sums
    y *= exps.view(np.float32)
    if plan.bias is not None:
        y += plan.bias
    picked = flat.origins(y, geometry)
    if relu:
        dot.relu_in_place(y, size=picked.size)
    return picked


def _position_block_conv(
    x: np.ndarray, geometry: tuple, plan: dot.DensePlan | None, relu: bool = False
) -> np.ndarray | None:
    """A BFP convolution whose blocks are whole kernel positions (``k % C == 0``, ``C < k``, several
    blocks): rows ``(N * OH * OW, M)``, or None where ``dot.bfp_dense_run``'s bounds do not hold (the
    other paths decide, with the same bits). A block's maximum is the largest of its positions' pixel
    channel maxima, so the block maxima come from the pixels' maxima (zero-padded, flat: one
    ``maximum`` of two shifted slices per extra position in a block) instead of a reduction over every
    patch's short blocks; then ``dot._dense_integers``' arithmetic on the im2col rows (each block's exponent
    repeated along it: broadcasting over a short last axis is slow), the block products summed in
    block order in float32, the bias added last, ``relu``: ``dot.relu_values``' arithmetic."""
    if plan is None or plan.integer_weights is None or x.dtype != np.float32:
        return None
    (kh, kw), c = geometry[0], x.shape[1]
    k, n_blocks = plan.block_size, plan.weights.shape[0]
    if c >= k or k % c or n_blocks < 2 or -(-kh * kw * c // k) != n_blocks or x.size == 0:
        return None
    per = k // c  # kernel positions per block
    flat = patches.padded_flat(np.maximum.reduce(np.bitwise_and(x.view(np.uint32), dot.MAGNITUDE), axis=1), geometry)
    size = flat.size
    grid = np.empty((n_blocks, size), np.uint32)
    for b in range(n_blocks):
        shifts = [flat.shift(q, geometry) for q in range(b * per, min((b + 1) * per, kh * kw))]
        grid[b] = flat.values[shifts[0] : shifts[0] + size]
        for shift in shifts[1:]:
            np.maximum(grid[b], flat.values[shift : shift + size], out=grid[b])
    picked = flat.origins(grid, geometry)  # (n_blocks, N, OH, OW)
    bits = np.ascontiguousarray(picked.transpose(1, 2, 3, 0)).reshape(-1, n_blocks)  # (L, n_blocks)
    bits = dot.admitted_bits(bits, plan)
    if bits is None:
        return None
    exps = np.repeat(np.bitwise_and(bits, dot.EXPONENT), k, axis=1)  # (L, n_blocks * k)
    codes = patches.rows(x, geometry, n_blocks * k)
    np.multiply(codes, np.subtract(plan.up_bits, exps).view(np.float32), out=codes)  # times 2**(m-1-E)
    np.rint(codes, out=codes)
    dot._CLIP(codes, -plan.top, plan.top, out=codes)
    codes *= exps.view(np.float32)
    weights = plan.tiles.get("rows")  # the integer weights as (n_blocks, k, M) for row blocks
    if weights is None:
        weights = plan.tiles["rows"] = np.ascontiguousarray(plan.integer_weights.transpose(0, 2, 1))
    partial = np.matmul(codes.reshape(-1, n_blocks, k).transpose(1, 0, 2), weights)  # (n_blocks, L, M), exact
    out = dot.sum_in_order(partial)
    if plan.bias is not None:
        bias = plan.bias.reshape(-1)
        out += dot.small_tiled(plan.tiles, "bias rows", bias, out.shape)
    if relu:
        dot.relu_in_place(out)
    return out


def _conv_plan_run(cols: np.ndarray, plan: dot.DensePlan | None) -> np.ndarray | None:
    """``dot.bfp_dense_run`` on patch columns ``(n_blocks * k, N)`` in chunks of columns (the block
    products of a chunk stay in cache), giving ``(M, N)``; None when there is no plan or some chunk's
    exponents leave its bounds (the column path decides, with the same bits)."""
    if plan is None:
        return None
    n_blocks, m_out, _ = plan.weights.shape
    total = cols.shape[1]
    step = max(1, CONV_PLAN_CHUNK // max(1, n_blocks * m_out))
    if step >= total:
        return dot.bfp_dense_run(cols, plan)
    out = np.empty((m_out, total), np.float32)
    for start in range(0, total, step):
        part = dot.bfp_dense_run(np.ascontiguousarray(cols[:, start : start + step]), plan)
        if part is None:
            return None
        out[:, start : start + step] = part
    return out


def _bfp_conv_folded(layer: Mapping, x: np.ndarray, geometry: tuple, relu: bool = False) -> Result | None:
    """A BFP convolution on folded values: with ``C % k == 0`` the input is quantized once per pixel's
    channel block (the blocks of every patch; padding is an all-zero block), else per patch. Few
    channels in columns fold ``relu`` in (``dot.relu_in_place`` on the result: no second array)."""
    params, data = layer["bfp"], layer["data"]
    if data.get("folded") is None or x.dtype != np.float32:
        return None
    n, c, h, w = x.shape
    k = int(params["block_size"])
    if (
        c <= patches.COLUMN_CHANNELS and n * h * w >= BFP_COLUMN_PIXELS
    ):  # few channels: im2col, quantization, products in columns
        length = -(-int(np.prod(geometry[0])) * c // k) * k
        cols = patches.columns(x, geometry, length)
        y = _conv_plan_run(cols, data.get("conv_plan"))
        if y is None:
            folded = dot.bfp_folded_columns(cols, params)
            y = None if folded is None else dot.bfp_dot_folded_columns(folded, data["folded_t"], data["bias"], params)
        if y is not None:
            if relu:
                dot.relu_in_place(y)
            return Result(y.reshape(-1, n, *patches.out_hw(h, w, geometry)).transpose(1, 0, 2, 3), None, relu)
    if c % k == 0:
        folded = dot.bfp_folded_channels(x, params)
        if folded is not None:
            values = folded[0]
        else:
            folded = dot.bfp_folded_inputs(x.transpose(0, 2, 3, 1).reshape(-1, c), params)
            if folded is None:
                return None
            values = folded[0].reshape(n, h, w, c).transpose(0, 3, 1, 2)
        grid = (n, *patches.out_hw(h, w, geometry))
        y = _block_major_dot(layer, (values, folded[1], folded[2]), geometry)
        if y is None:
            windows = patches.windows(values, *geometry)
            y = _folded_dot(layer, (windows.reshape(int(np.prod(grid)), -1, k), folded[1], folded[2]))
    else:  # patches zero-padded to whole blocks as they are copied (what dot._blocked would add)
        length = int(np.prod(geometry[0])) * c
        if length > k:
            length = -(-length // k) * k
        folded = dot.bfp_folded_inputs(patches.rows(x, geometry, length), params)
        grid = (n, *patches.out_hw(h, w, geometry))
        y = None if folded is None else _folded_dot(layer, folded)
    if y is None:
        return None
    return Result(y, grid, False)


def _block_major_dot(layer: Mapping, folded_x: tuple, geometry: tuple) -> np.ndarray | None:
    """``_folded_dot`` of a convolution's channel blocks (``C % k == 0``; ``folded_x``: the folded values
    NCHW and their exponent bounds) on the backend's ``dot.ordered_block_sum``: rows ``(N * OH * OW, M)``,
    or None when the backend has none, the products are small or the exponents leave
    ``dot.folded_in_range`` (``_folded_dot`` decides, with the same bits). The im2col rows come block-major
    (``patches.block_window_view``), copied chunk by chunk (``_output_spans``) into one buffer that stays
    in cache for the products; the bias is added to each chunk's sums."""
    params, data = layer["bfp"], layer["data"]
    values, x_low, x_high = folded_x
    w_vals, w_low, w_high = data["folded"]
    n, _, h, w = values.shape
    k, (n_blocks, _, m_out) = int(params["block_size"]), w_vals.shape
    oh, ow = patches.out_hw(h, w, geometry)
    if n * oh * ow == 0 or not dot.ordered_sum_on_backend(n * oh * ow * n_blocks * m_out):
        return None
    if not dot.folded_in_range(x_low, x_high, w_low, w_high, params):
        return None
    view = patches.block_window_view(values, geometry, k)  # (kh, kw, C / k, N, OH, OW, k)
    if view.shape[0] * view.shape[1] * view.shape[2] != n_blocks:
        return None
    spans = _output_spans(n, oh, BLOCK_MAJOR_CHUNK // (n_blocks * ow * k))
    buffer = np.empty(view[:, :, :, spans[0][0], spans[0][1]].size, np.float32)  # the first chunk is the largest
    bias = None if data["bias"] is None else np.asarray(data["bias"], np.float32)
    out = np.empty((n * oh * ow, m_out), np.float32)
    for images, image_rows in spans:
        chunk = view[:, :, :, images, image_rows]
        blocks = buffer[: chunk.size].reshape(chunk.shape)
        np.copyto(blocks, chunk)
        start = (images.start * oh + (image_rows.start or 0)) * ow
        sums = out[start : start + chunk.size // (n_blocks * k)]
        sums[...] = dot.ordered_block_sum(blocks.reshape(n_blocks, -1, k), w_vals)
        if bias is not None:
            dot.rows_op(np.add, sums, bias)
    return out


def _output_spans(n: int, oh: int, image_rows: int) -> list[tuple[slice, slice]]:
    """Chunks of ``n`` images of ``oh`` output rows, about ``image_rows`` rows each, as (images, rows)
    slices: whole images when one fits, else row ranges of one image (each chunk's outputs contiguous)."""
    if image_rows >= oh:
        per = image_rows // oh
        return [(slice(i, min(n, i + per)), slice(0, oh)) for i in range(0, n, per)]
    step = max(1, image_rows)
    return [(slice(i, i + 1), slice(r, min(oh, r + step))) for i in range(n) for r in range(0, oh, step)]


def _folded_dot(layer: Mapping, folded_x: tuple) -> np.ndarray | None:
    """``dot.bfp_dot_folded`` of inputs already folded against the layer's folded weights."""
    data = layer["data"]
    return dot.bfp_dot_folded(folded_x, data["folded"], data["bias"], layer["bfp"])


def _bfp_conv(layer: Mapping, mant: np.ndarray, exps: np.ndarray, geometry: tuple) -> Result:
    """A BFP convolution on channel blocks quantized once per value (``dot.bfp_quantize_channels``):
    patches of the mantissas and exponents (padding: zero mantissas at the smallest exponent)."""
    data = layer["data"]
    e_min = -((1 << (int(layer["bfp"]["exponent_bits"]) - 1)) - 1)
    m_patches = patches.windows(mant, *geometry)
    e_patches = patches.windows(exps.astype(np.float32), *geometry, pad_value=float(e_min))
    n, oh, ow = m_patches.shape[:3]
    k = int(layer["bfp"]["block_size"])
    x_blocks = m_patches.reshape(n * oh * ow, -1, k)
    x_exp = e_patches.reshape(n * oh * ow, -1).astype(np.int64)
    y = dot.bfp_dot_blocks(x_blocks, x_exp, data["prepared"], data["bias"], float32_inputs=True)
    return Result(y, (n, oh, ow), False)
