"""The package folder ``CompiledModel.save`` writes is what the serving runtime loads: one pipeline
(``edge_module.scoring.fpga_runtime.FpgaPipeline``) runs both, the signature the runtime checks
requests with comes from the model, and a package without a host part or without a signature behaves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_module.scoring.fpga_runtime import FpgaPackageError, FpgaPipeline, FpgaRuntime, read_manifest
from fpga import CompiledModel, compile_onnx

from .models import Builder, run_onnx, sin_mlp


def cnn() -> object:
    b = Builder(4)
    h = b.node("Relu", [b.conv("x", 2, 4, pads=[1, 1, 1, 1])], name="relu")
    p = b.node("MaxPool", [h], name="pool", kernel_shape=[2, 2], strides=[2, 2])
    flat = b.node("Flatten", [p], name="flatten")
    logits = b.node("Gemm", [flat, b.rand(5, 64), b.rand(5)], name="fc", transB=1)
    return b.model({"x": [2, 8, 8]}, [logits])


X = np.random.default_rng(1).standard_normal((16, 2, 8, 8)).astype(np.float32)


def test_a_package_without_host_part_is_served_as_compiled(tmp_path) -> None:
    model = cnn()
    compiled = compile_onnx(model, "fixed<16,6>", calibration=X)
    assert isinstance(compiled.pipeline, FpgaPipeline) and compiled.pipeline.accelerator is compiled.program
    assert compiled.host_bytes is None and not compiled.report["host"]
    folder = compiled.save(tmp_path / "pkg")
    manifest = read_manifest(folder)
    assert manifest["host"] is None and not (folder / "host.onnx").exists()
    assert manifest["signature"] == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2, 8, 8]}],
        "outputs": [{"name": compiled.outputs[0], "datatype": "FP32", "shape": [-1, 5]}],
    }
    rt = FpgaRuntime(folder, "cnn")
    rt.load()
    got = rt.predict({"x": X})[compiled.outputs[0]]
    assert np.array_equal(got, compiled.predict(X))
    np.testing.assert_allclose(got, run_onnx(model, {"x": X})[0], atol=0.05)


def test_host_ops_run_after_the_accelerator_in_both(tmp_path) -> None:
    model = sin_mlp()
    x = np.random.default_rng(2).random((20, 64), dtype=np.float32)
    compiled = compile_onnx(model, "msfp16")
    assert [op["op"] for op in compiled.report["host"]] == ["Sin", "Softmax"]
    rt = FpgaRuntime(compiled.save(tmp_path / "sin"), "sin")
    rt.load()
    (name,) = compiled.outputs
    got = rt.predict({"x": x})[name]
    assert np.array_equal(got, compiled.predict(x))
    np.testing.assert_allclose(got.sum(axis=1), 1, rtol=1e-5)  # the host's Softmax ran on the emulated logits
    np.testing.assert_allclose(got, run_onnx(model, {"x": x})[0], atol=0.02)


def test_a_package_without_signature_names_the_fix(tmp_path) -> None:
    folder = compile_onnx(cnn(), "msfp12").save(tmp_path / "old")
    manifest = json.loads((folder / "fpga.json").read_text())
    manifest.pop("signature")
    (folder / "fpga.json").write_text(json.dumps(manifest))
    assert CompiledModel.load(folder).signature is None  # the compiler side still loads it
    with pytest.raises(FpgaPackageError, match="no datatype for input 'x'; recompile the package"):
        FpgaRuntime(folder).load()
