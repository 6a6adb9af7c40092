"""The HTTP/1.1 server: ``asyncio.Protocol`` + ``httptools`` + orjson, on uvloop when it is installed.

One :class:`Connection` per socket parses with httptools' callbacks and answers requests strictly in
order (pipelining-safe: later requests wait in a per-connection queue while one is being scored).
Routing is one dict lookup on the exact path. Limits and auth are early returns before any body
is decoded: a ``Content-Length`` over the limit is answered 413 from the headers alone and the
connection closed without reading the body.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import gc
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from time import perf_counter
from typing import Any

import httptools
import orjson

from edge_module.runtime import ModelRuntime, Request, Response, ScoringApp, ScoringError
from edge_module.server import metrics as metrics_mod
from edge_module.server import openapi, v2
from edge_module.server.auth import Authenticator
from edge_module.server.batching import Batcher
from edge_module.server.executor import ScoringLane, ScoringTimeout
from edge_module.settings import Settings

log = logging.getLogger("edgepack.server")
access_log = logging.getLogger("edgepack.access")

REQUEST_ID_LIMIT = 100
MAX_PIPELINE = 64
_PHRASES = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        phrase = _PHRASES.get(status, "Unknown")
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


JSON = b"application/json"
_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH")}
_HEAD = b"%scontent-type: %s\r\ncontent-length: %d\r\nx-request-id: %s\r\n%s"
_OWN_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding", "connection", "x-request-id", "date"})
TEXT = b"text/plain; charset=utf-8"
OCTETS = b"application/octet-stream"


_EXEC_MS = b"x-ms-run-fn-exec-ms: "
_HEADER_PREFIXES: dict[str, bytes] = {"x-ms-run-fn-exec-ms": _EXEC_MS}


def _header_prefix(name: str) -> bytes:
    """``b"Name: "`` for a scorer's response header (cached), ``b""`` for the ones the server owns."""
    lower = name.lower()
    if lower in _OWN_HEADERS or "\n" in name or "\r" in name or ":" in name:
        prefix = b""
    elif lower == "x-ms-run-fn-exec-ms":
        prefix = _EXEC_MS
    else:
        prefix = name.encode("latin-1") + b": "
    if len(_HEADER_PREFIXES) < 1024:
        _HEADER_PREFIXES[name] = prefix
    return prefix


def error_body(message: str, key: str = "message") -> bytes:
    return orjson.dumps({key: message})


