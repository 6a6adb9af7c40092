"""One profiled setting: start the service with its limits, wait until ready, warm up, load, measure, stop.

The service is built once per profile (:func:`prepare`: the image in the engine, or staged content) and
started per setting: a container with ``nano_cpus``/``mem_limit`` (Docker mode) or ``python -m
edge_module`` in a child cgroup or pinned to whole cores (process mode), with ``ceil(cpu)`` workers. It is
always stopped, and its cgroup removed, before the next setting starts.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud_targets.profiling import limits, load
from cloud_targets.profiling.limits import Setting
from cloud_targets.targets.base import FAILED, HEALTHY
from cloud_targets.targets.local import LocalTarget, docker_mode, process
from cloud_targets.targets.local.health import free_port
from packager.errors import EdgepackError
from packager.image.inference_config import InferenceConfig
from packager.registry import Model
from packager.workspace import Workspace

PROFILE_LABEL = "edgepack.profile"
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
READY_TIMEOUT_S = 180.0
SATURATED_CPU = 0.85  # a generator process using this share of one core may be what limits the rate


def pct_key(p: float) -> str:
    """``99.9`` -> ``"p99.9"``, ``50`` -> ``"p50"``."""
    return f"p{p:g}"


@dataclass
class Prepared:
    """What every setting runs: an image (Docker) or staged content (process), in ``mode``."""

    mode: str
    target: LocalTarget
    built: dict[str, Any]
    work: Path


@dataclass
class SettingResult:
    """The figures measured at one setting."""

    cpu: float
    memory_gb: float | None
    workers: int
    concurrency: int
    limit_method: str
    duration_s: float
    requests: int = 0
    succeeded: int = 0
    requests_per_second: float = 0.0
    success_rate: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    peak_memory_source: str | None = None
    load_generator_cpu: float = 0.0
    load_generator_saturated: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "memoryInGB": self.memory_gb,
            "workers": self.workers,
            "concurrency": self.concurrency,
            "limitMethod": self.limit_method,
            "durationSeconds": round(self.duration_s, 3),
            "requests": self.requests,
            "succeeded": self.succeeded,
            "requestsPerSecond": round(self.requests_per_second, 2),
            "successRate": round(self.success_rate, 6),
            "latencyMs": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "errors": dict(self.errors),
            "peakMemoryBytes": self.peak_memory_bytes,
            "peakMemorySource": self.peak_memory_source,
            "loadGeneratorCpu": round(self.load_generator_cpu, 3),
            "loadGeneratorSaturated": self.load_generator_saturated,
            "notes": list(self.notes),
        }


def prepare(workspace: Workspace, name: str, models: Sequence[Model], config: InferenceConfig, mode: str,
            work: Path) -> Prepared:  # fmt: skip
    """Build the image (Docker) or stage the content (process) once for every setting."""
    target = LocalTarget(workspace, work, mode=mode)
    built = target.prepare(f"profile-{name}", models, config)
    return Prepared(mode, target, built, work)


def release(prepared: Prepared) -> None:
    """Drop the profile's image (Docker: shared layers stay cached) or staged content."""
    if prepared.mode == "docker":
        prepared.target.remove_image(prepared.built.get("image"))
    shutil.rmtree(prepared.work, ignore_errors=True)


# -- starting and stopping the service ---------------------------------------------------------------------
@dataclass
class _Running:
    port: int
    method: str
    peak: Callable[[], tuple[int | None, str | None]]
    stop: Callable[[], None]
    status: Callable[[], Any]
    loadgen_cores: list[int] | None = None


def _env(setting: Setting) -> dict[str, str]:
    return {"EDGEPACK_WORKERS": str(limits.workers_for(setting.cpu))}


@contextlib.contextmanager
def _serving(prepared: Prepared, name: str, setting: Setting) -> Iterator[_Running]:
    port = free_port()
    if prepared.mode == "docker":
        with _container(prepared, name, setting, port) as running:
            yield running
    else:
        with _process(prepared, name, setting, port) as running:
            yield running


