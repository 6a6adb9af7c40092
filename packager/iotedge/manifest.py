"""Generate IoT Edge deployment manifests: ``$edgeAgent``, ``$edgeHub`` and each module's twin.

E.g. ``build_manifest([scoring_module("127.0.0.1:5000/models/digits@sha256:...")], routes={...})``,
or ``manifests_from_build(builder.run(...))`` for one manifest per platform of a multi-arch build.
Manifests may hold registry passwords (the edge agent needs them): write them with :func:`write_manifest`
(0600 when they do) and never print them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.errors import InvalidInputError
from packager.fs import write_atomic
from packager.image.reference import ImageRef
from packager.image.spec import Platform
from packager.iotedge import create_options as co

log = logging.getLogger("edgepack.iotedge")

SCHEMA_VERSION = "1.1"
DEFAULT_RUNTIME_VERSION = "1.5"
DEFAULT_STORE_AND_FORWARD_TTL = 7200
MIN_DOCKER_VERSION = "v1.25"
AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent"
HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub"
SCORING_MODULE = "scoring"
SCORING_DESIRED_KEYS = ("model_version", "max_batch_size", "threshold", "drop_below_threshold")
"""What the scoring module reads from its twin (edge_module/transports/iotedge.py)."""

RESTART_POLICIES = ("never", "on-failure", "on-unhealthy", "always")
STATUSES = ("running", "stopped")
PULL_POLICIES = ("on-create", "never")
_MODULE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_HUB_PORTS = {"5671/tcp": 5671, "8883/tcp": 8883, "443/tcp": 443}


@dataclass
class ModuleSpec:
    """One custom module of ``$edgeAgent.modules`` and its twin's desired properties."""

    name: str
    image: str
    env: dict[str, str] = field(default_factory=dict)
    create_options: dict[str, Any] = field(default_factory=dict)
    restart_policy: str = "always"
    status: str = "running"
    startup_order: int | None = 1  # after edgeHub (0)
    image_pull_policy: str = "on-create"
    desired: dict[str, Any] = field(default_factory=dict)
    version: str = "1.0"

    def __post_init__(self) -> None:
        if not _MODULE_NAME_RE.fullmatch(self.name) or self.name in ("edgeAgent", "edgeHub"):
            raise InvalidInputError(
                f"module name {self.name!r}: letters, digits, '_' and '-' (at most 128), not edgeAgent/edgeHub"
            )
        ImageRef.parse(self.image)  # raises with a hint for a bad reference
        for label, value, allowed in (
            ("restart policy", self.restart_policy, RESTART_POLICIES),
            ("status", self.status, STATUSES),
            ("image pull policy", self.image_pull_policy, PULL_POLICIES),
        ):
            if value not in allowed:
                raise InvalidInputError(f"module {self.name}: {label} {value!r}: use one of {', '.join(allowed)}")
        if self.startup_order is not None and (not isinstance(self.startup_order, int) or self.startup_order < 0):
            raise InvalidInputError(f"module {self.name}: startup order {self.startup_order!r}: a whole number >= 0")

    def to_agent(self) -> dict[str, Any]:
        """The module's entry in ``$edgeAgent``'s ``modules``."""
        doc: dict[str, Any] = {
            "version": self.version,
            "type": "docker",
            "status": self.status,
            "restartPolicy": self.restart_policy,
        }
        if self.startup_order is not None:
            doc["startupOrder"] = self.startup_order
        doc["imagePullPolicy"] = self.image_pull_policy
        if self.env:
            doc["env"] = {k: {"value": str(v)} for k, v in self.env.items()}
        doc["settings"] = {"image": self.image, **co.to_settings(self.create_options)}
        return doc


