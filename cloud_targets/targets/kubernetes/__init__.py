"""The Kubernetes (AKS or any cluster) target: objects from an AKS deployment config, applied to a context.

>>> objects = build_objects(spec)               # Namespace, Secrets, Deployment, Service, HPA
>>> print(to_yaml(objects))                     # --dry-run (Secret values emptied)
>>> target = KubernetesTarget(context="aks-prod")
>>> target.apply(objects)                       # server-side apply, field manager "edgepack"
>>> target.wait_for_rollout(spec.name, namespace_of(spec.config), progress=print)
"""

from cloud_targets.targets.kubernetes.client import (
    KubernetesError,
    KubernetesTarget,
    RolloutFailed,
    RolloutTimeout,
    load_api_client,
)
from cloud_targets.targets.kubernetes.objects import (
    autoscale_enabled,
    build_objects,
    namespace_of,
    pull_secret_name,
    secret_name,
    to_dict,
    to_yaml,
    unhonoured_settings,
)
from cloud_targets.targets.kubernetes.rollout import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, RolloutStatus

__all__ = [
    "FAILED",
    "HEALTHY",
    "TRANSITIONING",
    "UNHEALTHY",
    "KubernetesError",
    "KubernetesTarget",
    "RolloutFailed",
    "RolloutStatus",
    "RolloutTimeout",
    "autoscale_enabled",
    "build_objects",
    "load_api_client",
    "namespace_of",
    "pull_secret_name",
    "secret_name",
    "to_dict",
    "to_yaml",
    "unhonoured_settings",
]
