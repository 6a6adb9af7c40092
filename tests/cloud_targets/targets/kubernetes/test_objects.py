"""The objects built from AKS configurations: schema-valid (kubernetes-validate, strict) and carrying every setting."""

from __future__ import annotations

import base64
import json
import logging
import re

import kubernetes_validate
import pytest
import yaml

from cloud_targets.config.model import AksDeploymentConfig
from cloud_targets.targets.base import RegistryCredentials, ServiceSpec
from cloud_targets.targets.kubernetes import build_objects, to_dict, to_yaml, unhonoured_settings
from packager.errors import InvalidInputError

VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
IMAGE = "registry.example.com/edgepack/iris@sha256:" + "ab" * 32
PRIMARY, SECONDARY, TOKEN = "p" * 31 + "1", "s" * 31 + "2", "t" * 31 + "3"
REGISTRY_PASSWORD = "registry-pass-" + "r" * 20
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def spec_for(config: AksDeploymentConfig, **kw) -> ServiceSpec:
    kw.setdefault("secrets", {"EDGEPACK_PRIMARY_KEY": PRIMARY} if config.auth_enabled else {})
    return ServiceSpec(name="iris-svc", image=IMAGE, config=config, **kw)


SHAPES = {
    "defaults (autoscale implied, key auth)": spec_for(AksDeploymentConfig()),
    "fixed replicas, limits, gpu, namespace": spec_for(
        AksDeploymentConfig(
            autoscale_enabled=False,
            num_replicas=3,
            cpu_cores=0.5,
            memory_gb=1.5,
            cpu_cores_limit=2,
            memory_gb_limit=4,
            gpu_cores=1,
            namespace="ml-prod",
            period_seconds=5,
            initial_delay_seconds=30,
            timeout_seconds=3,
            success_threshold=2,
            failure_threshold=6,
        )
    ),
    "token auth": spec_for(
        AksDeploymentConfig(auth_enabled=False, token_auth_enabled=True, num_replicas=1),
        secrets={"EDGEPACK_TOKEN_SECRET": TOKEN},
    ),
    "config keys, autoscale settings, tags": spec_for(
        AksDeploymentConfig(
            primary_key=PRIMARY,
            secondary_key=SECONDARY,
            autoscale_enabled=True,
            autoscale_min_replicas=2,
            autoscale_max_replicas=8,
            autoscale_target_utilization=55,
            autoscale_refresh_seconds=5,
            scoring_timeout_ms=15000,
            replica_max_concurrent_requests=4,
            max_request_wait_time=2000,
            tags={"team": "ml"},
            properties={"owner": "a"},
            description="iris classifier",
        ),
        secrets={},
    ),
    "no auth, registry credentials, labels": spec_for(
        AksDeploymentConfig(auth_enabled=False, num_replicas=2, namespace="team-a"),
        registry_credentials=RegistryCredentials("registry.example.com", "puller", REGISTRY_PASSWORD),
        labels={
            "edgepack.model/Iris Model": "v 3 (prod)!",
            "x" * 80: "y" * 80,
            "__": "dropped",
            "k": REGISTRY_PASSWORD,
        },
    ),
}


def by_kind(objects: list) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for obj in objects:
        d = to_dict(obj)
        out.setdefault(d["kind"], []).append(d)
    return out


