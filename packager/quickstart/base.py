"""Finding the quickstart's base image, offline first.

Lookup order: ``--base``, ``$EDGEPACK_BASE_IMAGE``, the OCI layout ``scripts/dev-services.sh base-images``
saves once (``${EDGEPACK_CACHE:-/var/cache/edgepack}/base-oci``), then the dev registry's base
(``127.0.0.1:5000/library/python:3.11-slim``) when it answers. With none, :class:`NoBaseError` says
how to get one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from packager.errors import EdgepackError, NotFoundError
from packager.image.builder import DEFAULT_PLATFORMS
from packager.image.local_base import OciLayoutBase, is_layout_ref
from packager.image.reference import ImageRef, registry_host
from packager.image.spec import Platform
from packager.quickstart.services import reachable

ENV_BASE = "EDGEPACK_BASE_IMAGE"
BASE_TAG = "3.11-slim"
DEV_REGISTRY_BASE = f"127.0.0.1:5000/library/python:{BASE_TAG}"
HOW_TO_GET_ONE = (
    "no base image found: run `bash scripts/dev-services.sh start base-images` once as root (it saves an "
    "amd64+arm64 base as an OCI layout in /var/cache/edgepack/base-oci), or pass --base oci:DIR[:TAG] "
    "(e.g. from `skopeo copy --all docker://python:3.11-slim oci:DIR:3.11-slim`) "
    "or --base REGISTRY/REPO:TAG, or set EDGEPACK_BASE_IMAGE"
)


class NoBaseError(NotFoundError):
    """No base image could be found."""


@dataclass(frozen=True)
class BaseChoice:
    """The base image to build on, where it came from (``--base``, ``env``, ``cache``, ``dev registry``) and its
    platforms."""

    ref: str
    source: str
    platforms: tuple[str, ...]

    @property
    def offline(self) -> bool:
        return is_layout_ref(self.ref)


def cached_layout() -> Path:
    """Where ``dev-services.sh base-images`` saves the base as an OCI layout."""
    return Path(os.environ.get("EDGEPACK_CACHE") or "/var/cache/edgepack") / "base-oci"


def base_platforms(ref: str, timeout: float = 5.0) -> tuple[str, ...]:
    """The platforms ``ref`` (``oci:DIR[:TAG]`` or a registry image) offers; raises when it cannot be read."""
    if is_layout_ref(ref):
        return tuple(OciLayoutBase.parse(ref).platforms())
    from packager.image.registry import RegistryClient

    image = ImageRef.parse(ref)
    with RegistryClient.for_ref(image, timeout=(timeout, timeout), retries=0) as client:
        return tuple(client.platforms(image))


def _registry_up(ref: str) -> bool:
    host = registry_host(ImageRef.parse(ref).registry)
    port = ImageRef.parse(ref).registry.rpartition(":")[2]
    return reachable(host, int(port) if port.isdigit() else 443)


def find_base(explicit: str | None = None) -> BaseChoice:
    """The first base image of the lookup order that can be read (see the module doc)."""
    env = os.environ.get(ENV_BASE)
    for ref, source in ((explicit, "--base"), (env, ENV_BASE)):
        if ref:
            return BaseChoice(ref, source, base_platforms(ref))  # given: its errors are the user's to see
    layout = cached_layout()
    if (layout / "oci-layout").is_file():
        ref = f"oci:{layout}:{BASE_TAG}"
        try:
            return BaseChoice(ref, "cache", base_platforms(ref))
        except EdgepackError:
            pass  # a damaged or foreign layout: try the registry
    if _registry_up(DEV_REGISTRY_BASE):
        try:
            return BaseChoice(DEV_REGISTRY_BASE, "dev registry", base_platforms(DEV_REGISTRY_BASE))
        except EdgepackError:
            pass
    raise NoBaseError(HOW_TO_GET_ONE)


def choose_platforms(base: BaseChoice, wanted: list[Platform] | None) -> list[Platform]:
    """``wanted`` as given, else linux/amd64 and linux/arm64 where the base has them."""
    if wanted:
        return wanted
    have = {Platform.parse(p) for p in base.platforms if p.count("/") in (1, 2)}
    chosen = [p for p in DEFAULT_PLATFORMS if p in have]
    if not chosen:
        raise NotFoundError(
            f"base image {base.ref} has none of {', '.join(map(str, DEFAULT_PLATFORMS))} (it has "
            f"{', '.join(base.platforms) or 'none'}): pass --platforms or another --base"
        )
    return chosen
