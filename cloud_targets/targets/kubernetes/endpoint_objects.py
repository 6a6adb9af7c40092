"""The Kubernetes objects of an endpoint: each version as a web service, and the traffic split.

Per version: the objects of :func:`build_objects` (Secret, Deployment, Service, HPA...) named
``<endpoint>-<version>`` and labelled ``edgepack.endpoint`` / ``edgepack.version``. The split, in one of two modes:

- ``gateway``: a Gateway API ``HTTPRoute`` (``gateway.networking.k8s.io/v1``) attached to a Gateway the user
  names: one rule per version matching ``azureml-model-deployment: <version>`` (pinned requests), then a
  default rule whose ``backendRefs`` carry the split as integer weights summing to exactly 100.
- ``router``: the edgepack router (``python3 -m edge_module.router``, shipped in every module image; run from
  the default version's image) as its own Deployment (2 replicas, rolling update with maxUnavailable 0) and
  Service (the endpoint's URI), its routes file in a ConfigMap (mounted as a directory so the kubelet swaps it
  in place and the router re-reads it), its keys from a Secret.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from typing import Any

from kubernetes import client

from cloud_targets.config.model import AksDeploymentConfig
from cloud_targets.endpoints.spec import EndpointSpec
from cloud_targets.targets.base import CONTAINER_PORT, ServiceSpec
from cloud_targets.targets.kubernetes.labels import MANAGED_BY, SERVICE_LABEL, selector
from cloud_targets.targets.kubernetes.objects import (
    SECRETS_REVISION,
    SERVICE_PORT,
    _b64,
    build_objects,
    namespace_of,
    pull_secret_name,
    secrets_revision,
    to_dict,
)
from edge_module.router.routes import PIN_HEADER, split
from packager.errors import InvalidInputError

ENDPOINT_LABEL = "edgepack.endpoint"
VERSION_LABEL = "edgepack.version"
ROLE_LABEL = "edgepack.role"
MODES = ("router", "gateway")
GATEWAY_API = "gateway.networking.k8s.io/v1"
ROUTES_DIR = "/etc/edgepack/routes"
ROUTES_FILE = "routes.json"
ROUTER_PORT = CONTAINER_PORT
ROUTER_REPLICAS = 2
MAX_GATEWAY_VERSIONS = 15  # HTTPRoute allows 16 rules: one pin rule per version plus the default rule
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME_MAX = 63 - len("-registry")  # room for the longest suffix build_objects adds ("-secrets", "-registry")


def object_name(endpoint: str, version: str | None = None) -> str:
    """``<endpoint>[-<version>]`` as a DNS-1035 label short enough for every suffix used; when too long it is
    truncated and ends with a short hash of the full name, so distinct versions keep distinct names."""
    full = f"{endpoint}-{version}" if version else endpoint
    name = re.sub(r"[^a-z0-9-]+", "-", full.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"ep-{name}"
    if name != full or len(name) > _NAME_MAX:  # changed or cut: a hash of the full name keeps names distinct
        digest = hashlib.sha256(full.encode()).hexdigest()[:8]
        name = f"{name[: _NAME_MAX - 9].rstrip('-')}-{digest}"
    if not _DNS1035.match(name):
        raise InvalidInputError(f"cannot make a Kubernetes name from endpoint {endpoint!r} version {version!r}")
    return name


def routes_config_name(endpoint: str) -> str:
    return f"{object_name(endpoint)}-routes"


def router_secret_name(endpoint: str) -> str:
    return f"{object_name(endpoint)}-secrets"


def integer_weights(shares: dict[str, float]) -> dict[str, int]:
    """Percent shares as integers summing to exactly 100 (largest remainder; ties go to the earlier version).

    ``{}`` stays ``{}``; versions with a positive share may round to 0 (then they get no traffic but pins).
    """
    if not shares:
        return {}
    total = sum(shares.values())
    scaled = {k: v * 100.0 / total for k, v in shares.items()}
    floors = {k: math.floor(v) for k, v in scaled.items()}
    left = 100 - sum(floors.values())
    order = sorted(scaled, key=lambda k: (-(scaled[k] - floors[k]), list(scaled).index(k)))
    for k in order[:left]:
        floors[k] += 1
    return floors


def parse_gateway(gateway: str, namespace: str) -> tuple[str, str]:
    """``namespace/name`` or ``name`` (the endpoint's namespace) -> (namespace, name)."""
    ns, _, name = gateway.strip().rpartition("/")
    ns = ns or namespace
    if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name) or len(name) > 253 or not _DNS1035.match(ns):
        raise InvalidInputError(
            f"gateway {gateway!r} is not 'namespace/name' of a Gateway: e.g. KubernetesCompute(gateway="
            "'infra/public-gw') or EDGEPACK_KUBE_GATEWAY=infra/public-gw"
        )
    return ns, name