def container(kinds: dict) -> dict:
    [deployment] = kinds["Deployment"]
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(kinds: dict) -> tuple[dict[str, str], dict[str, dict]]:
    c = container(kinds)
    plain = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    return plain, refs


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_passes_the_published_schema(shape: str, version: str) -> None:
    objects = build_objects(SHAPES[shape])
    assert objects
    for obj in objects:
        kubernetes_validate.validate(to_dict(obj), version, strict=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_secrets_only_in_the_secret(shape: str) -> None:
    spec = SHAPES[shape]
    kinds = by_kind(build_objects(spec))
    secret_values = [PRIMARY, SECONDARY, TOKEN, REGISTRY_PASSWORD]
    encoded = [base64.b64encode(v.encode()).decode() for v in secret_values]
    for kind, items in kinds.items():
        for item in items:
            text = json.dumps(item if kind != "Secret" else {k: v for k, v in item.items() if k != "data"})
            for value in secret_values + encoded:
                assert value not in text, f"a secret is in {kind} {item['metadata']['name']}"
    plain, refs = env_of(kinds)
    assert not {"EDGEPACK_PRIMARY_KEY", "EDGEPACK_SECONDARY_KEY", "EDGEPACK_TOKEN_SECRET"} & set(plain)
    assert all(ref["name"] == "iris-svc-secrets" for ref in refs.values())
    # --dry-run output: secret values emptied, so none of them (plain or base64) is printed
    text = to_yaml(build_objects(spec))
    assert not any(v in text for v in secret_values + encoded)


@pytest.mark.parametrize("shape", SHAPES)
def test_labels_follow_the_label_rules(shape: str) -> None:
    for obj in build_objects(SHAPES[shape]):
        d = to_dict(obj)
        metas = [d["metadata"]]
        if d["kind"] == "Deployment":
            metas.append(d["spec"]["template"]["metadata"])
        for meta in metas:
            for key, value in meta.get("labels", {}).items():
                prefix, _, name = key.rpartition("/")
                assert LABEL_NAME.match(name) and name, key
                assert not prefix or (len(prefix) <= 253 and DNS_SUBDOMAIN.match(prefix)), key
                assert LABEL_NAME.match(value), value
            if d["kind"] != "Namespace":  # a namespace may hold other things: managed-by only
                assert meta["labels"]["edgepack.service"] == "iris-svc"
                assert meta["labels"]["app.kubernetes.io/managed-by"] == "edgepack"
                assert meta["labels"]["app.kubernetes.io/name"] == "iris-svc"


def test_defaults_key_auth_and_autoscale() -> None:
    kinds = by_kind(build_objects(SHAPES["defaults (autoscale implied, key auth)"]))
    assert sorted(kinds) == ["Deployment", "HorizontalPodAutoscaler", "Secret", "Service"]  # no Namespace
    [deployment] = kinds["Deployment"]
    assert deployment["metadata"]["namespace"] == "default"
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert deployment["spec"]["selector"] == {"matchLabels": {"edgepack.service": "iris-svc"}}
    c = container(kinds)
    assert c["image"] == IMAGE
    assert c["ports"] == [{"containerPort": 5001, "name": "http", "protocol": "TCP"}]
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "512Mi"}}
    assert c["livenessProbe"] == {
        "httpGet": {"path": "/v2/health/live", "port": "http"},
        "initialDelaySeconds": 310,
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert c["readinessProbe"] == {
        "httpGet": {"path": "/v2/health/ready", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    plain, refs = env_of(kinds)
    assert plain == {
        "EDGEPACK_PORT": "5001",
        "SCORING_TIMEOUT_MS": "60000",
        "EDGEPACK_MAX_CONCURRENT_REQUESTS": "1",
        "EDGEPACK_MAX_QUEUE_WAIT_MS": "500",
        "EDGEPACK_TOKEN_AUTH": "false",
    }
    assert refs == {"EDGEPACK_PRIMARY_KEY": {"name": "iris-svc-secrets", "key": "EDGEPACK_PRIMARY_KEY"}}
    [secret] = kinds["Secret"]
    assert secret["type"] == "Opaque" and secret["metadata"]["name"] == "iris-svc-secrets"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {"EDGEPACK_PRIMARY_KEY": PRIMARY}
    [service] = kinds["Service"]
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {"edgepack.service": "iris-svc"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    [hpa] = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-svc"},
        "minReplicas": 1,
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
            }
        ],
    }
    pod = deployment["spec"]["template"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "imagePullSecrets" not in pod["spec"]
    assert re.fullmatch(r"[0-9a-f]{16}", pod["metadata"]["annotations"]["edgepack/secrets-revision"])


def test_fixed_replicas_limits_gpu_probes_namespace() -> None:
    kinds = by_kind(build_objects(SHAPES["fixed replicas, limits, gpu, namespace"]))
    assert "HorizontalPodAutoscaler" not in kinds
    [ns] = kinds["Namespace"]
    assert ns["metadata"]["name"] == "ml-prod"
    for kind, items in kinds.items():
        if kind != "Namespace":
            assert all(i["metadata"]["namespace"] == "ml-prod" for i in items)
    [deployment] = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    c = container(kinds)
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "1536Mi"},
        "limits": {"cpu": "2", "memory": "4096Mi", "nvidia.com/gpu": "1"},
    }
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert (live["periodSeconds"], live["initialDelaySeconds"], live["timeoutSeconds"]) == (5, 30, 3)
    assert (live["successThreshold"], live["failureThreshold"]) == (1, 6)  # liveness: Kubernetes requires 1
    assert (ready["periodSeconds"], ready["timeoutSeconds"]) == (5, 3)
    assert (ready["successThreshold"], ready["failureThreshold"]) == (2, 6)
    assert "initialDelaySeconds" not in ready


