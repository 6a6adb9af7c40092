"""``Model.package`` (v1: an image or a Dockerfile context) and the settings a local service cannot honour."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import requests

from cloud_targets import LocalWebservice, Model, Webservice
from packager import Workspace
from packager.image.inference_config import InferenceConfig
from tests.cloud_targets.local.support import body, register, write_app


def test_process_mode_says_what_it_cannot_honour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    ws = Workspace.from_path(tmp_path / "ws")
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    config = LocalWebservice.deploy_configuration(primary_key="p" * 24)  # keys without key auth
    with caplog.at_level(logging.WARNING, logger="cloud_targets"):
        service = Model.deploy(ws, "warned", [model], ic, config)
    try:
        text = caplog.text
        assert "not installed: inference-schema[numpy-support]" in text  # this machine's packages are used
        (warning,) = service.warnings  # what the CLI prints
        assert "key auth is off" in warning and warning in text
        assert "p" * 24 not in text
        service.wait_for_deployment(timeout_sec=60)
    finally:
        service.delete()


def test_mode_setting_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "kubernetes")
    ws = Workspace.from_path(tmp_path / "ws")
    model = register(ws, tmp_path, seed=0)
    with pytest.raises(ValueError, match="use docker or process"):
        Model.deploy(ws, "bad-mode", [model])
    assert Webservice.list(ws) == []


@pytest.mark.slow
def test_package_image_and_dockerfile(tmp_path: Path, dev_services: dict[str, str]) -> None:
    import docker

    ws = Workspace.from_path(tmp_path / "ws")
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    base = dev_services["EDGEPACK_TEST_BASE_IMAGE"]

    context = Model.package(ws, [model], ic, generate_dockerfile=True, output_dir=tmp_path / "ctx", base=base)
    dockerfile = (Path(context.location) / "Dockerfile").read_text()
    assert "FROM " in dockerfile and "edge_module" in dockerfile

    repo = f"{dev_services['EDGEPACK_TEST_REGISTRY']}/test/package-{tmp_path.name[-8:].lower()}"
    pushed = Model.package(ws, [model], ic, image_name=repo, image_label="1", base=base)
    assert pushed.location.startswith(f"{repo}:1@sha256:")

    local = Model.package(ws, [model], ic, image_name="edgepack-test/package", image_label="1", base=base)
    client = docker.from_env()
    container = client.containers.run(
        local.location, detach=True, network_mode="host", environment={"EDGEPACK_PORT": "5391"}
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get("http://127.0.0.1:5391/v2/health/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        answer = requests.post(
            "http://127.0.0.1:5391/score", data=body(), headers={"Content-Type": "application/json"}, timeout=10
        ).json()
        assert answer["tag"] == "v1" and len(answer["output"]) == 3
    finally:
        container.remove(force=True)
        client.images.remove(local.location)
