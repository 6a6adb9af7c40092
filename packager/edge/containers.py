"""Module containers in the local Docker engine: createOptions mapped onto ``docker run``, labels, cleanup.

Every container runs on the host network (the engine here has no bridge), is named
``edgepack-<device>-<module>`` and labelled ``edgepack.edge=<device>``, ``edgepack.edge.run=<run id>``
and ``edgepack.edge.module=<module>``, so a run removes what it started, and the next run removes what
a crashed one left. Mapped from createOptions: ``Env``, ``Cmd``, ``Entrypoint``, ``WorkingDir``,
``User``, ``Labels``, ``HostConfig``: ``Binds``, ``Devices``, ``Memory``, ``MemorySwap``, ``NanoCpus``,
``CpuShares``, ``Privileged``, ``ShmSize``, ``CapAdd``, ``CapDrop``, ``ExtraHosts``, ``Ulimits``, ``LogConfig``.
``ExposedPorts``, ``HostConfig.PortBindings`` and ``NetworkMode`` do not apply under host networking (the
module's ports are the host's): they are ignored with a warning, as is any other key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from packager.edge.plan import ModulePlan

log = logging.getLogger("packager.edge")

LABEL = "edgepack.edge"
HOST_CONFIG = {
    "Binds": "volumes",
    "Memory": "mem_limit",
    "MemorySwap": "memswap_limit",
    "NanoCpus": "nano_cpus",
    "CpuShares": "cpu_shares",
    "Privileged": "privileged",
    "ShmSize": "shm_size",
    "CapAdd": "cap_add",
    "CapDrop": "cap_drop",
}
TOP = {"Cmd": "command", "Entrypoint": "entrypoint", "WorkingDir": "working_dir", "User": "user"}
IGNORED_UNDER_HOST = ("ExposedPorts", "PortBindings", "NetworkMode", "PublishAllPorts")


def container_name(device: str, module: str) -> str:
    return f"edgepack-{device}-{module}"


def run_kwargs(
    module: ModulePlan,
    device: str,
    run_id: str,
    env: Mapping[str, str],
    mounts: list[str],
    defaults: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """``docker.containers.run`` keyword arguments for ``module`` and the warnings about what was not mapped.

    Environment, lowest first: ``defaults`` (e.g. the module's own HTTP port), createOptions ``Env``, the
    manifest's ``env``, then ``env`` (the hub connection: always the runtime's)."""
    opts = dict(module.create_options)
    host = dict(opts.pop("HostConfig", None) or {})
    warnings: list[str] = []
    environment: dict[str, str] = dict(defaults or {})
    for item in opts.pop("Env", None) or []:
        key, _, value = str(item).partition("=")
        environment[key] = value
    environment.update(module.env)
    environment.update(env)
    kwargs: dict[str, Any] = {
        "image": module.image,
        "name": container_name(device, module.name),
        "detach": True,
        "network_mode": "host",
        "environment": environment,
        "labels": {
            **(opts.pop("Labels", None) or {}),
            LABEL: device,
            f"{LABEL}.run": run_id,
            f"{LABEL}.module": module.name,
        },
    }
    for key, arg in TOP.items():
        if key in opts:
            kwargs[arg] = opts.pop(key)
    for key, arg in HOST_CONFIG.items():
        if key in host:
            kwargs[arg] = host.pop(key)
    if "Devices" in host:
        kwargs["devices"] = [
            f"{d['PathOnHost']}:{d.get('PathInContainer', d['PathOnHost'])}:{d.get('CgroupPermissions', 'rwm')}"
            for d in host.pop("Devices") or []
        ]
    if "ExtraHosts" in host:
        kwargs["extra_hosts"] = dict(h.split(":", 1) for h in host.pop("ExtraHosts") or [])
    if "LogConfig" in host:
        from docker.types import LogConfig

        lc = host.pop("LogConfig") or {}
        kwargs["log_config"] = LogConfig(type=lc.get("Type", "json-file"), config=lc.get("Config") or {})
    if "Ulimits" in host:
        from docker.types import Ulimit

        kwargs["ulimits"] = [
            Ulimit(name=u["Name"], soft=u.get("Soft"), hard=u.get("Hard")) for u in host.pop("Ulimits")
        ]
    kwargs["volumes"] = list(kwargs.get("volumes") or []) + mounts
    if host.get("NetworkMode") not in (None, "host"):
        warnings.append(f"module {module.name}: NetworkMode {host['NetworkMode']!r} replaced by host networking")
    for key in IGNORED_UNDER_HOST:
        if key in host or key in opts:
            host.pop(key, None)
            opts.pop(key, None)
            if key != "NetworkMode":
                warnings.append(
                    f"module {module.name}: {key} ignored: modules use host networking (their ports are the host's)"
                )
    for key in list(opts) + [f"HostConfig.{k}" for k in host]:
        warnings.append(f"module {module.name}: createOptions {key} is not mapped by the local runtime: ignored")
    return kwargs, warnings


def docker_client() -> Any:
    import docker

    return docker.from_env()


def remove_labelled(client: Any, device: str | None = None) -> list[str]:
    """Remove the containers edgepack's local runtime started (one device's, or all). -> names removed."""
    label = f"{LABEL}={device}" if device else LABEL
    removed = []
    for c in client.containers.list(all=True, filters={"label": label}):
        try:
            c.remove(force=True)
            removed.append(c.name)
        except Exception as e:
            log.warning("could not remove container %s: %s", c.name, e)
    return removed