class _Reject(Exception):
    """Raised from a parser callback to stop reading: answer ``status`` and close."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class HttpRequest:
    __slots__ = (
        "answered",
        "body",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "reject",
        "request_id",
        "route",
        "start",
    )

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.query = ""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.keep_alive = True
        self.request_id = b""
        self.start = 0.0
        self.route = "<unknown>"
        self.reject: _Reject | None = None
        self.answered = False

    def text_headers(self) -> Mapping[str, str]:
        return _Headers(self.headers)


class _Headers(Mapping[str, str]):
    """The request headers as ``str`` (lower-case names), decoded only when a scorer looks."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: dict[bytes, bytes]):
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        if self._decoded is None:
            self._decoded = {k.decode("latin-1"): v.decode("latin-1") for k, v in self._raw.items()}
        return self._decoded

    def __getitem__(self, key: str) -> str:
        return self._all()[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._all().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return repr(self._all())


class Route:
    __slots__ = ("handler", "label", "methods", "open", "target")

    def __init__(
        self, label: str, handler: Callable[..., None], methods: tuple[str, ...], open: bool = False, target: Any = None
    ):
        self.label = label
        self.handler = handler
        self.methods = frozenset(methods) | ({"HEAD"} if "GET" in methods else set())
        self.open = open
        self.target = target


class Connection(asyncio.Protocol):
    """One client connection: parse, queue, dispatch in order, write."""

    __slots__ = (
        "_body",
        "_body_size",
        "_current",
        "_draining",
        "_headers",
        "_url",
        "busy",
        "idle_ticks",
        "limit",
        "parser",
        "paused",
        "pending",
        "read_started",
        "rejected",
        "service",
        "transport",
    )

    def __init__(self, service: Service):
        self.service = service
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.pending: collections.deque[HttpRequest] = collections.deque()
        self._draining = False
        self.paused = False
        self.rejected = False
        self.limit = service.max_body_size
        self.idle_ticks = 0
        self.read_started = 0.0  # perf_counter() at the first byte of the request being read; 0 between requests
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._current: HttpRequest | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.service.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pending.clear()
        self.service.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.idle_ticks = 0
        if not self.read_started:
            self.read_started = perf_counter()
        if self.rejected:
            return  # the parser stopped on an error; the answer and the close are on their way
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            reject = exc.__context__ if isinstance(exc.__context__, _Reject) else None
            if reject is None:
                log.exception("internal error while parsing a request")
                reject = _Reject(500, "internal server error")
            self._reject(reject)
        except httptools.HttpParserUpgrade:
            self._reject(_Reject(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._reject(_Reject(400, f"malformed HTTP request: {exc}"))

    def _reject(self, reject: _Reject) -> None:
        """Answer the request being parsed with an error, after any queued ones, then close."""
        self.rejected = True
        self.transport.pause_reading()  # type: ignore[union-attr]
        req = self._current or HttpRequest()
        self._current = None
        if not req.method:
            if self._url:  # the request line was read
                method = self.parser.get_method()
                req.method = _METHODS.get(method) or method.decode("ascii", "replace")
            else:
                req.method = "?"
            req.path = self._url.split(b"?", 1)[0].decode("latin-1")
            route = self.service.routes.get(req.path)
            if route is not None:
                req.route = route.label
        req.reject = reject
        req.keep_alive = False
        if not req.start:
            req.start = perf_counter()
        if not req.request_id:
            req.request_id = self.service.new_request_id()
        self.enqueue(req)

    def pause_writing(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    # -- httptools callbacks ------------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > 16384:
            raise _Reject(414, "request URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        headers = self._headers
        req = self._current = HttpRequest()
        req.start = perf_counter()
        req.headers = headers
        rid = headers.get(b"x-request-id")
        req.request_id = rid if rid else self.service.new_request_id()
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            raise _Reject(413, f"request body of {int(length)} bytes is over the {self.limit}-byte limit")
        if (
            b"expect" in headers
            and headers[b"expect"].lower() == b"100-continue"
            and not self.busy
            and not self.pending
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limit:
            raise _Reject(413, f"request body is over the {self.limit}-byte limit")
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = self._current
        self._current = None
        parser = self.parser
        method = parser.get_method()
        req.method = _METHODS.get(method) or method.decode("ascii", "replace")  # type: ignore[union-attr]
        url = self._url
        qpos = url.find(b"?")
        if qpos >= 0:
            req.path = url[:qpos].decode("latin-1")  # type: ignore[union-attr]
            req.query = url[qpos + 1 :].decode("latin-1")  # type: ignore[union-attr]
        else:
            req.path = url.decode("latin-1")  # type: ignore[union-attr]
        body = self._body
        req.body = body[0] if len(body) == 1 else b"".join(body)  # type: ignore[union-attr]
        req.keep_alive = parser.should_keep_alive()  # type: ignore[union-attr]
        # ready for the next message (httptools calls no on_message_begin: this one is not defined)
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self.read_started = 0.0
        self.enqueue(req)  # type: ignore[arg-type]

    # -- dispatch -----------------------------------------------------------------------------------
    def enqueue(self, req: HttpRequest) -> None:
        if self.busy or self._draining:
            self.pending.append(req)
            if len(self.pending) >= MAX_PIPELINE and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            return
        self.busy = True
        self.service.handle(self, req)

    def reply(
        self,
        req: HttpRequest,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        headers: list[bytes] | None = None,
    ) -> None:
        """Write the response for ``req`` (the oldest unanswered request) and go on with the queue."""
        if req.answered:
            return
        req.answered = True
        service = self.service
        service.metrics.in_flight -= 1
        service.metrics.observe(req.route, req.method, status, perf_counter() - req.start)
        transport = self.transport
        if transport is not None:
            head = _HEAD % (status_line(status), content_type, len(body), req.request_id, service.date_header)
            if headers:
                head += b"".join(headers)
            if service.cors_origins and b"origin" in req.headers:
                head += b"".join(service.cors_headers(req.headers[b"origin"]))
            if not req.keep_alive:
                head += b"connection: close\r\n"
            if req.method == "HEAD":
                transport.write(head + b"\r\n")
            elif len(body) < 65536:
                transport.write(head + b"\r\n" + body)
            else:
                transport.writelines([head, b"\r\n", body])
            if not req.keep_alive:
                transport.close()
                self.transport = None
                self.pending.clear()
        if service.access_log:
            access_log.info(
                '%s %s %d %.3fms "%s"',
                req.method,
                req.path,
                status,
                (perf_counter() - req.start) * 1000,
                req.request_id.decode("latin-1"),
            )
        self.busy = False
        if self.pending and not self._draining:
            self._draining = True
            try:
                while self.pending and not self.busy and self.transport is not None:
                    nxt = self.pending.popleft()
                    self.busy = True
                    service.handle(self, nxt)
            finally:
                self._draining = False
            if self.paused and len(self.pending) < MAX_PIPELINE // 2 and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()


class Service:
    """What the connections of one worker share: the app, routes, settings, metrics, state."""

    def __init__(
        self,
        app: ScoringApp,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        metrics: metrics_mod.Metrics | None = None,
        on_state: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.app = app
        self.settings = settings
        self.loop = loop
        self.metrics = metrics or metrics_mod.Metrics()
        self.on_state = on_state
        self.max_body_size = settings.max_body_size
        self.access_log = settings.access_log
        self.connections: set[Connection] = set()
        self.ready = False
        self.load_error: str | None = None
        self.load_traceback: str | None = None
        self.lane = ScoringLane(
            loop, settings.scoring_threads, settings.scoring_timeout, on_timeout=self._count_timeout
        )
        mode = settings.auth_mode
        self.auth: Authenticator | None = None
        if mode == "key":
            keys = tuple(k for k in (settings.primary_key, settings.secondary_key) if k)
            self.auth = Authenticator("key", keys=keys)
        elif mode == "token":
            self.auth = Authenticator("token", secret=settings.token_secret)
        self.cors_origins = frozenset(o.encode() for o in settings.cors_origins)
        self._cors_any = b"*" in self.cors_origins
        self._rid_prefix = self._new_rid_prefix()
        self._rid_count = 0
        self.date_header = b""
        self._tick()
        self.score_inline = False
        self._score_batching = False
        self._batchers: dict[int, Batcher] = {}  # one per model runtime, shared by /score and V2
        self._handoff_wait = settings.handoff_wait_ms / 1000 if settings.scoring_threads == 1 else 0.0
        self._score_cancel: Callable[[], None] | None = None
        self.runtimes: dict[str, ModelRuntime] = {}  # name -> latest version
        self.versions: dict[str, list[str]] = {}
        self.routes: dict[str, Route] = {}
        self._base_routes()
        self._openapi: bytes | None = None

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
                conn._reject(_Reject(408, f"the request did not arrive within {self.settings.read_timeout:g} s"))
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
            self._model_routes(runtimes or [])
        except Exception as exc:  # a runtime whose metadata cannot be read is a load failure too
            self._loaded(None, f"{type(exc).__name__}: {exc}", traceback.format_exc(), seconds)
            return
        execution = self.settings.execution
        self.score_inline = execution == "inline" or (execution == "auto" and inline_safe(self.app))
        self._score_cancel = getattr(self.app, "cancel", None)
        self._score_batching = (
            self.settings.batching
            and callable(getattr(self.app, "parse", None))
            and callable(getattr(self.app, "respond", None))
        )
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

    # -- routes ---------------------------------------------------------------------------------------
    def _base_routes(self) -> None:
        r = self.routes
        r["/"] = Route("/", self.h_root, ("GET",), open=True)
        r["/score"] = Route("/score", self.h_score, ("GET", "POST"))
        r["/swagger.json"] = Route("/swagger.json", self.h_swagger, ("GET",), open=True)
        r["/openapi.json"] = Route("/openapi.json", self.h_openapi, ("GET",), open=True)
        r["/metrics"] = Route("/metrics", self.h_metrics, ("GET",))
        r["/v2/health/live"] = Route("/v2/health/live", self.h_live, ("GET",), open=True)
        r["/v2/health/ready"] = Route("/v2/health/ready", self.h_ready, ("GET",), open=True)
        r["/v2"] = Route("/v2", self.h_server_metadata, ("GET",))
        r["/v2/repository/index"] = Route("/v2/repository/index", self.h_repository, ("POST",))

    def _model_routes(self, runtimes: list[ModelRuntime]) -> None:
        """V2 routes: ``/v2/models/<name>/versions/<v>/...`` per runtime, ``/v2/models/<name>/...`` for the
        latest version of each name."""
        s = self.settings
        by_name: dict[str, list[ModelRuntime]] = {}
        for rt in runtimes:
            by_name.setdefault(rt.name, []).append(rt)
        for name, group in by_name.items():
            latest = max(group, key=lambda rt: _version_key(rt.version))
            self.runtimes[name] = latest
            self.versions[name] = sorted((rt.version for rt in group if rt.version), key=_version_key)
            label = f"/v2/models/{name}"
            for rt in group:
                meta = v2.model_metadata(rt)
                meta["versions"] = self.versions[name]
                batcher = None
                if s.batching:
                    batcher = self._batchers[id(rt)] = self._make_batcher(rt.predict, name)
                inline = s.execution == "inline" or (s.execution == "auto" and inline_safe(rt))
                specs = v2.input_table(rt.inputs)
                target = _V2Model(rt, orjson.dumps(meta), specs, batcher, inline, getattr(rt, "cancel", None))
                bases = [f"/v2/models/{name}/versions/{rt.version}"] if rt.version else []
                if rt is latest:
                    bases.append(label)
                for base in bases:
                    self.routes[base] = Route(label, self.h_model_metadata, ("GET",), target=target)
                    self.routes[base + "/ready"] = Route(label + "/ready", self.h_model_ready, ("GET",), True, target)
                    self.routes[base + "/infer"] = Route(label + "/infer", self.h_infer, ("POST",), target=target)

    # -- dispatch -------------------------------------------------------------------------------------
    def handle(self, conn: Connection, req: HttpRequest) -> None:
        """Answer one request; every path ends in exactly one ``conn.reply``."""
        self.metrics.in_flight += 1
        if req.reject is not None:
            r = req.reject
            conn.reply(req, r.status, error_body(r.message))
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
            if self.auth is not None and not route.open:
                failure = self.auth.check(req.headers.get(b"authorization"))
                if failure is not None:
                    challenge, message = failure
                    key = "error" if req.path.startswith("/v2") else "message"
                    conn.reply(
                        req,
                        401,
                        error_body(message, key),
                        headers=[b"www-authenticate: ", challenge.encode(), b"\r\n"],
                    )
                    return
            route.handler(conn, req, route)
        except Exception:
            self._internal_error(conn, req)

    def _internal_error(self, conn: Connection, req: HttpRequest) -> None:
        log.exception("internal error answering %s %s", req.method, req.path)
        if not req.answered:
            key = "error" if req.path.startswith("/v2") else "message"
            conn.reply(req, 500, error_body("internal server error; see the server log", key))

    def _guard(self, conn: Connection, req: HttpRequest, fn: Callable[..., None]) -> Callable[[Any, Any], None]:
        """A lane callback that cannot leave the request unanswered."""

        def callback(result: Any, error: BaseException | None) -> None:
            try:
                fn(result, error)
            except Exception:
                self._internal_error(conn, req)

        return callback

    def _not_found(self, conn: Connection, req: HttpRequest) -> None:
        path = req.path
        if path.startswith("/v2/models/"):
            if not self.ready:
                self._not_ready(conn, req, v2_error=True)
                return
            rest = path[len("/v2/models/") :].split("/")
            name = rest[0]
            if name not in self.runtimes:
                conn.reply(req, 404, error_body(f"unknown model '{name}'; served: {sorted(self.runtimes)}", "error"))
                return
            if len(rest) >= 3 and rest[1] == "versions":
                have = ", ".join(self.versions[name]) or "none"
                conn.reply(req, 404, error_body(f"model '{name}' has no version '{rest[2]}' (served: {have})", "error"))
                return
            conn.reply(req, 404, error_body(f"unknown route {path} for model '{name}'", "error"))
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

    def _not_ready(self, conn: Connection, req: HttpRequest, v2_error: bool = False) -> None:
        if self.load_error is not None:
            message = f"not ready: load() failed: {self.load_error}"
        else:
            message = "not ready: the model is still loading"
        conn.reply(req, 503, error_body(message, "error" if v2_error else "message"), headers=[b"retry-after: 1\r\n"])

    # -- handlers: Azure ML ---------------------------------------------------------------------------
    def h_root(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        conn.reply(req, 200, b"Healthy", TEXT)

    def h_swagger(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        if not self.ready:
            self._not_ready(conn, req)
            return
        version: int | str = 2
        for part in req.query.split("&"):
            key, _, value = part.partition("=")
            if key == "version":
                version = int(value) if value in ("2", "3") else value
        try:
            doc = self.app.swagger(version)
        except ScoringError as exc:
            conn.reply(req, exc.status, error_body(str(exc)))
            return
        except (ValueError, KeyError, TypeError) as exc:
            conn.reply(req, 404, error_body(f"swagger version {version!r} is not available: {exc}"))
            return
        conn.reply(req, 200, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))

    def h_openapi(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        if self._openapi is None or not self.ready:
            doc = openapi.document(self)
            if not self.ready:
                conn.reply(req, 200, orjson.dumps(doc))
                return
            self._openapi = orjson.dumps(doc)
        conn.reply(req, 200, self._openapi)

    def h_metrics(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        conn.reply(req, 200, self.metrics.render(), metrics_mod.CONTENT_TYPE)

    def h_score(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        if not self.ready:
            self._not_ready(conn, req)
            return
        headers = req.headers
        request = Request(
            req.body,
            headers.get(b"content-type", b"").decode("latin-1"),
            req.method,
            req.text_headers(),
            req.query,
            "/score",
        )
        if self._score_batching and req.method == "POST":
            self._score_batched(conn, req, request)
        elif self.score_inline:
            t0 = perf_counter()
            try:
                response = self.lane.run_inline(self.app.score, (request,), self._score_cancel)
            except BaseException as exc:
                self._score_error(conn, req, exc)
                return
            self._score_reply(conn, req, response, (perf_counter() - t0) * 1000)
        else:
            self._offload(
                _timed,
                (self.app.score, request),
                self._guard(conn, req, lambda r, e: self._score_done(conn, req, r, e)),
            )

    def _score_batched(self, conn: Connection, req: HttpRequest, request: Request) -> None:
        """``/score`` with adaptive batching, for apps split into ``parse`` (request → model and feeds)
        and ``respond`` (outputs → response): feeds of one model are concatenated and run together."""
        app: Any = self.app
        try:
            runtime, feeds = app.parse(request)
        except BaseException as exc:
            self._score_error(conn, req, exc)
            return
        batcher = self._batchers.get(id(runtime))
        if batcher is None:
            batcher = self._batchers[id(runtime)] = self._make_batcher(runtime.predict, runtime.name)
        first = next(iter(feeds.values()), None)
        rows = int(first.shape[0]) if first is not None and getattr(first, "ndim", 0) else 1
        t0 = perf_counter()

        def done(result: Any, error: BaseException | None) -> None:
            if error is not None:
                self._score_error(conn, req, error)
                return
            ms = (perf_counter() - t0) * 1000
            response = app.respond(runtime, [result[n] for n in runtime.output_names], ms)
            self._score_reply(conn, req, response, ms)

        batcher.submit(feeds, rows, self._guard(conn, req, done))

    def _make_batcher(self, predict: Callable[[dict[str, Any]], dict[str, Any]], name: str) -> Batcher:
        s = self.settings
        return Batcher(
            self.loop,
            predict,
            self.lane,
            s.max_batch_size,
            s.max_batch_wait_ms / 1000,
            concurrency=s.scoring_threads,
            observe=lambda n: self.metrics.observe_batch(name, n),
        )

    def _offload(self, fn: Callable[..., Any], args: tuple, callback: Callable[[Any, Any], None]) -> None:
        """Run on a scoring thread: waiting in place for a quick answer when there is one thread."""
        if self._handoff_wait:
            self.lane.run_waiting(fn, args, callback, self._handoff_wait)
        else:
            self.lane.submit(fn, args, callback)

    def _score_done(self, conn: Connection, req: HttpRequest, result: Any, error: BaseException | None) -> None:
        if error is not None:
            self._score_error(conn, req, error)
        else:
            self._score_reply(conn, req, result[0], result[1])

    def _score_reply(self, conn: Connection, req: HttpRequest, response: Any, ms: float) -> None:
        if not isinstance(response, Response):
            # a scorer that returns plain data: encode it as JSON like Azure ML does
            try:
                body = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
            except TypeError as exc:
                self._score_error(conn, req, TypeError(f"the scorer returned something that is not JSON: {exc}"))
                return
            conn.reply(req, 200, body, JSON, [b"x-ms-run-fn-exec-ms: ", b"%.3f" % ms, b"\r\n"])
            return
        body = response.body.encode("utf-8") if isinstance(response.body, str) else bytes(response.body)
        extra: list[bytes] = []
        timed = False
        for k, v in response.headers.items():
            prefix = _HEADER_PREFIXES.get(k)
            if prefix is None:
                prefix = _header_prefix(k)
            if prefix:  # b"": framing and ids are the server's
                if prefix is _EXEC_MS:
                    timed = True
                extra.append(prefix + str(v).encode("latin-1") + b"\r\n")
        if not timed:
            extra.append(b"x-ms-run-fn-exec-ms: %.3f\r\n" % ms)
        if response.status >= 500:
            extra.append(b"x-ms-run-function-failed: True\r\n")
        conn.reply(req, response.status, body, response.content_type.encode("latin-1"), extra)

    def _score_error(self, conn: Connection, req: HttpRequest, exc: BaseException) -> None:
        if isinstance(exc, ScoringTimeout):
            conn.reply(req, 504, error_body(str(exc)), headers=[b"x-ms-run-function-failed: True\r\n"])
        elif isinstance(exc, ScoringError):
            headers = [b"x-ms-run-function-failed: True\r\n"] if exc.status >= 500 else None
            conn.reply(req, exc.status, error_body(str(exc)), headers=headers)
        elif isinstance(exc, Exception):
            log.error(
                "scoring request %s failed:\n%s",
                req.request_id.decode("latin-1"),
                "".join(traceback.format_exception(exc)),
            )
            conn.reply(
                req,
                500,
                error_body(f"run() raised {type(exc).__name__}: {exc} (the server log has the traceback)"),
                headers=[b"x-ms-run-function-failed: True\r\n"],
            )
        else:  # KeyboardInterrupt, SystemExit from a script: answer, then let it propagate
            conn.reply(req, 500, error_body(f"run() raised {type(exc).__name__}"))
            raise exc

    # -- handlers: V2 ---------------------------------------------------------------------------------
    def h_live(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        conn.reply(req, 200, b'{"live":true}')

    def h_ready(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        if self.ready:
            conn.reply(req, 200, b'{"ready":true}')
        else:
            doc: dict[str, Any] = {"ready": False}
            if self.load_error is not None:
                doc["error"] = f"load() failed: {self.load_error}"
            else:
                doc["error"] = "the model is still loading"
            conn.reply(req, 503, orjson.dumps(doc), headers=[b"retry-after: 1\r\n"])

    def h_server_metadata(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        from edge_module.server import __version__

        doc = {"name": "edgepack", "version": __version__, "extensions": ["binary_tensor_data"]}
        conn.reply(req, 200, orjson.dumps(doc))

    def h_repository(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        doc = [
            {"name": n, "version": rt.version or "", "state": "READY" if self.ready else "UNAVAILABLE"}
            for n, rt in sorted(self.runtimes.items())
        ]
        conn.reply(req, 200, orjson.dumps(doc))

    def h_model_metadata(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        conn.reply(req, 200, route.target.metadata)

    def h_model_ready(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        doc = {"name": route.target.runtime.name, "ready": self.ready}
        conn.reply(req, 200 if self.ready else 503, orjson.dumps(doc))

    def h_infer(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        model: _V2Model = route.target
        headers = req.headers
        header_length = headers.get(b"inference-header-content-length")
        ctype = headers.get(b"content-type")
        if ctype is not None and header_length is None and ctype != b"application/json":
            base = ctype.split(b";", 1)[0].strip().lower()
            if base not in (b"application/json", b"text/plain", b""):
                conn.reply(
                    req,
                    415,
                    error_body(
                        f"unsupported content type {ctype.decode('latin-1')!r}; send application/json "
                        "(or the binary tensor extension with Inference-Header-Content-Length)",
                        "error",
                    ),
                )
                return
        body = req.body
        encoding = headers.get(b"content-encoding")
        try:
            if encoding is not None and encoding.lower() not in (b"identity", b""):
                body = _decompress(body, encoding.lower(), self.max_body_size)
            hl = None
            if header_length is not None:
                if not header_length.isdigit():
                    raise ScoringError("Inference-Header-Content-Length must be a whole number", 400)
                hl = int(header_length)
            infer = v2.decode_request(body, hl, model.specs)
        except ScoringError as exc:
            conn.reply(req, exc.status, error_body(str(exc), "error"))
            return

        if model.inline and model.batcher is None:
            try:
                result = self.lane.run_inline(model.runtime.predict, (infer.inputs,), model.cancel)
            except BaseException as exc:
                self._infer_done(conn, req, model, infer, None, exc)
                return
            self._infer_done(conn, req, model, infer, result, None)
            return

        def done(result: Any, error: BaseException | None) -> None:
            self._infer_done(conn, req, model, infer, result, error)

        if model.batcher is not None:
            model.batcher.submit(infer.inputs, infer.rows, self._guard(conn, req, done))
        else:
            self._offload(model.runtime.predict, (infer.inputs,), self._guard(conn, req, done))

    def _infer_done(
        self,
        conn: Connection,
        req: HttpRequest,
        model: _V2Model,
        infer: v2.InferRequest,
        result: Any,
        error: BaseException | None,
    ) -> None:
        if error is None:
            try:
                body, head_len = v2.encode_response(model.runtime.name, model.runtime.version, infer, result)
            except ScoringError as exc:
                error = exc
            except Exception as exc:
                error = exc
            else:
                if head_len is None:
                    conn.reply(req, 200, body)
                else:
                    conn.reply(
                        req, 200, body, OCTETS, [b"inference-header-content-length: ", b"%d" % head_len, b"\r\n"]
                    )
                return
        if isinstance(error, ScoringTimeout):
            conn.reply(req, 504, error_body(str(error), "error"))
        elif isinstance(error, ScoringError):
            conn.reply(req, error.status, error_body(str(error), "error"))
        elif isinstance(error, Exception):
            log.error(
                "V2 infer on model %s failed:\n%s", model.runtime.name, "".join(traceback.format_exception(error))
            )
            conn.reply(
                req, 500, error_body(f"model '{model.runtime.name}' failed: {type(error).__name__}: {error}", "error")
            )
        else:
            conn.reply(req, 500, error_body(f"model '{model.runtime.name}' failed", "error"))
            raise error  # type: ignore[misc]

    # -- shutdown -------------------------------------------------------------------------------------
    def close(self) -> None:
        handle = getattr(self, "_tick_handle", None)
        if handle is not None:
            handle.cancel()
        self.lane.close()


class _V2Model:
    __slots__ = ("batcher", "cancel", "inline", "metadata", "runtime", "specs")

    def __init__(
        self, runtime: ModelRuntime, metadata: bytes, specs: dict, batcher: Batcher | None, inline: bool, cancel: Any
    ):
        self.runtime = runtime
        self.metadata = metadata
        self.specs = specs
        self.batcher = batcher
        self.inline = inline
        self.cancel = cancel


# Scorers known to be fast, bounded and free of user code: run inline unless they say otherwise.
_INLINE_MODULES = frozenset({"edge_module.scoring.onnx_app", "edge_module.scoring.onnx_runtime"})


def _version_key(version: str | None) -> tuple[int, int, str]:
    if version is None:
        return (0, 0, "")
    return (1, int(version), "") if version.isdigit() else (1, -1, version)


def inline_safe(obj: object) -> bool:
    """Whether ``obj`` (an app or a runtime) may run on the event-loop thread: its ``inline_safe``
    attribute when it has one, else True for edgepack's own ONNX scorer, False for anything else
    (entry scripts: user code may block, so it runs on a scoring thread with a timeout)."""
    flag = getattr(obj, "inline_safe", None)
    if flag is not None:
        return bool(flag)
    return type(obj).__module__ in _INLINE_MODULES


def _timed(fn: Callable[[Request], Any], request: Request) -> tuple[Any, float]:
    t0 = perf_counter()
    result = fn(request)
    return result, (perf_counter() - t0) * 1000


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    import zlib

    if encoding == b"gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        d = zlib.decompressobj()
    else:
        raise ScoringError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}; use gzip or deflate", 415)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ScoringError(f"the {encoding.decode()} body does not decompress: {exc}", 400) from None
    if len(out) > limit:
        raise ScoringError(f"the decompressed body is over the {limit}-byte limit", 413)
    return out
