"""The service lifecycle on AKS and ACI, end to end through the official SDKs against local stand-ins.

``Model.deploy`` builds the image with the daemonless builder and pushes it to the dev registry; the kubernetes
client applies the objects to a local API server (tests/cloud_targets/targets/kubernetes/fake_apiserver.py),
azure-mgmt-containerinstance sends the container group to a local ARM (tests/.../aci/fake_arm.py). The tests
assert on what those servers received and hold. Bad configurations fail before anything is built or sent.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken

from cloud_targets import AciWebservice, AksWebservice, Model, Webservice, WebserviceException
from cloud_targets.config import deployment_config_from_dict, load_deployment_config
from cloud_targets.config.model import AksDeploymentConfig
from cloud_targets.services.store import ServiceStore
from cloud_targets.targets.aci.service import AciServiceTarget
from cloud_targets.targets.base import Target
from cloud_targets.targets.compute import AciCompute, KubernetesCompute
from cloud_targets.targets.kubernetes.client import KubernetesError
from cloud_targets.targets.kubernetes.service import AksTarget
from cloud_targets.targets.pull import pull_credentials
from cloud_targets.targets.registry import remote_target
from edge_module.server.auth import verify_token
from packager import Workspace
from packager.errors import InvalidInputError
from packager.image.inference_config import InferenceConfig
from tests.cloud_targets.local.support import register, write_app
from tests.cloud_targets.targets.aci.fake_arm import FakeArm
from tests.cloud_targets.targets.kubernetes.fake_apiserver import FakeApiServer, kubeconfig

NS = "ml"
SUB, RG = "00000000-1111-2222-3333-444444444444", "ml-rg"
ARM_TOKEN = "eyJ0eXAiOiJKV1QifQ.test-arm-token"
REGISTRY_USER, REGISTRY_PASSWORD = "puller", "reg-pa55-w0rd-never-stored"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


class StaticCredential:
    """azure.core's TokenCredential protocol with one fixed token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(ARM_TOKEN, int(time.time()) + 3600)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.from_path(tmp_path / "ws")


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def recorder() -> Iterator[FakeApiServer]:
    """An HTTP server on 127.0.0.1 that records every request: a registry nothing may be pushed to."""
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def remote_env(dev_services: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The dev registry's base image, and ``docker login`` credentials for it: returns a fresh repository."""
    monkeypatch.setenv("EDGEPACK_BASE_IMAGE", dev_services["EDGEPACK_TEST_BASE_IMAGE"])
    registry = dev_services["EDGEPACK_TEST_REGISTRY"]
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    auth = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    (docker_dir / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_dir))
    return f"{registry}/test/remote-{uuid.uuid4().hex[:8]}"


def status(generation: int, replicas: int, available: int) -> dict:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": available,
    }


def pod(name: str, service: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": NS, "labels": {"edgepack.service": service}},
        "status": {
            "containerStatuses": [
                {
                    "name": service,
                    "state": {"running": {}},
                    "ready": True,
                    "restartCount": 0,
                    "image": "",
                    "imageID": "",
                }
            ]
        },
    }


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def in_registry(image: str) -> bool:
    """The image (``host:port/repo@digest``) is in the dev registry."""
    host, rest = image.split("/", 1)
    repo, digest = rest.split("@")
    answer = requests.get(f"http://{host}/v2/{repo}/manifests/{digest}", headers={"Accept": MANIFEST_TYPES}, timeout=10)
    return answer.status_code == 200


