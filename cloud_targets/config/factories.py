"""v1's ``*Webservice.deploy_configuration(...)`` factories: v1's parameters, order and defaults.

Arguments left at ``None`` take v1's defaults (the dataclass defaults); the result is validated
with v1's rules (:class:`~cloud_targets.config.errors.DeploymentConfigError` lists every problem).
The webservice classes expose these as ``LocalWebservice.deploy_configuration`` etc.
"""

from __future__ import annotations

import logging
from typing import Any

from cloud_targets.config.model import (
    AciDeploymentConfig,
    AksDeploymentConfig,
    AksEndpointDeploymentConfig,
    DeploymentConfig,
    LocalDeploymentConfig,
)

log = logging.getLogger(__name__)


def _build(cls: type[DeploymentConfig], args: dict[str, Any]) -> Any:
    config = cls(**{k: v for k, v in args.items() if v is not None}).validate()
    for warning in config.unsupported_settings():
        log.warning("%s", warning)
    return config


def _no_blobfuse(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` without ``blobfuse_enabled`` (how v1 fetched models: meaningless here), warned about when set."""
    if args.pop("blobfuse_enabled") is not None:
        log.warning("blobfuse_enabled is ignored: edgepack puts the models in the image, nothing is mounted")
    return args


def local_deploy_configuration(
    port: int | None = None,
    *,
    auth_enabled: bool | None = None,
    primary_key: str | None = None,
    secondary_key: str | None = None,
    scoring_timeout_ms: int | None = None,
    replica_max_concurrent_requests: int | None = None,
    max_request_wait_time: int | None = None,
    tags: dict[str, str] | None = None,
    properties: dict[str, str] | None = None,
    description: str | None = None,
) -> LocalDeploymentConfig:
    """``LocalWebservice.deploy_configuration(port=None)``; ``port=None`` picks a free port, as v1 did.

    The keyword-only settings go beyond v1 (its local services had no auth or limits).
    """
    return _build(LocalDeploymentConfig, dict(locals()))


def aci_deploy_configuration(
    cpu_cores: float | None = 0.1,
    memory_gb: float | None = 0.5,
    tags: dict[str, str] | None = None,
    properties: dict[str, str] | None = None,
    description: str | None = None,
    location: str | None = None,
    auth_enabled: bool | None = False,
    ssl_enabled: bool | None = False,
    enable_app_insights: bool | None = False,
    ssl_cert_pem_file: str | None = None,
    ssl_key_pem_file: str | None = None,
    ssl_cname: str | None = None,
    dns_name_label: str | None = None,
    primary_key: str | None = None,
    secondary_key: str | None = None,
    collect_model_data: bool | None = False,
    cmk_vault_base_url: str | None = None,
    cmk_key_name: str | None = None,
    cmk_key_version: str | None = None,
    vnet_name: str | None = None,
    subnet_name: str | None = None,
    *,
    scoring_timeout_ms: int | None = None,
    replica_max_concurrent_requests: int | None = None,
    max_request_wait_time: int | None = None,
) -> AciDeploymentConfig:
    """``AciWebservice.deploy_configuration(...)`` with v1's parameters (ACI has no token auth, as in v1).

    The keyword-only scoring limits go beyond v1 (the scoring module applies them on ACI too).
    """
    return _build(AciDeploymentConfig, dict(locals()))


def aks_deploy_configuration(
    autoscale_enabled: bool | None = None,
    autoscale_min_replicas: int | None = None,
    autoscale_max_replicas: int | None = None,
    autoscale_refresh_seconds: int | None = None,
    autoscale_target_utilization: int | None = None,
    collect_model_data: bool | None = False,
    auth_enabled: bool | None = None,
    cpu_cores: float | None = 0.1,
    memory_gb: float | None = 0.5,
    enable_app_insights: bool | None = False,
    scoring_timeout_ms: int | None = 60000,
    replica_max_concurrent_requests: int | None = 1,
    max_request_wait_time: int | None = 500,
    num_replicas: int | None = None,
    primary_key: str | None = None,
    secondary_key: str | None = None,
    tags: dict[str, str] | None = None,
    properties: dict[str, str] | None = None,
    description: str | None = None,
    gpu_cores: int | None = None,
    period_seconds: int | None = 10,
    initial_delay_seconds: int | None = 310,
    timeout_seconds: int | None = 2,
    success_threshold: int | None = 1,
    failure_threshold: int | None = 3,
    namespace: str | None = None,
    token_auth_enabled: bool | None = False,
    compute_target_name: str | None = None,
    cpu_cores_limit: float | None = None,
    memory_gb_limit: float | None = None,
    blobfuse_enabled: bool | None = None,
) -> AksDeploymentConfig:
    """``AksWebservice.deploy_configuration(...)`` with v1's parameters.

    Autoscaling is on unless ``num_replicas`` is given; the ``autoscale_*`` values need
    ``autoscale_enabled=True`` (v1's rule) and default to 1, 10, 1 s and 70 %
    (:meth:`AksDeploymentConfig.autoscale_settings`). ``auth_enabled`` defaults to key auth, or
    to off with ``token_auth_enabled=True``. ``blobfuse_enabled`` (how v1 fetched models) has no
    meaning here: the models are in the image.
    """
    return _build(AksDeploymentConfig, _no_blobfuse(dict(locals())))


def aks_endpoint_deploy_configuration(
    autoscale_enabled: bool | None = None,
    autoscale_min_replicas: int | None = None,
    autoscale_max_replicas: int | None = None,
    autoscale_refresh_seconds: int | None = None,
    autoscale_target_utilization: int | None = None,
    collect_model_data: bool | None = False,
    auth_enabled: bool | None = None,
    cpu_cores: float | None = 0.1,
    memory_gb: float | None = 0.5,
    enable_app_insights: bool | None = False,
    scoring_timeout_ms: int | None = 60000,
    replica_max_concurrent_requests: int | None = 1,
    max_request_wait_time: int | None = 500,
    num_replicas: int | None = None,
    primary_key: str | None = None,
    secondary_key: str | None = None,
    tags: dict[str, str] | None = None,
    properties: dict[str, str] | None = None,
    description: str | None = None,
    gpu_cores: int | None = None,
    period_seconds: int | None = 10,
    initial_delay_seconds: int | None = 310,
    timeout_seconds: int | None = 2,
    success_threshold: int | None = 1,
    failure_threshold: int | None = 3,
    namespace: str | None = None,
    token_auth_enabled: bool | None = False,
    version_name: str | None = None,
    traffic_percentile: float | None = None,
    compute_target_name: str | None = None,
    cpu_cores_limit: float | None = None,
    memory_gb_limit: float | None = None,
    blobfuse_enabled: bool | None = None,
    *,
    is_default: bool | None = None,
    is_control_version_type: bool | None = None,
) -> AksEndpointDeploymentConfig:
    """``AksEndpoint.deploy_configuration(...)``: :func:`aks_deploy_configuration`'s parameters plus the
    version's ``version_name`` and ``traffic_percentile`` (v1's order), and, keyword-only,
    ``is_default`` / ``is_control_version_type`` (v1 set those with ``create_version``/``update_version``;
    here a deployment config can carry them too)."""
    return _build(AksEndpointDeploymentConfig, _no_blobfuse(dict(locals())))


__all__ = [
    "aci_deploy_configuration",
    "aks_deploy_configuration",
    "aks_endpoint_deploy_configuration",
    "local_deploy_configuration",
]
