"""What every remote target is handed: one service's image, settings and secrets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from cloud_targets.config.model import DeploymentConfig

CONTAINER_PORT = 5001  # the scoring module's port inside the image (packager.image.spec.PORT)


@dataclass
class RegistryCredentials:
    """Pull credentials for a private registry (image pull secret on Kubernetes, ACI's imageRegistryCredentials)."""

    server: str
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"RegistryCredentials(server={self.server!r}, username={self.username!r}, password='***')"


@dataclass
class ServiceSpec:
    """One web service as a target deploys it.

    ``env`` holds the scoring module's plain settings (``EDGEPACK_*`` variables: scoring timeout,
    concurrency, token auth on/off...), ``secrets`` the secret ones (``EDGEPACK_PRIMARY_KEY``,
    ``EDGEPACK_SECONDARY_KEY``, ``EDGEPACK_TOKEN_SECRET``): targets must put those in a Secret /
    secure environment variables, never in plain env, labels or logs.
    """

    name: str
    image: str  # a pullable reference, pinned by digest for remote targets
    config: DeploymentConfig
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    port: int = CONTAINER_PORT
    registry_credentials: RegistryCredentials | None = None
    labels: dict[str, str] = field(default_factory=dict)  # e.g. edgepack.service=<name>, model ids

    def __repr__(self) -> str:
        return (
            f"ServiceSpec(name={self.name!r}, image={self.image!r}, config={type(self.config).__name__}, "
            f"env={sorted(self.env)}, secrets={sorted(self.secrets)})"
        )


# -- the interface every target implements ---------------------------------------------------------------
HEALTHY, UNHEALTHY, TRANSITIONING, FAILED = "Healthy", "Unhealthy", "Transitioning", "Failed"
STATES = (TRANSITIONING, HEALTHY, UNHEALTHY, FAILED)


@dataclass
class Deployed:
    """What a target answers to :meth:`Target.deploy`: where the service listens and how to find it again.

    ``handle`` is persisted in the service record (``service.json``): container id, pid and start time,
    namespace, resource group... never a secret.
    """

    scoring_uri: str
    swagger_uri: str | None = None
    handle: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetStatus:
    """A service's state as its target sees it (one of :data:`STATES`) and, when not healthy, why."""

    state: str
    error: str | None = None


@runtime_checkable
class Target(Protocol):
    """A place services run (Local, ACI, Kubernetes). Webservice dispatches every lifecycle call here.

    ``deploy`` creates or replaces the service described by ``spec`` (same ``spec.name``: an update);
    the others take the ``handle`` :meth:`deploy` returned.
    """

    compute_type: ClassVar[str]

    def deploy(self, spec: ServiceSpec) -> Deployed: ...

    def state(self, handle: Mapping[str, Any]) -> TargetStatus: ...

    def logs(self, handle: Mapping[str, Any], num_lines: int = 5000) -> str: ...

    def delete(self, handle: Mapping[str, Any]) -> None: ...

    def update_secrets(self, spec: ServiceSpec, handle: Mapping[str, Any]) -> Deployed:
        """Apply new ``spec.secrets`` (rotated keys); returns the (possibly new) handle."""
        ...


def swagger_uri(scoring_uri: str) -> str:
    """The scoring module's swagger document next to its ``/score`` route."""
    return scoring_uri[: -len("/score")] + "/swagger.json" if scoring_uri.endswith("/score") else scoring_uri


def module_env(config: DeploymentConfig, token_auth: bool = False) -> dict[str, str]:
    """The scoring module's plain settings for ``config`` (scoring timeout, concurrency, token auth on)."""
    env: dict[str, str] = {}
    if config.scoring_timeout_ms is not None:
        env["SCORING_TIMEOUT_MS"] = str(config.scoring_timeout_ms)
    if config.replica_max_concurrent_requests is not None:
        env["EDGEPACK_MAX_CONCURRENT_REQUESTS"] = str(config.replica_max_concurrent_requests)
    if config.max_request_wait_time is not None:
        env["EDGEPACK_MAX_QUEUE_WAIT_MS"] = str(config.max_request_wait_time)
    if token_auth:
        env["EDGEPACK_TOKEN_AUTH"] = "true"
    return env


def secret_env(primary_key: str | None, secondary_key: str | None, token_secret: str | None) -> dict[str, str]:
    """The scoring module's secret settings (keys or token secret); put them in a Secret / secure env only."""
    env = {}
    if token_secret:
        env["EDGEPACK_TOKEN_SECRET"] = token_secret
    else:
        if primary_key:
            env["EDGEPACK_PRIMARY_KEY"] = primary_key
        if secondary_key:
            env["EDGEPACK_SECONDARY_KEY"] = secondary_key
    return env
