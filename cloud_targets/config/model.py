"""Typed deployment configurations (one per compute type), the objects every target reads.

Field names follow Azure ML v1's ``*ServiceDeploymentConfiguration`` attributes; defaults are v1's.
:meth:`DeploymentConfig.validate` applies v1's rules (every problem in one message, each with its fix);
the factories in :mod:`cloud_targets.config.factories` and the file reader call it, code that builds
a dataclass itself should too. :meth:`DeploymentConfig.unsupported_settings` says which settings the
target cannot honour; :meth:`DeploymentConfig.to_dict`/:meth:`DeploymentConfig.from_dict` use v1's
``deploymentconfig.json`` keys.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar

from cloud_targets.config.errors import DeploymentConfigError
from cloud_targets.config.rules import NAMESPACE_REGEX, is_valid_namespace, kind_problem, shown
from cloud_targets.config.schema import COMPUTE_TYPE_KEY, field_kinds, field_paths, label

_C = TypeVar("_C", bound="DeploymentConfig")

#: Fields never shown in reprs, errors or (by default) ``to_dict``.
SECRET_FIELDS = frozenset({"primary_key", "secondary_key"})

#: Why a setting cannot be honoured, by field (reported when the setting is on / given).
_NO_APP_INSIGHTS = "edgepack has no Application Insights; read the service's logs with `edgepack service logs`"
_NO_DATA_COLLECTION = "model data collection is not available; log the inputs from score.py if you need them"


@dataclass
class DeploymentConfig:
    """Settings every target shares: metadata, auth and the scoring module's limits."""

    compute_type: ClassVar[str] = ""
    #: Fields that must be > 0 when given (v1: "... must be greater than zero").
    POSITIVE: ClassVar[tuple[str, ...]] = (
        "scoring_timeout_ms",
        "replica_max_concurrent_requests",
        "max_request_wait_time",
    )
    #: Whether token (bearer token from ``get_token``) auth exists on this target: AKS only, as in v1.
    TOKEN_AUTH: ClassVar[bool] = False
    #: Field -> why this target cannot honour it (see :meth:`unsupported_settings`).
    UNHONOURED: ClassVar[dict[str, str]] = {}

    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    auth_enabled: bool = False
    token_auth_enabled: bool = False
    primary_key: str | None = field(default=None, repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    scoring_timeout_ms: int | None = None
    replica_max_concurrent_requests: int | None = None
    max_request_wait_time: int | None = None  # ms a request may queue for a free slot before 503

    # ------------------------------------------------------------------ validation
    def _label(self, name: str) -> str:
        return label(self.compute_type, name)

    def _type_problems(self) -> list[str]:
        problems = []
        for name, kind in field_kinds(self.compute_type).items():
            problem = kind_problem(getattr(self, name, None), kind, self._label(name), secret=name in SECRET_FIELDS)
            if problem:
                problems.append(problem)
        return problems

    def _problems(self) -> list[str]:
        """v1's rules for this compute type (values already have the right types)."""
        problems = []
        for name in self.POSITIVE:
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"{self._label(name)} must be greater than zero, not {value}")
        if self.token_auth_enabled and not self.TOKEN_AUTH:
            problems.append(
                f"{self._label('token_auth_enabled')} is only available on AKS (as in Azure ML v1): "
                f"set it to false and use key auth ({self._label('auth_enabled')}) on {self.compute_type}, "
                "or deploy to AKS"
            )
        elif self.token_auth_enabled and self.auth_enabled:
            problems.append(
                f"{self._label('auth_enabled')} and {self._label('token_auth_enabled')} cannot both be true: "
                "choose key auth or token auth (set authEnabled to false to use token auth)"
            )
        return problems

    def problems(self) -> list[str]:
        """Every rule this configuration breaks (empty when valid)."""
        return self._type_problems() or self._problems()

    def validate(self: _C) -> _C:
        """``self`` when v1 would have accepted it, else :class:`DeploymentConfigError` listing every problem."""
        problems = self.problems()
        if problems:
            raise DeploymentConfigError(f"invalid {self.compute_type} deployment configuration: " + "; ".join(problems))
        return self

    # ------------------------------------------------------------------ what the target cannot do
    def unsupported_settings(self) -> list[str]:
        """One warning per setting given that this target cannot honour (never silently dropped)."""
        warnings = []
        for name, reason in self.UNHONOURED.items():
            if getattr(self, name, None) not in (None, False):
                warnings.append(f"{self._label(name)} is not honoured by the {self.compute_type} target: {reason}")
        if (self.primary_key or self.secondary_key) and not self.auth_enabled:
            warnings.append(
                f"{self._label('primary_key')}/{self._label('secondary_key')} are set but key auth is off "
                f"({self._label('auth_enabled')} is false): the keys are kept but not required; "
                "set authEnabled to true to require them"
            )
        return warnings

    # ------------------------------------------------------------------ v1 deploymentconfig.json
    def to_dict(self, include_keys: bool = False) -> dict[str, Any]:
        """The configuration as v1 ``deploymentconfig.json`` keys (``None`` and empty maps left out).

        The auth keys are left out unless ``include_keys`` (a record holding them must be private).
        """
        out: dict[str, Any] = {COMPUTE_TYPE_KEY: self.compute_type}
        for name, path in field_paths(self.compute_type).items():
            value = getattr(self, name)
            if value is None or value == {} or (name in SECRET_FIELDS and not include_keys):
                continue
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = copy.deepcopy(value)
        return out

    @classmethod
    def from_dict(cls: type[_C], doc: dict[str, Any]) -> _C:
        """A configuration from v1 ``deploymentconfig.json`` keys (``computeType`` picks the class).

        Unknown keys are ignored (see :func:`cloud_targets.config.reader.deployment_config_from_dict`
        for the warnings); the result is validated.
        """
        from cloud_targets.config.reader import deployment_config_from_dict

        config, _ = deployment_config_from_dict(doc)
        if not isinstance(config, cls):
            raise DeploymentConfigError(
                f"computeType {shown(doc.get(COMPUTE_TYPE_KEY))} does not describe a {cls.__name__}; "
                f"use computeType {cls.compute_type!r}"
            )
        return config


