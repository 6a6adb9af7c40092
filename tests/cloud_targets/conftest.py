"""Fixtures of the cloud_targets tests: ``run``, the ``edgepack`` CLI in-process, and ``kubeconf``, a kubeconfig
for the module's ``apiserver`` fixture (a module may override either)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cloud_targets.cli_support import Run, runner
from tests.cloud_targets.targets.kubernetes.fake_apiserver import FakeApiServer, kubeconfig


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return runner(capsys)


@pytest.fixture
def kubeconf(apiserver: FakeApiServer, tmp_path: Path) -> str:
    """A kubeconfig whose context ``dev`` is the module's fake API server (token ``dev-token``)."""
    return kubeconfig(str(tmp_path / "kubeconfig"), {"dev": (apiserver.url, "dev-token")}, "dev")
