"""The Kubernetes objects of one web service, built with the official client's models.

``build_objects(spec)`` turns a :class:`ServiceSpec` whose config is an :class:`AksDeploymentConfig` into, in
apply order: Namespace (unless ``default``), the registry pull Secret (``kubernetes.io/dockerconfigjson``, when
the spec has registry credentials), the Secret with the scoring module's keys / token secret, the Deployment,
the Service and, when autoscaling is on, a HorizontalPodAutoscaler (``autoscaling/v2``).

Choices (v1's AKS settings mapped onto plain Kubernetes):

- Secrets reach the container only through ``secretKeyRef`` env entries; the pod template carries a salted,
  slow hash of them (``edgepack/secrets-revision``) so that new keys roll the pods.
- Liveness: ``GET /v2/health/live`` with v1's probe settings; ``initial_delay_seconds`` applies to it (as in
  v1, where it was the liveness delay) and Kubernetes requires its ``successThreshold`` to be 1. Readiness:
  ``GET /v2/health/ready`` (503 until the model is loaded) with the same period, timeout and thresholds but no
  initial delay, so a replica takes traffic as soon as ``init()`` is done instead of after 310 s.
- Autoscaling on: ``spec.replicas`` is left out so the HPA owns it. v1's ``autoscale_refresh_seconds`` cannot be
  honoured: the HPA's sync period is cluster-wide (kube-controller-manager
  ``--horizontal-pod-autoscaler-sync-period``, 15 s by default); see :func:`unhonoured_settings`.
- Service: ``ClusterIP`` on port 80 by default (v1 exposed AKS services through the cluster's azureml-fe
  router; here an ingress or ``kubectl port-forward`` reaches it); ``service_type="LoadBalancer"`` gives it a
  public address of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
from typing import Any

import yaml
from kubernetes import client

from cloud_targets.config.model import AksDeploymentConfig
from cloud_targets.targets.base import ServiceSpec
from cloud_targets.targets.base import module_env as config_env
from cloud_targets.targets.kubernetes.labels import sanitize_labels, selector, standard_labels
from packager.errors import InvalidInputError

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "default"
LIVENESS_PATH = "/v2/health/live"
READINESS_PATH = "/v2/health/ready"
SERVICE_PORT = 80
SERVICE_TYPES = ("ClusterIP", "LoadBalancer", "NodePort")
SECRETS_REVISION = "edgepack/secrets-revision"
GPU_RESOURCE = "nvidia.com/gpu"
# v1's AksWebservice defaults when autoscaling is on and a value is not given
AUTOSCALE_MIN, AUTOSCALE_MAX, AUTOSCALE_TARGET = 1, 10, 70

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # Service names
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # namespaces
_PRIMARY, _SECONDARY, _TOKEN_SECRET = "EDGEPACK_PRIMARY_KEY", "EDGEPACK_SECONDARY_KEY", "EDGEPACK_TOKEN_SECRET"


def secret_name(name: str) -> str:
    """The Secret holding the service's keys / token secret."""
    return f"{name}-secrets"


def pull_secret_name(name: str) -> str:
    """The ``kubernetes.io/dockerconfigjson`` Secret for the image registry."""
    return f"{name}-registry"


def namespace_of(config: AksDeploymentConfig) -> str:
    return config.namespace or DEFAULT_NAMESPACE


def autoscale_enabled(config: AksDeploymentConfig) -> bool:
    """v1's rule: on unless said otherwise or ``num_replicas`` is given."""
    if config.autoscale_enabled is not None:
        return bool(config.autoscale_enabled)
    return config.num_replicas is None


def unhonoured_settings(config: AksDeploymentConfig) -> list[str]:
    """What a Kubernetes deployment cannot carry out beyond the config's own ``unsupported_settings()``."""
    notes = []
    if autoscale_enabled(config) and config.autoscale_refresh_seconds is not None:
        notes.append(
            f"autoscale_refresh_seconds={config.autoscale_refresh_seconds} is not applied: a Kubernetes "
            "HorizontalPodAutoscaler re-evaluates on the cluster-wide --horizontal-pod-autoscaler-sync-period "
            "of kube-controller-manager (15 s by default)"
        )
    if config.compute_target_name:
        notes.append(
            f"compute_target_name={config.compute_target_name!r} is ignored: the cluster is the kubeconfig's "
            "current context, or the one --context names"
        )
    return notes


