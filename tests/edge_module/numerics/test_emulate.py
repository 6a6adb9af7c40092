"""The emulator on hand-written programs: a fixed-point Conv against a pure-Python loop in hls4ml's
order, an int8 Conv against onnxruntime's QLinearConv, save/load, clear errors."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from edge_module.numerics.emulate import Program

from .test_dot import fx, ref_cast, run_qlinear, wide_range

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

ATTRS = {"kernel_shape": [3, 2], "pads": [1, 0, 1, 2], "strides": [2, 1], "dilations": [1, 2]}


def conv_program(scheme: str, x_fmt: dict, y_fmt: dict, arrays: dict, extra: dict) -> Program:
    layer = {
        "name": "conv",
        "op": "conv",
        "inputs": ["x"],
        "output": "y",
        "attrs": ATTRS,
        "scheme": scheme,
        "arrays": {role: f"0.{role}" for role in arrays},
        **extra,
    }
    spec = {
        "format_version": 1,
        "inputs": ["x"],
        "outputs": ["y"],
        "tensors": {"x": x_fmt, "y": y_fmt},
        "layers": [layer],
    }
    return Program(spec, {f"0.{role}": value for role, value in arrays.items()})


def ref_fixed_conv(x, x_frac, w, w_frac, b, b_frac, accum, result) -> np.ndarray:
    """Loop over output pixels; each dot product in (kh, kw, C) order, as hls4ml's channels-last conv."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    top, left, bottom, right = ATTRS["pads"]
    (sh, sw), (dh, dw) = ATTRS["strides"], ATTRS["dilations"]
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, m, oh, ow), np.int64)
    for img in range(n):
        for f in range(m):
            for r in range(oh):
                for q in range(ow):
                    terms = [
                        int(xp[img, ch, r * sh + i * dh, q * sw + j * dw]) * int(w[f, ch, i, j])
                        for i in range(kh)
                        for j in range(kw)
                        for ch in range(c)
                    ]
                    if accum is None:
                        total = Fraction(int(b[f]), 2**b_frac) + Fraction(sum(terms), 2 ** (x_frac + w_frac))
                    else:
                        scale = 2 ** (accum["width"] - accum["integer"])
                        acc = ref_cast(Fraction(int(b[f]), 2**b_frac), accum)
                        for t in terms:
                            acc = ref_cast(
                                Fraction(acc + ref_cast(Fraction(t, 2 ** (x_frac + w_frac)), accum), scale), accum
                            )
                        total = Fraction(acc, scale)
                    out[img, f, r, q] = ref_cast(total, result)
    return out


@pytest.mark.parametrize("accum", [None, fx(13, 6, "AP_RND", "AP_SAT")], ids=["exact", "saturating"])
def test_fixed_conv_matches_a_loop_in_hls4ml_order(accum) -> None:
    rng = np.random.default_rng(5)
    x_codes = rng.integers(-128, 128, (2, 3, 6, 5))
    w_codes = rng.integers(-128, 128, (4, 3, 3, 2))
    b_codes = rng.integers(-300, 300, 4)
    x_fmt, y_fmt, w_fmt, b_fmt = fx(8, 3), fx(10, 5, "AP_RND_CONV", "AP_SAT"), fx(8, 1), fx(12, 4)
    arrays = {"weight": w_codes.transpose(0, 2, 3, 1).reshape(4, -1), "bias": b_codes}
    program = conv_program("fixed", x_fmt, y_fmt, arrays, {"weight": w_fmt, "bias": b_fmt, "accum": accum})
    y = program.run(np.ldexp(x_codes.astype(np.float64), -5))["y"]
    want = ref_fixed_conv(x_codes, 5, w_codes, 7, b_codes, 8, accum, y_fmt)
    assert np.array_equal(np.ldexp(y.astype(np.float64), 5).astype(np.int64), want)


def _qlinear_conv(x, xs, xz, w, ws, b, ys, yz) -> np.ndarray:
    inits = [
        numpy_helper.from_array(np.float32(xs), "xs"),
        numpy_helper.from_array(np.int8(xz), "xz"),
        numpy_helper.from_array(w.astype(np.int8), "w"),
        numpy_helper.from_array(ws.astype(np.float32), "ws"),
        numpy_helper.from_array(np.zeros(len(ws), np.int8), "wz"),
        numpy_helper.from_array(np.float32(ys), "ys"),
        numpy_helper.from_array(np.int8(yz), "yz"),
        numpy_helper.from_array(b.astype(np.int32), "b"),
    ]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **ATTRS)
    return run_qlinear(node, inits, x)