def version_service(spec: EndpointSpec, index: int, namespace: str, mode: str = "router") -> ServiceSpec:
    """Version ``index``'s ServiceSpec as deployed: its Kubernetes name, the endpoint's namespace, its labels,
    and the endpoint's auth: none of its own behind the router (which checks the keys), the endpoint's keys or
    token secret in gateway mode (no router: each version's scoring server checks them)."""
    version = spec.versions[index]
    service = version.service
    gated = mode == "gateway" and spec.auth_mode != "none"
    auth = {
        "namespace": namespace,
        "auth_enabled": gated and spec.auth_mode == "key",
        "token_auth_enabled": gated and spec.auth_mode == "token",
        "primary_key": None,  # the endpoint's keys, in spec.secrets, are the only ones
        "secondary_key": None,
    }
    config = service.config
    if dataclasses.is_dataclass(config):
        config = dataclasses.replace(config, **{k: v for k, v in auth.items() if hasattr(config, k)})
    env = {k: v for k, v in service.env.items() if k != "EDGEPACK_TOKEN_AUTH"}
    if auth["token_auth_enabled"]:
        env["EDGEPACK_TOKEN_AUTH"] = "true"
    labels = {**service.labels, ENDPOINT_LABEL: spec.name, VERSION_LABEL: version.name}
    return dataclasses.replace(service, name=object_name(spec.name, version.name), config=config, labels=labels,
                               env=env, secrets=dict(spec.secrets) if gated else {})  # fmt: skip


def endpoint_namespace(spec: EndpointSpec, namespace: str | None = None, current: str | None = None) -> str:
    """The namespace given, else the one the versions name (they must agree: one endpoint lives in one
    namespace), else ``current`` (where the endpoint already runs: versions added later need not repeat it),
    else ``default``."""
    if namespace:
        return namespace
    found = {v.service.config.namespace for v in spec.versions if getattr(v.service.config, "namespace", None)}
    if len(found) > 1 or (found and current and found != {current}):
        names = ", ".join(sorted(found | ({current} if current else set())))
        raise InvalidInputError(
            f"the versions of endpoint {spec.name!r} name different namespaces ({names}); an endpoint lives in "
            "one namespace: give them the same one (or none: a new version joins the endpoint's)"
        )
    return found.pop() if found else current or namespace_of(AksDeploymentConfig())


def _labels(spec: EndpointSpec, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": object_name(spec.name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SERVICE_LABEL: object_name(spec.name),
        ENDPOINT_LABEL: spec.name,
        ROLE_LABEL: role,
    }


def version_urls(spec: EndpointSpec, namespace: str, port: int = SERVICE_PORT) -> dict[str, str]:
    """Each version's in-cluster base URL (its Service)."""
    suffix = "" if port == 80 else f":{port}"
    return {
        v.name: f"http://{object_name(spec.name, v.name)}.{namespace}.svc.cluster.local{suffix}" for v in spec.versions
    }


def weights_of(spec: EndpointSpec) -> dict[str, int]:
    """The split as every version ready sees it (:func:`split`), in integer percent summing to 100."""
    table = spec.routes({v.name: "http://unused" for v in spec.versions})
    return integer_weights(split(table))