# -- AKS ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_aks_lifecycle(ws: Workspace, tmp_path: Path, remote_env: str, apiserver: FakeApiServer, kubeconf: str) -> None:
    name = "digits-aks"
    dep = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"
    secret = f"/api/v1/namespaces/{NS}/secrets/{name}-secrets"
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    config = AksWebservice.deploy_configuration(
        num_replicas=2, namespace=NS, auth_enabled=True, enable_app_insights=True, scoring_timeout_ms=5000
    )
    apiserver.deployment_status[dep] = [status(1, 2, 0), status(1, 2, 1), status(1, 2, 2)]
    apiserver.pods[NS] = [pod(f"{name}-a", name), pod(f"{name}-b", name)]
    apiserver.pod_logs[(NS, f"{name}-a")] = "Model loaded\nscored 3 rows\n"
    apiserver.pod_logs[(NS, f"{name}-b")] = "Model loaded\n"
    compute = KubernetesCompute(kubeconfig=kubeconf, image_registry=remote_env)

    service = Model.deploy(ws, name, [model], ic, config, deployment_target=compute)
    assert isinstance(service, AksWebservice)
    (warning,) = service.warnings  # said once, though the config and the target both know it
    assert "Application Insights" in warning
    service.wait_for_deployment(timeout_sec=60)  # follows the rollout: 0, 1, then 2 of 2 available
    assert service.state == "Healthy"
    assert service.scoring_uri == f"http://{name}.{NS}.svc.cluster.local/score"
    assert service.swagger_uri == f"http://{name}.{NS}.svc.cluster.local/swagger.json"

    # the Deployment runs the pushed image, pinned by digest; the Secret holds the keys
    deployment = apiserver.objects[dep]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == service.image_id == f"{remote_env}/{name}@{service._record.image_digest}"
    assert in_registry(container["image"])
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e for e in container["env"]}
    assert env["SCORING_TIMEOUT_MS"]["value"] == "5000"
    assert env["EDGEPACK_PRIMARY_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{name}-secrets"
    primary, secondary = service.get_keys()
    assert apiserver.objects[secret]["data"] == {
        "EDGEPACK_PRIMARY_KEY": b64(primary),
        "EDGEPACK_SECONDARY_KEY": b64(secondary),
    }
    # the pull secret carries docker login's credentials; the record never does
    pull = apiserver.objects[f"/api/v1/namespaces/{NS}/secrets/{name}-registry"]
    auths = json.loads(base64.b64decode(pull["data"][".dockerconfigjson"]))["auths"]
    assert auths[remote_env.split("/")[0]]["password"] == REGISTRY_PASSWORD
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": f"{name}-registry"}]
    svc_dir = ServiceStore(ws).service_dir(name)
    record = (svc_dir / "service.json").read_text()
    for text in (record, json.dumps(service.serialize()), repr(service)):
        assert REGISTRY_PASSWORD not in text and primary not in text
    assert json.loads(record)["target"]["kubeconfig"] == kubeconf

    # logs: each pod's tail
    logs = service.get_logs(1)
    assert f"==> pod/{name}-a <==\nscored 3 rows" in logs and f"==> pod/{name}-b <==\nModel loaded" in logs

    # regen_key: the Secret is applied with the new key, the pods roll onto it
    apiserver.deployment_status[dep] = [status(2, 2, 2)]
    apiserver.requests.clear()
    revision = deployment["spec"]["template"]["metadata"]["annotations"]["edgepack/secrets-revision"]
    service.regen_key("Primary")
    new_primary, same_secondary = service.get_keys()
    assert new_primary != primary and same_secondary == secondary
    applied = [r for r in apiserver.requests if r.path == secret and r.method == "PATCH"]
    assert [r.content_type for r in applied] == ["application/apply-patch+yaml"]
    assert apiserver.objects[secret]["data"]["EDGEPACK_PRIMARY_KEY"] == b64(new_primary)
    rolled = apiserver.objects[dep]["spec"]["template"]["metadata"]["annotations"]["edgepack/secrets-revision"]
    assert rolled != revision

    # a later update (a fresh object, as another process would load it) keeps the new keys and the image
    apiserver.deployment_status[dep] = [status(3, 3, 3)]
    later = Webservice(ws, name)
    later.update(num_replicas=3)
    later.wait_for_deployment(timeout_sec=30)
    assert apiserver.objects[dep]["spec"]["replicas"] == 3
    assert apiserver.objects[dep]["spec"]["template"]["spec"]["containers"][0]["image"] == container["image"]
    assert apiserver.objects[secret]["data"]["EDGEPACK_PRIMARY_KEY"] == b64(new_primary)
    assert later.warnings == service.warnings  # the same settings are still not honoured

    # a new model version: a new image is pushed and rolled out
    v2 = register(ws, tmp_path, seed=1)
    apiserver.deployment_status[dep] = [status(4, 3, 3)]
    later.update(models=[v2])
    later.wait_for_deployment(timeout_sec=30)
    image = apiserver.objects[dep]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image != container["image"] and image == later.image_id and in_registry(image)
    assert later.models == ["mlp:2"]

    # delete: the service's objects go, the namespace stays
    later.delete()
    left = [p for p in apiserver.objects if name in p]
    assert left == []
    assert f"/api/v1/namespaces/{NS}" in apiserver.objects
    assert Webservice.list(ws) == []


@pytest.mark.slow
def test_aks_token_auth_and_a_failed_rollout(
    ws: Workspace,
    tmp_path: Path,
    remote_env: str,
    apiserver: FakeApiServer,
    kubeconf: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGEPACK_IMAGE_REGISTRY", remote_env)  # the registry from the environment
    name = "digits-token"
    dep = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"
    model = register(ws, tmp_path, seed=0)
    ic = InferenceConfig.load(write_app(tmp_path))
    config = AksWebservice.deploy_configuration(
        token_auth_enabled=True,
        namespace=NS,
        autoscale_enabled=True,
        autoscale_max_replicas=4,
        autoscale_refresh_seconds=5,
    )
    apiserver.deployment_status[dep] = [status(1, 1, 1)]
    apiserver.pods[NS] = [pod(f"{name}-a", name)]
    service = Model.deploy(ws, name, [model], ic, config, deployment_target=KubernetesCompute(kubeconfig=kubeconf))
    service.wait_for_deployment(timeout_sec=30)
    (warning,) = service.warnings  # a Kubernetes-only limit
    assert "horizontal-pod-autoscaler-sync-period" in warning
    assert service.token_auth_enabled and not service.auth_enabled
    token, refresh_after = service.get_token()
    stored = apiserver.objects[f"/api/v1/namespaces/{NS}/secrets/{name}-secrets"]["data"]
    assert set(stored) == {"EDGEPACK_TOKEN_SECRET"}
    claims = verify_token(base64.b64decode(stored["EDGEPACK_TOKEN_SECRET"]).decode(), token)  # the pods' secret
    assert claims and refresh_after.timestamp() > time.time()
    (container,) = apiserver.objects[dep]["spec"]["template"]["spec"]["containers"]
    assert {"name": "EDGEPACK_TOKEN_AUTH", "value": "true"} in container["env"]
    hpa = apiserver.objects[f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}"]
    assert hpa["spec"]["maxReplicas"] == 4
    with pytest.raises(WebserviceException, match="key auth"):
        service.get_keys()

    # a pod that cannot start: the rollout wait fails fast with the pod's reason and its logs
    apiserver.deployment_status[dep] = [status(1, 1, 0)]
    stuck = pod(f"{name}-a", name)
    stuck["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": "boom"}}
    apiserver.pods[NS] = [stuck]
    apiserver.pod_logs[(NS, f"{name}-a")] = "Traceback: init() failed: boom-17\n"
    with pytest.raises(WebserviceException, match="CrashLoopBackOff") as info:
        Webservice(ws, name).wait_for_deployment(timeout_sec=30)
    assert "boom-17" in info.value.logs
    assert Webservice(ws, name).state == "Unhealthy"
    Webservice(ws, name).delete()


@pytest.mark.slow
def test_a_refused_apply_leaves_nothing_behind(
    ws: Workspace, tmp_path: Path, remote_env: str, apiserver: FakeApiServer, kubeconf: str
) -> None:
    name = "refused"
    apiserver.forbidden.add(f"/api/v1/namespaces/{NS}/secrets/{name}-secrets")  # RBAC: no rights on that Secret
    model = register(ws, tmp_path, seed=0)
    config = AksWebservice.deploy_configuration(num_replicas=1, namespace=NS)
    compute = KubernetesCompute(kubeconfig=kubeconf, image_registry=remote_env)
    with pytest.raises(KubernetesError, match="403"):
        Model.deploy(ws, name, [model], deployment_config=config, deployment_target=compute)
    applied = [r.path for r in apiserver.requests if r.method == "PATCH"]
    assert f"/api/v1/namespaces/{NS}/secrets/{name}-registry" in applied  # the pull secret went in first...
    assert [p for p in apiserver.objects if name in p] == []  # ...and was deleted again
    assert Webservice.list(ws) == []


# -- ACI ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_aci_lifecycle(ws: Workspace, tmp_path: Path, remote_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "arm").mkdir()
    arm = FakeArm(tmp_path / "arm")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(arm.ca))  # azure-core's transport trusts the fake's CA
    try:
        name = "digits-aci"
        model = register(ws, tmp_path, seed=0)
        ic = InferenceConfig.load(write_app(tmp_path))
        config = AciWebservice.deploy_configuration(
            cpu_cores=1, memory_gb=1, auth_enabled=True, dns_name_label="digits-aci", location="westeurope"
        )
        compute = AciCompute(SUB, RG, image_registry=remote_env, credential=StaticCredential(), base_url=arm.base_url)
        service = Model.deploy(ws, name, [model], ic, config, deployment_target=compute)
        assert isinstance(service, AciWebservice)
        service.wait_for_deployment(timeout_sec=30)
        assert service.state == "Healthy"
        assert service.scoring_uri == "http://digits-aci.westeurope.azurecontainer.io:5001/score"

        put = next(r for r in arm.requests if r.method == "PUT")
        assert put.headers["Authorization"] == f"Bearer {ARM_TOKEN}"
        props = put.json()["properties"]
        (container,) = props["containers"]
        assert container["properties"]["image"] == service.image_id and in_registry(service.image_id)
        env = {e["name"]: e for e in container["properties"]["environmentVariables"]}
        primary, secondary = service.get_keys()
        assert env["EDGEPACK_PRIMARY_KEY"] == {"name": "EDGEPACK_PRIMARY_KEY", "secureValue": primary}
        assert env["EDGEPACK_SECONDARY_KEY"] == {"name": "EDGEPACK_SECONDARY_KEY", "secureValue": secondary}
        assert props["imageRegistryCredentials"] == [
            {"server": remote_env.split("/")[0], "username": REGISTRY_USER, "password": REGISTRY_PASSWORD}
        ]
        record = (ServiceStore(ws).service_dir(name) / "service.json").read_text()
        assert REGISTRY_PASSWORD not in record and primary not in record and ARM_TOKEN not in record
        assert service.get_logs(2) == "line 9\nline 10\n"

        # regen_key sends the whole group again with the new secure value; a fresh object finds the service
        arm.requests.clear()
        again = Webservice(ws, name)
        again.regen_key("Secondary", set_key="s" * 24)
        (put,) = [r for r in arm.requests if r.method == "PUT"]
        env = {e["name"]: e for e in put.json()["properties"]["containers"][0]["properties"]["environmentVariables"]}
        assert env["EDGEPACK_SECONDARY_KEY"]["secureValue"] == "s" * 24
        assert env["EDGEPACK_PRIMARY_KEY"]["secureValue"] == primary
        assert again.state == "Healthy"

        again.delete()
        assert arm.groups == {} and [r.method for r in arm.requests][-1] == "DELETE"
        assert Webservice.list(ws) == []
    finally:
        arm.stop()


