"""Per-version state (readiness, counters, latencies) and the smooth weighted round robin over the split.

The weights are :func:`~edge_module.router.routes.split` of the routes table and the ready
versions (the one traffic rule); the pick is nginx's smooth weighted round robin: each pick adds
every weight to its version's running score, takes the highest and subtracts the total from it,
so over any whole cycle the split is exact and the picks of a version are spread out, with no
randomness and no stickiness.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from edge_module.router.routes import RouteTable, VersionRoute, split

if TYPE_CHECKING:
    from edge_module.router.upstream import Pool

LATENCY_WINDOW = 2048  # recent requests the percentiles are computed over


class VersionState:
    """One version as the router runs it: its route, connection pool, readiness and metrics."""

    __slots__ = (
        "errors",
        "header",
        "in_flight",
        "latencies",
        "name",
        "pool",
        "ready",
        "ready_reason",
        "requests",
        "route",
    )

    def __init__(self, route: VersionRoute, pool: Pool):
        self.route = route
        self.name = route.name
        self.pool = pool
        self.header = b"azureml-model-deployment: " + route.name.encode("latin-1", "replace") + b"\r\n"
        self.ready = False
        self.ready_reason = "not polled yet"
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)

    def done(self, status: int, seconds: float) -> None:
        """Count one answered request (5xx, the router's 502/504 included, are errors)."""
        self.in_flight -= 1
        self.requests += 1
        if status >= 500:
            self.errors += 1
        self.latencies.append(seconds)

    def percentiles(self) -> dict[str, float | None]:
        data = sorted(self.latencies)
        if not data:
            return {"p50": None, "p99": None}
        n = len(data)
        return {
            "p50": round(data[(n - 1) // 2] * 1000, 3),
            "p99": round(data[min(n - 1, int(n * 0.99))] * 1000, 3),
        }


class Balancer:
    """Smooth weighted round robin over the effective shares of the ready versions."""

    __slots__ = ("entries", "shares")

    def __init__(self, table: RouteTable, versions: dict[str, VersionState], previous: Balancer | None = None):
        """``previous``: the balancer this one replaces; its running scores carry over (by version name), so
        frequent reloads or readiness changes do not restart the cycle and starve a small share."""
        ready = [name for name, v in versions.items() if v.ready]
        self.shares = split(table, ready)
        scores = {entry[0].name: entry[2] for entry in previous.entries} if previous is not None else {}
        self.entries = [
            [versions[name], share, scores.get(name, 0.0)] for name, share in self.shares.items() if name in versions
        ]

    def pick(self) -> VersionState | None:
        entries = self.entries
        if not entries:
            return None
        best = entries[0]
        total = 0.0
        for entry in entries:
            entry[2] += entry[1]
            total += entry[1]
            if entry[2] > best[2]:
                best = entry
        best[2] -= total
        return best[0]
