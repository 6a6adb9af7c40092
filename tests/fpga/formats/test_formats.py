"""Format objects: names, round trips, errors, and the wrappers around edge_module.numerics."""

from __future__ import annotations

import numpy as np
import pytest

from edge_module.numerics import bfp, fixed, int8
from fpga.formats import (
    BlockFloatingPoint,
    FixedPoint,
    FormatError,
    Int8,
    NumberFormat,
    available_formats,
    get_format,
    register_format,
)

NAMES = {
    "fixed<16,6>": "fixed<16,6>",
    "ap_fixed<16,6>": "fixed<16,6>",
    "ap_fixed<16,6,AP_TRN,AP_WRAP>": "fixed<16,6>",
    "ap_fixed<16,6,AP_RND,AP_SAT>": "ap_fixed<16,6,AP_RND,AP_SAT>",
    " AP_FIXED< 8 , -2 , ap_rnd_conv > ": "ap_fixed<8,-2,AP_RND_CONV,AP_WRAP>",
    "fixed<16,6,RND,SAT,0>": "ap_fixed<16,6,AP_RND,AP_SAT>",  # hls4ml's spelling
    "ufixed<8,0>": "ufixed<8,0>",
    "ap_ufixed<8,3,AP_TRN_ZERO,AP_SAT_SYM>": "ap_ufixed<8,3,AP_TRN_ZERO,AP_SAT_SYM>",
    "int8": "int8",
    "INT8": "int8",
    "int8<act=symmetric>": "int8",
    "int8<act=asymmetric>": "int8<act=asymmetric>",
    "msfp12": "msfp12",
    "msfp16": "msfp16",
    "bfp<k=16,m=3,e=8>": "msfp12",
    "bfp<m=7>": "msfp16",
    "bfp<k=16,m=5,e=8>": "bfp<k=16,m=5,e=8>",
    "bfp<e=5, k=128, m=4>": "bfp<k=128,m=4,e=5>",
    "bfp<k=16,m=3,round=trunc>": "bfp<k=16,m=3,e=8,round=truncate>",
}


@pytest.mark.parametrize(("name", "canonical"), NAMES.items())
def test_names_parse_and_round_trip(name: str, canonical: str) -> None:
    fmt = get_format(name)
    assert str(fmt) == canonical
    assert get_format(str(fmt)) == fmt and hash(get_format(str(fmt))) == hash(fmt)
    assert type(fmt).parse(str(fmt)) == fmt
    assert repr(fmt) == f"{type(fmt).__name__}({canonical!r})"
    assert get_format(fmt) is fmt


