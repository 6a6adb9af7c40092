"""Endpoint objects: schema-valid (kubernetes-validate for core kinds; the HTTPRoute against Gateway API's published
v1 schema through @kubernetes-models/gateway-api, see gateway_schema.py) and encoding the split exactly, in both
modes."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from cloud_targets.config.model import AksDeploymentConfig
from cloud_targets.endpoints.spec import EndpointSpec, VersionSpec
from cloud_targets.targets.base import ServiceSpec
from cloud_targets.targets.kubernetes.endpoint_objects import endpoint_objects, integer_weights, object_name
from packager.errors import InvalidInputError
from tests.cloud_targets.targets.kubernetes.gateway_schema import GatewaySchema

KEY = "k" * 32
K8S = kubernetes_validate.latest_version()


def image(tag: str) -> str:
    return f"registry.example.com/iris@sha256:{tag * 64}"


def endpoint(blue: float, green: float, *, default: str = "blue", name: str = "iris-ep") -> EndpointSpec:
    def version(vname: str, traffic: float, tag: str) -> VersionSpec:
        service = ServiceSpec(
            name=f"{name}-{vname}",
            image=image(tag),
            config=AksDeploymentConfig(namespace="ml", num_replicas=1),
            secrets={"EDGEPACK_PRIMARY_KEY": KEY},
        )
        return VersionSpec(vname, service, traffic, default=vname == default)

    return EndpointSpec(
        name,
        [version("blue", blue, "a"), version("green", green, "b")],
        secrets={"EDGEPACK_PRIMARY_KEY": KEY},
        revision=3,
    )


def validate(objects: list[dict], gateway_schema: GatewaySchema | None = None) -> None:
    """Core kinds with kubernetes-validate (strict); every HTTPRoute with the Gateway API validator."""
    routes = [obj for obj in objects if obj["kind"] == "HTTPRoute"]
    for obj in objects:
        if obj["kind"] != "HTTPRoute":
            kubernetes_validate.validate(obj, K8S, strict=True)
    if routes:
        assert gateway_schema is not None, "HTTPRoutes need the gateway_schema fixture"
        assert gateway_schema.errors(routes) == [[] for _ in routes]


def kinds(objects: list[dict]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


@pytest.mark.parametrize(
    ("blue", "green", "weights"),
    [(80, 20, [80, 20]), (90, 10, [90, 10]), (33.3, 66.7, [33, 67]), (0, 100, [None, 100]), (100, 0, [100, None])],
)
def test_gateway_mode_encodes_the_split(
    blue: float, green: float, weights: list, gateway_schema: GatewaySchema
) -> None:
    objects = endpoint_objects(endpoint(blue, green), mode="gateway", gateway="infra/public")
    validate(objects, gateway_schema)
    assert kinds(objects) == [
        ("Namespace", "ml"),
        ("Secret", "iris-ep-blue-secrets"),
        ("Deployment", "iris-ep-blue"),
        ("Service", "iris-ep-blue"),
        ("Secret", "iris-ep-green-secrets"),
        ("Deployment", "iris-ep-green"),
        ("Service", "iris-ep-green"),
        ("HTTPRoute", "iris-ep"),
    ]
    route = objects[-1]
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "infra"}
    ]
    *pins, default = route["spec"]["rules"]
    for rule, version in zip(pins, ("blue", "green"), strict=True):  # a pinned request goes to its version only
        assert rule == {
            "matches": [{"headers": [{"type": "Exact", "name": "azureml-model-deployment", "value": version}]}],
            "backendRefs": [{"group": "", "kind": "Service", "name": f"iris-ep-{version}", "port": 80, "weight": 1}],
        }
    assert set(route["spec"]) == {"parentRefs", "rules"} and set(default) == {"matches", "backendRefs"}
    assert default["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert all(set(b) == {"group", "kind", "name", "port", "weight"} for b in default["backendRefs"])
    got = {b["name"]: b["weight"] for b in default["backendRefs"]}
    want = {f"iris-ep-{v}": w for v, w in zip(("blue", "green"), weights, strict=True) if w is not None}
    assert got == want and sum(got.values()) == 100
    labels = objects[2]["metadata"]["labels"]
    assert labels["edgepack.endpoint"] == "iris-ep" and labels["edgepack.version"] == "blue"


@pytest.mark.parametrize(("blue", "green"), [(80, 20), (33.3, 66.7), (0, 100)])
def test_router_mode_encodes_the_split(blue: float, green: float) -> None:
    objects = endpoint_objects(endpoint(blue, green), mode="router")
    validate(objects)
    assert kinds(objects)[-4:] == [
        ("ConfigMap", "iris-ep-routes"),
        ("Secret", "iris-ep-secrets"),
        ("Deployment", "iris-ep"),
        ("Service", "iris-ep"),
    ]
    routes = json.loads(objects[-4]["data"]["routes.json"])
    assert routes["revision"] == 3
    assert [(v["name"], v["url"], v["traffic"], v["default"]) for v in routes["versions"]] == [
        ("blue", "http://iris-ep-blue.ml.svc.cluster.local", blue, True),
        ("green", "http://iris-ep-green.ml.svc.cluster.local", green, False),
    ]
    deployment = objects[-2]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image("a")  # the default version's image
    assert container["command"] == ["python3", "-m", "edge_module.router"]
    assert container["args"][:2] == ["--routes", "/etc/edgepack/routes/routes.json"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    key_env = next(e for e in container["env"] if e["name"] == "EDGEPACK_PRIMARY_KEY")
    assert key_env == {
        "name": "EDGEPACK_PRIMARY_KEY",
        "valueFrom": {"secretKeyRef": {"name": "iris-ep-secrets", "key": "EDGEPACK_PRIMARY_KEY"}},
    }
    assert KEY not in json.dumps(deployment) and KEY not in json.dumps(objects[-4])
    assert pod["volumes"] == [{"name": "routes", "configMap": {"name": "iris-ep-routes"}}]
    assert "subPath" not in container["volumeMounts"][0]  # a subPath mount would never see updates


def test_integer_weights_largest_remainder() -> None:
    assert integer_weights({"a": 33.3, "b": 66.7}) == {"a": 33, "b": 67}
    assert integer_weights({"a": 100 / 3, "b": 100 / 3, "c": 100 / 3}) == {"a": 34, "b": 33, "c": 33}
    assert integer_weights({"a": 0.4, "b": 99.6}) == {"a": 0, "b": 100}
    assert integer_weights({}) == {}


def test_long_names_are_cut_with_a_hash(gateway_schema: GatewaySchema) -> None:
    long_ep, long_v = "e" * 40, "v" * 40
    a, b = object_name(long_ep, long_v), object_name(long_ep, long_v + "x")
    assert a != b and len(a) <= 54 and len(b) <= 54
    assert object_name("iris", "blue") == "iris-blue"
    assert object_name("Iris", "Blue_1") != object_name("iris", "blue-1")  # changed names carry a hash
    objects = endpoint_objects(endpoint(50, 50, name="e" * 60), mode="gateway", gateway="gw")
    validate(objects, gateway_schema)


def test_the_validator_catches_what_the_api_server_would_refuse(gateway_schema: GatewaySchema) -> None:
    def route() -> dict:
        return endpoint_objects(endpoint(80, 20), mode="gateway", gateway="gw")[-1]

    negative, bad_match, no_parent, many_rules, wrong_kind = route(), route(), route(), route(), route()
    negative["spec"]["rules"][-1]["backendRefs"][0]["weight"] = -1
    bad_match["spec"]["rules"][0]["matches"][0]["headers"][0]["type"] = "Prefix"
    del no_parent["spec"]["parentRefs"][0]["name"]
    many_rules["spec"]["rules"] *= 6  # 18 rules; an HTTPRoute holds 16
    wrong_kind["kind"] = "HTTPRoutes"
    errors = gateway_schema.errors([route(), negative, bad_match, no_parent, many_rules, wrong_kind])
    assert errors[0] == []
    assert errors[1] == ["spec/rules/2/backendRefs/0/weight: must be >= 0"]
    assert errors[2] == [
        "spec/rules/0/matches/0/headers/0/type: must be equal to one of the allowed values (Exact, RegularExpression)"
    ]
    assert errors[3] == ["spec/parentRefs/0: must have required property name"]
    assert any(e.startswith("spec/rules: must NOT have more than 16 items") for e in errors[4])
    assert errors[5] == ["kind: must be equal to one of the allowed values (HTTPRoute)"]


def test_gateway_mode_needs_a_gateway() -> None:
    with pytest.raises(InvalidInputError, match="EDGEPACK_KUBE_GATEWAY"):
        endpoint_objects(endpoint(80, 20), mode="gateway")
    with pytest.raises(InvalidInputError, match="not 'namespace/name'"):
        endpoint_objects(endpoint(80, 20), mode="gateway", gateway="a/b/C!")
