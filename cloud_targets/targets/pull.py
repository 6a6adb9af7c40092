"""Pull credentials for a remote service's image: the ones ``docker login`` stored for its registry.

The image builder pushes with the same credentials (:mod:`packager.image.auth`), so a cluster or ACI
group can pull what was pushed. They go to the target only (a ``kubernetes.io/dockerconfigjson`` Secret,
ACI's ``imageRegistryCredentials``); the service record never holds them: they are looked up again
whenever the service is deployed.
"""

from __future__ import annotations

import logging

from cloud_targets.targets.base import RegistryCredentials
from packager.image.auth import DOCKER_HUB_SERVER, credentials_from_docker_config
from packager.image.reference import DOCKER_HUB, ImageRef

log = logging.getLogger(__name__)


def pull_credentials(image: str) -> RegistryCredentials | None:
    """``docker login``'s username and password for ``image``'s registry, or None (a public registry, or one
    the cluster reaches by its own identity, e.g. an ACR attached to AKS)."""
    registry = ImageRef.parse(image).registry
    creds = credentials_from_docker_config(registry)
    if creds is None:
        return None
    if not (creds.username and creds.password) or creds.username == "<token>":
        log.warning(
            "the credentials stored for %s (%s) are a short-lived token, not a username and password: the service "
            "gets no pull secret; give the cluster its own pull access (e.g. `az aks update --attach-acr`), or "
            "`docker login %s` with a username and password (an ACR token or service principal)",
            registry,
            creds.source or "docker config",
            registry,
        )
        return None
    server = DOCKER_HUB_SERVER if registry == DOCKER_HUB else registry
    return RegistryCredentials(server=server, username=creds.username, password=creds.password)


__all__ = ["pull_credentials"]
