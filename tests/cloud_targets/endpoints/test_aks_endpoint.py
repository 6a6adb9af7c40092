"""AKS endpoints end to end through the public API: ``Model.deploy`` with ``AksEndpoint.deploy_configuration``,
then versions, traffic, logs, state and delete, on Kubernetes.

Each version's image is really built by the daemonless builder and pushed to the dev registry (pinned by
digest); the official kubernetes client sends the objects to the local API server
(tests/cloud_targets/targets/kubernetes/fake_apiserver.py). The tests assert on the requests it received: a
version's Deployment before the split switches (the router's routes ConfigMap, or the HTTPRoute's weights),
versions removed only after the switch, and the endpoint's keys in the router's Secret (router mode) or each
version's Secret (gateway mode, where no router checks them).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_targets import AksEndpoint, Endpoint, Model
from cloud_targets.targets.compute import KubernetesCompute
from packager import Workspace
from tests.cloud_targets.cli_support import runner
from tests.cloud_targets.endpoints.support import app, register
from tests.cloud_targets.targets.kubernetes.fake_apiserver import FakeApiServer
from tests.cloud_targets.test_remote_flow import in_registry, remote_env  # noqa: F401  (fixture)

NS = "ml"
EP = "tiny-ep"
CONFIG = f"/api/v1/namespaces/{NS}/configmaps/{EP}-routes"
ROUTE = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/{EP}"


def dep(name: str, ns: str = NS) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"


def secret(name: str) -> str:
    return f"/api/v1/namespaces/{NS}/secrets/{name}-secrets"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer(auto_rollout=True).start()
    # the router pods answer GET /-/router through the pod proxy: every routes revision is in force at once
    labels = {"edgepack.service": EP}
    for ns in (NS, "default"):  # the API's tests name a namespace, v2 YAML (the CLI's) does not
        server.pods[ns] = [{"metadata": {"name": f"{EP}-{i}", "namespace": ns, "labels": labels}} for i in "ab"]
        for pod in (f"{EP}-a", f"{EP}-b"):
            server.pod_proxy[(ns, pod, "/-/router")] = {"endpoint": EP, "revision": 10**6, "versions": {}}
    yield server
    server.stop()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.from_path(tmp_path / "ws")


def writes(server: FakeApiServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests if r.method in ("PATCH", "DELETE")]


def routes(server: FakeApiServer, ns: str = NS) -> dict[str, tuple[float, bool]]:
    """The router's table as the ConfigMap holds it: version -> (traffic, default)."""
    table = json.loads(server.objects[CONFIG.replace(f"/{NS}/", f"/{ns}/")]["data"]["routes.json"])
    return {v["name"]: (v["traffic"], v["default"]) for v in table["versions"]}


def weights(server: FakeApiServer) -> list[tuple[str, int]]:
    rule = server.objects[ROUTE]["spec"]["rules"][-1]
    return [(b["name"], b["weight"]) for b in rule.get("backendRefs") or []]


def image_of(server: FakeApiServer, name: str, ns: str = NS) -> str:
    return server.objects[dep(name, ns)]["spec"]["template"]["spec"]["containers"][0]["image"]


def deploy_first(ws: Workspace, tmp_path: Path, compute: KubernetesCompute) -> AksEndpoint:
    config = AksEndpoint.deploy_configuration(
        version_name="blue", traffic_percentile=100, namespace=NS, auth_enabled=True, primary_key="p" * 20
    )
    ep = Model.deploy(ws, EP, [register(ws, tmp_path, 2)], app(tmp_path, "blue"), config, deployment_target=compute)
    assert isinstance(ep, AksEndpoint)
    return ep


