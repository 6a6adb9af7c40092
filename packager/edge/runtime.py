"""``edgepack edge run``: a deployment's modules in the local Docker engine around the local edgeHub.

:class:`EdgeRuntime` makes the hub's TLS certificates once (state dir, 0700), gives each module a
random key, starts :class:`packager.edge.hub.EdgeHub` on a free loopback address (``127.13.x.1``:8883,
the SDK's fixed port; the dev Mosquitto holds ``127.0.0.1:8883``), then the modules in ``startupOrder``
(each running before the next starts), with the environment the IoT Edge simulator gives modules:
``EdgeHubConnectionString`` (``HostName``, ``GatewayHostName`` = the hub's address, ``DeviceId``,
``ModuleId``, ``SharedAccessKey``) and ``EdgeModuleCACertificateFile`` (the hub's CA, mounted
read-only), which ``IoTHubModuleClient.create_from_edge_environment()`` reads. Each module also gets
``EDGEPACK_PORT`` (a free port for its HTTP server: all modules share the host's network) unless the
manifest sets one.

Supervision (:meth:`EdgeRuntime.supervise`), like the edge agent: a module whose container exited is
started again per ``restartPolicy`` (``always``; ``on-failure``: exit code not 0; ``on-unhealthy``: a
failing health check or exit code not 0; ``never``), after a back-off that doubles per restart (1 s up
to 30 s, reset after a minute running). ``status: stopped`` modules are created and not started.
When Docker reports a module container being stopped (``kill``, ``die``), the hub stops sending to it at
once: the SDK acknowledges messages on receipt, so what reached a module that is shutting down would
be lost; held in the hub, it is delivered when the module is back.
The state (``state.json``: run, hub, per module container state, restarts, twin reported properties,
hub counts) is rewritten every second for ``edgepack edge status``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.edge.certs import ensure_certs
from packager.edge.containers import LABEL, container_name, docker_client, remove_labelled, run_kwargs
from packager.edge.hub import EdgeHub, free_hub_address
from packager.edge.plan import ModulePlan, Plan
from packager.fs import write_atomic

log = logging.getLogger("packager.edge")

CA_IN_CONTAINER = "/etc/edgepack-edge/ca.pem"
HOSTNAME = "edgepack.local"
STATE_FILE = "state.json"
UPSTREAM_FILE = "upstream.jsonl"


def state_dir_for(workspace: str | os.PathLike[str] | None = None) -> Path:
    """``$EDGEPACK_STATE_DIR``, else ``<workspace>/edge`` (workspace default ``./.edgepack``)."""
    if os.environ.get("EDGEPACK_STATE_DIR"):
        return Path(os.environ["EDGEPACK_STATE_DIR"])
    return Path(workspace or os.environ.get("EDGEPACK_WORKSPACE") or ".edgepack") / "edge"


def prepare_state_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise OSError(f"{path} is not a directory (symbolic links are not followed)")
    os.chmod(path, 0o700)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Running:
    plan: ModulePlan
    container: Any = None
    restarts: int = 0
    next_restart: float = 0.0
    started: float = 0.0
    last_exit: int | None = None
    warnings: list[str] = field(default_factory=list)


class EdgeRuntime:
    """Runs a :class:`Plan`: hub, module containers, supervision, state; :meth:`stop` removes them."""

    def __init__(self, plan: Plan, state_dir: Path, device_id: str = "edgepack-device", docker: Any = None) -> None:
        self.plan, self.device_id = plan, device_id
        self.state_dir = prepare_state_dir(Path(state_dir))
        self.run_id = uuid.uuid4().hex[:12]
        self.docker = docker
        self.hub: EdgeHub | None = None
        self.modules: dict[str, _Running] = {}
        self.keys = {name: base64.b64encode(secrets.token_bytes(32)).decode() for name in plan.modules}
        self.ports = {name: _free_port() for name in plan.modules}
        self.started = time.time()

    # lifecycle -------------------------------------------------------------------------------------
    def start(self, wait_running: float = 60.0) -> EdgeRuntime:
        self.docker = self.docker or docker_client()
        left = remove_labelled(self.docker, self.device_id)
        if left:
            log.warning("removed %d container(s) a previous run left: %s", len(left), ", ".join(left))
        host = free_hub_address()
        certs = ensure_certs(self.state_dir / "certs", host)
        self.ca = certs.ca
        self.hub = EdgeHub(
            self.device_id,
            self.keys,
            self.plan.desired,
            self.plan.routes,
            certs.cert,
            certs.key,
            self.state_dir / UPSTREAM_FILE,
            host=host,
            hostname=HOSTNAME,
            ttl=self.plan.ttl,
        ).start()
        self._events = self.docker.events(
            decode=True, filters={"label": f"{LABEL}={self.device_id}", "type": "container"}
        )
        threading.Thread(
            target=self._watch_events, args=(self._events,), name="edgepack-edge-events", daemon=True
        ).start()
        try:
            for module in self.plan.modules.values():
                self._create(module, start=module.status == "running", wait=wait_running)
            self.write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def _watch_events(self, events: Any) -> None:
        """A module container being stopped (``kill``: docker stop's SIGTERM) gets nothing more from the hub."""
        with contextlib.suppress(Exception):
            for event in events:
                module = ((event.get("Actor") or {}).get("Attributes") or {}).get(f"{LABEL}.module")
                if event.get("Action") in ("kill", "die", "stop") and module and self.hub is not None:
                    self.hub.pause(module)

    def stop(self) -> None:
        """Remove every container this runtime started, stop the hub, mark the state stopped."""
        if getattr(self, "_events", None) is not None:
            with contextlib.suppress(Exception):
                self._events.close()
        if self.docker is not None:
            remove_labelled(self.docker, self.device_id)
        if self.hub is not None:
            self.hub.stop()
        self.write_state(stopped=True)

    def __enter__(self) -> EdgeRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # modules ---------------------------------------------------------------------------------------
    def module_env(self, name: str) -> dict[str, str]:
        assert self.hub is not None
        cs = (
            f"HostName={HOSTNAME};GatewayHostName={self.hub.host};DeviceId={self.device_id};"
            f"ModuleId={name};SharedAccessKey={self.keys[name]}"
        )
        return {"EdgeHubConnectionString": cs, "EdgeModuleCACertificateFile": CA_IN_CONTAINER}

    def _create(self, module: ModulePlan, start: bool, wait: float) -> None:
        kwargs, warnings = run_kwargs(
            module,
            self.device_id,
            self.run_id,
            self.module_env(module.name),
            [f"{self.ca}:{CA_IN_CONTAINER}:ro"],
            defaults={"EDGEPACK_PORT": str(self.ports[module.name])},
        )
        for w in warnings:
            log.warning("%s", w)
        running = self.modules.get(module.name) or _Running(module)
        running.plan, running.warnings = module, warnings
        self.modules[module.name] = running
        if module.image_pull_policy == "on-create":
            self._pull(module.image)
        if start:
            running.container = self.docker.containers.run(**kwargs)
            running.started = time.time()
            self._wait_running(running, wait)
        else:
            kwargs.pop("detach", None)
            running.container = self.docker.containers.create(**kwargs)

    def _pull(self, image: str) -> None:
        try:
            self.docker.images.get(image)
        except Exception:
            self.docker.images.pull(image)

    @staticmethod
    def _wait_running(running: _Running, timeout: float) -> None:
        end = time.monotonic() + timeout
        while True:
            running.container.reload()
            status = running.container.status
            if status == "running":
                return
            if status in ("exited", "dead") or time.monotonic() > end:
                logs = running.container.logs(tail=20).decode("utf-8", "replace")
                raise RuntimeError(f"module {running.plan.name} did not start ({status}); its last log lines:\n{logs}")
            time.sleep(0.1)

    def supervise(self) -> list[str]:
        """One pass of the restart policies. -> names of modules started again."""
        restarted = []
        now = time.time()
        for r in self.modules.values():
            if r.container is None or r.plan.status != "running":
                continue
            try:
                r.container.reload()
            except Exception:
                self._create(r.plan, start=False, wait=0)
                r.container.reload()
            state = r.container.attrs.get("State", {})
            if state.get("Status") == "running":
                if r.restarts and now - r.started > 60:
                    r.restarts = 0
                unhealthy = (state.get("Health") or {}).get("Status") == "unhealthy"
                if not (unhealthy and r.plan.restart_policy == "on-unhealthy"):
                    continue
                r.container.stop(timeout=10)
                state = {"ExitCode": 1}
            elif state.get("Status") not in ("exited", "dead", "created"):
                continue
            code = int(state.get("ExitCode") or 0)
            r.last_exit = code
            policy = r.plan.restart_policy
            if policy == "never" or (policy in ("on-failure", "on-unhealthy") and code == 0):
                continue
            if not r.next_restart:
                r.next_restart = now + min(30.0, 2.0 ** max(0, r.restarts - 1)) if r.restarts else now
            if now < r.next_restart:
                continue
            r.container.start()
            r.restarts += 1
            r.started, r.next_restart = now, 0.0
            restarted.append(r.plan.name)
            log.warning("module %s exited (%s): started again (restart %d)", r.plan.name, code, r.restarts)
        return restarted

    # desired state -----------------------------------------------------------------------------------
    def apply(self, plan: Plan) -> list[str]:
        """Re-apply a manifest while running: twins (desired patches) and routes live; a module whose
        image, env, createOptions or policy changed is created again; new modules start, removed ones go.
        -> what changed, one line each."""
        assert self.hub is not None
        changes = []
        for name in [n for n in self.modules if n not in plan.modules]:
            self.modules.pop(name).container.remove(force=True)
            changes.append(f"module {name} removed")
        for name, module in plan.modules.items():
            current = self.modules.get(name)
            if current is None:
                self.keys.setdefault(name, base64.b64encode(secrets.token_bytes(32)).decode())
                self.ports.setdefault(name, _free_port())
                self.hub.add_module(name, self.keys[name], plan.desired.get(name, {}))
                self._create(module, start=module.status == "running", wait=60)
                changes.append(f"module {name} started")
            elif current.plan != module:
                current.container.remove(force=True)
                self._create(module, start=module.status == "running", wait=60)
                changes.append(f"module {name} created again (its settings changed)")
        for name, desired in plan.desired.items():
            if name in self.hub.modules:
                before = self.hub.modules[name].desired["$version"]
                if self.hub.set_desired(name, desired) != before:
                    changes.append(f"module {name}: desired properties patched")
        if plan.route_texts != self.plan.route_texts or plan.ttl != self.plan.ttl:
            self.hub.set_routes(plan.routes, plan.ttl)
            changes.append("routes replaced")
        self.plan = plan
        self.write_state()
        return changes

    # state -----------------------------------------------------------------------------------------
    def state(self, stopped: bool = False) -> dict[str, Any]:
        snap = self.hub.snapshot() if self.hub is not None and not stopped else {"modules": {}, "upstream": 0}
        modules = {}
        for name, r in self.modules.items():
            status = "removed" if stopped else "unknown"
            if not stopped and r.container is not None:
                try:
                    r.container.reload()
                    status = r.container.status
                except Exception:
                    status = "missing"
            hub = snap["modules"].get(name, {})
            modules[name] = {
                "container": container_name(self.device_id, name),
                "image": r.plan.image,
                "desiredStatus": r.plan.status,
                "restartPolicy": r.plan.restart_policy,
                "status": status,
                "restarts": r.restarts,
                "lastExitCode": r.last_exit,
                "httpPort": self.ports.get(name),
                "connected": hub.get("connected", False),
                "reported": {k: v for k, v in (hub.get("reported") or {}).items() if k != "$version"},
                "desiredVersion": (hub.get("desired") or {}).get("$version"),
                "counts": hub.get("counts", {}),
                "queued": hub.get("queued", 0),
            }
        return {
            "run": self.run_id,
            "pid": os.getpid(),
            "device": self.device_id,
            "running": not stopped,
            "started": self.started,
            "updated": time.time(),
            "hub": f"{self.hub.host}:{self.hub.port}" if self.hub else None,
            "upstream": {"file": str(self.state_dir / UPSTREAM_FILE), "messages": snap.get("upstream", 0)},
            "modules": modules,
        }

    def write_state(self, stopped: bool = False) -> None:
        write_atomic(self.state_dir / STATE_FILE, json.dumps(self.state(stopped), indent=1).encode(), mode=0o600)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = Path(state_dir) / STATE_FILE
    if path.is_symlink() or not path.is_file():
        return None
    if path.stat().st_size > 16 * 2**20:
        raise OSError(f"{path} is too large to be edgepack's state")
    return json.loads(path.read_bytes())
