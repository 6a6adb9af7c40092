"""Fixtures for the image-building tests: the dev registry, the base image, a workspace with a model."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.packager.image.support import DIGITS, edgepack


@pytest.fixture(scope="module")
def registry(dev_services: dict[str, str]) -> str:
    if shutil.which("docker") is None or shutil.which("skopeo") is None:
        pytest.fail("docker and skopeo must be installed: run scripts/dev-services.sh")
    return dev_services["EDGEPACK_TEST_REGISTRY"]


@pytest.fixture(scope="module")
def base(dev_services: dict[str, str]) -> str:
    return dev_services.get(
        "EDGEPACK_TEST_BASE_IMAGE", f"{dev_services['EDGEPACK_TEST_REGISTRY']}/library/python:3.11-slim"
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ws") / "ws"
    edgepack(path, "model", "register", "-n", "digits", "-p", str(DIGITS))
    return path


@pytest.fixture
def repo(registry: str) -> str:
    return f"{registry}/test/digits-{uuid.uuid4().hex[:8]}"