@pytest.mark.parametrize("x_zero", [0, 5])
def test_int8_conv_matches_onnxruntime_qlinearconv(x_zero) -> None:
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (3, 4, 7, 6))
    w = rng.integers(-127, 128, (5, 4, 3, 2))
    ws = rng.uniform(0.001, 0.01, 5).astype(np.float32)
    b = rng.integers(-5000, 5000, 5)
    xs, ys, yz = 0.05, 0.4, -2
    arrays = {
        "weight": w.transpose(0, 2, 3, 1).reshape(5, -1).astype(np.int8),
        "weight_scale": ws,
        "bias": b.astype(np.int32),
    }
    program = conv_program(
        "int8",
        {"kind": "int8", "scale": xs, "zero_point": x_zero},
        {"kind": "int8", "scale": ys, "zero_point": yz},
        arrays,
        {},
    )
    values = (x.astype(np.float64) - x_zero) * float(np.float32(xs))
    y = program.run(values)["y"]
    codes = np.rint(y.astype(np.float64) / float(np.float32(ys))).astype(np.int64) + yz
    want = _qlinear_conv(x, xs, x_zero, w, ws, b, ys, yz)
    assert np.array_equal(codes, want)
    assert len(np.unique(want)) > 50


def test_a_program_saves_and_loads(tmp_path) -> None:
    arrays = {"weight": np.arange(24, dtype=np.float32).reshape(4, 6) / 10, "bias": np.ones(4, np.float32)}
    program = conv_program("float", {"kind": "float"}, {"kind": "float"}, arrays, {})
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5)).astype(np.float32)
    program.save(tmp_path)
    again = Program.load(tmp_path)
    assert np.array_equal(again.run(x)["y"], program.run(x)["y"])


def test_errors_name_the_problem() -> None:
    arrays = {"weight": np.zeros((4, 6), np.float32), "bias": np.zeros(4, np.float32)}
    program = conv_program("float", {"kind": "float"}, {"kind": "float"}, arrays, {})
    with pytest.raises(ValueError, match="missing program input"):
        program.run({"other": np.zeros(1)})
    with pytest.raises(ValueError, match="version"):
        Program({**program.spec, "format_version": 99}, program.arrays)
    with pytest.raises(ValueError, match="NaN"):
        conv_program("fixed", fx(8, 3), fx(8, 3), arrays, {"weight": fx(8, 1), "bias": fx(8, 1)}).run(
            np.full((1, 1, 4, 4), np.nan)
        )


@pytest.mark.parametrize("k", [24, 2048])  # partial sums below 2**24 (float32 path) and above (float64 path)
def test_int8_dense_matches_onnxruntime_on_both_fast_paths(k) -> None:
    from .test_dot import _qlinear_matmul

    rng = np.random.default_rng(k)
    x = rng.integers(-128, 128, (32, k))
    w = rng.integers(-127, 128, (6, k))
    ws = rng.uniform(0.001, 0.01, 6).astype(np.float32)
    xs, ys, yz = 0.02, 0.03 * np.sqrt(k), 1
    layer = {
        "name": "fc",
        "op": "dense",
        "inputs": ["x"],
        "output": "y",
        "attrs": {},
        "scheme": "int8",
        "arrays": {"weight": "w", "weight_scale": "ws"},
    }
    spec = {
        "format_version": 1,
        "inputs": ["x"],
        "outputs": ["y"],
        "layers": [layer],
        "tensors": {
            "x": {"kind": "int8", "scale": xs, "zero_point": 0},
            "y": {"kind": "int8", "scale": ys, "zero_point": yz},
        },
    }
    program = Program(spec, {"w": w.astype(np.int8), "ws": ws})
    assert program._prepared[0]["data"]["fast"][-1] == (np.float32 if k == 24 else np.float64)
    y = program.run(x * float(np.float32(xs)))["y"]
    codes = np.rint(y.astype(np.float64) / float(np.float32(ys))).astype(np.int64) + yz
    want = _qlinear_matmul(x, xs, 0, w.T, ws, ys, yz)
    assert np.array_equal(codes, want)
    assert len(np.unique(want)) > 20


