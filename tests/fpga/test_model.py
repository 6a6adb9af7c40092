"""compile_onnx on a graph with every accelerator op: float emulation matches onnxruntime, each format
stays close, overrides and accumulators reach the program, save/load round-trips, errors are clear."""

from __future__ import annotations

import numpy as np
import pytest

from fpga import CompiledModel, compile_onnx
from fpga.formats import FormatError

from .models import Builder, run_onnx


def every_op_model() -> object:
    b = Builder(11)
    a = b.node("Relu", [b.batchnorm(b.conv("x", 2, 4, pads=[1, 1, 1, 1]), 4)], name="relu1")
    c = b.conv("x", 2, 4, name="conv_dilated", pads=[2, 1, 2, 1], dilations=[2, 1])
    s = b.node("Add", [a, c], name="add")
    p1 = b.node("MaxPool", [s], name="maxpool", kernel_shape=[2, 2], strides=[2, 2])
    p2 = b.node("AveragePool", [s], name="avgpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    p3 = b.node("AveragePool", [s], name="avgpool_incl", kernel_shape=[2, 2], strides=[2, 2], count_include_pad=1)
    cat = b.node("Concat", [p1, p2, p3], name="concat", axis=1)
    g = b.node("GlobalAveragePool", [b.conv(cat, 12, 6, k=1, strides=[1, 1])], name="gap")
    flat = b.node("Flatten", [b.conv(cat, 12, 3, pads=[1, 1, 1, 1], strides=[2, 2])], name="flatten")
    r = b.node("Reshape", [g, b.const(np.array([0, -1], np.int64))], name="reshape")
    both = b.node("Concat", [flat, r], name="concat2", axis=1)
    logits = b.node("Gemm", [both, b.rand(10, 18), b.rand(10)], name="fc", transB=1)
    return b.model({"x": [2, 8, 8]}, [logits])


X = np.random.default_rng(3).standard_normal((64, 2, 8, 8)).astype(np.float32)


def test_float_emulation_matches_onnxruntime_on_every_op() -> None:
    model = every_op_model()
    compiled = compile_onnx(model, "float")
    assert not compiled.report["host"]
    np.testing.assert_allclose(compiled.predict(X), run_onnx(model, {"x": X})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("fmt", "tolerance"), [("fixed<16,6>", 0.002), ("int8", 0.05), ("msfp16", 0.04), ("msfp12", 0.4)]
)
def test_each_format_stays_close_to_float(fmt: str, tolerance: float, tmp_path) -> None:
    model = every_op_model()
    want = run_onnx(model, {"x": X})[0]
    compiled = compile_onnx(model, fmt, calibration=X)
    got = compiled.predict(X)
    assert 0 < np.linalg.norm(got - want) / np.linalg.norm(want) < tolerance  # relative error of this random net
    again = CompiledModel.load(compiled.save(tmp_path))
    assert np.array_equal(again.predict(X), got)
    assert again.report["format"] == str(compiled.report["format"])


def test_fixed_precision_follows_the_ranges_and_the_output_is_safe() -> None:
    compiled = compile_onnx(every_op_model(), "fixed<12,4>", calibration=X)
    layers = {lay["name"]: lay for lay in compiled.report["layers"]}
    ranges = compiled.report["ranges"]
    for spec in compiled.program.spec["layers"]:
        name, out = spec["name"], spec["output"]
        fmt = compiled.program.tensors[out]
        amax = max(abs(v) for v in ranges[out])
        assert 2 ** (fmt["integer"] - 1) > amax, (name, fmt, amax)
    assert layers["fc"]["result"].startswith("ap_fixed<12,") and "AP_RND,AP_SAT" in layers["fc"]["result"]
    assert layers["relu1"]["result"] == compiled.report["tensors"][compiled.program.spec["layers"][0]["output"]]


def test_overrides_and_accumulators_reach_the_program() -> None:
    compiled = compile_onnx(
        every_op_model(),
        "fixed<16,6>",
        calibration=X,
        overrides={
            "fc": {"result": "ap_fixed<18,8,AP_RND,AP_SAT>", "accum": "ap_fixed<24,10,AP_TRN,AP_SAT>"},
            "x": "fixed<8,3>",
        },
    )
    fc = next(lay for lay in compiled.report["layers"] if lay["name"] == "fc")
    assert fc["result"] == "ap_fixed<18,8,AP_RND,AP_SAT>" and fc["accum"] == "ap_fixed<24,10,AP_TRN,AP_SAT>"
    assert compiled.report["tensors"]["x"] == "fixed<8,3>"
    assert np.isfinite(compiled.predict(X[:4])).all()
    mixed = compile_onnx(every_op_model(), "msfp16", overrides={"fc": "msfp12"})
    assert next(lay for lay in mixed.report["layers"] if lay["name"] == "fc")["bfp"] == "msfp12"


def test_errors_say_what_to_do() -> None:
    with pytest.raises(FormatError, match="int8 needs calibration data"):
        compile_onnx(every_op_model(), "int8")
    with pytest.raises(FormatError, match="unknown accelerator layers or inputs"):
        compile_onnx(every_op_model(), "fixed<16,6>", overrides={"nope": "fixed<8,3>"})
    with pytest.raises(FormatError, match="fixed-point model takes fixed formats"):
        compile_onnx(every_op_model(), "fixed<16,6>", overrides={"fc": "msfp12"})
    with pytest.raises(FormatError, match="unknown number format"):
        compile_onnx(every_op_model(), "posit8")
