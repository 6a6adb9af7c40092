"""The router's shared state and background work: the routes table in force, the versions' readiness,
the router's own routes (``/-/...``), timeouts, and starting and stopping the server.

- Routes: the file is stat'ed every ``reload_interval`` (and at SIGHUP); a changed one
  (inode, size or mtime: a ConfigMap's symlink swap is seen too) is parsed and validated whole
  before it replaces the table; a bad one is refused with a log line and the table in force stays.
  A removed version's pool closes; its requests in flight finish where they started.
- Health: every version is polled at ``GET /v2/health/ready`` (the scoring module's "load() has
  finished" probe) every ``health_interval``; a version that answers anything but 200, or whose
  connection fails, is not ready and gets no traffic (:func:`~edge_module.router.routes.split`).
- Own routes: ``GET /-/healthy`` (liveness, open), ``GET /-/ready`` (200 when a version is ready,
  open), ``GET /-/router`` (JSON state) and ``GET /-/router/metrics`` (Prometheus text), both behind
  auth when it is on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from edge_module.router.balancer import Balancer, VersionState
from edge_module.router.http import HttpError, RequestHead, error_response, json_response, response
from edge_module.router.proxy import ClientConnection
from edge_module.router.routes import RoutesError, RouteTable
from edge_module.router.settings import RouterSettings
from edge_module.router.upstream import Pool
from edge_module.server.auth import authenticator_for

log = logging.getLogger("edgepack.router")

READY_PATH = "/v2/health/ready"
OPEN_PATHS = frozenset({b"/-/healthy", b"/-/ready", b"/", b"/v2/health/live", b"/v2/health/ready"})
TICK = 0.5
STOP_GRACE = 30.0


class Router:
    """What the client connections of one router process share."""

    def __init__(self, settings: RouterSettings, loop: asyncio.AbstractEventLoop):
        self.settings = settings
        self.loop = loop
        self.path = settings.routes
        self.max_header_size = settings.max_header_size
        self.max_headers = settings.max_headers
        self.max_url_size = settings.max_url_size
        self.max_body_size = settings.max_body_size
        self.upstream_timeout = settings.upstream_timeout
        self.connect_timeout = settings.connect_timeout
        self.access_log = settings.access_log
        self.head_message = (
            f"the request line and headers are over the {settings.max_header_size}-byte limit; send less in headers"
        )
        self.auth = authenticator_for(settings)
        self.open_paths = OPEN_PATHS
        self.connections: set[ClientConnection] = set()
        self.table = RouteTable(endpoint="")
        self.versions: dict[str, VersionState] = {}
        self.draining: list[VersionState] = []  # removed versions with requests still in flight
        self.balancer = Balancer(self.table, {})
        self.stopping = False
        self.server: asyncio.AbstractServer | None = None
        self._signature: tuple[int, ...] | None = None
        self._refused: tuple[int, ...] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handles: list[asyncio.TimerHandle] = []

    # -- routes -----------------------------------------------------------------------------------
    def load_routes(self) -> bool:
        """Re-read the routes file if it changed; True when a new table took effect. Raises
        :class:`RoutesError` only for the first load (a router without routes cannot start)."""
        first = self._signature is None
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if first:
                raise RoutesError(f"cannot read the routes file {self.path}: {exc.strerror}") from None
            if self._refused != (-1,):
                self._refused = (-1,)
                log.error("routes file %s: %s; keeping revision %d", self.path, exc.strerror, self.table.revision)
            return False
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._signature or signature == self._refused:
            return False
        try:
            with open(self.path, "rb") as f:
                table = RouteTable.from_json(f.read())
            for v in table.versions:
                Pool(v.url, self.loop)  # validates the URL
        except (OSError, RoutesError, ValueError) as exc:
            if first:
                raise RoutesError(f"routes file {self.path}: {exc}") from None
            self._refused = signature
            log.error("routes file %s refused: %s; keeping revision %d in force", self.path, exc, self.table.revision)
            return False
        self._signature = signature
        self._refused = None
        self.apply(table)
        return True

    def apply(self, table: RouteTable) -> None:
        """Put ``table`` in force: keep the state of versions whose name and URL stay, retire the others."""
        old = self.versions
        new: dict[str, VersionState] = {}
        fresh = []
        for route in table.versions:
            state = old.get(route.name)
            if state is not None and state.route.url == route.url:
                state.route = route
            else:
                state = VersionState(route, Pool(route.url, self.loop))
                fresh.append(state)
            new[route.name] = state
        for name, state in old.items():
            if new.get(name) is not state:
                state.pool.close()
                if state.in_flight:
                    self.draining.append(state)
        self.table = table
        self.versions = new
        self.balancer = Balancer(table, new, self.balancer)
        log.info(
            "routes revision %d in force: %s",
            table.revision,
            ", ".join(f"{v.name}={v.traffic:g}%{' (default)' if v is table.default else ''}" for v in table.versions)
            or "no versions",
        )
        for state in fresh:
            self._spawn(self._check(state))

    def check_routes_soon(self) -> None:
        try:
            self.load_routes()
        except Exception:
            log.exception("checking the routes file failed")

    # -- readiness --------------------------------------------------------------------------------
    def set_ready(self, version: VersionState, ready: bool, reason: str = "") -> None:
        if version.ready == ready and (ready or version.ready_reason == reason):
            return
        changed = version.ready != ready
        version.ready = ready
        version.ready_reason = "" if ready else reason
        if changed and self.versions.get(version.name) is version:
            self.balancer = Balancer(self.table, self.versions, self.balancer)
            if ready:
                log.info("version %s is ready; shares now %s", version.name, self._shares_text())
            else:
                log.warning("version %s is not ready (%s); shares now %s", version.name, reason, self._shares_text())

    def mark_not_ready(self, version: VersionState, reason: str) -> None:
        self.set_ready(version, False, reason)

    def _shares_text(self) -> str:
        return ", ".join(f"{k}={v:g}%" for k, v in self.balancer.shares.items()) or "none (no version is ready)"

    def no_version_message(self) -> str:
        if not self.versions:
            return "this endpoint has no versions yet"
        reasons = "; ".join(f"{v.name}: {v.ready_reason}" for v in self.versions.values() if not v.ready)
        return f"no version of this endpoint can take traffic ({reasons or 'all at 0%'})"

    async def _check(self, version: VersionState) -> None:
        ready, reason = await probe(version.pool.host, version.pool.port, self.connect_timeout)
        self.set_ready(version, ready, reason)

    async def _poll(self) -> None:
        interval = self.settings.health_interval
        while not self.stopping:
            versions = list(self.versions.values())
            if versions:
                await asyncio.gather(*(self._check(v) for v in versions), return_exceptions=True)
            await asyncio.sleep(interval)

    # -- housekeeping -----------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        s = self.settings
        for conn in list(self.connections):
            if conn.waiting:
                if conn.body_left and now - conn.start > s.read_timeout:
                    conn.abort(408, f"the request body did not arrive within {s.read_timeout:g} s")
                elif now - conn.start > self.upstream_timeout:
                    conn.timeout()
            elif conn.read_started:
                if now - conn.read_started > s.read_timeout:
                    conn.reject(HttpError(408, f"the request did not arrive within {s.read_timeout:g} s"))
            elif now - conn.last_active > s.keepalive_timeout:
                conn.close()
        for version in self.versions.values():
            version.pool.sweep(now)
        self.draining = [v for v in self.draining if v.in_flight > 0]
        self._handles.append(self.loop.call_later(TICK, self._tick))
        if len(self._handles) > 16:
            self._handles = self._handles[-2:]

    def _reload_tick(self) -> None:
        self.check_routes_soon()
        if not self.stopping:
            self._handles.append(self.loop.call_later(self.settings.reload_interval, self._reload_tick))

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- own routes -------------------------------------------------------------------------------
    def authenticate(self, head: RequestHead) -> None:
        failure = self.auth.check(head.get(b"authorization"))  # type: ignore[union-attr]
        if failure is not None:
            challenge, message = failure
            raise HttpError(401, message, b"www-authenticate: " + challenge.encode() + b"\r\n")

    def admin(self, head: RequestHead, keep_alive: bool) -> bytes:
        path = head.path.split(b"?", 1)[0]
        close = not keep_alive
        if head.method not in (b"GET", b"HEAD"):
            return error_response(405, f"{head.method.decode()} is not allowed here; use GET", b"allow: GET\r\n", close)
        if path == b"/-/healthy":
            return json_response(200, {"status": "healthy"}, close=close)
        if path == b"/-/ready":
            ready = sorted(name for name, v in self.versions.items() if v.ready)
            return json_response(200 if ready else 503, {"ready": ready}, close=close)
        if path == b"/-/router":
            return json_response(200, self.state(), close=close)
        if path == b"/-/router/metrics":
            return response(200, self.prometheus().encode(), b"text/plain; version=0.0.4; charset=utf-8", close=close)
        return error_response(404, "no route; the router's own are /-/healthy, /-/ready, /-/router", close=close)

    def state(self) -> dict[str, Any]:
        shares = self.balancer.shares
        versions = {}
        for name, v in self.versions.items():
            versions[name] = {
                "url": v.route.url,
                "ready": v.ready,
                **({} if v.ready else {"reason": v.ready_reason}),
                "traffic": v.route.traffic,
                "default": v is self.versions.get(self.table.default.name if self.table.default else ""),
                "share": round(shares.get(name, 0.0), 6),
                "in_flight": v.in_flight,
                "requests": v.requests,
                "errors": v.errors,
                "latency_ms": v.percentiles(),
            }
        return {
            "endpoint": self.table.endpoint,
            "revision": self.table.revision,
            "versions": versions,
            "draining": {v.name: {"url": v.route.url, "in_flight": v.in_flight} for v in self.draining if v.in_flight},
            "connections": len(self.connections),
        }

    def prometheus(self) -> str:
        lines = [
            "# HELP edgepack_router_requests_total Requests answered, by version.",
            "# TYPE edgepack_router_requests_total counter",
        ]
        states = list(self.versions.values())
        lines += [f'edgepack_router_requests_total{{version="{v.name}"}} {v.requests}' for v in states]
        lines += [
            "# HELP edgepack_router_errors_total 5xx answers, by version.",
            "# TYPE edgepack_router_errors_total counter",
        ]
        lines += [f'edgepack_router_errors_total{{version="{v.name}"}} {v.errors}' for v in states]
        lines += ["# HELP edgepack_router_in_flight Requests in flight.", "# TYPE edgepack_router_in_flight gauge"]
        lines += [f'edgepack_router_in_flight{{version="{v.name}"}} {v.in_flight}' for v in states]
        lines += [
            "# HELP edgepack_router_ready 1 when the version takes traffic.",
            "# TYPE edgepack_router_ready gauge",
        ]
        lines += [f'edgepack_router_ready{{version="{v.name}"}} {int(v.ready)}' for v in states]
        lines += [
            "# HELP edgepack_router_share Effective traffic share (percent).",
            "# TYPE edgepack_router_share gauge",
        ]
        lines += [
            f'edgepack_router_share{{version="{v.name}"}} {self.balancer.shares.get(v.name, 0.0):g}' for v in states
        ]
        lines += ["# HELP edgepack_router_revision Routes revision in force.", "# TYPE edgepack_router_revision gauge"]
        lines.append(f"edgepack_router_revision {self.table.revision}")
        return "\n".join(lines) + "\n"

    # -- life -------------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        self.load_routes()
        self.server = await self.loop.create_server(
            lambda: ClientConnection(self), host, port, reuse_address=True, backlog=1024
        )
        self._spawn(self._poll())
        self._tick()
        self._reload_tick()
        return self.server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop accepting, let the requests in flight finish (up to ``grace`` seconds), close the rest."""
        if self.stopping:
            return
        self.stopping = True
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + grace
        while True:
            for conn in list(self.connections):
                if not conn.waiting and not conn.read_started:
                    conn.close()
            if not any(c.waiting or c.read_started for c in self.connections) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for h in self._handles:
            h.cancel()
        for task in list(self._tasks):
            task.cancel()
        for v in self.versions.values():
            v.pool.close()


