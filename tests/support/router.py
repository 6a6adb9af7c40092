"""The endpoint router for the tests: a real ``python -m edge_module.router`` process in front of real
scoring servers (:class:`~edge_module.server.lifecycle.BackgroundServer`) that say who they are."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from edge_module.router.routes import RouteTable, VersionRoute
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from tests.conftest import ROOT
from tests.support.procs import StderrProcess
from tests.support.scorers import FunctionApp


def version_app(name: str, load: Callable[[], None] | None = None, score: Callable[[Any], Any] | None = None) -> Any:
    """A scoring app whose ``/score`` answers ``{"version": name, "echo": <the request body>}``."""

    def answer(request: Any) -> Any:
        if score is not None:
            score(request)
        return {"version": name, "echo": json.loads(request.body or b"null")}

    return FunctionApp(answer, load_fn=load)


def backend(name: str, threads: int = 4, **kwargs: Any) -> BackgroundServer:
    """A started scoring server for the version ``name``, scoring on ``threads`` threads (``kwargs``:
    :func:`version_app`'s)."""
    return BackgroundServer(version_app(name, **kwargs), Settings(port=0, scoring_threads=threads)).start()


def write_routes(path: Path, endpoint: str, revision: int, versions: list[tuple[str, str, float, bool]]) -> None:
    """Write a routes file atomically: ``versions`` are (name, url, traffic, default)."""
    table = RouteTable(
        endpoint,
        tuple(VersionRoute(n, u, float(t), d) for n, u, t, d in versions),
        revision,
    ).validate()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".routes-")
    with os.fdopen(fd, "w") as f:
        f.write(table.to_json())
    os.replace(tmp, path)


class RouterProc(StderrProcess):
    """``python -m edge_module.router`` on a free port, its stderr collected."""

    STOP_SIGNAL = signal.SIGTERM
    STOP_WAIT = 30

    def __init__(self, routes: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        cmd = [
            sys.executable,
            "-m",
            "edge_module.router",
            "--routes",
            str(routes),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--health-interval",
            "0.1",
            "--reload-interval",
            "0.05",
            *args,
        ]
        self._collect(subprocess.Popen(cmd, cwd=ROOT, env=full_env, stderr=subprocess.PIPE, text=True))
        line = self.wait_for(r"listening on http://")
        match = re.search(r"http://[\d.]+:(\d+)", line)
        assert match, line
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def state(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        r = requests.get(self.url + "/-/router", headers=headers, timeout=10)
        r.raise_for_status()
        return r.json()

    def wait_state(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 20, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Poll ``GET /-/router`` until ``check(state)``; the timeout only ends a test that already failed."""
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.state(headers)
            if check(state):
                return state
            time.sleep(0.02)
        raise AssertionError(f"the router never reached the expected state; last: {state}\n{''.join(self.lines)}")

    def wait_ready(self, names: set[str], revision: int | None = None, **kwargs: Any) -> dict[str, Any]:
        return self.wait_state(
            lambda s: (
                (revision is None or s["revision"] == revision)
                and {n for n, v in s["versions"].items() if v["ready"]} == names
            ),
            **kwargs,
        )
