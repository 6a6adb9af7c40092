"""Image references (``python:3.11-slim``, ``127.0.0.1:5000/library/python@sha256:...``), parsed as docker does.

A reference is ``[registry/]repository[:tag][@digest]``. The first path component is a registry
when it has a ``.`` or a ``:`` or is ``localhost``; otherwise the image is on Docker Hub, whose
API host is ``registry-1.docker.io`` and whose one-component names live under ``library/``.
Plain-HTTP ("insecure") registries: loopback hosts and those in ``$EDGEPACK_INSECURE_REGISTRIES``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, replace

from packager.errors import InvalidInputError

DOCKER_HUB = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
INSECURE_ENV = "EDGEPACK_INSECURE_REGISTRIES"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")
_HOST_RE = re.compile(
    r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)


def _hint(text: str) -> str:
    example = "python:3.11-slim or 127.0.0.1:5000/library/python:3.11-slim"
    return f"use NAME[:TAG][@sha256:DIGEST], e.g. {example} (got {text!r})"


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is ``algorithm:hex`` (sha256 must be 64 lowercase hex), else raise."""
    if not _DIGEST_RE.fullmatch(digest) or (digest.startswith("sha256:") and not _SHA256_RE.fullmatch(digest)):
        raise InvalidInputError(f"{digest!r} is not a digest: expected sha256: and 64 lowercase hex digits")
    return digest


def normalize_registry(host: str) -> str:
    """The API host for a registry name: Docker Hub's aliases become ``registry-1.docker.io``."""
    host = host.strip()
    return DOCKER_HUB if host.lower() in DOCKER_HUB_ALIASES else host


def insecure_registries() -> set[str]:
    """Hosts (``host[:port]``) listed in ``$EDGEPACK_INSECURE_REGISTRIES``, comma separated."""
    raw = os.environ.get(INSECURE_ENV, "")
    return {normalize_registry(h) for h in raw.split(",") if h.strip()}


def registry_host(registry: str) -> str:
    """``registry`` without its port: ``127.0.0.1:5000`` → ``127.0.0.1``, ``[::1]:5000`` → ``[::1]``."""
    if registry.startswith("["):
        return registry[: registry.find("]") + 1] if "]" in registry else registry
    return registry.rsplit(":", 1)[0]


def is_loopback(registry: str) -> bool:
    """True when ``registry`` (``host[:port]``) is this machine: ``localhost`` or a loopback IP address.

    Decided by parsing, never by prefix: ``127.0.0.1.nip.io`` or ``localhost.example.com`` are remote names.
    """
    host = registry_host(registry.strip()).strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_insecure(registry: str) -> bool:
    """True when ``registry`` is spoken to over plain HTTP: loopback, or listed in the env variable."""
    if is_loopback(registry):
        return True
    host = registry_host(registry)
    listed = insecure_registries()
    return registry in listed or host in listed


@dataclass(frozen=True)
class ImageRef:
    """A parsed reference: ``registry`` (API host), ``repository``, ``tag`` and/or ``digest``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse ``[registry/]repository[:tag][@digest]``; no tag and no digest means ``:latest``."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"empty image reference: {_hint(str(text))}")
        raw = text.strip()
        if any(c.isspace() for c in raw) or "://" in raw:
            raise InvalidInputError(f"invalid image reference: {_hint(raw)}")
        name, at, digest = raw.partition("@")
        if at:
            if not digest:
                raise InvalidInputError(f"image reference ends with '@' but has no digest: {_hint(raw)}")
            validate_digest(digest)
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
            if not _TAG_RE.fullmatch(tag):
                raise InvalidInputError(
                    f"invalid tag {tag!r} in image reference {raw!r}: "
                    "tags are letters, digits, '_', '.', '-' (max 128, not starting with '.' or '-')"
                )
        first, sep, rest = name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            if not _HOST_RE.fullmatch(first):
                raise InvalidInputError(f"invalid registry host {first!r} in image reference: {_hint(raw)}")
            registry, repository = normalize_registry(first), rest
        else:
            registry, repository = DOCKER_HUB, name
        if not repository:
            raise InvalidInputError(f"image reference {raw!r} has no repository name: {_hint(raw)}")
        if not _REPOSITORY_RE.fullmatch(repository):
            raise InvalidInputError(
                f"invalid repository name {repository!r} in image reference {raw!r}: repository names are "
                "lowercase letters, digits and separators ('.', '_', '__', '-') in '/'-separated components"
            )
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        if len(repository) > 255:
            raise InvalidInputError(f"repository name in {raw!r} is longer than 255 characters")
        if tag is None and not at:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest or None)

    # ------------------------------------------------------------------ views
    @property
    def reference(self) -> str:
        """What goes in ``/v2/<repo>/manifests/<reference>``: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        """``registry/repository`` as users write it (``docker.io/library/python``)."""
        host = "docker.io" if self.registry == DOCKER_HUB else self.registry
        return f"{host}/{self.repository}"

    @property
    def insecure(self) -> bool:
        return is_insecure(self.registry)

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    @property
    def base_url(self) -> str:
        """``scheme://registry`` (the API lives under ``/v2/``)."""
        return f"{self.scheme}://{self.registry}"

    def familiar(self) -> str:
        """The short form docker prints: ``python:3.11-slim`` for Docker Hub's library images."""
        text = str(self)
        if self.registry == DOCKER_HUB:
            text = text.removeprefix("docker.io/").removeprefix("library/")
        return text

    def with_digest(self, digest: str) -> ImageRef:
        """The same name (and tag) pinned to ``digest``."""
        return replace(self, digest=validate_digest(digest))

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository at ``tag``, without a digest (what a push writes)."""
        if not _TAG_RE.fullmatch(tag):
            raise InvalidInputError(f"invalid tag {tag!r}: letters, digits, '_', '.', '-' (max 128)")
        return replace(self, tag=tag, digest=None)

    def in_repository(self, repository: str, tag: str = DEFAULT_TAG) -> ImageRef:
        """A reference to another repository of the same registry, at ``tag``."""
        if not _REPOSITORY_RE.fullmatch(repository):
            raise InvalidInputError(f"invalid repository name {repository!r}: lowercase letters, digits, '.', '_', '-'")
        return ImageRef(self.registry, repository, tag, None)

    def same_registry(self, other: ImageRef) -> bool:
        return self.registry == other.registry

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
