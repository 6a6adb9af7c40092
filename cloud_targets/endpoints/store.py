"""Endpoint state kept in the workspace, as services keep theirs (:class:`cloud_targets.services.store.RecordStore`).

Layout::

    <workspace>/endpoints/                     0700
    <workspace>/endpoints/<name>/              0700, never a symbolic link
    <workspace>/endpoints/<name>/endpoint.json the record (versions, split, handle; no secrets), atomic
    <workspace>/endpoints/<name>/secrets.json  the endpoint's keys / token secret, 0600
    <workspace>/endpoints/<name>/.lock         flock held around every read-modify-write
    <workspace>/endpoints/<name>/routes.json   the router's routes file (no secrets)
    <workspace>/endpoints/<name>/logs/         router.log (0600)
    <workspace>/endpoints/<name>/versions/<v>/ each version's local service folder (content, logs)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from cloud_targets.config.rules import validate_service_name
from cloud_targets.services.store import RecordStore, ServiceSecrets, now_iso

ENDPOINTS_DIR = "endpoints"
RECORD_FILE = "endpoint.json"


@dataclass
class VersionRecord:
    """One version as the endpoint record keeps it (no secrets)."""

    name: str
    traffic: float = 0.0
    default: bool = False
    control: bool = False
    models: list[str] = field(default_factory=list)  # NAME:VERSION ids
    inference_config: dict[str, Any] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)  # entry script / source dir / conda file / base image
    deployment_config: dict[str, Any] = field(default_factory=dict)  # serialize_config (no keys)
    image: str | None = None
    image_digest: str | None = None
    description: str | None = None
    created_time: str = field(default_factory=now_iso)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> VersionRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass
class EndpointRecord:
    """What ``endpoint.json`` holds: the endpoint's settings, its versions in order, and the target's handle."""

    name: str
    compute_type: str = "LOCAL"
    auth: str = "key"  # key | token | none
    versions: list[VersionRecord] = field(default_factory=list)
    revision: int = 0
    port: int | None = None
    mode: str | None = None  # local: process | docker
    deployment_target: dict[str, Any] = field(default_factory=dict)  # KubernetesCompute.handle() for AKS
    scoring_uri: str | None = None
    swagger_uri: str | None = None
    state: str = "Transitioning"
    error: str | None = None
    target: dict[str, Any] = field(default_factory=dict)  # EndpointDeployed.handle
    version_uris: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    created_time: str = field(default_factory=now_iso)
    updated_time: str = field(default_factory=now_iso)

    def version(self, name: str) -> VersionRecord | None:
        return next((v for v in self.versions if v.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> EndpointRecord:
        known = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in doc.items() if k in known and k != "versions"})
        out.versions = [VersionRecord.from_dict(v) for v in doc.get("versions") or []]
        return out


class EndpointStore(RecordStore):
    """The endpoints of one workspace."""

    DIR: ClassVar[str] = ENDPOINTS_DIR
    RECORD_FILE: ClassVar[str] = RECORD_FILE
    KIND: ClassVar[str] = "endpoint"
    LIST_COMMAND: ClassVar[str] = "edgepack endpoint list"
    record_cls: ClassVar[Any] = EndpointRecord

    def check_name(self, name: str) -> str:
        return validate_service_name(name)  # v1: an endpoint name follows the web service name rule

    def endpoint_dir(self, name: str) -> Any:
        return self.record_dir(name)

    def read(self, name: str) -> EndpointRecord:
        return super().read(name)

    def list(self) -> list[EndpointRecord]:
        return super().list()


__all__ = ["EndpointRecord", "EndpointStore", "ServiceSecrets", "VersionRecord"]
