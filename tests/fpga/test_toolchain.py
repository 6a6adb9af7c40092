"""The compiled model's formats carried into hls4ml, QONNX and QDQ, and compared with the emulator.

Digits MLP (sklearn, hand-built ONNX) and CNN (torch) compiled with automatic per-layer fixed<16,*>
precision: the hls4ml C simulation of the accelerator part is bit-for-bit the emulator (the softmax runs
on the host in both); qonnx's executor is bit-for-bit on the MLP, and on the CNN differs only where its
float32 sums cross a rounding boundary (located and explained by ``compare``). int8 QDQ with the
compiled model's scales matches the int8 emulator in onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from fpga import compile_onnx
from fpga.export._graph import ExportError
from fpga.hls import HlsError, prepare_onnx
from fpga.toolchain import accelerator_model, compare, hls_for, hls_precisions, qdq_for, qonnx_for
from tests.fpga.digits_models import digits, run_float, sklearn_mlp_onnx, torch_cnn_onnx


def _mlp(fmt: str = "fixed<16,6>"):
    x_tr, _, _, _ = digits()
    return compile_onnx(sklearn_mlp_onnx(), fmt, calibration=x_tr)


def _cnn_data():
    x_tr, _, x_te, y_te = digits()
    return x_tr.reshape(-1, 1, 8, 8), x_te.reshape(-1, 1, 8, 8), y_te


def test_hls_precisions_are_the_emulator_formats():
    compiled = _mlp()
    model = accelerator_model(compiled)
    specs = hls_precisions(compiled, prepare_onnx(model), model)
    tensors = compiled.report["tensors"]
    layers = {lay["name"]: lay for lay in compiled.report["layers"]}
    assert specs["global_in"] == {"result": f"ap_{tensors['x']}"}
    assert specs["MatMul_0"] == {
        "result": f"ap_{layers['dense0']['result']}",
        "weight": f"ap_{layers['dense0']['weight']}",
        "bias": f"ap_{layers['dense0']['bias']}",
    }
    assert specs["Relu_0"]["result"] == specs["MatMul_0"]["result"]
    assert specs["MatMul_1"]["result"] == layers["dense1"]["result"] == "ap_fixed<16,7,AP_RND,AP_SAT>"


def test_qonnx_export_is_bit_exact_with_the_emulator_on_the_mlp():
    compiled = _mlp()
    _, _, x, y = digits()
    exported = qonnx_for(compiled)
    assert exported.formats["dense1"] == "ap_fixed<16,7,AP_RND_INF,AP_SAT>"  # AP_RND written as HALF_UP, noted
    assert any("HALF_UP" in note for note in exported.notes)
    result = compare(compiled, x, y, qonnx=exported)
    pair = result["pairs"]["emulated vs qonnx"]
    print("MLP fixed<16,*> emulated vs qonnx:", pair, result["accuracy"])
    assert result["qonnx_differences"] is None
    assert pair["bit_exact_fraction"] == 1.0 and pair["explanation"] == "bit-exact"
    assert result["pairs"]["float vs emulated"]["top1_agreement"] >= 0.99
    assert abs(result["accuracy"]["emulated"] - result["accuracy"]["float"]) <= 0.01


def test_int8_qdq_with_the_compiled_scales_matches_the_int8_emulator():
    compiled = _mlp("int8")
    x_tr, _, x, y = digits()
    exported = qdq_for(compiled, x_tr)
    scales = {t.name: t for t in exported.model.graph.initializer}
    assert np.float32(compiled.program.tensors["dense0"]["scale"]) == np.frombuffer(
        scales["dense0_act_scale"].raw_data, np.float32
    )
    result = compare(compiled, x, y, qdq=exported)
    pair = result["pairs"]["emulated vs qdq"]
    print("MLP int8 emulated vs QDQ in onnxruntime:", pair, result["accuracy"])
    assert pair["top1_agreement"] >= 0.99
    # onnxruntime computes the QDQ graph with float biases, yet every logit lands on the same int8 code here
    assert pair["bit_exact_fraction"] == 1.0
    assert result["pairs"]["float vs qdq"]["top1_agreement"] >= 0.99


def test_non_fixed_models_are_refused_with_the_reason(tmp_path):
    with pytest.raises(HlsError, match=r"HLS export needs a fixed-point format.*--format fixed<16,6>"):
        hls_for(_mlp("int8"), tmp_path / "int8")
    with pytest.raises(HlsError, match="HLS export needs a fixed-point format"):
        hls_for(compile_onnx(sklearn_mlp_onnx(), "msfp12"), tmp_path / "msfp")
    with pytest.raises(HlsError, match="need fixed-point formats"):
        qonnx_for(_mlp("int8"))
    with pytest.raises(ExportError, match="QDQ export takes int8 models"):
        qdq_for(_mlp())


def test_compare_reports_accuracy_and_agreement_without_exports():
    compiled = _mlp()
    _, _, x, y = digits()
    result = compare(compiled, x[:100], y[:100])
    assert set(result["accuracy"]) == {"float", "emulated"} and result["n"] == 100
    want = run_float(sklearn_mlp_onnx(), x[:100]).argmax(1)
    assert result["accuracy"]["float"] == float((want == y[:100]).mean())


def test_an_skl2onnx_model_drops_its_no_ops_and_compares_its_scores():
    """skl2onnx starts with a float-to-float Cast and ends with label + probabilities: the accelerator
    model has no Cast (hls4ml refuses it), and compare takes the score output, not the labels."""
    pytest.importorskip("skl2onnx")
    from tests.fpga.models import digits_mlp, digits_split

    x_tr, x_te, y_tr, y_te = digits_split()
    compiled = compile_onnx(digits_mlp(x_tr, y_tr), "fixed<16,6>", calibration=x_tr)
    assert "Cast" in {n.op_type for n in onnx.load_from_string(compiled.accelerator_bytes).graph.node}
    model = accelerator_model(compiled)
    assert {n.op_type for n in model.graph.node} <= {"MatMul", "Add", "Relu", "Gemm"}
    assert set(hls_precisions(compiled, prepare_onnx(model), model)) >= {"MatMul_0", "Relu_0", "MatMul_1"}
    result = compare(compiled, x_te, y_te)
    assert result["output"] == "probabilities" and compiled.outputs[0] == "label"
    assert result["accuracy"]["emulated"] >= result["accuracy"]["float"] - 0.01 > 0.9
    labels = compare(compiled, x_te[:50], y_te[:50], output="label")
    assert labels["output"] == "label" and labels["pairs"]["float vs emulated"]["top1_agreement"] >= 0.95
    with pytest.raises(ValueError, match="not a model output"):
        compare(compiled, x_te[:5], output="nope")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "io_type", "reuse"),
    [("Vitis", "io_parallel", 1), ("Vivado", "io_stream", 1), ("Vitis", "io_parallel", 4)],
)
def test_mlp_csim_is_bit_exact_with_the_emulator(tmp_path, backend, io_type, reuse):
    compiled = _mlp()
    _, _, x, y = digits()
    project = hls_for(compiled, tmp_path / "mlp", backend=backend, io_type=io_type, reuse_factor=reuse)
    project.compile()
    logits = project.predict(x)
    assert np.array_equal(logits, compiled.program.run(x)["dense1"])  # the accelerator part, bit for bit
    result = compare(compiled, x, y, hls=project)
    print(f"MLP {backend} {io_type} reuse {reuse}:", result["pairs"], result["accuracy"])
    assert result["pairs"]["float vs csim"]["top1_agreement"] >= 0.99
    assert result["pairs"]["emulated vs csim"]["top1_agreement"] == 1.0
    assert result["pairs"]["emulated vs csim"]["explanation"] == "bit-exact"


@pytest.mark.slow
def test_cnn_csim_qonnx_and_qdq_against_the_emulator(tmp_path):
    x_tr, x, y = _cnn_data()
    model = torch_cnn_onnx()
    compiled = compile_onnx(model, "fixed<16,6>", calibration=x_tr)
    assert [op["op"] for op in compiled.report["host"]] == ["Softmax"]
    project = hls_for(compiled, tmp_path / "cnn")
    assert project.channels_last_input
    project.compile()
    boundary = compiled.program.outputs[0]
    assert np.array_equal(project.predict(x), compiled.program.run(x)[boundary])
    result = compare(compiled, x, y, hls=project, qonnx=qonnx_for(compiled))
    print("CNN fixed<16,*>:", result["pairs"], result["accuracy"], result["qonnx_differences"])
    pairs = result["pairs"]
    assert pairs["float vs csim"]["top1_agreement"] >= 0.99
    assert pairs["emulated vs csim"]["bit_exact_fraction"] == 1.0
    assert abs(result["accuracy"]["emulated"] - result["accuracy"]["float"]) <= 0.01
    # qonnx's executor sums in float32: where a sum lands across a rounding boundary it is one code off
    qonnx = pairs["emulated vs qonnx"]
    assert qonnx["top1_agreement"] >= 0.99 and qonnx["bit_exact_fraction"] >= 0.999
    diff = result["qonnx_differences"]
    if qonnx["bit_exact_fraction"] < 1.0:
        assert diff["max_lsb"] == 1.0 and 0 < diff["max_float32_error_lsb"] < 0.01
        assert diff["cause"].startswith("float32 accumulation") and "float32 accumulation" in qonnx["explanation"]
    else:
        assert diff is None

    int8 = compile_onnx(model, "int8", calibration=x_tr)
    checked = compare(int8, x, y, qdq=qdq_for(int8, x_tr))
    print("CNN int8 vs QDQ:", checked["pairs"]["emulated vs qdq"], checked["accuracy"])
    assert checked["pairs"]["emulated vs qdq"]["top1_agreement"] >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "io_type", "reuse"), [("Vivado", "io_stream", 1), ("Vitis", "io_parallel", 4)])
def test_cnn_csim_is_bit_exact_in_other_configurations(tmp_path, backend, io_type, reuse):
    x_tr, x, _ = _cnn_data()
    compiled = compile_onnx(torch_cnn_onnx(), "fixed<16,6>", calibration=x_tr)
    project = hls_for(compiled, tmp_path / "cnn", backend=backend, io_type=io_type, reuse_factor=reuse)
    project.compile()
    assert np.array_equal(project.predict(x), compiled.program.run(x)[compiled.program.outputs[0]])
