"""The profile's result: :class:`ModelProfile` (v1's shape), its JSON document and schema, the rich table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from packager.fs import write_atomic

SCHEMA_VERSION = 1
_LATENCY = {
    "type": "object",
    "required": ["p50", "p90", "p95", "p99", "p99.9", "mean", "max"],
    "additionalProperties": {"type": "number", "minimum": 0},
}
_SETTING = {
    "type": "object",
    "required": ["cpu", "memoryInGB", "workers", "concurrency", "limitMethod", "requests", "requestsPerSecond",
                 "successRate", "latencyMs", "peakMemoryBytes", "loadGeneratorCpu", "loadGeneratorSaturated"],
    "properties": {
        "cpu": {"type": "number", "exclusiveMinimum": 0},
        "memoryInGB": {"type": ["number", "null"]},
        "workers": {"type": "integer", "minimum": 1},
        "concurrency": {"type": "integer", "minimum": 1},
        "limitMethod": {"type": "string"},
        "requests": {"type": "integer", "minimum": 0},
        "requestsPerSecond": {"type": "number", "minimum": 0},
        "successRate": {"type": "number", "minimum": 0, "maximum": 1},
        "latencyMs": {"anyOf": [_LATENCY, {"type": "object", "maxProperties": 0}]},
        "errors": {"type": "object", "additionalProperties": {"type": "integer"}},
        "peakMemoryBytes": {"type": ["integer", "null"]},
        "loadGeneratorCpu": {"type": "number", "minimum": 0},
        "loadGeneratorSaturated": {"type": "boolean"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}  # fmt: skip
#: The JSON document ``edgepack profile --json`` prints and ``ModelProfile.get_details()`` returns.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "schemaVersion", "mode", "models", "durationSeconds", "latencyPercentile", "settings",
                 "recommendation", "loadGenerator", "state"],
    "properties": {
        "name": {"type": "string"},
        "schemaVersion": {"const": SCHEMA_VERSION},
        "state": {"enum": ["Succeeded", "Failed"]},
        "mode": {"enum": ["docker", "process"]},
        "models": {"type": "array", "items": {"type": "string"}},
        "durationSeconds": {"type": "number"},
        "latencyTargetMs": {"type": ["number", "null"]},
        "latencyPercentile": {"type": "number"},
        "settings": {"type": "array", "minItems": 1, "items": _SETTING},
        "recommendation": {
            "type": "object",
            "required": ["cpu", "memoryInGB", "reason"],
            "properties": {"cpu": {"type": ["number", "null"]}, "memoryInGB": {"type": ["number", "null"]},
                           "reason": {"type": "string"}},
        },
        "deploymentConfig": {"type": ["object", "null"]},
        "loadGenerator": {
            "type": "object",
            "required": ["processes", "maxRequestsPerSecond", "machineCpus"],
        },
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}  # fmt: skip


class ModelProfile:
    """A finished profile (v1's ``ModelProfile``): the recommendation, the figures of the recommended
    setting (or of the best one without a recommendation), and every setting in :meth:`get_details`."""

    def __init__(self, workspace: Any, name: str, doc: dict[str, Any]):
        self.workspace = workspace
        self.name = name
        self._doc = doc
        self.recommended_cpu: float | None = doc["recommendation"]["cpu"]
        self.recommended_memory: float | None = doc["recommendation"]["memoryInGB"]
        row = self._row()
        lat = row.get("latencyMs", {}) if row else {}
        self.requests_per_second: float | None = row["requestsPerSecond"] if row else None
        self.latency_percentile_50 = lat.get("p50")
        self.latency_percentile_90 = lat.get("p90")
        self.latency_percentile_95 = lat.get("p95")
        self.latency_percentile_99 = lat.get("p99")
        self.latency_percentile_99_9 = lat.get("p99.9")
        self.state = doc.get("state", "Succeeded")
        self.error = None

    def _row(self) -> dict[str, Any] | None:
        rows = self._doc["settings"]
        chosen = [r for r in rows if r["cpu"] == self.recommended_cpu]
        if chosen:
            return chosen[0]
        return max(rows, key=lambda r: r["requestsPerSecond"]) if rows else None

    def wait_for_completion(self, show_output: bool = False) -> None:
        """Profiles run synchronously: nothing to wait for (kept for v1 code)."""

    def get_details(self) -> dict[str, Any]:
        """The whole result document (see :data:`SCHEMA`)."""
        return json.loads(json.dumps(self._doc))

    def serialize(self) -> dict[str, Any]:
        return self.get_details()

    def __repr__(self) -> str:
        return (f"ModelProfile(name={self.name!r}, recommended_cpu={self.recommended_cpu}, "
                f"recommended_memory={self.recommended_memory}, "
                f"requests_per_second={self.requests_per_second})")  # fmt: skip


def save(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    """Store the document as ``<folder>/<name>.json`` (atomic)."""
    path = folder / f"{name}.json"
    write_atomic(path, json.dumps(doc, indent=2).encode() + b"\n", mode=0o644)
    return path


def table(doc: dict[str, Any]) -> Table:
    """One row per setting: throughput, latency percentiles, success, peak memory, load generator CPU."""
    t = Table(
        title=f"profile {doc['name']} ({doc['mode']} mode, {doc['durationSeconds']:g} s per setting; latency in ms)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("cpu", "mem GB", "conn", "req/s", "p50", "p90", "p95", "p99", "p99.9", "ok", "peak MB", "gen cpu"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in doc["settings"]:
        lat = r["latencyMs"]
        peak = r["peakMemoryBytes"]
        t.add_row(
            f"{r['cpu']:g}",
            "-" if r["memoryInGB"] is None else f"{r['memoryInGB']:g}",
            str(r["concurrency"]),
            f"{r['requestsPerSecond']:.0f}",
            *(f"{lat[k]:.2f}" if k in lat else "-" for k in ("p50", "p90", "p95", "p99", "p99.9")),
            f"{r['successRate']:.1%}",
            "-" if peak is None else f"{peak / 2**20:.0f}",
            f"{r['loadGeneratorCpu']:.2f}" + ("!" if r["loadGeneratorSaturated"] else ""),
        )
    return t


__all__ = ["SCHEMA", "ModelProfile", "save", "table"]
