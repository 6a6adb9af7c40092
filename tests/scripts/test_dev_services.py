"""The real services from scripts/dev-services.sh answer as the other slow tests expect.

Each test uses the ``dev_services`` fixture (tests/conftest.py): the KEY=VALUE settings of
``services.env``, or a skip (a failure in CI) when the services are down.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dev-services.sh"

INDEX_TYPES = {
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
}
# arm64 containers run under qemu: onnxruntime crashes reading the host's cpu topology
# and then hangs without an init, so every arm64 run gets these.
ARM64_RUN_ARGS = ["--init", "--tmpfs", "/sys/devices/system/cpu:ro"]
PLATFORMS = {
    "amd64": ("linux/amd64", [], "x86_64"),
    "arm64": ("linux/arm64", ARM64_RUN_ARGS, "aarch64"),
}

# Loopback only: never through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with _opener.open(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def _run(args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False, **kwargs
    )


@pytest.mark.slow
def test_env_file_names_every_setting(dev_services: dict[str, str]) -> None:
    for key in (
        "EDGEPACK_TEST_REGISTRY",
        "EDGEPACK_TEST_BASE_IMAGE",
        "EDGEPACK_TEST_MQTT_HOST",
        "EDGEPACK_TEST_MQTT_PORT",
        "EDGEPACK_TEST_MQTT_TLS_PORT",
        "EDGEPACK_TEST_MQTT_CA",
        "EDGEPACK_TEST_MQTT_CLIENT_CERT",
        "EDGEPACK_TEST_MQTT_CLIENT_KEY",
        "EDGEPACK_TEST_DOCKER_STORAGE_DRIVER",
        "EDGEPACK_DEV_SCRIPT",
    ):
        assert dev_services.get(key), f"{key} missing from services.env"
    assert dev_services["EDGEPACK_TEST_REGISTRY"] == "127.0.0.1:5000"
    assert dev_services["EDGEPACK_TEST_BASE_IMAGE"] == "127.0.0.1:5000/library/python:3.11-slim"
    assert dev_services["EDGEPACK_TEST_DOCKER_STORAGE_DRIVER"] in {"overlay2", "vfs"}
    for key in ("EDGEPACK_TEST_MQTT_CA", "EDGEPACK_TEST_MQTT_CLIENT_CERT", "EDGEPACK_TEST_MQTT_CLIENT_KEY"):
        assert Path(dev_services[key]).is_file(), dev_services[key]
    assert Path(dev_services["EDGEPACK_DEV_SCRIPT"]).is_file()


@pytest.mark.slow
def test_registry_answers_v2(dev_services: dict[str, str]) -> None:
    status, headers, _ = _get(f"http://{dev_services['EDGEPACK_TEST_REGISTRY']}/v2/")
    assert status == 200
    assert headers.get("Docker-Distribution-Api-Version") == "registry/2.0"


@pytest.mark.slow
def test_base_image_is_a_multi_arch_index(dev_services: dict[str, str]) -> None:
    registry = dev_services["EDGEPACK_TEST_REGISTRY"]
    repository, tag = dev_services["EDGEPACK_TEST_BASE_IMAGE"].removeprefix(f"{registry}/").rsplit(":", 1)
    status, headers, body = _get(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        {"Accept": ", ".join(sorted(INDEX_TYPES))},
    )
    assert status == 200
    index = json.loads(body)
    assert index["mediaType"] in INDEX_TYPES
    assert headers["Content-Type"] in INDEX_TYPES
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]}
    assert {"linux/amd64", "linux/arm64"} <= platforms
    for manifest in index["manifests"]:  # every platform's own manifest is in the registry too
        status, _, _ = _get(
            f"http://{registry}/v2/{repository}/manifests/{manifest['digest']}",
            {"Accept": manifest["mediaType"]},
        )
        assert status == 200


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(PLATFORMS))
def test_base_image_runs_python(dev_services: dict[str, str], arch: str) -> None:
    platform, extra, machine = PLATFORMS[arch]
    base = dev_services["EDGEPACK_TEST_BASE_IMAGE"]
    # Always name the platform: the local tag holds whichever platform was pulled last.
    run = ["docker", "run", "--rm", "--network", "host", "--platform", platform, *extra, base]
    result = _run([*run, "python3", "-c", "1"], timeout=300)
    assert result.returncode == 0, result.stderr
    probe = "import platform, ssl, venv, sys; print(platform.machine(), sys.version_info[0])"
    result = _run([*run, "python3", "-c", probe], timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [machine, "3"]


def _mqtt_args(dev_services: dict[str, str], transport: str) -> list[str]:
    host = dev_services["EDGEPACK_TEST_MQTT_HOST"]
    if transport == "plain":
        return ["-h", host, "-p", dev_services["EDGEPACK_TEST_MQTT_PORT"]]
    args = ["-h", host, "-p", dev_services["EDGEPACK_TEST_MQTT_TLS_PORT"]]
    args += ["--cafile", dev_services["EDGEPACK_TEST_MQTT_CA"]]
    if transport == "tls-client-cert":
        args += ["--cert", dev_services["EDGEPACK_TEST_MQTT_CLIENT_CERT"]]
        args += ["--key", dev_services["EDGEPACK_TEST_MQTT_CLIENT_KEY"]]
    return args


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["plain", "tls", "tls-client-cert"])
def test_mqtt_round_trip(dev_services: dict[str, str], transport: str) -> None:
    args = _mqtt_args(dev_services, transport)
    topic = f"edgepack/test/dev-services/{uuid.uuid4().hex}"
    message = f"hello over {transport}"
    sub = subprocess.Popen(
        ["mosquitto_sub", *args, "-q", "1", "-t", topic, "-C", "1", "-W", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        # The subscriber may not be subscribed yet: publish until it has received one.
        deadline = time.monotonic() + 20
        while sub.poll() is None and time.monotonic() < deadline:
            pub = _run(["mosquitto_pub", *args, "-q", "1", "-t", topic, "-m", message], timeout=20)
            assert pub.returncode == 0, pub.stderr
            with contextlib.suppress(subprocess.TimeoutExpired):
                sub.wait(timeout=0.3)
        out, err = sub.communicate(timeout=10)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    assert sub.returncode == 0, err
    assert out.splitlines()[0] == message


@pytest.mark.slow
def test_status_reports_every_service_up(dev_services: dict[str, str]) -> None:
    result = _run(["bash", str(SCRIPT), "status"], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    states = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line.strip()}
    assert states == {"docker": "up", "registry": "up", "mqtt": "up", "base-images": "up", "gateway-api": "up"}


@pytest.mark.slow
def test_second_start_is_a_no_op(dev_services: dict[str, str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("scripts/dev-services.sh start needs root")
    env = {**os.environ, "CI": "true"}
    result = _run(["bash", str(SCRIPT), "start"], timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout
