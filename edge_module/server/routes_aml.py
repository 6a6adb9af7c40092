"""The Azure ML routes: ``GET /`` (liveness), ``GET|POST /score``, ``/swagger.json``, ``/openapi.json``, ``/metrics``.

``/score`` runs the app inline on the event loop (``inline_safe`` apps, under the watchdog), on a
scoring thread with a timeout, or, for a :class:`~edge_module.runtime.BatchableApp` with batching
on, through the model's adaptive batcher (``parse`` here, ``predict`` batched, ``respond`` here).
A body over ``inline_max_body`` is scored whole on a scoring thread whatever the app: decoding and
running it on the event loop would stall every other client and the probes.
Failures are answered through :func:`edge_module.protocol.errors.as_scoring_error`. A scorer's
response headers (and content type) are checked before they are written, as werkzeug does: a name
that is not an HTTP token, or a value with CR, LF or NUL (which would inject headers: response
splitting), is answered 500 naming the header.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from edge_module.batching import rows
from edge_module.protocol.errors import as_scoring_error
from edge_module.runtime import BatchableApp, Request, Response, ScoringError
from edge_module.server import metrics as metrics_mod
from edge_module.server import openapi
from edge_module.server.connection import JSON, OWN_HEADERS, TEXT, Connection, HttpRequest, error_body

if TYPE_CHECKING:
    from edge_module.server.service import Route, Service

log = logging.getLogger("edgepack.server")

_EXEC_MS = b"x-ms-run-fn-exec-ms: "
_FAILED = b"x-ms-run-function-failed: True\r\n"
_HEADER_PREFIXES: dict[str, bytes] = {"x-ms-run-fn-exec-ms": _EXEC_MS}
_CONTENT_TYPES: dict[str, bytes] = {"application/json": JSON}  # checked and encoded, by value
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field names


class _BadHeader(ValueError):
    """A scorer's response header that cannot be sent as it is."""


def _header_prefix(name: str) -> bytes:
    """``b"Name: "`` for a scorer's response header (cached), ``b""`` for the ones the server owns;
    :class:`_BadHeader` for a name that is not a token (nothing else may go before the colon)."""
    if type(name) is not str or not _TOKEN.fullmatch(name):
        raise _BadHeader(f"the response header name {name!r} is not a valid HTTP header name")
    lower = name.lower()
    if lower in OWN_HEADERS:
        prefix = b""
    elif lower == "x-ms-run-fn-exec-ms":
        prefix = _EXEC_MS
    else:
        prefix = name.encode("ascii") + b": "
    if len(_HEADER_PREFIXES) < 1024:
        _HEADER_PREFIXES[name] = prefix
    return prefix


