"""Hostile clients over raw sockets, against every route the server serves.

The routes come from the server's own route table (:func:`served_routes`: a
:class:`~edge_module.server.service.Service` with one V2 model), so a route added to the server is
covered here without editing this module. The cases: header blocks over the size and count limits
(431), URLs over the limit (414), an unauthenticated request whose body is never read (401 from the
headers alone, the connection closed, no ``100 Continue``), unknown paths and models behind auth
(401 before anything else), and V2 bodies declaring shapes the data does not hold (400 before any
allocation). No timing: "the server did not read the body" is "the server closed the connection
while the body was still to come"; a memory bound is measured with tracemalloc.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest
import requests

from edge_module.protocol import v2
from edge_module.runtime import V2_TO_NUMPY, BadInputError, ModelRuntime, Response, TensorSpec
from edge_module.server.lifecycle import BackgroundServer
from edge_module.server.service import Route, Service
from edge_module.settings import Settings
from tests.support.net import read_head, read_response, read_to_close, request_head, send_until_refused
from tests.support.scorers import FunctionApp, Gate

KEY = "hostile-clients-key"
AUTH = ("Authorization", f"Bearer {KEY}")
MODEL = "strings"
BIG_BODY = 50_000_000  # under the default 100 MB limit: only auth can refuse it from the headers
TIMEOUT = 10.0  # a socket timeout only ends a test that already failed (the server kept waiting)


class Strings(ModelRuntime):
    """A V2 model with a BYTES input: what a client declares for it is what V2 decoding must bound."""

    name, version = MODEL, "1"

    def load(self) -> None:
        pass

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("text", "BYTES", (-1,))]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec("text", "BYTES", (-1,))]

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"text": inputs["text"]}


def make_app(calls: list[str] | None = None) -> FunctionApp:
    def score(request: object) -> Response:
        if calls is not None:
            calls.append("score")
        return Response(b"{}")

    return FunctionApp(score, runtimes=[Strings()])


def settings() -> Settings:
    return Settings(port=0, primary_key=KEY)


def served_routes() -> dict[str, Route]:
    """The route table of a loaded server: the Azure ML and V2 routes, and the routes of one model."""
    loop = asyncio.new_event_loop()
    app = make_app()
    service = Service(app, settings(), loop)
    try:
        service.v2.add_models(app.models())
        return dict(service.routes)
    finally:
        service.close()
        loop.close()


ROUTES = served_routes()
ALL = [(m, p) for p, r in ROUTES.items() for m in sorted(r.methods - {"HEAD"})]
PROTECTED = [(m, p) for m, p in ALL if not ROUTES[p].open]
INFER = [p for p in ROUTES if p.endswith("/infer")]
UNKNOWN = sorted(
    {p.replace(f"/v2/models/{MODEL}", "/v2/models/no-such-model") for p in ROUTES if p.startswith("/v2/models/")}
    | {"/no-such-route", "/v2/no-such-route"}
)
ids = [f"{m} {p}" for m, p in ALL]


@pytest.fixture(scope="module")
def calls() -> list[str]:
    return []


@pytest.fixture(scope="module")
def server(calls: list[str]) -> Iterator[BackgroundServer]:
    with BackgroundServer(make_app(calls), settings()) as srv:
        assert srv.wait_ready()
        yield srv


def connect(srv: BackgroundServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.server.port), timeout=TIMEOUT)


def test_the_route_table_is_the_servers(server: BackgroundServer) -> None:
    assert set(server.service.routes) == set(ROUTES)
    assert PROTECTED and INFER


# -- header limits ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), ALL, ids=ids)
def test_oversized_header_block_is_431(server: BackgroundServer, method: str, path: str) -> None:
    limit = server.settings.max_header_size
    headers = [AUTH, *((f"X-Filler-{i}", "a" * 2000) for i in range(limit // 2000 + 1))]
    assert len(headers) < server.settings.max_headers
    with connect(server) as s:
        s.sendall(request_head(method, path, headers))
        data, closed = read_to_close(s)
    assert data.startswith(b"HTTP/1.1 431 "), data[:300]
    assert closed and b"header" in data


@pytest.mark.parametrize(("method", "path"), ALL, ids=ids)
def test_too_many_headers_are_431(server: BackgroundServer, method: str, path: str) -> None:
    headers = [AUTH, *((f"X-H{i}", "v") for i in range(server.settings.max_headers))]
    with connect(server) as s:
        s.sendall(request_head(method, path, headers))
        data, closed = read_to_close(s)
    assert data.startswith(b"HTTP/1.1 431 "), data[:300]
    assert closed and b"headers" in data


def test_headers_within_the_limits_are_served(server: BackgroundServer) -> None:
    count = server.settings.max_headers - 2  # Host and Authorization count too
    size = (server.settings.max_header_size - 1000) // count - 10
    headers = [AUTH, *((f"X-H{i}", "a" * size) for i in range(count))]
    with connect(server) as s:
        s.sendall(request_head("GET", "/metrics", headers))
        assert read_head(s).startswith(b"HTTP/1.1 200 ")


def test_a_header_that_never_ends_is_cut_off(server: BackgroundServer) -> None:
    """One header value streamed without end: the server answers 431 and closes long before 64 MB."""
    total = 64 * 2**20
    with connect(server) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = send_until_refused(s, total, b"a" * 65536)
        data, _ = read_to_close(s)
    assert sent < total
    assert data.startswith(b"HTTP/1.1 431 "), data[:300]


def test_url_over_the_limit_is_414(server: BackgroundServer) -> None:
    path = "/score?" + "q" * server.settings.max_url_size
    with connect(server) as s:
        s.sendall(request_head("POST", path, [AUTH]))
        data, closed = read_to_close(s)
    assert data.startswith(b"HTTP/1.1 414 "), data[:300]
    assert closed


def test_the_url_counts_toward_the_header_limit(server: BackgroundServer) -> None:
    url = server.settings.max_url_size - 100
    rest = server.settings.max_header_size - url + 100
    with connect(server) as s:
        s.sendall(request_head("POST", "/score?" + "q" * url, [AUTH, ("X-Rest", "a" * rest)]))
        data, _ = read_to_close(s)
    assert data.startswith(b"HTTP/1.1 431 "), data[:300]


# -- auth before the body ------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_unauthenticated_body_is_never_read(server: BackgroundServer, calls: list[str], method: str, path: str) -> None:
    """401 from the headers alone; the connection is closed, so the body has nowhere to go."""
    before = len(calls)
    with connect(server) as s:
        s.sendall(request_head(method, path, [("Content-Type", "application/json"), ("Content-Length", str(BIG_BODY))]))
        data, closed = read_to_close(s)
        assert data.startswith(b"HTTP/1.1 401 "), data[:300]
        assert closed and b"www-authenticate: Bearer" in data
        assert send_until_refused(s, BIG_BODY, b"x" * 65536) < BIG_BODY
    assert len(calls) == before


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_expect_continue_without_credentials_is_401_not_100(server: BackgroundServer, method: str, path: str) -> None:
    head = request_head(method, path, [("Expect", "100-continue"), ("Content-Length", "1000")])
    with connect(server) as s:
        s.sendall(head)
        assert read_head(s).startswith(b"HTTP/1.1 401 ")
    with connect(server) as s:  # a wrong key is no better than none
        s.sendall(head.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer wrong\r\n\r\n"))
        assert read_head(s).startswith(b"HTTP/1.1 401 ")


def test_expect_continue_with_credentials_is_100(server: BackgroundServer) -> None:
    with connect(server) as s:
        s.sendall(request_head("POST", "/score", [AUTH, ("Expect", "100-continue"), ("Content-Length", "2")]))
        assert read_head(s).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"{}")
        assert read_head(s).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_protected_routes_serve_with_credentials(server: BackgroundServer, method: str, path: str) -> None:
    r = requests.request(method, server.url + path, headers=dict([AUTH]), timeout=TIMEOUT)
    assert r.status_code not in (401, 431) and r.status_code < 500, r.text


@pytest.mark.parametrize("path", sorted({p for _, p in PROTECTED}))
def test_a_method_not_allowed_is_401_first(server: BackgroundServer, path: str) -> None:
    r = requests.request("PATCH", server.url + path, timeout=TIMEOUT)
    assert r.status_code == 401


@pytest.mark.parametrize("path", UNKNOWN)
def test_unknown_paths_and_models_behind_auth_are_401(server: BackgroundServer, path: str) -> None:
    for method in ("GET", "POST", "OPTIONS"):
        r = requests.request(method, server.url + path, timeout=TIMEOUT)
        assert r.status_code == 401, (method, r.status_code, r.text)
        assert MODEL not in r.text
    r = requests.get(server.url + path, headers=dict([AUTH]), timeout=TIMEOUT)
    assert r.status_code == 404  # with credentials, the usual answer


# -- a saturated server (max concurrent requests) ----------------------------------------------------------
def test_only_scoring_routes_wait_for_a_slot() -> None:
    loop = asyncio.new_event_loop()
    app = make_app()
    service = Service(app, Settings(port=0, primary_key=KEY, max_concurrent_requests=1), loop)
    try:
        service.v2.add_models(app.models())
        assert {p for p, r in service.routes.items() if r.gated} == {"/score", *INFER}
    finally:
        service.close()
        loop.close()


@pytest.fixture
def saturated() -> Iterator[tuple[BackgroundServer, Gate]]:
    """A server with one slot, taken by a /score call that blocks until the test ends; no queue wait."""
    gate = Gate()
    settings = Settings(port=0, primary_key=KEY, max_concurrent_requests=1, max_queue_wait_ms=0, scoring_threads=2)
    with BackgroundServer(FunctionApp(gate, runtimes=[Strings()]), settings) as srv:
        assert srv.wait_ready()
        busy = connect(srv)
        busy.sendall(request_head("POST", "/score", [AUTH, ("Content-Length", "2")]) + b"{}")
        gate.wait_entered(1)
        try:
            yield srv, gate
        finally:
            gate.let_through(100)
            assert read_head(busy).startswith(b"HTTP/1.1 200 ")
            busy.close()


def test_a_saturated_server_answers_pipelined_requests_in_order_and_keeps_the_connection(
    saturated: tuple[BackgroundServer, Gate],
) -> None:
    """503 for scoring, 200 for health, on one connection: each body was read, so the stream stays in step."""
    srv, gate = saturated
    body = b'{"data": "' + b"x" * 200_000 + b'"}'  # more than one read
    score = request_head("POST", "/score", [AUTH, ("Content-Length", str(len(body)))]) + body
    infer = request_head("POST", INFER[0], [AUTH, ("Content-Length", "2")]) + b"{}"
    live = request_head("GET", "/v2/health/live")
    with connect(srv) as s:
        s.sendall(score + live + infer + live)
        answers = [read_response(s) for _ in range(4)]
        assert [status for status, _, _ in answers] == [503, 200, 503, 200], answers
        assert answers[0][1]["retry-after"] == "1" and "connection" not in answers[0][1]
        assert json.loads(answers[0][2])["message"].startswith("the server is busy")
        assert json.loads(answers[2][2])["error"].startswith("the server is busy")
        s.sendall(live)  # still open
        assert read_response(s)[0] == 200
    assert gate.calls == 1


def test_a_saturated_server_still_refuses_unauthenticated_bodies_first(
    saturated: tuple[BackgroundServer, Gate],
) -> None:
    srv, _ = saturated
    with connect(srv) as s:
        s.sendall(request_head("POST", "/score", [("Content-Length", str(BIG_BODY))]))
        data, closed = read_to_close(s)
        assert data.startswith(b"HTTP/1.1 401 ") and closed
        assert send_until_refused(s, BIG_BODY, b"x" * 65536) < BIG_BODY


def test_a_client_that_leaves_while_waiting_does_not_keep_the_slot() -> None:
    """Its place in the queue is skipped: the slot goes to the next waiter, and nothing is scored for it."""
    gate = Gate()
    settings = Settings(port=0, primary_key=KEY, max_concurrent_requests=1, max_queue_wait_ms=30_000, scoring_threads=2)
    score = request_head("POST", "/score", [AUTH, ("Content-Length", "2")]) + b"{}"
    with BackgroundServer(FunctionApp(gate, runtimes=[Strings()]), settings) as srv:
        assert srv.wait_ready()
        service = srv.service
        try:
            with connect(srv) as busy, connect(srv) as waiting:
                busy.sendall(score)
                gate.wait_entered(1)
                leaver = connect(srv)
                leaver.sendall(score)
                _until(lambda: service.metrics.waiting == 1)
                waiting.sendall(score)
                _until(lambda: service.metrics.waiting == 2)
                connections = len(service.connections)
                leaver.close()
                _until(lambda: len(service.connections) == connections - 1)
                gate.let_through(1)
                assert read_head(busy).startswith(b"HTTP/1.1 200 ")
                gate.wait_entered(1)  # the waiter's call, not the leaver's
                gate.let_through(1)
                assert read_head(waiting).startswith(b"HTTP/1.1 200 ")
                assert gate.calls == 2 and service.metrics.waiting == 0
                assert service.limit is not None and service.limit.active == 0
        finally:
            gate.let_through(100)


def _until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there"
        time.sleep(0.005)


# -- V2 bodies that declare more than they hold -------------------------------------------------------
def _binary(shape: list, data: bytes, datatype: str = "BYTES") -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {
            "inputs": [
                {"name": "text", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(data)}}
            ]
        }
    ).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def _json(shape: object, data: list) -> tuple[bytes, dict[str, str]]:
    doc = {"inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "data": data}]}
    return json.dumps(doc).encode(), {}


HOSTILE_BODIES = {
    "binary-huge-count": _binary([10**11], struct.pack("<I", 0)),
    "binary-count-over-the-data": _binary([150_000_000], struct.pack("<I", 0)),
    "binary-zero-times-huge": _binary([0, 10**20], b""),
    "json-huge-count": _json([10**11], ["a"]),
    "json-zero-times-huge": _json([0, 10**20], []),
    "json-float-dim": _json([1e11], ["a"]),
    "json-negative-dim": _json([-1], ["a"]),
    "json-bool-dim": _json([True], ["a"]),
    "json-string-dim": _json(["1"], ["a"]),
}


@pytest.mark.parametrize("path", INFER)
@pytest.mark.parametrize("case", sorted(HOSTILE_BODIES))
def test_v2_shapes_the_body_does_not_hold_are_400(server: BackgroundServer, path: str, case: str) -> None:
    body, headers = HOSTILE_BODIES[case]
    r = requests.post(server.url + path, data=body, headers={**headers, AUTH[0]: AUTH[1]}, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    assert "'text'" in r.json()["error"]


def _table(datatype: str) -> dict[str, v2.InputSpec]:
    return v2.input_table([TensorSpec("text", datatype, (-1,))])


@pytest.mark.parametrize("datatype", sorted(V2_TO_NUMPY))
@pytest.mark.parametrize("shape", [[10**11], [2**64], [0, 10**20], [3, 10**19]])
def test_v2_declared_shapes_are_checked_against_the_data(datatype: str, shape: list[int]) -> None:
    """Every datatype, JSON and binary: a shape the data cannot fill is a 400, never an allocation."""
    for body, headers in (_binary(shape, b"\0" * 8, datatype), _json(shape, [])):
        doc = json.loads(body[: int(headers.get("Inference-Header-Content-Length", len(body)))])
        doc["inputs"][0]["datatype"] = datatype
        head = json.dumps(doc).encode()
        rest = body[int(headers["Inference-Header-Content-Length"]) :] if headers else b""
        with pytest.raises(BadInputError, match="'text'"):
            v2.decode_request(head + rest, len(head) if headers else None, _table(datatype))


@pytest.mark.parametrize("padding", [0, 2_000_000], ids=["small-body", "padded-body"])
def test_v2_bytes_tensor_is_not_allocated_from_the_declared_shape(padding: int) -> None:
    """A 2-million-element BYTES shape with 4 bytes of data: refused before 16 MB of object array exist,
    also when the body (padded with binary data no input claims) has a byte for every element but not 4."""
    doc = {
        "inputs": [{"name": "text", "shape": [2_000_000], "datatype": "BYTES", "parameters": {"binary_data_size": 4}}]
    }
    head = json.dumps(doc).encode()
    body = head + struct.pack("<I", 0) + b"\0" * padding
    tracemalloc.start()
    try:
        with pytest.raises(BadInputError, match="'text'"):
            v2.decode_request(body, len(head), _table("BYTES"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
