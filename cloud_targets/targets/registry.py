"""Which :class:`~cloud_targets.targets.base.Target` serves a compute type (ACI, AKS...).

Remote targets register a factory here (``register_target("AKS", factory)``); the factory gets the
deployment configuration and v1's ``deployment_target`` (e.g. a kube context or a compute object) and
returns a Target. Local is built in (:class:`cloud_targets.targets.local.LocalTarget`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloud_targets.config.model import DeploymentConfig
from cloud_targets.targets.base import Target
from packager.errors import EdgepackError

TargetFactory = Callable[[DeploymentConfig, Any], Target]
_FACTORIES: dict[str, TargetFactory] = {}


def register_target(compute_type: str, factory: TargetFactory) -> None:
    """Make ``factory`` the target of ``compute_type`` (``ACI``, ``AKS``, ``AKSENDPOINT``)."""
    _FACTORIES[compute_type.upper()] = factory


def remote_target(compute_type: str, config: DeploymentConfig, deployment_target: Any = None) -> Target:
    """The registered target for ``compute_type``; a clear error when none is installed."""
    factory = _FACTORIES.get(compute_type.upper())
    if factory is None:
        raise EdgepackError(
            f"no {compute_type} target is available in this installation; "
            "deploy with LocalWebservice.deploy_configuration() or install edgepack[cloud]"
        )
    return factory(config, deployment_target)


__all__ = ["TargetFactory", "register_target", "remote_target"]