def cpu_quantity(cores: float, what: str) -> str:
    """Cores as a Kubernetes quantity: ``0.1`` -> ``100m``, ``2`` -> ``2``."""
    milli = round(cores * 1000)
    if milli <= 0:
        raise InvalidInputError(f"{what} must be at least 0.001 cores, got {cores}; give a larger value")
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(gb: float, what: str) -> str:
    """GB (v1's memoryInGB, taken as GiB) as mebibytes, rounded up: ``0.5`` -> ``512Mi``."""
    mib = math.ceil(gb * 1024)
    if mib <= 0:
        raise InvalidInputError(f"{what} must be more than 0, got {gb}; give a larger value")
    return f"{mib}Mi"


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode("ascii")


def secrets_revision(name: str, secrets: dict[str, str]) -> str:
    """A salted, slow hash of the secrets: changes when they do, reveals nothing usable about them."""
    material = json.dumps(sorted(secrets.items())).encode()
    return hashlib.pbkdf2_hmac("sha256", material, f"edgepack:{name}".encode(), 100_000)[:8].hex()


def service_secrets(spec: ServiceSpec) -> dict[str, str]:
    """The spec's secrets plus the config's keys, checked against the config's auth settings."""
    config = spec.config
    secrets = dict(spec.secrets)
    if config.auth_enabled and config.token_auth_enabled:
        raise InvalidInputError(
            "key auth (auth_enabled) and token auth (token_auth_enabled) cannot both be on (v1's rule); "
            "turn one of them off"
        )
    if config.auth_enabled:
        if config.primary_key and _PRIMARY not in secrets:
            secrets[_PRIMARY] = config.primary_key
        if config.secondary_key and _SECONDARY not in secrets:
            secrets[_SECONDARY] = config.secondary_key
        if not secrets.get(_PRIMARY):
            raise InvalidInputError(
                f"key auth is on for service {spec.name!r} but no primary key was given; set primary_key "
                f"or pass {_PRIMARY} in the service's secrets"
            )
    if config.token_auth_enabled and not secrets.get(_TOKEN_SECRET):
        raise InvalidInputError(
            f"token auth is on for service {spec.name!r} but no token signing secret was given; pass "
            f"{_TOKEN_SECRET} in the service's secrets"
        )
    return secrets


def module_env(spec: ServiceSpec) -> dict[str, str]:
    """The scoring module's plain settings from the config, overridden by ``spec.env``."""
    config = spec.config
    env = {"EDGEPACK_PORT": str(spec.port), **config_env(config, config.token_auth_enabled)}
    env["EDGEPACK_TOKEN_AUTH"] = "true" if config.token_auth_enabled else "false"  # said either way
    env.update(spec.env)
    return env


def _metadata(spec: ServiceSpec, name: str, **extra: Any) -> client.V1ObjectMeta:
    labels = {**sanitize_labels(spec.labels, forbidden_values=_secret_values(spec)), **standard_labels(spec.name)}
    return client.V1ObjectMeta(name=name, namespace=namespace_of(spec.config), labels=labels, **extra)


def _secret_values(spec: ServiceSpec) -> set[str]:
    values = {v for v in spec.secrets.values() if v}
    values.update(v for v in (spec.config.primary_key, spec.config.secondary_key) if v)
    if spec.registry_credentials:
        values.add(spec.registry_credentials.password)
    return values


def _annotations(config: AksDeploymentConfig) -> dict[str, str] | None:
    out = {}
    if config.description:
        out["edgepack/description"] = config.description
    if config.tags:
        out["edgepack/tags"] = json.dumps(config.tags, sort_keys=True)
    if config.properties:
        out["edgepack/properties"] = json.dumps(config.properties, sort_keys=True)
    return out or None