@pytest.mark.parametrize(
    ("channels", "m"), [(16, 5), (32, 5), (5, 5), (3, 5), (1, 5), (3, 7), (2, 3)]
)  # blocks = channel blocks (quantized once) / spanning pixels; at most 4 channels: im2col in columns
def test_bfp_conv_matches_the_per_patch_dot_product(channels, m, monkeypatch) -> None:
    from edge_module.numerics import bfp, bfp_conv, dot
    from edge_module.numerics.emulate import windows

    monkeypatch.setattr(bfp_conv, "BFP_COLUMN_PIXELS", 1)

    rng = np.random.default_rng(channels + 100 * m)
    x = (rng.standard_normal((2, channels, 6, 5)) * np.exp(rng.uniform(-3, 3, (2, channels, 6, 5)))).astype(np.float32)
    x[0, :, 0, 0] = 0  # an all-zero block
    x[1, :, 2:, :] = np.ldexp(np.float32(2**m - 0.5), rng.integers(-4, 4, (channels, 4, 5)) - m + 1)  # rounds up
    w = rng.standard_normal((3, 6 * channels)).astype(np.float32)
    params = {"block_size": 16, "mantissa_bits": m, "exponent_bits": 8, "rounding": "nearest_even"}
    w_mant, w_exp = bfp.quantize(w, 1, 16, m)
    bias = rng.standard_normal(3).astype(np.float32)
    layer = {
        "name": "conv",
        "op": "conv",
        "inputs": ["x"],
        "output": "y",
        "scheme": "bfp",
        "bfp": params,
        "attrs": ATTRS,
        "arrays": {"weight": "w", "weight_exponent": "e", "bias": "b"},
    }
    spec = {
        "format_version": 1,
        "inputs": ["x"],
        "outputs": ["y"],
        "layers": [layer],
        "tensors": {"x": {"kind": "float"}, "y": {"kind": "float"}},
    }
    program = Program(spec, {"w": w_mant, "e": w_exp, "b": bias})
    got = program.run(x)["y"]
    patches = windows(x, (3, 2), tuple(ATTRS["pads"]), tuple(ATTRS["strides"]), tuple(ATTRS["dilations"]))
    n, oh, ow = patches.shape[:3]
    want = dot.bfp_dot(patches.reshape(n * oh * ow, -1).astype(np.float64), w_mant, w_exp, bias, params)
    assert np.array_equal(got, want.reshape(n, oh, ow, 3).transpose(0, 3, 1, 2))


@pytest.mark.parametrize("scheme", ["bfp", "int8", "fixed"])
def test_convolutions_in_columns_equal_the_row_layout(scheme, monkeypatch) -> None:
    """The im2col-in-columns path (few channels) against the row path on the same program, bit for bit."""
    from edge_module.numerics import bfp, bfp_conv, patches

    monkeypatch.setattr(bfp_conv, "BFP_COLUMN_PIXELS", 1)
    monkeypatch.setattr(bfp_conv, "_position_block_conv", lambda *a: None)  # (it would go first)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 2, 9, 7)) * np.exp(rng.uniform(-2, 2, (3, 2, 9, 7)))).astype(np.float32)
    x[0, :, :3] = 0
    if scheme == "bfp":
        w_mant, w_exp = bfp.quantize(rng.standard_normal((4, 12)), 1, 8, 4)
        arrays = {"weight": w_mant, "weight_exponent": w_exp, "bias": rng.standard_normal(4).astype(np.float32)}
        extra = {"bfp": {"block_size": 8, "mantissa_bits": 4, "exponent_bits": 8, "rounding": "nearest_even"}}
        fmts = ({"kind": "float"}, {"kind": "float"})
    elif scheme == "int8":
        arrays = {
            "weight": rng.integers(-127, 128, (4, 12)).astype(np.int8),
            "weight_scale": rng.uniform(0.001, 0.01, 4).astype(np.float32),
            "bias": rng.integers(-500, 500, 4).astype(np.int32),
        }
        extra = {}
        fmts = ({"kind": "int8", "scale": 0.02, "zero_point": 3}, {"kind": "int8", "scale": 0.05, "zero_point": -1})
    else:
        arrays = {"weight": rng.integers(-100, 100, (4, 12)), "bias": rng.integers(-100, 100, 4)}
        extra = {"weight": fx(8, 1), "bias": fx(8, 1)}
        fmts = (fx(10, 4, "AP_RND_CONV", "AP_SAT"), fx(9, 5, "AP_RND", "AP_SAT"))
    program = conv_program(scheme, *fmts, arrays, extra)
    calls = []
    columns = patches.columns
    monkeypatch.setattr(patches, "columns", lambda *a: calls.append(1) or columns(*a))
    got = program.run(x)["y"]
    assert calls  # the column path ran
    monkeypatch.setattr(patches, "COLUMN_CHANNELS", 0)
    want = program.run(x)["y"]
    assert len(calls) == 1
    assert got.shape == want.shape and np.array_equal(got, want)
    assert len(np.unique(want)) > 20


