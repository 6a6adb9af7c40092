"""How one CPU/memory setting is applied to the profiled service.

* Docker mode: the container's ``--cpus`` / ``--memory`` (:func:`docker_limits`).
* Process mode: a child cgroup of this process's own (:class:`Cgroup`: v2 ``cpu.max`` / ``memory.max``, or v1
  ``cpu.cfs_quota_us`` / ``memory.limit_in_bytes``) when the cgroup file system is writable (root), created
  before the service starts (the process joins it before it runs) and removed afterwards; else CPU
  affinity with whole cores (:func:`affinity_cores`), where a fractional CPU is refused.

The scoring module's worker count follows the CPU setting: ``ceil(cpu)`` (:func:`workers_for`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packager.errors import InvalidInputError

GIB = 1024**3
CFS_PERIOD_US = 100_000
MIN_MEMORY_GB = 0.1
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?\s*$")


@dataclass(frozen=True)
class Setting:
    """One profiled configuration: ``cpu`` cores (may be fractional) and ``memory_gb`` (None: no limit)."""

    cpu: float
    memory_gb: float | None = None

    @property
    def label(self) -> str:
        mem = "no limit" if self.memory_gb is None else f"{self.memory_gb:g} GB"
        return f"cpu {self.cpu:g}, memory {mem}"


def machine_cpus() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0))


def check_cpu(cpu: float) -> float:
    """A CPU setting between 0 (excluded) and this machine's CPU count, else a clear error."""
    try:
        value = float(cpu)
    except (TypeError, ValueError):
        raise InvalidInputError(f"cpu {cpu!r}: give a number of cores such as 0.5, 1 or 2") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"cpu {cpu!r}: give a positive number of cores such as 0.5, 1 or 2")
    if value > machine_cpus():
        raise InvalidInputError(f"cpu {value:g}: this machine has {machine_cpus()} CPUs; profile at most that many")
    return value


def check_memory(memory_gb: float | None) -> float | None:
    if memory_gb is None:
        return None
    try:
        value = float(memory_gb)
    except (TypeError, ValueError):
        raise InvalidInputError(f"memory_gb {memory_gb!r}: give a number of GB such as 0.5 or 1") from None
    if not math.isfinite(value) or value < MIN_MEMORY_GB:
        raise InvalidInputError(f"memory_gb {memory_gb!r}: give at least {MIN_MEMORY_GB} GB")
    return value


def parse_list(text: str, flag: str) -> list[float]:
    """``"0.5,1,2"`` -> ``[0.5, 1.0, 2.0]``; a clear error naming ``flag`` otherwise."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise InvalidInputError(f"{flag} {text!r}: give one or more numbers separated by commas, e.g. 0.5,1")
    try:
        return [float(t) for t in items]
    except ValueError:
        raise InvalidInputError(f"{flag} {text!r}: give numbers separated by commas, e.g. 0.5,1") from None


def parse_duration(text: str | float) -> float:
    """``30s``, ``500ms``, ``2m`` or a number of seconds -> seconds (at least 1 s)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise InvalidInputError(f"duration {text!r}: give seconds such as 30s, 2m or 500ms")
        unit = match.group(2) or "s"
        seconds = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0}[unit]
    if not math.isfinite(seconds) or seconds < 1:
        raise InvalidInputError(f"duration {text!r}: measure for at least 1 s (e.g. 30s)")
    if seconds > 3600:
        raise InvalidInputError(f"duration {text!r}: at most 1 hour per setting")
    return seconds


def workers_for(cpu: float) -> int:
    """The scoring module's worker processes for ``cpu`` cores: ``ceil(cpu)``."""
    return max(1, math.ceil(cpu - 1e-9))


def docker_limits(setting: Setting) -> dict[str, int]:
    """``containers.run`` keywords: ``nano_cpus`` and (with a memory setting) ``mem_limit`` = ``memswap_limit``."""
    limits = {"nano_cpus": round(setting.cpu * 1e9)}
    if setting.memory_gb is not None:
        limits["mem_limit"] = limits["memswap_limit"] = int(setting.memory_gb * GIB)  # no swap beyond the limit
    return limits


def affinity_cores(cpu: float) -> list[int]:
    """The first ``cpu`` cores this process may use (whole cores only: a fractional cpu needs a cgroup)."""
    if abs(cpu - round(cpu)) > 1e-9:
        raise InvalidInputError(
            f"cpu {cpu:g}: without a writable cgroup file system (/sys/fs/cgroup, as root) process mode can only "
            "pin whole cores; give whole numbers (e.g. --cpu 1,2), run as root, or use --mode docker"
        )
    cores = sorted(os.sched_getaffinity(0))
    return cores[: round(cpu)]