def _resources(config: AksDeploymentConfig) -> client.V1ResourceRequirements:
    requests = {
        "cpu": cpu_quantity(config.cpu_cores, "cpu_cores"),
        "memory": memory_quantity(config.memory_gb, "memory_gb"),
    }
    limits: dict[str, str] = {}
    if config.cpu_cores_limit is not None:
        if config.cpu_cores_limit < config.cpu_cores:
            raise InvalidInputError(
                f"cpu_cores_limit ({config.cpu_cores_limit}) is below cpu_cores ({config.cpu_cores}); "
                "Kubernetes requires limit >= request: raise the limit or lower cpu_cores"
            )
        limits["cpu"] = cpu_quantity(config.cpu_cores_limit, "cpu_cores_limit")
    if config.memory_gb_limit is not None:
        if config.memory_gb_limit < config.memory_gb:
            raise InvalidInputError(
                f"memory_gb_limit ({config.memory_gb_limit}) is below memory_gb ({config.memory_gb}); "
                "Kubernetes requires limit >= request: raise the limit or lower memory_gb"
            )
        limits["memory"] = memory_quantity(config.memory_gb_limit, "memory_gb_limit")
    if config.gpu_cores:
        limits[GPU_RESOURCE] = str(int(config.gpu_cores))  # extended resources: the request defaults to the limit
    return client.V1ResourceRequirements(requests=requests, limits=limits or None)


def _probes(config: AksDeploymentConfig) -> tuple[client.V1Probe, client.V1Probe]:
    common = {
        "period_seconds": config.period_seconds,
        "timeout_seconds": config.timeout_seconds,
        "failure_threshold": config.failure_threshold,
    }
    liveness = client.V1Probe(
        http_get=client.V1HTTPGetAction(path=LIVENESS_PATH, port="http"),
        initial_delay_seconds=config.initial_delay_seconds,
        success_threshold=1,  # Kubernetes: must be 1 for liveness probes
        **common,
    )
    readiness = client.V1Probe(
        http_get=client.V1HTTPGetAction(path=READINESS_PATH, port="http"),
        success_threshold=config.success_threshold,
        **common,
    )
    return liveness, readiness


def _env(spec: ServiceSpec, secrets: dict[str, str]) -> list[client.V1EnvVar]:
    plain = [client.V1EnvVar(name=k, value=v) for k, v in module_env(spec).items() if k not in secrets]
    from_secret = [
        client.V1EnvVar(
            name=key,
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=secret_name(spec.name), key=key)
            ),
        )
        for key in sorted(secrets)
    ]
    return plain + from_secret


def namespace_object(spec: ServiceSpec) -> client.V1Namespace:
    """The namespace, bare: it may hold other things, so it carries no label of ours."""
    return client.V1Namespace(
        api_version="v1", kind="Namespace", metadata=client.V1ObjectMeta(name=namespace_of(spec.config))
    )


def check_names(spec: ServiceSpec) -> None:
    """Kubernetes' own rules for the names used (v1's stricter service-name rule is the config's job)."""
    if not _DNS1035_LABEL.match(spec.name):
        raise InvalidInputError(
            f"service name {spec.name!r} is not a valid Kubernetes Service name: use up to 63 lowercase letters, "
            "digits and dashes, starting with a letter and ending with a letter or digit"
        )
    ns = namespace_of(spec.config)
    if not _DNS1123_LABEL.match(ns):
        raise InvalidInputError(
            f"namespace {ns!r} is not a DNS-1123 label: use up to 63 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )


def secret_object(spec: ServiceSpec, secrets: dict[str, str]) -> client.V1Secret:
    """The service's secrets as base64 ``data`` (``stringData`` does not prune under server-side apply)."""
    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=_metadata(spec, secret_name(spec.name)),
        type="Opaque",
        data={k: _b64(v) for k, v in sorted(secrets.items())},
    )


def pull_secret_object(spec: ServiceSpec) -> client.V1Secret:
    cred = spec.registry_credentials
    assert cred is not None
    config = {
        "auths": {
            cred.server: {
                "username": cred.username,
                "password": cred.password,
                "auth": _b64(f"{cred.username}:{cred.password}"),
            }
        }
    }
    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=_metadata(spec, pull_secret_name(spec.name)),
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": _b64(json.dumps(config))},
    )


