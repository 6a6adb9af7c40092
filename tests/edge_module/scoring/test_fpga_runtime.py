"""The FPGA runtime: a package folder served through ModelRuntime with answers equal to
CompiledModel.predict (one pipeline), picked by the registry's match function, and a vendor driver
(a real module written here that runs the float accelerator.onnx in onnxruntime) replacing the
emulator through EDGEPACK_FPGA_DRIVER / --fpga-driver without touching the rest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

if importlib.util.find_spec("skl2onnx") is None:
    pytest.skip("skl2onnx is not installed: pip install -e '.[sklearn]'", allow_module_level=True)

from edge_module.runtime import BadInputError
from edge_module.scoring import ModelScoringApp, build_app, runtime_for
from edge_module.scoring.fpga_runtime import FpgaPackageError, FpgaRuntime, fpga_package
from edge_module.scoring.model_app import discover_models
from edge_module.server.lifecycle import BackgroundServer
from edge_module.server.main import app_factory
from edge_module.settings import Settings, SettingsError
from fpga import CompiledModel, compile_onnx
from tests.fpga.models import digits_mlp, digits_split, run_onnx

DRIVER = '''
"""A stand-in vendor driver: the accelerator part in float on onnxruntime, the device recorded."""
from pathlib import Path

import numpy as np
import onnxruntime as ort

OPENED = []


class Card:
    def __init__(self, package_dir: Path, device):
        self.device = device
        self.session = ort.InferenceSession(str(Path(package_dir) / "accelerator.onnx"))
        self.calls = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.session.run(None, {self.session.get_inputs()[0].name: x})[0]


def open_card(package_dir, device):
    card = Card(package_dir, device)
    OPENED.append(card)
    return card
'''


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    x_train, x_test, y_train, y_test = digits_split()
    model = digits_mlp(x_train, y_train)
    return {"model": model, "x_train": x_train, "x_test": x_test, "y_test": y_test}


@pytest.fixture(scope="module")
def package(digits, tmp_path_factory) -> tuple[Path, CompiledModel]:
    """The digits MLP compiled to int8, saved as a package folder in an AZUREML_MODEL_DIR layout."""
    compiled = compile_onnx(digits["model"], "int8", calibration=digits["x_train"])
    folder = tmp_path_factory.mktemp("models") / "azureml-models" / "digits-fpga" / "1" / "digits-fpga"
    compiled.save(folder)
    return folder, compiled


@pytest.fixture
def driver_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"card_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(DRIVER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_runtime_answers_equal_the_compiled_model(package, digits) -> None:
    folder, compiled = package
    rt = FpgaRuntime(folder, "digits-fpga", "1")
    rt.load()
    assert rt.platform == "fpga-emulator" and not rt.inline_safe
    assert [s.to_dict() for s in rt.inputs] == [{"name": "X", "datatype": "FP32", "shape": [-1, 64]}]
    assert [s.to_dict() for s in rt.outputs] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
    ]
    x = digits["x_test"]
    for rows in (slice(0, 1), slice(3, 10), slice(0, len(x))):
        got = rt.predict({"X": x[rows].astype(np.float64).tolist()})  # JSON-like values, cast by the checks
        want = compiled.run(x[rows])
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name])
    assert np.array_equal(CompiledModel.load(folder).predict(x), compiled.predict(x))  # saved == in memory
    accuracy = float(np.mean(rt.predict({"X": x})["label"] == digits["y_test"]))
    assert accuracy > 0.9
    with pytest.raises(BadInputError, match=r"expected \[-1, 64\]"):
        rt.predict({"X": x[:1, :63]})


def test_registry_picks_the_fpga_runtime_for_the_package_folder(package) -> None:
    folder, _ = package
    assert fpga_package(folder) == folder and fpga_package(folder / "fpga.json") == folder
    assert fpga_package(folder.parent) is None
    assert runtime_for(folder).name == "fpga"  # not onnx, though the folder holds host.onnx and accelerator.onnx
    (found,) = discover_models(folder.parent)  # <name>/<version>: the version folder's one entry
    assert (found.name, found.version, found.path, found.kind.name) == ("digits-fpga", "1", folder, "fpga")
    (found,) = discover_models(folder.parents[2])  # azureml-models with every model
    assert found.kind.name == "fpga"


def test_served_by_the_no_code_app(package, digits) -> None:
    folder, compiled = package
    x = digits["x_test"][:25]
    want = compiled.run(x)
    app = build_app(model_dir=str(folder.parent))
    assert isinstance(app, ModelScoringApp)
    with BackgroundServer(app, Settings(port=0, execution="thread")) as srv:
        srv.wait_ready()
        meta = requests.get(srv.url + "/v2/models/digits-fpga", timeout=10).json()
        assert meta["platform"] == "fpga-emulator"
        r = requests.post(srv.url + "/score", json={"data": x.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        assert np.array_equal(np.asarray(r.json()["probabilities"], np.float32), want["probabilities"])
        assert r.json()["label"] == want["label"].tolist()
        doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        r = requests.post(srv.url + "/v2/models/digits-fpga/infer", json=doc, timeout=30)
        outs = {o["name"]: o for o in r.json()["outputs"]}
        probs = np.reshape(np.asarray(outs["probabilities"]["data"], np.float32), outs["probabilities"]["shape"])
        assert np.array_equal(probs, want["probabilities"]) and outs["label"]["data"] == want["label"].tolist()
        r = requests.post(srv.url + "/score", json={"data": [[0.0] * 63]}, timeout=10)
        assert r.status_code == 400 and "expected [-1, 64]" in r.json()["message"]


def test_a_vendor_driver_replaces_the_emulator(package, digits, driver_module: str, monkeypatch) -> None:
    folder, compiled = package
    x = digits["x_test"][:40]
    float_out = run_onnx(digits["model"], {"X": x})
    rt = FpgaRuntime(folder, "digits-fpga", "1", driver=f"{driver_module}:open_card", device="/dev/fake0")
    rt.load()
    card = sys.modules[driver_module].OPENED[-1]
    assert rt.platform == "fpga-driver" and card.device == "/dev/fake0"
    got = rt.predict({"X": x})
    assert card.calls == 1
    assert np.array_equal(got["label"], float_out[0])  # the float accelerator: the float model's answers
    np.testing.assert_allclose(got["probabilities"], float_out[1], rtol=1e-5, atol=1e-6)
    assert not np.array_equal(compiled.run(x)["probabilities"], got["probabilities"])  # int8 emulation differs

    # the same through the server's settings (flags / EDGEPACK_FPGA_*), and through the environment alone
    settings = Settings(
        model_dir=str(folder.parent), fpga_driver=f"{driver_module}:open_card", fpga_device="/dev/xdma0"
    )
    app = app_factory(settings)()
    app.load()
    (runtime,) = app.models()
    assert runtime.platform == "fpga-driver" and sys.modules[driver_module].OPENED[-1].device == "/dev/xdma0"
    monkeypatch.setenv("EDGEPACK_FPGA_DRIVER", f"{driver_module}:open_card")
    monkeypatch.setenv("EDGEPACK_FPGA_DEVICE", "/dev/xdma1")
    app = build_app(model_dir=str(folder.parent))
    app.load()
    assert app.models()[0].platform == "fpga-driver" and sys.modules[driver_module].OPENED[-1].device == "/dev/xdma1"
    out = app.models()[0].predict({"X": x})
    assert np.array_equal(out["label"], float_out[0])


def test_clear_errors(package, tmp_path: Path, driver_module: str) -> None:
    folder, _ = package
    with pytest.raises(FpgaPackageError, match=r"cannot import 'no_such_vendor'.*EDGEPACK_FPGA_DRIVER"):
        FpgaRuntime(folder, driver="no_such_vendor:open").load()
    with pytest.raises(FpgaPackageError, match="has no callable 'nope'"):
        FpgaRuntime(folder, driver=f"{driver_module}:nope").load()
    with pytest.raises(FpgaPackageError, match="failed to open on /dev/x"):
        (tmp_path / "empty").mkdir()
        bad = tmp_path / "empty"
        (bad / "fpga.json").write_text((folder / "fpga.json").read_text())
        for name in ("program.json", "program.npz", "host.onnx"):
            (bad / name).write_bytes((folder / name).read_bytes())
        FpgaRuntime(bad, driver=f"{driver_module}:open_card", device="/dev/x").load()  # no accelerator.onnx
    with pytest.raises(FpgaPackageError, match="not a package folder"):
        FpgaRuntime(tmp_path).load()
    with pytest.raises(SettingsError, match=r"pkg\.module:factory"):
        Settings(fpga_driver="/usr/lib/libvendor.so")


class _Doubler:
    """An accelerator: ``y = 2 * x``."""

    inputs, outputs = ["x"], ["y"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": feeds["x"] * 2}


def test_a_pipeline_without_host_returns_accelerator_results_and_inputs() -> None:
    from edge_module.scoring.fpga_runtime import FpgaPipeline

    x = np.arange(4, dtype=np.float64)
    pipeline = FpgaPipeline(_Doubler(), None, ["x"], ["y", "x"])
    got = pipeline.run(x)
    assert np.array_equal(got["y"], 2 * x) and got["y"].dtype == np.float32 and got["x"] is x
    with pytest.raises(ValueError, match=r"missing model input\(s\) \['x'\]"):
        pipeline.run({"z": x})
    with pytest.raises(KeyError, match="w"):
        FpgaPipeline(_Doubler(), None, ["x"], ["w"]).run(x)


def test_a_pipeline_returns_host_results_accelerator_results_and_inputs() -> None:
    """The host part (``z = -y``) reads the accelerator's result; outputs come from each of the three."""
    from onnx import TensorProto, helper

    from edge_module.scoring.fpga_runtime import FpgaPipeline

    graph = helper.make_graph(
        [helper.make_node("Neg", ["y"], ["z"])],
        "host",
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [None])],
    )
    host = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    host.ir_version = 8
    pipeline = FpgaPipeline(_Doubler(), host.SerializeToString(), ["x"], ["z", "y", "x"])
    x = np.arange(4, dtype=np.float32)
    for _ in range(2):  # the second run reads the names kept from the first
        got = pipeline.run({"x": x})
        assert np.array_equal(got["z"], -2 * x) and np.array_equal(got["y"], 2 * x) and got["x"] is x
