"""ONNX QDQ int8 export: per-channel weights, per-tensor activations, runs in onnxruntime."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from edge_module.numerics import int8 as int8_kernels
from fpga.export import export_qdq
from tests.fpga.digits_models import digits, run_float, sklearn_mlp_onnx


def test_qdq_int8_runs_in_onnxruntime_and_agrees_with_float():
    model = sklearn_mlp_onnx()
    x_tr, _, x, _ = digits()
    exported = export_qdq(model, x_tr[:300])
    got, ref = run_float(exported.model, x), run_float(model, x)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99
    ops = [n.op_type for n in exported.model.graph.node]
    assert ops.count("QuantizeLinear") == 4  # input, dense0, relu0 (dense1 feeds the softmax: quantized too)
    assert "probabilities" not in exported.activation_ranges


def test_weights_are_int8_per_output_channel():
    model = sklearn_mlp_onnx()
    x_tr, _, _, _ = digits()
    exported = export_qdq(model, x_tr[:100])
    inits = {t.name: numpy_helper.to_array(t) for t in exported.model.graph.initializer}
    w0 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w0"))
    codes, scales = int8_kernels.quantize_weights(w0, axis=1)  # Gemm weight [in, out]: channels on axis 1
    assert inits["w0_int8"].dtype == np.int8 and np.array_equal(inits["w0_int8"], codes)
    assert np.array_equal(inits["w0_scale"], scales) and inits["w0_scale"].shape == (32,)
    dq = next(n for n in exported.model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "w0")
    assert {a.name: helper.get_attribute_value(a) for a in dq.attribute} == {"axis": 1}
