"""End-to-end fixtures: a workspace in a fresh working folder, the Local target's mode, and cleanup.

Every scenario runs as a user would: from a working folder holding the docs' files, against a workspace
that lives only for the test; whatever it deployed is deleted afterwards, leaving no process or container.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from packager import Workspace
from tests.support.workspaces import user_workspace

MODES = [pytest.param("process", id="process"), pytest.param("docker", id="docker", marks=pytest.mark.slow)]


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """The user's workspace (also ``$EDGEPACK_WORKSPACE`` for the CLI); the working folder is ``tmp_path``."""
    yield from user_workspace(tmp_path, monkeypatch)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Local target's mode: a process (fast) or a container in the dev services' Docker engine (slow)."""
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", request.param)
    if request.param == "docker":
        services = request.getfixturevalue("dev_services")
        from cloud_targets.targets.local.docker_mode import engine

        if engine() is None:
            pytest.fail("no Docker engine: run scripts/dev-services.sh")
        monkeypatch.setenv("EDGEPACK_BASE_IMAGE", services["EDGEPACK_TEST_BASE_IMAGE"])
        monkeypatch.delenv("EDGEPACK_LOCAL_REGISTRY", raising=False)
    return request.param