def test_token_auth() -> None:
    kinds = by_kind(build_objects(SHAPES["token auth"]))
    plain, refs = env_of(kinds)
    assert plain["EDGEPACK_TOKEN_AUTH"] == "true"
    assert set(refs) == {"EDGEPACK_TOKEN_SECRET"}
    [secret] = kinds["Secret"]
    assert base64.b64decode(secret["data"]["EDGEPACK_TOKEN_SECRET"]).decode() == TOKEN
    assert kinds["Deployment"][0]["spec"]["replicas"] == 1


def test_config_keys_autoscale_settings_and_metadata() -> None:
    kinds = by_kind(build_objects(SHAPES["config keys, autoscale settings, tags"]))
    [secret] = kinds["Secret"]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "EDGEPACK_PRIMARY_KEY": PRIMARY,
        "EDGEPACK_SECONDARY_KEY": SECONDARY,
    }
    plain, refs = env_of(kinds)
    assert set(refs) == {"EDGEPACK_PRIMARY_KEY", "EDGEPACK_SECONDARY_KEY"}
    assert plain["SCORING_TIMEOUT_MS"] == "15000"
    assert plain["EDGEPACK_MAX_CONCURRENT_REQUESTS"] == "4"
    assert plain["EDGEPACK_MAX_QUEUE_WAIT_MS"] == "2000"
    [hpa] = kinds["HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 55
    annotations = kinds["Deployment"][0]["metadata"]["annotations"]
    assert annotations["edgepack/description"] == "iris classifier"
    assert json.loads(annotations["edgepack/tags"]) == {"team": "ml"}
    assert json.loads(annotations["edgepack/properties"]) == {"owner": "a"}


def test_registry_credentials_and_label_sanitising() -> None:
    kinds = by_kind(build_objects(SHAPES["no auth, registry credentials, labels"]))
    pull = [s for s in kinds["Secret"] if s["type"] == "kubernetes.io/dockerconfigjson"]
    assert [p["metadata"]["name"] for p in pull] == ["iris-svc-registry"]
    auths = json.loads(base64.b64decode(pull[0]["data"][".dockerconfigjson"]))["auths"]
    entry = auths["registry.example.com"]
    assert (entry["username"], entry["password"]) == ("puller", REGISTRY_PASSWORD)
    assert base64.b64decode(entry["auth"]).decode() == f"puller:{REGISTRY_PASSWORD}"
    pod = kinds["Deployment"][0]["spec"]["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "iris-svc-registry"}]
    plain, refs = env_of(kinds)
    assert refs == {} and plain["EDGEPACK_TOKEN_AUTH"] == "false"
    labels = kinds["Deployment"][0]["metadata"]["labels"]
    assert labels["edgepack.model/Iris-Model"] == "v-3-prod"
    assert labels["x" * 63] == "y" * 63
    assert "__" not in labels and "k" not in labels  # nothing valid left / carries a secret
    assert pod["metadata"]["labels"] == labels


def test_spec_env_overrides_and_secret_names_never_plain() -> None:
    spec = spec_for(AksDeploymentConfig(num_replicas=1))
    spec.env = {"SCORING_TIMEOUT_MS": "1234", "EDGEPACK_LOG_LEVEL": "debug", "EDGEPACK_PRIMARY_KEY": "oops"}
    plain, refs = env_of(by_kind(build_objects(spec)))
    assert plain["SCORING_TIMEOUT_MS"] == "1234" and plain["EDGEPACK_LOG_LEVEL"] == "debug"
    assert "EDGEPACK_PRIMARY_KEY" not in plain and "EDGEPACK_PRIMARY_KEY" in refs


def test_secrets_revision_follows_the_secrets() -> None:
    def revision(secrets: dict) -> str:
        spec = spec_for(AksDeploymentConfig(num_replicas=1), secrets=secrets)
        return by_kind(build_objects(spec))["Deployment"][0]["spec"]["template"]["metadata"]["annotations"][
            "edgepack/secrets-revision"
        ]

    assert revision({"EDGEPACK_PRIMARY_KEY": PRIMARY}) == revision({"EDGEPACK_PRIMARY_KEY": PRIMARY})
    assert revision({"EDGEPACK_PRIMARY_KEY": PRIMARY}) != revision({"EDGEPACK_PRIMARY_KEY": SECONDARY})


def test_load_balancer_option() -> None:
    [service] = by_kind(build_objects(SHAPES["token auth"], service_type="LoadBalancer"))["Service"]
    assert service["spec"]["type"] == "LoadBalancer"
    with pytest.raises(InvalidInputError, match="ExternalName"):
        build_objects(SHAPES["token auth"], service_type="ExternalName")


def test_to_yaml_round_trips() -> None:
    spec = SHAPES["no auth, registry credentials, labels"]
    objects = build_objects(spec)
    docs = list(yaml.safe_load_all(to_yaml(objects, redact=False)))
    assert docs == [to_dict(o) for o in objects]
    redacted = list(yaml.safe_load_all(to_yaml(objects)))
    secrets = [d for d in redacted if d["kind"] == "Secret"]
    assert secrets and all(v == "" for d in secrets for v in d["data"].values())
    assert [d for d in redacted if d["kind"] != "Secret"] == [d for d in docs if d["kind"] != "Secret"]


def test_unhonoured_settings_are_said(caplog: pytest.LogCaptureFixture) -> None:
    config = AksDeploymentConfig(
        autoscale_refresh_seconds=5, enable_app_insights=True, collect_model_data=True, compute_target_name="aks1"
    )
    notes = unhonoured_settings(config)
    assert len(notes) == 2  # app insights and data collection are the config's own warnings
    assert "autoscale_refresh_seconds=5" in notes[0] and "horizontal-pod-autoscaler-sync-period" in notes[0]
    with caplog.at_level(logging.WARNING):
        build_objects(spec_for(config))
    assert "autoscale_refresh_seconds=5" in caplog.text and "compute_target_name" in caplog.text
    assert unhonoured_settings(AksDeploymentConfig()) == []


@pytest.mark.parametrize(
    ("config", "secrets", "message"),
    [
        (AksDeploymentConfig(), {}, "no primary key"),
        (AksDeploymentConfig(auth_enabled=False, token_auth_enabled=True), {}, "EDGEPACK_TOKEN_SECRET"),
        (
            AksDeploymentConfig(auth_enabled=True, token_auth_enabled=True),
            {"EDGEPACK_PRIMARY_KEY": PRIMARY},
            "cannot both be on",
        ),
        (AksDeploymentConfig(cpu_cores=1, cpu_cores_limit=0.5), {"EDGEPACK_PRIMARY_KEY": PRIMARY}, "cpu_cores_limit"),
        (AksDeploymentConfig(memory_gb=2, memory_gb_limit=1), {"EDGEPACK_PRIMARY_KEY": PRIMARY}, "memory_gb_limit"),
        (
            AksDeploymentConfig(autoscale_min_replicas=5, autoscale_max_replicas=2),
            {"EDGEPACK_PRIMARY_KEY": PRIMARY},
            "min must be <= max",
        ),
    ],
)
def test_bad_settings_fail_before_anything_is_built(config: AksDeploymentConfig, secrets: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        build_objects(spec_for(config, secrets=secrets))


@pytest.mark.parametrize(
    ("name", "namespace", "message"),
    [("9lives", None, "not a valid Kubernetes Service name"), ("iris", "Team_A", "not a DNS-1123 label")],
)
def test_names_kubernetes_refuses(name: str, namespace: str | None, message: str) -> None:
    config = AksDeploymentConfig(auth_enabled=False, num_replicas=1, namespace=namespace)
    with pytest.raises(InvalidInputError, match=message):
        build_objects(ServiceSpec(name=name, image=IMAGE, config=config))


def test_other_compute_types_are_refused() -> None:
    from cloud_targets.config.model import AciDeploymentConfig

    with pytest.raises(InvalidInputError, match="AKS"):
        build_objects(ServiceSpec(name="iris-svc", image=IMAGE, config=AciDeploymentConfig()))