def test_every_example_parses() -> None:
    examples = available_formats()
    assert {"fixed<16,6>", "int8", "msfp12", "msfp16", "bfp<k=16,m=5,e=8>"} <= set(examples)
    for name in examples:
        assert str(get_format(name)) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("int4", r"unknown number format 'int4': use one of fixed<16,6>, .*msfp12"),
        ("msfp13", "unknown number format 'msfp13'"),
        ("fixed<16>", r"is not a fixed point type: use fixed<W,I>"),
        ("fixed<16,6,AP_ROUND>", r"unknown rounding mode 'AP_ROUND': use one of AP_TRN, AP_TRN_ZERO"),
        ("ap_fixed<16,6,AP_RND,AP_CLAMP>", r"unknown overflow mode 'AP_CLAMP': use one of AP_WRAP, AP_SAT"),
        ("fixed<0,0>", r"width W=0 is not supported: use an integer 1\.\.62"),
        ("fixed<64,6>", r"W=64 is not supported"),
        ("fixed<x,6>", r"width W 'x' is not an integer"),
        ("ap_fixed<16,6,AP_RND,AP_SAT,2>", "saturation bits N other than 0 are not supported"),
        ("fixed<16,,6>", "empty argument"),
        ("fixed<16,6", "is not a format name"),
        ("ap_fixed<1,1,AP_TRN,AP_SAT_SYM>", "AP_SAT_SYM needs a signed width W >= 2"),
        ("int8<act=minmax>", "use symmetric or asymmetric"),
        ("int8<bits=4>", r"use int8, int8<act=symmetric> or int8<act=asymmetric>"),
        ("bfp<k=16>", "the mantissa bits m are required"),
        ("bfp<k=16,m=3,x=1>", r"bad argument 'x=1'"),
        ("bfp<k=16,m=3,k=8>", r"bad argument 'k=8'"),
        ("bfp<k=0,m=3>", r"block size k=0 is not supported: use an integer 1\.\.65536"),
        ("bfp<m=31>", r"mantissa bits m=31 is not supported"),
        ("bfp<m=3,e=1>", r"exponent bits e=1 is not supported"),
        ("bfp<m=3,round=up>", "unknown rounding 'up': use nearest_even or truncate"),
        ("msfp12<k=8>", "is not a block floating point format"),
        ("", "is not a format name"),
    ],
)
def test_bad_names_say_what_is_wrong_and_what_is_accepted(name: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        get_format(name)


def test_format_error_is_a_value_error_and_non_strings_are_refused() -> None:
    assert issubclass(FormatError, ValueError)
    with pytest.raises(FormatError, match="must be a string, got int"):
        get_format(16)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="W=0"):
        FixedPoint(0, 0)
    with pytest.raises(FormatError, match="mantissa bits m=0"):
        BlockFloatingPoint(mantissa_bits=0)


def test_bits_per_value_and_hls_precision() -> None:
    assert get_format("fixed<16,6>").bits_per_value == 16
    assert get_format("int8").bits_per_value == 8
    assert get_format("msfp12").bits_per_value == 4.5  # 1 + 3 + 8/16
    assert get_format("msfp16").bits_per_value == 8.5
    assert get_format("bfp<k=128,m=4,e=5>").bits_per_value == 1 + 4 + 5 / 128
    assert get_format("fixed<16,6>").to_hls_precision() == "ap_fixed<16,6>"
    assert get_format("ufixed<8,0>").to_hls_precision() == "ap_ufixed<8,0>"
    assert get_format("ap_fixed<16,6,AP_RND,AP_SAT>").to_hls_precision() == "ap_fixed<16,6,AP_RND,AP_SAT>"
    assert get_format("int8").to_hls_precision() is None
    assert get_format("msfp16").to_hls_precision() is None


@pytest.mark.parametrize(
    "name", ["fixed<16,6>", "ap_fixed<8,3,AP_RND_CONV,AP_SAT_SYM>", "ap_ufixed<12,4,AP_RND,AP_SAT>"]
)
def test_hls4ml_reads_our_precision_and_we_read_its(name: str) -> None:
    backend = pytest.importorskip("hls4ml.backends.fpga.fpga_backend").FPGABackend
    fmt = get_format(name)
    theirs = backend.convert_precision_string(fmt.to_hls_precision())
    assert (theirs.width, theirs.integer, theirs.signed) == (fmt.width, fmt.integer, fmt.signed)
    assert get_format(str(theirs)) == fmt


def test_fixed_point_wrappers_call_the_kernels() -> None:
    fmt = get_format("ap_fixed<8,3,AP_RND,AP_SAT>")
    assert isinstance(fmt, FixedPoint)
    assert (fmt.lsb, fmt.max_value, fmt.min_value) == (1 / 32, 4 - 1 / 32, -4.0)
    assert get_format("ap_fixed<8,3,AP_RND,AP_SAT_SYM>").min_value == -4 + 1 / 32
    x = np.random.default_rng(0).normal(0, 3, (4, 9)).astype(np.float32)
    q = fmt.quantize_weights(x, name="fc.W")
    assert q.format is fmt and np.array_equal(q.codes, fixed.quantize(x, 8, 3, "AP_RND", "AP_SAT"))
    assert np.array_equal(q.dequantize(), fixed.fake_quantize(x, 8, 3, "AP_RND", "AP_SAT"))
    assert q.dequantize().dtype == np.float32
    assert np.array_equal(fmt.fake_quantize_activations(x), fmt.fake_quantize_weights(x))
    with pytest.raises(ValueError, match=r"fc\.W holds 1 NaN/inf"):
        fmt.quantize_weights(np.array([np.nan]), name="fc.W")
    with pytest.raises(FormatError, match="takes no activation parameters"):
        fmt.quantize_activations(x, scale=1.0)