def scoring_module(
    image: str,
    name: str = SCORING_MODULE,
    desired: Mapping[str, Any] | None = None,
    *,
    model_version: str | None = None,
    max_batch_size: int = 1,
    threshold: float | None = None,
    drop_below_threshold: bool = False,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> ModuleSpec:
    """An edgepack scoring module: ``EDGEPACK_IOTEDGE=true`` (the image does not set it) and its twin settings.

    ``desired`` adds to (and overrides) the twin properties the module reads (:data:`SCORING_DESIRED_KEYS`);
    other keys are reported back by the module as ignored."""
    twin: dict[str, Any] = {"max_batch_size": max_batch_size, "drop_below_threshold": drop_below_threshold}
    if threshold is not None:
        twin["threshold"] = threshold
    if model_version is not None:
        twin["model_version"] = str(model_version)
    twin.update(desired or {})
    return ModuleSpec(name, image, env={"EDGEPACK_IOTEDGE": "true", **(env or {})}, desired=twin, **kwargs)


# ----------------------------------------------------------------------------------------- credentials
def credentials_key(address: str) -> str:
    """A ``registryCredentials`` key for a registry address (no ``. $ #`` or spaces)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", address) or "registry"


def registry_credentials_for(images: Iterable[str], docker_config: Path | None = None) -> dict[str, tuple[str, str]]:
    """``{registry: (username, password)}`` that ``docker login`` stored for the registries of ``images``.

    Registries without credentials are left out (anonymous pulls); identity tokens (OAuth refresh tokens)
    are left out too, with a warning, as the edge agent needs a username and password."""
    from packager.image.auth import credentials_from_docker_config

    out: dict[str, tuple[str, str]] = {}
    for registry in sorted({ImageRef.parse(i).registry for i in images}):
        creds = credentials_from_docker_config(registry, docker_config)
        if creds is None:
            continue
        if creds.username and creds.password and creds.username != "<token>":
            out[registry] = (creds.username, creds.password)
        else:
            log.warning("registry %s: docker login stored a token, not a password: not put in the manifest", registry)
    return out


def _credentials_section(credentials: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    from packager.image.auth import Credentials

    section: dict[str, dict[str, str]] = {}
    for address, value in credentials.items():
        creds = Credentials.coerce(value)
        if creds is None:
            continue
        section[credentials_key(address)] = {"username": creds.username, "password": creds.password, "address": address}
    return section


# ----------------------------------------------------------------------------------------- manifests
def _routes(routes: Mapping[str, Any] | Sequence[str] | None, modules: Sequence[ModuleSpec]) -> dict[str, Any]:
    if routes is None:
        return {f"{m.name}ToUpstream": f"FROM /messages/modules/{m.name}/outputs/* INTO $upstream" for m in modules}
    if isinstance(routes, Mapping):
        out = dict(routes)
    else:
        out = {f"route{i + 1}" if len(routes) > 1 else "route": r for i, r in enumerate(routes)}
    for name, value in out.items():
        if isinstance(value, Mapping):
            extra = set(value) - {"route", "priority", "timeToLiveSecs"}
            if "route" not in value or extra:
                raise InvalidInputError(f"route {name!r}: give route and optionally priority, timeToLiveSecs")
            out[name] = dict(value)
        elif not isinstance(value, str):
            raise InvalidInputError(f"route {name!r}: a route is a string or {{route, priority, timeToLiveSecs}}")
    return out


def build_manifest(
    modules: Sequence[ModuleSpec],
    routes: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    runtime_version: str = DEFAULT_RUNTIME_VERSION,
    registry_credentials: Mapping[str, Any] | None = None,
    store_and_forward_ttl: int = DEFAULT_STORE_AND_FORWARD_TTL,
    min_docker_version: str = MIN_DOCKER_VERSION,
    logging_options: str | Mapping[str, Any] = "",
    agent_env: Mapping[str, str] | None = None,
    hub_env: Mapping[str, str] | None = None,
    hub_create_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete deployment manifest (``{"modulesContent": ...}``) for ``modules``.

    ``routes``: ``{name: "FROM ... INTO ..."}`` or ``{name: {"route", "priority", "timeToLiveSecs"}}``, a
    list of route strings, or ``None`` for each module's outputs to ``$upstream``.
    ``registry_credentials``: ``{address: (username, password)}`` (see :func:`registry_credentials_for`)."""
    names = [m.name for m in modules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError(f"module {duplicates[0]!r} is given twice: module names must be unique")
    if not isinstance(store_and_forward_ttl, int) or store_and_forward_ttl < 0:
        raise InvalidInputError(f"store-and-forward time to live {store_and_forward_ttl!r}: use whole seconds >= 0")
    logging_text = logging_options if isinstance(logging_options, str) else json.dumps(dict(logging_options))
    runtime_settings: dict[str, Any] = {"minDockerVersion": min_docker_version, "loggingOptions": logging_text}
    if registry_credentials:
        runtime_settings["registryCredentials"] = _credentials_section(registry_credentials)
    hub_options = co.merge(co.port_bindings(_HUB_PORTS), hub_create_options or {})
    system = {
        "edgeAgent": {
            "type": "docker",
            "settings": {"image": f"{AGENT_IMAGE}:{runtime_version}", **co.to_settings({})},
        },
        "edgeHub": {
            "type": "docker",
            "status": "running",
            "restartPolicy": "always",
            "startupOrder": 0,
            "settings": {"image": f"{HUB_IMAGE}:{runtime_version}", **co.to_settings(hub_options)},
        },
    }
    for key, env in (("edgeAgent", agent_env), ("edgeHub", hub_env)):
        if env:
            system[key]["env"] = {k: {"value": str(v)} for k, v in env.items()}
    content: dict[str, Any] = {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": SCHEMA_VERSION,
                "runtime": {"type": "docker", "settings": runtime_settings},
                "systemModules": system,
                "modules": {m.name: m.to_agent() for m in modules},
            }
        },
        "$edgeHub": {
            "properties.desired": {
                "schemaVersion": SCHEMA_VERSION,
                "routes": _routes(routes, modules),
                "storeAndForwardConfiguration": {"timeToLiveSecs": store_and_forward_ttl},
            }
        },
    }
    for m in modules:
        if m.desired:
            content[m.name] = {"properties.desired": json.loads(json.dumps(m.desired))}
    return {"modulesContent": content}


