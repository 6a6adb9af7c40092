"""The Azure docs' local deployment flow, for real, in process mode and (slow) in the Docker engine.

Register a model, a v1 ``score.py`` with inference-schema, ``inferenceconfig.json``, a LOCAL deployment
config → ``Model.deploy`` → ``wait_for_deployment`` → ``run`` answers the model's predictions → a new
model version and ``update`` → the new answers → ``delete`` leaves no container or process.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from cloud_targets import LocalWebservice, Model, Webservice, WebserviceException
from cloud_targets.config.model import LocalDeploymentConfig
from cloud_targets.services.store import ServiceStore
from cloud_targets.targets.local import process
from packager import Workspace
from packager.errors import ConflictError, InvalidInputError
from packager.image.inference_config import InferenceConfig
from tests.cloud_targets.local.support import body, expected, register, write_app

MODES = [
    pytest.param("process", id="process"),
    pytest.param("docker", id="docker", marks=pytest.mark.slow),
    pytest.param("docker-registry", id="docker-registry", marks=pytest.mark.slow),
]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name = request.param
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process" if name == "process" else "docker")
    if name.startswith("docker"):
        services = request.getfixturevalue("dev_services")
        from cloud_targets.targets.local.docker_mode import engine

        if engine() is None:
            pytest.fail("no Docker engine: run scripts/dev-services.sh")
        monkeypatch.setenv("EDGEPACK_BASE_IMAGE", services["EDGEPACK_TEST_BASE_IMAGE"])
        if name == "docker-registry":
            monkeypatch.setenv("EDGEPACK_LOCAL_REGISTRY", services["EDGEPACK_TEST_REGISTRY"])
        else:
            monkeypatch.delenv("EDGEPACK_LOCAL_REGISTRY", raising=False)
    return name


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace.from_path(tmp_path / "ws")
    yield workspace
    for svc in Webservice.list(workspace):  # never leave a container or process behind
        svc.delete()


def gone(handle: dict) -> bool:
    """No process or container of the service is left."""
    if handle["mode"] == "process":
        return process.start_time(handle["pid"]) is None
    import docker

    return all(c.id != handle["container_id"] for c in docker.from_env().containers.list(all=True))


def test_deploy_run_update_delete(mode: str, ws: Workspace, tmp_path: Path) -> None:
    v1 = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    config = LocalWebservice.deploy_configuration()  # port=None: a free port, as v1

    service = Model.deploy(ws, "digits-local", [v1], ic, config)
    assert isinstance(service, LocalWebservice)
    service.wait_for_deployment(timeout_sec=300)
    assert service.state == "Healthy"
    assert service.scoring_uri.startswith("http://localhost:") and service.scoring_uri.endswith("/score")
    got = service.run(body())
    assert got["tag"] == "v1"
    np.testing.assert_allclose(np.array(got["output"]), expected(v1), rtol=1e-5, atol=1e-6)
    swagger = requests.get(service.swagger_uri, timeout=10).json()
    assert swagger["definitions"]["ServiceInput"]["properties"]["data"]["format"] == "numpy.ndarray"

    # a new model version: update and the new answers
    v2 = register(ws, tmp_path, seed=1)
    assert not np.allclose(expected(v1), expected(v2))
    first = dict(service._record.target)
    service.update(models=[v2], wait=True)  # v1's LocalWebservice.update(..., wait=True)
    assert service.state == "Healthy"
    got = service.run(body())
    np.testing.assert_allclose(np.array(got["output"]), expected(v2), rtol=1e-5, atol=1e-6)
    assert Webservice(ws, "digits-local").models == ["mlp:2"]
    assert gone(first)  # the old container/process went with the update
    assert service._record.target["port"] == first["port"]  # the service keeps its port

    # reload: new code, no rebuild
    write_app(tmp_path, tag="reloaded")
    image = service.image_id
    service.reload()
    assert service.run(body())["tag"] == "reloaded"
    assert Webservice(ws, "digits-local").image_id == image

    handle = dict(Webservice(ws, "digits-local")._record.target)
    service.delete()
    assert gone(handle)
    assert Webservice.list(ws) == []
    with pytest.raises(Exception, match="edgepack service list"):
        Webservice(ws, "digits-local")


def test_key_auth_rotation(mode: str, ws: Workspace, tmp_path: Path) -> None:
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    service = Model.deploy(ws, "keyed", [model], ic, LocalWebservice.deploy_configuration(auth_enabled=True))
    service.wait_for_deployment(timeout_sec=300)
    primary, secondary = service.get_keys()
    assert primary and secondary and primary != secondary
    url = service.scoring_uri

    def status(key: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return requests.post(url, data=body(), headers=headers, timeout=30).status_code

    assert status(None) == 401
    assert status("not-the-key") == 401
    assert status(primary) == 200
    assert status(secondary) == 200
    assert service.run(body())["tag"] == "v1"  # run adds the key

    service.regen_key("Primary")
    new_primary, same_secondary = service.get_keys()
    assert new_primary != primary and same_secondary == secondary
    assert status(primary) == 401
    assert status(new_primary) == 200
    assert status(secondary) == 200
    service.regen_key("Secondary", set_key="s" * 24)
    assert service.get_keys()[1] == "s" * 24
    assert status(secondary) == 401 and status("s" * 24) == 200

    # secrets: a 0600 file in a 0700 folder; never in the record, serialize(), repr, list or logs
    svc_dir = ServiceStore(ws).service_dir("keyed")
    assert stat.S_IMODE(os.stat(svc_dir / "secrets.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(svc_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(svc_dir.parent).st_mode) == 0o700
    keys = service.get_keys()
    public = [
        json.dumps(service.serialize()),
        repr(service),
        json.dumps([s.serialize() for s in Webservice.list(ws)]),
        (svc_dir / "service.json").read_text(),
        service.get_logs(),
    ]
    for text in public:
        for key in keys:
            assert key not in text
    with pytest.raises(WebserviceException, match="token auth"):
        service.get_token()


def test_init_failure_surfaces_log_lines(mode: str, ws: Workspace, tmp_path: Path) -> None:
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path, init_extra="raise RuntimeError('model store unreachable: boom-42')"))
    service = Model.deploy(ws, "broken", [model], ic)
    with pytest.raises(WebserviceException, match="boom-42") as info:
        service.wait_for_deployment(timeout_sec=300)
    assert "Traceback" in info.value.logs and "boom-42" in str(info.value)
    assert service.state == "Failed"
    service.delete()


def test_overwrite_rules_and_names(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    model = register(ws, tmp_path, seed=0)
    for bad in ("ab", "Digits", "1digits", "digits_svc", "a" * 33, "digits-"):
        with pytest.raises(InvalidInputError, match="between 3 and 32 characters long"):
            Model.deploy(ws, bad, [model])
    assert not (ws.path / "services").exists() or not any((ws.path / "services").iterdir())

    service = Model.deploy(ws, "twice", [model])
    service.wait_for_deployment(timeout_sec=60)
    first = dict(service._record.target)
    with pytest.raises(ConflictError, match="overwrite"):
        Model.deploy(ws, "twice", [model])
    assert Webservice(ws, "twice").state == "Healthy"  # the refused deploy changed nothing
    again = Model.deploy(ws, "twice", [model], overwrite=True)
    again.wait_for_deployment(timeout_sec=60)
    assert gone(first)
    assert again._record.target["pid"] != first["pid"]
    assert [s.name for s in Webservice.list(ws, compute_type="LOCAL")] == ["twice"]
    assert Webservice.list(ws, compute_type="AKS") == []


def test_metadata_update_and_token_auth_refused(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    model = register(ws, tmp_path, seed=0)
    # v1's rule: token auth is AKS only (tests/cloud_targets/test_remote_flow.py covers it on AKS)
    with pytest.raises(TypeError):  # not a parameter of v1's LocalWebservice.deploy_configuration
        LocalWebservice.deploy_configuration(token_auth_enabled=True)
    with pytest.raises(InvalidInputError, match="only available on AKS"):  # a config made by hand is checked too
        Model.deploy(ws, "tagged", [model], deployment_config=LocalDeploymentConfig(token_auth_enabled=True))
    assert Webservice.list(ws) == []
    config = LocalWebservice.deploy_configuration(auth_enabled=True, tags={"stage": "dev"})
    service = Model.deploy(ws, "tagged", [model], deployment_config=config)
    service.wait_for_deployment(timeout_sec=60)
    with pytest.raises(WebserviceException, match="token auth"):
        service.get_token()
    pid = service._record.target["pid"]
    with pytest.raises(WebserviceException, match="No parameters provided to update"):  # as v1
        service.update()
    # v1 code catches WebserviceException: a missing service, a bad name, a bad key kind (also exit code 2)
    for name in ("missing", "Not_A_Name"):
        with pytest.raises(WebserviceException, match=r"missing|between 3 and 32"):
            Webservice(ws, name).delete()
    with pytest.raises(WebserviceException, match="'Primary' or 'Secondary'") as bad_key:
        service.regen_key("Tertiary")
    assert isinstance(bad_key.value, InvalidInputError) and bad_key.value.exit_code == 2
    service.update(tags={"stage": "prod"}, description="promoted")  # metadata only: no restart
    assert Webservice(ws, "tagged").tags == {"stage": "prod"}
    assert Webservice.list(ws, tags=["stage=prod"])[0].description == "promoted"
    # v1's other filters
    assert [s.name for s in Webservice.list(ws, tags=[["stage", "prod"]], model_name="mlp")] == ["tagged"]
    assert [s.name for s in Webservice.list(ws, model_id=model.id)] == ["tagged"]
    assert Webservice.list(ws, model_name="other") == [] and Webservice.list(ws, model_id="mlp:99") == []
    assert Webservice.list(ws, properties=["missing"]) == [] and Webservice.list(ws, tags={"stage": "dev"}) == []
    assert Webservice(ws, "tagged")._record.target["pid"] == pid
    with pytest.raises(InvalidInputError, match="no setting cpu_cores"):
        service.update(cpu_cores=2)
    # a setting that breaks v1's rules is refused before anything changes
    with pytest.raises(InvalidInputError, match="only available on AKS"):
        service.update(token_auth_enabled=True)
    assert Webservice(ws, "tagged")._record.target["pid"] == pid and Webservice(ws, "tagged").auth_enabled


def test_interrupted_overwrite_leaves_no_service_or_process(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the replacement is staged (a KeyboardInterrupt raised from the file copy): the old service
    is stopped and no half-made record is left (none whose auth disagrees with its secrets)."""
    import shutil

    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    service = Model.deploy(ws, "ctrl-c", [model], ic, LocalWebservice.deploy_configuration(auth_enabled=True))
    service.wait_for_deployment(timeout_sec=60)
    first = dict(service._record.target)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfile", interrupted)
        with pytest.raises(KeyboardInterrupt):
            Model.deploy(ws, "ctrl-c", [model], ic, LocalWebservice.deploy_configuration(), overwrite=True)
    assert gone(first)
    assert Webservice.list(ws) == []
    assert not (ws.path / "services" / "ctrl-c").exists()
    again = Model.deploy(ws, "ctrl-c", [model], ic)  # the name is free again
    again.wait_for_deployment(timeout_sec=60)
    assert again.run(body())["tag"] == "v1"


