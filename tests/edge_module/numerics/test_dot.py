"""The bit-accurate dot products against slow references: pure-Python integers following hls4ml's
loops (fixed), onnxruntime's QLinearMatMul (int8), a per-block Python loop (bfp)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from edge_module.numerics import bfp, dot

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _round(v: Fraction, rounding: str) -> int:
    floor = v.numerator // v.denominator
    rest = v - floor
    if rounding == "AP_TRN":
        return floor
    if rounding == "AP_TRN_ZERO":
        return floor + (1 if rest and v < 0 else 0)
    if rest != Fraction(1, 2):
        return floor + (1 if rest > Fraction(1, 2) else 0)
    if rounding == "AP_RND":
        return floor + 1
    assert rounding == "AP_RND_CONV"
    return floor + (floor & 1)


def ref_cast(v: Fraction, fmt: dict) -> int:
    """The code of ``v`` in ``fmt`` (AP_TRN/AP_TRN_ZERO/AP_RND/AP_RND_CONV; AP_WRAP/AP_SAT), pure Python."""
    code = _round(v * 2 ** (fmt["width"] - fmt["integer"]), fmt["rounding"])
    low, high = -(1 << (fmt["width"] - 1)), (1 << (fmt["width"] - 1)) - 1
    if fmt["overflow"] == "AP_SAT":
        return min(max(code, low), high)
    assert fmt["overflow"] == "AP_WRAP"
    return (code - low) % (1 << fmt["width"]) + low


def fx(width: int, integer: int, rounding: str = "AP_TRN", overflow: str = "AP_WRAP") -> dict:
    return {"kind": "fixed", "width": width, "integer": integer, "rounding": rounding, "overflow": overflow}


def ref_fixed_dense(x, x_frac, w, w_frac, b, b_frac, accum, result):
    """hls4ml's dense_latency: mult = (accum_t)(x * w); acc = (accum_t)bias; acc += mult (in input order);
    res = (res_t)acc. Without accum_t: the exact sum."""
    out = np.zeros((len(x), len(w)), np.int64)
    for r, row in enumerate(x.tolist()):
        for m, weights in enumerate(w.tolist()):
            if accum is None:
                total = Fraction(int(b[m]), 2**b_frac) + sum(
                    Fraction(a * c, 2 ** (x_frac + w_frac)) for a, c in zip(row, weights, strict=True)
                )
            else:
                scale = 2 ** (accum["width"] - accum["integer"])
                acc = ref_cast(Fraction(int(b[m]), 2**b_frac), accum)
                for a, c in zip(row, weights, strict=True):
                    product = ref_cast(Fraction(a * c, 2 ** (x_frac + w_frac)), accum)
                    acc = ref_cast(Fraction(acc + product, scale), accum)
                total = Fraction(acc, scale)
            out[r, m] = ref_cast(total, result)
    return out


ACCUMULATORS = [
    None,
    fx(40, 20),  # wide, wrap: the fast path
    fx(18, 8, "AP_TRN", "AP_WRAP"),  # fewer fractional bits than the products: each product truncated, wraps
    fx(14, 7, "AP_RND", "AP_SAT"),  # saturates after each addition
    fx(16, 9, "AP_RND_CONV", "AP_SAT"),
]


@pytest.mark.parametrize(
    "accum", ACCUMULATORS, ids=lambda a: "exact" if a is None else f"{a['width']},{a['integer']},{a['overflow']}"
)
@pytest.mark.parametrize("result", [fx(8, 4, "AP_RND_CONV", "AP_SAT"), fx(10, 3)])
def test_fixed_dot_matches_hls4ml_loops(accum, result) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (6, 21))
    w = rng.integers(-128, 128, (5, 21))
    b = rng.integers(-2000, 2000, 5)
    acc, frac = dot.fixed_dot(x, 5, w, 6, b, 9, accum)
    got = dot.cast_fixed(acc, frac, result)
    assert np.array_equal(got, ref_fixed_dense(x, 5, w, 6, b, 9, accum, result))


def test_exact_matmul_is_exact_on_every_path() -> None:
    rng = np.random.default_rng(0)
    for high in (100, 2**20, 2**28):
        a = rng.integers(-high, high, (4, 33))
        b = rng.integers(-high, high, (3, 33))
        want = np.array([[sum(int(p) * int(q) for p, q in zip(r, c, strict=True)) for c in b] for r in a])
        assert np.array_equal(dot.exact_matmul(a, b), want)
    with pytest.raises(ValueError, match="beyond int64"):
        dot.exact_matmul(np.full((1, 4), 2**40), np.full((1, 4), 2**40))


def wide_range(rng: np.random.Generator, shape: tuple[int, ...], spread: float) -> np.ndarray:
    """float32 normal values times ``2**u``, ``u`` uniform in ``[-spread, spread]`` (magnitudes far apart)."""
    return (rng.standard_normal(shape) * np.exp2(rng.uniform(-spread, spread, shape))).astype(np.float32)


def run_qlinear(node: onnx.NodeProto, inits: list[onnx.TensorProto], x: np.ndarray) -> np.ndarray:
    """The int8 output of one QLinear* ``node`` (input ``x``, output ``y``) on onnxruntime, opset 13."""
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.INT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.int8)})[0]


def _qlinear_matmul(x, xs, xz, w_km, ws, ys, yz) -> np.ndarray:
    inits = [
        numpy_helper.from_array(np.float32(xs), "xs"),
        numpy_helper.from_array(np.int8(xz), "xz"),
        numpy_helper.from_array(w_km.astype(np.int8), "w"),
        numpy_helper.from_array(np.asarray(ws, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(np.shape(ws), np.int8), "wz"),
        numpy_helper.from_array(np.float32(ys), "ys"),
        numpy_helper.from_array(np.int8(yz), "yz"),
    ]
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    return run_qlinear(node, inits, x)


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("x_zero", [0, -7])
def test_int8_dot_matches_onnxruntime_qlinearmatmul(per_column, x_zero) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (64, 48))
    w = rng.integers(-127, 128, (10, 48))
    ws = rng.uniform(0.002, 0.02, 10).astype(np.float32) if per_column else np.float32(0.0071)
    xs, ys, yz = 0.031, 0.9, 3
    want = _qlinear_matmul(x, xs, x_zero, w.T, ws, ys, yz)
    got = dot.int8_dot(x, xs, x_zero, w, np.broadcast_to(ws, 10), None, ys, yz)
    assert np.array_equal(got, want)
    assert len(np.unique(got)) > 20  # the outputs span the range: not a trivially saturated comparison


def ref_bfp_dot(x, w_mant, w_exp, bias, k, m) -> np.ndarray:
    x_mant, x_exp = bfp.quantize(x, -1, k, m)
    out = np.zeros((len(x), len(w_mant)), np.float32)
    n_blocks = x_exp.shape[1]
    for r in range(len(x)):
        for c in range(len(w_mant)):
            acc = np.float32(0)
            for blk in range(n_blocks):
                s = sum(
                    int(a) * int(b)
                    for a, b in zip(x_mant[r, blk * k : (blk + 1) * k], w_mant[c, blk * k : (blk + 1) * k], strict=True)
                )
                acc = np.float32(acc + np.float32(s * 2.0 ** (int(x_exp[r, blk]) + int(w_exp[c, blk]) - 2 * (m - 1))))
            out[r, c] = np.float32(acc + bias[c])
    return out


@pytest.mark.parametrize(("k", "m"), [(16, 3), (16, 7), (8, 5), (32, 12)])
def test_bfp_dot_matches_a_per_block_loop(k, m) -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 40)) * np.exp(rng.uniform(-4, 4, (5, 40)))).astype(np.float32)
    w = rng.standard_normal((4, 40)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    w_mant, w_exp = bfp.quantize(w, 1, k, m)
    got = dot.bfp_dot(x, w_mant, w_exp, bias, {"block_size": k, "mantissa_bits": m, "exponent_bits": 8})
    want = ref_bfp_dot(x, w_mant, w_exp, bias, k, m)
    assert got.dtype == np.float32
    assert np.array_equal(got, want)


def test_bfp_dot_gives_the_same_on_large_inputs_block_by_block() -> None:
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4096, 160)) * np.exp(rng.uniform(-5, 5, (4096, 160)))).astype(np.float32)
    w = rng.standard_normal((8, 160)).astype(np.float32)
    params = {"block_size": 16, "mantissa_bits": 7, "exponent_bits": 8}
    w_mant, w_exp = bfp.quantize(w, 1, 16, 7)
    whole = dot.bfp_dot(x, w_mant, w_exp, None, params)  # above the batched-product size
    pieces = np.concatenate([dot.bfp_dot(x[i : i + 64], w_mant, w_exp, None, params) for i in range(0, 4096, 64)])
    assert np.array_equal(whole, pieces)
    assert np.array_equal(whole[:5], ref_bfp_dot(x[:5], w_mant, w_exp, np.zeros(8, np.float32), 16, 7))


MODES = ["AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_INF", "AP_RND_MIN_INF", "AP_RND_CONV"]


@pytest.mark.parametrize("overflow", ["AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM"])
@pytest.mark.parametrize("rounding", MODES)
def test_fixed_codes_of_scaled_equal_the_kernel(rounding: str, overflow: str) -> None:
    from edge_module.numerics import fixed

    rng = np.random.default_rng(9)
    acc = np.concatenate([rng.integers(-(2**20), 2**20, 4000), np.arange(-40, 41)]).astype(np.float64)
    t = np.ldexp(acc, -3)  # ties (x.5) included
    fmt = fx(12, 4, rounding, overflow)
    got = dot.fixed_codes_of_scaled(t, fmt)
    want = fixed.quantize(np.ldexp(t, -8), 12, 4, rounding, overflow)
    assert np.array_equal(got, want)


@pytest.mark.parametrize(("k", "m", "rounding"), [(16, 3, "nearest_even"), (16, 7, "truncate"), (8, 5, "nearest_even")])
def test_bfp_dot_folded_equals_the_per_block_product(k, m, rounding) -> None:
    rng = np.random.default_rng(k + m)
    params = {"block_size": k, "mantissa_bits": m, "exponent_bits": 8, "rounding": rounding}
    for spread, rows in ((2, 7), (20, 300), (40, 3)):
        x = wide_range(rng, (rows, 70), spread)
        x[:, :k] = 0  # an all-zero block
        w = wide_range(rng, (6, 70), spread)
        w_mant, w_exp = bfp.quantize(w, 1, k, m, 8, rounding)
        bias = rng.standard_normal(6).astype(np.float32)
        folded_w = dot.bfp_fold_weights(w_mant, w_exp, params)
        x_mant, x_exp = bfp.quantize(x, -1, k, m, 8, rounding)
        x_blocks = dot._blocked(x_mant.astype(np.float64), k)
        want = dot.bfp_dot_blocks(x_blocks, x_exp.astype(np.int64), dot.bfp_weights(w_mant, w_exp, params), bias)
        for chunk in (64, 1 << 18):  # several row chunks / one
            got = dot.bfp_dot_folded(dot.bfp_folded_inputs(x, params), folded_w, bias, params, chunk)
            assert got is not None
            assert np.array_equal(got, want)


@pytest.mark.parametrize(("k", "m"), [(16, 3), (16, 7), (8, 5), (4, 22)])
def test_bfp_folded_columns_equal_the_per_block_product(k, m) -> None:
    """The column layout (rounding by adding a per-block constant) against the float64 kernel and the
    per-block product: zero blocks, ties, block maxima that round up (saturate), wide ranges."""
    rng = np.random.default_rng(k * m)
    params = {"block_size": k, "mantissa_bits": m, "exponent_bits": 8, "rounding": "nearest_even"}
    for spread, rows in ((2, 7), (20, 300), (40, 3)):
        x = wide_range(rng, (rows, 70), spread)
        x[:, :k] = 0  # an all-zero block
        # the maximum rounds up (saturates) in two rows' blocks: many blocks of the small inputs, few of 300
        x[:2, k : 2 * k] = np.ldexp(np.float32(2**m - 0.5), -m + 1)
        x[2:, k : 2 * k] = np.ldexp(rng.integers(-(2**m), 2**m, (rows - 2, k)) + 0.5, -m)  # ties
        w = wide_range(rng, (6, 70), spread)
        w_mant, w_exp = bfp.quantize(w, 1, k, m, 8)
        bias = rng.standard_normal(6).astype(np.float32)
        x_mant, x_exp = bfp.quantize(x, -1, k, m, 8)
        want = dot.bfp_dot_blocks(
            dot._blocked(x_mant.astype(np.float64), k),
            x_exp.astype(np.int64),
            dot.bfp_weights(w_mant, w_exp, params),
            bias,
        )
        cols = dot._blocked(x, k).reshape(rows, -1).T.copy()  # (n_blocks * k, rows)
        folded = dot.bfp_folded_columns(cols, params)
        assert folded is not None
        values = folded[0].reshape(-1, rows).T[:, :70]
        assert np.array_equal(values, bfp.dequantize(x_mant, x_exp, -1, k, m))
        if m > 8:  # block products no longer fit float32: no folded weights, the values alone are checked
            assert dot.bfp_fold_weights(w_mant, w_exp, params) is None
            continue
        weights = dot.transposed_weights(dot.bfp_fold_weights(w_mant, w_exp, params))
        for chunk in (64, 1 << 18):
            got = dot.bfp_dot_folded_columns(folded, weights, bias, params, chunk)
            assert got is not None
            assert np.array_equal(got.T, want)


@pytest.mark.parametrize(("k", "m"), [(16, 3), (16, 7), (8, 5), (4, 2), (2, 1)])
def test_bfp_dense_columns_equal_the_per_block_product(k, m) -> None:
    """The few-call dense path (inputs clipped to the saturation bound before the rounding constant)
    against the float64 kernel: zero blocks, ties, block maxima that round up, wide ranges, 1..n blocks."""
    rng = np.random.default_rng(k * m + 1)
    params = {"block_size": k, "mantissa_bits": m, "exponent_bits": 8, "rounding": "nearest_even"}
    for spread, rows, n_blocks in ((2, 7, 5), (20, 64, 4), (40, 3, 2), (3, 64, 1)):
        width = n_blocks * k
        x = wide_range(rng, (rows, width), spread)
        if n_blocks > 1:
            x[:, :k] = 0  # an all-zero block
            x[:2, k : 2 * k] = np.ldexp(np.float32(2**m - 0.5), -m + 1)  # the maximum rounds up (saturates)
            x[2:, k : 2 * k] = np.ldexp(rng.integers(-(2**m), 2**m, (rows - 2, k)) + 0.5, -m)  # ties
            x[3:5, k : 2 * k] *= -1
            x[:, -k:-2] = np.float32(2.0**-140)  # subnormal and (scaled by 2**-E) underflowing values
            x[:, -2] = np.float32(2.0**-90)
            x[:, -1] = np.float32(-(2.0**60))  # beside a large block maximum: they round to 0
        w = wide_range(rng, (6, width), spread)
        w_mant, w_exp = bfp.quantize(w, 1, k, m, 8)
        x_mant, x_exp = bfp.quantize(x, -1, k, m, 8)
        folded = dot.bfp_fold_weights(w_mant, w_exp, params)
        folded_w = dot.transposed_weights(folded)
        for bias in (rng.standard_normal(6).astype(np.float32), None):
            want = dot.bfp_dot_blocks(
                dot._blocked(x_mant.astype(np.float64), k),
                x_exp.astype(np.int64),
                dot.bfp_weights(w_mant, w_exp, params),
                bias,
            )
            got = dot.bfp_dense_columns(np.ascontiguousarray(x.T), folded_w, bias, params)
            assert got is not None
            assert np.array_equal(got.T, want)
            rows_path = dot.bfp_dot_folded(dot.bfp_folded_inputs(x, params), folded, bias, params)
            assert np.array_equal(got.T, rows_path)


@pytest.mark.parametrize(("k", "m"), [(16, 3), (16, 7), (8, 5), (4, 2), (2, 1), (4, 8)])
def test_bfp_dense_integer_steps_equal_the_per_block_product(k, m) -> None:
    """The integer-step dense path (no zero block: rint and a clip to the largest mantissa, the weights
    times 2**-(m-1)) against the float64 kernel and the magic-constant path: ties, block maxima that
    round up, wide ranges, subnormal and underflowing values beside large ones, 1..n blocks."""
    rng = np.random.default_rng(k * m + 7)
    params = {"block_size": k, "mantissa_bits": m, "exponent_bits": 8, "rounding": "nearest_even"}
    for spread, rows, n_blocks in ((2, 7, 5), (20, 64, 4), (40, 3, 2), (3, 64, 1)):
        width = n_blocks * k
        x = wide_range(rng, (rows, width), spread)
        if n_blocks > 1:
            x[:2, :k] = np.ldexp(np.float32(2**m - 0.5), -m + 1)  # the maximum rounds up (saturates)
            x[2:, :k] = np.ldexp(rng.integers(-(2**m), 2**m, (rows - 2, k)) + 0.5, -m)  # ties
            x[2:, 0] = np.float32(1.5)  # a nonzero block
            x[3:5, :k] *= -1
            x[:, -k:-2] = np.float32(2.0**-140)  # subnormal and (scaled by 2**(m-1-E)) underflowing values
            x[:, -2] = np.float32(2.0**-90)
            x[:, -1] = np.float32(-(2.0**60))  # beside a large block maximum: they round to 0
        w = wide_range(rng, (6, width), spread)
        w_mant, w_exp = bfp.quantize(w, 1, k, m, 8)
        x_mant, x_exp = bfp.quantize(x, -1, k, m, 8)
        folded = dot.bfp_fold_weights(w_mant, w_exp, params)
        for bias in (rng.standard_normal(6).astype(np.float32), None):
            plan = dot.bfp_dense_plan(dot.transposed_weights(folded), bias, params)
            assert plan is not None and plan.integer_weights is not None
            xt = np.ascontiguousarray(x.T)
            assert dot._dense_integers(xt.reshape(n_blocks, k, rows), plan) is not None
            want = dot.bfp_dot_blocks(
                dot._blocked(x_mant.astype(np.float64), k),
                x_exp.astype(np.int64),
                dot.bfp_weights(w_mant, w_exp, params),
                bias,
            )
            got = dot.bfp_dense_run(xt, plan)
            assert got is not None
            assert np.array_equal(got.T, want)
            magic = dot.bfp_dense_run(xt, plan._replace(integer_weights=None))
            assert np.array_equal(got.view(np.int32), magic.view(np.int32))


def test_bfp_dense_integer_steps_take_zero_blocks_and_leave_odd_ones_to_the_magic_path() -> None:
    params = {"block_size": 4, "mantissa_bits": 7, "exponent_bits": 8, "rounding": "nearest_even"}
    w_mant, w_exp = bfp.quantize(np.ones((3, 8), np.float32), 1, 4, 7, 8)
    plan = dot.bfp_dense_plan(dot.transposed_weights(dot.bfp_fold_weights(w_mant, w_exp, params)), None, params)
    xt = np.ones((8, 5), np.float32)
    assert dot._dense_integers(xt.reshape(2, 4, 5), plan) is not None
    assert dot._dense_integers(np.zeros((2, 4, 5), np.float32), plan) is None  # all zero: the other paths
    for value in (0.0, -0.0, 2.0**-110, 2.0**-140, 2.0**105, np.inf, -np.inf, np.nan, -np.nan):
        for rest in (1.0, 0.0):  # besides the odd block: ones, or all-zero blocks too
            odd = xt.copy()
            odd[4:, 1] = value  # one block's values
            odd[:4, 3] = rest
            integers = dot._dense_integers(odd.reshape(2, 4, 5), plan)
            if value != 0.0:
                assert integers is None, value
                continue
            assert integers is not None  # zero blocks: the same products as the magic-constant path
            got = dot.bfp_dense_run(odd, plan)
            magic = dot.bfp_dense_run(odd, plan._replace(integer_weights=None))
            assert np.array_equal(got, magic) and np.array_equal(got[:, 1], [4.0] * 3)
    tiny = dot.transposed_weights(dot.bfp_fold_weights(w_mant, w_exp - 120, params))  # 2**-(m-1) would be subnormal
    assert dot.bfp_dense_plan(tiny, None, params).integer_weights is None


def test_bfp_dense_columns_leave_what_they_cannot_do_to_the_other_paths() -> None:
    params = {"block_size": 4, "mantissa_bits": 7, "exponent_bits": 8, "rounding": "nearest_even"}
    w_mant, w_exp = bfp.quantize(np.ones((3, 8), np.float32), 1, 4, 7, 8)
    weights = dot.transposed_weights(dot.bfp_fold_weights(w_mant, w_exp, params))
    xt = np.ones((8, 5), np.float32)
    assert dot.bfp_dense_plan(weights, None, {**params, "rounding": "truncate"}) is None
    assert dot.bfp_dense_plan(weights, None, {**params, "mantissa_bits": 23}) is None
    assert dot.bfp_dense_columns(xt, weights, None, params) is not None
    assert dot.bfp_dense_columns(np.zeros((8, 5), np.float32), weights, None, params) is None
    assert dot.bfp_dense_columns(xt.astype(np.float64), weights, None, params) is None
    assert dot.bfp_dense_columns(np.asfortranarray(xt), weights, None, params) is None
    for value in (2.0**-110, 2.0**-140, 2.0**105, np.inf, -np.inf, np.nan, -np.nan):
        odd = xt.copy()
        odd[4:, 1] = value
        assert dot.bfp_dense_columns(odd, weights, None, params) is None, value
    narrow = {**params, "exponent_bits": 4}  # exponents -7..7: larger values clip, the row path handles them
    assert dot.bfp_dense_columns(xt * 2.0**9, weights, None, narrow) is None
    assert dot.bfp_dense_columns(xt * 2.0**-9, weights, None, narrow) is None
    assert dot.bfp_dense_columns(xt, weights, None, narrow) is not None
    with pytest.raises(ValueError, match="do not match"):
        dot.bfp_dense_columns(np.ones((6, 3), np.float32), weights, None, params)


def test_bfp_folded_columns_leave_what_they_cannot_round_to_the_row_path() -> None:
    params = {"block_size": 4, "mantissa_bits": 7, "exponent_bits": 8, "rounding": "nearest_even"}
    cols = np.ones((8, 3), np.float32)
    assert dot.bfp_folded_columns(cols, {**params, "rounding": "truncate"}) is None
    assert dot.bfp_folded_columns(cols, {**params, "mantissa_bits": 23}) is None
    assert dot.bfp_folded_columns(np.zeros((8, 3), np.float32), params) is None
    for value in (2.0**-110, 2.0**105, np.inf, np.nan):
        tiny = cols.copy()
        tiny[4:, 1] = value
        assert dot.bfp_folded_columns(tiny, params) is None
    narrow = {**params, "exponent_bits": 4}  # exponents -7..7: larger values clip, the row path handles them
    assert dot.bfp_folded_columns(cols * 2.0**9, narrow) is None
    assert dot.bfp_folded_columns(cols, narrow) is not None
    with pytest.raises(ValueError, match="whole blocks"):
        dot.bfp_folded_columns(np.ones((6, 3), np.float32), params)


@pytest.mark.parametrize("shape", [(5, 1), (5, 2), (9, 3, 4), (2, 1, 1), (12, 40, 7)])
def test_sum_in_order_adds_in_order(shape) -> None:
    rng = np.random.default_rng(len(shape))
    terms = (rng.standard_normal(shape) * np.exp2(rng.integers(-30, 30, shape))).astype(np.float32)
    want = terms[0].copy()
    for term in terms[1:]:
        want = want + term
    out = np.empty(shape[1:], np.float32)
    assert np.array_equal(dot.sum_in_order(terms, out), want)
    assert not np.array_equal(terms.sum(axis=0, dtype=np.float64).astype(np.float32), want) or shape[0] < 3


def test_tiled_vectors_are_cached_per_shape_and_read_only() -> None:
    cache: dict = {}
    row = np.arange(3, dtype=np.float32)
    tile = dot.tiled(cache, "b", row, (4, 3))
    assert tile.flags.c_contiguous and not tile.flags.writeable
    assert np.array_equal(tile, np.broadcast_to(row, (4, 3)))
    assert dot.tiled(cache, "b", row, (4, 3)) is tile
    column = dot.tiled(cache, "c", row.reshape(3, 1), (3, 5))
    assert np.array_equal(column, np.repeat(row.reshape(3, 1), 5, axis=1)) and len(cache) == 2
    for rows in range(20):  # bounded: later shapes are made but not kept
        dot.tiled(cache, "b", row, (rows, 3))
    assert len(cache) == 16
    assert dot.small_tiled(cache, "b", row, (4, 3)) is tile
    assert dot.small_tiled(cache, "b", row, (dot.TILE_MAX_ELEMENTS, 3)) is row  # large: broadcast by the operation


@pytest.mark.parametrize(
    ("channels", "k", "m", "rounding"),
    [
        (16, 16, 7, "nearest_even"),
        (32, 16, 3, "nearest_even"),
        (24, 8, 4, "nearest_even"),
        (8, 8, 5, "truncate"),
        (48, 16, 7, "truncate"),
    ],
)
def test_bfp_folded_channels_equal_the_row_quantizer(channels, k, m, rounding) -> None:
    """Quantizing an NCHW tensor once per pixel's channel block (before im2col) gives bfp_folded_inputs'
    values on its channels-last rows: random scales, all-zero blocks, ties, saturating maxima."""
    params = {"block_size": k, "mantissa_bits": m, "exponent_bits": 8, "rounding": rounding}
    rng = np.random.default_rng(channels + k + m)
    shape = (3, channels, 5, 6)
    x = (rng.standard_normal(shape) * np.exp(rng.uniform(-8, 8, shape))).astype(np.float32)
    x[0, :k, :2] = 0  # all-zero blocks
    x[1, :k, 1] = np.float32(0.5)  # maxima 2**-1 and ties halfway between steps
    x[1, 1:k:2, 1] = np.float32(2.0 ** (-1 - m) * 3)
    x[2, :k, 3] = -np.float32(2.0 - 2.0 ** (-m - 2))  # rounds up to 2**m steps: saturates
    got = dot.bfp_folded_channels(x, params)
    rows = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, channels)
    want = dot.bfp_folded_inputs(rows, params)
    assert got is not None and want is not None
    assert np.array_equal(got[0].transpose(0, 2, 3, 1).reshape(rows.shape[0], -1), want[0].reshape(rows.shape[0], -1))
    assert want[1] <= got[1] <= got[2] == want[2]
    mant, exps = bfp.quantize(rows, 1, k, m, 8, rounding)
    values = mant.astype(np.float64) * np.ldexp(1.0, np.repeat(exps, k, axis=1) - (m - 1))
    assert np.array_equal(got[0].transpose(0, 2, 3, 1).reshape(rows.shape), values)


def test_bfp_folded_channels_leave_what_they_cannot_do_to_the_row_quantizer() -> None:
    params = {"block_size": 4, "mantissa_bits": 5, "exponent_bits": 8, "rounding": "nearest_even"}
    x = np.ones((2, 8, 3, 3), np.float32)
    assert dot.bfp_folded_channels(x, params) is not None
    assert dot.bfp_folded_channels(x[:, :6], params) is None  # not whole channel blocks
    assert dot.bfp_folded_channels(np.zeros_like(x), params) is None
    assert dot.bfp_folded_channels(x.astype(np.float64), params) is None
    for value in (2.0**-110, 2.0**-140, 2.0**120, np.inf, np.nan):
        odd = x.copy()
        odd[1, 4:, 2, 2] = value
        assert dot.bfp_folded_channels(odd, params) is None, value
