"""ap_fixed kernels against a slow reference written from the HLS spec (exact rationals), on edge cases,
exhaustively on small widths, and against qonnx's Quant where the two define the same operation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edge_module.numerics import fixed

MODES = [(q, o) for q in fixed.ROUNDING_MODES for o in fixed.OVERFLOW_MODES]


def reference(x: float, w: int, i: int, q: str, o: str, signed: bool = True) -> int:
    """ap_[u]fixed<w,i,q,o> from UG1399's definitions, one value at a time in exact arithmetic."""
    v = Fraction(x) * Fraction(2) ** (w - i)
    fl = math.floor(v)
    frac = v - fl
    if q == "AP_TRN":
        c = fl
    elif q == "AP_TRN_ZERO":
        c = math.trunc(v)
    elif frac != Fraction(1, 2):
        c = fl + (frac > Fraction(1, 2))
    else:  # an exact tie
        c = {
            "AP_RND": fl + 1,
            "AP_RND_ZERO": fl + (v < 0),
            "AP_RND_MIN_INF": fl,
            "AP_RND_INF": fl + (v > 0),
            "AP_RND_CONV": fl + (fl % 2),
        }[q]
    lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if signed else (0, (1 << w) - 1)
    if o == "AP_WRAP":
        return (c - lo) % (1 << w) + lo
    if o == "AP_SAT_SYM" and signed:
        lo = -hi
    if lo <= c <= hi:
        return c
    return 0 if o == "AP_SAT_ZERO" else (hi if c > hi else lo)


def check(values: np.ndarray, w: int, i: int, q: str, o: str, signed: bool = True) -> None:
    ours = fixed.quantize(values, w, i, q, o, signed)
    assert ours.dtype == np.int64 and ours.shape == values.shape
    expected = [reference(float(v), w, i, q, o, signed) for v in values]
    assert ours.tolist() == expected, (w, i, q, o, signed)


@pytest.mark.parametrize(("q", "o"), MODES)
@pytest.mark.parametrize("signed", [True, False])
def test_exhaustive_on_ap_fixed_6_3(q: str, o: str, signed: bool) -> None:
    # every code of ap_fixed<6,3> (LSB 1/8) over twice its range, at quarter-LSB steps: exact codes, ties between
    # codes and the points around them, plus random floats.
    grid = np.arange(-128, 129) / 32.0
    rng = np.random.default_rng(6)
    values = np.concatenate([grid, rng.uniform(-10, 10, 400), rng.normal(0, 0.05, 100)])
    check(values, 6, 3, q, o, signed)


@pytest.mark.parametrize(("w", "i"), [(1, 1), (4, 0), (4, -2), (4, 7), (8, 8), (9, 4)])
def test_other_small_shapes_against_the_reference(w: int, i: int) -> None:
    lsb = 2.0 ** (i - w)
    values = np.arange(-(2 ** (w + 2)), 2 ** (w + 2) + 1) * lsb / 4
    for q, o in MODES:
        for signed in (True, False):
            if (w, o, signed) == (1, "AP_SAT_SYM", True):  # refused: no symmetric range in one signed bit
                with pytest.raises(ValueError, match="AP_SAT_SYM needs a signed width W >= 2"):
                    fixed.quantize(values, w, i, q, o, signed)
                continue
            check(values, w, i, q, o, signed)


def test_zeros_and_values_below_the_lsb() -> None:
    tiny = np.array([0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, 2.0**-40, -(2.0**-40)])
    assert fixed.quantize(tiny, 16, 6, "AP_TRN").tolist() == [0, 0, 0, -1, 0, -1, 0, -1]  # floor
    assert fixed.quantize(tiny, 16, 6, "AP_TRN_ZERO").tolist() == [0] * 8
    for q in ("AP_RND", "AP_RND_ZERO", "AP_RND_INF", "AP_RND_MIN_INF", "AP_RND_CONV"):
        assert fixed.quantize(tiny, 16, 6, q, "AP_SAT").tolist() == [0] * 8, q
    assert fixed.dequantize(fixed.quantize(-0.0, 8, 4), 8, 4) == 0.0


