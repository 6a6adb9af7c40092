"""A user's workspace for the cloud_targets tests, and the cleanup that leaves nothing running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from packager import Workspace

#: variables of the developer's shell that would send a Local test elsewhere or change its output
UNSET = ("EDGEPACK_DEBUG", "EDGEPACK_KUBE_CONTEXT", "EDGEPACK_IMAGE_REGISTRY")


def user_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """For a ``ws`` fixture (``yield from``): the workspace ``tmp_path/ws``, also ``$EDGEPACK_WORKSPACE`` for
    the CLI, the working folder ``tmp_path``, Local services as processes; afterwards every endpoint and
    service in it is deleted (no process or container is left, even when the test failed)."""
    monkeypatch.setenv("EDGEPACK_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    workspace = Workspace.from_path(tmp_path / "ws", create=True)
    yield workspace
    delete_all(workspace)


def delete_all(workspace: Workspace) -> None:
    """Delete the workspace's endpoints (routers and versions), then its services."""
    from cloud_targets import Endpoint, Webservice

    for ep in Endpoint.list(workspace):
        ep.delete()
    for svc in Webservice.list(workspace):
        svc.delete()


__all__ = ["delete_all", "user_workspace"]