@contextlib.contextmanager
def _container(prepared: Prepared, name: str, setting: Setting, port: int) -> Iterator[_Running]:
    import docker.errors

    client = prepared.target._docker()
    label = f"{name}-{int(time.time() * 1000):x}"
    container = client.containers.run(
        prepared.built["image"],
        name=f"edgepack-profile-{label}",
        detach=True,
        network_mode="host",
        environment={**_env(setting), "EDGEPACK_PORT": str(port), "EDGEPACK_HOST": "127.0.0.1"},
        labels={PROFILE_LABEL: name},
        **limits.docker_limits(setting),
    )
    sampler = _StatsSampler(container)
    handle = {"mode": "docker", "container_id": container.id, "port": port}

    def peak() -> tuple[int | None, str | None]:
        for path in _container_cgroup_files(container.id):
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text().strip()), "cgroup"
        return sampler.peak, "docker stats" if sampler.peak else None

    try:
        yield _Running(port, "docker", peak, lambda: None, lambda: docker_mode.status(client, handle))
    finally:
        sampler.stop()
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def _container_cgroup_files(container_id: str) -> list[Path]:
    """Where a container's peak memory may be read (v1 cgroupfs, v2 cgroupfs and systemd drivers)."""
    root = Path("/sys/fs/cgroup")
    return [
        root / "memory" / "docker" / container_id / "memory.max_usage_in_bytes",
        root / "docker" / container_id / "memory.peak",
        root / "system.slice" / f"docker-{container_id}.scope" / "memory.peak",
    ]


class _StatsSampler:
    """The container's memory use from ``docker stats`` once a second (max kept): the fallback peak."""

    def __init__(self, container: Any):
        self.container = container
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="profile-stats")
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the container going away ends the stream
            for doc in self.container.stats(stream=True, decode=True):
                mem = doc.get("memory_stats") or {}
                value = max(int(mem.get("max_usage") or 0), int(mem.get("usage") or 0))
                if value:
                    self.peak = max(self.peak or 0, value)
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def _process(prepared: Prepared, name: str, setting: Setting, port: int) -> Iterator[_Running]:
    import json

    content = Path(prepared.built["image"])
    info = json.loads((content / ".edgepack-local.json").read_text())
    group = limits.Cgroup.create(f"edgepack-profile-{name}-{port}", setting)
    cores: list[int] | None = None
    loadgen_cores: list[int] | None = None
    if group is not None:
        preexec, method = group.preexec(), f"cgroup v{group.version}"
    else:
        cores = limits.affinity_cores(setting.cpu)
        rest = [c for c in sorted(limits.os.sched_getaffinity(0)) if c not in cores]
        loadgen_cores = rest or None
        preexec, method = (lambda: limits.os.sched_setaffinity(0, cores)), "cpu affinity"
        if setting.memory_gb is not None:
            raise EdgepackError(
                "a memory limit needs a writable cgroup file system in process mode: run as root, use "
                "--mode docker, or leave --memory-gb out"
            )
    service_dir = prepared.work / f"run-{port}"
    service_dir.mkdir(parents=True, exist_ok=True)
    handle: dict[str, Any] = {}
    try:
        handle = process.start(service_dir, content, Path(info["model_dir"]), info["entry_script"], port,
                               _env(setting), preexec=preexec)  # fmt: skip

        def peak() -> tuple[int | None, str | None]:
            if group is not None and group.peak_memory() is not None:
                return group.peak_memory(), "cgroup"
            value = _tree_hwm(int(handle["pid"]))
            return value, "VmHWM" if value else None

        yield _Running(port, method, peak, lambda: None, lambda: process.status(handle, service_dir), loadgen_cores)
    finally:
        if handle:
            process.stop(handle)
        if group is not None:
            group.remove()