def test_ties_in_every_rounding_mode() -> None:
    lsb = 2.0**-10  # ap_fixed<16,6>
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5]) * lsb
    expected = {
        "AP_RND": [1, 2, 3, 0, -1, -2],  # toward +inf
        "AP_RND_ZERO": [0, 1, 2, 0, -1, -2],
        "AP_RND_MIN_INF": [0, 1, 2, -1, -2, -3],
        "AP_RND_INF": [1, 2, 3, -1, -2, -3],  # away from zero
        "AP_RND_CONV": [0, 2, 2, 0, -2, -2],  # to even
        "AP_TRN": [0, 1, 2, -1, -2, -3],
        "AP_TRN_ZERO": [0, 1, 2, 0, -1, -2],
    }
    for q, codes in expected.items():
        assert fixed.quantize(ties, 16, 6, q, "AP_SAT").tolist() == codes, q
    # just off a tie, every nearest mode agrees
    off = np.array([0.5 + 2.0**-30, -0.5 - 2.0**-30]) * lsb
    for q in ("AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV"):
        assert fixed.quantize(off, 16, 6, q).tolist() == [1, -1], q


def test_largest_magnitude_and_just_beyond() -> None:
    w, i = 16, 6
    top, lsb = 32 - 2.0**-10, 2.0**-10
    values = np.array([top, top + lsb, top + 3 * lsb, -32.0, -32.0 - lsb, 1e9, -1e9])

    def codes(o: str, q: str = "AP_TRN") -> list[int]:
        return fixed.quantize(values, w, i, q, o).tolist()

    big = [reference(1e9, w, i, "AP_TRN", "AP_WRAP"), reference(-1e9, w, i, "AP_TRN", "AP_WRAP")]
    assert codes("AP_WRAP") == [32767, -32768, -32766, -32768, 32767, *big]
    assert codes("AP_SAT") == [32767, 32767, 32767, -32768, -32768, 32767, -32768]
    assert codes("AP_SAT_ZERO") == [32767, 0, 0, -32768, 0, 0, 0]
    assert codes("AP_SAT_SYM") == [32767, 32767, 32767, -32767, -32767, 32767, -32767]
    # rounding up out of range: the carry overflows
    assert fixed.quantize([top + lsb / 2], w, i, "AP_RND", "AP_WRAP").tolist() == [-32768]
    assert fixed.quantize([top + lsb / 2], w, i, "AP_RND", "AP_SAT").tolist() == [32767]
    f = np.array([-1.0, 1e300, -1e300, 2.0**62, -(2.0**62)])
    assert fixed.quantize(f, 8, 0, "AP_TRN", "AP_SAT", signed=False).tolist() == [0, 255, 0, 255, 0]
    wrapped = [reference(v, 8, 0, "AP_TRN", "AP_WRAP", False) for v in f]
    assert fixed.quantize(f, 8, 0, "AP_TRN", "AP_WRAP", signed=False).tolist() == wrapped


def test_widest_type_and_huge_values() -> None:
    rng = np.random.default_rng(62)
    values = np.concatenate([np.ldexp(rng.uniform(-1, 1, 300), rng.integers(-70, 90, 300)), [2.0**31, -(2.0**31)]])
    for q, o in MODES:
        check(values, 62, 31, q, o)
        check(values, 40, -5, q, o, signed=False)


