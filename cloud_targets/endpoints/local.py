"""The Local endpoint target: each version a local service (process or Docker), the router a local process.

Zero-drop :meth:`LocalEndpointTarget.apply`:

1. versions that are new or changed (image or settings differ) start as new instances on free ports
   (a changed version runs old and new side by side: blue/green inside the version) and are waited for
   until ready; a failure stops only what was just started, the endpoint keeps serving as before;
2. ``routes.json`` is written atomically with the spec's (bumped) revision;
3. the router (started on first use) is polled on ``GET /-/router`` until that revision is in force and
   every version is ready in its view;
4. removed and replaced instances are drained (the router's and the instance's own in-flight count at 0)
   and only then stopped (SIGTERM: the scoring module finishes what it holds).

Auth: the router checks the endpoint's keys or tokens; versions run **without auth, bound to 127.0.0.1**
(a local service's default), reached only through loopback. Rotating a key restarts the router alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cloud_targets.endpoints import router_process
from cloud_targets.endpoints.spec import EndpointDeployed, EndpointSpec, VersionSpec
from cloud_targets.targets.base import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, ServiceSpec, TargetStatus
from cloud_targets.targets.local import LocalTarget, resolve_mode
from cloud_targets.targets.local.health import free_port, uris
from packager.errors import EdgepackError
from packager.fs import write_atomic
from packager.image.inference_config import InferenceConfig
from packager.registry import Model
from packager.workspace import Workspace

log = logging.getLogger("cloud_targets.endpoints")

ROUTES_FILE = "routes.json"
VERSIONS_DIR = "versions"
ROUTER = "(router)"  # the router's entry in state(): never a valid version name
READY_TIMEOUT_S = 300.0
SWITCH_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.05
AUTH_ENV = ("EDGEPACK_PRIMARY_KEY", "EDGEPACK_SECONDARY_KEY", "EDGEPACK_TOKEN_SECRET", "EDGEPACK_TOKEN_AUTH")


class EndpointApplyError(EdgepackError):
    """``apply`` failed after the split was switched: ``handle`` says what runs now (to be recorded)."""

    def __init__(self, message: str, handle: dict[str, Any] | None = None, logs: str = ""):
        super().__init__(message)
        self.handle = handle
        self.logs = logs


def fingerprint(service: ServiceSpec) -> str:
    """What makes a version's instance reusable: its image (or staged content) and plain settings."""
    doc = {"image": service.image, "env": {k: v for k, v in sorted(service.env.items()) if k not in AUTH_ENV}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def credential(spec_secrets: Mapping[str, str], auth_mode: str) -> str | None:
    """A credential the router accepts for its own status route: the primary key or a fresh token."""
    if auth_mode == "token" and spec_secrets.get("EDGEPACK_TOKEN_SECRET"):
        from edge_module.server.auth import mint_token

        return mint_token(spec_secrets["EDGEPACK_TOKEN_SECRET"], ttl=300).access_token
    return spec_secrets.get("EDGEPACK_PRIMARY_KEY") or None


class LocalEndpointTarget:
    """Implements :class:`cloud_targets.endpoints.spec.EndpointTarget` on this machine."""

    compute_type: ClassVar[str] = "LOCAL"

    def __init__(
        self,
        workspace: Workspace,
        endpoint_dir: Path,
        mode: str | None = None,
        port: int | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
    ):
        self.workspace = workspace
        self.endpoint_dir = Path(endpoint_dir)
        self.mode = mode or resolve_mode()
        self.port = port
        self.ready_timeout = ready_timeout
        self._targets: dict[str, LocalTarget] = {}

    # -- versions as local services ------------------------------------------------------------------
    def version_dir(self, version: str) -> Path:
        folder = self.endpoint_dir / VERSIONS_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / version
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def version_target(self, version: str) -> LocalTarget:
        if version not in self._targets:
            self._targets[version] = LocalTarget(self.workspace, self.version_dir(version), self.mode)
        return self._targets[version]

    def prepare(self, version: str, models: Sequence[Model], config: InferenceConfig) -> dict[str, Any]:
        """Build what ``version`` runs (an image in the engine, or staged content), as a local service does."""
        name = f"{self.endpoint_dir.name}-{version}"
        return self.version_target(version).prepare(name, models, config)

    def _start(self, version: VersionSpec, serial: int) -> dict[str, Any]:
        instance = f"{self.endpoint_dir.name}-{version.name}-{serial}"
        port = free_port()
        spec = ServiceSpec(
            name=instance,
            image=version.service.image,
            config=version.service.config,
            env={k: v for k, v in version.service.env.items() if k not in AUTH_ENV},  # no auth: loopback only
            port=port,
        )
        deployed = self.version_target(version.name).deploy(spec, previous=None)
        return {
            "instance": instance,
            "handle": deployed.handle,
            "image": version.service.image,
            "fingerprint": fingerprint(version.service),
            "url": f"http://127.0.0.1:{port}",
            "port": port,
        }

    def _instance_state(self, version: str, inst: Mapping[str, Any]) -> TargetStatus:
        return self.version_target(version).state(inst["handle"])

    def _stop(self, version: str, inst: Mapping[str, Any], keep_content: str | None = None) -> None:
        self.version_target(version).delete(inst["handle"], keep_content=keep_content, name=inst["instance"])

    def _wait_ready(self, started: Mapping[str, Mapping[str, Any]]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        waiting = dict(started)
        while waiting:
            for name, inst in list(waiting.items()):
                status = self._instance_state(name, inst)
                if status.state == HEALTHY:
                    del waiting[name]
                elif status.state == FAILED:
                    logs = self.version_target(name).logs(inst["handle"], 200)
                    raise EndpointApplyError(f"version {name} failed to start: {status.error or 'see its logs'}",
                                             logs=logs)  # fmt: skip
            if waiting and time.monotonic() > deadline:
                names = ", ".join(waiting)
                raise EndpointApplyError(f"version(s) {names} not ready after {self.ready_timeout:g} s; see their logs")
            if waiting:
                time.sleep(POLL_S)

    # -- the EndpointTarget interface -------------------------------------------------------------------
    def apply(self, spec: EndpointSpec, previous: Mapping[str, Any] | None = None) -> EndpointDeployed:
        """Make the running endpoint match ``spec`` without dropping a request (see the module docstring)."""
        prev = dict(previous or {})
        prev_versions: dict[str, dict[str, Any]] = dict(prev.get("versions") or {})
        port = int(self.port or prev.get("port") or free_port())
        serial = int(prev.get("serial") or 0)
        keep: dict[str, dict[str, Any]] = {}
        started: dict[str, dict[str, Any]] = {}
        try:
            for version in spec.versions:
                old = prev_versions.get(version.name)
                if old and old.get("fingerprint") == fingerprint(version.service) and self._usable(version.name, old):
                    keep[version.name] = old
                    continue
                serial += 1
                started[version.name] = self._start(version, serial)
            self._wait_ready(started)
        except BaseException:  # Ctrl-C too: stop only what this call started; the endpoint serves as before
            for name, inst in started.items():
                self._stop(name, inst, keep_content=(prev_versions.get(name) or {}).get("image"))
                if name not in prev_versions:
                    shutil.rmtree(self.endpoint_dir / VERSIONS_DIR / name, ignore_errors=True)
                    self._targets.pop(name, None)
            raise
        current = {**keep, **started}
        handle: dict[str, Any] = {
            "mode": self.mode,
            "port": port,
            "serial": serial,
            "routes": str(self.endpoint_dir / ROUTES_FILE),
            "router": prev.get("router"),
            "versions": current,
        }
        retired = [(n, h) for n, h in prev_versions.items() if n not in current]
        retired += [(n, prev_versions[n]) for n in started if n in prev_versions]
        # instances an earlier switch that did not complete left running (the record's "retired")
        retired += [(str(h["version"]), h) for h in (prev.get("retired") or {}).values()]
        try:
            self._switch(spec, handle)
        except BaseException as exc:
            # the routes may point at the new instances already: keep everything running, say what runs
            handle["retired"] = {h["instance"]: {**h, "version": n} for n, h in retired}
            raise EndpointApplyError(f"endpoint {spec.name}: the switch did not complete: {exc}", handle) from exc
        self._drain_and_stop(retired, handle, spec)
        scoring, swagger = uris(port)
        version_uris = {n: f"{h['url'].replace('127.0.0.1', 'localhost')}/score" for n, h in current.items()}
        return EndpointDeployed(scoring_uri=scoring, handle=handle, version_uris=version_uris, swagger_uri=swagger)

    def _usable(self, version: str, inst: Mapping[str, Any]) -> bool:
        return self._instance_state(version, inst).state in (HEALTHY, TRANSITIONING, UNHEALTHY)

    def _switch(self, spec: EndpointSpec, handle: dict[str, Any]) -> None:
        """Write the routes file, (re)start the router if needed, wait for the revision to be in force."""
        table = spec.routes({n: h["url"] for n, h in handle["versions"].items()})
        routes = Path(handle["routes"])
        write_atomic(routes, table.to_json().encode() + b"\n", mode=0o600)
        router = handle.get("router")
        if not router_process.alive(router) or int(router.get("port") or 0) != handle["port"]:
            router_process.stop(router)
            router = router_process.start(self.endpoint_dir, routes, handle["port"], self._router_env(spec))
            handle["router"] = router
        router_process.wait_revision(
            router, self.endpoint_dir, spec.revision, [v.name for v in spec.versions],
            credential(spec.secrets, spec.auth_mode), SWITCH_TIMEOUT_S,
        )  # fmt: skip

    @staticmethod
    def _router_env(spec: EndpointSpec) -> dict[str, str]:
        env = dict(spec.secrets)
        if spec.auth_mode == "token":
            env["EDGEPACK_TOKEN_AUTH"] = "true"
        return env

    def _drain_and_stop(self, retired: list[tuple[str, dict[str, Any]]], handle: Mapping[str, Any],
                        spec: EndpointSpec) -> None:  # fmt: skip
        """Wait until no request is in flight at each retired instance, then stop it."""
        cred = credential(spec.secrets, spec.auth_mode)
        for name, inst in retired:
            removed = name not in handle["versions"]
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            quiet = 0
            while time.monotonic() < deadline and quiet < 2:
                doc = router_process.status(int(handle["port"]), cred)
                busy = _instance_in_flight(inst["url"]) + router_process.draining(doc, inst["url"])
                if removed:
                    busy += router_process.in_flight(doc, name)
                quiet = quiet + 1 if busy == 0 else 0
                time.sleep(POLL_S)
            keep = handle["versions"][name]["image"] if not removed else None
            self._stop(name, inst, keep_content=keep)
            if removed:
                shutil.rmtree(self.endpoint_dir / VERSIONS_DIR / name, ignore_errors=True)
                self._targets.pop(name, None)

    def update_secrets(self, spec: EndpointSpec, handle: Mapping[str, Any]) -> EndpointDeployed:
        """New keys: restart the router with them (versions have no auth of their own)."""
        new = dict(handle)
        router_process.stop(new.get("router"))
        new["router"] = None
        self._switch(spec, new)
        scoring, swagger = uris(int(new["port"]))
        version_uris = {n: f"{h['url'].replace('127.0.0.1', 'localhost')}/score" for n, h in new["versions"].items()}
        return EndpointDeployed(scoring_uri=scoring, handle=new, version_uris=version_uris, swagger_uri=swagger)

    def state(self, handle: Mapping[str, Any]) -> dict[str, TargetStatus]:
        """Each version's state, and the router's under ``"(router)"``."""
        out = {name: self._instance_state(name, inst) for name, inst in (handle.get("versions") or {}).items()}
        router = handle.get("router")
        if not router_process.alive(router):
            out[ROUTER] = TargetStatus(FAILED, "the router exited:\n" + router_process.tail(self.endpoint_dir, 40))
        elif router_process.healthy(int(router["port"])):
            out[ROUTER] = TargetStatus(HEALTHY)
        else:
            out[ROUTER] = TargetStatus(TRANSITIONING)
        return out

    def logs(self, handle: Mapping[str, Any], version: str | None = None, num_lines: int = 5000) -> str:
        """A version's log lines, or the router's (``version`` None or ``"(router)"``)."""
        if version in (None, ROUTER):
            return router_process.tail(self.endpoint_dir, num_lines)
        inst = (handle.get("versions") or {}).get(version)
        if inst is None:
            raise EdgepackError(
                f"endpoint has no version {version!r}: versions {', '.join(handle.get('versions') or [])}"
            )
        return self.version_target(version).logs(inst["handle"], num_lines)

    def delete(self, handle: Mapping[str, Any]) -> None:
        """Stop the router and every version instance (also ones a failed switch left retired)."""
        router_process.stop(handle.get("router"))
        for name, inst in (handle.get("versions") or {}).items():
            self._stop(name, inst)
        for inst in (handle.get("retired") or {}).values():
            self._stop(inst["version"], inst)
        if self.mode == "docker":
            for name, inst in (handle.get("versions") or {}).items():
                self.version_target(name).remove_image(inst.get("image"))
        shutil.rmtree(self.endpoint_dir / VERSIONS_DIR, ignore_errors=True)


def _instance_in_flight(url: str) -> int:
    """Requests an instance holds (its ``/metrics`` gauge, less the metrics request itself); 0 when it is gone."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2.0) as resp:
            text = resp.read(1 << 20).decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return 0
    for line in text.splitlines():
        if line.startswith("edgepack_requests_in_flight "):
            return max(0, int(float(line.split()[1])) - 1)
    return 0


__all__ = ["ROUTER", "EndpointApplyError", "LocalEndpointTarget", "fingerprint"]
