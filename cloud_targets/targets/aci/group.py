"""The ACI container group for one service, built with azure-mgmt-containerinstance's models.

One container running the scoring image; a public IP (with the config's DNS label) on the module's port;
``restart_policy`` Always; the module's plain settings as environment values and its secrets (keys, token
secret) as ``secure_value`` entries only; liveness and readiness probes on the module's V2 health routes.
Settings ACI or the image cannot honour come back as warnings in :class:`GroupPlan`, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cloud_targets.config.model import AciDeploymentConfig
from packager.errors import InvalidInputError

if TYPE_CHECKING:
    from azure.mgmt.containerinstance.models import ContainerGroup

    from cloud_targets.targets.base import ServiceSpec

LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
PORT_ENV = "EDGEPACK_PORT"


@dataclass(repr=False)
class GroupPlan:
    """The container group to send, and what of the configuration it does not honour."""

    group: ContainerGroup
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # the group carries secure values: never print it
        containers = [c.name for c in self.group.containers]
        return f"GroupPlan(containers={containers!r}, warnings={self.warnings!r})"


def unsupported_settings(config: AciDeploymentConfig) -> list[str]:
    """One line per setting of ``config`` the ACI target does not honour (and what happens instead)."""
    warnings = []
    if config.ssl_enabled or config.ssl_cert_pem_file or config.ssl_key_pem_file or config.ssl_cname:
        warnings.append(
            "sslEnabled/sslCertificate/sslKey/sslCname are not honoured on ACI: the scoring module serves plain "
            "HTTP and no TLS sidecar is deployed; the service answers on http:// (put it behind a TLS-terminating "
            "gateway, or use an AKS deployment with an ingress)"
        )
    if config.gpu_cores:
        warnings.append("gpuCores is not honoured on ACI: the scoring image runs ONNX Runtime on CPU; no GPU requested")
    if config.enable_app_insights:
        warnings.append("appInsightsEnabled is not honoured: the service logs to stdout (read them with get_logs)")
    if config.collect_model_data:
        warnings.append("collectModelData is not honoured: requests and predictions are not stored")
    return warnings


def container_group(spec: ServiceSpec, location: str, subnet_id: str | None = None) -> ContainerGroup:
    """The container group for ``spec`` in ``location`` (see :func:`container_group_plan` for the warnings)."""
    return container_group_plan(spec, location, subnet_id).group


def container_group_plan(spec: ServiceSpec, location: str, subnet_id: str | None = None) -> GroupPlan:
    """Build the container group for ``spec``; ``subnet_id`` (a full ARM subnet id) puts it in a VNet."""
    from azure.mgmt.containerinstance import models as m

    config = spec.config
    if not isinstance(config, AciDeploymentConfig):
        raise InvalidInputError(
            f"service {spec.name!r} has a {config.compute_type or type(config).__name__} deployment configuration; "
            "the ACI target needs computeType ACI (AciWebservice.deploy_configuration)"
        )
    if not location:
        raise InvalidInputError(
            f"no Azure location for ACI service {spec.name!r}: set `location` in the deployment configuration "
            "(e.g. eastus)"
        )
    if bool(config.vnet_name) != bool(config.subnet_name):
        raise InvalidInputError("an ACI service in a virtual network needs both vnetName and subnetName")
    if config.vnet_name and not subnet_id:
        raise InvalidInputError(f"vnetName {config.vnet_name!r} is set: pass the subnet's ARM id as subnet_id")
    if subnet_id and config.dns_name_label:
        raise InvalidInputError(
            "dnsNameLabel cannot be used with vnetName/subnetName: ACI gives groups in a virtual network a private "
            "IP only; drop one of them"
        )

    overlap = sorted(set(spec.env) & set(spec.secrets))
    if overlap:
        raise InvalidInputError(f"environment variables given both as plain and secret values: {', '.join(overlap)}")
    env = [m.EnvironmentVariable(name=k, value=v) for k, v in sorted(spec.env.items())]
    if PORT_ENV not in spec.env:
        env.append(m.EnvironmentVariable(name=PORT_ENV, value=str(spec.port)))
    env += [m.EnvironmentVariable(name=k, secure_value=v) for k, v in sorted(spec.secrets.items())]

    limits = None
    if config.cpu_cores_limit is not None or config.memory_gb_limit is not None:
        limits = m.ResourceLimits(cpu=config.cpu_cores_limit, memory_in_gb=config.memory_gb_limit)
    resources = m.ResourceRequirements(
        requests=m.ResourceRequests(cpu=config.cpu_cores, memory_in_gb=config.memory_gb), limits=limits
    )
    container = m.Container(
        name=spec.name,
        image=spec.image,
        resources=resources,
        ports=[m.ContainerPort(port=spec.port, protocol="TCP")],
        environment_variables=env,
        liveness_probe=_probe(m, LIVE_PATH, spec.port, initial_delay=30, period=10),
        readiness_probe=_probe(m, READY_PATH, spec.port, initial_delay=5, period=5),
    )
    ip_address = m.IpAddress(
        type="Private" if subnet_id else "Public",
        ports=[m.Port(port=spec.port, protocol="TCP")],
        dns_name_label=config.dns_name_label,
    )
    credentials = None
    if spec.registry_credentials is not None:
        rc = spec.registry_credentials
        credentials = [m.ImageRegistryCredential(server=rc.server, username=rc.username, password=rc.password)]
    encryption = None
    if config.cmk_vault_base_url or config.cmk_key_name or config.cmk_key_version:
        if not (config.cmk_vault_base_url and config.cmk_key_name and config.cmk_key_version):
            raise InvalidInputError(
                "customer-managed key encryption needs cmkVaultBaseUrl, cmkKeyName and cmkKeyVersion together"
            )
        encryption = m.EncryptionProperties(
            vault_base_url=config.cmk_vault_base_url, key_name=config.cmk_key_name, key_version=config.cmk_key_version
        )
    tags = {**spec.labels, **config.tags}
    leaked = sorted(k for k, v in tags.items() if v in spec.secrets.values())
    if leaked:
        raise InvalidInputError(f"tags {', '.join(leaked)} carry a secret value (a key or token secret): remove them")
    group = m.ContainerGroup(
        location=location,
        tags=tags or None,
        containers=[container],
        os_type="Linux",
        restart_policy="Always",
        ip_address=ip_address,
        image_registry_credentials=credentials,
        subnet_ids=[m.ContainerGroupSubnetId(id=subnet_id)] if subnet_id else None,
        encryption_properties=encryption,
    )
    return GroupPlan(group, unsupported_settings(config))


def _probe(m: Any, path: str, port: int, *, initial_delay: int, period: int) -> Any:  # m: the lazy models module
    return m.ContainerProbe(
        http_get=m.ContainerHttpGet(path=path, port=port, scheme="http"),
        initial_delay_seconds=initial_delay,
        period_seconds=period,
        timeout_seconds=2,
        failure_threshold=3,
        success_threshold=1,
    )
