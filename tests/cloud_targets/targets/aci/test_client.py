"""AciTarget through the real azure-mgmt-containerinstance SDK, against a local HTTPS stand-in for ARM.

The SDK signs each request with the token of a static TokenCredential (the SDK's credential interface),
polls ARM's long-running operations, and its requests are asserted on as the fake ARM received them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.identity import EnvironmentCredential

from cloud_targets.config.model import AciDeploymentConfig
from cloud_targets.targets.aci import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, AciTarget
from cloud_targets.targets.base import RegistryCredentials, ServiceSpec
from packager.errors import ConflictError, EdgepackError, NotFoundError
from tests.cloud_targets.targets.aci.fake_arm import FakeArm, arm_error

ROOT = Path(__file__).resolve().parents[4]
SUB, RG = "00000000-1111-2222-3333-444444444444", "ml-rg"
TOKEN = "eyJ0eXAiOiJKV1QifQ.test-arm-token"
GROUP = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/containerGroups"
KEYS = {"EDGEPACK_PRIMARY_KEY": "pk-s3cret", "EDGEPACK_SECONDARY_KEY": "sk-s3cret"}


class StaticCredential:
    """azure.core's TokenCredential protocol: one fixed bearer token; records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[FakeArm]:
    server = FakeArm(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def credential() -> StaticCredential:
    return StaticCredential()


@pytest.fixture
def target(arm: FakeArm, credential: StaticCredential) -> AciTarget:
    return AciTarget(
        SUB, RG, credential, arm.base_url, location="westeurope", polling_interval=0, connection_verify=str(arm.ca)
    )


def spec(name: str = "scorer", **config: Any) -> ServiceSpec:
    return ServiceSpec(
        name,
        "myreg.azurecr.io/scorer@sha256:" + "cd" * 32,
        AciDeploymentConfig(**{"dns_name_label": "my-scorer", "cpu_cores": 1, "memory_gb": 2, **config}),
        env={"EDGEPACK_SCORING_TIMEOUT": "60"},
        secrets=KEYS,
        registry_credentials=RegistryCredentials("myreg.azurecr.io", "puller", "reg-pa55"),
    )


def test_deploy_state_logs_delete(arm: FakeArm, target: AciTarget, credential: StaticCredential) -> None:
    uri = target.deploy(spec())
    assert uri == "http://my-scorer.westeurope.azurecontainer.io:5001/score"

    put = arm.requests[0]
    assert put.method == "PUT"
    assert put.path == f"{GROUP}/scorer"
    assert put.query == {"api-version": ["2023-05-01"]}
    assert put.headers["Authorization"] == f"Bearer {TOKEN}"
    assert put.headers["Content-Type"] == "application/json"
    assert credential.scopes and credential.scopes[0] == ("https://management.azure.com/.default",)
    sent = put.json()
    assert sent["location"] == "westeurope"
    props = sent["properties"]
    (container,) = props["containers"]
    assert container["properties"]["resources"]["requests"] == {"cpu": 1.0, "memoryInGB": 2.0}
    assert props["ipAddress"]["dnsNameLabel"] == "my-scorer"
    assert props["restartPolicy"] == "Always" and props["osType"] == "Linux"
    env = container["properties"]["environmentVariables"]
    assert {"name": "EDGEPACK_PRIMARY_KEY", "secureValue": "pk-s3cret"} in env
    assert all("value" not in v for v in env if v["name"] in KEYS)
    assert props["imageRegistryCredentials"] == [
        {"server": "myreg.azurecr.io", "username": "puller", "password": "reg-pa55"}
    ]
    assert len(arm.requests) == 1  # 201 Succeeded: nothing to poll

    assert target.state("scorer") == HEALTHY
    assert target.scoring_uri("scorer") == uri
    assert arm.requests[-1].method == "GET" and arm.requests[-1].path == f"{GROUP}/scorer"

    assert target.logs("scorer", num_lines=3) == "line 8\nline 9\nline 10\n"
    logs = arm.requests[-1]
    assert logs.path == f"{GROUP}/scorer/containers/scorer/logs"
    assert logs.query == {"api-version": ["2023-05-01"], "tail": ["3"]}

    target.delete("scorer")
    delete = arm.requests[-1]
    assert (delete.method, delete.path) == ("DELETE", f"{GROUP}/scorer")
    assert "scorer" not in arm.groups
    with pytest.raises(NotFoundError, match="No such service: deploy it first"):
        target.state("scorer")
    target.delete("scorer")  # already gone: ARM answers 204, not an error
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in arm.requests)


def test_long_running_create_polls_the_async_operation(arm: FakeArm, target: AciTarget) -> None:
    arm.asynchronous = True
    uri = target.deploy(spec())
    assert uri.endswith("azurecontainer.io:5001/score")
    calls = [(r.method, r.path) for r in arm.requests]
    assert calls[0] == ("PUT", f"{GROUP}/scorer")
    assert calls[1:3] == [("GET", "/asyncops/1"), ("GET", "/asyncops/1")]  # InProgress, then Succeeded
    assert calls[-1] == ("GET", f"{GROUP}/scorer")  # the final state of a PUT: the resource itself
    assert target.state("scorer") == HEALTHY