def deployment_object(spec: ServiceSpec, secrets: dict[str, str]) -> client.V1Deployment:
    config = spec.config
    liveness, readiness = _probes(config)
    container = client.V1Container(
        name=spec.name,
        image=spec.image,
        ports=[client.V1ContainerPort(name="http", container_port=spec.port, protocol="TCP")],
        env=_env(spec, secrets),
        resources=_resources(config),
        liveness_probe=liveness,
        readiness_probe=readiness,
    )
    pull = [client.V1LocalObjectReference(name=pull_secret_name(spec.name))] if spec.registry_credentials else None
    pod_meta = client.V1ObjectMeta(
        labels=_metadata(spec, spec.name).labels,
        annotations={SECRETS_REVISION: secrets_revision(spec.name, secrets)},
    )
    template = client.V1PodTemplateSpec(
        metadata=pod_meta,
        spec=client.V1PodSpec(
            containers=[container],
            image_pull_secrets=pull,
            automount_service_account_token=False,  # the scoring module never talks to the API server
        ),
    )
    return client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=_metadata(spec, spec.name, annotations=_annotations(config)),
        spec=client.V1DeploymentSpec(
            replicas=None if autoscale_enabled(config) else (config.num_replicas or 1),
            selector=client.V1LabelSelector(match_labels=selector(spec.name)),
            template=template,
        ),
    )


def service_object(spec: ServiceSpec, service_type: str = "ClusterIP", port: int = SERVICE_PORT) -> client.V1Service:
    if service_type not in SERVICE_TYPES:
        raise InvalidInputError(f"service type {service_type!r} is not one of {', '.join(SERVICE_TYPES)}")
    return client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=_metadata(spec, spec.name),
        spec=client.V1ServiceSpec(
            type=service_type,
            selector=selector(spec.name),
            ports=[client.V1ServicePort(name="http", port=port, target_port="http", protocol="TCP")],
        ),
    )


def hpa_object(spec: ServiceSpec) -> client.V2HorizontalPodAutoscaler:
    config = spec.config
    low = config.autoscale_min_replicas or AUTOSCALE_MIN
    high = config.autoscale_max_replicas or AUTOSCALE_MAX
    if low > high:
        raise InvalidInputError(
            f"autoscale_min_replicas ({low}) is above autoscale_max_replicas ({high}); min must be <= max"
        )
    target = config.autoscale_target_utilization or AUTOSCALE_TARGET
    return client.V2HorizontalPodAutoscaler(
        api_version="autoscaling/v2",
        kind="HorizontalPodAutoscaler",
        metadata=_metadata(spec, spec.name),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name=spec.name
            ),
            min_replicas=low,
            max_replicas=high,
            metrics=[
                client.V2MetricSpec(
                    type="Resource",
                    resource=client.V2ResourceMetricSource(
                        name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=target)
                    ),
                )
            ],
        ),
    )


def build_objects(spec: ServiceSpec, *, service_type: str = "ClusterIP", service_port: int = SERVICE_PORT) -> list[Any]:
    """The service's objects in apply order; logs a warning for each setting Kubernetes cannot honour."""
    config = spec.config
    if not isinstance(config, AksDeploymentConfig):
        raise InvalidInputError(
            f"the Kubernetes target needs an AKS deployment configuration, got {type(config).__name__}; "
            "use computeType AKS in deploymentconfig.json"
        )
    check_names(spec)
    for note in unhonoured_settings(config):
        log.warning("%s", note)
    secrets = service_secrets(spec)
    objects: list[Any] = []
    if namespace_of(config) != DEFAULT_NAMESPACE:
        objects.append(namespace_object(spec))
    if spec.registry_credentials:
        objects.append(pull_secret_object(spec))
    objects.append(secret_object(spec, secrets))
    objects.append(deployment_object(spec, secrets))
    objects.append(service_object(spec, service_type, service_port))
    if autoscale_enabled(config):
        objects.append(hpa_object(spec))
    return objects


def to_dict(obj: Any) -> dict[str, Any]:
    """One object as the API server's JSON (camelCase, no nulls)."""
    return obj if isinstance(obj, dict) else client.ApiClient().sanitize_for_serialization(obj)


def redacted(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret's dict with every value emptied (keys kept); other objects unchanged."""
    if obj.get("kind") != "Secret":
        return obj
    out = dict(obj)
    for field in ("data", "stringData"):
        if field in out:
            out[field] = {k: "" for k in out[field]}
    return out


def to_yaml(objects: list[Any], *, redact: bool = True) -> str:
    """The objects as one multi-document YAML stream (``--dry-run``).

    Secret values are emptied unless ``redact=False`` (then ``kubectl apply -f`` takes the output as it is).
    """
    docs = [to_dict(o) for o in objects]
    if redact:
        docs = [redacted(d) for d in docs]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
