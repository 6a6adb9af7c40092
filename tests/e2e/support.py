"""Helpers for the end-to-end scenarios."""

from __future__ import annotations

from cloud_targets.targets.local import process


def gone(handle: dict) -> bool:
    """No process or container of a deleted service is left."""
    if handle["mode"] == "process":
        return process.start_time(handle["pid"]) is None
    import docker

    return all(c.id != handle["container_id"] for c in docker.from_env().containers.list(all=True))
