"""What every remote target is handed: one service's image, settings and secrets."""

from __future__ import annotations

from dataclasses import dataclass, field

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
