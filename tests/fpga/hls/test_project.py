"""hls4ml projects from ONNX: g++ C simulation vs float, bit-exact vs fake-quantized references, the
softmax precision fix, both backends and io types. Each compile takes 7-14 s here (slow tests)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from fpga.export import export_qonnx, run_qonnx
from fpga.formats import get_format
from fpga.hls import SOFTMAX_INPUT, HlsError, export_hls
from tests.fpga.digits_models import digits, run_float, sklearn_mlp_onnx, torch_cnn_onnx, torch_mlp_onnx

pytestmark = pytest.mark.slow


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def _compile(project) -> float:
    seconds = project.compile()
    print(f"g++ C simulation compile ({project.backend}, {project.io_type}): {seconds:.1f} s")
    return seconds


@pytest.mark.parametrize(
    ("backend", "io_type", "reuse"),
    [("Vitis", "io_parallel", 1), ("Vivado", "io_stream", 1), ("Vitis", "io_parallel", 4)],
)
def test_mlp_csim_agrees_with_float(tmp_path, backend, io_type, reuse):
    model = torch_mlp_onnx()
    _, _, x, _ = digits()
    project = export_hls(model, tmp_path / "prj", backend=backend, io_type=io_type, reuse_factor=reuse)
    dense = next(layer for layer in project.hls_model.get_layers() if layer.class_name == "Dense")
    assert dense.get_attr("reuse_factor") == reuse
    assert any(note.startswith("softmax fix") for note in project.notes)
    assert project.precisions["MatMul_1"]["result"] == SOFTMAX_INPUT
    _compile(project)
    assert _agreement(project.predict(x), run_float(model, x)) >= 0.99
    assert (project.files / "firmware" / "myproject.cpp").is_file()
    report = project.report()
    assert report["estimates"]["kind"] == "estimate" and report["compile_seconds"] > 0
    assert "ESTIMATES" in project.text_report()


def test_without_the_softmax_fix_the_csim_collapses(tmp_path):
    # hls4ml's own choice for the Dense feeding the softmax ("auto": 38 bits) breaks its softmax table
    model = torch_mlp_onnx()
    _, _, x, _ = digits()
    raw = {"MatMul_1": {"result": "auto"}}
    broken = export_hls(model, tmp_path / "nofix", layer_precision=raw, fix_softmax=False)
    _compile(broken)
    assert _agreement(broken.predict(x), run_float(model, x)) < 0.3  # ~10 %: every output the same
    fixed = export_hls(model, tmp_path / "fix", layer_precision=raw)
    assert fixed.precisions["MatMul_1"]["result"] == SOFTMAX_INPUT and "auto" in fixed.notes[0]


@pytest.mark.parametrize(
    ("backend", "io_type", "compile_it"), [("Vitis", "io_parallel", True), ("Vivado", "io_stream", False)]
)
def test_cnn_csim_agrees_with_float(tmp_path, backend, io_type, compile_it):
    model = torch_cnn_onnx()
    _, _, x, _ = digits()
    x = x.reshape(-1, 1, 8, 8)
    project = export_hls(model, tmp_path / "cnn", backend=backend, io_type=io_type)
    if not compile_it:
        assert (project.write() / "firmware" / "myproject.cpp").is_file()
        return
    _compile(project)
    assert _agreement(project.predict(x), run_float(model, x)) >= 0.99  # predict takes NCHW like the model


def test_csim_is_bit_exact_with_fake_quantized_reference(tmp_path):
    # No softmax: the logits are compared. Every tensor in fixed<16,6> (AP_TRN, AP_WRAP), hls4ml's exact
    # "auto" accumulators: the reference is float64 (exact here) with fake_quantize after each step.
    model = sklearn_mlp_onnx(softmax=False)
    _, _, x, _ = digits()
    fmt = get_format("fixed<8,3,AP_RND_CONV,AP_SAT>")
    project = export_hls(model, tmp_path / "exact", layer_precision={"dense0": "fixed<8,3,AP_RND_CONV,AP_SAT>"})
    _compile(project)
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    default = get_format("fixed<16,6>")

    def fq(v, f=default):
        return f.fake_quantize(v).astype(np.float64)

    h = fq(fq(x) @ fq(w["w0"], fmt) + fq(w["b0"], fmt), fmt)
    ref = fq(fq(np.maximum(h, 0)) @ fq(w["w1"]) + fq(w["b1"]))
    assert np.array_equal(project.predict(x), ref)


def test_qonnx_into_hls4ml_is_bit_exact(tmp_path):
    model = sklearn_mlp_onnx(softmax=False)
    _, _, x, _ = digits()
    exported = export_qonnx(model, default="ap_fixed<10,4,AP_RND_CONV,AP_SAT>")
    project = export_hls(exported.model, tmp_path / "qonnx")
    assert any("Quant nodes" in note for note in project.notes)
    _compile(project)
    assert np.array_equal(project.predict(x), run_qonnx(exported.model, x))


def test_bad_settings_are_refused(tmp_path):
    model = sklearn_mlp_onnx()
    with pytest.raises(HlsError, match="Vivado or Vitis"):
        export_hls(model, tmp_path / "a", backend="Quartus")
    with pytest.raises(HlsError, match="io_parallel or io_stream"):
        export_hls(model, tmp_path / "b", io_type="io_serial")
    with pytest.raises(HlsError, match="not in the model"):
        export_hls(model, tmp_path / "c", layer_precision={"nope": "fixed<8,3>"})
    with pytest.raises(HlsError, match="only fixed point"):
        export_hls(model, tmp_path / "d", layer_precision={"dense0": "msfp12"})