# -- checks before anything is built ---------------------------------------------------------------------------
BAD_FILES = [
    ({"numReplicas": 1}, "computeType"),
    ({"computeType": "AKS", "authEnabled": True, "tokenAuthEnabled": True, "numReplicas": 1}, "cannot both be true"),
    ({"computeType": "AKS", "numReplicas": 2, "autoScaler": {"maxReplicas": 4}}, "without enabling autoscaling"),
    ({"computeType": "AKS", "autoScaler": {"autoscaleEnabled": True}, "numReplicas": 2}, "num_replicas provided"),
    ({"computeType": "ACI", "tokenAuthEnabled": True}, "only available on AKS"),
]


@pytest.mark.parametrize(("doc", "rule"), BAD_FILES)
def test_bad_v1_files_fail_before_anything(tmp_path: Path, doc: dict, rule: str) -> None:
    path = tmp_path / "deploymentconfig.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match=rule):
        load_deployment_config(path)


BAD_CONFIGS = [
    (lambda: AksDeploymentConfig(auth_enabled=True, token_auth_enabled=True, num_replicas=1), "cannot both be true"),
    (lambda: AksDeploymentConfig(num_replicas=1, autoscale_min_replicas=2), "without enabling autoscaling"),
    (lambda: AksDeploymentConfig(autoscale_enabled=True, autoscale_min_replicas=5, autoscale_max_replicas=2), "min"),
    (lambda: AksDeploymentConfig(num_replicas=0), "greater than zero"),
    (lambda: AksDeploymentConfig(num_replicas=1, namespace="Bad_NS"), "namespace"),
]


