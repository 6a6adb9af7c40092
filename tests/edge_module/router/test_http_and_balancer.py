"""The router's HTTP parsing and its smooth weighted round robin, as functions."""

from __future__ import annotations

import collections

import pytest

from edge_module.router.balancer import Balancer, VersionState
from edge_module.router.http import (
    CHUNKED,
    LENGTH,
    NONE,
    UNTIL_CLOSE,
    ChunkedEnd,
    HttpError,
    parse_request_head,
    parse_response_head,
    strip_hop_by_hop,
)
from edge_module.router.routes import RouteTable, VersionRoute
from edge_module.router.upstream import Pool


def head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def test_a_request_head_is_parsed_and_headers_are_looked_up_case_insensitively() -> None:
    h = parse_request_head(
        head("POST /score?x=1 HTTP/1.1\nHost: a\nAuthorization: Bearer AbC\nContent-LENGTH: 12\n\n"), 100, 1000, 100
    )
    assert (h.method, h.path, h.length, h.keep_alive) == (b"POST", b"/score?x=1", 12, True)
    assert h.get(b"authorization") == b"Bearer AbC" and h.get(b"azureml-model-deployment") is None
    assert not parse_request_head(head("GET / HTTP/1.0\n\n"), 100, 1000, 100).keep_alive
    assert not parse_request_head(head("GET / HTTP/1.1\nConnection: close\n\n"), 100, 1000, 100).keep_alive


def strip(text: str) -> bytes:
    raw = head(text)
    return strip_hop_by_hop(raw, raw.lower())


def test_hop_by_hop_headers_and_those_connection_names_are_stripped() -> None:
    raw = head("GET / HTTP/1.1\nHost: a\nX-A: 1\n\n")
    assert strip_hop_by_hop(raw, raw.lower()) is raw  # nothing to drop: no copy
    assert strip("GET / HTTP/1.1\nConnection: close,  X-B ,x-c\nHost: a\nx-b: 1\nX-C: 2\nX-D: 3\nTE: gzip\n\n") == head(
        "GET / HTTP/1.1\nHost: a\nX-D: 3\n\n"
    )
    # two Connection lines both count; a folded continuation goes with its header; Connection-X is no Connection
    assert strip(
        "HTTP/1.1 200 OK\nConnection: x-a\nconnection : X-B\nX-A: 1\n more\nX-B: 2\nConnection-X: k\n\n"
    ) == head("HTTP/1.1 200 OK\nConnection-X: k\n\n")
    # the framing, the host and the credentials are never dropped for being named; Transfer-Encoding and
    # Trailer go through with the chunked body the router passes on as framed
    text = "HTTP/1.1 200 OK\nConnection: content-length, transfer-encoding, host, authorization\nTrailer: x\n"
    kept = "Content-Length: 1\nTransfer-Encoding: chunked\nHost: a\nAuthorization: k\n\n"
    assert strip(text + kept) == head("HTTP/1.1 200 OK\nTrailer: x\n" + kept)


def test_keep_alive_reads_connection_tokens_not_substrings() -> None:
    assert parse_request_head(head("GET / HTTP/1.1\nConnection: x-closely\n\n"), 100, 1000, 100).keep_alive
    assert not parse_request_head(
        head("GET / HTTP/1.1\nConnection: x\nConnection: Close\n\n"), 100, 1000, 100
    ).keep_alive
    assert parse_request_head(head("GET / HTTP/1.0\nConnection: Keep-Alive, x\n\n"), 100, 1000, 100).keep_alive


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("GET / HTTP/1.1\nA: 1\nB: 2\nC: 3\n\n", 431),
        ("GET /" + "a" * 2000 + " HTTP/1.1\n\n", 414),
        ("POST / HTTP/1.1\nContent-Length: 101\n\n", 413),
        ("POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n", 411),
        ("POST / HTTP/1.1\nContent-Length: 1\nContent-Length: 1\n\n", 400),
        ("GET / HTTP/1.1\nX : 1\n\n", 400),
    ],
)
def test_bad_heads_are_refused_with_the_status_that_names_the_problem(text: str, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_request_head(head(text), 2, 1000, 100)
    assert info.value.status == status


def test_response_framing() -> None:
    assert parse_response_head(head("HTTP/1.1 200 OK\ncontent-length: 5\n\n"), False).mode == LENGTH
    assert parse_response_head(head("HTTP/1.1 200 OK\ncontent-length: 5\n\n"), True).mode == NONE
    assert parse_response_head(head("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"), False).mode == CHUNKED
    r = parse_response_head(head("HTTP/1.1 200 OK\n\n"), False)
    assert r.mode == UNTIL_CLOSE and not r.keep_alive
    assert not parse_response_head(head("HTTP/1.1 204 No\nConnection: close\n\n"), False).keep_alive


def test_the_end_of_a_chunked_body_is_found_across_reads() -> None:
    body = b"5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    end = len(body) - len(b"NEXT")
    for cut in range(1, len(body)):
        c = ChunkedEnd()
        used, done = c.feed(body[:cut])
        if done:
            assert used == end
            continue
        assert used == cut
        used2, done2 = c.feed(body[cut:])
        assert done2 and cut + used2 == end


def balancer(shares: dict[str, float], ready: set[str], default: str) -> Balancer:
    table = RouteTable("ep", tuple(VersionRoute(n, "http://127.0.0.1:1", t, n == default) for n, t in shares.items()))
    versions = {v.name: VersionState(v, Pool(v.url, None)) for v in table.versions}  # type: ignore[arg-type]
    for name in ready:
        versions[name].ready = True
    return Balancer(table, versions)


def test_smooth_weighted_round_robin_is_exact_and_spread() -> None:
    b = balancer({"a": 80, "b": 20}, {"a", "b"}, "a")
    picks = [b.pick().name for _ in range(3000)]  # type: ignore[union-attr]
    assert collections.Counter(picks) == {"a": 2400, "b": 600}
    assert picks[:5].count("b") == 1  # spread out: one b in every five, not 600 in a row


def test_a_small_share_survives_frequent_rebuilds() -> None:
    """Reloads and readiness flaps rebuild the balancer; the running scores carry over, so 1 % still gets 1 %."""
    b = balancer({"a": 99, "b": 1}, {"a", "b"}, "a")
    table, versions = RouteTable("ep", tuple(e[0].route for e in b.entries)), {e[0].name: e[0] for e in b.entries}
    picks = []
    for _ in range(1000):
        b = Balancer(table, versions, b)
        picks.append(b.pick().name)  # type: ignore[union-attr]
    assert collections.Counter(picks) == {"a": 990, "b": 10}


def test_a_version_that_is_not_ready_gives_its_share_to_the_default() -> None:
    b = balancer({"a": 50, "b": 30, "c": 20}, {"a", "b"}, "a")
    assert b.shares == {"a": 70, "b": 30}
    assert collections.Counter(b.pick().name for _ in range(100)) == {"a": 70, "b": 30}  # type: ignore[union-attr]
    assert balancer({"a": 100}, set(), "a").pick() is None


def test_the_router_needs_only_the_standard_library() -> None:
    """It ships in every image, arm included: nothing but the standard library and edge_module (uvloop if there)."""
    import subprocess
    import sys

    code = (
        "import sys; import edge_module.router.__main__; "
        "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)))"
    )
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, env=env)
    assert set(eval(out.stdout)) <= {"edge_module", "__main__"}
