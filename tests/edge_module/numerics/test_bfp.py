"""Block floating point (MSFP) kernels against a slow reference written from the definition."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edge_module.numerics import bfp


def reference_block(values: list[float], m: int, e: int, rounding: str) -> tuple[list[int], int]:
    """One block: shared exponent = largest floor(log2|x|), clipped to ±(2**(e-1)-1); sign-magnitude
    mantissas of m bits at step 2**(E-m+1), rounded (half to even or toward zero) and saturated."""
    top = 2 ** (e - 1) - 1
    exps = [math.frexp(v)[1] - 1 for v in values if v != 0]
    shared = min(max(max(exps, default=-top), -top), top)
    step = Fraction(2) ** (shared - m + 1)
    mantissas = []
    for v in values:
        r = abs(Fraction(v)) / step
        mag = round(r) if rounding == "nearest_even" else math.floor(r)  # round() on a Fraction: half to even
        mag = min(mag, 2**m - 1)
        mantissas.append(-mag if v < 0 else mag)
    return mantissas, shared


def reference(x: np.ndarray, k: int, m: int, e: int, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a 2-d array, blocked along axis 1."""
    mants, exps = np.zeros(x.shape, np.int64), []
    for row, values in enumerate(x.tolist()):
        row_exps = []
        for start in range(0, len(values), k):
            mant, shared = reference_block(values[start : start + k], m, e, rounding)
            mants[row, start : start + k] = mant
            row_exps.append(shared)
        exps.append(row_exps)
    return mants, np.array(exps)


@pytest.mark.parametrize("rounding", ["nearest_even", "truncate"])
@pytest.mark.parametrize(("k", "m", "e"), [(16, 3, 8), (16, 7, 8), (4, 2, 3), (5, 1, 4), (1, 4, 8), (128, 5, 5)])
def test_matches_the_reference(k: int, m: int, e: int, rounding: str) -> None:
    rng = np.random.default_rng(k * 100 + m)
    n = 3 * k + 3  # a partial last block
    x = rng.normal(0, 1, (20, n)) * np.ldexp(1.0, rng.integers(-12, 12, (20, 1)))
    x[0] = 0.0
    x[1, : n // 2] = 0.0
    x[2] = np.ldexp(rng.integers(-(2**m), 2**m, n) + 0.5, -m)  # ties of the block's step
    x[3] = np.ldexp(x[3], 200)  # beyond the exponent range of e bits
    x[4] = np.ldexp(x[4], -200)
    x[5, ::3] = 5e-324
    mants, exps = bfp.quantize(x, 1, k, m, e, rounding)
    ref_m, ref_e = reference(x, k, m, e, rounding)
    assert mants.dtype == np.int32 and exps.dtype == np.int16
    assert np.array_equal(mants, ref_m) and np.array_equal(exps, ref_e)
    values = bfp.dequantize(mants, exps, 1, k, m)
    steps = np.repeat(np.ldexp(1.0, ref_e - m + 1), k, axis=1)[:, :n]
    assert np.array_equal(values, ref_m * steps)
    assert np.array_equal(bfp.fake_quantize(x, 1, k, m, e, rounding), values)


def test_shared_exponent_and_mantissa_bits_per_block() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (64, 256)) * np.ldexp(1.0, rng.integers(-8, 8, (64, 16))).repeat(16, axis=1)
    mants, exps = bfp.quantize(x, axis=1, block_size=16, mantissa_bits=3)
    assert exps.shape == (64, 16)
    expected = np.floor(np.log2(np.abs(x).reshape(64, 16, 16).max(axis=2)))
    assert np.array_equal(exps, expected)
    block_max = np.abs(mants).reshape(64, 16, 16).max(axis=2)
    assert block_max.max() <= 7 and block_max.min() >= 4  # the block maximum keeps all 3 mantissa bits
    # relative error of each block maximum <= 2**-m, absolute error of every value <= half a step
    y = bfp.fake_quantize(x, axis=1, block_size=16, mantissa_bits=3)
    step = np.ldexp(1.0, exps.astype(int) - 2).repeat(16, axis=1)
    saturated = np.abs(mants) == 7
    assert np.all((np.abs(y - x) <= step / 2) | saturated)
    assert np.all(np.abs(y - x) <= step)


