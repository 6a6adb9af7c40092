"""Typed deployment configurations (one per compute type), the objects every target reads.

Field names follow Azure ML v1's ``*ServiceDeploymentConfiguration`` attributes; defaults are v1's.
SKELETON: validation (v1's rules) and the v1 file reader are still to be written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from packager.errors import InvalidInputError


class DeploymentConfigError(InvalidInputError):
    """A deployment configuration v1 would have refused; the message names v1's rule."""


@dataclass
class DeploymentConfig:
    """Settings every target shares: metadata, auth and the scoring module's limits."""

    compute_type: ClassVar[str] = ""

    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    auth_enabled: bool = False
    token_auth_enabled: bool = False
    primary_key: str | None = None
    secondary_key: str | None = None
    scoring_timeout_ms: int | None = None
    replica_max_concurrent_requests: int | None = None
    max_request_wait_time: int | None = None  # ms a request may queue for a free slot before 503


@dataclass
class LocalDeploymentConfig(DeploymentConfig):
    """``LocalWebservice.deploy_configuration(port=None)``: Docker when reachable, else a local process."""

    compute_type: ClassVar[str] = "LOCAL"

    port: int | None = None  # None: a free port, as v1 did


@dataclass
class AciDeploymentConfig(DeploymentConfig):
    """``AciWebservice.deploy_configuration(...)``."""

    compute_type: ClassVar[str] = "ACI"

    cpu_cores: float = 0.1
    memory_gb: float = 0.5
    cpu_cores_limit: float | None = None
    memory_gb_limit: float | None = None
    gpu_cores: int | None = None
    location: str | None = None
    ssl_enabled: bool = False
    ssl_cert_pem_file: str | None = None
    ssl_key_pem_file: str | None = None
    ssl_cname: str | None = None
    dns_name_label: str | None = None
    enable_app_insights: bool = False
    collect_model_data: bool = False
    vnet_name: str | None = None
    subnet_name: str | None = None
    cmk_vault_base_url: str | None = None
    cmk_key_name: str | None = None
    cmk_key_version: str | None = None


@dataclass
class AksDeploymentConfig(DeploymentConfig):
    """``AksWebservice.deploy_configuration(...)`` (any Kubernetes cluster)."""

    compute_type: ClassVar[str] = "AKS"

    auth_enabled: bool = True
    autoscale_enabled: bool | None = None  # None: on unless num_replicas is given (v1)
    autoscale_min_replicas: int | None = None  # v1 default 1 when autoscaling
    autoscale_max_replicas: int | None = None  # v1 default 10
    autoscale_refresh_seconds: int | None = None  # v1 default 1
    autoscale_target_utilization: int | None = None  # v1 default 70
    num_replicas: int | None = None
    cpu_cores: float = 0.1
    memory_gb: float = 0.5
    cpu_cores_limit: float | None = None
    memory_gb_limit: float | None = None
    gpu_cores: int | None = None
    scoring_timeout_ms: int | None = 60000
    replica_max_concurrent_requests: int | None = 1
    max_request_wait_time: int | None = 500
    period_seconds: int = 10
    initial_delay_seconds: int = 310
    timeout_seconds: int = 2
    success_threshold: int = 1
    failure_threshold: int = 3
    namespace: str | None = None
    compute_target_name: str | None = None
    enable_app_insights: bool = False
    collect_model_data: bool = False