@dataclass
class LocalDeploymentConfig(DeploymentConfig):
    """``LocalWebservice.deploy_configuration(port=None)``: Docker when reachable, else a local process."""

    compute_type: ClassVar[str] = "LOCAL"

    port: int | None = None  # None: a free port, as v1 did

    def _problems(self) -> list[str]:
        problems = super()._problems()
        if self.port is not None and not 1 <= self.port <= 65535:
            problems.append(f"{self._label('port')} must be a TCP port between 1 and 65535, not {self.port}")
        return problems


def _resource_problems(cfg: AciDeploymentConfig | AksDeploymentConfig) -> list[str]:
    """v1's cpu/memory/gpu rules (shared by ACI and AKS)."""
    problems = []
    for request, limit in (("cpu_cores", "cpu_cores_limit"), ("memory_gb", "memory_gb_limit")):
        req, lim = getattr(cfg, request), getattr(cfg, limit)
        if req is not None and lim is not None and lim > 0 and req > 0 and lim < req:
            problems.append(
                f"{cfg._label(limit)} ({lim}) must be greater than or equal to {cfg._label(request)} ({req}): "
                "raise the limit or lower the request"
            )
    if cfg.gpu_cores is not None and cfg.gpu_cores < 0:
        problems.append(f"{cfg._label('gpu_cores')} must be greater than or equal to zero, not {cfg.gpu_cores}")
    return problems