def httproute_object(
    spec: EndpointSpec, namespace: str, gateway: str, service_port: int = SERVICE_PORT
) -> dict[str, Any]:
    """The endpoint's HTTPRoute (the API server validates it; the tests check it against the published schema)."""
    if len(spec.versions) > MAX_GATEWAY_VERSIONS:
        raise InvalidInputError(
            f"endpoint {spec.name!r} has {len(spec.versions)} versions; an HTTPRoute holds at most "
            f"{MAX_GATEWAY_VERSIONS} (16 rules); remove versions or use the router mode (no gateway)"
        )
    gw_ns, gw_name = parse_gateway(gateway, namespace)
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gw_name}
    if gw_ns != namespace:
        parent["namespace"] = gw_ns

    def backend(version: str, weight: int) -> dict[str, Any]:
        return {
            "group": "",
            "kind": "Service",
            "name": object_name(spec.name, version),
            "port": service_port,
            "weight": weight,
        }

    rules: list[dict[str, Any]] = [
        {
            "matches": [{"headers": [{"type": "Exact", "name": PIN_HEADER, "value": v.name}]}],
            "backendRefs": [backend(v.name, 1)],
        }
        for v in spec.versions
    ]
    weights = weights_of(spec)
    default_rule: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}
    refs = [backend(name, w) for name, w in weights.items() if w > 0]
    if refs:
        default_rule["backendRefs"] = refs
    rules.append(default_rule)
    route = {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": {
            "name": object_name(spec.name),
            "namespace": namespace,
            "labels": _labels(spec, "split"),
            "annotations": {"edgepack/revision": str(spec.revision)},
        },
        "spec": {"parentRefs": [parent], "rules": rules},
    }
    return route


def routes_json(spec: EndpointSpec, namespace: str, service_port: int = SERVICE_PORT) -> str:
    return spec.routes(version_urls(spec, namespace, service_port)).to_json()


def router_objects(
    spec: EndpointSpec,
    namespace: str,
    *,
    service_type: str = "ClusterIP",
    service_port: int = SERVICE_PORT,
) -> list[Any]:
    """ConfigMap (routes), Secret (the endpoint's keys), Deployment and Service of the endpoint's router."""
    name = object_name(spec.name)
    default = next((v for v in spec.versions if v.default), spec.versions[0] if spec.versions else None)
    if default is None:
        raise InvalidInputError(f"endpoint {spec.name!r} has no version: the router needs one to run from")
    image_spec = default.service
    labels = _labels(spec, "router")
    meta = {"namespace": namespace, "labels": labels}
    config_map = client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(name=routes_config_name(spec.name), **meta),
        data={ROUTES_FILE: routes_json(spec, namespace, service_port)},
    )
    secrets = dict(spec.secrets) if spec.auth_mode != "none" else {}
    secret = client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=client.V1ObjectMeta(name=router_secret_name(spec.name), **meta),
        type="Opaque",
        data={k: _b64(v) for k, v in sorted(secrets.items())},
    )
    env = [client.V1EnvVar(name="EDGEPACK_TOKEN_AUTH", value="true" if spec.auth_mode == "token" else "false")]
    env += [
        client.V1EnvVar(
            name=key,
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=router_secret_name(spec.name), key=key)
            ),
        )
        for key in sorted(secrets)
    ]
    probe = {"period_seconds": 5, "timeout_seconds": 2, "failure_threshold": 3}
    container = client.V1Container(
        name="router",
        image=image_spec.image,
        command=["python3", "-m", "edge_module.router"],
        args=["--routes", f"{ROUTES_DIR}/{ROUTES_FILE}", "--port", str(ROUTER_PORT), "--host", "0.0.0.0"],
        ports=[client.V1ContainerPort(name="http", container_port=ROUTER_PORT, protocol="TCP")],
        env=env,
        resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "128Mi"}),
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/-/ready", port="http"), **probe),
        liveness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/-/healthy", port="http"), **probe),
        volume_mounts=[client.V1VolumeMount(name="routes", mount_path=ROUTES_DIR, read_only=True)],
    )
    pull = (
        [client.V1LocalObjectReference(name=pull_secret_name(object_name(spec.name, default.name)))]
        if image_spec.registry_credentials
        else None
    )
    deployment = client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(name=name, **meta),
        spec=client.V1DeploymentSpec(
            replicas=ROUTER_REPLICAS,
            selector=client.V1LabelSelector(match_labels=selector(name)),
            strategy=client.V1DeploymentStrategy(
                type="RollingUpdate",
                rolling_update=client.V1RollingUpdateDeployment(max_unavailable=0, max_surge=1),
            ),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(
                    labels=labels, annotations={SECRETS_REVISION: secrets_revision(name, secrets)}
                ),
                spec=client.V1PodSpec(
                    containers=[container],
                    image_pull_secrets=pull,
                    automount_service_account_token=False,
                    # a ConfigMap mounted as a directory (no subPath) is updated in place by the kubelet
                    volumes=[
                        client.V1Volume(
                            name="routes",
                            config_map=client.V1ConfigMapVolumeSource(name=routes_config_name(spec.name)),
                        )
                    ],
                ),
            ),
        ),
    )
    service = client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=client.V1ObjectMeta(name=name, **meta),
        spec=client.V1ServiceSpec(
            type=service_type,
            selector=selector(name),
            ports=[client.V1ServicePort(name="http", port=service_port, target_port="http", protocol="TCP")],
        ),
    )
    return [config_map, secret, deployment, service]


