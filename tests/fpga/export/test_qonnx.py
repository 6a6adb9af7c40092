"""QONNX export: Quant nodes with the right parameters, run by qonnx's executor bit for bit against a
float reference quantized with edge_module's fake_quantize."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from fpga.export import export_qonnx, run_qonnx
from fpga.export._graph import ExportError
from fpga.formats import get_format
from tests.fpga.digits_models import digits, run_float, sklearn_mlp_onnx


def _weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}


def _reference(model, x: np.ndarray, fmt: str) -> np.ndarray:
    """The MLP in float64 with weights, biases, the input and every layer output fake-quantized."""
    f = get_format(fmt)

    def fq(v):
        return f.fake_quantize(v).astype(np.float64)

    w = _weights(model)
    h = fq(x)
    h = fq(h @ fq(w["w0"]) + fq(w["b0"]))
    h = fq(np.maximum(h, 0))
    return fq(h @ fq(w["w1"]) + fq(w["b1"]))


@pytest.mark.parametrize("fmt", ["ap_fixed<10,4,AP_RND_CONV,AP_SAT>", "ap_fixed<10,4,AP_TRN,AP_SAT>"])
def test_qonnx_executor_matches_fake_quantized_reference_bit_for_bit(fmt):
    # 10-bit values with 6 fractional bits: products and sums are exact in the executor's float32, so
    # any difference would be a quantizer difference (none: Quant == ap_fixed for these modes).
    model = sklearn_mlp_onnx(softmax=False)
    _, _, x, _ = digits()
    exported = export_qonnx(model, default=fmt)
    got = run_qonnx(exported.model, x)
    assert np.array_equal(got, _reference(model, x, fmt))
    assert exported.notes == []


def test_quant_nodes_carry_fixed_point_parameters():
    exported = export_qonnx(sklearn_mlp_onnx(), default="ap_fixed<10,4,AP_RND_CONV,AP_SAT>")
    quants = [n for n in exported.model.graph.node if n.op_type == "Quant"]
    inits = {t.name: numpy_helper.to_array(t) for t in exported.model.graph.initializer}
    # input, 2 weights, 2 biases, 2 dense outputs, the relu output; not the softmax (host side)
    assert len(quants) == 8 and "probabilities" not in exported.formats
    for node in quants:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == "qonnx.custom_op.general"
        assert attrs == {"signed": 1, "narrow": 0, "rounding_mode": b"ROUND"}
        assert inits[node.input[1]] == np.float32(2.0**-6)
        assert inits[node.input[2]] == 0 and inits[node.input[3]] == 10
    shapes = {v.name for v in exported.model.graph.value_info}
    assert {"w0", "w1", "b0", "b1"} <= shapes  # weights keep a shape annotation (hls4ml needs it)


def test_per_layer_formats_and_accuracy():
    model = sklearn_mlp_onnx()
    _, _, x, _ = digits()
    exported = export_qonnx(
        model,
        {"dense0": {"weight": "fixed<8,2,AP_RND_CONV,AP_SAT>"}, "relu0": "ufixed<8,3,AP_TRN,AP_SAT>"},
        default="ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
    )
    assert exported.formats["w0"] == "ap_fixed<8,2,AP_RND_CONV,AP_SAT>"
    assert exported.formats["relu0"] == "ap_ufixed<8,3,AP_TRN,AP_SAT>"
    assert exported.formats["b0"] == "ap_fixed<16,6,AP_RND_CONV,AP_SAT>"
    got, ref = run_qonnx(exported.model, x), run_float(model, x)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_wrap_is_noted_and_unsupported_rounding_refused():
    exported = export_qonnx(sklearn_mlp_onnx(), default="fixed<16,6>")  # AP_TRN, AP_WRAP
    assert any("AP_WRAP" in n for n in exported.notes)
    with pytest.raises(ExportError, match="AP_RND has no QONNX rounding mode"):
        export_qonnx(sklearn_mlp_onnx(), default="ap_fixed<16,6,AP_RND,AP_SAT>")
    with pytest.raises(ExportError, match="use export_qdq"):
        export_qonnx(sklearn_mlp_onnx(), default="int8")
    with pytest.raises(ExportError, match="neither a node nor"):
        export_qonnx(sklearn_mlp_onnx(), {"nope": "fixed<8,3>"})
