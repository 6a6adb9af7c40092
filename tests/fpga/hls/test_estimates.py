"""Estimates are labelled estimates, positive, and scale with the reuse factor."""

from __future__ import annotations

from fpga.hls import estimate, format_estimates, prepare_onnx
from tests.fpga.digits_models import sklearn_mlp_onnx


def test_estimates_are_positive_labelled_and_halve_with_reuse():
    prepared = prepare_onnx(sklearn_mlp_onnx())
    one = estimate(prepared, reuse_factor=1, clock_period=5)
    two = estimate(prepared, reuse_factor=2, clock_period=5)
    assert one["kind"] == two["kind"] == "estimate"
    t1, t2 = one["total"], two["total"]
    assert t1["multipliers"] == 64 * 32 + 32 * 10 and t1["dsp"] > 0 and t1["latency_cycles"] > 0
    assert t2["multipliers"] * 2 == t1["multipliers"] and t2["dsp"] * 2 == t1["dsp"]
    assert t1["weight_bits"] == t2["weight_bits"] == (64 * 32 + 32 + 32 * 10 + 10) * 16
    assert t1["bram18"] == 3  # 38 560 bits over 18 432-bit blocks, if held in BRAM
    assert t2["ii_cycles"] == 2 and t2["latency_cycles"] > t1["latency_cycles"]
    assert t1["latency_ns"] == t1["latency_cycles"] * 5
    dense = [row for row in one["layers"] if row["op"] == "MatMul"]
    assert [row["multipliers"] for row in dense] == [2048, 320]
    text = format_estimates(one)
    assert text.startswith("ESTIMATES") and "not synthesis" in text and "total (estimate)" in text


def test_wide_operands_take_more_dsps():
    prepared = prepare_onnx(sklearn_mlp_onnx())
    wide = {"MatMul_0": {"weight": "ap_fixed<32,8>"}}
    assert estimate(prepared, wide)["layers"][0]["dsp"] == 2 * estimate(prepared)["layers"][0]["dsp"]
