"""The routes file: which versions an endpoint has, where they listen, and their traffic shares.

JSON, written atomically (temp file + rename) by whoever manages the endpoint, read by the router::

    {
      "format": 1,
      "endpoint": "my-endpoint",
      "revision": 7,                       # bumped on every change; GET /-/router reports the one in force
      "versions": [
        {"name": "blue",  "url": "http://127.0.0.1:5001", "traffic": 80, "default": true,  "control": true},
        {"name": "green", "url": "http://127.0.0.1:5002", "traffic": 20, "default": false, "control": false}
      ]
    }

``url`` is the version's scoring module base URL (the router appends the request's path). ``traffic``
is a percentage (0-100); shares sum to at most 100 and what is left goes to the default version (v1's
rule; v2's ``traffic`` map sums to exactly 100 or all 0). At most one default and one control
version; with versions and no default flagged, the first is the default. Secrets are never in this
file: the router reads its keys from the environment like the scoring module does.

:func:`split` is the one place the traffic rule lives: the router applies it with live readiness,
the Kubernetes generator with every version ready.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = 1
PIN_HEADER = "azureml-model-deployment"


class RoutesError(ValueError):
    """A routes file or traffic map that breaks the rules; the message names the problem and the fix."""


@dataclass(frozen=True)
class VersionRoute:
    """One version: its name, base URL, declared share (percent) and flags."""

    name: str
    url: str
    traffic: float = 0.0
    default: bool = False
    control: bool = False


@dataclass(frozen=True)
class RouteTable:
    """An endpoint's versions as the router sees them (see the module docstring for the format)."""

    endpoint: str
    versions: tuple[VersionRoute, ...] = ()
    revision: int = 0
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def default(self) -> VersionRoute | None:
        """The default version: the one flagged, else the first."""
        for version in self.versions:
            if version.default:
                return version
        return self.versions[0] if self.versions else None

    def version(self, name: str) -> VersionRoute | None:
        return next((v for v in self.versions if v.name == name), None)

    def validate(self) -> RouteTable:
        """Raise :class:`RoutesError` unless the table keeps the rules; returns itself."""
        names = [v.name for v in self.versions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RoutesError(f"version names must be unique in an endpoint: {', '.join(dupes)} given twice")
        for v in self.versions:
            if not isinstance(v.traffic, int | float) or math.isnan(v.traffic) or not 0 <= v.traffic <= 100:
                raise RoutesError(f"version {v.name!r}: traffic is a percentage, give 0 to 100, not {v.traffic!r}")
        total = sum(v.traffic for v in self.versions)
        if total > 100 + 1e-9:
            shares = ", ".join(f"{v.name}={v.traffic:g}" for v in self.versions)
            raise RoutesError(f"traffic shares add up to {total:g} (> 100): {shares}; lower some so they sum to 100")
        for flag in ("default", "control"):
            flagged = [v.name for v in self.versions if getattr(v, flag)]
            if len(flagged) > 1:
                raise RoutesError(f"at most one {flag} version per endpoint: {', '.join(flagged)} are all {flag}")
        return self

    def to_json(self) -> str:
        body = {
            "format": self.format,
            "endpoint": self.endpoint,
            "revision": self.revision,
            "versions": [asdict(v) for v in self.versions],
            **self.extra,
        }
        return json.dumps(body, indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteTable:
        if not isinstance(data, Mapping):
            raise RoutesError("a routes file is a JSON object with 'endpoint' and 'versions'")
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise RoutesError(f"routes format {fmt!r} is not supported by this router (it reads format {FORMAT})")
        raw = data.get("versions", [])
        if not isinstance(raw, list):
            raise RoutesError("'versions' must be a list of {name, url, traffic, default, control}")
        versions = []
        for item in raw:
            if (
                not isinstance(item, Mapping)
                or not isinstance(item.get("name"), str)
                or not isinstance(item.get("url"), str)
            ):
                raise RoutesError(f"each version needs a string 'name' and 'url', got {item!r}")
            versions.append(
                VersionRoute(
                    name=item["name"],
                    url=item["url"].rstrip("/"),
                    traffic=float(item.get("traffic", 0) or 0),
                    default=bool(item.get("default", False)),
                    control=bool(item.get("control", False)),
                )
            )
        known = {"format", "endpoint", "revision", "versions"}
        extra = {k: v for k, v in data.items() if k not in known}
        table = cls(str(data.get("endpoint", "")), tuple(versions), int(data.get("revision", 0) or 0), fmt, extra)
        return table.validate()

    @classmethod
    def from_json(cls, text: str | bytes) -> RouteTable:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RoutesError(f"routes file is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def split(table: RouteTable, ready: Iterable[str] | None = None) -> dict[str, float]:
    """Effective traffic shares (percent, summing to 100, or empty when nothing can take traffic).

    ``ready`` names the versions that can take traffic (``None``: all). The rule: each ready version
    takes its declared share; what is unassigned, and the share of every version that is not ready,
    goes to the default version; when the default is not ready either, that remainder is spread over
    the ready versions in proportion to their shares (versions declared at 0 stay at 0). A version at
    0 is reachable only by the ``azureml-model-deployment`` header.
    """
    ready_set = {v.name for v in table.versions} if ready is None else set(ready)
    live = [v for v in table.versions if v.name in ready_set]
    if not live:
        return {}
    shares = {v.name: float(v.traffic) for v in live}
    remainder = 100.0 - sum(shares.values())
    default = table.default
    if default is not None and default.name in ready_set:
        shares[default.name] += remainder
    else:
        weighted = sum(shares.values())
        if weighted <= 0:
            return {}
        shares = {name: s + remainder * s / weighted for name, s in shares.items()}
    return {name: s for name, s in shares.items() if s > 0}


__all__ = ["FORMAT", "PIN_HEADER", "RouteTable", "RoutesError", "VersionRoute", "split"]
