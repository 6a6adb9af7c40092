"""A whole profile: check the request, build once, measure every setting, recommend, store, return.

The load generator's own top rate is measured once against a trivial endpoint, and its CPU use at
every setting, so the report says whether it could have been the bottleneck.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloud_targets.profiling import limits, run
from cloud_targets.profiling.inputs import bodies_from
from cloud_targets.profiling.limits import Setting
from cloud_targets.profiling.recommend import recommend
from cloud_targets.profiling.report import SCHEMA_VERSION, ModelProfile, save
from packager.errors import InvalidInputError
from packager.image.inference_config import InferenceConfig
from packager.registry import Model
from packager.workspace import Workspace

PROFILES_DIR = "profiles"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(f"profile name {name!r}: use 1-63 lowercase letters, digits and dashes")
    return name


def default_concurrency(cpu: float) -> int:
    """A few connections per core: ``2 x ceil(cpu)``, at least 2."""
    return max(2, 2 * math.ceil(cpu - 1e-9))


def profile(
    workspace: Workspace,
    profile_name: str,
    models: Sequence[Model | str],
    inference_config: InferenceConfig | None,
    input_data: Any,
    cpu: Sequence[float] = (0.5, 1.0),
    memory_gb: Sequence[float | None] = (None,),
    duration_s: float | str = 30.0,
    latency_target_ms: float | None = None,
    concurrency: int | None = None,
    mode: str | None = None,
    latency_percentile: float = 99.0,
    loadgen_processes: int = 1,
    on_stage: Callable[[str], None] | None = None,
) -> ModelProfile:
    """Profile ``models`` at every ``cpu`` x ``memory_gb`` setting (see :meth:`cloud_targets.Model.profile`)."""
    from cloud_targets.services.lifecycle import resolve_models
    from cloud_targets.targets.local import resolve_mode

    check_name(profile_name)
    cpus = sorted({limits.check_cpu(c) for c in cpu})
    if not cpus:
        raise InvalidInputError("cpu: give at least one setting, e.g. cpu=(0.5, 1)")
    mems = sorted({limits.check_memory(m) for m in (memory_gb or (None,))}, key=lambda m: m or math.inf)
    seconds = limits.parse_duration(duration_s)
    if latency_target_ms is not None and not latency_target_ms > 0:
        raise InvalidInputError(f"latency target {latency_target_ms!r} ms: give a positive number of milliseconds")
    if latency_percentile not in run.PERCENTILES:
        raise InvalidInputError(f"latency percentile {latency_percentile:g}: use one of {list(run.PERCENTILES)}")
    if concurrency is not None and not 1 <= int(concurrency) <= 1024:
        raise InvalidInputError(f"concurrency {concurrency!r}: give 1 to 1024 connections")
    if not 1 <= int(loadgen_processes) <= 8:
        raise InvalidInputError(f"load generator processes {loadgen_processes!r}: give 1 to 8")
    bodies = bodies_from(input_data)
    resolved = resolve_models(workspace, models)
    if not resolved:
        raise InvalidInputError("no model to profile: pass at least one registered model (-m NAME[:VERSION])")
    mode = mode or resolve_mode()
    if mode not in ("docker", "process"):
        raise InvalidInputError(f"mode {mode!r}: use docker or process")
    settings = [Setting(c, m) for c in cpus for m in mems]
    if mode == "process" and not limits.cgroups_writable():
        for s in settings:  # refuse what process mode cannot apply before anything is built
            limits.affinity_cores(s.cpu)
            if s.memory_gb is not None:
                raise InvalidInputError(
                    "--memory-gb needs a writable cgroup file system in process mode: run as root, use "
                    "--mode docker, or leave it out"
                )
    stage = on_stage or (lambda _t: None)
    folder = Path(workspace.path) / PROFILES_DIR
    work = folder / f".{profile_name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    warmup = min(5.0, max(1.0, seconds / 5))
    results: list[run.SettingResult] = []
    try:
        stage(f"calibrating the load generator ({loadgen_processes} process)")
        calibration = run.calibrate(bodies, concurrency or default_concurrency(max(cpus)), loadgen_processes)
        stage("building the service" + (" image" if mode == "docker" else "'s content"))
        prepared = run.prepare(workspace, profile_name, resolved, inference_config or InferenceConfig(), mode, work)
        for s in settings:
            conns = int(concurrency or default_concurrency(s.cpu))
            results.append(
                run.measure(prepared, profile_name, s, bodies, conns, seconds, warmup, int(loadgen_processes), stage)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if "prepared" in locals():
            run.release(prepared)
    rec = recommend(results, latency_target_ms, latency_percentile)
    doc = _document(
        profile_name,
        mode,
        resolved,
        seconds,
        latency_target_ms,
        latency_percentile,
        results,
        rec,
        calibration,
        int(loadgen_processes),
    )
    save(folder, profile_name, doc)
    return ModelProfile(workspace, profile_name, doc)


def _document(
    name: str,
    mode: str,
    models: Sequence[Model],
    seconds: float,
    target: float | None,
    percentile: float,
    results: Sequence[run.SettingResult],
    rec: Any,
    calibration: dict[str, Any],
    processes: int,
) -> dict[str, Any]:
    cpus = limits.machine_cpus()
    warnings: list[str] = []
    for r in results:
        if r.load_generator_saturated:
            warnings.append(
                f"cpu {r.cpu:g}: the load generator used {r.load_generator_cpu:.2f} cores (near one "
                "core per process): it may have limited the rate"
            )
        if r.requests_per_second >= 0.8 * calibration["requestsPerSecond"]:
            warnings.append(
                f"cpu {r.cpu:g}: {r.requests_per_second:.0f} requests/s is near the load generator's "
                f"top rate ({calibration['requestsPerSecond']:.0f}/s): the figure is a lower bound"
            )
        if r.cpu + r.load_generator_cpu > cpus - 0.05 and not any("cores" in n for n in r.notes):
            warnings.append(
                f"cpu {r.cpu:g}: this machine has {cpus} CPUs and the load generator needed "
                f"{r.load_generator_cpu:.2f} of them: it competes with the service, which may "
                "serve more on its own"
            )
        if r.success_rate < 1.0:
            warnings.append(f"cpu {r.cpu:g}: {r.success_rate:.2%} of the requests succeeded ({r.errors})")
    return {
        "name": name,
        "schemaVersion": SCHEMA_VERSION,
        "state": "Succeeded",
        "mode": mode,
        "models": [f"{m.name}:{m.version}" for m in models],
        "durationSeconds": seconds,
        "latencyTargetMs": target,
        "latencyPercentile": percentile,
        "settings": [r.to_dict() for r in results],
        "recommendation": rec.to_dict(),
        "deploymentConfig": rec.deployment_config(),
        "loadGenerator": {
            "processes": processes,
            "maxRequestsPerSecond": calibration["requestsPerSecond"],
            "maxRateCpu": calibration["loadGeneratorCpu"],
            "machineCpus": cpus,
            "how": "closed loop, keep-alive connections, separate process(es); its top rate measured against a "
            "trivial endpoint, its CPU use measured at every setting",
        },
        "warnings": warnings,
    }


__all__ = ["PROFILES_DIR", "check_name", "default_concurrency", "profile"]