async def probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """``GET /v2/health/ready`` on a version: (ready, why not)."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(f"GET {READY_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(65536), timeout)
        while len(data) < 65536:
            more = await asyncio.wait_for(reader.read(65536), timeout)
            if not more:
                break
            data += more
    except (TimeoutError, OSError) as exc:
        return False, f"readiness probe failed: {exc or type(exc).__name__}"
    finally:
        if writer is not None:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head[9:12])
    except ValueError:
        return False, "readiness probe: not an HTTP answer"
    if status == 200:
        return True, ""
    try:
        detail = json.loads(body).get("message") or json.loads(body).get("error")
    except (ValueError, AttributeError):
        detail = body[:200].decode("utf-8", "replace")
    return False, f"GET {READY_PATH} answered {status}{': ' + str(detail) if detail else ''}"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(settings: RouterSettings) -> int:
    """Serve until SIGTERM/SIGINT (graceful: in-flight requests finish); SIGHUP re-reads the routes."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    router = Router(settings, loop)
    try:
        port = loop.run_until_complete(router.start(settings.host, settings.port))
    except RoutesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 2
    done = loop.create_future()

    def stop() -> None:
        if not done.done():
            done.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, router.check_routes_soon)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    auth = settings.auth_mode or "none"
    print(
        f"edgepack router: listening on http://{shown}:{port} (endpoint {router.table.endpoint!r}, "
        f"revision {router.table.revision}, auth: {auth})",
        file=sys.stderr,
        flush=True,
    )
    try:
        loop.run_until_complete(done)
        loop.run_until_complete(router.stop())
    finally:
        loop.close()
    print("edgepack router: stopped", file=sys.stderr, flush=True)
    return 0