def test_states(arm: FakeArm, target: AciTarget) -> None:
    arm.container_state = "Waiting"
    target.deploy(spec())
    assert target.state("scorer") == UNHEALTHY
    arm.groups["scorer"]["properties"]["provisioningState"] = "Creating"
    assert target.state("scorer") == TRANSITIONING
    arm.groups["scorer"]["properties"]["provisioningState"] = "Failed"
    assert target.state("scorer") == FAILED


def test_failed_provisioning_is_an_error_with_the_container_events(arm: FakeArm, target: AciTarget) -> None:
    arm.provisioning_result, arm.container_state = "Failed", "Terminated"
    with pytest.raises(EdgepackError, match="ACI could not provision 'scorer': Back-off restarting"):
        target.deploy(spec())
    assert target.state("scorer") == FAILED


def test_failed_long_running_operation(arm: FakeArm, target: AciTarget) -> None:
    arm.asynchronous, arm.provisioning_result = True, "Failed"
    with pytest.raises(EdgepackError) as caught:
        target.deploy(spec())
    message = str(caught.value)
    assert "the operation failed (ContainerGroupDeploymentFailed): image pull failed" in message
    assert "deploy again" in message and "answered 200" not in message


def test_update_secrets_redeploys_with_new_secure_values(arm: FakeArm, target: AciTarget) -> None:
    service = spec()
    target.deploy(service)
    target.update_secrets(service, {"EDGEPACK_PRIMARY_KEY": "rotated-pk"})
    env = arm.requests[-1].json()["properties"]["containers"][0]["properties"]["environmentVariables"]
    assert arm.requests[-1].method == "PUT"
    assert {"name": "EDGEPACK_PRIMARY_KEY", "secureValue": "rotated-pk"} in env
    assert {"name": "EDGEPACK_SECONDARY_KEY", "secureValue": "sk-s3cret"} in env
    # what ARM returns has no secure values
    got = target.get("scorer")
    assert all(v.secure_value is None for v in got.containers[0].environment_variables)


def test_warnings_for_unhonoured_settings(target: AciTarget, caplog: pytest.LogCaptureFixture) -> None:
    target.deploy(spec(ssl_enabled=True, ssl_cert_pem_file="c.pem", ssl_key_pem_file="k.pem"))
    assert len(target.last_warnings) == 1 and "sslEnabled" in target.last_warnings[0]
    assert "sslEnabled" in caplog.text
    for secret in [*KEYS.values(), "reg-pa55"]:
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("status", "code", "error", "fix"),
    [
        (401, "InvalidAuthenticationToken", EdgepackError, "az login"),
        (403, "AuthorizationFailed", EdgepackError, "Contributor role"),
        (404, "ResourceGroupNotFound", NotFoundError, "az group create"),
        (409, "Conflict", ConflictError, "delete the service and deploy"),
    ],
)
def test_arm_refusals_name_the_fix(
    arm: FakeArm, target: AciTarget, status: int, code: str, error: type[Exception], fix: str
) -> None:
    arm.fail_with = (status, arm_error(code, f"ARM says {code}"))
    with pytest.raises(error) as caught:
        target.deploy(spec())
    message = str(caught.value)
    assert f"ARM answered {status} {code}: ARM says {code}" in message
    assert fix in message and "'scorer'" in message and RG in message
    assert "pk-s3cret" not in message


def test_no_credential_names_the_fix(arm: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    target = AciTarget(SUB, RG, EnvironmentCredential(), arm.base_url, location="westeurope", polling_interval=0)
    with pytest.raises(EdgepackError, match=r"no Azure credential .*az login"):
        target.deploy(spec())
    assert arm.requests == []


def test_default_credential_is_azure_identity() -> None:
    from azure.identity import DefaultAzureCredential

    target = AciTarget(SUB, RG)
    assert isinstance(target.client._config.credential, DefaultAzureCredential)
    assert "s3cret" not in repr(target)


def test_importable_without_the_cloud_extra() -> None:
    code = """
import sys
class NoAzure:
    def find_spec(self, name, path=None, target=None):
        if name == "azure" or name.startswith("azure."):
            raise ImportError("no " + name)
sys.meta_path.insert(0, NoAzure())
import cloud_targets, cloud_targets.targets.aci as aci
from packager.errors import EdgepackError
try:
    aci.AciTarget("s", "rg").client
except EdgepackError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "pip install 'edgepack[cloud]'" in out.stdout, out.stderr


def test_request_body_is_what_group_builds(arm: FakeArm, target: AciTarget) -> None:
    from cloud_targets.targets.aci import container_group

    service = spec()
    target.deploy(service)
    assert arm.requests[0].json() == json.loads(json.dumps(container_group(service, "westeurope").serialize()))
