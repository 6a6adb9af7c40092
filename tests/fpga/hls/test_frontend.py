"""The ONNX front end hls4ml needs: qonnx cleanup -> channels-last -> Gemm to MatMul -> cleanup."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from fpga.hls import HlsError, layer_name_map, prepare_onnx
from fpga.hls.frontend import explicit_maxpool_pads
from tests.fpga.digits_models import digits, run_float, sklearn_mlp_onnx, torch_cnn_onnx


def test_prepare_mlp_gives_matmul_add_and_shapes_on_every_weight():
    from qonnx.core.onnx_exec import execute_onnx

    prepared = prepare_onnx(sklearn_mlp_onnx())
    assert [n.op_type for n in prepared.graph.node] == ["MatMul", "Add", "Relu", "MatMul", "Add", "Softmax"]
    annotated = {v.name for v in prepared.graph.value_info}
    assert {t.name for t in prepared.graph.initializer} <= annotated
    assert prepared.get_tensor_shape(prepared.graph.input[0].name) == [1, 64]
    _, _, x, _ = digits()
    out = execute_onnx(prepared, {prepared.graph.input[0].name: x[:1]})[prepared.graph.output[0].name]
    np.testing.assert_allclose(out, run_float(sklearn_mlp_onnx(), x[:1]), rtol=1e-5, atol=1e-6)


def test_layer_names_map_to_the_prepared_graph():
    model = sklearn_mlp_onnx()
    names = layer_name_map(model, prepare_onnx(model))
    assert names == {"dense0": "MatMul_0", "relu0": "Relu_0", "dense1": "MatMul_1", "softmax": "Softmax_0"}


def test_maxpool_auto_pad_becomes_explicit_pads():
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 5, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 3, 3])],
    )
    model = helper.make_model(graph)
    assert explicit_maxpool_pads(model) == 1
    attrs = {a.name: helper.get_attribute_value(a) for a in model.graph.node[0].attribute}
    assert "auto_pad" not in attrs and attrs["pads"] == [0, 0, 1, 1]


def test_missing_model_refused(tmp_path):
    with pytest.raises(HlsError, match="does not exist"):
        prepare_onnx(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_torch_cnn_becomes_channels_last():
    prepared = prepare_onnx(torch_cnn_onnx())
    assert prepared.get_tensor_shape(prepared.graph.input[0].name) == [1, 8, 8, 1]
    assert "Transpose" not in [n.op_type for n in prepared.graph.node]
