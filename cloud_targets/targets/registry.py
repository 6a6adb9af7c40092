"""Which :class:`~cloud_targets.targets.base.Target` serves a compute type (ACI, AKS...).

Remote targets register a factory here (``register_target("AKS", factory)``); the factory gets the
deployment configuration and v1's ``deployment_target`` (a :class:`~cloud_targets.targets.compute.KubernetesCompute`
or :class:`~cloud_targets.targets.compute.AciCompute`, a kube context name, or the handle a service record
keeps) and returns a Target. Local is built in (:class:`cloud_targets.targets.local.LocalTarget`); AKS
(and AKSENDPOINT) and ACI are registered here, their SDKs imported only when a target is made.
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


def _aks(config: DeploymentConfig, deployment_target: Any) -> Target:
    try:
        from cloud_targets.targets.kubernetes.service import aks_target
    except ImportError as exc:
        raise EdgepackError(
            f"the AKS target needs the kubernetes client ({exc}): pip install 'edgepack[cloud]'"
        ) from exc
    return aks_target(config, deployment_target)


def _aci(config: DeploymentConfig, deployment_target: Any) -> Target:
    from cloud_targets.targets.aci.service import aci_target

    return aci_target(config, deployment_target)


register_target("AKS", _aks)
register_target("AKSENDPOINT", _aks)
register_target("ACI", _aci)

__all__ = ["TargetFactory", "register_target", "remote_target"]
