"""The router against a scripted upstream (raw sockets both sides): what it forwards, how it frames odd
answers, when it may send a request twice, and that a connection it pools is usable again.

The upstream answers by path: ``/big?n=N`` (N body bytes), ``/crash`` (reads the request, counts it,
closes without answering), ``/half-head`` (half a status line, then closes), ``/hop`` (``ok`` with
hop-by-hop headers of its own); anything else ``ok``.
It records every request head it receives.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_module.router.http import ChunkedEnd
from tests.support.net import read_response, read_to_close, request_head
from tests.support.router import RouterProc, write_routes

TIMEOUT = 20.0
HOP_ANSWER = b"Connection: X-Up-Hop\r\nX-Up-Hop: 1\r\nKeep-Alive: timeout=5, max=100\r\nProxy-Authenticate: Basic\r\n"


class ScriptedUpstream:
    """A keep-alive HTTP/1.1 server on a thread per connection, scripted by path."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.heads: list[bytes] = []
        self.crashes = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                low = head.lower()
                length = 0
                if b"\r\ncontent-length:" in low:
                    length = int(low.split(b"\r\ncontent-length:")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                path = head.split(b" ")[1]
                if not path.startswith(b"/v2/health"):
                    with self.lock:
                        self.heads.append(head)
                if path == b"/crash":
                    with self.lock:
                        self.crashes += 1
                    return
                if path == b"/half-head":
                    conn.sendall(b"HTTP/1.1 20")
                    return
                body = b"ok"
                if path.startswith(b"/big?n="):
                    body = b"x" * int(path.split(b"=")[1])
                extra = HOP_ANSWER if path == b"/hop" else b""
                conn.sendall(b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n" % (extra, len(body)) + body)
                if b"\r\nconnection: close" in low:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def router(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProc]:
    routes = Path(tmp_path_factory.mktemp("routes")) / "routes.json"
    write_routes(routes, "ep", 1, [("blue", upstream.url, 100, True)])
    proc = RouterProc(routes, args=("--upstream-timeout", "3"))
    proc.wait_ready({"blue"})
    yield proc
    proc.stop()


def connect(router: RouterProc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", router.port), timeout=TIMEOUT)


def ask(router: RouterProc, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with connect(router) as sock:
        sock.sendall(data)
        return read_response(sock)


def test_an_upgrade_request_is_refused_and_never_reaches_a_version(router: RouterProc, upstream: ScriptedUpstream):
    head = request_head("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "websocket")])
    with connect(router) as sock:
        sock.sendall(head)
        status, _, body = read_response(sock)
        _, closed = read_to_close(sock)
    assert status == 501 and b"Upgrade" in body and closed
    assert not any(b"/ws " in h for h in upstream.heads)


@pytest.mark.parametrize(
    "data",
    [
        b"GET /score\nX: y HTTP/1.1\r\nHost: x\r\n\r\n",  # a bare LF inside the request target
        b"GET /sc\x00ore HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /score HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",  # a NUL in a header value
        b"GET /score HTTP/1.1\r\nHost: x\r\nX-A: a\x0bb\r\n\r\n",
    ],
)
def test_control_bytes_in_the_target_or_a_header_value_are_400(router: RouterProc, data: bytes) -> None:
    status, _, _ = ask(router, data)
    assert status == 400


def test_a_post_the_version_read_is_not_sent_twice(router: RouterProc, upstream: ScriptedUpstream) -> None:
    with connect(router) as sock:
        sock.sendall(request_head("GET", "/warm"))  # leaves a pooled keep-alive connection to reuse
        assert read_response(sock)[0] == 200
        before = upstream.crashes
        sock.sendall(request_head("POST", "/crash", [("Content-Length", "2")]) + b"{}")
        status, _, _ = read_response(sock)
    assert status == 502
    assert upstream.crashes - before == 1  # the version processed it once: the router must not replay it


def test_half_a_status_line_then_close_is_answered_502(router: RouterProc) -> None:
    with connect(router) as sock:
        sock.sendall(request_head("POST", "/half-head", [("Content-Length", "0")]))
        status, _, _ = read_response(sock)
    assert status == 502


def test_a_pooled_connection_is_usable_after_a_slow_reader_paused_it(router: RouterProc) -> None:
    """A client that does not read makes the router pause reading its upstream; when the last bytes of
    the answer arrive in that same read, the connection goes back to the pool: it must not stay paused
    (the next request on it would never be answered: 504)."""
    for size in range(70_000, 400_000, 30_000):
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(TIMEOUT)
        slow.connect(("127.0.0.1", router.port))
        slow.sendall(request_head("GET", f"/big?n={size}"))
        time.sleep(0.2)  # lets the router read the answer (no assertion depends on it)
        answers = probe_all_pooled(router)
        assert answers == [(200, b"x")] * len(answers), f"after a {size}-byte answer to a slow reader"
        got = 0
        while got < size:  # now the slow one reads its answer, whole
            chunk = slow.recv(1 << 20)
            assert chunk
            got += len(chunk)
        slow.close()


def probe_all_pooled(router: RouterProc, n: int = 8) -> list[tuple[int, bytes]]:
    """``n`` requests at once: together they take every idle pooled connection."""
    out: list[tuple[int, bytes]] = []
    socks = [connect(router) for _ in range(n)]
    for s in socks:
        s.sendall(request_head("GET", "/big?n=1"))
    for s in socks:
        with s:
            try:
                status, _, body = read_response(s)
            except (ConnectionError, TimeoutError) as exc:
                status, body = 0, str(exc).encode()
            out.append((status, body))
    return out


def head_of(upstream: ScriptedUpstream, marker: bytes) -> dict[bytes, bytes]:
    """The headers (lower-case names) of the one request the upstream received whose line has ``marker``."""
    with upstream.lock:
        found = [h for h in upstream.heads if marker in h.split(b"\r\n", 1)[0]]
    assert len(found) == 1, found
    lines = found[0].split(b"\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}


REQUEST_HOPS = [
    ("X-Secret-Hop", "1"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Proxy-Authorization", "Basic dXNlcjpwdw=="),
    ("Proxy-Connection", "keep-alive"),
    ("Authorization", "Bearer end-to-end"),
    ("X-Kept", "yes"),
]
HOP_NAMES = {b"connection", b"x-secret-hop", b"keep-alive", b"te", b"proxy-authorization", b"proxy-connection"}


def test_hop_by_hop_request_headers_do_not_reach_the_version(router: RouterProc, upstream: ScriptedUpstream) -> None:
    headers = [("Connection", "close, X-Secret-Hop"), *REQUEST_HOPS]
    with connect(router) as sock:
        sock.sendall(request_head("POST", "/hop-close", headers))
        status, answer, body = read_response(sock)
        _, closed = read_to_close(sock)
    assert (status, body, answer["connection"], closed) == (200, b"ok", "close", True)
    got = head_of(upstream, b"/hop-close ")
    assert not HOP_NAMES & got.keys()
    # end-to-end headers go on as they were: the endpoint's Authorization (not hop-by-hop), the rest
    assert got[b"authorization"] == b"Bearer end-to-end" and got[b"x-kept"] == b"yes" and got[b"host"] == b"x"
    assert got[b"via"] == b"1.1 edgepack-router"


def test_hop_by_hop_headers_go_neither_way_and_the_client_connection_stays_alive(
    router: RouterProc, upstream: ScriptedUpstream
) -> None:
    headers = [("Connection", "X-Secret-Hop"), *REQUEST_HOPS, ("Content-Length", "2")]
    with connect(router) as sock:
        for i in range(2):  # both on one connection: the router keeps it alive
            sock.sendall(request_head("POST", f"/hop?i={i}", headers) + b"{}")
            status, answer, body = read_response(sock)
            assert (status, body) == (200, b"ok")
            assert not {"connection", "x-up-hop", "keep-alive", "proxy-authenticate"} & answer.keys(), answer
            assert answer["content-length"] == "2" and answer["azureml-model-deployment"] == "blue"
            assert answer["via"] == "1.1 edgepack-router"
            got = head_of(upstream, b"/hop?i=%d " % i)
            assert not HOP_NAMES & got.keys() and got[b"content-length"] == b"2"


def test_an_http10_client_keeping_alive_is_told_so_by_the_router(router: RouterProc, upstream: ScriptedUpstream):
    with connect(router) as sock:
        for i in range(2):
            sock.sendall(b"GET /hop10?i=%d HTTP/1.0\r\nConnection: keep-alive\r\nKeep-Alive: timeout=9\r\n\r\n" % i)
            status, answer, body = read_response(sock)
            assert (status, body, answer["connection"]) == (200, b"ok", "keep-alive")
            got = head_of(upstream, b"/hop10?i=%d " % i)
            assert got[b"connection"] == b"keep-alive" and b"keep-alive" not in got  # the router's pooled one
            assert got[b"via"] == b"1.0 edgepack-router"
        sock.sendall(b"GET /hop10?i=2 HTTP/1.0\r\n\r\n")  # no keep-alive: answered, then closed
        status, answer, body = read_response(sock)
        _, closed = read_to_close(sock)
    assert (status, body, answer["connection"], closed) == (200, b"ok", "close", True)


@pytest.mark.parametrize("line", [b"-2", b"+2", b"0x2", b"1_0", b" "])
def test_a_chunk_size_that_is_not_plain_hex_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        ChunkedEnd().feed(line + b"\r\nab\r\n0\r\n\r\n")
