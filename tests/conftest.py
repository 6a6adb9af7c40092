"""Shared fixtures: a fresh workspace, and the real dev services from scripts/dev-services.sh."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from packager import Workspace

ROOT = Path(__file__).resolve().parents[1]
DEV_DIR = Path(os.environ.get("EDGEPACK_DEV_DIR", "/var/lib/edgepack-dev"))


def unavailable(message: str) -> None:
    """Skip on a developer's machine; fail in CI, where every service must be up."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def dev_services() -> dict[str, str]:
    """KEY=VALUE settings of the running dev services (``services.env``)."""
    env_file = DEV_DIR / "services.env"
    if not env_file.is_file():
        unavailable(f"dev services are not set up ({env_file} missing): run scripts/dev-services.sh")
    values = {}
    for line in env_file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    host, registry_port = values["EDGEPACK_TEST_REGISTRY"].rsplit(":", 1)
    for name, port in (("registry", int(registry_port)), ("mqtt", int(values["EDGEPACK_TEST_MQTT_PORT"]))):
        if not _port_open(host, port):
            unavailable(f"dev service {name} is not answering on {host}:{port}: run scripts/dev-services.sh")
    return values


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.from_path(tmp_path / "ws")
