"""``edgepack fpga compile``: a digits MLP (sklearn, trained here) compiled and registered as
``digits-fpga`` with its report (accuracy and agreement float vs emulated vs QDQ/QONNX, bit-exactness with
the emulator, the split with reasons), --hls refusing formats hls4ml cannot take, a model with an
unsupported op (Sin) compiled with it on the host, a scikit-learn pickle converted first, clear
errors; then ``edgepack serve --model digits-fpga`` answering /score, V2 (and MQTT on the dev broker)
with exactly ``CompiledModel.predict``'s values."""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import requests

if importlib.util.find_spec("skl2onnx") is None:
    pytest.skip("skl2onnx is not installed: pip install -e '.[sklearn]'", allow_module_level=True)

from edge_module.transports.mqtt import mqtt_request
from fpga import CompiledModel, compile_onnx
from packager import Model, Workspace
from tests.fpga.models import digits_mlp, digits_split, sin_mlp
from tests.packager.image.support import edgepack
from tests.support.net import free_port
from tests.support.procs import Proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A workspace with ``digits`` (the MLP's ONNX, sample = 300 training rows) and ``sin`` registered,
    the calibration and labelled test files, and ``digits-fpga`` compiled once (int8)."""
    root = tmp_path_factory.mktemp("fpga-cli")
    x_train, x_test, y_train, y_test = digits_split()
    model = digits_mlp(x_train, y_train)
    onnx.save(model, root / "mlp.onnx")
    onnx.save(sin_mlp(), root / "sin.onnx")
    np.save(root / "sample.npy", x_train[:300])
    np.savez(root / "cal.npz", x=x_train)
    np.savez(root / "test.npz", x=x_test, y=y_test)
    ws = root / "ws"
    edgepack(
        ws,
        "model",
        "register",
        "-n",
        "digits",
        "-p",
        str(root / "mlp.onnx"),
        "--sample-input",
        str(root / "sample.npy"),
    )
    edgepack(
        ws, "model", "register", "-n", "sin", "-p", str(root / "sin.onnx"), "--sample-input", str(root / "sample.npy")
    )
    res = edgepack(
        ws, "fpga", "compile", "digits", "--format", "int8", "--calibration", str(root / "cal.npz"),
        "--labels", str(root / "test.npz"), "--json",
    )  # fmt: skip
    package = Path(Model(Workspace.from_path(ws), "digits-fpga").download(root / "dl"))
    return {
        "root": root, "ws": ws, "model": model, "x_train": x_train, "x_test": x_test, "y_test": y_test,
        "out": json.loads(res.stdout), "package": package,
    }  # fmt: skip


def test_compile_registers_the_package_and_its_report(setup) -> None:
    out, package = setup["out"], setup["package"]
    assert out["model"]["id"] == "digits-fpga:1" and out["model"]["framework"] == "fpga"
    assert out["model"]["properties"]["derived_from"] == "digits:1"
    report = out["report"]
    assert report["target"] == "digits-fpga:1" and report["format"] == "int8" and report["calibrated"]
    acc = report["accuracy"]
    assert acc["rows"] == len(setup["y_test"]) and acc["data"] == "labels file" and acc["csim"] is None
    assert acc["float"] > 0.9 and acc["emulated"] >= acc["float"] - 0.01  # int8 within 1 point
    assert acc["agreement"] >= 0.98 and acc["output"] == "probabilities"
    assert [lay["op"] for lay in report["split"]["accelerator"]] == ["Dense", "Relu", "Dense"]
    host = {op["op"]: op["reason"] for op in report["split"]["host"]}
    assert "no accelerator kernel" in host["Softmax"] and "ArgMax" in host
    # the accelerator part as QDQ with the compiled int8 scales, run by onnxruntime and compared
    assert report["exports"]["qdq"] == "export/model.qdq.onnx" and "qonnx" not in report["exports"]
    assert acc["qdq"] >= acc["float"] - 0.01 and acc["pairs"]["emulated vs qdq"]["top1_agreement"] >= 0.99
    assert set(acc["bit_exact"]) == {"qdq"} and acc["bit_exact"]["qdq"] >= 0.99  # float biases: a few codes off
    assert acc["pairs"]["float vs emulated"]["top1_agreement"] == acc["agreement"]
    assert report["hls"] is None and report["estimates"] is None
    assert {p.name for p in package.iterdir()} >= {
        "fpga.json", "program.json", "program.npz", "host.onnx", "accelerator.onnx", "report.json", "export"
    }  # fmt: skip
    assert (package / "export" / "model.qdq.onnx").is_file()
    assert json.loads((package / "report.json").read_text())["accuracy"] == acc
    # the registered package is what compile_onnx gives for the same model, format and calibration
    again = compile_onnx(setup["model"], "int8", calibration=setup["x_train"])
    x = setup["x_test"]
    assert np.array_equal(CompiledModel.load(package).predict(x), again.predict(x))


def test_the_table_and_output_name(setup) -> None:
    root = setup["root"]
    res = edgepack(
        setup["ws"], "fpga", "compile", "digits:1", "--format", "msfp16", "--calibration", str(root / "cal.npz"),
        "--labels", str(root / "test.npz"), "--output-name", "digits-msfp16",
    )  # fmt: skip
    assert "Registered digits-msfp16:1 from digits:1 (msfp16, calibrated" in " ".join(res.stdout.split())
    for text in ("accuracy (540 rows, labels file)", "predictions equal to float", "accelerator", "Softmax"):
        assert text in res.stdout
    assert "note: on the host (onnxruntime), not the accelerator:" in " ".join(res.stderr.split())


def test_fixed_point_report_states_qonnx_bit_exactness(setup) -> None:
    """fixed<16,6>: the accelerator part as QONNX with the per-layer formats, run by qonnx's executor;
    the report gives its agreement and bit-exactness with the emulator, and explains any difference."""
    root = setup["root"]
    args = ["--calibration", str(root / "cal.npz"), "--labels", str(root / "test.npz"), "--output-name", "digits-fx"]
    report = json.loads(edgepack(setup["ws"], "fpga", "compile", "digits", *args, "--json").stdout)["report"]
    acc, exports = report["accuracy"], report["exports"]
    assert exports["qonnx"] == "export/model.qonnx.onnx" and "qdq" not in exports
    assert abs(acc["emulated"] - acc["float"]) <= 0.01 and acc["qonnx"] >= acc["emulated"] - 0.01
    pair = acc["pairs"]["emulated vs qonnx"]
    assert pair["top1_agreement"] >= 0.99 and acc["bit_exact"]["qonnx"] == pair["bit_exact_fraction"] >= 0.999
    if pair["bit_exact_fraction"] < 1.0:  # qonnx's executor sums in float32: located and explained
        assert acc["qonnx_differences"]["max_lsb"] == 1.0 and "float32 accumulation" in pair["explanation"]
    else:
        assert acc["qonnx_differences"] is None and pair["explanation"] == "bit-exact"
    text = " ".join(edgepack(setup["ws"], "fpga", "compile", "digits", *args).stdout.split())
    assert "QONNX" in text and "bit-exact with emulated" in text and "predictions equal to emulated" in text


def test_an_unsupported_op_stays_on_the_host_and_the_cli_says_so(setup) -> None:
    ws = setup["ws"]
    res = edgepack(ws, "fpga", "compile", "sin", "--format", "fixed<16,6>")
    said = " ".join((res.stdout + res.stderr).split())
    assert "wave (Sin)" in said and "op type Sin has no accelerator kernel" in said
    report = json.loads(edgepack(ws, "fpga", "compile", "sin", "--format", "msfp16", "--json").stdout)["report"]
    assert [op["op"] for op in report["split"]["host"]] == ["Sin", "Softmax"]
    assert [lay["name"] for lay in report["split"]["accelerator"]] == ["fc1", "relu1", "fc2"]
    assert report["accuracy"]["data"] == "registered sample input" and report["accuracy"]["float"] is None
    assert report["accuracy"]["agreement"] > 0.9


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_a_scikit_learn_model_is_converted_first(setup, tmp_path: Path) -> None:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier((16,), max_iter=30, random_state=0).fit(setup["x_train"], np.arange(len(setup["x_train"])) % 3)
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(clf))
    ws = setup["ws"]
    sample = setup["root"] / "sample.npy"
    edgepack(ws, "model", "register", "-n", "skl", "-p", str(path), "--sample-input", str(sample))
    res = edgepack(ws, "fpga", "compile", "skl", "--format", "msfp16", "--json")
    report = json.loads(res.stdout)["report"]
    assert report["source"] == "skl-onnx:1" and report["target"] == "skl-fpga:1"
    assert any("converted to ONNX first: registered skl-onnx:1" in note for note in report["notes"])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["digits", "--format", "float16"], 2, "unknown number format 'float16': use one of"),
        (["digits", "--format", "fixed<70,3>"], 2, "use an integer 1..62"),
        (["digits", "--override", "nope=fixed<8,3>"], 2, "overrides name unknown accelerator layers"),
        (["digits", "--override", "MatMul"], 2, "use LAYER=FORMAT"),
        (["digits", "--labels", "{root}/sample.npy"], 2, "labels must be one class label per row"),
        (["digits-fpga", "--format", "int8"], 2, "already an FPGA package"),
        (["digits", "--format", "msfp16", "--hls", "vitis"], 2, "HLS export needs a fixed-point format"),
        (["digits", "--format", "int8", "--hls", "vivado"], 2, "compile with --format fixed<16,6>"),
        (["nope"], 1, "no model named 'nope'"),
    ],
)
def test_clear_errors(setup, args: list[str], code: int, message: str) -> None:
    args = [a.format(root=setup["root"]) for a in args]
    res = edgepack(setup["ws"], "fpga", "compile", *args, expect=code)
    assert message in " ".join(res.stderr.split())


def test_int8_without_calibration_data_names_the_option(tmp_path: Path, setup) -> None:
    ws = tmp_path / "ws"
    edgepack(ws, "model", "register", "-n", "bare", "-p", str(setup["root"] / "mlp.onnx"))
    res = edgepack(ws, "fpga", "compile", "bare", "--format", "int8", expect=2)
    assert "int8 needs calibration data" in res.stderr and "--calibration FILE.npz" in res.stderr


def test_hls_without_hls4ml_fails_clearly(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fpga.hls", None)  # as in an install without hls4ml / fpga.hls
    res = edgepack(
        setup["ws"], "fpga", "compile", "digits", "--hls", "vitis", "--io", "stream", "--reuse", "4", expect=1
    )
    said = " ".join(res.stderr.split())
    assert "--hls vitis: this install has no HLS export" in said and "pip install 'edgepack[fpga]'" in said


@pytest.mark.slow
def test_hls_project_c_simulation_and_estimates_in_the_report(setup) -> None:
    """--hls: the accelerator part as an hls4ml project with the compiled per-layer precisions; its C
    simulation is bit-exact with the emulator and, with the host part after it, agrees with float;
    estimates are labelled as such; the QONNX export is in the package."""
    pytest.importorskip("hls4ml")
    root, ws = setup["root"], setup["ws"]
    res = edgepack(
        ws, "fpga", "compile", "digits", "--format", "fixed<16,6>", "--calibration", str(root / "cal.npz"),
        "--labels", str(root / "test.npz"), "--hls", "vitis", "--reuse", "2", "--output-name", "digits-hls", "--json",
    )  # fmt: skip
    report = json.loads(res.stdout)["report"]
    acc = report["accuracy"]
    assert acc["csim"] >= acc["float"] - 0.01 and acc["csim_agreement_float"] >= 0.99
    assert acc["csim_agreement_emulated"] == 1.0 and acc["bit_exact"]["csim"] == 1.0
    assert acc["pairs"]["emulated vs csim"]["explanation"] == "bit-exact" and "qonnx" in acc["bit_exact"]
    hls = report["hls"]
    assert (hls["files"], hls["backend"], hls["io_type"], hls["reuse_factor"]) == ("hls", "Vitis", "io_parallel", 2)
    layers = {lay["name"]: lay for lay in report["layers"]}
    assert hls["precisions"]["MatMul_0"]["weight"] == f"ap_{layers['MatMul']['weight']}"  # the compiled format
    assert report["estimates"]["kind"] == "estimate" and report["estimates"]["total"]["dsp"] > 0
    assert report["exports"]["qonnx"] == "export/model.qonnx.onnx"
    package = Path(Model(Workspace.from_path(ws), "digits-hls").download(root / "dl-hls"))
    assert (package / "hls").is_dir() and (package / "export" / "model.qonnx.onnx").is_file()
    table = edgepack(
        ws, "fpga", "compile", "digits", "--format", "fixed<16,6>", "--calibration", str(root / "cal.npz"),
        "--hls", "vivado", "--io", "stream", "--output-name", "digits-hls",
    ).stdout  # fmt: skip
    text = " ".join(table.split())
    assert "HLS project hls/ (Vivado, io_stream, reuse factor 1)" in text and "not synthesis results" in text


def _serve(setup, *extra: str) -> tuple[Proc, str]:
    port = free_port()
    args = ["--workspace", str(setup["ws"]), "serve", "-m", "digits-fpga", "--port", str(port)]
    proc = Proc([*args, "--host", "127.0.0.1", *extra])
    proc.wait_for(r"ready in [0-9.]+ s; V2 models: digits-fpga", timeout=60)
    return proc, f"http://127.0.0.1:{port}"


def test_edgepack_serve_answers_with_the_emulated_predictions(setup) -> None:
    compiled = CompiledModel.load(setup["package"])
    x = setup["x_test"][:33]
    want = compiled.run(x)
    proc, url = _serve(setup)
    try:
        r = requests.post(url + "/score", json={"data": x.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        assert np.array_equal(np.asarray(r.json()["probabilities"], np.float32), want["probabilities"])
        assert r.json()["label"] == compiled.predict(x).tolist()
        meta = requests.get(url + "/v2/models/digits-fpga", timeout=10).json()
        assert meta["platform"] == "fpga-emulator" and meta["inputs"][0]["shape"] == [-1, 64]
        doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        outs = {
            o["name"]: o
            for o in requests.post(url + "/v2/models/digits-fpga/infer", json=doc, timeout=30).json()["outputs"]
        }
        probs = np.reshape(np.asarray(outs["probabilities"]["data"], np.float32), outs["probabilities"]["shape"])
        assert np.array_equal(probs, want["probabilities"]) and outs["label"]["data"] == want["label"].tolist()
    finally:
        assert proc.stop() == 0


@pytest.mark.slow
def test_mqtt_answers_with_the_emulated_predictions(setup, dev_services: dict[str, str]) -> None:
    broker = f"mqtt://{dev_services['EDGEPACK_TEST_MQTT_HOST']}:{dev_services['EDGEPACK_TEST_MQTT_PORT']}"
    service = f"fpga-{uuid.uuid4().hex[:8]}"
    compiled = CompiledModel.load(setup["package"])
    x = setup["x_test"][:5]
    proc, _ = _serve(setup, "--mqtt", broker, "--mqtt-service", service)
    try:
        proc.wait_seen(f"subscribed to edgepack/{service}/score/request", timeout=30)
        doc = mqtt_request(broker, f"edgepack/{service}/score/request", {"data": x.tolist()}, timeout=30)
        assert doc["label"] == compiled.predict(x).tolist()  # predict: the first output
        assert np.array_equal(np.asarray(doc["probabilities"], np.float32), compiled.run(x)["probabilities"])
    finally:
        assert proc.stop() == 0
