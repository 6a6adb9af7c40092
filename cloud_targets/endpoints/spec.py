"""What a target is handed to deploy an endpoint: its versions (each a :class:`ServiceSpec`) and the split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from cloud_targets.targets.base import ServiceSpec, TargetStatus
from edge_module.router.routes import RouteTable, VersionRoute


@dataclass
class VersionSpec:
    """One version of an endpoint: the service it runs and its traffic share (percent) and flags."""

    name: str
    service: ServiceSpec  # service.name is the version's own service name (e.g. "<endpoint>-<version>")
    traffic: float = 0.0
    default: bool = False
    control: bool = False


@dataclass
class EndpointSpec:
    """An endpoint: a name, its auth mode (``key``, ``token`` or ``none``), its versions, a routes revision.

    ``secrets`` are the endpoint's own (``EDGEPACK_PRIMARY_KEY``...; the router checks them); targets keep
    them out of plain env, labels and logs as for services.
    """

    name: str
    versions: list[VersionSpec] = field(default_factory=list)
    auth_mode: str = "key"
    secrets: dict[str, str] = field(default_factory=dict)
    revision: int = 0

    def routes(self, urls: dict[str, str]) -> RouteTable:
        """The router's table for this endpoint, given each version's base URL by version name."""
        versions = tuple(
            VersionRoute(v.name, urls[v.name], float(v.traffic), v.default, v.control) for v in self.versions
        )
        return RouteTable(self.name, versions, self.revision).validate()

    def __repr__(self) -> str:
        return (
            f"EndpointSpec(name={self.name!r}, auth_mode={self.auth_mode!r}, "
            f"versions={[(v.name, v.traffic) for v in self.versions]}, secrets={sorted(self.secrets)})"
        )


@dataclass
class EndpointDeployed:
    """What :meth:`EndpointTarget.apply` answers: the endpoint's URI, each version's, and a handle to persist.

    ``handle`` goes into the endpoint's record (never a secret): per version what it needs to find, compare
    (image, settings hash) and remove it again; the router's pid/port or the Kubernetes namespace and names.
    """

    scoring_uri: str
    handle: dict[str, Any] = field(default_factory=dict)
    version_uris: dict[str, str] = field(default_factory=dict)
    swagger_uri: str | None = None


@runtime_checkable
class EndpointTarget(Protocol):
    """A place endpoints run (Local, Kubernetes). The endpoint layer builds each version's image and calls this.

    ``apply`` makes the running endpoint match ``spec`` without dropping a request: versions that are new
    or changed (image or settings differ from ``previous``) are started and waited for until ready, then
    the split is switched (routes file / HTTPRoute), then versions no longer in ``spec`` are drained (no
    request in flight) and removed. Traffic-only changes touch no version.
    """

    compute_type: ClassVar[str]

    def apply(self, spec: EndpointSpec, previous: Mapping[str, Any] | None = None) -> EndpointDeployed: ...

    def state(self, handle: Mapping[str, Any]) -> dict[str, TargetStatus]: ...

    def logs(self, handle: Mapping[str, Any], version: str, num_lines: int = 5000) -> str: ...

    def delete(self, handle: Mapping[str, Any]) -> None: ...
