"""The graph model: Gemm/MatMul(+Add) as Dense, BatchNormalization folded exactly."""

from __future__ import annotations

import numpy as np
import pytest

from fpga import compile_onnx
from fpga.graph import fold_batchnorm, load_graph

from .models import Builder, run_onnx


def _conv_bn() -> tuple[Builder, object]:
    b = Builder(1)
    y = b.batchnorm(b.conv("x", 2, 4, pads=[1, 1, 1, 1]), 4)
    return b, b.model({"x": [2, 5, 5]}, [y])


def test_batchnorm_folds_into_the_conv_exactly() -> None:
    _, model = _conv_bn()
    graph = load_graph(model)
    assert [(lay.op, lay.source) for lay in graph.layers] == [("Conv", ["conv1", "batchnormalization2"])]
    init = {t.name: onnx_array(t) for t in model.graph.initializer}
    w, bias, gamma, beta, mean, var = (init[n] for n in ("c0", "c1", "c2", "c3", "c4", "c5"))
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-3)
    want_w = (w.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    want_b = ((bias.astype(np.float64) - mean) * scale + beta).astype(np.float32)
    folded = graph.layers[0].weights
    assert np.array_equal(folded["weight"], want_w) and np.array_equal(folded["bias"], want_b)
    assert graph.layers[0].output == model.graph.output[0].name  # the folded layer produces the BN's tensor
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5)).astype(np.float32)
    got = compile_onnx(model, "float").predict(x)
    np.testing.assert_allclose(got, run_onnx(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def onnx_array(tensor) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def test_fold_batchnorm_on_dense_scales_the_output_axis() -> None:
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)  # (K=3, M=2)
    folded_w, folded_b = fold_batchnorm(
        w, np.zeros(2, np.float32), [2.0, 1.0], [0.5, 0.0], [1.0, 0.0], [3.0, 0.0], 1.0, 1
    )
    assert np.array_equal(folded_w, np.array([[1, 2], [3, 4], [5, 6]], np.float32) * np.array([1.0, 1.0], np.float32))
    assert np.array_equal(folded_b, np.array([-0.5, 0.0], np.float32))


def test_gemm_with_alpha_beta_and_batchnorm_becomes_one_dense() -> None:
    b = Builder(2)
    y = b.node("Gemm", ["x", b.rand(5, 6), b.rand(5)], transB=1, alpha=0.5, beta=2.0)
    y = b.batchnorm(y, 5)
    model = b.model({"x": [6]}, [y])
    graph = load_graph(model)
    assert [lay.op for lay in graph.layers] == ["Dense"]
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(
        compile_onnx(model, "float").predict(x), run_onnx(model, {"x": x})[0], rtol=1e-5, atol=1e-5
    )


def test_matmul_and_its_bias_add_become_one_dense() -> None:
    b = Builder(3)
    y = b.node("Add", [b.node("MatMul", ["x", b.rand(6, 3)]), b.rand(3)])
    model = b.model({"x": [6]}, [b.node("Relu", [y])])
    graph = load_graph(model)
    assert [(lay.op, len(lay.source)) for lay in graph.layers] == [("Dense", 2), ("Relu", 1)]
    assert [lay.op for lay in load_graph(model, fold=False).layers] == ["MatMul", "Add", "Relu"]
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(compile_onnx(model, "float").predict(x), run_onnx(model, {"x": x})[0], rtol=1e-6)


def test_a_batchnorm_whose_input_is_read_elsewhere_is_not_folded() -> None:
    b = Builder(4)
    conv = b.conv("x", 1, 2)
    bn = b.batchnorm(conv, 2)
    model = b.model({"x": [1, 4, 4]}, [bn, conv])
    assert [lay.op for lay in load_graph(model).layers] == ["Conv", "BatchNormalization"]


def test_an_invalid_model_is_refused_with_the_fix() -> None:
    b = Builder()
    model = b.model({"x": [3]}, [b.node("Relu", ["x"])])
    model.graph.node[0].input[0] = "missing"
    with pytest.raises(ValueError, match="not valid"):
        load_graph(model)