def cgroups_writable() -> bool:
    """True when this process can create (and did remove) a child cgroup with a CPU quota."""
    probe = Cgroup.create(f"edgepack-probe-{os.getpid()}", Setting(1.0))
    if probe is None:
        return False
    probe.remove()
    return True


# -- cgroups -------------------------------------------------------------------------------------------------
def _own_cgroups() -> dict[str, str]:
    """Controller -> this process's cgroup path (``""`` is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    return paths


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """``(root, mount point, fstype, super options)`` of the cgroup mounts."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            found.append((fields[3], fields[4], rest[0], set(rest[2].split(","))))
    return found


def _join(mount_root: str, mount_point: str, path: str) -> Path | None:
    if mount_root != "/":
        if not path.startswith(mount_root):
            return None
        path = path[len(mount_root) :]
    return Path(mount_point + path.rstrip("/"))


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class Cgroup:
    """A child cgroup holding the profiled service: CPU quota, memory limit and peak memory; :meth:`remove` it."""

    def __init__(self, version: int, dirs: dict[str, Path]):
        self.version = version
        self.dirs = dirs  # "cpu", "memory" -> folder (the same folder twice on v2)

    @classmethod
    def create(cls, name: str, setting: Setting) -> Cgroup | None:
        """A new child cgroup with ``setting`` applied; None when cgroups are not writable here."""
        try:
            return cls._create_v2(name, setting) or cls._create_v1(name, setting)
        except OSError:
            return None

    @classmethod
    def _create_v2(cls, name: str, setting: Setting) -> Cgroup | None:
        own = _own_cgroups().get("")
        mount = next((m for m in _mounts() if m[2] == "cgroup2"), None)
        if own is None or mount is None:
            return None
        parent = _join(mount[0], mount[1], own)
        if parent is None or "cpu" not in (parent / "cgroup.controllers").read_text().split():
            return None  # a hybrid system: the cpu controller is on v1
        with contextlib.suppress(OSError):  # fails for a non-root cgroup that holds processes
            _write(parent / "cgroup.subtree_control", "+cpu +memory")
        folder = parent / name
        folder.mkdir(mode=0o755)
        group = cls(2, {"cpu": folder, "memory": folder})
        try:
            _write(folder / "cpu.max", f"{int(setting.cpu * CFS_PERIOD_US)} {CFS_PERIOD_US}")
            if setting.memory_gb is not None:
                _write(folder / "memory.max", str(int(setting.memory_gb * GIB)))
        except OSError:
            group.remove()
            return None
        return group

    @classmethod
    def _create_v1(cls, name: str, setting: Setting) -> Cgroup | None:
        own, mounts = _own_cgroups(), _mounts()
        dirs: dict[str, Path] = {}
        for controller in ("cpu", "memory"):
            mount = next((m for m in mounts if m[2] == "cgroup" and controller in m[3]), None)
            if mount is None or controller not in own:
                if controller == "cpu":
                    return None
                continue
            parent = _join(mount[0], mount[1], own[controller])
            if parent is None:
                continue
            folder = parent / name
            folder.mkdir(mode=0o755)
            dirs[controller] = folder
        group = cls(1, dirs)
        try:
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(int(setting.cpu * CFS_PERIOD_US)))
            if setting.memory_gb is not None:
                if "memory" not in dirs:
                    raise OSError("no memory controller")
                _write(dirs["memory"] / "memory.limit_in_bytes", str(int(setting.memory_gb * GIB)))
        except (OSError, KeyError):
            group.remove()
            return None
        return group

    def preexec(self) -> Callable[[], None]:
        """For ``Popen(preexec_fn=...)``: the child joins the cgroup before it runs (its workers follow)."""
        files = sorted({folder / "cgroup.procs" for folder in self.dirs.values()})

        def join() -> None:
            pid = str(os.getpid())
            for f in files:
                _write(f, pid)

        return join

    def peak_memory(self) -> int | None:
        """The most memory the cgroup's processes used, in bytes (None without a memory controller)."""
        folder = self.dirs.get("memory")
        if folder is None:
            return None
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return int((folder / name).read_text().strip())
        return None

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in self.dirs.values():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return sorted(found)

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the cgroup folders (waiting for their processes to be gone)."""
        deadline = time.monotonic() + timeout
        for folder in set(self.dirs.values()):
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.dirs = {}


__all__ = [
    "Cgroup",
    "Setting",
    "affinity_cores",
    "cgroups_writable",
    "check_cpu",
    "check_memory",
    "docker_limits",
    "machine_cpus",
    "parse_duration",
    "parse_list",
    "workers_for",
]
