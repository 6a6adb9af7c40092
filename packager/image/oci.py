"""OCI documents: image config, image manifest and image index, as canonical JSON bytes.

Our manifests and indexes are OCI (``application/vnd.oci.*``). A Docker v2 base is accepted: its
layer descriptors are rewritten to the OCI media types for the same bytes (a Docker
``rootfs.diff.tar.gzip`` blob *is* an OCI ``layer.v1.tar+gzip`` blob, digest unchanged), so a
manifest never mixes the two families.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.fs import write_atomic
from packager.image.spec import APP_ROOT, ENTRYPOINT, Layer, Platform

if TYPE_CHECKING:
    from packager.image.reference import ImageRef

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
#: Docker layer media type → the OCI one for the same bytes.
LAYER_TO_OCI = {
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER: OCI_LAYER,
    DOCKER_FOREIGN_LAYER: OCI_LAYER_NONDIST_GZIP,
}
CREATED = "1970-01-01T00:00:00Z"


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same document always gives the same bytes (and digest)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_bytes(data), "size": len(data), **extra}


def oci_layer_descriptor(desc: Mapping[str, Any]) -> dict[str, Any]:
    """A base layer descriptor with its media type in the OCI family (digest, size, urls, annotations kept)."""
    out = dict(desc)
    out["mediaType"] = LAYER_TO_OCI.get(desc.get("mediaType", ""), desc.get("mediaType", OCI_LAYER_GZIP))
    return out


def layer_descriptor(layer: Layer) -> dict[str, Any]:
    desc: dict[str, Any] = {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
    if layer.annotations:
        desc["annotations"] = dict(layer.annotations)
    return desc


def _merge_env(base: Sequence[str], ours: Mapping[str, str]) -> list[str]:
    out, seen = [], set()
    for item in base:
        name = item.split("=", 1)[0]
        seen.add(name)
        if name in ours and name != "PATH":
            out.append(f"{name}={ours[name]}")
        else:
            out.append(item)
    out += [f"{k}={v}" for k, v in sorted(ours.items()) if k not in seen]
    return out


def image_config(
    base_config: Mapping[str, Any] | bytes | str,
    layers: Sequence[Layer],
    env: Mapping[str, str],
    entrypoint: Sequence[str] = tuple(ENTRYPOINT),
    cmd: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    exposed_port: int | None = None,
    created: str = CREATED,
    platform: Platform | None = None,
) -> bytes:
    """The image config: the base's plus our layers' diff_ids and history, env, entrypoint, port and labels.

    Our env overrides the base's same-name variables except ``PATH``; ``Cmd`` is dropped unless
    given (the base's ``Cmd`` would become arguments of our entrypoint); the working directory is
    :data:`APP_ROOT`.
    """
    if isinstance(base_config, bytes | str):
        base_config = json.loads(base_config)
    cfg: dict[str, Any] = copy.deepcopy(dict(base_config))
    if platform is not None:
        cfg["os"], cfg["architecture"] = platform.os, platform.architecture
        if platform.variant:
            cfg["variant"] = platform.variant
    cfg["created"] = created
    c = cfg.get("config") or {}
    cfg["config"] = c
    c["Env"] = _merge_env(c.get("Env") or [], env)
    c["Entrypoint"] = list(entrypoint)
    if cmd is None:
        c.pop("Cmd", None)
    else:
        c["Cmd"] = list(cmd)
    c["WorkingDir"] = APP_ROOT
    if exposed_port is not None:
        c["ExposedPorts"] = {**(c.get("ExposedPorts") or {}), f"{exposed_port}/tcp": {}}
    if labels:
        c["Labels"] = {**(c.get("Labels") or {}), **labels}
    rootfs = cfg.get("rootfs") or {"type": "layers", "diff_ids": []}
    base_ids = list(rootfs.get("diff_ids") or [])
    cfg["rootfs"] = {"type": "layers", "diff_ids": base_ids + [la.diff_id for la in layers]}
    history = list(cfg.get("history") or [])
    missing = len(base_ids) - sum(1 for h in history if not h.get("empty_layer"))
    history += [{"created": created, "created_by": "base layer"}] * max(0, missing)
    for la in layers:
        entry = {"created": created, "created_by": f"edgepack: {la.name} layer"}
        if la.comment:
            entry["comment"] = la.comment
        history.append(entry)
    cfg["history"] = history
    return canonical_json(cfg)


def image_manifest(
    config_bytes: bytes,
    base_layers: Sequence[Mapping[str, Any]],
    layers: Sequence[Layer],
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """An OCI image manifest: the base's layers (OCI media types) then ours."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config_bytes),
        "layers": [oci_layer_descriptor(d) for d in base_layers] + [layer_descriptor(la) for la in layers],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


def image_index(manifests: Sequence[tuple[str, int, Platform]], annotations: Mapping[str, str] | None = None) -> bytes:
    """An OCI image index over ``(manifest digest, size, platform)`` entries, in the order given."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": size, "platform": p.as_oci()} for d, size, p in manifests
        ],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


def _write_blob(directory: Path, digest: str, data: bytes) -> Path:
    path = Path(directory) / digest.split(":", 1)[1]
    if not (path.is_file() and path.stat().st_size == len(data)):
        write_atomic(path, data)
    return path


@dataclass(frozen=True)
class BlobSpec:
    """A blob an image references and where its bytes are: a local file, in memory, or a ``source`` repository.

    ``source`` is a repository of the target registry (``str``) or an image (:class:`ImageRef`, any
    registry) that holds the blob; ``label`` names it in progress output.
    """

    digest: str
    size: int
    path: Path | None = None
    data: bytes | None = None
    source: str | ImageRef | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.path is not None and self.data is not None:
            raise ValueError(f"blob {self.digest}: give its bytes either as a file or in memory, not both")
        if self.data is not None and len(self.data) != self.size:
            raise ValueError(f"blob {self.digest}: {len(self.data)} bytes in memory, size says {self.size}")

    @property
    def task(self) -> str:
        """The progress task name: ``push <label>`` or ``push <short digest>``."""
        return f"push {self.label}" if self.label else f"push {self.digest.partition(':')[2][:12]}"


@dataclass
class PlatformImage:
    """One platform's image: manifest and config bytes, the base's layer descriptors and our layers."""

    platform: Platform
    manifest: bytes
    manifest_digest: str
    config: bytes
    config_digest: str
    base_layers: list[dict[str, Any]]
    layers: list[Layer]
    base_repo: str = ""
    base_manifest_digest: str = ""
    config_path: Path | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def assemble(
        cls,
        platform: Platform,
        config_bytes: bytes,
        base_layers: Sequence[Mapping[str, Any]],
        layers: Sequence[Layer],
        annotations: Mapping[str, str] | None = None,
        base_repo: object = "",
        base_manifest_digest: str = "",
        cache: Path | None = None,
    ) -> PlatformImage:
        """Build the manifest for ``config_bytes`` + layers; with ``cache``, also keep the config as a file there."""
        base = [oci_layer_descriptor(d) for d in base_layers]
        manifest = image_manifest(config_bytes, base, layers, annotations)
        config_digest = digest_bytes(config_bytes)
        config_path = _write_blob(Path(cache) / "layers" / "sha256", config_digest, config_bytes) if cache else None
        return cls(
            platform=platform,
            manifest=manifest,
            manifest_digest=digest_bytes(manifest),
            config=config_bytes,
            config_digest=config_digest,
            base_layers=base,
            layers=list(layers),
            base_repo=str(base_repo or ""),
            base_manifest_digest=base_manifest_digest,
            config_path=config_path,
            annotations=dict(annotations or {}),
        )

    @property
    def manifest_media_type(self) -> str:
        return OCI_MANIFEST

    def layer_descriptors(self) -> list[dict[str, Any]]:
        """Every layer, base first, as in the manifest."""
        return json.loads(self.manifest)["layers"]

    def blobs(self, base_source: str | ImageRef | None = None) -> list[BlobSpec]:
        """Every blob the manifest references: the config (in memory), base layers, ours (local files).

        Base layers have no local bytes here: ``base_source`` says where they are (the registry
        client's cache may have them too).
        """
        out = [BlobSpec(self.config_digest, len(self.config), data=self.config, label=f"config {self.platform}")]
        out += [BlobSpec(d["digest"], int(d["size"]), source=base_source, label="base layer") for d in self.base_layers]
        out += [BlobSpec(la.digest, la.size, la.path, label=f"{la.name} layer {self.platform}") for la in self.layers]
        return out
