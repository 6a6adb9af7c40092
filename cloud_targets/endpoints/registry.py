"""Which :class:`~cloud_targets.endpoints.spec.EndpointTarget` runs endpoints of a compute type.

Local is built in (:class:`cloud_targets.endpoints.local.LocalEndpointTarget`). Other targets register a
factory: ``register_endpoint_target("AKS", factory)``; the factory gets the workspace, the endpoint's
state folder and v1's ``deployment_target`` (a :class:`~cloud_targets.targets.compute.KubernetesCompute`,
or the plain dict the endpoint record keeps from :meth:`KubernetesCompute.handle`) and returns a target.
A target that builds for a registry exposes ``compute`` (where :func:`image_registry_of` finds the
registry); one that builds locally exposes ``prepare(version, models, inference_config)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud_targets.endpoints.spec import EndpointTarget
from packager.errors import EdgepackError
from packager.workspace import Workspace

EndpointTargetFactory = Callable[[Workspace, Path, Any], EndpointTarget]
_FACTORIES: dict[str, EndpointTargetFactory] = {}


def register_endpoint_target(compute_type: str, factory: EndpointTargetFactory) -> None:
    """Make ``factory`` the endpoint target of ``compute_type`` (``AKS``)."""
    _FACTORIES[compute_type.upper()] = factory


def endpoint_target(compute_type: str, workspace: Workspace, endpoint_dir: Path, deployment_target: Any) -> Any:
    """The registered endpoint target for ``compute_type``; a clear error when none is installed."""
    factory = _FACTORIES.get(compute_type.upper())
    if factory is None:
        _load_builtin(compute_type.upper())
        factory = _FACTORIES.get(compute_type.upper())
    if factory is None:
        raise EdgepackError(
            f"no {compute_type} endpoint target is available in this installation: create the endpoint with "
            "compute_type='LOCAL', or install edgepack[cloud] for Kubernetes endpoints"
        )
    return factory(workspace, endpoint_dir, deployment_target)


def _load_builtin(compute_type: str) -> None:
    """Kubernetes endpoints register themselves when their module is importable (kubernetes client present)."""
    if compute_type == "AKS":
        with contextlib.suppress(ImportError):
            import cloud_targets.targets.kubernetes.endpoint  # noqa: F401  (registers "AKS")


def registered() -> list[str]:
    return sorted(_FACTORIES)


__all__ = ["EndpointTargetFactory", "endpoint_target", "register_endpoint_target", "registered"]
