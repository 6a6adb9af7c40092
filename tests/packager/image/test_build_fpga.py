"""Acceptance: an FPGA package (``edgepack fpga compile``) builds and pushes like any model
(``build-and-push -m digits-fpga``), and the image, run by dockerd on the host network, answers
/score, V2 and MQTT with the emulated predictions (``CompiledModel``'s, exactly); the manifest written
with the build maps the card and names it to the module."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import numpy as np
import onnx
import pytest
import requests

from edge_module.transports.mqtt import mqtt_request
from fpga import CompiledModel
from packager import Model, Workspace
from packager.iotedge import create_options as co
from tests.fpga.models import digits_mlp, digits_split
from tests.packager.image.support import docker, edgepack, edgepack_json, serving_container, wait_logged
from tests.packager.iotedge.support import agent, assert_valid

pytestmark = pytest.mark.slow


def test_fpga_package_image_scores_the_emulated_predictions(
    base: str, registry: str, dev_services: dict[str, str], tmp_path: Path
) -> None:
    if importlib.util.find_spec("skl2onnx") is None:
        pytest.skip("skl2onnx is not installed: pip install -e '.[sklearn]'")
    x_train, x_test, y_train, _ = digits_split()
    onnx.save(digits_mlp(x_train, y_train), tmp_path / "mlp.onnx")
    np.savez(tmp_path / "cal.npz", x=x_train)
    ws = tmp_path / "ws"
    edgepack(ws, "model", "register", "-n", "digits", "-p", str(tmp_path / "mlp.onnx"))
    edgepack(ws, "fpga", "compile", "digits", "--format", "msfp16", "--calibration", str(tmp_path / "cal.npz"))
    compiled = CompiledModel.load(Model(Workspace.from_path(ws), "digits-fpga").download(tmp_path / "dl"))
    x = x_test[:9]
    want = compiled.run(x)

    repo = f"{registry}/test/digits-fpga-{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "deployment.json"
    out = edgepack_json(
        ws, "build-and-push", "-m", "digits-fpga", "--base", base, "--platform", "linux/amd64", "-t", f"{repo}:v1",
        "--manifest", str(manifest), "--fpga-device", "/dev/xdma0",
    )  # fmt: skip
    doc = json.loads(manifest.read_text())
    assert_valid(doc)
    module = agent(doc)["modules"]["scoring"]
    assert co.from_settings(module["settings"])["HostConfig"]["Devices"][0]["PathOnHost"] == "/dev/xdma0"
    assert module["env"]["EDGEPACK_FPGA_DEVICE"] == {"value": "/dev/xdma0"}

    ref = f"{repo}@{out['platforms']['linux/amd64']['digest']}"
    docker("pull", "--platform", "linux/amd64", ref)
    broker = f"mqtt://{dev_services['EDGEPACK_TEST_MQTT_HOST']}:{dev_services['EDGEPACK_TEST_MQTT_PORT']}"
    service = f"fpga-img-{uuid.uuid4().hex[:8]}"
    env = {"EDGEPACK_MQTT_URL": broker, "EDGEPACK_MQTT_SERVICE": service}
    with serving_container(ref, "linux/amd64", env) as (url, cid):
        r = requests.post(url + "/score", json={"data": x.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        assert np.array_equal(np.asarray(r.json()["probabilities"], np.float32), want["probabilities"])
        assert r.json()["label"] == want["label"].tolist()
        meta = requests.get(url + "/v2/models/digits-fpga", timeout=10).json()
        assert meta["platform"] == "fpga-emulator"
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        outs = requests.post(url + "/v2/models/digits-fpga/infer", json=body, timeout=30).json()["outputs"]
        probs = next(o for o in outs if o["name"] == "probabilities")
        assert np.array_equal(np.reshape(np.asarray(probs["data"], np.float32), probs["shape"]), want["probabilities"])
        wait_logged(cid, f"subscribed to edgepack/{service}/score/request/#")
        answer = mqtt_request(broker, f"edgepack/{service}/score/request", {"data": x.tolist()}, timeout=60)
        assert np.array_equal(np.asarray(answer["probabilities"], np.float32), want["probabilities"])
        assert answer["label"] == want["label"].tolist()
        # what the image carries for it: numpy and onnxruntime, no onnx, no fpga/ (edge_module only)
        probe = "import importlib.util as u; print(u.find_spec('onnx') is None, u.find_spec('fpga') is None)"
        assert docker("exec", cid, "python3", "-c", probe).stdout.split() == ["True", "True"]