def test_dequantize_and_fake_quantize() -> None:
    codes = np.arange(-32, 32)
    assert fixed.dequantize(codes, 6, 3).tolist() == [c / 8 for c in codes]
    x = np.linspace(-5, 5, 101, dtype=np.float32)
    once = fixed.fake_quantize(x, 6, 3, "AP_RND_CONV", "AP_SAT")
    assert once.dtype == np.float32
    assert np.array_equal(fixed.fake_quantize(once, 6, 3, "AP_RND_CONV", "AP_SAT"), once)  # idempotent
    assert np.all(np.abs(once[np.abs(x) < 3.8] - x[np.abs(x) < 3.8]) <= 1 / 16)
    assert fixed.fake_quantize([1, 2, 3], 8, 4).dtype == np.float64


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused_naming_the_tensor(bad: float) -> None:
    with pytest.raises(ValueError, match=r"conv1\.W holds 1 NaN/inf .*index \(1,\)"):
        fixed.quantize([1.0, bad, 2.0], 16, 6, name="conv1.W")


def test_bad_parameters_say_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"width W=0 .* 1\.\.62"):
        fixed.quantize([1.0], 0, 0)
    with pytest.raises(ValueError, match=r"I=1001 are not supported: use an integer -1000\.\.1000"):
        fixed.quantize([1.0], 8, 1001)
    with pytest.raises(ValueError, match="use one of AP_TRN"):
        fixed.quantize([1.0], 8, 3, "AP_ROUND")
    with pytest.raises(ValueError, match="AP_WRAP, AP_SAT"):
        fixed.quantize([1.0], 8, 3, "AP_RND", "AP_CLIP")


def test_matches_qonnx_quant_where_it_defines_the_same_operation() -> None:
    quant = pytest.importorskip("qonnx.custom_op.general.quant").quant
    rng = np.random.default_rng(1)
    w, i = 8, 3
    values = np.concatenate([np.arange(-1200, 1200) / 64.0, rng.normal(0, 6, 2000)])  # quarter-LSB steps: ties
    scale = np.float64(2.0 ** (i - w))
    for mode, q in (("ROUND", "AP_RND_CONV"), ("FLOOR", "AP_TRN"), ("HALF_UP", "AP_RND_INF"), ("DOWN", "AP_TRN_ZERO")):
        for signed, narrow, o in ((True, False, "AP_SAT"), (True, True, "AP_SAT_SYM"), (False, False, "AP_SAT")):
            theirs = quant(values, scale, np.float64(0), np.float64(w), signed, narrow, mode)
            ours = fixed.fake_quantize(values, w, i, q, o, signed)
            assert np.array_equal(ours, theirs), (mode, signed, narrow)


def test_the_float_path_agrees_with_the_integer_path() -> None:
    # quantize() rounds in float64 where that is exact (W <= 52, |x| * 2**F < 2**52, no underflow) and uses
    # the int64 mantissa path otherwise; on values near ties at every scale, both agree.
    rng = np.random.default_rng(7)
    base = np.ldexp(rng.integers(-(2**20), 2**20, 4000) + rng.choice([0.5, 0.25, 0.0, 0.5 - 2.0**-30], 4000), -10)
    nudged = np.concatenate([base, np.nextafter(base, np.inf), np.nextafter(base, -np.inf)])
    values = np.concatenate([nudged, np.ldexp(rng.uniform(-1, 1, 2000), rng.integers(-1070, 1020, 2000))])
    used_fast = 0
    for w, i in ((16, 6), (8, 3), (24, -4), (30, 40), (52, 31), (20, 1000), (40, -1000), (62, 31)):
        with np.errstate(over="ignore"):
            scaled = np.abs(np.ldexp(values, w - i))
        for part in (values, values[(scaled < 2.0**52) & ((values == 0) | (scaled > 0))]):
            for q, o in MODES:
                for signed in (True, False):
                    exact = fixed._quantize_exact(part, w, i, q, o, signed)
                    fast = fixed._fast_codes(part, w, i, q, o, signed)
                    if fast is not None:
                        used_fast += 1
                        assert np.array_equal(fast, exact), (w, i, q, o, signed)
                    assert np.array_equal(fixed.quantize(part, w, i, q, o, signed), exact)
                    fq = fixed.fake_quantize(part, w, i, q, o, signed)
                    assert np.array_equal(fq, fixed.dequantize(exact, w, i)) and not np.signbit(fq[fq == 0]).any()
    assert used_fast >= 6 * 56
