"""Reading a Deployment's rollout as ``kubectl rollout status`` does, and the v1 service states from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TRANSITIONING, HEALTHY, UNHEALTHY, FAILED = "Transitioning", "Healthy", "Unhealthy", "Failed"

# container waiting reasons that will not clear up by themselves (the rollout fails early on them)
STUCK_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",  # not ErrImagePull: the first failed pull may be a glitch, the back-off is not
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",  # e.g. a secretKeyRef to a missing key
    }
)


@dataclass
class RolloutStatus:
    """Where a rollout stands: ``done``, ``failed`` (with the reason) or waiting, with kubectl's message."""

    done: bool
    failed: bool
    message: str


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _get(obj: Any, *path: str) -> Any:
    """``path`` (snake_case) of a client model, or of its JSON dict (camelCase)."""
    for part in path:
        if obj is None:
            return None
        obj = obj.get(_camel(part)) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


def rollout_status(deployment: Any) -> RolloutStatus:
    """kubectl's ``DeploymentStatusViewer.Status`` over a V1Deployment (or its JSON dict)."""
    name = _get(deployment, "metadata", "name")
    generation = _get(deployment, "metadata", "generation") or 0
    observed = _get(deployment, "status", "observed_generation") or 0
    if generation > observed:
        return RolloutStatus(False, False, "Waiting for deployment spec update to be observed...")
    for cond in _get(deployment, "status", "conditions") or []:
        if _get(cond, "type") == "Progressing" and _get(cond, "reason") == "ProgressDeadlineExceeded":
            return RolloutStatus(False, True, f'deployment "{name}" exceeded its progress deadline')
    wanted = _get(deployment, "spec", "replicas")
    replicas = _get(deployment, "status", "replicas") or 0
    updated = _get(deployment, "status", "updated_replicas") or 0
    available = _get(deployment, "status", "available_replicas") or 0
    if wanted is not None and updated < wanted:
        return RolloutStatus(
            False, False, f"Waiting for rollout to finish: {updated} out of {wanted} new replicas have been updated..."
        )
    if replicas > updated:
        return RolloutStatus(
            False, False, f"Waiting for rollout to finish: {replicas - updated} old replicas are pending termination..."
        )
    if available < updated:
        return RolloutStatus(
            False, False, f"Waiting for rollout to finish: {available} of {updated} updated replicas are available..."
        )
    return RolloutStatus(True, False, f'deployment "{name}" successfully rolled out')


def stuck_pods(pods: list[Any]) -> list[str]:
    """``pod/container: Reason: message`` for every container waiting on something that will not clear up."""
    problems = []
    for pod in pods:
        statuses = (_get(pod, "status", "init_container_statuses") or []) + (
            _get(pod, "status", "container_statuses") or []
        )
        for st in statuses:
            reason = _get(st, "state", "waiting", "reason")
            if reason in STUCK_REASONS:
                message = _get(st, "state", "waiting", "message") or ""
                problems.append(f"{_get(pod, 'metadata', 'name')}/{_get(st, 'name')}: {reason}: {message}".rstrip(": "))
    return problems


def service_state(deployment: Any, pods: list[Any]) -> str:
    """v1's Webservice state: Transitioning while rolling out, Healthy when every wanted replica is available,
    Unhealthy when it rolled out but replicas are missing or stuck, Failed past the progress deadline."""
    status = rollout_status(deployment)
    if status.failed:
        return FAILED
    if stuck_pods(pods):
        return UNHEALTHY
    if not status.done:
        return TRANSITIONING
    wanted = _get(deployment, "spec", "replicas")
    available = _get(deployment, "status", "available_replicas") or 0
    if available == 0 or (wanted is not None and available < wanted):
        return UNHEALTHY
    return HEALTHY