@dataclass
class AciDeploymentConfig(DeploymentConfig):
    """``AciWebservice.deploy_configuration(...)``."""

    compute_type: ClassVar[str] = "ACI"
    POSITIVE: ClassVar[tuple[str, ...]] = (
        *DeploymentConfig.POSITIVE,
        "cpu_cores",
        "memory_gb",
        "cpu_cores_limit",
        "memory_gb_limit",
    )
    UNHONOURED: ClassVar[dict[str, str]] = {
        "gpu_cores": "edgepack builds CPU images and requests no GPU on ACI",
        "ssl_enabled": "the ACI target serves plain HTTP on the container group's address; terminate TLS in front "
        "of it (e.g. Application Gateway); sslCertificate, sslKey and cname are not used",
        "enable_app_insights": _NO_APP_INSIGHTS,
        "collect_model_data": _NO_DATA_COLLECTION,
    }

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

    def _problems(self) -> list[str]:
        problems = super()._problems() + _resource_problems(self)
        if self.ssl_enabled:
            ssl = ("ssl_cert_pem_file", "ssl_key_pem_file", "ssl_cname")
            missing = [self._label(name) for name in ssl if not getattr(self, name)]
            if missing:
                problems.append(
                    "SSL is enabled, you must provide a SSL certificate, key, and cname (Azure ML v1's rule): "
                    f"set {', '.join(missing)}, or set sslEnabled to false"
                )
            for name in ssl[:2]:
                path = getattr(self, name)
                if path and not os.path.exists(path):
                    what = name.split("_")[1]
                    problems.append(f"unable to find the SSL {what} pem file {path} ({self._label(name)})")
        cmk = ("cmk_vault_base_url", "cmk_key_name", "cmk_key_version")
        if any(getattr(self, n) for n in cmk) and not all(getattr(self, n) for n in cmk):
            problems.append(
                "customer managed key vault_base_url, key_name and key_version must all have values or all be "
                f"empty: set or remove all of {', '.join(self._label(n) for n in cmk)}"
            )
        if bool(self.vnet_name) != bool(self.subnet_name):
            problems.append(
                f"{self._label('vnet_name')} and {self._label('subnet_name')} must both have values or both be empty"
            )
        return problems


class AutoscaleSettings(NamedTuple):
    """The autoscaler an AKS service gets, v1's defaults filled in."""

    min_replicas: int
    max_replicas: int
    refresh_seconds: int
    target_utilization: int


#: v1's autoscaler defaults (AksWebservice.deploy_configuration docs).
AUTOSCALE_DEFAULTS = AutoscaleSettings(min_replicas=1, max_replicas=10, refresh_seconds=1, target_utilization=70)
_AUTOSCALE_FIELDS = (
    "autoscale_min_replicas",
    "autoscale_max_replicas",
    "autoscale_refresh_seconds",
    "autoscale_target_utilization",
)


@dataclass
class AksDeploymentConfig(DeploymentConfig):
    """``AksWebservice.deploy_configuration(...)`` (any Kubernetes cluster).

    ``auth_enabled`` left at ``None`` means key auth unless token auth is on (v1 documented
    ``token_auth_enabled=True, auth_enabled=False``; edgepack turns key auth off for you).
    """

    compute_type: ClassVar[str] = "AKS"
    TOKEN_AUTH: ClassVar[bool] = True
    POSITIVE: ClassVar[tuple[str, ...]] = (
        *DeploymentConfig.POSITIVE,
        "cpu_cores",
        "memory_gb",
        "cpu_cores_limit",
        "memory_gb_limit",
        "num_replicas",
        "period_seconds",
        "initial_delay_seconds",
        "timeout_seconds",
        "success_threshold",
        "failure_threshold",
    )
    UNHONOURED: ClassVar[dict[str, str]] = {
        "enable_app_insights": _NO_APP_INSIGHTS,
        "collect_model_data": _NO_DATA_COLLECTION,
    }

    auth_enabled: bool | None = None  # type: ignore[assignment]  # resolved to a bool in __post_init__
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

    def __post_init__(self) -> None:
        if self.auth_enabled is None:
            self.auth_enabled = not self.token_auth_enabled

    @property
    def autoscale_on(self) -> bool:
        """Whether the service autoscales: ``autoscale_enabled``, or, left unset, no ``num_replicas`` (v1)."""
        return self.autoscale_enabled if self.autoscale_enabled is not None else self.num_replicas is None

    def autoscale_settings(self) -> AutoscaleSettings | None:
        """The autoscaler with v1's defaults filled in (``None`` with a fixed ``num_replicas``)."""
        if not self.autoscale_on:
            return None
        given = [getattr(self, name) for name in _AUTOSCALE_FIELDS]
        return AutoscaleSettings(*(g if g is not None else d for g, d in zip(given, AUTOSCALE_DEFAULTS, strict=True)))

    def _problems(self) -> list[str]:
        problems = super()._problems() + _resource_problems(self)
        if self.namespace and not is_valid_namespace(self.namespace):
            problems.append(
                f"{self._label('namespace')} {shown(self.namespace)} must be a valid Kubernetes namespace: up to 63 "
                "lowercase letters, digits and '-', starting and ending with a letter or digit "
                f"(regex {NAMESPACE_REGEX})"
            )
        enable = self._label("autoscale_enabled")
        if self.autoscale_enabled:
            if self.num_replicas:
                problems.append(
                    f"autoscale enabled and num_replicas provided: remove {self._label('num_replicas')} "
                    f"or set {enable} to false"
                )
            for name in _AUTOSCALE_FIELDS:
                value = getattr(self, name)
                if value is not None and value <= 0:
                    problems.append(f"{self._label(name)} must be greater than zero, not {value}")
            target = self.autoscale_target_utilization
            if target is not None and target > 100:
                problems.append(
                    f"{self._label('autoscale_target_utilization')} is a percentage: give 1 to 100, not {target}"
                )
            settings = self.autoscale_settings()
            if settings and 0 < settings.max_replicas < settings.min_replicas:
                default = " (the default)" if self.autoscale_max_replicas is None else ""
                problems.append(
                    f"{self._label('autoscale_min_replicas')} cannot be greater than "
                    f"{self._label('autoscale_max_replicas')}: {settings.min_replicas} > {settings.max_replicas}"
                    f"{default}; lower the minimum or raise the maximum"
                )
        else:
            if self.autoscale_enabled is False and not self.num_replicas:
                problems.append(
                    f"autoscale disabled but num_replicas not provided: set {self._label('num_replicas')}, "
                    f"or set {enable} to true"
                )
            for name in _AUTOSCALE_FIELDS:
                if getattr(self, name) is not None:
                    problems.append(
                        f"{self._label(name)} provided without enabling autoscaling: set {enable} to true, or remove it"
                    )
        for name in _INT32_FIELDS:  # Kubernetes stores these as int32: a cluster would refuse the objects
            value = getattr(self, name)
            if isinstance(value, int) and value > _INT32_MAX:
                problems.append(f"{self._label(name)} must be at most {_INT32_MAX} (a Kubernetes int32), not {value}")
        return problems


