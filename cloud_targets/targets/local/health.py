"""The scoring module's readiness, as seen from this machine: ``GET /v2/health/ready`` on loopback."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from cloud_targets.targets.base import FAILED, HEALTHY, TRANSITIONING, TargetStatus


def free_port() -> int:
    """A free TCP port on this machine (v1 picked one when no port was given)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def probe(port: int, timeout: float = 1.0) -> TargetStatus:
    """Healthy when ready; Failed when the module says ``init()``/``load()`` failed; else Transitioning."""
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return TargetStatus(HEALTHY) if resp.status == 200 else TargetStatus(TRANSITIONING)
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read() or b"{}")
        except ValueError:
            doc = {}
        error = doc.get("error") if isinstance(doc, dict) else None
        if error and "failed" in str(error):
            return TargetStatus(FAILED, str(error))
        return TargetStatus(TRANSITIONING, str(error) if error else None)
    except (OSError, urllib.error.URLError):
        return TargetStatus(TRANSITIONING)


def uris(port: int) -> tuple[str, str]:
    """``(scoring_uri, swagger_uri)`` of a local service, as v1 printed them."""
    return f"http://localhost:{port}/score", f"http://localhost:{port}/swagger.json"