def test_fixed_rescaled_weights_equal_the_integer_kernel_for_random_formats() -> None:
    rng = np.random.default_rng(21)
    roundings = ["AP_TRN", "AP_TRN_ZERO", "AP_RND", "AP_RND_ZERO", "AP_RND_INF", "AP_RND_MIN_INF", "AP_RND_CONV"]
    overflows = ["AP_WRAP", "AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM"]
    used = 0
    for trial in range(60):
        fmts = [
            fx(int(rng.integers(4, 30)), int(rng.integers(-6, 12)), str(rng.choice(roundings)), str(overflow))
            for overflow in rng.choice(overflows, 4)
        ]
        x_fmt, y_fmt, w_fmt, b_fmt = fmts
        if trial % 3 == 0:  # far from 1: exponents near the ends of the float range
            x_fmt["integer"], y_fmt["integer"] = int(rng.integers(-120, 130)), int(rng.integers(-120, 130))
        k, m = int(rng.integers(1, 40)), int(rng.integers(1, 9))
        w = rng.integers(-(2 ** (w_fmt["width"] - 1)), 2 ** (w_fmt["width"] - 1), (m, k))
        b = rng.integers(-(2 ** (b_fmt["width"] - 1)), 2 ** (b_fmt["width"] - 1), m)
        layer = {
            "name": "d",
            "op": "dense",
            "inputs": ["x"],
            "output": "y",
            "scheme": "fixed",
            "attrs": {},
            "weight": w_fmt,
            "bias": b_fmt,
            "accum": None,
            "arrays": {"weight": "w", "bias": "b"},
        }
        spec = {"format_version": 1, "inputs": ["x"], "outputs": ["y"], "layers": [layer]}
        spec["tensors"] = {"x": x_fmt, "y": y_fmt}
        x = rng.standard_normal((9, k)) * 2.0 ** (x_fmt["integer"] - 1)
        fast = Program(spec, {"w": w, "b": b})
        kernel = Program(spec, {"w": w, "b": b})
        kernel._prepared[0]["data"]["fast"] = None  # dot.fixed_dot on int64 codes
        try:
            want = kernel.run(x)["y"]
        except ValueError:  # beyond the integer kernel's 53 bits
            continue
        used += fast._prepared[0]["data"]["fast"] is not None and fast._prepared[0]["data"]["fast"][5] is not None
        assert np.array_equal(fast.run(x)["y"], want), (x_fmt, y_fmt, w_fmt, b_fmt)
    assert used > 20


@pytest.mark.parametrize("zero_point", [0, -128, 127, 37])
def test_int8_tensors_are_held_as_the_quantizer_s_codes_minus_the_zero_point(zero_point) -> None:
    from edge_module.numerics import int8
    from edge_module.numerics.emulate import _hold, _value, to_format

    rng = np.random.default_rng(zero_point + 200)
    x = (rng.standard_normal(5000) * np.exp(rng.uniform(-12, 12, 5000))).astype(np.float32)
    x[:6] = [0.0, -0.0, 3.4e38, -3.4e38, 1e-45, 0.5 * 0.37]  # zeros, saturation, a tie
    for scale in (0.37, 1e-3, 1e-30):
        fmt = {"kind": "int8", "scale": scale, "zero_point": zero_point}
        held = _hold(x, fmt)
        assert held.dtype == np.float32
        assert np.array_equal(held, int8.quantize(x, scale, zero_point).astype(np.float32) - zero_point)
        assert np.array_equal(_value(held, fmt), to_format(x, fmt))


