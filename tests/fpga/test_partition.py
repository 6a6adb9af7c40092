"""Partition: unsupported ops and what follows them go to the host, the report says why, both parts run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from fpga import compile_onnx
from fpga.graph import load_graph
from fpga.partition import partition

from .models import Builder, run_onnx


def _with_sin() -> object:
    b = Builder(7)
    h = b.node("Relu", [b.conv("x", 1, 3, pads=[1, 1, 1, 1])], name="relu_a")
    side = b.node("MaxPool", [h], name="pool_a", kernel_shape=[2, 2], strides=[2, 2])
    s = b.node("Sin", [h], name="sin")
    h = b.node("Relu", [b.conv(s, 3, 2, name="conv_after_sin")], name="relu_b")
    pooled = b.node("MaxPool", [h], name="pool_ceil", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    flat = b.node("Flatten", [side], name="flat")
    logits = b.node("Gemm", [flat, b.rand(27, 4)], name="fc")
    probs = b.node("Softmax", [logits], name="softmax", axis=1)
    return b.model({"x": [1, 6, 6]}, [probs, pooled])


def test_an_unsupported_op_and_what_follows_it_run_on_the_host() -> None:
    part = partition(load_graph(_with_sin()))
    assert [lay.name for lay in part.accelerator] == ["conv1", "relu_a", "pool_a", "flat", "fc"]
    reasons = {op.name: op.reason for op in part.host}
    assert list(reasons) == ["sin", "conv_after_sin", "relu_b", "pool_ceil", "softmax"]
    assert "op type Sin has no accelerator kernel" in reasons["sin"]
    assert "after a host op" in reasons["conv_after_sin"] and "(by sin, Sin)" in reasons["conv_after_sin"]
    assert "ceil_mode=1" in reasons["pool_ceil"] or "after a host op" in reasons["pool_ceil"]
    assert "Softmax has no accelerator kernel" in reasons["softmax"]
    assert set(part.boundary) == {"t2", "t9"}  # relu_a (read by Sin) and fc's logits (read by Softmax)
    assert part.report()["host"][0] == {"name": "sin", "op": "Sin", "reason": reasons["sin"], "nodes": ["sin"]}


def test_a_supported_op_with_an_unsupported_attribute_runs_on_the_host() -> None:
    b = Builder(8)
    h = b.node("MaxPool", [b.conv("x", 1, 2)], name="pool", kernel_shape=[2, 2], ceil_mode=1)
    g = b.conv("x", 1, 2, name="grouped_ok")
    model = b.model({"x": [1, 7, 7]}, [h, g])
    part = partition(load_graph(model))
    assert [(op.name, op.reason) for op in part.host] == [("pool", "ceil_mode=1 is not supported")]
    b = Builder(9)
    model = b.model({"x": [4, 5, 5]}, [b.node("Conv", ["x", b.rand(4, 2, 3, 3)], name="dw", group=2)])
    part = partition(load_graph(model))
    assert "group=2" in part.host[0].reason and not part.accelerator


def test_the_compiled_model_runs_the_host_part_in_onnxruntime(tmp_path) -> None:
    model = _with_sin()
    x = np.random.default_rng(0).standard_normal((5, 1, 6, 6)).astype(np.float32)
    compiled = compile_onnx(model, "float")
    want = run_onnx(model, {"x": x})
    got = compiled.run(x)
    for name, expected in zip(compiled.outputs, want, strict=True):
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6)
    accel = compiled.save(tmp_path) / "accelerator.onnx"
    assert (tmp_path / "host.onnx").exists() and accel.exists()
    assert run_onnx(onnx.load(str(accel)), {"x": x})[0].shape == (5, 3, 6, 6)
    quantized = compile_onnx(model, "fixed<16,6>", calibration=x)
    np.testing.assert_allclose(quantized.predict(x), want[0], atol=0.01)


def test_a_model_with_nothing_for_the_accelerator_says_why() -> None:
    b = Builder()
    model = b.model({"x": [3]}, [b.node("Relu", [b.node("Sin", ["x"], name="pre")])])
    with pytest.raises(ValueError, match=r"pre \(Sin\): op type Sin has no accelerator kernel"):
        compile_onnx(model, "msfp16")
