"""The Azure docs' flow from v1's files, unchanged: ``deploymentconfig.json`` and ``inferenceconfig.json`` as
``az ml model deploy --ic ... --dc ...`` read them, deployed to the Local target (process mode)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests

from cloud_targets import LocalWebservice, Model, Webservice
from cloud_targets.config import load_deployment_config
from cloud_targets.targets.local import process
from cloud_targets.targets.local.health import free_port
from packager import Workspace
from packager.image.inference_config import InferenceConfig
from tests.cloud_targets.local.support import body, expected, register, write_app


def test_deploy_from_v1_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    ws = Workspace.from_path(tmp_path / "ws")
    model = register(ws, tmp_path, seed=0)
    ic_path = write_app(tmp_path)
    doc = json.loads(ic_path.read_text())
    ic_path.write_text(json.dumps({**doc, "schemaFile": "schema.json"}))  # Azure's samples still carry it
    port = free_port()
    dc_path = tmp_path / "deploymentconfig.json"
    dc_path.write_text(json.dumps({"computeType": "local", "port": port, "sslEnabled": False, "legacyKey": 1}))

    config, warnings = load_deployment_config(dc_path)
    assert config == LocalWebservice.deploy_configuration(port=port)
    assert any("legacyKey" in w for w in warnings)  # ignored with a warning naming it, not refused
    ic = InferenceConfig.load(ic_path)
    assert any("schemaFile" in w for w in ic.warnings)

    service = Model.deploy(ws, "from-files", [model], ic, config)
    try:
        service.wait_for_deployment(timeout_sec=60)
        assert service.scoring_uri == f"http://localhost:{port}/score"
        got = service.run(body())
        np.testing.assert_allclose(np.array(got["output"]), expected(model), rtol=1e-5, atol=1e-6)
        assert requests.get(service.swagger_uri, timeout=10).status_code == 200
        assert Webservice(ws, "from-files").deployment_config.port == port
    finally:
        handle = dict(Webservice(ws, "from-files")._record.target)
        service.delete()
    assert process.start_time(handle["pid"]) is None
    assert Webservice.list(ws) == []
