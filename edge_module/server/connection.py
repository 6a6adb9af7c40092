"""One HTTP/1.1 connection: ``asyncio.Protocol`` + ``httptools`` parsing, limits, in-order replies.

One :class:`Connection` per socket parses with httptools' callbacks and answers requests strictly in
order (pipelining-safe: later requests wait in a per-connection queue while one is being scored).
Limits are early returns before any body is decoded: the request line and headers are bounded in
size and count as they arrive (431; a URL over its own limit 414), a ``Content-Length`` over the
limit is answered 413 and a request without valid credentials for a protected route 401, both from
the headers alone, closing the connection without reading the body (and without ``100 Continue``).
What a request means is the :class:`~edge_module.server.service.Service`'s business (``service.handle``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterator, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

import httptools
import orjson

from edge_module.server.status import phrase as status_phrase

if TYPE_CHECKING:
    from edge_module.server.service import Service

log = logging.getLogger("edgepack.server")
access_log = logging.getLogger("edgepack.access")

REQUEST_ID_LIMIT = 100
MAX_PIPELINE = 64
_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        phrase = status_phrase(status)
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


JSON = b"application/json"
_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH")}
_HEAD = b"%scontent-type: %s\r\ncontent-length: %d\r\nx-request-id: %s\r\n%s"
OWN_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding", "connection", "x-request-id", "date"})
TEXT = b"text/plain; charset=utf-8"
OCTETS = b"application/octet-stream"


def error_body(message: str, key: str = "message") -> bytes:
    return orjson.dumps({key: message})


class Reject(Exception):
    """Raised from a parser callback (or by the service's read timeout) to stop reading: answer
    ``status`` and close. ``key``: the error body's key; ``headers``: extra response header lines."""

    def __init__(self, status: int, message: str, key: str = "message", headers: list[bytes] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.key = key
        self.headers = headers


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
        "slot",
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
        self.reject: Reject | None = None
        self.answered = False
        self.slot = False  # holds a concurrency slot until answered (limits.ConcurrencyLimit)

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


class Connection(asyncio.Protocol):
    """One client connection: parse, queue, dispatch in order, write."""

    __slots__ = (
        "_body",
        "_body_size",
        "_current",
        "_draining",
        "_head_fed",
        "_head_size",
        "_header_count",
        "_headers",
        "_url",
        "auth",
        "busy",
        "idle_ticks",
        "limit",
        "max_head",
        "max_headers",
        "max_url",
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
        self.max_head = service.max_header_size
        self.max_headers = service.max_headers
        self.max_url = service.max_url_size
        self.auth = service.auth
        self.idle_ticks = 0
        self.read_started = 0.0  # perf_counter() at the first byte of the request being read; 0 between requests
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._current: HttpRequest | None = None
        # the request line and headers read so far, counted exactly as the parser hands them over
        self._head_size = 0
        self._header_count = 0
        # bytes fed to the parser since the current head began, counted per read: bounds what the parser
        # buffers of a header that has not ended yet (it hands a header over only once it is whole)
        self._head_fed = 0

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
        in_head = self._current is None
        if in_head:
            self._head_fed += len(data)
        try:
            self.parser.feed_data(data)
            # still in the same head after this read (a head that ended, or a message that completed,
            # zeroed the count): a header is arriving that the parser keeps until it ends
            if in_head and self._head_fed > self.max_head and self._current is None:
                raise Reject(431, self._head_message())
        except Reject as reject:
            self.reject(reject)
        except httptools.HttpParserCallbackError as exc:
            reject = exc.__context__ if isinstance(exc.__context__, Reject) else None
            if reject is None:
                log.exception("internal error while parsing a request")
                reject = Reject(500, "internal server error")
            self.reject(reject)
        except httptools.HttpParserUpgrade:
            self.reject(Reject(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self.reject(Reject(400, f"malformed HTTP request: {exc}"))

    def reject(self, reject: Reject) -> None:
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

    def _head_message(self) -> str:
        return (
            f"the request line and headers are over the {self.max_head}-byte limit; "
            "send less in headers (the body has no such limit)"
        )

    # -- httptools callbacks ------------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if len(self._url) > self.max_url:
            raise Reject(414, f"the request URL is over the {self.max_url}-byte limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head:
            raise Reject(431, self._head_message())
        if self._header_count > self.max_headers:
            raise Reject(431, f"a request may have at most {self.max_headers} headers")

    def on_headers_complete(self) -> None:
        headers = self._headers
        req = self._current = HttpRequest()
        self._head_fed = 0
        req.start = perf_counter()
        req.headers = headers
        rid = headers.get(b"x-request-id")
        req.request_id = rid if rid else self.service.new_request_id()
        if self.auth is not None:
            self.service.authenticate(self._url, headers, self.parser.get_method())  # raises Reject(401)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            raise Reject(413, f"request body of {int(length)} bytes is over the {self.limit}-byte limit")
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
            raise Reject(413, f"request body is over the {self.limit}-byte limit")
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
        self._head_size = 0
        self._header_count = 0
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
        if req.slot:
            service.limit.leave()  # type: ignore[union-attr]
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
