"""v1's AksEndpoint paths: ``Model.deploy`` with ``AksEndpoint.deploy_configuration``, ``computeType: AKSENDPOINT``
files, and ``edgepack deploy --dc endpointconfig.json``; with no Kubernetes target they run on this machine."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cloud_targets import AksEndpoint, Endpoint, Model
from cloud_targets.config import load_deployment_config
from packager import Workspace
from tests.cloud_targets.cli_support import Run, runner
from tests.cloud_targets.endpoints.support import app, register
from tests.support.workspaces import user_workspace


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    yield from user_workspace(tmp_path, monkeypatch)


def test_model_deploy_creates_then_adds_versions(ws: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    model = register(ws, tmp_path, 3)
    config = AksEndpoint.deploy_configuration(version_name="versiona", traffic_percentile=40, description="first",
                                              replica_max_concurrent_requests=4)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="cloud_targets"):
        endpoint = Model.deploy(ws, "mynewendpoint", [model], app(tmp_path, "versiona"), config)
    assert "runs on this machine" in caplog.text  # no Kubernetes target: said, not silent
    assert isinstance(endpoint, AksEndpoint) and endpoint.compute_type == "LOCAL"
    endpoint.wait_for_deployment(True)
    assert endpoint.auth_enabled  # AKS's default: key auth
    config_b = AksEndpoint.deploy_configuration(version_name="versionb", traffic_percentile=10)
    endpoint = Model.deploy(ws, "mynewendpoint", [register(ws, tmp_path, 5)], app(tmp_path, "versionb"), config_b)
    assert {n: (v.traffic_percentile, v.is_default) for n, v in endpoint.versions.items()} == {
        "versiona": (40.0, True),
        "versionb": (10.0, False),
    }
    # the Azure docs' sequence
    endpoint.update_version(version_name=endpoint.versions["versionb"].name, description="my second version update",
                            traffic_percentile=40, is_default=True, is_control_version_type=True)  # fmt: skip
    endpoint.wait_for_deployment(True)
    assert endpoint.versions["versionb"].is_control_version_type and endpoint.versions["versionb"].is_default
    assert endpoint.run({"x": 2}, version="versiona") == {"version": "versiona", "weight": 3, "y": 6}
    endpoint.delete_version(version_name="versiona")
    assert list(endpoint.versions) == ["versionb"]
    assert endpoint.run({"x": 2}) == {"version": "versionb", "weight": 5, "y": 10}
    assert Endpoint(ws, "mynewendpoint").versions["versionb"].description == "my second version update"


def test_aksendpoint_file_and_cli_deploy(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run: Run = runner(capsys)
    register(ws, tmp_path, 3)
    register(ws, tmp_path, 5)
    ic_a, ic_b = app(tmp_path, "blue"), app(tmp_path, "green")
    (tmp_path / "ic-blue.json").write_text(
        json.dumps({"entryScript": "score.py", "sourceDirectory": ic_a.source_directory})
    )
    (tmp_path / "ic-green.json").write_text(
        json.dumps({"entryScript": "score.py", "sourceDirectory": ic_b.source_directory})
    )
    dc = tmp_path / "endpointconfig.json"
    dc.write_text(json.dumps({"computeType": "AKSENDPOINT", "versionName": "blue", "trafficPercentile": 70,
                              "authEnabled": False, "isControlVersionType": True}))  # fmt: skip
    config, warnings = load_deployment_config(dc)
    assert (config.version_name, config.traffic_percentile, config.is_control_version_type) == ("blue", 70.0, True)
    assert warnings == []

    r = run("deploy", "-n", "cli-ep", "-m", "tiny:1", "--ic", tmp_path / "ic-blue.json", "--dc", dc, "--json")
    assert r.code == 0, r.err
    assert "runs on this machine" in r.err
    doc = r.json()
    assert doc["computeType"] == "LOCAL" and doc["state"] == "Healthy" and doc["authMode"] == "none"
    assert [(v["name"], v["trafficPercentile"], v["isControlVersionType"]) for v in doc["versions"]] == [
        ("blue", 70.0, True)
    ]
    r = run("deploy", "-n", "cli-ep", "-m", "tiny:1", "--ic", tmp_path / "ic-blue.json", "--dc", dc)
    assert r.code != 0 and "already has a version 'blue'" in r.err and "--overwrite" in r.err

    dc.write_text(json.dumps({"computeType": "AKSENDPOINT", "versionName": "green", "trafficPercentile": 30,
                              "authEnabled": False}))  # fmt: skip
    r = run("deploy", "-n", "cli-ep", "-m", "tiny:2", "--ic", tmp_path / "ic-green.json", "--dc", dc)
    assert r.code == 0, r.err
    assert "version green" in r.out and "30%" in r.out
    pinned = requests.post(doc["scoringUri"], json={"x": 1}, headers={"azureml-model-deployment": "green"}, timeout=30)
    assert pinned.json() == {"version": "green", "weight": 5, "y": 5}