@pytest.mark.slow
def test_router_mode_lifecycle(ws: Workspace, tmp_path: Path, remote_env: str, apiserver: FakeApiServer,  # noqa: F811
                               kubeconf: str) -> None:  # fmt: skip
    compute = KubernetesCompute(kubeconfig=kubeconf, image_registry=remote_env)
    ep = deploy_first(ws, tmp_path, compute)
    assert ep.scoring_uri == f"http://{EP}.{NS}.svc.cluster.local/score"
    blue = ep.versions["blue"]
    assert blue.is_default and blue.traffic_percentile == 100
    assert blue.scoring_uri == f"http://{EP}-blue.{NS}.svc.cluster.local/score"
    # the version runs its pushed image pinned by digest; the router runs from the default version's image
    assert image_of(apiserver, f"{EP}-blue") == blue.image_id and "@sha256:" in blue.image_id
    assert blue.image_id.startswith(f"{remote_env}/{EP}-blue@") and in_registry(blue.image_id)
    assert image_of(apiserver, EP) == blue.image_id
    # both pull with docker login's credentials (a pull Secret); the endpoint's record never holds them
    for name in (f"{EP}-blue", EP):
        pod_spec = apiserver.objects[dep(name)]["spec"]["template"]["spec"]
        assert pod_spec["imagePullSecrets"] == [{"name": f"{EP}-blue-registry"}]
    order = writes(apiserver)
    assert order.index(("PATCH", dep(f"{EP}-blue"))) < order.index(("PATCH", CONFIG)) < order.index(("PATCH", dep(EP)))
    assert routes(apiserver) == {"blue": (100.0, True)}
    # the keys: the deploy configuration's primary key, in the router's Secret only
    primary, secondary = ep.get_keys()
    assert primary == "p" * 20
    assert apiserver.objects[secret(EP)]["data"] == {
        "EDGEPACK_PRIMARY_KEY": b64(primary),
        "EDGEPACK_SECONDARY_KEY": b64(secondary),
    }
    assert apiserver.objects[secret(f"{EP}-blue")].get("data") in (None, {})
    assert ep.state == "Healthy" and {n: v.state for n, v in ep.versions.items()} == {"blue": "Healthy"}

    # a second version: built and pushed, applied and rolled out before the routes name it
    apiserver.requests.clear()
    green = ep.create_version("green", [register(ws, tmp_path, 3)], app(tmp_path, "green"), traffic_percentile=0)
    assert green.image_id != blue.image_id and in_registry(green.image_id)
    order = writes(apiserver)
    assert order.index(("PATCH", dep(f"{EP}-green"))) < order.index(("PATCH", CONFIG))
    assert ("PATCH", dep(f"{EP}-blue")) not in order  # untouched
    assert routes(apiserver) == {"blue": (100.0, True), "green": (0.0, False)}

    # traffic only: no version object is written
    apiserver.requests.clear()
    ep.set_traffic({"blue": 80, "green": 20})
    assert routes(apiserver) == {"blue": (80.0, True), "green": (20.0, False)}
    assert not [w for w in writes(apiserver) if "-blue" in w[1] or "-green" in w[1]]
    ep.update_version("blue", traffic_percentile=70)
    ep.update_version("green", traffic_percentile=30, is_default=True)
    assert routes(apiserver) == {"blue": (70.0, False), "green": (30.0, True)}
    assert image_of(apiserver, EP) == green.image_id  # the router follows the default version's image

    # logs: a version's pods, the router's pods
    apiserver.pod_logs[(NS, f"{EP}-a")] = "router up\n"
    apiserver.pod_logs[(NS, f"{EP}-b")] = "router up\n"
    assert "router up" in ep.get_logs()
    apiserver.pods[NS].append({"metadata": {"name": f"{EP}-green-x", "namespace": NS,
                                            "labels": {"edgepack.service": f"{EP}-green"}}})  # fmt: skip
    apiserver.pod_logs[(NS, f"{EP}-green-x")] = "Model loaded\nscored 1 row\n"
    assert ep.get_logs("green", num_lines=1).strip().endswith("scored 1 row")

    # a fresh load (another process) sees the same
    again = Endpoint(ws, EP)
    assert isinstance(again, AksEndpoint) and again.state == "Healthy"
    assert {n: v.traffic_percentile for n, v in again.versions.items()} == {"blue": 70, "green": 30}

    # delete blue: the routes stop naming it before its objects go
    apiserver.requests.clear()
    again.delete_version("blue")
    order = writes(apiserver)
    first_delete = min(i for i, (m, _) in enumerate(order) if m == "DELETE")
    assert order.index(("PATCH", CONFIG)) < first_delete
    assert routes(apiserver) == {"green": (30.0, True)}
    assert dep(f"{EP}-blue") not in apiserver.objects and dep(f"{EP}-green") in apiserver.objects

    again.delete()
    assert not [p for p in apiserver.objects if EP in p]
    assert Endpoint.list(ws) == []


