"""The endpoint router as a detached local process: start, find, ask, stop.

``python -m edge_module.router --routes <endpoint>/routes.json --port P --host 127.0.0.1`` runs in its
own session, its output appended to ``<endpoint>/logs/router.log`` (0600); its pid and start time are
recorded as for a process-mode service (:mod:`cloud_targets.targets.local.process`), so a later call
never signals a process that reused the pid. The endpoint's keys reach it through its environment
(never its command line).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloud_targets.targets.local import process
from packager.errors import EdgepackError

LOG_FILE = "router.log"
STATUS_PATH = "/-/router"
POLL_S = 0.05


class RouterError(EdgepackError):
    """The router did not start or did not take a routes revision in time."""


def start(endpoint_dir: Path, routes: Path, port: int, env: Mapping[str, str]) -> dict[str, Any]:
    """Start the router on 127.0.0.1:``port`` reading ``routes``; returns its handle (pid, start time, port)."""
    args = ["-m", "edge_module.router", "--routes", str(routes), "--port", str(port), "--host", "127.0.0.1"]
    handle = process.spawn(endpoint_dir, args, env, cwd=endpoint_dir, note=f"router on port {port}", log_file=LOG_FILE)
    return {**handle, "port": port}


def alive(handle: Mapping[str, Any] | None) -> bool:
    return bool(handle) and process.alive(handle)  # type: ignore[arg-type]


def stop(handle: Mapping[str, Any] | None) -> None:
    if handle:
        process.stop(handle)


def tail(endpoint_dir: Path, num_lines: int = 5000) -> str:
    return process.tail(endpoint_dir, num_lines, LOG_FILE)


def status(port: int, credential: str | None = None, timeout: float = 2.0) -> dict[str, Any] | None:
    """``GET /-/router`` (with the endpoint's credential when it has one); None when the router does not answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{STATUS_PATH}")
    if credential:
        request.add_header("Authorization", f"Bearer {credential}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            doc = json.loads(resp.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return doc if isinstance(doc, dict) else None


def healthy(port: int, timeout: float = 1.0) -> bool:
    """The router's liveness (``GET /-/healthy``, no auth)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def wait_revision(
    handle: Mapping[str, Any],
    endpoint_dir: Path,
    revision: int,
    ready: list[str],
    credential: str | None,
    timeout: float,
) -> dict[str, Any]:
    """Wait until the router serves ``revision`` (or later) and reports every version in ``ready`` ready."""
    port = int(handle["port"])
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if not alive(handle):
            raise RouterError(f"the endpoint's router exited; last log lines:\n{tail(endpoint_dir, 30)}")
        doc = status(port, credential)
        if doc is not None and int(doc.get("revision") or 0) >= revision:
            versions = doc.get("versions") or {}
            if all((versions.get(name) or {}).get("ready") for name in ready):
                return doc
        time.sleep(POLL_S)
    raise RouterError(
        f"the router on port {port} did not take routes revision {revision} with {', '.join(ready) or 'no'} "
        f"version(s) ready within {timeout:g} s (it reports {doc!r}); see {process.log_path(endpoint_dir, LOG_FILE)}"
    )


def in_flight(doc: Mapping[str, Any] | None, version: str) -> int:
    """The router's in-flight count for ``version`` (0 when it no longer lists it)."""
    if not doc:
        return 0
    return int(((doc.get("versions") or {}).get(version) or {}).get("in_flight") or 0)


def draining(doc: Mapping[str, Any] | None, url: str) -> int:
    """Requests the router still has in flight to ``url`` after a switch retired it (its ``draining`` list)."""
    if not doc:
        return 0
    entries = (doc.get("draining") or {}).values()
    return sum(int(e.get("in_flight") or 0) for e in entries if str(e.get("url", "")).rstrip("/") == url.rstrip("/"))


__all__ = [
    "RouterError",
    "alive",
    "draining",
    "healthy",
    "in_flight",
    "start",
    "status",
    "stop",
    "tail",
    "wait_revision",
]
