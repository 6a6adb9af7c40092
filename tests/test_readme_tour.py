"""The README's tour runs as written.

A tour block is a fenced ```bash block right after a ``<!-- tour: NAME -->`` line. The blocks run in README
order, each with ``bash -euo pipefail``, in one temporary folder (files carry over, shell variables do not),
with ``EDGEPACK_WORKSPACE`` in that folder, ``EDGEPACK_LOCAL_MODE=process`` and the dev services' base image as
``EDGEPACK_BASE_IMAGE``. Each block must exit 0, and at the end no service, endpoint or ``edgepack serve`` the
tour started may be left.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TOUR = re.compile(r"^<!-- tour: ([\w-]+) -->\n```bash\n(.*?)^```", re.S | re.M)
EXPECTED = ["register", "convert", "quantize", "fpga", "build-and-push", "manifest", "serve", "deploy", "endpoints",
            "profile"]  # fmt: skip
SERVE_PORT = 5101  # the serve block's port


def tour_blocks() -> list[tuple[str, str]]:
    return TOUR.findall(README)


def test_the_tour_covers_every_capability() -> None:
    assert [name for name, _ in tour_blocks()] == EXPECTED


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _edgepack_json(args: list[str], env: dict[str, str], cwd: Path) -> list[dict]:
    r = subprocess.run(["edgepack", *args, "--json"], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


@pytest.fixture
def tour_env(tmp_path: Path, dev_services: dict[str, str]) -> Iterator[dict[str, str]]:
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    if _port_open(SERVE_PORT):
        pytest.skip(f"port {SERVE_PORT}, which the tour's serve block uses, is taken")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "EDGEPACK_WORKSPACE": str(tmp_path / "ws"),
        "EDGEPACK_LOCAL_MODE": "process",
        "EDGEPACK_BASE_IMAGE": dev_services["EDGEPACK_TEST_BASE_IMAGE"],
    }
    for name in ("EDGEPACK_KUBE_CONTEXT", "EDGEPACK_IMAGE_REGISTRY", "EDGEPACK_DEBUG", "KUBECONFIG"):
        env.pop(name, None)
    yield env
    # whatever a failed block left running is removed; the test itself asserts the tour removed it
    from cloud_targets import Webservice
    from cloud_targets.endpoints import Endpoint
    from packager import Workspace

    if (tmp_path / "ws").is_dir():
        ws = Workspace.from_path(tmp_path / "ws", create=False)
        for endpoint in Endpoint.list(ws):
            endpoint.delete()
        for service in Webservice.list(ws):
            service.delete()


@pytest.mark.slow
def test_the_tour_runs_as_written(tmp_path: Path, tour_env: dict[str, str]) -> None:
    for name, block in tour_blocks():
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=tour_env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert r.returncode == 0, f"tour block {name!r} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    models = {m["id"] for m in _edgepack_json(["model", "list"], tour_env, tmp_path)}
    assert {"digits:1", "digits-onnx:1", "digits-onnx-int8:1", "digits-onnx-fpga:1"} <= models
    assert (tmp_path / "build.json").is_file() and (tmp_path / "image-oci" / "index.json").is_file()
    assert "kind: Deployment" in (tmp_path / "aks.yaml").read_text()
    assert "kind: ConfigMap" in (tmp_path / "endpoint-objects.yaml").read_text()  # the router's routes
    # nothing the tour started is left
    assert _edgepack_json(["service", "list"], tour_env, tmp_path) == []
    assert _edgepack_json(["endpoint", "list"], tour_env, tmp_path) == []
    assert not _port_open(SERVE_PORT)
