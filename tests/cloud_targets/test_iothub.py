"""IoT Hub deployments through the real azure-iot-hub SDK against a local HTTPS IoT Hub stand-in: the requests it
sends (method, path, api-version, SAS header, body), IoT Hub's errors, the CLI, and the connection string's care.
No IoT Hub runs here; nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_targets.iothub import (
    API_VERSION,
    AuthError,
    DeployError,
    DeploymentExists,
    DeploymentNotFound,
    InvalidManifestError,
    IotHubDeployer,
    deployment_content,
    parse_connection_string,
    redact,
    resolve_connection_string,
    save_connection_string,
)
from packager.cli import main
from packager.errors import EdgepackError, InvalidInputError
from tests.cloud_targets.fake_iothub import KEY, FakeIotHub, check_sas
from tests.packager.iotedge.test_validate import layered, manifest

ROOT = Path(__file__).resolve().parents[2]
METRIC = "SELECT deviceId FROM devices.modules WHERE properties.reported.lastDesiredStatus.code = 200"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIotHub]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("HTTPS_PROXY", "https_proxy", "EDGEPACK_IOTHUB_CONNECTION_STRING", "IOTHUB_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    tls = tmp_path / "tls"
    tls.mkdir()
    server = FakeIotHub(tls)
    yield server
    server.stop()


@pytest.fixture
def deployer(hub: FakeIotHub) -> IotHubDeployer:
    return IotHubDeployer.from_connection_string(hub.connection_string, verify=str(hub.ca), retries=0)


def _one(hub: FakeIotHub):
    assert len(hub.requests) == 1, [(r.method, r.path) for r in hub.requests]
    return hub.requests[0]


def _check_common(hub: FakeIotHub, request, method: str, path: str) -> None:
    assert (request.method, request.path) == (method, path)
    assert request.query["api-version"] == [API_VERSION]
    fields = check_sas(request.headers["Authorization"], hub.host)
    assert 3500 < int(fields["se"]) - time.time() <= 3600  # the SDK's one-hour tokens
    assert KEY not in json.dumps(request.headers)


def test_apply_to_device_sends_the_modules_content(hub: FakeIotHub, deployer: IotHubDeployer):
    doc = manifest()
    sent = deployer.apply_to_device("edge-1", doc)
    request = _one(hub)
    _check_common(hub, request, "POST", "/devices/edge-1/applyConfigurationContent")
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.json() == {"modulesContent": doc["modulesContent"]} == sent


def test_create_base_deployment(hub: FakeIotHub, deployer: IotHubDeployer):
    doc = manifest()
    labels, metrics = {"team": "ml", "model": "iris"}, {"applied": METRIC}
    created = deployer.create_deployment("iris-prod", doc, "tags.env='prod'", 10, labels, metrics)
    request = _one(hub)
    _check_common(hub, request, "PUT", "/configurations/iris-prod")
    assert "If-Match" not in request.headers  # create, never overwrite
    body = request.json()
    assert body == deployment_content("iris-prod", doc, "tags.env='prod'", 10, labels, metrics)
    assert body["content"] == {"modulesContent": doc["modulesContent"]}
    assert (body["targetCondition"], body["priority"], body["labels"], body["metrics"]) == (
        "tags.env='prod'",
        10,
        labels,
        {"queries": metrics},
    )
    assert created["etag"] == "MQ==" and created["id"] == "iris-prod"


def test_create_layered_deployment(hub: FakeIotHub, deployer: IotHubDeployer):
    doc = layered()
    deployer.create_deployment("iris-layer", doc, "tags.env='prod'", 20, layered=True)
    body = _one(hub).json()
    assert body["content"] == {"modulesContent": doc["modulesContent"]}
    assert body["priority"] == 20


def test_get_list_delete(hub: FakeIotHub, deployer: IotHubDeployer):
    deployer.create_deployment("a", manifest(), "tags.x='1'", 1)
    assert deployer.get_deployment("a")["targetCondition"] == "tags.x='1'"
    assert [c["id"] for c in deployer.list_deployments(top=5)] == ["a"]
    deployer.delete_deployment("a")
    get, listing, delete = hub.requests[1:]
    _check_common(hub, get, "GET", "/configurations/a")
    _check_common(hub, listing, "GET", "/configurations")
    assert listing.query["top"] == ["5"]
    _check_common(hub, delete, "DELETE", "/configurations/a")
    assert delete.headers["If-Match"] == "*"
    with pytest.raises(DeploymentNotFound, match=r"HTTP 404.*ConfigurationNotFound"):
        deployer.get_deployment("a")


def test_errors_are_clear_and_carry_no_secret(hub: FakeIotHub, deployer: IotHubDeployer):
    deployer.create_deployment("dup", manifest(), "tags.x='1'", 1)
    with pytest.raises(DeploymentExists, match=r"HTTP 409.*ConfigurationAlreadyExists.*new deployment id") as exc:
        deployer.create_deployment("dup", manifest(), "tags.x='1'", 1)
    assert exc.value.status == 409 and exc.value.exit_code == 1
    hub.fail_with = (401, {"Message": "ErrorCode:IotHubUnauthorizedAccess;Unauthorized"})
    with pytest.raises(AuthError, match="refused the credentials"):
        deployer.apply_to_device("edge-1", manifest())
    hub.fail_with = (400, {"Message": f"ErrorCode:ArgumentInvalid;bad content SharedAccessKey={KEY}"})
    with pytest.raises(DeployError, match=r"HTTP 400.*ArgumentInvalid") as exc:
        deployer.create_deployment("other", manifest(), "tags.x='1'", 1)
    assert KEY not in str(exc.value) and "SharedAccessKey=***" in str(exc.value)
    with pytest.raises(DeploymentNotFound, match="DeviceNotFound"):
        deployer.apply_to_device("nope", manifest())


def test_invalid_manifests_send_nothing(hub: FakeIotHub, deployer: IotHubDeployer):
    broken = manifest()
    broken["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["scorer"]["settings"]["image"] = "BAD IMAGE"
    with pytest.raises(InvalidManifestError, match=r"settings\.image") as exc:
        deployer.apply_to_device("edge-1", broken)
    assert exc.value.problems and exc.value.exit_code == 2
    with pytest.raises(InvalidInputError, match="pass --layered"):
        deployer.apply_to_device("edge-1", layered())
    with pytest.raises(InvalidInputError, match="full manifest"):
        deployer.create_deployment("l", manifest(), "tags.x='1'", 1, layered=True)
    with pytest.raises(InvalidInputError, match="deployment id"):
        deployer.create_deployment("Upper", manifest(), "tags.x='1'", 1)
    with pytest.raises(InvalidInputError, match="IoT Hub query"):
        deployer.create_deployment("m", manifest(), "tags.x='1'", 1, metrics={"m": "drop table"})
    assert hub.requests == []


def test_unreachable_hub(tmp_path: Path):
    from tests.support.net import free_port

    cs = f"HostName=127.0.0.1:{free_port()};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
    deployer = IotHubDeployer.from_connection_string(cs, retries=0, timeout=5)
    with pytest.raises(DeployError, match="cannot reach IoT Hub") as exc:
        deployer.apply_to_device("edge-1", manifest())
    assert KEY not in str(exc.value)


def test_untrusted_certificate_is_refused(hub: FakeIotHub):
    deployer = IotHubDeployer.from_connection_string(hub.connection_string, retries=0)  # system CAs only
    with pytest.raises(DeployError, match=r"cannot reach IoT Hub.*(SSL|certificate)"):
        deployer.apply_to_device("edge-1", manifest())
    assert hub.requests == []


# -------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)

    def _run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out = capsys.readouterr()
        return int(exc.value.code or 0), out.out, out.err

    return _run


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"full": tmp_path / "deployment.json", "layered": tmp_path / "layered.json"}
    paths["full"].write_text(json.dumps(manifest()))
    paths["layered"].write_text(json.dumps({"content": layered()}))  # az's --content shape is accepted too
    return paths


def test_cli_deploy_and_dry_run(hub: FakeIotHub, run, files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(hub.ca))  # what requests (under msrest) honours
    monkeypatch.setenv("MY_HUB", hub.connection_string)
    args = ["deploy", "iotedge", "-f", str(files["full"]), "--deployment-id", "iris", "--target-condition"]
    args += ["tags.env='prod'", "--priority", "5", "--label", "team=ml", "--metric", f"ok={METRIC}"]
    code, out, err = run(*args, "--dry-run")
    assert (code, err) == (0, "")
    dry = json.loads(out)
    assert hub.requests == []
    code, out, err = run(*args, "--connection-string-env", "MY_HUB", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "hub": hub.host,
        "deployment": "iris",
        "layered": False,
        "etag": "MQ==",
        "createdTimeUtc": "2026-12-03T08:00:00.000Z",  # as the SDK re-serialises it
    }
    assert _one(hub).json() == dry  # --dry-run prints exactly what is sent
    code, out, err = run(*args, "--connection-string-env", "MY_HUB")
    assert code == 1 and "HTTP 409" in err and KEY not in err + out

    monkeypatch.setenv("EDGEPACK_IOTHUB_CONNECTION_STRING", hub.connection_string)
    code, out, err = run("deploy", "iotedge", "-f", str(files["full"]), "--device", "edge-1")
    assert (code, err) == (0, "") and out.startswith("deployed device edge-1")
    assert hub.requests[-1].path == "/devices/edge-1/applyConfigurationContent"
    code, out, err = run(
        "deploy", "iotedge", "-f", str(files["layered"]), "--deployment-id", "layer", "--target-condition",
        "tags.env='prod'", "--priority", "9", "--layered", "--dry-run", "-o", str(tmp_path / "content.json"),
    )  # fmt: skip
    assert code == 0 and json.loads((tmp_path / "content.json").read_text())["content"] == layered()


def test_cli_bad_input(hub: FakeIotHub, run, files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    code, _, err = run("deploy", "iotedge", "-f", str(files["full"]), "--device", "edge-1")
    assert code == 2 and "no IoT Hub connection string" in err
    monkeypatch.setenv("EDGEPACK_IOTHUB_CONNECTION_STRING", hub.connection_string)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}))
    code, _, err = run("deploy", "iotedge", "-f", str(broken), "--device", "edge-1")
    assert code == 2 and "not a valid deployment manifest" in err
    code, _, err = run("deploy", "iotedge", "-f", str(files["full"]), "--deployment-id", "x")
    assert code == 2 and "--target-condition and --priority" in err
    code, _, err = run("deploy", "iotedge", "-f", str(files["full"]))
    assert code == 2 and "--device ID or --deployment-id ID" in err
    monkeypatch.setenv("EDGEPACK_IOTHUB_CONNECTION_STRING", "HostName=h;SharedAccessKeyName=k;SharedAccessKey=%%%")
    code, _, err = run("deploy", "iotedge", "-f", str(files["full"]), "--device", "edge-1")
    assert code == 2 and "not base64" in err and "%%%" not in err
    assert hub.requests == []


def test_core_import_does_not_load_cloud_targets():
    code = "import sys, packager.cli; print(any(m.startswith(('cloud_targets', 'azure')) for m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------------------------- the connection string


def test_connection_string_parsing_never_shows_the_key():
    cs = parse_connection_string(
        f"HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
    )
    assert (cs.host_name, cs.key_name) == ("hub.azure-devices.net", "iothubowner")
    assert KEY not in repr(cs) and KEY not in str(cs)
    with pytest.raises(InvalidInputError, match="device connection string") as exc:
        parse_connection_string(f"HostName=h.net;DeviceId=d;SharedAccessKey={KEY}")
    assert KEY not in str(exc.value)
    with pytest.raises(InvalidInputError, match="SAS token"):
        parse_connection_string("HostName=h.net;SharedAccessKeyName=k;SharedAccessSignature=SharedAccessSignature sr=x")
    text = f"HostName=h;SharedAccessKey={KEY};x Authorization: SharedAccessSignature sr=h&sig=abc%2B&se=1&skn=k"
    assert KEY not in redact(text) and "abc" not in redact(text)


def test_workspace_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("EDGEPACK_IOTHUB_CONNECTION_STRING", "IOTHUB_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    value = f"HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
    path = save_connection_string(tmp_path, value)
    assert path.stat().st_mode & 0o777 == 0o600
    assert resolve_connection_string(workspace=tmp_path).value == value
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", value.replace("hub.", "env."))
    assert resolve_connection_string(workspace=tmp_path).host_name == "env.azure-devices.net"  # env first
    monkeypatch.delenv("IOTHUB_CONNECTION_STRING")
    path.chmod(0o644)
    with pytest.raises(InvalidInputError, match="chmod 600"):
        resolve_connection_string(workspace=tmp_path)
    path.chmod(0o600)
    other = tmp_path / "other"
    other.mkdir()
    (other / "iothub.json").symlink_to(path)
    with pytest.raises(InvalidInputError, match="symlink"):
        resolve_connection_string(workspace=other)
    with pytest.raises(InvalidInputError, match="no IoT Hub connection string"):
        resolve_connection_string(workspace=tmp_path / "empty")


def test_cli_list_show_delete(hub: FakeIotHub, run, monkeypatch: pytest.MonkeyPatch, deployer: IotHubDeployer):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(hub.ca))
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", hub.connection_string)
    deployer.create_deployment("iris", manifest(), "tags.env='prod'", 3)
    code, out, err = run("deploy", "iotedge-list")
    assert (code, out, err) == (0, "iris  priority 3  tags.env='prod'\n", "")
    code, out, _ = run("deploy", "iotedge-list", "--json", "--top", "2")
    assert code == 0 and [c["id"] for c in json.loads(out)] == ["iris"]
    assert hub.requests[-1].query["top"] == ["2"]
    code, out, _ = run("deploy", "iotedge-show", "iris")
    assert code == 0 and json.loads(out)["content"] == {"modulesContent": manifest()["modulesContent"]}
    code, out, _ = run("deploy", "iotedge-delete", "iris")
    assert code == 0 and out.startswith("deleted deployment iris")
    code, _, err = run("deploy", "iotedge-show", "iris")
    assert code == 1 and "HTTP 404" in err and KEY not in err


def test_bad_device_id_sends_nothing(hub: FakeIotHub, deployer: IotHubDeployer, run):
    with pytest.raises(InvalidInputError, match="device id"):
        deployer.apply_to_device("edge/1", manifest())
    assert hub.requests == []


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "azure.iot.hub", None)  # import fails as if not installed
    with pytest.raises(EdgepackError, match=r"edgepack\[cloud\]"):
        IotHubDeployer.from_connection_string(f"HostName=h.net;SharedAccessKeyName=k;SharedAccessKey={KEY}")


def test_missing_cloud_targets_names_the_extra(run, monkeypatch: pytest.MonkeyPatch):
    from packager.cli import cli

    monkeypatch.setitem(type(cli)._lazy, "deploy", ("cloud_targets_not_installed", "deploy", "cloud"))
    code, _, err = run("deploy", "iotedge", "-f", "x.json", "--device", "d")
    assert code == 1 and "pip install 'edgepack[cloud]'" in err
