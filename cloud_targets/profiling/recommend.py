"""The recommendation: the smallest CPU setting that meets the latency target, and memory from the peak.

With a target: the smallest ``cpu`` whose latency at ``percentile`` (p99 by default) is within
``latency_target_ms`` with at least 99.9 % of the requests succeeding. Without one: the smallest whose
throughput is within 10 % of the best setting's. Memory: the peak seen at the chosen setting x 1.5,
rounded up to 0.1 GB (as v1's profiler did), at least 0.1 GB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloud_targets.profiling.run import SettingResult, pct_key

MIN_SUCCESS = 0.999
THROUGHPUT_SHARE = 0.9
MEMORY_HEADROOM = 1.5
GIB = 1024**3


@dataclass
class Recommendation:
    cpu: float | None
    memory_gb: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memoryInGB": self.memory_gb, "reason": self.reason}

    def deployment_config(self) -> dict[str, Any] | None:
        """The ``deploymentconfig.json`` snippet (v1's ``containerResourceRequirements``)."""
        if self.cpu is None:
            return None
        return {"containerResourceRequirements": {"cpu": self.cpu, "memoryInGB": self.memory_gb}}


def memory_gb(peak_bytes: int | None) -> float | None:
    """``peak x 1.5`` rounded up to 0.1 GB (None without a measured peak)."""
    if not peak_bytes:
        return None
    return max(0.1, math.ceil(peak_bytes * MEMORY_HEADROOM / GIB * 10 - 1e-9) / 10)


def recommend(
    results: Sequence[SettingResult], latency_target_ms: float | None = None, percentile: float = 99.0
) -> Recommendation:
    """Pick the setting (see the module docstring); ``cpu=None`` when none qualifies, with the reason."""
    ordered = sorted(results, key=lambda r: (r.cpu, r.memory_gb or math.inf))
    if not ordered:
        return Recommendation(None, None, "nothing was measured")
    key = pct_key(percentile)
    if latency_target_ms is not None:
        fits = [r for r in ordered if r.success_rate >= MIN_SUCCESS and r.latency_ms.get(key, math.inf)
                <= latency_target_ms]  # fmt: skip
        if not fits:
            best = min(ordered, key=lambda r: r.latency_ms.get(key, math.inf))
            return Recommendation(
                None,
                None,
                f"no setting met {key} <= {latency_target_ms:g} ms with >= {MIN_SUCCESS:.1%} success (best: "
                f"{best.latency_ms.get(key, math.inf):.1f} ms at cpu {best.cpu:g}); profile more CPU or relax "
                "the target",
            )
        chosen = fits[0]
        reason = f"the smallest setting with {key} {chosen.latency_ms[key]:.1f} ms <= {latency_target_ms:g} ms"
    else:
        good = [r for r in ordered if r.success_rate >= MIN_SUCCESS] or ordered
        top = max(r.requests_per_second for r in good)
        chosen = next(r for r in good if r.requests_per_second >= THROUGHPUT_SHARE * top)
        reason = (f"no latency target: the smallest setting within {1 - THROUGHPUT_SHARE:.0%} of the best "
                  f"throughput ({chosen.requests_per_second:.0f} of {top:.0f} requests/s)")  # fmt: skip
    return Recommendation(chosen.cpu, memory_gb(chosen.peak_memory_bytes), reason)


__all__ = ["Recommendation", "memory_gb", "recommend"]