def _tree_hwm(pgid: int) -> int | None:
    """The summed VmHWM (peak resident memory) of the process group ``pgid`` (an upper bound: shared pages twice)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total or None


def _wait_ready(running: _Running, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        status = running.status()
        if status.state == HEALTHY:
            return
        if status.state == FAILED:
            raise EdgepackError(f"the service did not start: {status.error or ''}\n{logs()}".strip())
        time.sleep(0.2)
    raise EdgepackError(f"the service was not ready after {READY_TIMEOUT_S:.0f} s:\n{logs()}")


# -- one setting -----------------------------------------------------------------------------------------------
def measure(
    prepared: Prepared,
    name: str,
    setting: Setting,
    bodies: Sequence[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    loadgen_processes: int = 1,
    on_stage: Callable[[str], None] | None = None,
) -> SettingResult:
    """Serve at ``setting``, load it for ``warmup_s`` + ``duration_s``, return the figures; the service is stopped."""
    stage = on_stage or (lambda _text: None)
    stage(f"{setting.label}: starting the service")
    with _serving(prepared, name, setting) as running:
        _wait_ready(running, lambda: "")
        stage(f"{setting.label}: warming up {warmup_s:g} s, measuring {duration_s:g} s at {concurrency} connections")
        procs = load.start("127.0.0.1", running.port, "/score", bodies, concurrency, loadgen_processes, warmup_s,
                           duration_s, affinity=running.loadgen_cores)  # fmt: skip
        docs = load.collect(procs, timeout=warmup_s + duration_s + 60)
        peak, source = running.peak()
        alive = running.status().state != FAILED
    result = summarize(docs, setting, concurrency, running.method)
    result.peak_memory_bytes, result.peak_memory_source = peak, source
    if not alive:
        result.notes.append("the service failed during the load (out of memory?)")
    if running.loadgen_cores:
        result.notes.append(f"the load generator ran on cores {running.loadgen_cores}, the service on the others")
    return result


def summarize(docs: Sequence[dict[str, Any]], setting: Setting, concurrency: int, method: str) -> SettingResult:
    """Merge the generator processes' documents into one :class:`SettingResult`."""
    window = max(float(d["window_s"]) for d in docs)
    lat = np.concatenate([np.asarray(d["latencies_us"], dtype=np.float64) for d in docs]) / 1000.0
    errors: dict[str, int] = {}
    for d in docs:
        for k, v in d["errors"].items():
            errors[k] = errors.get(k, 0) + int(v)
    ok = sum(int(d["ok"]) for d in docs)
    result = SettingResult(setting.cpu, setting.memory_gb, limits.workers_for(setting.cpu), concurrency, method,
                           window)  # fmt: skip
    result.requests, result.succeeded, result.errors = int(lat.size), ok, errors
    result.requests_per_second = ok / window if window > 0 else 0.0
    result.success_rate = ok / lat.size if lat.size else 0.0
    if lat.size:
        values = np.percentile(lat, PERCENTILES)
        result.latency_ms = {pct_key(p): float(v) for p, v in zip(PERCENTILES, values, strict=True)}
        result.latency_ms["mean"] = float(lat.mean())
        result.latency_ms["max"] = float(lat.max())
    per_process = [float(d["cpu_s"]) / window for d in docs] if window > 0 else [0.0]
    result.load_generator_cpu = sum(per_process)
    result.load_generator_saturated = max(per_process) >= SATURATED_CPU
    return result


def calibrate(bodies: Sequence[str], concurrency: int, processes: int, seconds: float = 2.0) -> dict[str, Any]:
    """The generator's top rate against the trivial endpoint (at least 32 connections): what it can drive at most."""
    concurrency = max(32, concurrency)
    server, port = load.start_trivial()
    try:
        procs = load.start("127.0.0.1", port, "/score", bodies, concurrency, processes, 0.5, seconds)
        docs = load.collect(procs, timeout=seconds + 30)
    finally:
        server.kill()
        server.wait()
    window = max(float(d["window_s"]) for d in docs)
    ok = sum(int(d["ok"]) for d in docs)
    return {
        "requestsPerSecond": round(ok / window, 1),
        "loadGeneratorCpu": round(sum(float(d["cpu_s"]) for d in docs) / window, 3),
        "connections": concurrency,
        "processes": processes,
    }


__all__ = ["PERCENTILES", "Prepared", "SettingResult", "calibrate", "measure", "pct_key", "prepare", "release"]
