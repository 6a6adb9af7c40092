"""Fixed point ``ap_fixed<W,I,Q,O>`` / ``ap_ufixed<W,I,Q,O>`` exactly as Vivado/Vitis HLS ap_types define it.

A value is an integer code ``c`` (``W`` bits, two's complement when signed) times ``2**-(W-I)``.
Converting a real ``x`` first quantizes ``x * 2**(W-I)`` to an integer with the rounding mode, then
handles a code outside the ``W``-bit range with the overflow mode (ap_fixed_base.h: quantization_adjust,
then overflow_adjust):

rounding: ``AP_TRN`` floor; ``AP_TRN_ZERO`` toward zero; ``AP_RND`` nearest, ties toward +inf;
``AP_RND_ZERO`` ties toward zero; ``AP_RND_MIN_INF`` ties toward -inf; ``AP_RND_INF`` ties away from
zero; ``AP_RND_CONV`` ties to even.
overflow: ``AP_WRAP`` keeps the low ``W`` bits; ``AP_SAT`` clips to [min, max]; ``AP_SAT_ZERO`` sets
out-of-range values to 0; ``AP_SAT_SYM`` clips to [-max, max] (signed: the code ``min`` itself also
becomes ``-max``).

The kernels work on the exact binary value of each float64 (its 53-bit integer mantissa and
exponent, from ``np.frexp``) with int64 arithmetic, so every finite double converts exactly, including
subnormals and values far outside the range. ``W`` is limited to 1..62.
"""

from __future__ import annotations

import numpy as np

from ._checks import finite_float64

ROUNDING_MODES = ("AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_INF", "AP_RND_MIN_INF", "AP_RND_CONV")
OVERFLOW_MODES = ("AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM")
MAX_WIDTH = 62


def check_params(width: int, integer: int, rounding: str = "AP_TRN", overflow: str = "AP_WRAP") -> None:
    """ValueError saying what is wrong with a fixed-point type and what is accepted."""
    if isinstance(width, bool) or not isinstance(width, int | np.integer) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"fixed point width W={width!r} is not supported: use an integer 1..{MAX_WIDTH}")
    if isinstance(integer, bool) or not isinstance(integer, int | np.integer):
        raise ValueError(f"fixed point integer bits I={integer!r} must be an integer (it may be negative or > W)")
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}: use one of {', '.join(ROUNDING_MODES)}")
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"unknown overflow mode {overflow!r}: use one of {', '.join(OVERFLOW_MODES)}")


def code_range(width: int, signed: bool = True, overflow: str = "AP_SAT") -> tuple[int, int]:
    """The smallest and largest code a conversion can produce (``AP_SAT_SYM`` excludes ``-2**(W-1)``)."""
    if not signed:
        return 0, (1 << width) - 1
    high = (1 << (width - 1)) - 1
    return (-high if overflow == "AP_SAT_SYM" else -high - 1), high


def _round_shifted(mantissa: np.ndarray, shift: np.ndarray, rounding: str) -> np.ndarray:
    """``round(mantissa * 2**-shift)`` for ``shift >= 1`` with the HLS rounding mode (int64, exact)."""
    k = np.minimum(shift, 62)
    floor = mantissa >> k  # arithmetic shift: floor toward -inf
    if rounding == "AP_TRN":
        return floor
    rest = mantissa - (floor << k)  # dropped bits, 0 <= rest < 2**k
    half = np.left_shift(np.int64(1), k - 1)
    qb = rest >= half  # first dropped bit
    r = (rest & (half - 1)) != 0  # any later dropped bit
    negative = mantissa < 0
    if rounding == "AP_TRN_ZERO":
        increment = negative & (rest != 0)
    elif rounding == "AP_RND":
        increment = qb
    elif rounding == "AP_RND_ZERO":
        increment = qb & (negative | r)
    elif rounding == "AP_RND_MIN_INF":
        increment = qb & r
    elif rounding == "AP_RND_INF":
        increment = qb & (~negative | r)
    else:  # AP_RND_CONV
        increment = qb & (((floor & 1) != 0) | r)
    return floor + increment


def quantize(
    x: object,
    width: int,
    integer: int,
    rounding: str = "AP_TRN",
    overflow: str = "AP_WRAP",
    signed: bool = True,
    name: str = "tensor",
) -> np.ndarray:
    """Codes (int64) of ``ap_[u]fixed<width, integer, rounding, overflow>`` for the floats in ``x``.

    The defaults are ap_fixed's own (``AP_TRN``, ``AP_WRAP``). ValueError naming ``name`` on NaN/inf.
    """
    check_params(width, integer, rounding, overflow)
    values = finite_float64(x, name)
    code, exact_needed = _round_fast(values, width - integer, rounding)
    code = _overflow(code, width, signed, overflow)
    if exact_needed.any():
        code[exact_needed] = _quantize_exact(values[exact_needed], width, integer, rounding, overflow, signed)
    return code


