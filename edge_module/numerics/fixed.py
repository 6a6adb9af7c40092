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

Two paths give the same codes: float64 arithmetic that is exact while ``W <= 52`` and
``|x| * 2**F < 2**52`` (rounding decided on magnitudes, where ``floor`` and the fraction are exact), the
common case; otherwise the exact binary value of each float64 (its 53-bit integer mantissa and exponent,
from ``np.frexp``) with int64 arithmetic, so every finite double converts exactly, including subnormals
and values far outside the range. ``W`` is limited to 1..62 and ``I`` to -1000..1000.
"""

from __future__ import annotations

import numpy as np

from ._checks import finite_float64

ROUNDING_MODES = ("AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_INF", "AP_RND_MIN_INF", "AP_RND_CONV")
OVERFLOW_MODES = ("AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM")
MAX_WIDTH = 62


def check_params(
    width: int, integer: int, rounding: str = "AP_TRN", overflow: str = "AP_WRAP", signed: bool = True
) -> None:
    """ValueError saying what is wrong with a fixed-point type and what is accepted."""
    if isinstance(width, bool) or not isinstance(width, int | np.integer) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"fixed point width W={width!r} is not supported: use an integer 1..{MAX_WIDTH}")
    if isinstance(integer, bool) or not isinstance(integer, int | np.integer) or not -1000 <= integer <= 1000:
        raise ValueError(
            f"fixed point integer bits I={integer!r} are not supported: use an integer -1000..1000 "
            "(it may be negative or above W; the values must fit a float64)"
        )
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}: use one of {', '.join(ROUNDING_MODES)}")
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"unknown overflow mode {overflow!r}: use one of {', '.join(OVERFLOW_MODES)}")
    if signed and width == 1 and overflow == "AP_SAT_SYM":
        raise ValueError("AP_SAT_SYM needs a signed width W >= 2 (a 1-bit signed type has no symmetric range)")


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
    check_params(width, integer, rounding, overflow, signed)
    values = finite_float64(x, name)
    codes = _fast_codes(values, width, integer, rounding, overflow, signed)
    if codes is None:
        return _quantize_exact(values, width, integer, rounding, overflow, signed)
    return codes.astype(np.int64)


_FAST_LIMIT = 2.0**52  # below it, float64 holds every integer and the half-integers between them


def _fast_codes(
    values: np.ndarray, width: int, integer: int, rounding: str, overflow: str, signed: bool
) -> np.ndarray | None:
    """The codes as float64, computed with float64 arithmetic that is exact here; None where it would not
    be (``width > 52``, some ``|x| * 2**F >= 2**52``, or a nonzero ``x * 2**F`` underflowing to 0)."""
    frac_bits = width - integer
    if width > 52:
        return None
    if values.size:
        amax = max(-float(values.min()), float(values.max()))
        with np.errstate(over="ignore"):
            limit = np.ldexp(_FAST_LIMIT, -frac_bits)  # inf for very negative F: no limit
        if not amax < limit:
            return None
    v = np.ldexp(values, frac_bits)  # exact but for underflow, checked next
    if frac_bits < 0 and np.count_nonzero(v) != np.count_nonzero(values):
        return None
    if rounding == "AP_TRN":
        code = np.floor(v)
    elif rounding == "AP_TRN_ZERO":
        code = np.trunc(v)
    else:  # round to nearest on magnitudes, where floor(a) and a - floor(a) are exact
        a = np.abs(v)
        code = np.floor(a)
        frac = np.subtract(a, code, out=a)
        increment = frac > 0.5
        if rounding == "AP_RND":  # ties toward +inf: up in magnitude when positive
            increment |= (frac == 0.5) & (v > 0)
        elif rounding == "AP_RND_MIN_INF":
            increment |= (frac == 0.5) & (v < 0)
        elif rounding == "AP_RND_INF":
            increment |= frac == 0.5
        elif rounding == "AP_RND_CONV":  # ties to even: up when the floor is odd
            increment |= (frac == 0.5) & (np.floor(code * 0.5) * 2 != code)
        code += increment
        np.copysign(code, v, out=code)
    low, high = code_range(width, signed, overflow)
    if overflow == "AP_WRAP":
        modulus = float(1 << width)
        code -= np.floor((code - low) / modulus) * modulus
    elif overflow == "AP_SAT_ZERO":
        code[(code < low) | (code > high)] = 0
    else:
        np.clip(code, low, high, out=code)
    code += 0.0  # -0.0 -> 0.0
    return code


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
    check_params(width, integer, rounding, overflow, signed)
    values = finite_float64(x, name)
    codes = _fast_codes(values, width, integer, rounding, overflow, signed)
    if codes is None:
        out = dequantize(_quantize_exact(values, width, integer, rounding, overflow, signed), width, integer)
    else:
        out = np.multiply(codes, np.ldexp(1.0, integer - width), out=codes)
    return out.astype(_out_dtype(x, dtype), copy=False)


def _out_dtype(x: object, dtype: object) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    kind = np.asarray(x).dtype
    return kind if kind.kind == "f" else np.dtype(np.float64)
