"""KubernetesEndpointTarget driven for real: the official client against the local API server, asserting the
order of the requests (versions before the split switch, prune after) through a whole lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_targets.endpoints.registry import endpoint_target
from cloud_targets.targets.compute import KubernetesCompute
from cloud_targets.targets.kubernetes.endpoint import KubernetesEndpointTarget
from tests.cloud_targets.targets.kubernetes.fake_apiserver import FakeApiServer, kubeconfig
from tests.cloud_targets.targets.kubernetes.gateway_schema import GatewaySchema
from tests.cloud_targets.targets.kubernetes.test_endpoint_objects import endpoint

NS = "ml"
ROUTE = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/iris-ep"
CONFIG = f"/api/v1/namespaces/{NS}/configmaps/iris-ep-routes"


def dep(name: str) -> str:
    return f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    srv = FakeApiServer(auto_rollout=True).start()
    yield srv
    srv.stop()


def target(server: FakeApiServer, tmp_path: Path, gateway: str | None) -> KubernetesEndpointTarget:
    path = kubeconfig(str(tmp_path / "config"), {"dev": (server.url, "t")}, "dev")
    made = endpoint_target("AKS", None, Path("."), KubernetesCompute(kubeconfig=path, gateway=gateway))
    made.poll_seconds, made.propagation_grace = 0.01, 0.05
    return made


def writes(server: FakeApiServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests if r.method in ("PATCH", "DELETE")]


def sent_routes(server: FakeApiServer) -> list[dict]:
    """The HTTPRoutes the client sent (server-side apply bodies)."""
    return [r.body for r in server.requests if r.method == "PATCH" and r.path == ROUTE]


def test_gateway_lifecycle(server: FakeApiServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    t = target(server, tmp_path, "infra/public")
    assert isinstance(t, KubernetesEndpointTarget) and t.mode == "gateway"
    deployed = t.apply(endpoint(80, 20))
    sent = sent_routes(server)
    order = writes(server)
    assert order.index(("PATCH", ROUTE)) > order.index(("PATCH", dep("iris-ep-green")))
    route = server.objects[ROUTE]
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][-1]["backendRefs"]] == [
        ("iris-ep-blue", 80),
        ("iris-ep-green", 20),
    ]
    assert (
        server.requests[[r.path for r in server.requests].index(ROUTE)].content_type == "application/apply-patch+yaml"
    )
    assert set(deployed.version_uris) == {"blue", "green"}
    assert {k: s.state for k, s in t.state(deployed.handle).items()} == {"blue": "Healthy", "green": "Healthy"}

    # shift to 0/100: traffic only, no version touched
    server.requests.clear()
    deployed = t.apply(endpoint(0, 100), deployed.handle)
    sent += sent_routes(server)
    assert writes(server) == [("PATCH", f"/api/v1/namespaces/{NS}"), ("PATCH", ROUTE)] or writes(server) == [
        ("PATCH", ROUTE)
    ]
    assert [(b["name"], b["weight"]) for b in server.objects[ROUTE]["spec"]["rules"][-1]["backendRefs"]] == [
        ("iris-ep-green", 100)
    ]

    # delete blue: the route stops naming it before its objects go
    spec = endpoint(0, 100, default="green")
    spec.versions = spec.versions[1:]
    server.requests.clear()
    deployed = t.apply(spec, deployed.handle)
    sent += sent_routes(server)
    order = writes(server)
    deletes = [i for i, (m, _) in enumerate(order) if m == "DELETE"]
    assert deletes and min(deletes) > order.index(("PATCH", ROUTE))
    assert dep("iris-ep-blue") not in server.objects and dep("iris-ep-green") in server.objects
    assert "iris-ep-blue" not in str(server.objects[ROUTE]["spec"])

    # delete all
    t.delete(deployed.handle)
    assert not [p for p in server.objects if "iris-ep" in p]

    # every HTTPRoute sent is valid against Gateway API's published v1 schema (last: without the validator the
    # lifecycle above is still checked before the skip)
    gateway_schema: GatewaySchema = request.getfixturevalue("gateway_schema")
    assert len(sent) == 3 and gateway_schema.errors(sent) == [[], [], []]


def test_router_lifecycle_waits_for_the_routes_revision(server: FakeApiServer, tmp_path: Path) -> None:
    t = target(server, tmp_path, None)
    assert t.mode == "router"
    labels = {"edgepack.service": "iris-ep"}
    server.pods[NS] = [
        {"metadata": {"name": f"iris-ep-{i}", "namespace": NS, "labels": labels}, "status": {}} for i in "ab"
    ]
    for pod in ("iris-ep-a", "iris-ep-b"):
        server.pod_proxy[(NS, pod, "/-/router")] = {"endpoint": "iris-ep", "revision": 3, "versions": {}}
    deployed = t.apply(endpoint(80, 20))
    order = writes(server)
    assert order.index(("PATCH", CONFIG)) > order.index(("PATCH", dep("iris-ep-green")))
    assert order.index(("PATCH", dep("iris-ep"))) > order.index(("PATCH", CONFIG))
    proxied = [r for r in server.requests if r.path.endswith("/proxy")]
    assert {(r.path, r.query["path"]) for r in proxied} == {
        (f"/api/v1/namespaces/{NS}/pods/iris-ep-{i}/proxy", "/-/router") for i in "ab"
    }
    assert {r.authorization for r in proxied} == {"Bearer t"}  # the kubeconfig's credential, never the endpoint key
    assert deployed.scoring_uri == "http://iris-ep.ml.svc.cluster.local/score"

    spec = endpoint(0, 100, default="green")
    spec.versions, spec.revision = spec.versions[1:], 4
    for pod in ("iris-ep-a", "iris-ep-b"):  # the routers have picked up revision 4
        server.pod_proxy[(NS, pod, "/-/router")]["revision"] = 4
    server.requests.clear()
    deployed = t.apply(spec, deployed.handle)
    order = writes(server)
    first_delete = min(i for i, (m, _) in enumerate(order) if m == "DELETE")
    last_proxy = max(i for i, r in enumerate(server.requests) if r.path.endswith("/proxy"))
    first_delete_req = next(i for i, r in enumerate(server.requests) if r.method == "DELETE")
    assert first_delete > order.index(("PATCH", CONFIG)) and first_delete_req > last_proxy
    assert dep("iris-ep-blue") not in server.objects

    t.delete(deployed.handle)
    assert not [p for p in server.objects if "iris-ep" in p]


def test_unobservable_routers_get_the_grace_period(server: FakeApiServer, tmp_path: Path) -> None:
    t = target(server, tmp_path, None)
    seen: list[str] = []
    t.progress = seen.append
    t.apply(endpoint(80, 20))  # no pod proxy answers: the documented grace period instead
    assert any("waiting 0.05 s" in line for line in seen)
