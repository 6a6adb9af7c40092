"""INT8 kernels against onnxruntime's QuantizeLinear/DequantizeLinear and qonnx's Quant, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from edge_module.numerics import int8


def _ort_qdq(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes, dequantized) from onnxruntime running a QuantizeLinear -> DequantizeLinear graph."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero_point, "z")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [
            helper.make_tensor_value_info("q", TensorProto.INT8, list(x.shape)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape)),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    q, y = session.run(None, {"x": x})
    return q, y


def test_per_channel_weights_match_onnxruntime() -> None:
    rng = np.random.default_rng(8)
    w = (rng.normal(0, 0.2, (16, 3, 3, 3)) * rng.uniform(0.1, 10, (16, 1, 1, 1))).astype(np.float32)
    w[3] = 0.0  # an all-zero channel
    codes, scales = int8.quantize_weights(w, axis=0)
    assert codes.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == (16,)
    assert codes.min() >= -127 and codes.max() <= 127
    assert (np.abs(codes).reshape(16, -1).max(axis=1) == np.where(np.arange(16) == 3, 0, 127)).all()
    q, y = _ort_qdq(w, scales, np.zeros(16, np.int8), axis=0)
    assert np.array_equal(codes, q)
    assert np.array_equal(int8.dequantize(codes, scales, 0, axis=0), y)
    assert np.array_equal(int8.fake_quantize(w, scales, 0, axis=0), y)


@pytest.mark.parametrize("symmetric", [True, False])
def test_per_tensor_activations_match_onnxruntime(symmetric: bool) -> None:
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.normal(0.5, 2, 5000), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    scale, zero_point = int8.activation_params(x, symmetric=symmetric)
    # ties: exact halves of the scale, on both sides of zero
    x = np.concatenate([x, (np.arange(-20, 21) + 0.5).astype(np.float32) * scale, [x.max() * 3, x.min() * 3]])
    x = x.astype(np.float32)
    q, y = _ort_qdq(x, np.array(scale, np.float32), np.array(zero_point, np.int8), axis=1)
    assert np.array_equal(int8.quantize(x, scale, zero_point), q)
    assert np.array_equal(int8.fake_quantize(x, scale, zero_point), y)


def test_activation_params() -> None:
    scale, zp = int8.activation_params(np.array([-1.0, 0.5, 2.54]))
    assert scale == np.float32(2.54 / 127) and zp == 0
    scale, zp = int8.activation_params(lo=0.0, hi=2.55, symmetric=False)  # ReLU output: all of int8 for [0, 2.55]
    assert scale == np.float32(0.01) and zp == -128
    scale, zp = int8.activation_params(lo=-1.0, hi=1.0, symmetric=False)
    low, zero, high = int8.quantize([-1.0, 0.0, 1.0], scale, zp).tolist()
    assert low == -128 and zero == zp and 126 <= high <= 127  # 0 is exact; the ends within a step
    assert int8.fake_quantize([0.0], scale, zp).tolist() == [0.0]
    assert int8.activation_params(np.zeros(4)) == (np.float32(1.0), 0)  # an all-zero tensor still gets a scale
    with pytest.raises(ValueError, match=r"lo=2\.0 is above hi=1\.0"):
        int8.activation_params(lo=2.0, hi=1.0)


def test_ties_round_half_to_even_and_out_of_range_saturates() -> None:
    s = np.float32(0.25)
    x = np.array([0.125, 0.375, -0.125, -0.375, 0.625, 1000.0, -1000.0, 1e300, 5e-324], dtype=np.float64)
    assert int8.quantize(x, s).tolist() == [0, 2, 0, -2, 2, 127, -128, 127, 0]
    assert int8.quantize(x, s, qmin=-127).tolist()[6] == -127


def test_matches_qonnx_quant() -> None:
    quant = pytest.importorskip("qonnx.custom_op.general.quant").quant
    rng = np.random.default_rng(10)
    w = rng.normal(0, 1, (8, 64)).astype(np.float32)
    codes, scales = int8.quantize_weights(w)
    theirs = quant(w, scales[:, None], np.float32(0), np.float32(8), True, True, "ROUND")
    assert np.array_equal(int8.dequantize(codes, scales, 0, axis=0), theirs)


def test_nan_and_inf_are_refused_naming_the_tensor() -> None:
    with pytest.raises(ValueError, match=r"fc1\.W holds 2 NaN/inf"):
        int8.quantize_weights(np.array([[1.0, np.nan], [np.inf, 2.0]]), name="fc1.W")
    with pytest.raises(ValueError, match="relu3 holds 1 NaN/inf"):
        int8.activation_params(np.array([1.0, -np.inf]), name="relu3")
    with pytest.raises(ValueError, match="scales must be finite and positive"):
        int8.quantize([1.0], 0.0)
