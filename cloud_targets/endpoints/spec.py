"""What a target is handed to deploy an endpoint: its versions (each a :class:`ServiceSpec`) and the split."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud_targets.targets.base import ServiceSpec
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
