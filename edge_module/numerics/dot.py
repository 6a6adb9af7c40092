"""Bit-accurate dot products of quantized layers (numpy only): what a Dense or Conv computes on the
hardware for each number format. Rows of ``x`` ``(R, K)`` against weights ``(M, K)`` (``K`` the
dot-product dimension; for a convolution the im2col patch in ``(kh, kw, C)`` order, channels last as
hls4ml and Brainwave lay it out).

- **fixed** (as hls4ml's Dense/Conv with ``ap_fixed``): every product of an input code and a weight code
  is exact (``ap_fixed<Wx+Ww, Ix+Iw>``), cast to the accumulator type, and summed into an accumulator
  that starts at the bias cast to the accumulator type; the sum is cast to the result type with its
  rounding and overflow modes. Without an accumulator type the accumulator is wide enough to be exact
  (nothing is rounded or wrapped before the result cast). With ``accum<W,I,Q,O>``: each product and the
  bias are cast with ``Q``/``O``; ``AP_WRAP`` sums are modular (order free); saturating modes saturate
  after each addition, in input order ``k = 0..K-1`` as hls4ml's loop does.
- **int8** (as onnxruntime's QLinearMatMul/QLinearConv): ``acc = sum((x - zx) * w) + bias`` in int32
  (wrapping), then ``y = clip(round_half_even(float32(acc) * float32(float32(sx * sw) / sy)) + zy)``.
- **bfp** (MSFP/Brainwave): inputs and weights are quantized in blocks of ``k`` along ``K``; per block the
  mantissa products are summed exactly as integers and scaled by the two shared exponents; the block
  results are accumulated in float32 in block order and the float32 bias added last. (Brainwave's
  vector units work in float16; we accumulate in float32, so results are slightly better than float16
  hardware would give.)

Integer matrix products run on BLAS in float32 or float64 whenever every partial sum provably fits the
mantissa (``max|a| * max|b| * K < 2**24`` or ``2**53``), which makes them exact; int64 otherwise.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import numpy as np

from . import bfp, fixed


class MatmulBackend(Protocol):
    """A faster engine for the float32 matrix products whose every partial sum is exact (so any
    summation order or FMA gives the same result): ``matmul(a (R, K), b (K, M)) -> (R, M)`` and
    ``block_products(x (R, n_blocks, k), w (n_blocks, k, M)) -> (n_blocks, R, M)``, both C-contiguous
    float32 in and out. Optionally also ``ordered_block_sum(x (n_blocks, R, k), w (n_blocks, k, M)) ->
    (R, M)``: the exact block products summed in block order in float32, bit for bit
    ``sum_in_order(np.matmul(x, w))``, without writing the products out (``ordered_block_sum`` here uses
    it when present). ``edge_module.scoring.ort_matmul`` provides one on onnxruntime (numerics itself
    stays numpy only)."""

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...

    def block_products(self, x: np.ndarray, w: np.ndarray) -> np.ndarray: ...


BACKEND_MIN_PRODUCTS = 1 << 22  # smaller products stay on numpy: a backend call costs some 10-20 us
_backend: MatmulBackend | None = None


def set_backend(backend: MatmulBackend | None) -> MatmulBackend | None:
    """Use ``backend`` for large exact float32 products (None: numpy alone); returns the previous one."""
    global _backend
    previous, _backend = _backend, backend
    return previous


def _on_backend(a: np.ndarray, b: np.ndarray, products: int) -> bool:
    return (
        _backend is not None
        and products >= BACKEND_MIN_PRODUCTS
        and a.dtype == np.float32
        and b.dtype == np.float32
        and a.flags.c_contiguous
        and b.flags.c_contiguous
    )


def exact_float_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for float ``a (R, K)`` and ``b (K, M)`` whose every partial sum is exact: on the backend
    when one is set and the product is large, else numpy."""
    if a.ndim == 2 and b.ndim == 2 and _on_backend(a, b, a.shape[0] * a.shape[1] * b.shape[1]):
        return _backend.matmul(a, b)  # type: ignore[union-attr]
    return a @ b