def _header_value(name: str, value: str) -> bytes:
    """A response header's value as sent; :class:`_BadHeader` for CR, LF or NUL (response splitting)
    or characters outside latin-1."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise _BadHeader(
            f"the response header {name!r} has a CR, LF or NUL character in its value {value[:80]!r}; "
            "header values must be one line"
        )
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise _BadHeader(
            f"the response header {name!r} has characters outside latin-1 in its value {value[:80]!r}"
        ) from None


def _content_type(value: str) -> bytes:
    encoded = _CONTENT_TYPES.get(value)
    if encoded is None:
        encoded = _header_value("Content-Type", str(value))
        if len(_CONTENT_TYPES) < 64:
            _CONTENT_TYPES[value] = encoded
    return encoded


def _timed(fn: Callable[[Request], Any], request: Request) -> tuple[Any, float]:
    t0 = perf_counter()
    result = fn(request)
    return result, (perf_counter() - t0) * 1000


class AmlRoutes:
    """The handlers of the Azure ML routes, over one :class:`~edge_module.server.service.Service`."""

    def __init__(self, service: Service):
        self.service = service
        self._openapi: bytes | None = None

    def add_routes(self) -> None:
        add = self.service.add_route
        add("/", "/", self.h_root, ("GET",), open=True)
        add("/score", "/score", self.h_score, ("GET", "POST"), scoring=True)
        add("/swagger.json", "/swagger.json", self.h_swagger, ("GET",), open=True)
        add("/openapi.json", "/openapi.json", self.h_openapi, ("GET",), open=True)
        add("/metrics", "/metrics", self.h_metrics, ("GET",))

    # -- documents, health, metrics -------------------------------------------------------------------
    def h_root(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        conn.reply(req, 200, b"Healthy", TEXT)

    def h_swagger(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        service = self.service
        if not service.ready:
            service.not_ready(conn, req)
            return
        version: int | str = 2
        for part in req.query.split("&"):
            key, _, value = part.partition("=")
            if key == "version":
                version = int(value) if value in ("2", "3") else value
        try:
            doc = service.app.swagger(version)
        except ScoringError as exc:
            conn.reply(req, exc.status, error_body(str(exc)))
            return
        except (ValueError, KeyError, TypeError) as exc:
            conn.reply(req, 404, error_body(f"swagger version {version!r} is not available: {exc}"))
            return
        conn.reply(req, 200, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))

    def h_openapi(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        service = self.service
        if self._openapi is None or not service.ready:
            doc = openapi.document(service)
            if not service.ready:
                conn.reply(req, 200, orjson.dumps(doc))
                return
            self._openapi = orjson.dumps(doc)
        conn.reply(req, 200, self._openapi)

    def h_metrics(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        conn.reply(req, 200, self.service.metrics.render(), metrics_mod.CONTENT_TYPE)

    # -- /score ---------------------------------------------------------------------------------------
    def h_score(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        service = self.service
        if not service.ready:
            service.not_ready(conn, req)
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
        small = len(req.body) <= service.inline_max_body
        if service.score_batching and small and req.method == "POST":
            self._score_batched(conn, req, request)
        elif service.score_inline and small:
            t0 = perf_counter()
            try:
                response = service.lane.run_inline(service.app.score, (request,), service.score_cancel)
            except BaseException as exc:
                self._score_error(conn, req, exc)
                return
            self._score_reply(conn, req, response, (perf_counter() - t0) * 1000)
        else:
            service.offload(
                _timed,
                (service.app.score, request),
                service.guard(conn, req, lambda r, e: self._score_done(conn, req, r, e)),
                service.score_cancel,
            )

    def _score_batched(self, conn: Connection, req: HttpRequest, request: Request) -> None:
        """``/score`` with adaptive batching, for a :class:`BatchableApp`: ``parse`` (request → runtime and
        inputs) here, the runtime's ``predict`` on the batch, ``respond`` (outputs → response) here."""
        service = self.service
        app: BatchableApp = service.app  # type: ignore[assignment]  # score_batching: it is one
        try:
            runtime, feeds = app.parse(request)
        except BaseException as exc:
            self._score_error(conn, req, exc)
            return
        t0 = perf_counter()

        def done(result: Any, error: BaseException | None) -> None:
            if error is not None:
                self._score_error(conn, req, error)
                return
            ms = (perf_counter() - t0) * 1000
            self._score_reply(conn, req, app.respond(runtime, result, ms), ms)

        service.batcher(runtime).submit(feeds, rows(feeds), service.guard(conn, req, done))

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
            conn.reply(req, 200, body, JSON, [_EXEC_MS, b"%.3f" % ms, b"\r\n"])
            return
        body = response.body.encode("utf-8") if isinstance(response.body, str) else bytes(response.body)
        extra: list[bytes] = []
        timed = False
        try:
            for k, v in response.headers.items():
                prefix = _HEADER_PREFIXES.get(k)
                if prefix is None:
                    prefix = _header_prefix(k)
                if prefix:  # b"": framing and ids are the server's
                    if prefix is _EXEC_MS:
                        timed = True
                    extra.append(prefix + _header_value(k, str(v)) + b"\r\n")
            content_type = _content_type(response.content_type)
        except _BadHeader as exc:
            log.error("refused the scorer's response to request %s: %s", req.request_id.decode("latin-1"), exc)
            conn.reply(req, 500, error_body(f"the scorer's response was refused: {exc}"), headers=[_FAILED])
            return
        if not timed:
            extra.append(b"x-ms-run-fn-exec-ms: %.3f\r\n" % ms)
        if response.status >= 500:
            extra.append(_FAILED)
        conn.reply(req, response.status, body, content_type, extra)

    def _score_error(self, conn: Connection, req: HttpRequest, exc: BaseException) -> None:
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit from a script: answer, then let it go
            conn.reply(req, 500, error_body(f"run() raised {type(exc).__name__}"))
            raise exc
        error = as_scoring_error(
            exc,
            f"scoring request {req.request_id.decode('latin-1')}",
            "run() raised ",
            " (the server log has the traceback)",
        )
        conn.reply(req, error.status, error_body(str(error)), headers=[_FAILED] if error.status >= 500 else None)
