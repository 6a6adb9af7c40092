"""Helpers for the image-building acceptance tests: the CLI in-process, docker, running containers."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests

from packager.cli import main
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "examples" / "models" / "digits-linear.onnx"
X = np.random.default_rng(3).random((2, 64)).astype(np.float32)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def edgepack(ws: Path, *args: str, expect: int = 0) -> Result:
    """Run the CLI in-process as the console script does (errors become one line and an exit code)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(["--workspace", str(ws), *args])
    result = Result(int(exc.value.code or 0), out.getvalue(), err.getvalue())
    assert result.exit_code == expect, result.output
    return result


def edgepack_json(ws: Path, *args: str) -> dict[str, Any]:
    return json.loads(edgepack(ws, *args, "--json").stdout)


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, f"docker {' '.join(args)}: {run.stderr}"
    return run


def expected(model: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@contextlib.contextmanager
def serving_container(ref: str, platform: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """Run ``ref`` for ``platform`` on the host network (arm under qemu); yield ``(url, id)`` once ready."""
    port = free_port()
    args = ["run", "-d", "--rm", "--platform", platform, "--network", "host", "-e", f"EDGEPACK_PORT={port}"]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    if platform != "linux/amd64":
        args += ["--init", "--tmpfs", "/sys/devices/system/cpu:ro"]
    cid = docker(*args, ref).stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, cid)
        yield url, cid
    finally:
        docker("rm", "-f", cid, check=False)


def score(url: str, x: np.ndarray) -> Any:
    got = requests.post(url + "/score", json={"data": x.tolist()}, timeout=30)
    assert got.status_code == 200, got.text
    return got.json()


def skopeo_inspect(*args: str) -> dict[str, Any]:
    run = subprocess.run(["skopeo", "inspect", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"skopeo inspect {' '.join(args)}: {run.stderr}"
    return json.loads(run.stdout)


def wait_ready(url: str, cid: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if docker("inspect", "-f", "{{.State.Running}}", cid, check=False).stdout.strip() == "false":
            break
        time.sleep(0.5)
    logs = docker("logs", cid, check=False)
    pytest.fail(f"container {cid} not ready at {url}:\n{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}")


def wait_logged(cid: str, text: str, timeout: float = 60) -> None:
    """Wait until the container's log (stdout or stderr) holds ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = docker("logs", cid, check=False)
        if text in logs.stdout or text in logs.stderr:
            return
        time.sleep(0.3)
    pytest.fail(f"container {cid} never logged {text!r}:\n{logs.stdout[-2000:]}\n{logs.stderr[-2000:]}")