def test_int8_wrappers() -> None:
    fmt = get_format("int8")
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (8, 27)).astype(np.float32)
    q = fmt.quantize_weights(w, channel_axis=0)
    codes, scales = int8.quantize_weights(w, 0)
    assert np.array_equal(q.codes, codes) and np.array_equal(q.scale, scales) and q.axis == 0
    assert np.array_equal(q.dequantize(), int8.dequantize(codes, scales, 0, 0))
    # MatMul weights (K, N): output channels on axis 1
    qt = fmt.quantize_weights(w.T, channel_axis=1)
    assert np.array_equal(qt.codes, codes.T) and np.array_equal(qt.dequantize(), q.dequantize().T)
    x = rng.normal(0, 1, (64, 27)).astype(np.float32)
    a = fmt.quantize_activations(x)
    scale, zp = int8.activation_params(x)
    assert a.scale == scale and a.zero_point == zp and np.array_equal(a.codes, int8.quantize(x, scale, zp))
    calibrated = fmt.quantize_activations(x, scale=0.05)  # a calibrated scale wins over the tensor's range
    assert np.array_equal(calibrated.dequantize(), int8.fake_quantize(x, np.float32(0.05)))
    assert fmt.activation_params(lo=-1.0, hi=2.0) == int8.activation_params(lo=-1.0, hi=2.0)
    asym = get_format("int8<act=asymmetric>")
    assert asym.activation_params(lo=0.0, hi=2.55)[1] == -128
    with pytest.raises(FormatError, match="int8 activations take scale= and zero_point="):
        fmt.quantize_activations(x, bits=4)


def test_bfp_wrappers_block_along_the_dot_product_axis() -> None:
    fmt = get_format("msfp12")
    assert isinstance(fmt, BlockFloatingPoint) and (fmt.block_size, fmt.mantissa_bits, fmt.exponent_bits) == (16, 3, 8)
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (10, 40)).astype(np.float32)  # Gemm weight (N, K) with transB=1: K is axis 1
    q = fmt.quantize_weights(w)
    assert q.axis == 1 and q.exponents.shape == (10, 3)
    assert np.array_equal(q.dequantize(), bfp.fake_quantize(w, 1, 16, 3, 8))
    conv = rng.normal(0, 1, (8, 20, 3, 3))  # Conv weight (O, C, kh, kw): blocks along C
    assert fmt.quantize_weights(conv).exponents.shape == (8, 2, 3, 3)
    x = rng.normal(0, 1, (64, 40)).astype(np.float32)
    assert np.array_equal(fmt.fake_quantize_activations(x), bfp.fake_quantize(x, 1, 16, 3, 8))
    assert np.array_equal(fmt.fake_quantize_activations(x.T, block_axis=0), bfp.fake_quantize(x, 1, 16, 3, 8).T)
    err12 = np.abs(get_format("msfp12").fake_quantize_weights(w) - w).mean()
    err16 = np.abs(get_format("msfp16").fake_quantize_weights(w) - w).mean()
    assert err16 < err12 / 8  # four more mantissa bits: about 16x smaller errors


def test_register_format_refuses_a_taken_prefix() -> None:
    class Other(NumberFormat):
        prefixes = ("int8",)

    with pytest.raises(ValueError, match="prefix 'int8' is already taken by Int8"):
        register_format(Other)
    assert isinstance(get_format("int8"), Int8)
