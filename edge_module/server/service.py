"""What the connections of one worker share: the app's lifecycle, the routes table, the auth guard.

:class:`Service` loads the app on a thread (the server answers liveness meanwhile), then resolves
once what the app and its runtimes can do (inline or on a scoring thread, ``cancel()`` on a
timeout, ``/score`` batching for a :class:`~edge_module.runtime.BatchableApp`) and adds a V2 route
per model. Routing is one dict lookup on the exact path; limits and auth are early returns before
any body is read: :meth:`Service.authenticate` runs when a request's headers are complete, for every
path but the open probes (unknown paths included), before routing, methods or ``100 Continue``.
With ``max_concurrent_requests`` set, the scoring routes (``add_route(..., scoring=True)``) go
through :class:`~edge_module.server.limits.ConcurrencyLimit` before their handler runs.
The handlers live in :mod:`.routes_aml` (Azure ML) and :mod:`.routes_v2` (V2).
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from time import perf_counter
from typing import Any

from edge_module.runtime import BatchableApp, ModelRuntime, ScoringApp
from edge_module.server import metrics as metrics_mod
from edge_module.server.auth import Authenticator, authenticator_for
from edge_module.server.batching import Batcher
from edge_module.server.connection import REQUEST_ID_LIMIT, TEXT, Connection, HttpRequest, Reject, error_body
from edge_module.server.executor import ScoringLane
from edge_module.server.limits import ConcurrencyLimit, SharedLimit
from edge_module.server.routes_aml import AmlRoutes
from edge_module.server.routes_v2 import V2Routes
from edge_module.settings import Settings

log = logging.getLogger("edgepack.server")

Handler = Callable[[Connection, HttpRequest, "Route"], None]


class Route:
    __slots__ = ("gated", "handler", "label", "methods", "open", "target")

    def __init__(
        self,
        label: str,
        handler: Handler,
        methods: tuple[str, ...],
        open: bool = False,
        target: Any = None,
        gated: bool = False,
    ):
        self.label = label
        self.handler = handler
        self.methods = frozenset(methods) | ({"HEAD"} if "GET" in methods else set())
        self.open = open
        self.target = target
        self.gated = gated  # a scoring route under the concurrency limit (limits.ConcurrencyLimit)


class Service:
    """What the connections of one worker share: the app, routes, settings, metrics, state."""

    def __init__(
        self,
        app: ScoringApp,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        metrics: metrics_mod.Metrics | None = None,
        on_state: Callable[[str, dict[str, Any]], None] | None = None,
        shared_limit: SharedLimit | None = None,
    ):
        self.app = app
        self.settings = settings
        self.loop = loop
        self.metrics = metrics or metrics_mod.Metrics()
        self.on_state = on_state
        self.max_body_size = settings.max_body_size
        self.max_header_size = settings.max_header_size
        self.max_headers = settings.max_headers
        self.max_url_size = settings.max_url_size
        self.inline_max_body = settings.inline_max_body  # larger bodies are decoded and scored off the loop
        self.access_log = settings.access_log
        self.connections: set[Connection] = set()
        self.ready = False
        self.load_error: str | None = None
        self.load_traceback: str | None = None
        self.transport_error: str | None = None  # a hosted transport failed for good: not ready (lifecycle)
        self.lane = ScoringLane(
            loop, settings.scoring_threads, settings.scoring_timeout, on_timeout=self._count_timeout
        )
        self.auth: Authenticator | None = authenticator_for(settings)
        self.cors_origins = frozenset(o.encode() for o in settings.cors_origins)
        self._cors_any = b"*" in self.cors_origins
        self._rid_prefix = self._new_rid_prefix()
        self._rid_count = 0
        self.date_header = b""
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick()
        # what the app can do, resolved once it has loaded
        self.score_inline = False
        self.score_batching = False
        self.score_cancel: Callable[[], None] | None = None
        self._batchers: dict[int, Batcher] = {}  # one per model runtime, shared by /score and V2
        self._handoff_wait = settings.handoff_wait_ms / 1000 if settings.scoring_threads == 1 else 0.0
        self.limit: ConcurrencyLimit | None = None  # with max_concurrent_requests: gates the scoring routes
        if settings.max_concurrent_requests:
            self.limit = ConcurrencyLimit(
                self,
                settings.max_concurrent_requests,
                settings.max_queue_wait_ms / 1000,
                shared_limit,
                self.metrics.worker,
            )
        self.runtimes: dict[str, ModelRuntime] = {}  # name -> latest version
        self.versions: dict[str, list[str]] = {}
        self.routes: dict[str, Route] = {}
        self.aml = AmlRoutes(self)
        self.v2 = V2Routes(self)
        self.aml.add_routes()
        self.v2.add_routes()

    # -- request ids, dates ---------------------------------------------------------------------------
    @staticmethod
    def _new_rid_prefix() -> bytes:
        h = uuid.uuid4().hex
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:24]}".encode()

    def new_request_id(self) -> bytes:
        self._rid_count += 1
        return self._rid_prefix + b"%08x" % (self._rid_count & 0xFFFFFFFF)

    def _tick(self) -> None:
        """Once a second: refresh the Date header, publish metrics, close idle keep-alive connections."""
        self.date_header = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\nserver: edgepack\r\n"
        self.metrics.publish()
        limit = self.settings.keepalive_timeout
        read_deadline = perf_counter() - self.settings.read_timeout
        for conn in list(self.connections):
            if 0 < conn.read_started < read_deadline and not conn.rejected and conn.transport is not None:
                # a client that sends a request too slowly (slowloris) or stops halfway: 408, close
                conn.reject(Reject(408, f"the request did not arrive within {self.settings.read_timeout:g} s"))
                continue
            if conn.busy or conn.pending:
                conn.idle_ticks = 0
                continue
            conn.idle_ticks += 1
            if conn.idle_ticks > limit and conn.transport is not None:
                conn.transport.close()
        self._tick_handle = self.loop.call_later(1.0, self._tick)

    def _count_timeout(self) -> None:
        self.metrics.timeouts += 1

    def cors_headers(self, origin: bytes) -> list[bytes]:
        if self._cors_any:
            return [b"access-control-allow-origin: *\r\n"]
        if origin.rstrip(b"/") in self.cors_origins:
            return [b"access-control-allow-origin: ", origin, b"\r\nvary: Origin\r\n"]
        return []

    # -- loading --------------------------------------------------------------------------------------
    def start_loading(self) -> None:
        threading.Thread(target=self._load, name="edgepack-load", daemon=True).start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.app.load()
            runtimes = list(self.app.models())
        except BaseException as exc:
            tb = traceback.format_exc()
            seconds = time.perf_counter() - t0
            if self.on_state is None:  # else the reporter shows it (edgepack serve: once, at the terminal)
                log.error("load() failed after %.2f s; the server stays up and reports not ready:\n%s", seconds, tb)
            self.loop.call_soon_threadsafe(self._loaded, None, f"{type(exc).__name__}: {exc}", tb, seconds)
            return
        self.loop.call_soon_threadsafe(self._loaded, runtimes, None, None, time.perf_counter() - t0)

    def _loaded(self, runtimes: list[ModelRuntime] | None, error: str | None, tb: str | None, seconds: float) -> None:
        self.metrics.load_seconds = seconds
        if error is not None:
            self.load_error = error
            self.load_traceback = tb
            self.metrics.load_failed = True
            if self.on_state:
                self.on_state("failed", {"error": error, "traceback": tb, "seconds": seconds})
            return
        try:
            self.v2.add_models(runtimes or [])
        except Exception as exc:  # a runtime whose metadata cannot be read is a load failure too
            self._loaded(None, f"{type(exc).__name__}: {exc}", traceback.format_exc(), seconds)
            return
        app = self.app
        self.score_inline = self.runs_inline(app)
        self.score_cancel = app.cancel if app.supports_cancel else None
        self.score_batching = self.settings.batching and isinstance(app, BatchableApp)
        # Everything load() made lives as long as the process: move it out of the collector's way, so a
        # full collection walks only what requests allocate (~0.01 ms instead of ~10 ms with
        # onnxruntime and numpy loaded, a pause every few thousand requests otherwise).
        gc.collect()
        gc.freeze()
        self.ready = True
        self.metrics.ready = True
        log.log(
            logging.DEBUG if self.on_state else logging.INFO,  # a reporter says it at the terminal
            "ready in %.3f s (%d V2 model(s); /score runs %s)",
            seconds,
            len(self.runtimes),
            "inline" if self.score_inline else "on a scoring thread",
        )
        if self.on_state:
            self.on_state("ready", {"seconds": seconds, "models": sorted(self.runtimes)})

    def runs_inline(self, scorer: ScoringApp | ModelRuntime) -> bool:
        """Whether calls into ``scorer`` run on the event loop: ``execution`` ``inline``, or ``auto`` and
        the scorer declares ``inline_safe`` (entry scripts do not: user code may block)."""
        execution = self.settings.execution
        return execution == "inline" or (execution == "auto" and bool(scorer.inline_safe))

    def add_route(
        self,
        path: str,
        label: str,
        handler: Handler,
        methods: tuple[str, ...],
        open: bool = False,
        target: Any = None,
        scoring: bool = False,
    ) -> None:
        """Answer ``path`` with ``handler(conn, req, route)``; ``label`` names it in metrics, ``open``
        skips auth, ``target`` is what the handler serves (``route.target``), ``scoring`` puts it
        under the concurrency limit (when one is set)."""
        self.routes[path] = Route(label, handler, methods, open, target, scoring and self.limit is not None)

    # -- running model calls ----------------------------------------------------------------------------
    def batcher(self, runtime: ModelRuntime) -> Batcher:
        """The adaptive batcher of ``runtime`` (made on first use; /score and V2 share it)."""
        batcher = self._batchers.get(id(runtime))
        if batcher is None:
            s = self.settings
            name = runtime.name
            batcher = self._batchers[id(runtime)] = Batcher(
                self.loop,
                runtime.predict,
                self.lane,
                s.max_batch_size,
                s.max_batch_wait_ms / 1000,
                concurrency=s.scoring_threads,
                observe=lambda n: self.metrics.observe_batch(name, n),
                cancel=runtime.cancel if runtime.supports_cancel else None,
            )
        return batcher

    def offload(
        self,
        fn: Callable[..., Any],
        args: tuple,
        callback: Callable[[Any, Any], None],
        cancel: Callable[[], None] | None = None,
    ) -> None:
        """Run on a scoring thread: waiting in place for a quick answer when there is one thread.
        ``cancel``: the scorer's ``cancel()``, for a call that overruns the scoring timeout."""
        if self._handoff_wait:
            self.lane.run_waiting(fn, args, callback, self._handoff_wait, cancel)
        else:
            self.lane.submit(fn, args, callback, cancel)

    # -- dispatch -------------------------------------------------------------------------------------
    def handle(self, conn: Connection, req: HttpRequest) -> None:
        """Answer one request; every path ends in exactly one ``conn.reply``."""
        self.metrics.in_flight += 1
        if req.reject is not None:
            r = req.reject
            conn.reply(req, r.status, error_body(r.message, r.key), headers=r.headers)
            return
        route = self.routes.get(req.path)
        try:
            if route is None:
                self._not_found(conn, req)
                return
            req.route = route.label
            if req.method not in route.methods:
                if req.method == "OPTIONS":
                    self._options(conn, req, route)
                    return
                allow = ", ".join(sorted(route.methods | {"OPTIONS"}))
                conn.reply(
                    req,
                    405,
                    error_body(f"{req.method} is not allowed on {req.path}; use {allow}"),
                    headers=[b"allow: ", allow.encode(), b"\r\n"],
                )
                return
            if len(req.request_id) > REQUEST_ID_LIMIT:
                req.request_id = self.new_request_id()
                conn.reply(req, 431, error_body(f"x-request-id must not exceed {REQUEST_ID_LIMIT} characters"))
                return
            if route.gated:
                self.limit.enter(conn, req, route)  # type: ignore[union-attr]  # now, after a wait, or 503
            else:
                route.handler(conn, req, route)  # auth: checked with the headers (authenticate)
        except Exception:
            self.internal_error(conn, req)

    def run_route(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        """Run a request's handler later (it waited for a concurrency slot)."""
        try:
            route.handler(conn, req, route)
        except Exception:
            self.internal_error(conn, req)

    def authenticate(self, url: bytes, headers: dict[bytes, bytes], method: bytes) -> None:
        """With auth on, called when a request's headers are complete: raise ``Reject(401)`` (the
        connection answers it and closes without reading the body) unless the path is an open probe,
        the request is a CORS preflight on a served route (browsers send those without credentials),
        or the credentials are valid. Unknown paths need credentials too: a 404 would tell what is served."""
        qpos = url.find(b"?")
        path = (url[:qpos] if qpos >= 0 else url).decode("latin-1")
        route = self.routes.get(path)
        if route is not None and (route.open or (method == b"OPTIONS" and self._preflight(headers))):
            return
        failure = self.auth.check(headers.get(b"authorization"))  # type: ignore[union-attr]
        if failure is not None:
            challenge, message = failure
            key = "error" if path.startswith("/v2") else "message"
            raise Reject(401, message, key, [b"www-authenticate: ", challenge.encode(), b"\r\n"])

    def _preflight(self, headers: dict[bytes, bytes]) -> bool:
        origin = headers.get(b"origin")
        return (
            origin is not None
            and b"access-control-request-method" in headers
            and bool(self.cors_origins)
            and bool(self.cors_headers(origin))
        )

    def internal_error(self, conn: Connection, req: HttpRequest) -> None:
        log.exception("internal error answering %s %s", req.method, req.path)
        if not req.answered:
            key = "error" if req.path.startswith("/v2") else "message"
            conn.reply(req, 500, error_body("internal server error; see the server log", key))

    def guard(self, conn: Connection, req: HttpRequest, fn: Callable[..., None]) -> Callable[[Any, Any], None]:
        """A lane callback that cannot leave the request unanswered."""

        def callback(result: Any, error: BaseException | None) -> None:
            try:
                fn(result, error)
            except Exception:
                self.internal_error(conn, req)

        return callback

    def _not_found(self, conn: Connection, req: HttpRequest) -> None:
        path = req.path
        if path.startswith("/v2/models/"):
            self.v2.not_found(conn, req)
            return
        key = "error" if path.startswith("/v2") else "message"
        conn.reply(req, 404, error_body(f"no route {path}", key))

    def _options(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        allow = ", ".join(sorted(route.methods | {"OPTIONS"})).encode()
        headers = [b"allow: ", allow, b"\r\n"]
        origin = req.headers.get(b"origin")
        if self.cors_origins and origin is not None and self.cors_headers(origin):
            requested = req.headers.get(b"access-control-request-headers", b"authorization, content-type")
            headers += [
                b"access-control-allow-methods: ",
                allow,
                b"\r\n",
                b"access-control-allow-headers: ",
                requested,
                b"\r\n",
                b"access-control-max-age: 600\r\n",
            ]
        conn.reply(req, 200, b"", TEXT, headers)

    def not_ready(self, conn: Connection, req: HttpRequest, v2_error: bool = False) -> None:
        if self.load_error is not None:
            message = f"not ready: load() failed: {self.load_error}"
        else:
            message = "not ready: the model is still loading"
        conn.reply(req, 503, error_body(message, "error" if v2_error else "message"), headers=[b"retry-after: 1\r\n"])

    # -- shutdown -------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self.limit is not None:
            self.limit.close()
        self.lane.close()