@pytest.mark.slow
def test_gateway_mode_lifecycle(ws: Workspace, tmp_path: Path, remote_env: str, apiserver: FakeApiServer,  # noqa: F811
                                kubeconf: str) -> None:  # fmt: skip
    apiserver.objects["/apis/gateway.networking.k8s.io/v1/namespaces/infra/gateways/public"] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "public", "namespace": "infra"},
        "status": {"addresses": [{"type": "IPAddress", "value": "203.0.113.7"}]},
    }
    compute = KubernetesCompute(kubeconfig=kubeconf, image_registry=remote_env, gateway="infra/public")
    ep = deploy_first(ws, tmp_path, compute)
    assert ep.scoring_uri == "http://203.0.113.7/score"
    assert weights(apiserver) == [(f"{EP}-blue", 100)]
    assert dep(EP) not in apiserver.objects and CONFIG not in apiserver.objects  # no router
    # no router checks the keys: each version's scoring server does
    primary, secondary = ep.get_keys()
    assert apiserver.objects[secret(f"{EP}-blue")]["data"] == {
        "EDGEPACK_PRIMARY_KEY": b64(primary),
        "EDGEPACK_SECONDARY_KEY": b64(secondary),
    }

    apiserver.requests.clear()
    ep.create_version("green", [register(ws, tmp_path, 3)], app(tmp_path, "green"))
    order = writes(apiserver)
    assert order.index(("PATCH", dep(f"{EP}-green"))) < order.index(("PATCH", ROUTE))
    ep.set_traffic({"blue": 90, "green": 10})
    assert weights(apiserver) == [(f"{EP}-blue", 90), (f"{EP}-green", 10)]
    ep.update_version("green", is_default=True)
    ep.set_traffic({"blue": 0, "green": 100})
    assert weights(apiserver) == [(f"{EP}-green", 100)]
    assert ep.state == "Healthy"

    apiserver.requests.clear()
    ep.delete_version("blue")
    order = writes(apiserver)
    assert order.index(("PATCH", ROUTE)) < min(i for i, (m, _) in enumerate(order) if m == "DELETE")
    assert f"{EP}-blue" not in json.dumps(apiserver.objects[ROUTE]["spec"])
    assert dep(f"{EP}-blue") not in apiserver.objects
    ep.delete()
    assert not [p for p in apiserver.objects if EP in p]


