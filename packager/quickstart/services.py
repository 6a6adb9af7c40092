"""Which local services are there: a TCP probe with a short timeout (nothing is sent)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

PROBE_TIMEOUT = 0.5


def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether something accepts TCP connections on ``host:port`` within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def mqtt_address(url: str) -> tuple[str, int]:
    """``mqtt://host[:port]`` (or ``mqtts://``) → (host, port)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    default = 8883 if parts.scheme == "mqtts" else 1883
    return parts.hostname or "127.0.0.1", parts.port or default