def test_ties_rounding_and_saturation() -> None:
    # block max 4 <= |x| < 8: E=2, m=3: step 1
    x = np.array([[4.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.9, -2.9, 7.4, 7.5, -7.9]])
    assert bfp.quantize(x, 1, 12, 3)[0].tolist() == [[4, 0, 2, 2, 0, -2, -2, 3, -3, 7, 7, -7]]
    assert bfp.quantize(x, 1, 12, 3, rounding="truncate")[0].tolist() == [[4, 0, 1, 2, 0, -1, -2, 2, -2, 7, 7, -7]]
    assert bfp.quantize(x, 1, 12, 3)[1].tolist() == [[2]]
    huge = np.array([1e300, -1e300, 1.0])  # exponent clipped at 127: magnitudes saturate
    mants, exps = bfp.quantize(huge, -1, 16, 7)
    assert exps.tolist() == [127] and mants.tolist() == [127, -127, 0]
    f32 = np.array([np.finfo(np.float32).max, 2.0**104, 1.0], np.float32)  # 24 significant bits; step 2**104
    assert np.array_equal(bfp.fake_quantize(f32, mantissa_bits=24), [f32[0], f32[1], 0.0])
    assert bfp.quantize(f32, mantissa_bits=23)[0].tolist() == [2**23 - 1, 0, 0]  # the maximum rounds up: saturates


def test_zeros_and_tiny_values() -> None:
    mants, exps = bfp.quantize(np.zeros((2, 20)), axis=1)
    assert not mants.any() and exps.tolist() == [[-127, -127]] * 2
    assert np.array_equal(bfp.fake_quantize(np.array([0.0, -0.0])), [0.0, 0.0])
    tiny = np.array([5e-324, -5e-324, 1e-310, 2.0**-127, 2.0**-130])
    mants, exps = bfp.quantize(tiny, mantissa_bits=7)
    assert exps.tolist() == [-127] and mants.tolist() == [0, 0, 0, 64, 8]
    assert bfp.quantize(np.array([1.0, 1e-3, -1e-3]), mantissa_bits=7)[0].tolist() == [64, 0, 0]  # below the step


def test_idempotent_and_dtype() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (8, 100)).astype(np.float32)
    for m in (3, 7):
        once = bfp.fake_quantize(x, axis=1, mantissa_bits=m)
        assert once.dtype == np.float32
        assert np.array_equal(bfp.fake_quantize(once, axis=1, mantissa_bits=m), once)
        assert np.array_equal(once, bfp.fake_quantize(x.astype(np.float64), axis=1, mantissa_bits=m))


def test_block_axis() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (4, 37, 3))
    along1 = bfp.fake_quantize(x, axis=1, mantissa_bits=3)
    moved = bfp.fake_quantize(np.moveaxis(x, 1, -1), axis=-1, mantissa_bits=3)
    assert np.array_equal(along1, np.moveaxis(moved, -1, 1))
    mants, exps = bfp.quantize(x, axis=1, mantissa_bits=3)
    assert mants.shape == x.shape and exps.shape == (4, 3, 3)
    # blocks never mix values across other axes, nor across block boundaries
    y = x.copy()
    y[0, 0, 0] = 1000.0
    changed = bfp.fake_quantize(y, axis=1, mantissa_bits=3) != along1
    assert (
        changed[0, :16, 0].any()
        and not changed[0, 16:, 0].any()
        and not changed[1:].any()
        and not changed[..., 1:].any()
    )
    assert bfp.fake_quantize(np.float64(3.3), mantissa_bits=3) == 3.5


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"w holds 1 NaN/inf value\(s\) \(first nan at index \(1, 2\)\)"):
        bfp.quantize(np.array([[1.0, 2, 3], [4, 5, np.nan]]), name="w")
    with pytest.raises(ValueError, match="mantissa bits m=0"):
        bfp.quantize([1.0], mantissa_bits=0)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        bfp.quantize(np.ones((2, 2)), axis=2)
    with pytest.raises(ValueError, match="use one of nearest_even, truncate"):
        bfp.quantize([1.0], rounding="up")


@pytest.mark.parametrize("m", [3, 7, 23])
def test_float32_output_is_exact_with_8_exponent_bits(m: int) -> None:
    rng = np.random.default_rng(m)
    for scale in (-140, -126, 0, 100, 126):
        x = np.ldexp(rng.normal(size=(4, 64)), scale)
        wide = bfp.fake_quantize(x, 1, 16, m, 8, dtype=np.float64)
        assert np.array_equal(bfp.fake_quantize(x, 1, 16, m, 8, dtype=np.float32).astype(np.float64), wide)
