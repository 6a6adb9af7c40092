"""Rollout status and service states read from Deployment / Pod JSON, as the API server sends them."""

from __future__ import annotations

from cloud_targets.targets.kubernetes.rollout import (
    FAILED,
    HEALTHY,
    TRANSITIONING,
    UNHEALTHY,
    rollout_status,
    service_state,
    stuck_pods,
)


def deployment(wanted: int, generation: int = 2, **status) -> dict:
    return {"metadata": {"name": "iris", "generation": generation}, "spec": {"replicas": wanted}, "status": status}


def pod(reason: str | None) -> dict:
    state = {"waiting": {"reason": reason}} if reason else {"running": {}}
    return {"metadata": {"name": "iris-1"}, "status": {"containerStatuses": [{"name": "iris", "state": state}]}}


def test_rollout_status_from_json() -> None:
    assert not rollout_status(deployment(2, observedGeneration=1)).done
    done = rollout_status(deployment(2, observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2))
    assert done.done and not done.failed and done.message == 'deployment "iris" successfully rolled out'
    stalled = deployment(
        2, observedGeneration=2, conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]
    )
    assert rollout_status(stalled).failed


def test_states() -> None:
    healthy = deployment(2, observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2)
    assert service_state(healthy, [pod(None)]) == HEALTHY
    assert service_state(deployment(2, observedGeneration=2, replicas=2, updatedReplicas=1), []) == TRANSITIONING
    assert service_state(healthy, [pod("CrashLoopBackOff")]) == UNHEALTHY
    scaled_to_zero = deployment(0, observedGeneration=2)
    assert service_state(scaled_to_zero, []) == UNHEALTHY
    stalled = deployment(
        1, observedGeneration=2, conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]
    )
    assert service_state(stalled, []) == FAILED


def test_only_lasting_waits_count_as_stuck() -> None:
    assert stuck_pods([pod("ErrImagePull"), pod("ContainerCreating"), pod(None)]) == []
    assert stuck_pods([pod("ImagePullBackOff")]) == ["iris-1/iris: ImagePullBackOff"]
    assert stuck_pods([pod("CreateContainerConfigError")]) == ["iris-1/iris: CreateContainerConfigError"]
