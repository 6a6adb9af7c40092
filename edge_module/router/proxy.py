"""One client connection to the router: read a head, pick a version, relay the request and its answer.

Requests on a connection are handled one at a time (pipelined bytes wait, bounded). The head is
read up to the blank line (bounded in size), parsed (:func:`~edge_module.router.http.parse_request_head`),
authenticated before any of the body is read (401 and close), then routed: the
``azureml-model-deployment`` header pins a version, else the balancer picks one. The head and the
body are written to a pooled keep-alive connection of that version as they arrive (held back, bounded,
while a new connection opens); the response comes back through
:class:`~edge_module.router.upstream.UpstreamConnection`. A version whose connection cannot be
opened (nothing was sent) is marked not ready and the request goes to another version unless pinned;
a failure after bytes were sent is answered 502 (or the connection closed if the answer had started).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from edge_module.router.http import (
    END,
    HttpError,
    error_response,
    forward_request_head,
    parse_request_head,
    strip_hop_by_hop,
)
from edge_module.router.routes import PIN_HEADER

if TYPE_CHECKING:
    from edge_module.router.balancer import VersionState
    from edge_module.router.router import Router
    from edge_module.router.upstream import UpstreamConnection

log = logging.getLogger("edgepack.router")
access_log = logging.getLogger("edgepack.access")

PIN = PIN_HEADER.encode()
HELD_LIMIT = 1 << 20  # body bytes held while the upstream connection opens before the client is paused
# requests sent again on a new connection when a reused one closed without a byte back (the version may have
# processed it): only those safe to repeat, as Go's net/http does
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})


class ClientConnection(asyncio.Protocol):
    """A client's connection; at most one request in flight."""

    __slots__ = (
        "body_left",
        "buf",
        "closing",
        "head_request",
        "held",
        "held_size",
        "http11",
        "idempotent",
        "keep_alive",
        "last_active",
        "paused",
        "pinned",
        "read_started",
        "resend",
        "router",
        "start",
        "transport",
        "tried",
        "upstream",
        "version",
        "waiting",
        "write_paused",
    )

    def __init__(self, router: Router):
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.version: VersionState | None = None  # the version of the request in flight
        self.upstream: UpstreamConnection | None = None
        self.waiting = False  # a request is in flight (sent, or held until its connection opens)
        self.held: list[bytes] | None = None  # request bytes held while the connection opens
        self.held_size = 0
        self.body_left = 0
        self.keep_alive = True
        self.http11 = True
        self.head_request = False
        self.pinned = False
        self.tried: list[str] = []
        self.resend: list[bytes] | None = None  # a whole request sent on a reused connection, kept for one retry
        self.start = 0.0
        self.read_started = 0.0
        self.last_active = time.monotonic()
        self.paused = False
        self.write_paused = False  # the client's transport buffer is over its high-water mark
        self.idempotent = False
        self.closing = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.router.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.router.connections.discard(self)
        if self.waiting:  # the client went away mid-request: the upstream answer has nowhere to go
            upstream = self.upstream
            self.upstream = None
            if upstream is not None:
                upstream.client = None
                upstream.close()
            self._account(499)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()
        elif not self.waiting and not self.closing:  # go on with the requests held while it drained
            self.resume_reading()
            if self.buf:
                buf = self.buf
                self.buf = b""
                self._next(buf)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.waiting:
            left = self.body_left
            if left:
                if len(data) <= left:
                    self.body_left = left - len(data)
                    self._send(data)
                    return
                self.body_left = 0
                self._send(data[:left])
                data = data[left:]
            # pipelined: keep it for after the answer, bounded
            self.buf += data
            if len(self.buf) > self.router.max_header_size:
                self.pause_reading()
            return
        if not self.read_started:
            self.read_started = time.monotonic()
        if self.write_paused:  # the client does not read its answers: take no new request until it does
            self.buf += data
            if len(self.buf) > self.router.max_header_size:
                self.pause_reading()
            return
        buf = self.buf + data if self.buf else data
        self.buf = b""
        self._next(buf)

    # -- flow control (the upstream's write buffer) ---------------------------------------------------
    def pause_reading(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    # -- reading a request ----------------------------------------------------------------------------
    def _next(self, buf: bytes) -> None:
        router = self.router
        end = buf.find(END)
        if end < 0:
            if len(buf) > router.max_header_size:
                self.reject(HttpError(431, router.head_message))
            else:
                self.buf = buf
            return
        if end + 4 > router.max_header_size:
            self.reject(HttpError(431, router.head_message))
            return
        raw = buf[: end + 4]
        rest = buf[end + 4 :]
        try:
            head = parse_request_head(raw, router.max_headers, router.max_url_size, router.max_body_size)
            if router.auth is not None and head.path not in router.open_paths:
                router.authenticate(head)  # raises HttpError(401): the body is never read
        except HttpError as exc:
            self.reject(exc)
            return
        self.keep_alive = head.keep_alive
        self.http11 = head.http11
        if head.path.startswith(b"/-/"):
            if head.length:
                self.reject(HttpError(400, "the router's own routes take no request body"))
                return
            self.buf = rest
            self.last_active = time.monotonic()
            self.read_started = 0.0
            self.write(router.admin(head, self.keep_alive))
            if not self.keep_alive:
                self.close()
            elif rest:
                self.buf = b""
                self._next(rest)
            return
        pin = head.get(PIN)
        if pin is not None:
            version = router.versions.get(pin.decode("latin-1"))
            if version is None:
                names = ", ".join(router.versions) or "none"
                self.reject(
                    HttpError(404, f"no version {pin.decode('latin-1')!r} in this endpoint (versions: {names})")
                )
                return
            if not version.ready:
                self.reject(
                    HttpError(
                        503, f"version {version.name!r} is not ready: {version.ready_reason}", b"retry-after: 1\r\n"
                    )
                )
                return
            self.pinned = True
        else:
            version = router.balancer.pick()
            if version is None:
                self.reject(HttpError(503, router.no_version_message(), b"retry-after: 1\r\n"))
                return
            self.pinned = False
        length = head.length
        first = rest[:length] if length else b""
        extra = rest[length:] if length else rest
        self.body_left = length - len(first)
        self.buf = extra
        if len(extra) > router.max_header_size:
            self.pause_reading()
        self.head_request = head.method == b"HEAD"
        self.idempotent = head.method in IDEMPOTENT or head.get(b"idempotency-key") is not None
        self.waiting = True
        self.start = time.monotonic()
        self.tried = []
        out = forward_request_head(head)
        self._dispatch(version, [out, first] if first else [out])

    def _dispatch(self, version: VersionState, data: list[bytes]) -> None:
        """Send the request (what has arrived of it) to ``version``: on an idle pooled connection at
        once, else hold it while a new connection opens."""
        self.version = version
        version.in_flight += 1
        upstream = version.pool.take()
        if upstream is not None:
            self.upstream = upstream
            upstream.attach(self, self.head_request)
            upstream.transport.writelines(data)  # type: ignore[union-attr]
            self.resend = data if self.idempotent and not self.body_left and not self.tried else None
            return
        self.resend = None
        self.held = data
        self.held_size = sum(len(d) for d in data)
        self.router.loop.create_task(self._connect(version))

    async def _connect(self, version: VersionState) -> None:
        try:
            upstream = await asyncio.wait_for(version.pool.connect(), self.router.connect_timeout)
        except (TimeoutError, OSError) as exc:
            self._connect_failed(version, exc)
            return
        if self.version is not version or self.held is None or self.transport is None:
            version.pool.give_back(upstream)  # the client went away, or the request was answered
            return
        self.upstream = upstream
        upstream.attach(self, self.head_request)
        held = self.held
        self.held = None
        self.held_size = 0
        if self.paused and self.body_left:
            self.resume_reading()
        upstream.transport.writelines(held)  # type: ignore[union-attr]

    def _connect_failed(self, version: VersionState, exc: BaseException) -> None:
        """Nothing reached the version: mark it not ready and try another one (unless pinned)."""
        reason = f"cannot connect to {version.route.url}: {exc or type(exc).__name__}"
        self.router.mark_not_ready(version, reason)
        if self.transport is None or not self.waiting or self.version is not version or self.held is None:
            return  # the request was answered (timeout) or its client went away: accounted for already
        self.tried.append(version.name)
        nxt = None if self.pinned else self.router.balancer.pick()
        if nxt is not None and nxt.name not in self.tried:
            held = self.held
            self.held = None
            version.in_flight -= 1
            self._dispatch(nxt, held)
            return
        self.held = None
        self.fail(502, f"version {version.name!r} is unreachable: {reason}")

    def _send(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(data)
        elif self.held is not None:
            self.held.append(data)
            self.held_size += len(data)
            if self.held_size > HELD_LIMIT:
                self.pause_reading()

    # -- answers --------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def response_head(self, raw: bytes, low: bytes, until_close: bool) -> bytes:
        """A version's final response head as this client gets it: without hop-by-hop headers, with the
        version's name, ``Via`` and the router's own ``Connection`` (close when the connection ends
        after this answer: the client asked, the body runs to the close, or the router stops). ``low``:
        ``raw`` lower-cased."""
        raw = strip_hop_by_hop(raw, low)
        if until_close or self.router.stopping:
            self.keep_alive = False
        own = self.version.header + b"via: " + raw[5:8] + b" edgepack-router\r\n"  # type: ignore[union-attr]
        if not self.keep_alive:
            own += b"connection: close\r\n"
        elif not self.http11:
            own += b"connection: keep-alive\r\n"
        cut = raw.find(b"\r\n") + 2
        return raw[:cut] + own + raw[cut:]

    def response_done(self, status: int, clean: bool) -> None:
        """The upstream relayed a whole answer (``clean``: it was framed, else it ended with the connection)."""
        self.upstream = None
        self._account(status)
        if not clean or not self.keep_alive or self.body_left or self.router.stopping:
            self.close()
            return
        self.last_active = time.monotonic()
        self.read_started = 0.0
        if self.write_paused:
            return  # resume_writing goes on with the pipelined requests
        if self.paused:
            self.resume_reading()
        if self.buf:
            buf = self.buf
            self.buf = b""
            self.read_started = self.last_active
            self._next(buf)

    def upstream_lost(self, started: bool, answered: bool) -> None:
        """The version closed the connection before the answer ended.

        A kept-alive connection the version closed while idle (a restart, its keep-alive timeout) is
        only seen when the next request is written to it: when not a byte came back, the whole request
        is sent once more on a new connection (and on to another version if that one cannot open), if it
        is safe to repeat (``GET``, ``HEAD``, ``OPTIONS``, or an ``Idempotency-Key``). ``started``: a byte
        came back; ``answered``: the head was relayed to the client."""
        self.upstream = None
        version = self.version
        if not started and self.resend is not None and version is not None and self.waiting:
            data = self.resend
            self.resend = None
            self.tried.append(version.name)
            version.pool.close_idle()
            version.in_flight -= 1
            self._dispatch(version, data)
            return
        if answered:
            self._account(502)
            self.close()
        else:
            self.fail(502, f"version {self.version.name!r} closed the connection without answering")  # type: ignore[union-attr]

    def upstream_broken(self, reason: str, answered: bool) -> None:
        self.upstream = None
        if answered:
            self._account(502)
            self.close()
        else:
            self.fail(502, f"version {self.version.name!r}: {reason}")  # type: ignore[union-attr]

    def timeout(self) -> None:
        """The version took longer than the upstream timeout."""
        name = self.version.name if self.version is not None else "?"
        self.abort(504, f"version {name!r} did not answer within {self.router.upstream_timeout:g} s")

    def abort(self, status: int, message: str) -> None:
        """Give up on the request in flight: drop its upstream connection, answer ``status`` if the
        answer has not started, and close."""
        upstream = self.upstream
        self.upstream = None
        self.held = None
        if upstream is not None:
            started = upstream.started
            upstream.client = None
            upstream.close()
            if started:
                self._account(status)
                self.close()
                return
        self.fail(status, message)

    def fail(self, status: int, message: str) -> None:
        """Answer the request in flight with the router's own error and close (its body may be unread)."""
        version = self.version
        header = version.header if version is not None else b""
        self.write(error_response(status, message, header, close=True))
        self._account(status)
        self.close()

    def reject(self, exc: HttpError) -> None:
        """Answer a request the router refuses from its head, and close without reading further."""
        self.write(error_response(exc.status, exc.message, exc.headers, close=True))
        if self.router.access_log:
            access_log.info("- %d %s", exc.status, exc.message)
        self.close()

    def _account(self, status: int) -> None:
        if not self.waiting:
            return
        self.waiting = False
        version = self.version
        seconds = time.monotonic() - self.start
        if version is not None:
            version.done(status, seconds)
            if self.router.access_log:
                access_log.info("%s %d %.3fms", version.name, status, seconds * 1000)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
