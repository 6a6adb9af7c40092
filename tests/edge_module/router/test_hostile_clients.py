"""Hostile clients against the router over raw sockets (mirrors tests/edge_module/server/test_hostile_clients.py).

Every case runs on the paths the router proxies (the scoring module's) and on its own ones: header
blocks over the size and count limits (431), a header that never ends (closed before it is buffered
whole), URLs over the limit (414), a Content-Length over the limit (413), a body without credentials
(401 from the headers alone, the body never read), slowloris heads (408 after the read timeout),
malformed request lines and headers (400), chunked bodies (411). No timing: "the router did not read
the body" is "the router closed the connection while the body was still to come".
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import read_response, read_to_close, request_head, send_until_refused
from tests.support.router import RouterProc, backend, write_routes

KEY = "hostile-router-key"
AUTH = ("Authorization", f"Bearer {KEY}")
PATHS = ["/score", "/v2/models/m/infer", "/-/router", "/-/router/metrics"]
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProc]:
    blue = backend("blue")
    blue.wait_ready()
    routes = Path(tmp_path_factory.mktemp("routes")) / "routes.json"
    write_routes(routes, "ep", 1, [("blue", blue.url, 100, True)])
    proc = RouterProc(routes, env={"EDGEPACK_PRIMARY_KEY": KEY}, args=("--read-timeout", "1"))
    proc.wait_ready({"blue"}, headers={"Authorization": f"Bearer {KEY}"})
    yield proc
    proc.stop()
    blue.stop()


def connect(router: RouterProc) -> socket.socket:
    return socket.create_connection(("127.0.0.1", router.port), timeout=TIMEOUT)


def answer(router: RouterProc, data: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """Send ``data``; the router's one answer and whether it then closed the connection."""
    with connect(router) as sock:
        sock.sendall(data)
        status, headers, body = read_response(sock)
        rest, closed = read_to_close(sock)
        return status, headers, body + rest, closed


@pytest.mark.parametrize("path", PATHS)
def test_a_header_block_over_the_limit_is_431(router: RouterProc, path: str) -> None:
    status, _, body, closed = answer(router, request_head("GET", path, [AUTH, ("X-Big", "a" * 70_000)]))
    assert status == 431 and closed and b"limit" in body


@pytest.mark.parametrize("path", PATHS)
def test_too_many_headers_is_431(router: RouterProc, path: str) -> None:
    headers = [AUTH, *((f"X-H{i}", "v") for i in range(120))]
    status, _, body, closed = answer(router, request_head("GET", path, headers))
    assert status == 431 and closed and b"at most 100 headers" in body


@pytest.mark.parametrize("path", PATHS)
def test_a_header_that_never_ends_is_not_buffered(router: RouterProc, path: str) -> None:
    with connect(router) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nX-Endless: ".encode())
        sent = send_until_refused(sock, 50_000_000, b"a" * 65536)
        assert sent < 50_000_000
        data, closed = read_to_close(sock)
    assert closed and (data == b"" or data.startswith(b"HTTP/1.1 431"))


@pytest.mark.parametrize("path", PATHS)
def test_a_url_over_the_limit_is_414(router: RouterProc, path: str) -> None:
    status, _, _, closed = answer(router, request_head("GET", path + "?q=" + "a" * 20_000, [AUTH]))
    assert status == 414 and closed


@pytest.mark.parametrize("path", PATHS)
def test_a_content_length_over_the_limit_is_413_before_the_body(router: RouterProc, path: str) -> None:
    with connect(router) as sock:
        sock.sendall(request_head("POST", path, [AUTH, ("Content-Length", str(10**12))]))
        status, _, body = read_response(sock)
        assert status == 413 and b"limit" in body
        _, closed = read_to_close(sock)
        assert closed


@pytest.mark.parametrize("path", PATHS)
def test_a_body_without_credentials_is_refused_before_it_is_read(router: RouterProc, path: str) -> None:
    with connect(router) as sock:
        sock.sendall(request_head("POST", path, [("Content-Length", "50000000"), ("Expect", "100-continue")]))
        status, headers, body = read_response(sock)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert b"Authorization" in body
        sent = send_until_refused(sock, 50_000_000, b"x" * 65536)
        assert sent < 50_000_000


@pytest.mark.parametrize("path", PATHS)
def test_a_slowloris_head_is_answered_408_and_closed(router: RouterProc, path: str) -> None:
    with connect(router) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
        data, closed = read_to_close(sock)  # the router's read timeout (1 s) ends it, not the socket's
    assert closed and data.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("path", ["/score", "/-/router"])
def test_a_slowloris_body_is_answered_408_and_closed(router: RouterProc, path: str) -> None:
    with connect(router) as sock:
        sock.sendall(
            request_head("POST", path, [AUTH, ("Content-Length", "100"), ("Content-Type", "application/json")])
        )
        sock.sendall(b"[1,")
        data, closed = read_to_close(sock)
    assert closed and (data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 400"))


BAD = {
    "garbage": b"GARBAGE\r\n\r\n",
    "http/9": b"GET /score HTTP/9.9\r\nHost: x\r\n\r\n",
    "lower-case method": b"get /score HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute target": b"GET http://evil/score HTTP/1.1\r\nHost: x\r\n\r\n",
    "no colon": b"GET /score HTTP/1.1\r\nHost x\r\n\r\n",
    "folded header": b"GET /score HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
    "bare LF": b"GET /score HTTP/1.1\nHost: x\r\n\r\n",
    "space before colon": b"GET /score HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
    "bad length": b"POST /score HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    "two lengths": b"POST /score HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "length and chunked": b"POST /score HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "http/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_requests_are_400_and_closed(router: RouterProc, name: str) -> None:
    status, _, body, closed = answer(router, BAD[name])
    assert status in (400, 505) and closed
    assert json.loads(body.split(b"}", 1)[0] + b"}")["message"]


def test_a_chunked_body_is_refused_411_naming_the_fix(router: RouterProc) -> None:
    head = request_head("POST", "/score", [AUTH, ("Transfer-Encoding", "chunked")])
    status, _, body, closed = answer(router, head + b"5\r\nhello\r\n0\r\n\r\n")
    assert status == 411 and closed and b"Content-Length" in body


def test_pipelined_requests_are_answered_in_order(router: RouterProc) -> None:
    one = request_head("POST", "/score", [AUTH, ("Content-Type", "application/json"), ("Content-Length", "8")])
    with connect(router) as sock:
        sock.sendall(one + b'{"n": 1}' + one + b'{"n": 2}' + request_head("GET", "/-/healthy"))
        first, second, third = read_response(sock), read_response(sock), read_response(sock)
    assert json.loads(first[2])["echo"] == {"n": 1} and json.loads(second[2])["echo"] == {"n": 2}
    assert first[1]["azureml-model-deployment"] == "blue" and third[0] == 200