@pytest.mark.parametrize("m", [3, 7])
def test_bfp_mlp_on_the_column_path_equals_the_kernel(m, monkeypatch) -> None:
    """Dense layers of whole blocks run as columns (``dot.bfp_dense_run``; each result left transposed
    for the next), bit for bit the float64 kernel layer by layer; a dense layer of a partial block
    (``K % k != 0``) and inputs the column path declines (a NaN-free input with a tiny block) take the
    other paths. Outputs are C-contiguous."""
    from edge_module.numerics import bfp, dot

    rng = np.random.default_rng(m)
    params = {"block_size": 16, "mantissa_bits": m, "exponent_bits": 8, "rounding": "nearest_even"}
    sizes = [64, 48, 32, 10, 3]  # 32 -> 10 -> 3: the last layer has K = 10, one partial block
    arrays, layers, tensors = {}, [], {"x": {"kind": "float"}}
    prev = "x"
    for i, (k_in, k_out) in enumerate(itertools.pairwise(sizes)):
        w_mant, w_exp = bfp.quantize(rng.standard_normal((k_out, k_in)) * 0.3, 1, 16, m, 8)
        arrays.update({f"w{i}": w_mant, f"e{i}": w_exp, f"b{i}": rng.standard_normal(k_out).astype(np.float32)})
        roles = {"weight": f"w{i}", "weight_exponent": f"e{i}", "bias": f"b{i}"}
        layers.append(
            {"name": f"d{i}", "op": "dense", "inputs": [prev], "output": f"d{i}", "scheme": "bfp", "bfp": params}
            | {"attrs": {}, "arrays": roles}
        )
        layers.append({"name": f"r{i}", "op": "relu", "inputs": [f"d{i}"], "output": f"r{i}", "scheme": "float"})
        tensors.update({f"d{i}": {"kind": "float"}, f"r{i}": {"kind": "float"}})
        prev = f"r{i}"
    spec = {"format_version": 1, "inputs": ["x"], "outputs": [prev], "layers": layers, "tensors": tensors}
    program = Program(spec, arrays)
    assert [layer["data"].get("dense_plan") is not None for layer in program._prepared[::2]] == [True] * 3 + [False]
    assert [(layer["op"], layer.get("relu", False)) for layer in program._fused] == [("dense", True)] * 3 + [
        ("dense", False),
        ("relu", False),
    ]
    calls = []
    run = dot.bfp_dense_run
    monkeypatch.setattr(dot, "bfp_dense_run", lambda *a: (y := run(*a), calls.append(y is not None))[0])
    for x in (
        wide_range(rng, (64, 64), 8),
        np.where(np.arange(64) < 16, np.float32(2.0**-120), rng.standard_normal((5, 64)).astype(np.float32)),
        wide_range(rng, (300, 64), 8),  # rows
    ):
        calls.clear()
        got = program.run(x, keep_all=True)
        want = x.astype(np.float64)
        for i in range(4):
            w_mant, w_exp, bias = arrays[f"w{i}"], arrays[f"e{i}"], arrays[f"b{i}"]
            want = dot.bfp_dot(want, w_mant, w_exp, bias, params)
            assert np.array_equal(got[f"d{i}"], want), i
            want = np.maximum(want, 0)
        assert got[prev].flags.c_contiguous and np.array_equal(got[prev], want)
        # tiny: the first declines; large C-ordered inputs take the row path (no transposing copy)
        assert calls == {64: [True] * 3, 5: [False, True, True], 300: []}[x.shape[0]]
        fused = program.run(x)[prev]  # the ReLUs folded into the column-path layers before them
        assert fused.flags.c_contiguous and np.array_equal(fused.view(np.int32), got[prev].view(np.int32))


