"""A module's ``createOptions``: the Docker create options the edge agent passes to the engine.

In a manifest they are a JSON *string*; the edge agent reads at most 512 characters from
``settings.createOptions`` and the rest from ``createOptions01`` ... ``createOptions07`` (8 chunks,
4,096 characters in all). :func:`to_settings` writes them that way and :func:`from_settings` joins
them back. The helpers build the usual cases (host networking, ports, binds, devices, limits).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from packager.errors import InvalidInputError

CHUNK = 512
MAX_CHUNKS = 8
KEYS = ("createOptions", *(f"createOptions{i:02d}" for i in range(1, MAX_CHUNKS)))


def to_settings(options: Mapping[str, Any]) -> dict[str, str]:
    """``{"createOptions": ..., "createOptions01": ...}`` for ``options`` (compact JSON, split in 512s)."""
    text = json.dumps(options, separators=(",", ":"), sort_keys=True)
    chunks = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or ["{}"]
    if len(chunks) > MAX_CHUNKS:
        raise InvalidInputError(
            f"createOptions are {len(text)} characters: the edge agent reads at most {MAX_CHUNKS} chunks of "
            f"{CHUNK} ({MAX_CHUNKS * CHUNK}); move large values (e.g. env) out of createOptions"
        )
    return dict(zip(KEYS, chunks, strict=False))


def from_settings(settings: Mapping[str, Any], where: str = "settings") -> dict[str, Any]:
    """The create options of a module's ``settings``, chunks joined (``{}`` when there are none).

    Raises :class:`InvalidInputError` naming ``where`` for a gap in the chunks, a non-string chunk,
    too many chunks or text that is not a JSON object."""
    present = [k for k in settings if k.startswith("createOptions")]
    unknown = sorted(set(present) - set(KEYS))
    if unknown:
        raise InvalidInputError(
            f"{where}: {unknown[0]} is not a createOptions chunk: the edge agent reads createOptions and "
            f"createOptions01..createOptions{MAX_CHUNKS - 1:02d}"
        )
    parts = []
    for i, key in enumerate(KEYS):
        if key not in settings:
            later = [k for k in KEYS[i + 1 :] if k in settings]
            if later:
                raise InvalidInputError(f"{where}: {later[0]} without {key}: chunks must follow each other")
            break
        value = settings[key]
        if not isinstance(value, str):
            raise InvalidInputError(f"{where}.{key} must be a JSON string, not {type(value).__name__}")
        if len(value) > CHUNK:
            raise InvalidInputError(f"{where}.{key} is {len(value)} characters: split it into {CHUNK}-character chunks")
        parts.append(value)
    if not parts:
        return {}
    try:
        options = json.loads("".join(parts))
    except ValueError as exc:
        raise InvalidInputError(f"{where}.createOptions is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise InvalidInputError(f"{where}.createOptions must be a JSON object")
    return options


def merge(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge create options (later parts win; lists are concatenated)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            elif isinstance(value, list) and isinstance(out.get(key), list):
                out[key] = [*out[key], *value]
            else:
                out[key] = json.loads(json.dumps(value))
    return out


def host_network() -> dict[str, Any]:
    return {"HostConfig": {"NetworkMode": "host"}, "NetworkingConfig": {"EndpointsConfig": {"host": {}}}}


def port_bindings(ports: Mapping[int | str, int | str]) -> dict[str, Any]:
    """``{5001: 5001}`` or ``{"5001/tcp": "8080"}`` → ExposedPorts + HostConfig.PortBindings."""
    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for container, host in ports.items():
        key = str(container) if "/" in str(container) else f"{container}/tcp"
        exposed[key] = {}
        bindings[key] = [{"HostPort": str(host)}]
    return {"ExposedPorts": exposed, "HostConfig": {"PortBindings": bindings}}


def binds(volumes: Iterable[str]) -> dict[str, Any]:
    """``["/host/path:/container/path[:ro]", "volume:/path"]`` → HostConfig.Binds."""
    items = list(volumes)
    for item in items:
        if item.count(":") not in (1, 2):
            raise InvalidInputError(f"bind {item!r}: use SOURCE:TARGET[:ro]")
    return {"HostConfig": {"Binds": items}}


def devices(paths: Iterable[str], permissions: str = "rwm") -> dict[str, Any]:
    """``["/dev/xdma0", "/dev/dri:/dev/dri"]`` → HostConfig.Devices (FPGA cards, GPUs)."""
    out = []
    for path in paths:
        host, _, inside = path.partition(":")
        if not host.startswith("/dev/"):
            raise InvalidInputError(f"device {path!r}: give a /dev/... path (HOST[:CONTAINER])")
        out.append({"PathOnHost": host, "PathInContainer": inside or host, "CgroupPermissions": permissions})
    return {"HostConfig": {"Devices": out}}


def limits(memory_mb: int | None = None, cpus: float | None = None) -> dict[str, Any]:
    """Memory (MiB) and CPU limits → HostConfig.Memory / NanoCpus."""
    host: dict[str, Any] = {}
    if memory_mb is not None:
        if memory_mb <= 0:
            raise InvalidInputError(f"memory limit {memory_mb}: use a positive number of MiB")
        host["Memory"] = int(memory_mb) * 2**20
    if cpus is not None:
        if cpus <= 0:
            raise InvalidInputError(f"CPU limit {cpus}: use a positive number of CPUs")
        host["NanoCpus"] = int(cpus * 1e9)
    return {"HostConfig": host} if host else {}