def check_mode(mode: str, gateway: str | None) -> None:
    if mode not in MODES:
        raise InvalidInputError(f"endpoint split mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "gateway" and not gateway:
        raise InvalidInputError(
            "the gateway mode needs the Gateway to attach the HTTPRoute to: KubernetesCompute(gateway="
            "'namespace/name') or EDGEPACK_KUBE_GATEWAY"
        )


def version_objects(
    spec: EndpointSpec,
    namespace: str,
    *,
    mode: str = "router",
    service_type: str = "ClusterIP",
    service_port: int = SERVICE_PORT,
) -> dict[str, list[Any]]:
    """Each version's objects (build_objects), by version name."""
    out: dict[str, list[Any]] = {}
    for i, version in enumerate(spec.versions):
        objects = build_objects(
            version_service(spec, i, namespace, mode), service_type="ClusterIP", service_port=service_port
        )
        out[version.name] = [o for o in objects if to_dict(o).get("kind") != "Namespace"]
    return out


def split_objects(spec: EndpointSpec, namespace: str, mode: str, gateway: str | None = None, **kw: Any) -> list[Any]:
    """The objects that carry the split: the HTTPRoute, or the router's ConfigMap/Secret/Deployment/Service."""
    check_mode(mode, gateway)
    if mode == "gateway":
        return [httproute_object(spec, namespace, str(gateway), kw.get("service_port", SERVICE_PORT))]
    return router_objects(spec, namespace, **kw)


def endpoint_objects(
    spec: EndpointSpec,
    namespace: str | None = None,
    mode: str = "router",
    gateway: str | None = None,
    service_type: str = "ClusterIP",
) -> list[dict[str, Any]]:
    """Every object of the endpoint in apply order, as dicts (``--dry-run``; Secret values are real: pass them
    through :func:`cloud_targets.targets.kubernetes.objects.redacted` or ``to_yaml`` before printing)."""
    check_mode(mode, gateway)
    ns = endpoint_namespace(spec, namespace)
    out: list[dict[str, Any]] = []
    if ns != "default":
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for objects in version_objects(spec, ns, mode=mode).values():
        out += [to_dict(o) for o in objects]
    out += [to_dict(o) for o in split_objects(spec, ns, mode, gateway, service_type=service_type)]
    return out


def routes_of(config_map: dict[str, Any]) -> dict[str, Any]:
    """The routes table a router ConfigMap carries (tests, state)."""
    return json.loads(config_map["data"][ROUTES_FILE])
