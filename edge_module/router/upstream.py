"""Keep-alive connections to one version: a pool, and the protocol that frames and relays responses.

An :class:`UpstreamConnection` carries one request at a time for the client connection attached
to it (:class:`~edge_module.router.proxy.ClientConnection`): the client writes the request bytes,
the upstream parses only the response's status line and framing headers, has the client rewrite the
head (hop-by-hop headers out; ``azureml-model-deployment``, ``Via`` and the router's ``Connection`` in)
and hands every byte of the body to the client as it comes. When the response has ended and both sides
allow it, the connection goes back to the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from edge_module.router.http import (
    CHUNKED,
    END,
    LENGTH,
    NONE,
    UNTIL_CLOSE,
    ChunkedEnd,
    parse_response_head,
    strip_hop_by_hop,
)

if TYPE_CHECKING:
    from edge_module.router.proxy import ClientConnection

log = logging.getLogger("edgepack.router")

MAX_RESPONSE_HEAD = 65536
MAX_IDLE = 512  # idle connections kept per version
IDLE_TIMEOUT = 30.0  # below the scoring module's keep-alive (75 s): the router closes idle ones first


class Pool:
    """Idle keep-alive connections to one version's URL."""

    __slots__ = ("closed", "host", "idle", "loop", "port", "url")

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"version URL {url!r}: the router speaks plain http://HOST:PORT to its versions")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.loop = loop
        self.idle: list[UpstreamConnection] = []
        self.closed = False

    def take(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def give_back(self, conn: UpstreamConnection) -> None:
        if self.closed or len(self.idle) >= MAX_IDLE or conn.transport is None:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    async def connect(self) -> UpstreamConnection:
        _, conn = await self.loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port)
        return conn

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than :data:`IDLE_TIMEOUT`."""
        keep = []
        for conn in self.idle:
            if conn.transport is None or now - conn.idle_since > IDLE_TIMEOUT:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep

    def close_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle = []

    def close(self) -> None:
        """Stop pooling: close the idle connections; busy ones close when their response ends."""
        self.closed = True
        for conn in self.idle:
            conn.close()
        self.idle = []


class UpstreamConnection(asyncio.Protocol):
    """One connection to a version, relaying the response of the current request to its client."""

    __slots__ = (
        "buf",
        "chunks",
        "client",
        "head",
        "head_request",
        "idle_since",
        "keep_alive",
        "left",
        "mode",
        "pool",
        "started",
        "status",
        "transport",
    )

    def __init__(self, pool: Pool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.idle_since = 0.0
        self.reset(False)

    def reset(self, head_request: bool) -> None:
        self.head_request = head_request
        self.buf = b""
        self.head = True  # reading the response head
        self.started = False  # a byte of the response was received
        self.status = 0
        self.mode = NONE
        self.left = 0
        self.keep_alive = True
        self.chunks: ChunkedEnd | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        client = self.client
        if client is None:
            return
        self.client = None
        if self.mode == UNTIL_CLOSE and not self.head:
            client.response_done(self.status, False)
        else:
            client.upstream_lost(self.started, self.started and not self.head)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading()

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # nothing was asked: a version that talks out of turn is not reused
            self.close()
            return
        self.started = True
        if self.head:
            data = self.buf + data if self.buf else data
            while True:
                end = data.find(END)
                if end < 0:
                    if len(data) > MAX_RESPONSE_HEAD:
                        self.fail("the version's response headers are over 64 KiB")
                    else:
                        self.buf = data
                    return
                raw = data[: end + 4]
                try:
                    head = parse_response_head(raw, self.head_request)
                except ValueError:
                    self.fail("the version sent a malformed response")
                    return
                data = data[end + 4 :]
                if head.status < 200:  # 100 Continue and friends: relay, the real answer follows
                    client.write(strip_hop_by_hop(raw, head.low))
                    if not data:
                        self.buf = b""
                        return
                    continue
                break
            self.buf = b""
            self.head = False
            self.status = head.status
            self.mode = head.mode
            self.left = head.length
            self.keep_alive = head.keep_alive
            out = client.response_head(raw, head.low, head.mode == UNTIL_CLOSE)
            mode = self.mode
            if mode == NONE:
                if data:
                    self.keep_alive = False  # bytes beyond the response: do not trust this connection again
                client.write(out)
                self.finish()
                return
            if mode == LENGTH and len(data) >= self.left:  # the whole answer in one read: one write
                if len(data) > self.left:
                    data = data[: self.left]
                    self.keep_alive = False
                self.left = 0
                client.write(out + data)
                self.finish()
                return
            client.write(out)
            if not data:
                return
        mode = self.mode
        if mode == LENGTH:
            n = len(data)
            if n < self.left:
                self.left -= n
                client.write(data)
                return
            if n > self.left:
                data = data[: self.left]
                self.keep_alive = False
            self.left = 0
            client.write(data)
            self.finish()
        elif mode == CHUNKED:
            if self.chunks is None:
                self.chunks = ChunkedEnd()
            try:
                used, done = self.chunks.feed(data)
            except ValueError:
                self.fail("the version sent a malformed chunked body")
                return
            if used < len(data):
                self.keep_alive = False
            client.write(data[:used] if used < len(data) else data)
            if done:
                self.finish()
        else:  # UNTIL_CLOSE
            client.write(data)

    # -- the current request ------------------------------------------------------------------------
    def attach(self, client: ClientConnection, head_request: bool) -> None:
        self.client = client
        self.reset(head_request)
        if client.write_paused and self.transport is not None:  # relay no faster than the client reads
            self.transport.pause_reading()

    def finish(self) -> None:
        """The response has ended: hand the connection back (or close it) and tell the client."""
        client = self.client
        self.client = None
        status = self.status
        if self.keep_alive and client is not None and client.body_left == 0 and self.transport is not None:
            self.transport.resume_reading()  # a slow client may have paused it in this very read
            self.pool.give_back(self)
        else:
            self.close()
        if client is not None:
            client.response_done(status, True)

    def fail(self, reason: str) -> None:
        client = self.client
        self.client = None
        self.close()
        if client is not None:
            client.upstream_broken(reason, self.started and not self.head)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