def test_failed_update_keeps_the_running_service_and_its_keys(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update that fails before anything restarts (here: staging the new code) changes neither the record
    nor the keys: the old service still answers with the keys `get_keys` gives."""
    import shutil

    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    v1 = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    service = Model.deploy(ws, "kept", [v1], ic, LocalWebservice.deploy_configuration(auth_enabled=True))
    service.wait_for_deployment(timeout_sec=60)
    keys = service.get_keys()
    v2 = register(ws, tmp_path, seed=1)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    for settings in ({"auth_enabled": False}, {"primary_key": "k" * 20}):
        with monkeypatch.context() as patch:
            patch.setattr(shutil, "copyfile", broken)
            with pytest.raises(OSError, match="No space"):
                service.update(models=[v2], **settings)
        again = Webservice(ws, "kept")
        assert again.auth_enabled and again.get_keys() == keys
        assert again.run(body())["tag"] == "v1"


def test_update_onto_a_busy_port_keeps_the_service(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InvalidInputError, match=f"port {port} is in use"):
            Model.deploy(ws, "busy", [model], ic, LocalWebservice.deploy_configuration(port=port))
        assert Webservice.list(ws) == []
        service = Model.deploy(ws, "busy", [model], ic)
        service.wait_for_deployment(timeout_sec=60)
        pid = service._record.target["pid"]
        keys = service.get_keys() if service.auth_enabled else None
        with pytest.raises(InvalidInputError, match=f"port {port} is in use"):
            service.update(port=port, auth_enabled=True)
        assert ServiceStore(ws).read("busy").error is None
        again = Webservice(ws, "busy")
        assert again.state == "Healthy" and again._record.target["pid"] == pid
        assert not again.auth_enabled and keys is None  # the refused update changed nothing
        assert again.run(body())["tag"] == "v1"


def test_overwrite_onto_an_unreachable_target_keeps_the_service(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``overwrite=True`` with an AKS config whose cluster cannot be reached (no kubeconfig) fails before the
    running LOCAL service is stopped."""
    from cloud_targets import AksWebservice
    from packager.errors import EdgepackError

    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("EDGEPACK_IMAGE_REGISTRY", raising=False)
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    service = Model.deploy(ws, "moving", [model], ic)
    service.wait_for_deployment(timeout_sec=60)
    pid = service._record.target["pid"]
    with pytest.raises(EdgepackError, match="kubeconfig"):
        Model.deploy(ws, "moving", [model], ic, AksWebservice.deploy_configuration(), overwrite=True)
    again = Webservice(ws, "moving")
    assert again.compute_type == "LOCAL" and again._record.target["pid"] == pid
    assert again.state == "Healthy" and again.run(body())["tag"] == "v1"


def test_a_healthy_service_that_stops_answering_is_unhealthy(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1's states: a running service that was Healthy and no longer answers is Unhealthy (not Transitioning),
    and Healthy again when it answers."""
    import signal

    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    model = register(ws, tmp_path, seed=0)
    service = Model.deploy(ws, "frozen", [model], InferenceConfig.load(write_app(tmp_path)))
    service.wait_for_deployment(timeout_sec=60)
    pid = service._record.target["pid"]
    os.killpg(pid, signal.SIGSTOP)
    try:
        assert Webservice(ws, "frozen").state == "Unhealthy"
        assert Webservice.list(ws)[0].serialize()["state"] == "Unhealthy"  # stored for list/show
    finally:
        os.killpg(pid, signal.SIGCONT)
    assert Webservice(ws, "frozen").state == "Healthy"
    with pytest.raises(WebserviceException, match="still Unhealthy"):
        os.killpg(pid, signal.SIGSTOP)
        try:
            Webservice(ws, "frozen").wait_for_deployment(timeout_sec=1)
        finally:
            os.killpg(pid, signal.SIGCONT)