@pytest.mark.parametrize(("make", "rule"), BAD_CONFIGS)
def test_bad_configs_and_names_fail_before_anything_is_built_or_sent(
    ws: Workspace, tmp_path: Path, apiserver: FakeApiServer, kubeconf: str, recorder: FakeApiServer, make, rule: str
) -> None:
    model = register(ws, tmp_path, seed=0)
    compute = KubernetesCompute(kubeconfig=kubeconf, image_registry=recorder.url.split("//")[1] + "/models")
    with pytest.raises(InvalidInputError, match=rule):
        Model.deploy(ws, "checked", [model], deployment_config=make(), deployment_target=compute)
    with pytest.raises(InvalidInputError, match="between 3 and 32 characters"):
        Model.deploy(ws, "Bad_Name", [model], deployment_config=AksDeploymentConfig(num_replicas=1))
    assert apiserver.requests == [] and recorder.requests == []  # nothing sent to the cluster, nothing pushed
    assert Webservice.list(ws) == [] and not (ws.path / "services" / "checked").exists()


def test_an_unusable_cluster_fails_before_the_image_is_built(
    ws: Workspace, tmp_path: Path, recorder: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    model = register(ws, tmp_path, seed=0)
    missing = KubernetesCompute(kubeconfig=str(tmp_path / "no-kubeconfig"), image_registry=recorder.url[7:] + "/m")
    config = AksWebservice.deploy_configuration(num_replicas=1)
    with pytest.raises(InvalidInputError, match="kubeconfig"):
        Model.deploy(ws, "on-aks", [model], deployment_config=config, deployment_target=missing)
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    monkeypatch.delenv("EDGEPACK_ACI_RESOURCE_GROUP", raising=False)
    with pytest.raises(InvalidInputError, match="AZURE_SUBSCRIPTION_ID"):
        Model.deploy(ws, "on-aci", [model], deployment_config=AciWebservice.deploy_configuration())
    assert recorder.requests == [] and Webservice.list(ws) == []


# -- resolving the deployment target ---------------------------------------------------------------------------
def test_targets_from_compute_env_and_handle(
    tmp_path: Path, apiserver: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = FakeApiServer().start()
    try:
        path = kubeconfig(
            str(tmp_path / "kc"), {"dev": (apiserver.url, "t1"), "prod": (other.url, "t2")}, current="dev"
        )
        config = AksDeploymentConfig(num_replicas=1)
        assert remote_target("AKS", config, KubernetesCompute(kubeconfig=path)).kube.host == apiserver.url
        assert remote_target("AKS", config, KubernetesCompute(context="prod", kubeconfig=path)).kube.host == other.url
        monkeypatch.setenv("EDGEPACK_KUBE_CONTEXT", "prod")
        monkeypatch.setenv("KUBECONFIG", path)
        target = remote_target("AKSENDPOINT", config)  # all from the environment
        assert isinstance(target, AksTarget) and isinstance(target, Target) and target.kube.host == other.url
        assert remote_target("AKS", config, "dev").kube.host == apiserver.url  # a context name, as --ct gives
        handle = {"name": "svc", "namespace": "ml", **KubernetesCompute(context="dev", kubeconfig=path).handle()}
        assert remote_target("AKS", config, handle).kube.host == apiserver.url  # what a record keeps
    finally:
        other.stop()

    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("EDGEPACK_ACI_RESOURCE_GROUP", RG)
    monkeypatch.setenv("EDGEPACK_IMAGE_REGISTRY", "myacr.azurecr.io/models")
    aci = remote_target("ACI", AciWebservice.deploy_configuration())
    assert isinstance(aci, AciServiceTarget) and isinstance(aci, Target)
    assert (aci.aci.subscription_id, aci.aci.resource_group) == (SUB, RG)
    assert aci.compute.image_registry == "myacr.azurecr.io/models"
    with pytest.raises(InvalidInputError, match="not a Kubernetes cluster"):
        remote_target("AKS", config, AciCompute(SUB, RG))


def test_pull_credentials_come_from_docker_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auths = {
        "myacr.azurecr.io": {"auth": b64("puller:pa55")},
        "https://tokens.azurecr.io": {"auth": b64("00000000-0000-0000-0000-000000000000:"), "identitytoken": "rt"},
    }
    (tmp_path / "config.json").write_text(json.dumps({"auths": auths}))
    creds = pull_credentials("myacr.azurecr.io/models/svc@sha256:" + "0" * 64)
    assert creds is not None
    assert (creds.server, creds.username, creds.password) == ("myacr.azurecr.io", "puller", "pa55")
    assert "pa55" not in repr(creds)
    assert pull_credentials("127.0.0.1:5000/models/svc:1") is None  # nothing stored: no pull secret
    assert pull_credentials("tokens.azurecr.io/models/svc:1") is None  # a short-lived token is not handed on
    assert "short-lived token" in caplog.text and "rt" not in caplog.text.split()


def test_v1_file_shapes_map_to_the_remote_configs() -> None:
    config, warnings = deployment_config_from_dict(
        {"computeType": "aks", "autoScaler": {"autoscaleEnabled": False}, "numReplicas": 2, "legacyKey": 1}
    )
    assert isinstance(config, AksDeploymentConfig) and config.num_replicas == 2
    assert any("legacyKey" in w for w in warnings)


@pytest.mark.slow
def test_aks_through_the_cli_with_token_auth(
    tmp_path: Path,
    remote_env: str,
    apiserver: FakeApiServer,
    kubeconf: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``edgepack deploy --dc aks.yml --ct dev`` against the stand-in API server, then ``service token|show|delete``."""
    from tests.cloud_targets.cli_support import runner

    monkeypatch.setenv("EDGEPACK_WORKSPACE", str(tmp_path / "ws"))
    run = runner(capsys)
    name = "cli-aks"
    dep = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"
    register(Workspace.from_path(tmp_path / "ws"), tmp_path, seed=0)
    dc = tmp_path / "aks.yml"
    dc.write_text(
        "computeType: AKS\n"
        "tokenAuthEnabled: true\n"
        f"namespace: {NS}\n"
        "numReplicas: 2\n"
        "containerResourceRequirements: {cpu: 0.5, memoryInGB: 1}\n"
        "scoringTimeoutMs: 5000\n"
    )
    apiserver.deployment_status[dep] = [status(1, 2, 2)]
    apiserver.pods[NS] = [pod(f"{name}-a", name)]
    args = ("deploy", "-n", name, "-m", "mlp", "--ic", write_app(tmp_path), "--dc", dc)
    r = run(*args, "--ct", "dev", "--kubeconfig", kubeconf, "--image-registry", remote_env, "--json")
    assert r.code == 0, r.err
    assert r.json()["state"] == "Healthy"
    (container,) = apiserver.objects[dep]["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith(f"{remote_env}/{name}@sha256:") and in_registry(container["image"])
    assert apiserver.objects[dep]["spec"]["replicas"] == 2
    assert {"name": "SCORING_TIMEOUT_MS", "value": "5000"} in container["env"]

    token = run("service", "token", name, "--json").json()["accessToken"]
    secret = apiserver.objects[f"/api/v1/namespaces/{NS}/secrets/{name}-secrets"]["data"]["EDGEPACK_TOKEN_SECRET"]
    assert verify_token(base64.b64decode(secret).decode(), token)
    shown = run("service", "show", name, "--json").out + run("service", "list", "--json").out
    assert base64.b64decode(secret).decode() not in shown and token not in shown
    assert run("service", "keys", name).code == 1  # key auth is off

    assert run("service", "delete", name, "-y").code == 0
    assert dep not in apiserver.objects
    assert run("service", "list", "--json").json() == []
