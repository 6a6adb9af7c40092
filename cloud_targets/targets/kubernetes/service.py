"""The AKS / Kubernetes :class:`~cloud_targets.targets.base.Target`: one web service on one cluster.

A thin layer over :class:`KubernetesTarget` for the service lifecycle: ``deploy`` applies the service's
objects (server-side apply) and answers where it listens, ``wait`` follows the rollout as ``kubectl rollout
status`` does, ``update_secrets`` applies the Secret with the rotated keys and rolls the pods. The handle kept
in the service record names the cluster (context, kubeconfig path), the namespace and the service type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from cloud_targets.targets.base import FAILED, HEALTHY, Deployed, ServiceSpec, TargetStatus, swagger_uri
from cloud_targets.targets.compute import KubernetesCompute
from cloud_targets.targets.kubernetes.client import KubernetesTarget
from cloud_targets.targets.kubernetes.objects import (
    SECRETS_REVISION,
    build_objects,
    namespace_of,
    secret_object,
    secrets_revision,
    service_secrets,
    unhonoured_settings,
)
from cloud_targets.targets.kubernetes.rollout import rollout_status, service_state, stuck_pods
from packager.errors import NotFoundError


class AksTarget:
    """Web services on the cluster ``compute`` names; implements :class:`cloud_targets.targets.base.Target`."""

    compute_type: ClassVar[str] = "AKS"

    def __init__(self, compute: KubernetesCompute | None = None, *, poll_seconds: float = 2.0) -> None:
        self.compute = (compute or KubernetesCompute()).resolved()
        self.poll_seconds = poll_seconds
        self.last_warnings: list[str] = []
        # read the kubeconfig now: a missing file or context fails before anything is built or pushed
        self.kube = KubernetesTarget(context=self.compute.context, kubeconfig=self.compute.kubeconfig)

    def __repr__(self) -> str:
        return f"AksTarget(context={self.compute.context!r}, kubeconfig={self.compute.kubeconfig!r})"

    def _handle(self, name: str, namespace: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "server": self.kube.host, **self.compute.handle()}

    @staticmethod
    def _where(handle: Mapping[str, Any]) -> tuple[str, str]:
        return str(handle["name"]), str(handle.get("namespace") or "default")

    # -- the Target interface ----------------------------------------------------------------------------
    def deploy(self, spec: ServiceSpec, previous: Mapping[str, Any] | None = None) -> Deployed:
        """Apply the service's objects (an update when they exist); a service moved to another namespace
        leaves nothing in the old one."""
        objects = build_objects(spec, service_type=self.compute.service_type)
        self.last_warnings = unhonoured_settings(spec.config)  # type: ignore[arg-type]
        namespace = namespace_of(spec.config)  # type: ignore[arg-type]
        try:
            self.kube.apply(objects)
        except Exception:
            if not previous:  # a new service: leave nothing half-applied behind
                with contextlib.suppress(Exception):
                    self.kube.delete(spec.name, namespace)
            raise
        if previous and previous.get("namespace") and previous.get("namespace") != namespace:
            self.kube.delete(*self._where(previous))
        scoring = self.kube.scoring_uri(spec.name, namespace)
        return Deployed(scoring, swagger_uri(scoring), self._handle(spec.name, namespace))

    def state(self, handle: Mapping[str, Any]) -> TargetStatus:
        name, namespace = self._where(handle)
        try:
            deployment = self.kube.deployment(name, namespace)
        except NotFoundError as err:
            return TargetStatus(FAILED, str(err))
        pods = self.kube.pods(name, namespace)
        state = service_state(deployment, pods)
        if state == HEALTHY:
            return TargetStatus(state)
        return TargetStatus(state, "; ".join(stuck_pods(pods)) or rollout_status(deployment).message)

    def wait(
        self, handle: Mapping[str, Any], timeout: float = 600.0, progress: Callable[[str], None] | None = None
    ) -> None:
        """Wait for the rollout (``kubectl rollout status``); RolloutFailed / RolloutTimeout when it does not end."""
        name, namespace = self._where(handle)
        self.kube.wait_for_rollout(name, namespace, timeout, progress, poll_seconds=self.poll_seconds)

    def logs(self, handle: Mapping[str, Any], num_lines: int = 5000) -> str:
        name, namespace = self._where(handle)
        try:
            return self.kube.logs(name, namespace, num_lines)
        except NotFoundError:
            return ""

    def delete(self, handle: Mapping[str, Any]) -> None:
        """Delete the service's objects (the namespace stays)."""
        self.kube.delete(*self._where(handle))

    def update_secrets(self, spec: ServiceSpec, handle: Mapping[str, Any]) -> Deployed:
        """Apply the Secret with ``spec.secrets`` (server-side apply: the old keys are gone for good, and later
        applies own the same fields) and roll the pods so they read the new values."""
        name, namespace = self._where(handle)
        secrets = service_secrets(spec)
        self.kube.apply_one(secret_object(spec, secrets))
        self.kube.roll_pods(name, namespace, {SECRETS_REVISION: secrets_revision(name, secrets)})
        scoring = self.kube.scoring_uri(name, namespace)
        return Deployed(scoring, swagger_uri(scoring), {**handle})


def aks_target(config: Any, deployment_target: Any = None) -> AksTarget:
    """The registry's factory: ``deployment_target`` is a :class:`KubernetesCompute`, a context name, a
    service record's handle, or None (the environment: $EDGEPACK_KUBE_CONTEXT, $KUBECONFIG)."""
    from packager.errors import InvalidInputError

    if deployment_target is None:
        compute = KubernetesCompute()
    elif isinstance(deployment_target, KubernetesCompute):
        compute = deployment_target
    elif isinstance(deployment_target, str):
        compute = KubernetesCompute(context=deployment_target)
    elif isinstance(deployment_target, Mapping):
        compute = KubernetesCompute.from_handle(deployment_target)
    else:
        raise InvalidInputError(
            f"deployment_target {type(deployment_target).__name__} is not a Kubernetes cluster: pass "
            "KubernetesCompute(context=..., kubeconfig=...) or a kubeconfig context name"
        )
    return AksTarget(compute)


__all__ = ["AksTarget", "aks_target"]
