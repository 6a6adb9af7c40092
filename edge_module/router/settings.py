"""The router's settings: flags over ``EDGEPACK_*`` variables, declared like the scoring module's.

The keys (``EDGEPACK_PRIMARY_KEY``, ``EDGEPACK_SECONDARY_KEY``, ``EDGEPACK_TOKEN_AUTH`` +
``EDGEPACK_TOKEN_SECRET``) and the request limits are the scoring module's own declarations
(:func:`edge_module.settings.same_setting`), so a router and the versions behind it read the same
variables with the same rules. The rest is the router's: where the routes file is, how often the
versions' readiness is polled, how long an upstream may take.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_module.settings import (
    SettingsError,
    auth_mode,
    check_auth,
    same_setting,
)
from edge_module.settings_table import (
    add_arguments,
    env_and_overrides,
    env_reference,
    integer,
    number,
    read_flags,
    setting,
)


@dataclass(frozen=True)
class RouterSettings:
    """Everything the router reads, validated once."""

    routes: str = setting(
        "",
        "EDGEPACK_ROUTES",
        flag="--routes",
        metavar="FILE",
        help="The routes file (JSON, see edge_module.router.routes); re-read when it changes.",
    )
    host: str = setting("0.0.0.0", "EDGEPACK_ROUTER_HOST", flag="--host", metavar="ADDRESS", help="Address.")
    port: int = setting(5000, "EDGEPACK_ROUTER_PORT", parse=integer, flag="--port", help="Port (0: a free one).")
    primary_key: str | None = same_setting("primary_key")
    secondary_key: str | None = same_setting("secondary_key")
    token_auth: bool = same_setting("token_auth")
    token_secret: str | None = same_setting("token_secret")
    max_body_size: int = same_setting("max_body_size")
    max_header_size: int = same_setting("max_header_size")
    max_headers: int = same_setting("max_headers")
    max_url_size: int = same_setting("max_url_size")
    keepalive_timeout: float = same_setting("keepalive_timeout")
    read_timeout: float = same_setting("read_timeout")
    upstream_timeout: float = setting(
        90.0,
        "EDGEPACK_ROUTER_UPSTREAM_TIMEOUT",
        parse=number,
        flag="--upstream-timeout",
        metavar="S",
        help="Seconds a version has to answer a request (else 504); above the versions' scoring timeout.",
    )
    connect_timeout: float = setting(
        5.0,
        "EDGEPACK_ROUTER_CONNECT_TIMEOUT",
        parse=number,
        flag="--connect-timeout",
        metavar="S",
        help="Seconds to open a connection to a version (else it counts as not ready, 502 when pinned).",
    )
    health_interval: float = setting(
        1.0,
        "EDGEPACK_ROUTER_HEALTH_INTERVAL",
        parse=number,
        flag="--health-interval",
        metavar="S",
        help="Seconds between readiness polls of each version (GET /v2/health/ready).",
    )
    reload_interval: float = setting(
        0.2,
        "EDGEPACK_ROUTER_RELOAD_INTERVAL",
        parse=number,
        flag="--reload-interval",
        metavar="S",
        help="Seconds between checks of the routes file (a stat; SIGHUP checks at once).",
    )
    log_level: str = same_setting("log_level")
    access_log: bool = same_setting("access_log")

    def __post_init__(self) -> None:
        if not self.routes:
            raise SettingsError("the router needs a routes file: --routes FILE (or EDGEPACK_ROUTES)")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"invalid port {self.port}: use 1-65535 (0 picks a free port)")
        for name in ("max_body_size", "max_header_size", "max_headers", "max_url_size"):
            if getattr(self, name) < 1:
                raise SettingsError(f"invalid {name.replace('_', ' ')} {getattr(self, name)}: use a positive number")
        for name in ("keepalive_timeout", "read_timeout", "upstream_timeout", "connect_timeout", "health_interval"):
            if not 0 < getattr(self, name) < float("inf"):
                raise SettingsError(f"invalid {name.replace('_', ' ')} {getattr(self, name)}: use a positive number")
        if not 0 < self.reload_interval < float("inf"):
            raise SettingsError(f"invalid reload interval {self.reload_interval}: use a positive number of seconds")
        check_auth(self)

    @property
    def auth_mode(self) -> str | None:
        return auth_mode(self)

    def replace(self, **changes: Any) -> RouterSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RouterSettings:
        """Settings from ``environ`` (default ``os.environ``); ``overrides`` that are not None win."""
        return cls(**env_and_overrides(cls, os.environ if environ is None else environ, overrides))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge_module.router",
        description=textwrap.fill(
            "Route an endpoint's traffic over its versions: weighted by the routes file's shares, health-aware, "
            "pinned by the azureml-model-deployment header. Every flag has environment variables, in brackets "
            "with the default; flags win.",
            100,
        ),
        epilog="Settings from the environment only:\n\n" + env_reference({"Router": RouterSettings}),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, RouterSettings)
    return p


def settings_from_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> RouterSettings:
    args = build_parser().parse_args(argv)
    return RouterSettings.from_env(environ, **read_flags(RouterSettings, vars(args)))