def _round_fast(values: np.ndarray, frac_bits: int, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """Rounded codes in float64 arithmetic, exact where it can be: on magnitudes ``a = |x| * 2**F``,
    ``floor(a)`` and ``a - floor(a)`` are exact below 2**62. Also returns where it cannot be (huge codes,
    or nonzero values whose scaled value underflowed to 0), for the exact path."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf (huge |x| * 2**F) goes to the exact path
        v = np.ldexp(values, frac_bits)
        a = np.abs(v)
        floor = np.floor(a)
        frac = a - floor
    negative = v < 0
    if rounding == "AP_TRN":  # floor of the signed value
        increment = negative & (frac > 0)
    elif rounding == "AP_TRN_ZERO":
        increment = np.zeros(a.shape, bool)
    else:
        if rounding == "AP_RND":  # toward +inf: up in magnitude when positive
            ties_up = ~negative
        elif rounding == "AP_RND_ZERO":
            ties_up = False
        elif rounding == "AP_RND_MIN_INF":
            ties_up = negative
        elif rounding == "AP_RND_INF":
            ties_up = True
        else:  # AP_RND_CONV: up when the floor is odd
            ties_up = np.floor(floor * 0.5) * 2 != floor
        increment = (frac > 0.5) | ((frac == 0.5) & ties_up)
    exact_needed = (a >= 2.0**62) | ((v == 0) & (values != 0))
    magnitude = np.where(exact_needed, 0.0, floor + increment)
    return np.where(negative, -magnitude, magnitude).astype(np.int64), exact_needed


def _overflow(code: np.ndarray, width: int, signed: bool, overflow: str) -> np.ndarray:
    """Exact int64 codes (|code| <= 2**62) brought into the ``width``-bit range by the overflow mode."""
    if overflow == "AP_WRAP":
        modulus = np.int64(1) << width
        code = code & (modulus - 1)
        return np.where(code >= (modulus >> 1), code - modulus, code) if signed else code
    low, high = code_range(width, signed, overflow)
    if overflow == "AP_SAT_ZERO":
        return np.where((code > high) | (code < low), 0, code)
    return np.clip(code, low, high)


def _quantize_exact(
    values: np.ndarray, width: int, integer: int, rounding: str, overflow: str, signed: bool
) -> np.ndarray:
    """The same conversion on each double's integer mantissa and exponent (``np.frexp``) with int64
    arithmetic only: exact for every finite double, however large or small."""
    m, e = np.frexp(values)
    mantissa = np.ldexp(m, 53).astype(np.int64)  # exact: |mantissa| < 2**53, value = mantissa * 2**(e-53)
    shift = e.astype(np.int64) - 53 + (width - integer)  # code = mantissa * 2**shift before rounding
    up = shift >= 0
    # Right shifts round; left shifts are exact while |code| < 2**62 (shift <= 9), else surely out of range.
    small_up = up & (shift <= 9)
    code = np.where(small_up, mantissa << np.where(small_up, shift, 0), 0)
    down = ~up
    if down.any():
        code = np.where(down, _round_shifted(mantissa, np.where(down, -shift, 1), rounding), code)
    huge = up & (shift > 9) & (mantissa != 0)
    if overflow == "AP_WRAP":
        if huge.any():  # the low W bits of mantissa << shift (0 once shift >= 64)
            wide = np.left_shift(mantissa.view(np.uint64), np.where(huge & (shift < 64), shift, 0).astype(np.uint64))
            code = np.where(huge, np.where(shift < 64, wide.view(np.int64), 0), code)
        return _overflow(code, width, signed, overflow)
    # a huge code is beyond every range: replace it by a code just beyond it, of its sign
    beyond = np.int64(1) << 62
    code = np.where(huge, np.where(mantissa > 0, beyond, -beyond), code)
    return _overflow(code, width, signed, overflow)


def dequantize(codes: object, width: int, integer: int) -> np.ndarray:
    """The float64 values of fixed-point ``codes`` (exact for ``width <= 53``)."""
    check_params(width, integer)
    return np.ldexp(np.asarray(codes, dtype=np.int64).astype(np.float64), integer - width)


def fake_quantize(
    x: object,
    width: int,
    integer: int,
    rounding: str = "AP_TRN",
    overflow: str = "AP_WRAP",
    signed: bool = True,
    name: str = "tensor",
    dtype: object = None,
) -> np.ndarray:
    """``x`` converted to the fixed-point type and back, as ``dtype`` (default: ``x``'s float dtype)."""
    out = dequantize(quantize(x, width, integer, rounding, overflow, signed, name), width, integer)
    return out.astype(_out_dtype(x, dtype), copy=False)


def _out_dtype(x: object, dtype: object) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    kind = np.asarray(x).dtype
    return kind if kind.kind == "f" else np.dtype(np.float64)
