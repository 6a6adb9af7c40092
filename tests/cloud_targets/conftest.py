"""Fixtures of the cloud_targets tests: ``run``, the ``edgepack`` CLI in-process (a module may override it)."""

from __future__ import annotations

import pytest

from tests.cloud_targets.cli_support import Run, runner


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return runner(capsys)
