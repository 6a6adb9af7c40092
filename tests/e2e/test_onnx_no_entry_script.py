"""An ONNX model deployed with no entry script (edgepack's ONNX auto-scorer), from Python and from the CLI.

A user converts a scikit-learn Ridge (the diabetes data bundled with scikit-learn) with skl2onnx, registers
the ``.onnx`` file, and deploys it with no ``score.py``: ``Model.deploy(ws, name, [model])`` (v1's no-code
deployment) or ``edgepack deploy -n NAME -m MODEL --dc deploymentconfig.json`` with no ``--ic``. The service
answers ``POST /score`` with ``{"data": ...}`` and the V2 (KServe / Triton) protocol at
``/v2/models/<name>/infer``; both are compared with onnxruntime in this process.

External parts: onnxruntime, scikit-learn and skl2onnx (the ``sklearn`` extra) on this machine; the Docker
case (slow) needs the dev services' Docker engine and base image (the image needs no extra package).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests
from skl2onnx import to_onnx
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from cloud_targets import Model, Webservice
from packager import Workspace
from tests.cloud_targets.cli_support import Run, runner
from tests.e2e.support import gone

X, Y = load_diabetes(return_X_y=True)
ROWS = X[:4].astype(np.float32)


def export_onnx(path: Path) -> Path:
    """Train the Ridge and write it as ONNX (input ``X``: float32 [N, 10]), as skl2onnx's tutorial does."""
    onx = to_onnx(Ridge().fit(X, Y), X[:1].astype(np.float32), target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return path


def onnxruntime_answer(path: Path, rows: np.ndarray = ROWS) -> tuple[str, str, np.ndarray]:
    """The model's input and output names and its own answer for ``rows``, from onnxruntime here."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return name, session.get_outputs()[0].name, session.run(None, {name: rows})[0]


def v2_infer(base: str, model: str, input_name: str, rows: np.ndarray) -> np.ndarray:
    """POST the V2 JSON tensor request; the first output as an array of its declared shape."""
    body = {
        "inputs": [{"name": input_name, "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]
    }
    resp = requests.post(f"{base}/v2/models/{model}/infer", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    out = resp.json()["outputs"][0]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def base_of(scoring_uri: str) -> str:
    return scoring_uri.rsplit("/score", 1)[0]


def test_python_api_no_entry_script(ws: Workspace, mode: str, tmp_path: Path) -> None:
    path = export_onnx(tmp_path / "diabetes.onnx")
    input_name, output_name, expected = onnxruntime_answer(path)
    model = Model.register(ws, model_path=str(path), model_name="diabetes-onnx", model_framework=Model.Framework.ONNX)

    service = Model.deploy(ws, "diabetes-onnx-svc", [model])  # no inference config, no deployment config: Local
    service.wait_for_deployment(show_output=True)
    assert service.state == "Healthy"

    got = service.run(json.dumps({"data": ROWS.tolist()}))  # the answer: the outputs by name
    np.testing.assert_allclose(np.array(got[output_name], dtype=np.float32), expected, rtol=1e-5)
    # the named-inputs form of the same request
    got = service.run(json.dumps({"inputs": {input_name: ROWS.tolist()}}))
    np.testing.assert_allclose(np.array(got[output_name], dtype=np.float32), expected, rtol=1e-5)

    base = base_of(service.scoring_uri)
    assert requests.get(f"{base}/v2/models/diabetes-onnx/ready", timeout=30).status_code == 200
    np.testing.assert_allclose(v2_infer(base, "diabetes-onnx", input_name, ROWS), expected, rtol=1e-5)

    # a request that does not fit the model: a 400 naming the problem, and the service stays up
    resp = requests.post(service.scoring_uri, json={"data": [[1.0, 2.0]]}, timeout=30)
    assert resp.status_code == 400, resp.text
    assert service.state == "Healthy"

    handle = dict(service._record.target)
    service.delete()
    assert gone(handle)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return runner(capsys)


def test_cli_register_deploy_run_logs_delete(ws: Workspace, tmp_path: Path, run: Run) -> None:
    """What a user types: register, deploy with a deployment config and no --ic, run, logs, delete."""
    path = export_onnx(tmp_path / "diabetes.onnx")
    _, output_name, expected = onnxruntime_answer(path)
    r = run("model", "register", "-n", "diabetes-onnx", "-p", path, "--tag", "area=diabetes", "--json")
    assert r.code == 0, r.err
    assert r.json()["framework"] == "onnx" and r.json()["version"] == 1  # detected from the file
    (tmp_path / "deploymentconfig.json").write_text(json.dumps({"computeType": "local", "authEnabled": True}))

    r = run("deploy", "-n", "diabetes-cli", "-m", "diabetes-onnx:1", "--dc", "deploymentconfig.json", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["state"] == "Healthy" and doc["models"] == ["diabetes-onnx:1"]

    r = run("service", "run", "diabetes-cli", "-d", json.dumps({"data": ROWS.tolist()}), "--json")
    assert r.code == 0, r.err
    np.testing.assert_allclose(np.array(r.json()[output_name], dtype=np.float32), expected, rtol=1e-5)
    assert requests.post(doc["scoringUri"], json={"data": ROWS.tolist()}, timeout=30).status_code == 401  # no key

    r = run("service", "logs", "diabetes-cli")
    assert r.code == 0 and "ready" in r.out

    handle = dict(Webservice(ws, "diabetes-cli")._record.target)
    r = run("service", "delete", "diabetes-cli", "-y")
    assert r.code == 0, r.err
    assert gone(handle)
    assert run("service", "list", "--json").json() == []