_INT32_MAX = 2**31 - 1
_INT32_FIELDS = (
    "num_replicas",
    "autoscale_min_replicas",
    "autoscale_max_replicas",
    "autoscale_refresh_seconds",
    "period_seconds",
    "initial_delay_seconds",
    "timeout_seconds",
    "success_threshold",
    "failure_threshold",
)


@dataclass
class AksEndpointDeploymentConfig(AksDeploymentConfig):
    """``AksEndpoint.deploy_configuration(...)`` (``computeType: AKSENDPOINT``): an AKS service's settings for
    one version of an endpoint, plus the version's name, traffic share and flags
    (:mod:`cloud_targets.endpoints`)."""

    compute_type: ClassVar[str] = "AKSENDPOINT"

    version_name: str | None = None
    traffic_percentile: float | None = None
    is_default: bool | None = None
    is_control_version_type: bool | None = None

    def _problems(self) -> list[str]:
        problems = super()._problems()
        tp = self.traffic_percentile
        if tp is not None and (isinstance(tp, bool) or not isinstance(tp, int | float) or not 0 <= tp <= 100):
            problems.append(f"{self._label('traffic_percentile')} is a percentage: give 0 to 100, not {tp!r}")
        if self.version_name is not None:
            from cloud_targets.config.rules import version_name_problem

            problem = version_name_problem(self.version_name)
            if problem:
                problems.append(f"{self._label('version_name')}: {problem}")
        return problems


#: computeType (upper case) -> configuration class.
CONFIG_CLASSES: dict[str, type[DeploymentConfig]] = {
    cls.compute_type: cls
    for cls in (LocalDeploymentConfig, AciDeploymentConfig, AksDeploymentConfig, AksEndpointDeploymentConfig)
}

__all__ = [
    "AUTOSCALE_DEFAULTS",
    "CONFIG_CLASSES",
    "SECRET_FIELDS",
    "AciDeploymentConfig",
    "AksDeploymentConfig",
    "AksEndpointDeploymentConfig",
    "AutoscaleSettings",
    "DeploymentConfig",
    "DeploymentConfigError",
    "LocalDeploymentConfig",
]
