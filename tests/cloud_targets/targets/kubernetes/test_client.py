"""KubernetesTarget driven for real: the official client against a local API server, asserting on what it sends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_targets.config.model import AksDeploymentConfig
from cloud_targets.targets.base import RegistryCredentials, ServiceSpec
from cloud_targets.targets.kubernetes import (
    FAILED,
    HEALTHY,
    TRANSITIONING,
    UNHEALTHY,
    KubernetesError,
    KubernetesTarget,
    RolloutFailed,
    RolloutTimeout,
    build_objects,
    to_dict,
)
from packager.errors import InvalidInputError, NotFoundError
from tests.cloud_targets.targets.kubernetes.fake_apiserver import FakeApiServer, kubeconfig

PRIMARY = "k" * 32
NS = "ml"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/iris"


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    srv = FakeApiServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def target(server: FakeApiServer, tmp_path: Path) -> KubernetesTarget:
    path = kubeconfig(str(tmp_path / "config"), {"dev": (server.url, "dev-token")}, "dev")
    return KubernetesTarget(kubeconfig=path)


def spec(**config) -> ServiceSpec:
    config.setdefault("namespace", NS)
    return ServiceSpec(
        name="iris",
        image="registry.example.com/iris@sha256:" + "0" * 64,
        config=AksDeploymentConfig(**config),
        secrets={"EDGEPACK_PRIMARY_KEY": PRIMARY},
    )


def status(generation: int, replicas: int, updated: int, available: int, **extra) -> dict:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "availableReplicas": available,
        **extra,
    }


def pod(name: str, waiting: str | None = None) -> dict:
    state = {"waiting": {"reason": waiting, "message": "back-off 10s"}} if waiting else {"running": {}}
    return {
        "metadata": {"name": name, "namespace": NS, "labels": {"edgepack.service": "iris"}},
        "status": {
            "containerStatuses": [
                {"name": "iris", "state": state, "ready": False, "restartCount": 2, "image": "x", "imageID": ""}
            ]
        },
    }


def test_apply_is_server_side_apply_per_object(server: FakeApiServer, target: KubernetesTarget) -> None:
    objects = build_objects(spec(num_replicas=2))
    applied = target.apply(objects)
    patches = [r for r in server.requests if r.method == "PATCH"]
    assert [r.path for r in patches] == [
        f"/api/v1/namespaces/{NS}",
        f"/api/v1/namespaces/{NS}/secrets/iris-secrets",
        DEPLOYMENT,
        f"/api/v1/namespaces/{NS}/services/iris",
    ]
    for r, obj in zip(patches, objects, strict=True):
        assert r.content_type == "application/apply-patch+yaml"
        assert r.query == {"fieldManager": "edgepack", "force": "true"}
        assert r.authorization == "Bearer dev-token"
        assert r.body == to_dict(obj)  # the object as built, nothing added or lost on the way
    assert [type(a).__name__ for a in applied] == ["V1Namespace", "V1Secret", "V1Deployment", "V1Service"]
    assert applied[2].spec.replicas == 2 and applied[2].metadata.generation == 1
    gets = [r for r in server.requests if r.method == "GET"]
    assert gets[0].path == f"/api/v1/namespaces/{NS}" and gets[0].query == {}  # only created when missing
    # pruning looked for the service's objects by label
    assert {r.query.get("labelSelector") for r in gets[1:]} == {"edgepack.service=iris"}


@pytest.mark.parametrize("answer", [200, 403])
def test_an_existing_or_unreadable_namespace_is_left_alone(
    server: FakeApiServer, target: KubernetesTarget, answer: int
) -> None:
    ns_path = f"/api/v1/namespaces/{NS}"
    if answer == 200:
        server.objects[ns_path] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    else:
        server.forbidden.add(ns_path)  # a user with rights in the namespace only
    target.apply(build_objects(spec(num_replicas=1)))
    assert not [r for r in server.requests if r.method == "PATCH" and r.path == ns_path]
    assert DEPLOYMENT in server.objects


def test_reapply_prunes_what_the_new_config_dropped(server: FakeApiServer, target: KubernetesTarget) -> None:
    target.apply(build_objects(spec(autoscale_enabled=True, autoscale_max_replicas=4)))
    hpa = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/iris"
    assert server.objects[hpa]["spec"]["maxReplicas"] == 4
    server.requests.clear()
    target.apply(build_objects(spec(autoscale_enabled=False, num_replicas=3)))
    assert hpa not in server.objects
    deletes = [r for r in server.requests if r.method == "DELETE"]
    assert [r.path for r in deletes] == [hpa]
    assert deletes[0].body["propagationPolicy"] == "Foreground"
    assert server.objects[DEPLOYMENT]["spec"]["replicas"] == 3
    assert server.objects[DEPLOYMENT]["metadata"]["generation"] == 2


def test_wait_for_rollout_reports_progress_until_done(server: FakeApiServer, target: KubernetesTarget) -> None:
    target.apply(build_objects(spec(num_replicas=2)))
    server.deployment_status[DEPLOYMENT] = [
        status(0, 0, 0, 0),
        status(1, 2, 1, 0),
        status(1, 3, 2, 1),
        status(1, 2, 2, 1),
        status(1, 2, 2, 2),
    ]
    server.pods[NS] = [pod("iris-a"), pod("iris-b")]
    seen: list[str] = []
    result = target.wait_for_rollout("iris", NS, timeout=10, progress=seen.append, poll_seconds=0.01)
    assert result.done
    assert seen == [
        "Waiting for deployment spec update to be observed...",
        "Waiting for rollout to finish: 1 out of 2 new replicas have been updated...",
        "Waiting for rollout to finish: 1 old replicas are pending termination...",
        "Waiting for rollout to finish: 1 of 2 updated replicas are available...",
        'deployment "iris" successfully rolled out',
    ]
    gets = [r for r in server.requests if r.method == "GET" and r.path == DEPLOYMENT]
    assert len(gets) == 5
    assert target.state("iris", NS) == HEALTHY


def test_progress_deadline_fails_the_rollout(server: FakeApiServer, target: KubernetesTarget) -> None:
    target.apply(build_objects(spec(num_replicas=1)))
    deadline = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    server.deployment_status[DEPLOYMENT] = [status(1, 1, 1, 0, conditions=[deadline])]
    with pytest.raises(RolloutFailed, match="exceeded its progress deadline"):
        target.wait_for_rollout("iris", NS, timeout=5, poll_seconds=0.01)
    assert target.state("iris", NS) == FAILED


def test_stuck_pods_fail_fast_and_make_the_service_unhealthy(server: FakeApiServer, target: KubernetesTarget) -> None:
    target.apply(build_objects(spec(num_replicas=1)))
    server.deployment_status[DEPLOYMENT] = [status(1, 1, 1, 0)]
    server.pods[NS] = [pod("iris-a", waiting="CrashLoopBackOff")]
    with pytest.raises(RolloutFailed, match="iris-a/iris: CrashLoopBackOff"):
        target.wait_for_rollout("iris", NS, timeout=5, poll_seconds=0.01)
    assert target.state("iris", NS) == UNHEALTHY
    pod_lists = [r for r in server.requests if r.path == f"/api/v1/namespaces/{NS}/pods"]
    assert pod_lists and all(r.query["labelSelector"] == "edgepack.service=iris" for r in pod_lists)


def test_rollout_timeout_and_transitioning_state(server: FakeApiServer, target: KubernetesTarget) -> None:
    target.apply(build_objects(spec(num_replicas=1)))
    server.deployment_status[DEPLOYMENT] = [status(1, 1, 1, 0)]
    server.pods[NS] = [pod("iris-a", waiting="ContainerCreating")]
    with pytest.raises(RolloutTimeout, match="0 of 1 updated replicas are available"):
        target.wait_for_rollout("iris", NS, timeout=0.2, poll_seconds=0.02)
    assert target.state("iris", NS) == TRANSITIONING


def test_state_of_a_missing_service(target: KubernetesTarget) -> None:
    with pytest.raises(NotFoundError, match="no deployment 'nope' in namespace 'ml'"):
        target.state("nope", NS)


def test_logs_tail_each_pod(server: FakeApiServer, target: KubernetesTarget) -> None:
    server.pods[NS] = [pod("iris-b"), pod("iris-a")]
    server.pod_logs[(NS, "iris-a")] = "".join(f"a{i}\n" for i in range(10))
    server.pod_logs[(NS, "iris-b")] = "b0\nb1\n"
    text = target.logs("iris", NS, num_lines=3)
    assert text == "==> pod/iris-a <==\na7\na8\na9\n\n==> pod/iris-b <==\nb0\nb1\n"
    reads = [r for r in server.requests if r.path.endswith("/log")]
    assert [r.path for r in reads] == [
        f"/api/v1/namespaces/{NS}/pods/iris-a/log",
        f"/api/v1/namespaces/{NS}/pods/iris-b/log",
    ]
    assert all(r.query == {"container": "iris", "tailLines": "3"} for r in reads)
    server.pods[NS] = [pod("iris-a")]
    assert target.logs("iris", NS, num_lines=1) == "a9\n"


def test_delete_removes_every_object_of_the_service(server: FakeApiServer, target: KubernetesTarget) -> None:
    s = spec(autoscale_enabled=True)
    s.registry_credentials = RegistryCredentials("registry.example.com", "u", "registry-password")
    target.apply(build_objects(s))
    other = f"/api/v1/namespaces/{NS}/secrets/unrelated"
    server.objects[other] = {"metadata": {"name": "unrelated", "labels": {"edgepack.service": "other"}}}
    server.requests.clear()
    deleted = target.delete("iris", NS)
    assert sorted(deleted) == [
        "Deployment/iris",
        "HorizontalPodAutoscaler/iris",
        "Secret/iris-registry",
        "Secret/iris-secrets",
        "Service/iris",
    ]
    assert set(server.objects) == {f"/api/v1/namespaces/{NS}", other}  # the namespace and others' objects stay
    deletes = [r for r in server.requests if r.method == "DELETE"]
    assert all(r.body == {"propagationPolicy": "Foreground"} for r in deletes)
    assert target.delete("iris", NS) == []


def test_scoring_uri(server: FakeApiServer, target: KubernetesTarget) -> None:
    target.apply(build_objects(spec(num_replicas=1)))
    assert target.scoring_uri("iris", NS) == "http://iris.ml.svc.cluster.local/score"
    svc = f"/api/v1/namespaces/{NS}/services/iris"
    server.objects[svc]["status"] = {"loadBalancer": {"ingress": [{"ip": "20.1.2.3"}]}}
    assert target.scoring_uri("iris", NS) == "http://20.1.2.3/score"


def test_api_errors_name_the_object_and_the_server_message(server: FakeApiServer, target: KubernetesTarget) -> None:
    target.field_manager = ""  # the fake refuses apply without a field manager, as a real API server does
    with pytest.raises(KubernetesError, match="applying Namespace ml: the API server answered 400: fieldManager is"):
        target.apply(build_objects(spec(num_replicas=1)))


def test_context_selects_the_cluster_and_its_credentials(tmp_path: Path) -> None:
    a, b = FakeApiServer().start(), FakeApiServer().start()
    try:
        path = kubeconfig(str(tmp_path / "config"), {"aks-a": (a.url, "token-a"), "aks-b": (b.url, "token-b")}, "aks-a")
        objects = build_objects(spec(num_replicas=1))
        KubernetesTarget(kubeconfig=path).apply(objects)  # current context
        assert a.requests and not b.requests
        assert {r.authorization for r in a.requests} == {"Bearer token-a"}
        a.requests.clear()
        chosen = KubernetesTarget(context="aks-b", kubeconfig=path)
        assert chosen.host == b.url
        chosen.apply(objects)
        assert b.requests and not a.requests
        assert {r.authorization for r in b.requests} == {"Bearer token-b"}
        with pytest.raises(InvalidInputError, match=r"context 'aks-c'.*--context"):
            KubernetesTarget(context="aks-c", kubeconfig=path)
    finally:
        a.stop()
        b.stop()


def test_kubeconfig_from_the_environment(server: FakeApiServer, tmp_path: Path, monkeypatch) -> None:
    path = kubeconfig(str(tmp_path / "kc"), {"env": (server.url, "env-token")}, "env")
    monkeypatch.setenv("KUBECONFIG", path)
    assert KubernetesTarget().host == server.url


def test_https_with_the_clusters_ca(tmp_path: Path) -> None:
    server = FakeApiServer(tls_dir=tmp_path).start()
    try:
        path = kubeconfig(str(tmp_path / "config"), {"aks": (server.url, "aks-token")}, "aks", ca=server.ca)
        target = KubernetesTarget(kubeconfig=path)
        assert target.host.startswith("https://127.0.0.1:")
        target.apply(build_objects(spec(num_replicas=1)))
        assert DEPLOYMENT in server.objects
        assert {r.authorization for r in server.requests} == {"Bearer aks-token"}
        # without the cluster's CA the certificate is refused: a clear error, nothing sent
        untrusted = kubeconfig(str(tmp_path / "untrusted"), {"aks": (server.url, "aks-token")}, "aks")
        count = len(server.requests)
        with pytest.raises(KubernetesError, match=r"cannot reach the Kubernetes API server at https://127\.0\.0\.1"):
            KubernetesTarget(kubeconfig=untrusted).state("iris", NS)
        assert len(server.requests) == count
    finally:
        server.stop()