def has_credentials(doc: Mapping[str, Any]) -> bool:
    """True when the manifest holds registry passwords."""
    try:
        creds = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"]
    except (KeyError, TypeError):
        return False
    return bool(creds)


def write_manifest(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` atomically as indented JSON; 0600 when it holds registry passwords."""
    target = Path(path)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    write_atomic(target, data, 0o600 if has_credentials(doc) else None)
    return target


def pin_image(image: str, platform: str | Platform | None = None, credentials: Any = None) -> str:
    """``image`` pinned to the digest its tag points at in the registry (``repo@sha256:...``): the index's,
    or with ``platform`` that platform's image digest. An image given by digest is kept as it is."""
    from packager.errors import NotFoundError
    from packager.image.registry import RegistryClient

    ref = ImageRef.parse(image)
    if ref.digest and platform is None:
        return str(ref)
    with RegistryClient.for_ref(ref, credentials=credentials) as client:
        if platform is None:
            digest = client.head_manifest(ref)
        else:
            wanted = Platform.parse(platform) if isinstance(platform, str) else platform
            try:
                digest = client.resolve_platform(ref, wanted)[1]
            except NotFoundError as exc:
                raise NotFoundError(str(exc).replace("base image", "image", 1).split(": build for")[0]) from None
    if not digest:
        raise InvalidInputError(f"image {ref} is not in its registry: push it first (or give its digest)")
    return str(ImageRef(ref.registry, ref.repository, None, digest))


# ----------------------------------------------------------------------------------------- from a build
def platform_slug(platform: str | Platform) -> str:
    """``linux/amd64`` → ``amd64``, ``linux/arm64`` → ``arm64``, ``linux/arm/v7`` → ``armv7`` (file names)."""
    p = Platform.parse(platform) if isinstance(platform, str) else platform
    return f"{p.architecture}{p.variant}"


def _model_version(summary: Mapping[str, Any]) -> str | None:
    models = summary.get("models") or []
    if len(models) == 1 and isinstance(models[0], Mapping) and models[0].get("version") is not None:
        return str(models[0]["version"])
    return None


def manifests_from_build(
    summary: Mapping[str, Any],
    *,
    repository: str | None = None,
    name: str = SCORING_MODULE,
    per_platform: bool = True,
    platforms: Sequence[str] | None = None,
    extra_modules: Sequence[ModuleSpec] = (),
    module_options: Mapping[str, Any] | None = None,
    **manifest_kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """``{platform: manifest}`` for what ``builder.run`` (or ``edgepack build --json``) produced.

    The scoring module's image is pinned to each platform's manifest digest (``per_platform``; keys are
    ``amd64``, ``arm64``, ...), or to the index digest in one manifest (key ``"index"``). ``repository``
    (``registry/repo``) is needed when the summary has no pushed ``reference`` (an OCI layout build).
    ``module_options`` go to :func:`scoring_module` (``desired``, ``create_options``, ``threshold``, ...);
    ``manifest_kwargs`` to :func:`build_manifest`."""
    reference = repository or summary.get("reference")
    if not reference:
        raise InvalidInputError("the build was not pushed: give the repository the images are in (registry/repo)")
    base = ImageRef.parse(str(reference))
    options = dict(module_options or {})
    options.setdefault("model_version", _model_version(summary))
    found = summary.get("platforms") or {}
    if not isinstance(found, Mapping) or not found:
        raise InvalidInputError("the build summary has no platforms: pass what builder.run (or --json) returned")
    wanted = list(found) if not platforms else [str(Platform.parse(p)) for p in platforms]
    missing = [p for p in wanted if p not in found]
    if missing:
        raise InvalidInputError(f"platform {missing[0]} was not built (built: {', '.join(found)})")
    targets: dict[str, str] = {}
    if per_platform:
        for platform in wanted:
            targets[platform_slug(platform)] = found[platform]["digest"]
    else:
        if not summary.get("index_digest"):
            raise InvalidInputError("the build summary has no index_digest")
        targets["index"] = summary["index_digest"]
    out = {}
    for key, digest in targets.items():
        image = str(ImageRef(base.registry, base.repository, None, digest))
        module = scoring_module(image, name=name, **options)
        out[key] = build_manifest([module, *extra_modules], **manifest_kwargs)
    return out


def manifest_file_names(keys: Iterable[str], stem: str = "deployment") -> dict[str, str]:
    """``deployment.amd64.json`` per platform key; ``deployment.json`` for one not for a platform (the index)."""
    return {k: f"{stem}.json" if k in ("index", "manifest", "template") else f"{stem}.{k}.json" for k in keys}


__all__ = [
    "DEFAULT_RUNTIME_VERSION",
    "SCORING_DESIRED_KEYS",
    "ModuleSpec",
    "build_manifest",
    "credentials_key",
    "has_credentials",
    "manifest_file_names",
    "manifests_from_build",
    "pin_image",
    "platform_slug",
    "registry_credentials_for",
    "scoring_module",
    "write_manifest",
]