# -- the CLI ------------------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CLI's workspace (from the environment, as a user sets it); no Kubernetes context from outside."""
    monkeypatch.setenv("EDGEPACK_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("EDGEPACK_KUBE_CONTEXT", raising=False)
    monkeypatch.delenv("EDGEPACK_KUBE_GATEWAY", raising=False)
    monkeypatch.chdir(tmp_path)
    return []


ENDPOINT_YML = "name: tiny-ep\nauth_mode: key\n"
DEPLOYMENT_YML = """\
name: {name}
endpoint_name: tiny-ep
model:
  path: model/
code_configuration:
  code: code/
  scoring_script: score.py
instance_count: 1
"""
SCORE = "import os\n\ndef init():\n    pass\n\ndef run(raw):\n    return {'ok': os.getenv('AZUREML_MODEL_DIR')}\n"


@pytest.mark.slow
def test_cli_endpoint_and_deploy(tmp_path: Path, remote_env: str, apiserver: FakeApiServer,  # noqa: F811
                                 kubeconf: str, cli: list[str],
                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run, ws = runner(capsys), cli
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weight.txt").write_text("2")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text(SCORE)
    (tmp_path / "endpoint.yml").write_text(ENDPOINT_YML)
    for name in ("blue", "green"):
        (tmp_path / f"{name}.yml").write_text(DEPLOYMENT_YML.format(name=name))

    made = run("endpoint", "create", *ws, "-f", tmp_path / "endpoint.yml", "--kubeconfig", kubeconf,
               "--image-registry", remote_env)  # fmt: skip
    assert made.code == 0, made.err
    assert not [p for p in apiserver.objects if EP in p]  # nothing to run before the first deployment
    done = run("endpoint", "deployment", "create", *ws, "-f", tmp_path / "blue.yml", "--all-traffic")
    assert done.code == 0, done.err
    assert routes(apiserver, "default") == {"blue": (100.0, True)}
    assert in_registry(image_of(apiserver, f"{EP}-blue", "default"))
    done = run("endpoint", "deployment", "create", *ws, "-f", tmp_path / "green.yml")
    assert done.code == 0, done.err
    assert routes(apiserver, "default") == {"blue": (100.0, True), "green": (0.0, False)}
    changed = run("endpoint", "update", *ws, "-n", EP, "--traffic", "blue=75 green=25")
    assert changed.code == 0, changed.err
    assert routes(apiserver, "default") == {"blue": (75.0, True), "green": (25.0, False)}
    gone = run("endpoint", "delete", *ws, "-n", EP, "--yes")
    assert gone.code == 0, gone.err
    assert not [p for p in apiserver.objects if EP in p]


def test_cli_deploy_aksendpoint_dry_run(tmp_path: Path, apiserver: FakeApiServer, kubeconf: str, cli: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """``edgepack deploy --dc`` with an AKSENDPOINT file and a Kubernetes target, ``--dry-run``: every object of
    the endpoint as YAML (the version's, then the router's), keys emptied; nothing sent or built."""
    import yaml

    run = runner(capsys)
    model = tmp_path / "weight.txt"
    model.write_text("2")
    (tmp_path / "score.py").write_text(SCORE)
    (tmp_path / "dc.json").write_text(json.dumps({"computeType": "AKSENDPOINT", "versionName": "blue",
                                                  "trafficPercentile": 100, "namespace": NS, "authEnabled": True,
                                                  "primaryKey": "k" * 20}))  # fmt: skip
    ws = cli
    assert run("model", "register", *ws, "-n", "tiny", "-p", model).code == 0
    target = ["--kubeconfig", kubeconf, "--image-registry", "127.0.0.1:5000/x"]
    out = run("deploy", *ws, "-n", EP, "-m", "tiny:1", "--sd", tmp_path, "--es", "score.py",
              "--dc", tmp_path / "dc.json", *target, "--dry-run")  # fmt: skip
    assert out.code == 0, out.err
    docs = list(yaml.safe_load_all(out.out))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert ("Deployment", f"{EP}-blue") in kinds and ("ConfigMap", f"{EP}-routes") in kinds
    assert kinds.index(("Deployment", f"{EP}-blue")) < kinds.index(("ConfigMap", f"{EP}-routes"))
    router_secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == f"{EP}-secrets")
    assert set(router_secret["data"]) == {"EDGEPACK_PRIMARY_KEY", "EDGEPACK_SECONDARY_KEY"}
    assert "k" * 20 not in out.out and b64("k" * 20) not in out.out
    assert apiserver.requests == []