@pytest.mark.parametrize("zero_point", [0, 5, -7])
def test_relus_folded_into_int8_dense_layers_give_the_same_codes(zero_point) -> None:
    """dense -> relu -> dense (an output: its ReLU not folded) -> relu -> dense; the folded program against
    the layer-by-layer one (``keep_all``) and the int8 kernel (onnxruntime's arithmetic) with ReLU on codes."""
    from edge_module.numerics import dot

    rng = np.random.default_rng(zero_point + 50)
    sizes = [30, 20, 12, 5]
    fmts = [{"kind": "int8", "scale": float(s), "zero_point": zero_point} for s in rng.uniform(0.01, 0.1, 7)]
    tensors, layers, arrays, prev = {"x": fmts[0]}, [], {}, "x"
    for i, (k_in, k_out) in enumerate(itertools.pairwise(sizes)):
        arrays.update(
            {
                f"w{i}": rng.integers(-127, 128, (k_out, k_in)).astype(np.int8),
                f"s{i}": rng.uniform(0.002, 0.02, k_out).astype(np.float32),
                f"b{i}": rng.integers(-300, 300, k_out).astype(np.int32),
            }
        )
        roles = {"weight": f"w{i}", "weight_scale": f"s{i}", "bias": f"b{i}"}
        layers.append(
            {"name": f"d{i}", "op": "dense", "inputs": [prev], "output": f"d{i}", "scheme": "int8", "attrs": {}}
            | {"arrays": roles}
        )
        tensors[f"d{i}"] = fmts[2 * i + 1]
        prev = f"d{i}"
        if i < 2:
            layers.append({"name": f"r{i}", "op": "relu", "inputs": [prev], "output": f"r{i}", "scheme": "int8"})
            tensors[f"r{i}"] = fmts[2 * i + 1]
            prev = f"r{i}"
    spec = {"format_version": 1, "inputs": ["x"], "outputs": ["d1", "r1", prev], "layers": layers, "tensors": tensors}
    program = Program(spec, arrays)
    assert [(layer["op"], layer.get("relu", False)) for layer in program._fused] == [
        ("dense", True),
        ("dense", False),
        ("relu", False),
        ("dense", False),
    ]
    x = rng.uniform(-1.5, 1.5, (40, 30)).astype(np.float32)
    every = program.run(x, keep_all=True)
    fused = program.run(x)
    for name in ("d1", "r1", prev):
        assert np.array_equal(fused[name].view(np.int32), every[name].view(np.int32))
    codes = np.clip(np.rint(x / np.float32(fmts[0]["scale"])) + zero_point, -128, 127).astype(np.int64)
    for i in range(3):
        f_in, f_out = tensors[layers[2 * i]["inputs"][0]], tensors[f"d{i}"]
        w, ws, b = arrays[f"w{i}"], arrays[f"s{i}"], arrays[f"b{i}"]
        codes = dot.int8_dot(codes, f_in["scale"], zero_point, w, ws, b, f_out["scale"], zero_point).astype(np.int64)
        if i < 2:
            codes = np.maximum(codes, zero_point)
    want = (codes - zero_point).astype(np.float64) * float(np.float32(tensors[prev]["scale"]))
    assert np.array_equal(fused[prev], want.astype(np.float32))
    assert len(np.unique(codes)) > 10


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_bfp_conv_plan_columns_in_chunks_equal_the_row_path(channels, monkeypatch) -> None:
    """The few-channel BFP convolution on the dense plan, in small chunks of columns, against the row path
    bit for bit: zero rows (all-zero blocks), ties, saturating maxima, a subnormal block (which sends its
    chunk back to the column path)."""
    from edge_module.numerics import bfp, bfp_conv, patches

    monkeypatch.setattr(bfp_conv, "BFP_COLUMN_PIXELS", 1)
    monkeypatch.setattr(bfp_conv, "CONV_PLAN_CHUNK", 16 * 4 * 2)  # a few columns per chunk
    monkeypatch.setattr(bfp_conv, "_one_block_conv", lambda *a: None)  # (one-block patches would go there first)
    monkeypatch.setattr(bfp_conv, "_position_block_conv", lambda *a: None)
    rng = np.random.default_rng(channels)
    shape = (3, channels, 9, 7)
    x = (rng.standard_normal(shape) * np.exp(rng.uniform(-2, 2, shape))).astype(np.float32)
    x[0, :, :3] = 0
    x[1, :, 2] = np.float32(2.0**-3 * 1.5)  # halfway between steps next to values of 2**-1
    x[1, :, 3] = np.float32(0.5)
    x[2, :, 4] = np.float32(2.0 - 2.0**-10)  # rounds up to 2**m: saturates
    params = {"block_size": 8, "mantissa_bits": 4, "exponent_bits": 8, "rounding": "nearest_even"}
    k_len = 6 * channels  # ATTRS' 3 x 2 kernel
    w_mant, w_exp = bfp.quantize(rng.standard_normal((4, k_len)), 1, 8, 4)
    arrays = {"weight": w_mant, "weight_exponent": w_exp, "bias": rng.standard_normal(4).astype(np.float32)}
    program = conv_program("bfp", {"kind": "float"}, {"kind": "float"}, arrays, {"bfp": params})
    runs = []
    plan_run = bfp_conv._conv_plan_run
    monkeypatch.setattr(bfp_conv, "_conv_plan_run", lambda *a: runs.append(y := plan_run(*a)) or y)
    tiny = x.copy()
    tiny[2] = np.float32(2.0**-140)  # subnormal blocks
    for data in (x, tiny):
        got = program.run(data)["y"]
        monkeypatch.setattr(patches, "COLUMN_CHANNELS", 0)
        want = program.run(data)["y"]
        monkeypatch.setattr(patches, "COLUMN_CHANNELS", 4)
        assert got.shape == want.shape and np.array_equal(got, want)
    assert [y is not None for y in runs] == [True, False]