def block_products(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(n_blocks, R, M)`` products of rows ``x (R, n_blocks, k)`` block by block with ``w (n_blocks, k,
    M)``, every one exact: on the backend when one is set and the products are large, else numpy."""
    if _on_backend(x, w, x.size * w.shape[-1]):
        return _backend.block_products(x, w)  # type: ignore[union-attr]
    return np.matmul(x.transpose(1, 0, 2), w)


def ordered_sum_on_backend(products: int) -> bool:
    """Whether ``ordered_block_sum`` of ``products`` block products (``n_blocks * R * M``) runs on the
    backend: one is set, has ``ordered_block_sum``, and the products are large."""
    return products >= BACKEND_MIN_PRODUCTS and getattr(_backend, "ordered_block_sum", None) is not None


def ordered_block_sum(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(R, M)``: the exact products of ``x (n_blocks, R, k)`` block by block with ``w (n_blocks, k, M)``
    summed in block order in float32 (``sum_in_order``), on the backend's ``ordered_block_sum`` when it
    has one and the products are large, else numpy."""
    products = x.shape[0] * x.shape[1] * w.shape[-1]
    if ordered_sum_on_backend(products) and _on_backend(x, w, products):
        return _backend.ordered_block_sum(x, w)  # type: ignore[union-attr]
    return sum_in_order(np.matmul(x, w))


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` for integer-valued ``a (R, K)`` and ``b (M, K)``, exact, as int64."""
    k = a.shape[-1]
    amax = float(np.abs(a).max()) if a.size else 0.0
    bmax = float(np.abs(b).max()) if b.size else 0.0
    bound = amax * bmax * max(k, 1)
    if bound < 2.0**24:
        return (a.astype(np.float32) @ b.astype(np.float32).T).astype(np.int64)
    if bound < 2.0**53:
        return (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.int64)
    if bound < 2.0**62:
        return a.astype(np.int64) @ b.astype(np.int64).T
    raise ValueError(f"integer dot product of {k} terms can reach {bound:.3g}, beyond int64: use narrower formats")


def cast_fixed(codes: np.ndarray, frac: int, fmt: dict) -> np.ndarray:
    """Codes with ``frac`` fractional bits converted to the fixed type ``fmt`` (its rounding and overflow)."""
    if np.abs(codes).max(initial=0) >= 2**53:
        raise ValueError("a fixed-point value wider than 53 bits cannot be emulated: use a narrower accumulator")
    return fixed.quantize(
        np.ldexp(codes.astype(np.float64), -frac),
        fmt["width"],
        fmt["integer"],
        fmt["rounding"],
        fmt["overflow"],
        fmt.get("signed", True),
    )


def frac_bits(fmt: dict) -> int:
    return int(fmt["width"]) - int(fmt["integer"])


def _wrap(codes: np.ndarray, width: int) -> np.ndarray:
    modulus = np.int64(1) << width
    codes = codes & (modulus - 1)
    return np.where(codes >= (modulus >> 1), codes - modulus, codes)


def fixed_dot(
    x: np.ndarray,
    x_frac: int,
    w: np.ndarray,
    w_frac: int,
    b: np.ndarray,
    b_frac: int,
    accum: dict | None = None,
    chunk: int = 256,
) -> tuple[np.ndarray, int]:
    """Accumulator codes ``(R, M)`` and their fractional bits for input codes ``x (R, K)``, weight codes
    ``w (M, K)`` and bias codes ``b (M,)`` (see the module docstring)."""
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    b = np.asarray(b, np.int64)
    p_frac = x_frac + w_frac
    if accum is None:
        a_frac = max(p_frac, b_frac)
        return (exact_matmul(x, w) << (a_frac - p_frac)) + (b << (a_frac - b_frac)), a_frac
    a_frac, width = frac_bits(accum), int(accum["width"])
    bias = cast_fixed(b, b_frac, accum)
    if a_frac >= p_frac and accum["overflow"] == "AP_WRAP":
        return _wrap(bias + (exact_matmul(x, w) << (a_frac - p_frac)), width), a_frac
    out = np.empty((x.shape[0], w.shape[0]), np.int64)
    for start in range(0, x.shape[0], chunk):
        rows = x[start : start + chunk]
        products = cast_fixed(rows[:, None, :] * w[None, :, :], p_frac, accum)  # (r, M, K)
        if accum["overflow"] == "AP_WRAP":
            out[start : start + chunk] = _wrap(bias + products.sum(axis=-1), width)
            continue
        acc = np.broadcast_to(bias, products.shape[:2]).copy()
        for k in range(products.shape[-1]):
            acc = cast_fixed(acc + products[..., k], a_frac, accum)
        out[start : start + chunk] = acc
    return out, a_frac


def int8_dot(
    x: np.ndarray,
    x_scale: float,
    x_zero: int,
    w: np.ndarray,
    w_scale: np.ndarray,
    b: np.ndarray | None,
    y_scale: float,
    y_zero: int,
) -> np.ndarray:
    """int8 output codes ``(R, M)`` as onnxruntime's QLinearMatMul/QLinearConv compute them."""
    acc = exact_matmul(np.asarray(x, np.int64) - int(x_zero), np.asarray(w, np.int64))
    if b is not None:
        acc = acc + np.asarray(b, np.int64)
    acc = _wrap(acc, 32).astype(np.int32)
    scale = (np.float32(x_scale) * np.asarray(w_scale, np.float32)) / np.float32(y_scale)
    y = np.rint(acc.astype(np.float32) * scale.astype(np.float32))
    return (np.clip(y, -128 - int(y_zero), 127 - int(y_zero)) + int(y_zero)).astype(np.int8)


def _blocked(a: np.ndarray, block_size: int) -> np.ndarray:
    """``(R, K)`` zero-padded and split to ``(R, n_blocks, block_size)``."""
    rows, k = a.shape
    n_blocks = -(-k // block_size)
    if n_blocks * block_size != k:
        a = np.concatenate([a, np.zeros((rows, n_blocks * block_size - k), a.dtype)], axis=1)
    return a.reshape(rows, n_blocks, block_size)


def _bfp_float32(x: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """``bfp.quantize`` of float32 rows in float32 arithmetic, blocked: mantissas ``(R, n_blocks, k)``
    (float32) and exponents ``(R, n_blocks)``; None when a nonzero block's exponent is below -100
    (scaling by ``2**(m-1-E)`` could overflow float32: the float64 kernel handles it). Exact: the scalings are by
    powers of two and ``rint``/``trunc`` are exact in float32, so the codes equal the kernel's."""
    k, m, e_bits = int(params["block_size"]), int(params["mantissa_bits"]), int(params["exponent_bits"])
    if not np.isfinite(x).all():
        return None  # the kernel raises the error naming the problem
    blocks = _blocked(x, k)
    block_max = np.abs(blocks).max(axis=-1)
    e_min, e_max = bfp.exponent_range(e_bits)
    shared = np.where(block_max > 0, np.frexp(block_max)[1].astype(np.int64) - 1, e_min)
    shared = np.clip(shared, e_min, e_max)
    if m > 24 or (shared.size and np.where(block_max > 0, shared, 0).min() < -100):
        return None
    step = np.maximum(shared, -100)  # all-zero blocks: any scaling gives zeros
    scaled = blocks * np.ldexp(np.float32(1), (m - 1 - step).astype(np.int32))[..., None].astype(np.float32)
    if params.get("rounding", "nearest_even") == "nearest_even":
        np.rint(scaled, out=scaled)
    else:
        np.trunc(scaled, out=scaled)
    limit = np.float32((1 << m) - 1)
    np.clip(scaled, -limit, limit, out=scaled)
    return scaled, shared


def bfp_weights(w_mant: np.ndarray, w_exp: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray, bool]:
    """Weights prepared for ``bfp_dot``: mantissas ``(n_blocks, k, M)``, ``2**(E_w - 2(m-1))``
    ``(n_blocks, 1, M)`` and whether float32 holds those scales exactly."""
    k, m = int(params["block_size"]), int(params["mantissa_bits"])
    exact = np.float32 if float((1 << m) - 1) ** 2 * k < 2.0**24 else np.float64
    blocks = _blocked(np.asarray(w_mant, np.float64), k)  # (M, nb, k)
    scale = np.ldexp(1.0, np.asarray(w_exp, np.int64) - 2 * (m - 1))  # (M, nb)
    scale = np.ascontiguousarray(scale.T[:, None, :])
    fits = exact is np.float32 and bool(np.array_equal(scale.astype(np.float32).astype(np.float64), scale))
    return np.ascontiguousarray(blocks.transpose(1, 2, 0).astype(exact)), scale, fits


def bfp_dot(
    x: np.ndarray,
    w_mant: np.ndarray,
    w_exp: np.ndarray,
    bias: np.ndarray | None,
    params: dict,
    prepared: tuple[np.ndarray, np.ndarray, bool] | None = None,
) -> np.ndarray:
    """float32 ``(R, M)``: float inputs ``x (R, K)`` quantized to BFP along ``K``, against weight mantissas
    ``(M, K)`` and exponents ``(M, n_blocks)`` in the same format (see the module docstring).
    ``prepared``: ``bfp_weights(w_mant, w_exp, params)``, computed once per layer."""
    prepared = prepared if prepared is not None else bfp_weights(w_mant, w_exp, params)
    fast = _bfp_float32(x, params) if x.dtype == np.float32 else None
    if fast is None:
        k, m = int(params["block_size"]), int(params["mantissa_bits"])
        x_mant, x_exp = bfp.quantize(
            x, -1, k, m, int(params["exponent_bits"]), params.get("rounding", "nearest_even"), "x"
        )
        return bfp_dot_blocks(_blocked(x_mant.astype(np.float64), k), np.asarray(x_exp, np.int64), prepared, bias)
    return bfp_dot_blocks(fast[0], fast[1], prepared, bias, float32_inputs=True)


def bfp_dot_blocks(
    x_blocks: np.ndarray,
    x_exp: np.ndarray,
    prepared: tuple[np.ndarray, np.ndarray, bool],
    bias: np.ndarray | None,
    float32_inputs: bool = False,
) -> np.ndarray:
    """``bfp_dot`` on inputs already quantized: mantissas ``(R, n_blocks, k)`` and exponents
    ``(R, n_blocks)``. ``float32_inputs``: they came from the float32 quantizer (nonzero blocks have
    exponents >= -100), which allows exact float32 scaling."""
    w_blocks, w_scale, w_fits = prepared
    x_blocks = x_blocks.astype(w_blocks.dtype, copy=False)
    in_float32 = float32_inputs and w_fits and x_exp.max(initial=0) <= 100
    if in_float32:
        # partial * 2**E_x is exact in float32 (|partial| < 2**24, -100 <= E_x <= 100 for nonzero blocks) and
        # the second power of two rounds once, as the float64 product cast to float32 does
        x_scale, w_scale = np.ldexp(np.float32(1), x_exp.astype(np.int32)), w_scale.astype(np.float32)
    else:
        x_scale = np.ldexp(1.0, x_exp)
    rows, n_blocks, m_out = x_blocks.shape[0], x_blocks.shape[1], w_blocks.shape[2]
    if rows * n_blocks * m_out <= 1 << 18:  # small: all blocks in one batched product, fewer numpy calls
        partial = np.matmul(x_blocks.transpose(1, 0, 2), w_blocks)  # (nb, R, M), exact integer sums
        scaled = partial * x_scale.T[..., None] * w_scale  # float32 exact / float64 exact
        scaled = scaled.astype(np.float32, copy=False)
        acc = scaled[0].copy()
        for block in range(1, n_blocks):
            acc += scaled[block]  # float32, in block order
    else:  # large: one block at a time keeps the temporaries in cache
        acc = np.zeros((rows, m_out), np.float32)
        for block in range(n_blocks):
            partial = x_blocks[:, block] @ w_blocks[block]  # exact integer sums of mantissa products
            if in_float32:
                partial *= x_scale[:, block, None]
                partial *= w_scale[block]
            else:
                partial = (partial * x_scale[:, block, None] * w_scale[block]).astype(np.float32)  # one rounding
            acc += partial  # float32, in block order
    if bias is not None:
        acc += np.asarray(bias, np.float32)
    return acc


def bfp_fold_weights(w_mant: np.ndarray, w_exp: np.ndarray, params: dict) -> tuple[np.ndarray, int, int] | None:
    """Weights for ``bfp_dot_folded``: the values ``mantissa * 2**(E_w - (m-1))`` as float32 blocks
    ``(n_blocks, k, M)`` and the smallest and largest exponent of the nonzero blocks; None unless every
    block's integer sum fits float32 (``(2**m - 1)**2 * k < 2**24``) and every nonzero value is a normal
    float32 (then the values are exact)."""
    k, m = int(params["block_size"]), int(params["mantissa_bits"])
    if float((1 << m) - 1) ** 2 * k >= 2.0**24:
        return None
    blocks = _blocked(np.asarray(w_mant, np.float64), k)  # (M, nb, k)
    exps = np.asarray(w_exp, np.int64)
    nonzero = np.abs(blocks).max(axis=-1, initial=0) > 0
    low, high = (int(exps[nonzero].min()), int(exps[nonzero].max())) if nonzero.any() else (0, 0)
    if low - (m - 1) < -126 or high + 1 > 127:
        return None
    values = blocks * np.ldexp(1.0, exps - (m - 1))[..., None]
    return np.ascontiguousarray(values.astype(np.float32).transpose(1, 2, 0)), low, high


def _block_absmax(blocks: np.ndarray, chunk: int = 1 << 17) -> np.ndarray:
    """``abs(blocks).max(axis=-1)``, fast for short blocks, where numpy's reduction over a short last axis
    is slow: chunks of about ``chunk`` values taken absolute into a transposed buffer (one pass) and
    reduced along its first axis (long inner loops; NaN propagates either way)."""
    k = blocks.shape[-1]
    if k > 32 or k < 2:
        return np.abs(blocks).max(axis=-1, initial=0)
    flat = blocks.reshape(-1, k)
    n = flat.shape[0]
    if n * k <= chunk:
        buf = np.empty((k, n), blocks.dtype)
        np.abs(flat.T, out=buf)
        return np.maximum.reduce(buf, axis=0).reshape(blocks.shape[:-1])
    out = np.empty(n, blocks.dtype)
    step = chunk // k
    buf = np.empty((k, step), blocks.dtype)
    for start in range(0, n, step):
        part = flat[start : start + step]
        transposed = buf[:, : part.shape[0]]
        np.abs(part.T, out=transposed)
        np.maximum.reduce(transposed, axis=0, out=out[start : start + step])
    return out.reshape(blocks.shape[:-1])


def bfp_folded_inputs(x: np.ndarray, params: dict) -> tuple[np.ndarray, int, int] | None:
    """float32 rows ``(R, K)`` BFP-quantized along ``K`` (as ``bfp.quantize``) given as the values
    ``mantissa * 2**(E_x - (m-1))`` (float32 blocks ``(R, n_blocks, k)``, or ``(R, 1, K)`` when ``K < k``;
    exact: scalings by powers of two, ``rint``/``trunc`` are exact in float32) and the smallest and largest
    shared exponent of the nonzero blocks; None for non-finite inputs (the kernel raises the error),
    ``m > 23`` or a nonzero block's exponent below -100 (the float64 kernel handles those)."""
    k, m, e_bits = int(params["block_size"]), int(params["mantissa_bits"]), int(params["exponent_bits"])
    if x.dtype != np.float32 or m > 23:
        return None
    # one short block: left unpadded (the padding zeros change neither the block maximum nor the sums)
    blocks = x.reshape(x.shape[0], 1, x.shape[1]) if 0 < x.shape[1] < k else _blocked(x, k)
    block_max = _block_absmax(blocks)
    top = float(block_max.max(initial=0))
    if not math.isfinite(top):
        return None
    e_min, e_max = bfp.exponent_range(e_bits)
    exps = np.frexp(block_max)[1]  # floor(log2 max|x|) + 1; 0 for an all-zero block
    if top == 0:
        low = high = 0
    else:  # all-zero blocks count as exponent -1 here: low is then a lower bound, as good for the checks
        low = min(max(int(exps.min()) - 1, e_min), e_max)
        high = min(max(math.frexp(top)[1] - 1, e_min), e_max)
    if low < -100:
        return None
    if low <= max(e_min, -100) or high >= e_max:  # some shared exponents need clipping
        np.clip(exps, max(e_min, -100) + 1, e_max + 1, out=exps)  # all-zero blocks: any scaling gives zeros
    up = np.ldexp(np.float32(1), np.subtract(m, exps, out=exps))[..., None]  # 2**(m-1-E)
    up = np.repeat(up, blocks.shape[-1], axis=-1)  # whole: broadcasting over short blocks is slow
    scaled = blocks * up
    if params.get("rounding", "nearest_even") == "nearest_even":
        np.rint(scaled, out=scaled)
    else:
        np.trunc(scaled, out=scaled)
    limit = np.float32((1 << m) - 1)  # a block maximum rounding up to 2**m saturates
    np.clip(scaled, -limit, limit, out=scaled)
    scaled /= up  # exact: a power of two, the result a normal float32
    return scaled, low, high


_MAGIC_MAX_BITS = 22  # x + C must stay in C's binade: |x| < 2**(E+1) <= C / 3 needs m <= 22
_MAGNITUDE_BITS = 0x7FFFFFFF  # a float32's bits less the sign: |x| as unsigned bits, in the order of |x|
_EXPONENT_BITS = 0x7F800000  # a float32's exponent field: masking the rest gives 2**floor(log2 x)
MAGNITUDE = np.array(_MAGNITUDE_BITS, np.uint32)  # 0-d uint32 masks: numpy's fast path for array operands
EXPONENT = np.array(_EXPONENT_BITS, np.uint32)
_INVERSE_BITS = np.int32(254 << 23)  # less the exponent bits of 2**E: the bits of 2**-E
# numpy's clip ufunc called directly: ``np.clip``'s Python wrapper costs more than the clipping on small arrays
_CLIP = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", None) or np.clip


def _folded_magic(
    blocks: np.ndarray, block_max: np.ndarray, top: float, m: int, e_min: int, e_max: int
) -> tuple[np.ndarray, int, int] | None:
    """``bfp_folded_inputs`` rounding half to even by adding and subtracting a per-block constant
    ``C = 1.5 * 2**(E + 24 - m)``: float32 ``x + C`` lies in ``C``'s binade, whose spacing is the step
    ``2**(E - m + 1)``, so IEEE rounding of the sum is ``rint(x / step)`` (ties to even: ``C / step`` is
    even) and ``(x + C) - C`` is exact. ``2**E`` is the block maximum with its mantissa bits masked off.
    All-zero blocks get ``C = 0`` and stay zero. A block saturates when its maximum reaches
    ``(2**m - 1/2) * step`` (it would round to ``2**(E+1)``). None (the scaling path decides) when some
    shared exponent would be clipped or a nonzero block's exponent is outside ``-100..100``. ``blocks`` are
    ``(n_blocks, k, N)``, ``block_max`` ``(n_blocks, N)``."""
    if top == 0:
        return None
    # the smallest nonzero block maximum: as unsigned integers less one, zeros (bits 0) wrap to the top
    smallest = np.subtract(block_max.view(np.int32), 1).view(np.uint32).min()
    lowest = float(np.array(smallest + 1, np.uint32).view(np.float32))
    high, low = math.frexp(top)[1] - 1, math.frexp(lowest)[1] - 1
    if low < max(e_min, -100) or high > min(e_max, 100):
        return None
    pow2 = np.bitwise_and(block_max.view(np.int32), _EXPONENT_BITS).view(np.float32)  # 2**E; 0 for zero blocks
    up = (pow2 * np.float32(1.5 * 2.0 ** (24 - m)))[:, None, :]  # broadcast along the block: long inner loops
    scaled = blocks + up
    scaled -= up
    saturated = np.flatnonzero(block_max >= pow2 * np.float32(2.0 - 2.0**-m))
    if saturated.size:  # all-zero blocks (0 >= 0) and the few that round up: clip those to (2**m - 1) * step
        saturated = saturated[block_max.reshape(-1)[saturated] > 0]
    limit = np.float32(2.0 - 2.0 ** (1 - m))  # (2**m - 1) * step = 2**E * limit
    if saturated.size * 64 > block_max.size:  # many (few mantissa bits): every block, broadcasting
        bound = (pow2 * limit)[:, None, :]
        np.minimum(scaled, bound, out=scaled)  # (clip with array bounds is several times slower)
        np.maximum(scaled, -bound, out=scaled)
    elif saturated.size:
        bound = (pow2.reshape(-1)[saturated] * limit)[:, None]
        block, column = np.unravel_index(saturated, block_max.shape)
        scaled[block, :, column] = np.clip(scaled[block, :, column], -bound, bound)
    return scaled, low, high


def bfp_folded_columns(cols: np.ndarray, params: dict) -> tuple[np.ndarray, int, int] | None:
    """``bfp_folded_inputs`` in the transposed layout: float32 columns ``(n_blocks * k, N)`` (each column
    one row of ``K`` values zero-padded to whole blocks) give values ``(n_blocks, k, N)`` and the exponent
    bounds; None where the rounding trick of ``_folded_magic`` does not apply (the row path decides)."""
    k, m, e_bits = int(params["block_size"]), int(params["mantissa_bits"]), int(params["exponent_bits"])
    if cols.dtype != np.float32 or m > _MAGIC_MAX_BITS or params.get("rounding", "nearest_even") != "nearest_even":
        return None
    if cols.ndim != 2 or cols.shape[0] % k or cols.shape[0] == 0:
        raise ValueError(f"columns of shape {cols.shape} are not whole blocks of {k}")
    blocks = cols.reshape(cols.shape[0] // k, k, cols.shape[1])
    block_max = np.abs(blocks).max(axis=1)  # along a middle axis: long inner loops
    top = float(block_max.max(initial=0))
    if not math.isfinite(top):
        return None
    e_min, e_max = bfp.exponent_range(e_bits)
    return _folded_magic(blocks, block_max, top, m, e_min, e_max)


def transposed_weights(folded: tuple[np.ndarray, int, int]) -> tuple[np.ndarray, int, int]:
    """``bfp_fold_weights``' result with values ``(n_blocks, M, k)`` for ``bfp_dot_folded_columns``."""
    return np.ascontiguousarray(folded[0].transpose(0, 2, 1)), folded[1], folded[2]


def bfp_dot_folded_columns(
    x: tuple[np.ndarray, int, int],
    w: tuple[np.ndarray, int, int],
    bias: np.ndarray | None,
    params: dict,
    chunk_elements: int = 1 << 19,  # measured: 2**19 beats 2**18 and 2**20 on a CIFAR-sized first layer
) -> np.ndarray | None:
    """``bfp_dot_folded`` transposed: ``bfp_folded_columns`` values ``(n_blocks, k, N)`` against the folded
    weights transposed (``bfp_fold_weights`` with values ``(n_blocks, M, k)``: ``transposed_weights``),
    giving ``(M, N)``; the same exact block products, summed in block order in float32, the bias added
    last. None when some block result could leave float32's normal range."""
    (x_vals, x_low, x_high), (w_t, w_low, w_high) = x, w
    if not folded_in_range(x_low, x_high, w_low, w_high, params):
        return None
    n_blocks, n = x_vals.shape[0], x_vals.shape[2]
    if n_blocks != w_t.shape[0] or x_vals.shape[1] != w_t.shape[2]:
        raise ValueError(f"inputs in blocks {x_vals.shape[:2]} do not match the weights' {w_t.shape[::2]}")
    m_out = w_t.shape[1]
    out = np.empty((m_out, n), np.float32)
    step = max(1, chunk_elements // max(1, n_blocks * m_out))
    for start in range(0, n, step):
        partial = np.matmul(w_t, x_vals[:, :, start : start + step])  # (nb, M, c), exact
        sum_in_order(partial, out[:, start : start + step])
    if bias is not None:
        out += np.asarray(bias, np.float32)[:, None]
    return out


class DensePlan(NamedTuple):
    """What ``bfp_dense_run`` needs of a layer, computed once: the weights ``(n_blocks, M, k)``, the bias
    as a float32 column ``(M, 1)`` (or None), the float32 ``limit = 2 - 2**(1-m)`` (the saturation bound
    ``(2**m - 1) * step`` of a block scaled to ``E = 0``) and rounding constant ``magic = 1.5 * 2**(24-m)``
    (``_folded_magic``'s at ``E = 0``), the block size, and the float32 bit patterns bounding the nonzero
    block maxima: at least ``low_bits`` (no exponent clipped, every block product normal) and below
    ``high_bits`` (no exponent clipped, no block result near overflow; inf and NaN are above)."""

    weights: np.ndarray
    bias: np.ndarray | None
    limit: np.float32
    magic: np.float32
    block_size: int
    low_bits: int
    high_bits: int
    tiles: dict  # the bias tiled per batch size (``tiled``)
    integer_weights: np.ndarray | None  # the weights times 2**-(m-1) (exact, all normal) for ``_dense_integers``
    top: float  # the largest mantissa, 2**m - 1
    up_bits: int  # less the exponent bits of 2**E: the bits of 2**(m-1-E)
    low: np.ndarray  # low_bits as a 0-d uint32 array (numpy's fast path for array operands)


def bfp_dense_plan(w: tuple[np.ndarray, int, int], bias: np.ndarray | None, params: dict) -> DensePlan | None:
    """The ``DensePlan`` of weights as ``transposed_weights`` gives them, or None where rounding by
    ``_folded_magic``'s constant does not apply (``m > 22``, truncation)."""
    k, m, e_bits = int(params["block_size"]), int(params["mantissa_bits"]), int(params["exponent_bits"])
    if m > _MAGIC_MAX_BITS or params.get("rounding", "nearest_even") != "nearest_even":
        return None
    w_t, w_low, w_high = w
    e_min, e_max = bfp.exponent_range(e_bits)
    # as bfp_dot_folded_columns and _folded_magic: exponents low..high of the nonzero input blocks with
    # low + w_low - 2(m-1) >= -126, high + w_high + 2 + log2(k) + 1 <= 126, none clipped, within -100..100
    low = max(e_min, -100, -126 + 2 * (m - 1) - int(w_low))
    high = min(e_max, 100, 126 - int(w_high) - 3 - (k - 1).bit_length())
    if low > high:
        return None
    limit, magic = np.float32(2.0 - 2.0 ** (1 - m)), np.float32(1.5 * 2.0 ** (24 - m))
    column = None if bias is None else np.ascontiguousarray(np.asarray(bias, np.float32).reshape(-1, 1))
    w_t = np.ascontiguousarray(w_t, np.float32)
    integer = None
    if int(w_low) - 2 * (m - 1) >= -126:  # every nonzero weight stays normal, so the scaling is exact
        integer = np.ascontiguousarray(w_t * np.float32(2.0 ** (1 - m)))
        if not np.array_equal(integer * np.float32(2.0 ** (m - 1)), w_t):
            integer = None
    return DensePlan(
        w_t,
        column,
        limit,
        magic,
        k,
        (low + 127) << 23,
        (high + 128) << 23,
        {},
        integer,
        float((1 << m) - 1),
        (254 + m - 1) << 23,
        np.array((low + 127) << 23, np.uint32),
    )


def bfp_dense_run(xt: np.ndarray, plan: DensePlan) -> np.ndarray | None:
    """A BFP dense layer in few numpy calls (small batches, where the per-call cost dominates): float32
    inputs as C-contiguous columns ``xt (n_blocks * k, R)``, the result ``(M, R)``. The inputs are clipped
    to their block's saturation bound ``±(2**m - 1) * step`` (what a block maximum rounding up to
    ``2**(E+1)`` saturates to; values below it round as before) and rounded half to even by
    ``_folded_magic``'s constant, both on the blocks scaled by ``2**-E`` (exact; scalar bounds and
    constant, where per-block ones would broadcast, which costs twice as much; values that underflow
    there are far below half a step and round to 0 either way), then scaled back by ``2**E``; then the
    exact block products, summed in block order in float32, the bias added last: equal to
    ``bfp_dot_folded``. Batches without an all-zero block take ``_dense_integers`` (fewer calls, the same
    products). None where the exponents leave the plan's bounds, for an all-zero, infinite or NaN input
    (the other paths decide)."""
    w_t, _, limit, magic, k, low_bits, high_bits = plan[:7]
    n_blocks, rows = xt.shape[0] // k, xt.shape[1]
    if xt.dtype != np.float32 or xt.ndim != 2 or n_blocks * k != xt.shape[0] or not xt.flags.c_contiguous:
        return None
    if n_blocks != w_t.shape[0] or rows == 0:
        return None
    blocks = xt.reshape(n_blocks, k, rows)
    codes = _dense_integers(blocks, plan) if plan.integer_weights is not None else None
    if codes is not None:
        return _with_bias(column_block_sum(plan.integer_weights, codes), plan)
    # |x| block maxima as float32 bits: the same order as the floats (NaN above inf); integers reduce faster
    bits = np.maximum.reduce(np.abs(blocks).view(np.int32), axis=1)
    less = np.subtract(bits, 1)  # zero blocks: -1, the top as unsigned
    if not (0 <= int(less.max()) < high_bits - 1 and int(less.view(np.uint32).min()) >= low_bits - 1):
        return None
    exps = np.bitwise_and(bits, _EXPONENT_BITS)  # the bits of 2**E; 0 for zero blocks
    down = np.subtract(_INVERSE_BITS, exps).view(np.float32)[:, None, :]  # 2**-E; 2**127 for zero blocks
    scaled = np.multiply(blocks, down)  # |x| < 2 with the maximum in [1, 2)
    _CLIP(scaled, -limit, limit, out=scaled)
    scaled += magic
    scaled -= magic
    scaled *= exps.view(np.float32)[:, None, :]  # exact: the block products stay normal (the plan's bounds)
    return _with_bias(column_block_sum(w_t, scaled), plan)


def _dense_integers(blocks: np.ndarray, plan: DensePlan) -> np.ndarray | None:
    """``bfp_dense_run``'s codes for the integer weights in fewer calls, or None unless every block is all
    zero or has an exponent within the plan's bounds, and some block is nonzero (one check when no block is all zero:
    the largest ``|x|`` bits less ``low`` as unsigned, where zero, subnormal, too small, too large,
    infinite and NaN blocks all come out at least ``high - low``; else the nonzero blocks are checked
    as ``bfp_dense_run`` does and the all-zero ones take the exponent ``low``: zeros at every step). The
    block exponents as the largest ``|x|`` bits' exponent field; the inputs scaled by
    ``2**(m-1-E)`` to integer steps, rounded half to even by ``rint`` and clipped to ``±(2**m - 1)`` (the
    same codes: a value rounding up to ``2**m`` saturates either way), scaled by ``2**E`` and multiplied
    with the weights times ``2**-(m-1)``: the same exact products as the weights' folded values against
    the codes times ``2**(E-(m-1))``."""
    bits = admitted_bits(
        np.maximum.reduce(np.bitwise_and(blocks.view(np.uint32), _MAGNITUDE_BITS), axis=1, keepdims=True), plan
    )
    if bits is None:
        return None
    exps = np.bitwise_and(bits, _EXPONENT_BITS)
    scaled = np.multiply(blocks, np.subtract(plan.up_bits, exps).view(np.float32))  # times 2**(m-1-E)
    np.rint(scaled, out=scaled)
    _CLIP(scaled, -plan.top, plan.top, out=scaled)
    scaled *= exps.view(np.float32)
    return scaled


def admitted_bits(bits: np.ndarray, plan: DensePlan) -> np.ndarray | None:
    """Block maxima ``bits`` (``|x|`` as uint32) as the plan's arithmetic takes them, or None: one check
    when every block is within the bounds (``bits`` less ``low_bits`` as unsigned: zero, subnormal, too
    small, too large, infinite and NaN blocks all come out at least ``high - low``), else
    ``admit_zero_blocks``."""
    if int(np.maximum.reduce(np.subtract(bits, plan.low), axis=None)) < plan.high_bits - plan.low_bits:
        return bits
    return admit_zero_blocks(bits, plan)


def admit_zero_blocks(bits: np.ndarray, plan: DensePlan) -> np.ndarray | None:
    """``_dense_integers``' slower check, for block maxima ``bits`` (``|x|`` as uint32) that failed the
    fast one: ``bits`` with the all-zero blocks set to ``low_bits`` (any exponent gives them zeros), or
    None when a nonzero block is outside the plan's bounds or every block is zero. Less one as
    unsigned, all-zero blocks wrap around to the top, so the smallest is the smallest nonzero block;
    the largest ``bits`` is the largest nonzero one (inf and NaN above ``high_bits``); once every nonzero
    block is at least ``low_bits``, a maximum with it moves the zeros alone."""
    smallest = int(np.minimum.reduce(np.subtract(bits, 1), axis=None))
    if smallest < plan.low_bits - 1 or not 0 < int(np.maximum.reduce(bits, axis=None)) < plan.high_bits:
        return None
    return np.maximum(bits, plan.low, out=bits)


def column_block_sum(w: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The exact block products ``w[b] @ codes[b]`` (``w (n_blocks, M, k)``, C-contiguous ``codes
    (n_blocks, k, R)``) summed in block order in float32 ``(M, R)``: large ones block by block on the
    backend (measured on a CIFAR-sized first convolution, 2 blocks of 32 x 16 against 16384 columns:
    numpy's BLAS 0.57 ms, onnxruntime 0.22 ms), else one numpy matmul and ``sum_in_order``."""
    n_blocks, m, k = w.shape
    if n_blocks > 1 and codes.flags.c_contiguous and _on_backend(w, codes, m * k * codes.shape[2]):
        out = _backend.matmul(w[0], codes[0])  # type: ignore[union-attr]
        for b in range(1, n_blocks):
            out += _backend.matmul(w[b], codes[b])  # type: ignore[union-attr]
        return out
    return sum_in_order(np.matmul(w, codes))


def _with_bias(out: np.ndarray, plan: DensePlan) -> np.ndarray:
    """The block-order sum ``out (M, R)`` with the bias added last."""
    bias, tiles = plan.bias, plan.tiles
    if bias is not None:
        out += small_tiled(tiles, "bias", bias, out.shape)
    return out


def bfp_dense_columns(
    xt: np.ndarray, w: tuple[np.ndarray, int, int], bias: np.ndarray | None, params: dict
) -> np.ndarray | None:
    """``bfp_dense_run`` with the plan made here (see there); ``w`` as ``transposed_weights`` gives it."""
    k = int(params["block_size"])
    if xt.ndim != 2 or xt.shape[0] % k or xt.shape[0] // k != w[0].shape[0] or w[0].shape[2] != k:
        raise ValueError(f"inputs of shape {xt.shape} do not match the weights' blocks {w[0].shape[::2]}")
    plan = bfp_dense_plan(w, bias, params)
    return None if plan is None else bfp_dense_run(xt, plan)


def folded_in_range(x_low: int, x_high: int, w_low: int, w_high: int, params: dict) -> bool:
    """Whether every block product of folded inputs and weights with these exponent bounds is a normal
    float32 and no block result comes near overflow (``bfp_dot_folded``'s condition)."""
    m, k = int(params["mantissa_bits"]), int(params["block_size"])
    return x_low + w_low - 2 * (m - 1) >= -126 and x_high + w_high + 2 + int(np.log2(k)) + 1 <= 126


def bfp_dot_folded(
    x: tuple[np.ndarray, int, int],
    w: tuple[np.ndarray, int, int],
    bias: np.ndarray | None,
    params: dict,
    chunk_elements: int = 1 << 18,
) -> np.ndarray | None:
    """``bfp_dot`` from ``bfp_folded_inputs`` and ``bfp_fold_weights``, or None when some block result
    could leave float32's normal range. Each block's float32 product of the folded values is the exact
    ``sum * 2**(E_x + E_w - 2(m-1))`` (products and partial sums are multiples of a normal power of two
    below ``2**24`` of it), so it equals the rounded scaled block sum; the blocks are then accumulated
    in float32 in block order and the bias added, as ``bfp_dot_blocks`` does."""
    (x_vals, x_low, x_high), (w_vals, w_low, w_high) = x, w
    if not folded_in_range(x_low, x_high, w_low, w_high, params):
        return None
    rows, n_blocks, m_out = x_vals.shape[0], x_vals.shape[1], w_vals.shape[2]
    if n_blocks == 0:
        return None
    if x_vals.shape[2] < w_vals.shape[1]:  # one short block: the weights' padding rows meet no inputs
        w_vals = w_vals[:, : x_vals.shape[2], :]
    out = np.empty((rows, m_out), np.float32)
    if _backend is not None:  # fewer, larger calls (measured: ~1000-row chunks of a CIFAR-sized layer)
        chunk_elements *= 4
    step = max(1, chunk_elements // max(1, n_blocks * m_out))
    for start in range(0, rows, step):
        acc = out[start : start + step]
        if n_blocks == 1:  # one block: its exact sums are the result
            np.matmul(x_vals[start : start + step, 0], w_vals[0], out=acc)
            continue
        partial = block_products(x_vals[start : start + step], w_vals)  # (nb, r, M), exact
        sum_in_order(partial, acc)
    if bias is not None:
        _add_rows(out, np.asarray(bias, np.float32))
    return out


def sum_in_order(terms: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``((terms[0] + terms[1]) + terms[2]) + ...`` elementwise (float32 in that order) for C-contiguous
    ``terms (n, ...)``, into ``out`` (a new array when None). One ``np.add.reduce`` over axis 0 when each
    term has at least two elements: numpy then copies ``terms[0]`` and adds the others in turn, one
    elementwise pass per term (its pairwise summation applies only when the reduced axis is the inner
    loop, i.e. when each term is a single element); else the additions one by one, as also for two terms
    into a new array (measured: one ``np.add`` beats a reduction there; from 3 blocks of 64 x 64 the
    reduction wins)."""
    n = terms.shape[0]
    if n > 1 and terms[0].size >= 2 and terms.flags.c_contiguous and (n > 2 or out is not None):
        return np.add.reduce(terms, axis=0, out=out)
    if out is None:
        out, rest = (np.add(terms[0], terms[1]), terms[2:]) if n > 1 else (terms[0].copy(), terms[1:])
    else:
        np.copyto(out, terms[0])
        rest = terms[1:]
    for term in rest:
        out += term
    return out


def rows_op(op: np.ufunc, out: np.ndarray, row: np.ndarray) -> None:
    """``op(out, row, out=out)`` for ``out (R, M)`` and ``row (M,)``: with short rows over groups of rows
    and the row tiled (the same float operations; numpy's broadcasting over a short last axis is slow)."""
    rows, m = out.shape
    group = 256 // m if 0 < m < 64 and rows * m >= 8192 else 1
    while group > 1 and rows % group:
        group //= 2
    if group > 1 and out.flags.c_contiguous and np.shape(row) == (m,):
        flat = out.reshape(rows // group, group * m)
        op(flat, np.tile(row.astype(out.dtype, copy=False), group), out=flat)
    else:
        op(out, row, out=out)


TILE_MAX_ELEMENTS = 1 << 16  # tiled vectors kept for small results only (where broadcasting costs most)


def tiled(cache: dict, key: object, vector: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``vector`` broadcast to ``shape`` as a whole read-only array, kept in ``cache`` under ``(key,
    shape)`` (a few batch sizes): on small arrays a same-shape operation costs about half a broadcasting
    one, with the same float operations."""
    tile = cache.get((key, shape))
    if tile is None:
        tile = np.ascontiguousarray(np.broadcast_to(vector, shape))
        tile.flags.writeable = False
        if len(cache) < 16:
            cache[(key, shape)] = tile
    return tile


def small_tiled(cache: dict, key: object, vector: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``tiled`` for shapes of up to ``TILE_MAX_ELEMENTS`` elements, else ``vector`` itself (an operation
    broadcasts it: the same float operations)."""
    return tiled(cache, key, vector, shape) if math.prod(shape) <= TILE_MAX_ELEMENTS else vector


def _add_rows(out: np.ndarray, row: np.ndarray) -> None:
    """``out += row`` (``rows_op``)."""
    rows_op(np.add, out, row)


RELU_CLIP_ELEMENTS = 1 << 14  # relu_values and relu_in_place clip from this size, else np.maximum(y, 0)


def relu_values(x: np.ndarray) -> np.ndarray:
    """ReLU: ``clip`` on large float arrays (numpy's fast pass; NaN stays NaN, -0.0 stays -0.0), else
    ``maximum`` (-0.0 becomes 0.0)."""
    if x.dtype.kind == "f" and x.size >= RELU_CLIP_ELEMENTS:
        return np.clip(x, x.dtype.type(0), x.dtype.type(np.inf))
    return np.maximum(x, 0)


def relu_in_place(x: np.ndarray, size: int | None = None) -> None:
    """``relu_values``' arithmetic on a float array, in place, chosen as for ``size`` elements (default:
    the array's own; a result computed with extra elements keeps its picked part's choice)."""
    if (x.size if size is None else size) >= RELU_CLIP_ELEMENTS:
        np.clip(x, x.dtype.type(0), x.dtype.type(np.inf), out=x)
    else:
        np.maximum(x, x.dtype.type(0), out=x)


def bfp_quantize_channels(x: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """BFP mantissas (float32, NCHW) and exponents ``(N, C/k, H, W)`` of a float32 NCHW tensor blocked
    along its channels, or None unless ``C`` is a multiple of ``k`` (and the float32 quantizer applies).
    With ``C % k == 0`` every block of a convolution's ``(kh, kw, C)`` patch is one pixel's channel
    block, so quantizing the tensor once and then taking patches gives the per-patch codes (padding:
    zero mantissas with the all-zero block's exponent)."""
    n, c, h, w = x.shape
    k = int(params["block_size"])
    if c % k or x.dtype != np.float32:
        return None
    fast = _bfp_float32(x.transpose(0, 2, 3, 1).reshape(-1, c), params)
    if fast is None:
        return None
    mant, exps = fast
    return mant.reshape(n, h, w, c).transpose(0, 3, 1, 2), exps.reshape(n, h, w, c // k).transpose(0, 3, 1, 2)


def fixed_codes_of_scaled(t: np.ndarray, fmt: dict) -> np.ndarray:
    """Codes (float64, exact integers) of the fixed type ``fmt`` for ``t = value * 2**F`` given as float64
    multiples of a power of two with ``|t| < 2**51`` (sums from the exact accumulators): the rounding
    and overflow modes in a few exact float64 operations, equal to ``fixed.quantize``."""
    rounding, overflow = fmt["rounding"], fmt["overflow"]
    if rounding == "AP_TRN":
        code = np.floor(t)
    elif rounding == "AP_TRN_ZERO":
        code = np.trunc(t)
    elif rounding == "AP_RND_CONV":
        code = np.rint(t)
    elif rounding == "AP_RND":
        code = np.floor(t + 0.5)
    elif rounding == "AP_RND_MIN_INF":
        code = np.ceil(t - 0.5)
    elif rounding == "AP_RND_INF":
        code = np.copysign(np.floor(np.abs(t) + 0.5), t)
    else:  # AP_RND_ZERO
        code = np.copysign(np.ceil(np.abs(t) - 0.5), t)
    low, high = fixed.code_range(int(fmt["width"]), fmt.get("signed", True), overflow)
    in_range = code.size == 0 or (code.min() >= low and code.max() <= high)
    if in_range:
        pass
    elif overflow == "AP_WRAP":
        modulus = float(1 << int(fmt["width"]))
        code -= np.floor((code - low) / modulus) * modulus
    elif overflow == "AP_SAT_ZERO":
        code[(code < low) | (code > high)] = 0
    else:
        np.maximum(code, low, out=code)
        np.minimum(code, high, out=code)
    code += 0.0  # -0.0 -> 0.0
    return code


def bfp_folded_channels(x: np.ndarray, params: dict) -> tuple[np.ndarray, int, int] | None:
    """``bfp_folded_inputs`` of a float32 NCHW tensor blocked along its channels (``C % k == 0``: each
    pixel's channel blocks), computed in NCHW (block maxima over a middle axis: long inner loops), the
    values NCHW: the largest ``|x|`` bits per block give ``E``; ``x * 2**(m-1-E)`` rounded (``rint`` /
    ``trunc``), clipped to ``±(2**m - 1)`` and scaled by ``2**(E-(m-1))``, all exact. None unless every
    nonzero block's exponent is within ``-100..min(e_max - 1, 100)`` (no exponent clipped) and some
    block is nonzero, or ``m > 23`` (the other paths decide)."""
    n, c, h, w = x.shape
    k, m, e_bits = int(params["block_size"]), int(params["mantissa_bits"]), int(params["exponent_bits"])
    if x.dtype != np.float32 or c % k or m > 23 or x.size == 0:
        return None
    _, e_max = bfp.exponent_range(e_bits)
    blocks = np.ascontiguousarray(x).reshape(n, c // k, k, h * w)
    bits = np.maximum.reduce(np.bitwise_and(blocks.view(np.uint32), _MAGNITUDE_BITS), axis=2, keepdims=True)
    nonzero = bits[bits != 0]
    if nonzero.size == 0:
        return None
    low, high = int(nonzero.min()) >> 23, int(nonzero.max()) >> 23  # biased exponents (inf/NaN: 255)
    if low - 127 < -100 or high - 127 > min(e_max - 1, 100):
        return None
    bits[bits == 0] = low << 23  # all-zero blocks: any exponent gives zeros
    exps = np.bitwise_and(bits, _EXPONENT_BITS)
    scaled = np.multiply(blocks, np.subtract(np.uint32((254 + m - 1) << 23), exps).view(np.float32))
    if params.get("rounding", "nearest_even") == "nearest_even":
        np.rint(scaled, out=scaled)
    else:
        np.trunc(scaled, out=scaled)
    top = np.float32((1 << m) - 1)
    _CLIP(scaled, -top, top, out=scaled)
    scaled *= np.subtract(exps, np.uint32((m - 1) << 23)).view(np.float32)  # 2**(E-(m-1)), normal
    return scaled.reshape(n, c, h, w), low - 127, high - 127
