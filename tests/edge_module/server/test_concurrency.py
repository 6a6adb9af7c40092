"""Per-replica concurrency (``--max-concurrent-requests``, ``--max-queue-wait-ms``): wait, then 503.

Scorers block on a :class:`~tests.support.scorers.Gate` until the test lets them through, so "N in
progress" and "one waiting" are states the test reaches by events, not by timing; the only clocks
are the queue wait itself (tiny where a test wants the 503, generous where it wants the wait to end
in a slot).
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import requests

from edge_module.runtime import ModelRuntime, TensorSpec
from edge_module.server.lifecycle import BackgroundServer
from edge_module.server.limits import SharedLimit
from edge_module.settings import Settings, SettingsError, settings_from_flags
from tests.support.net import free_port, read_response
from tests.support.procs import Proc
from tests.support.scorers import FunctionApp, Gate

LONG_WAIT_MS = 30_000  # a waiting request gets its slot long before this
TIMEOUT = 20.0


class GatedModel(ModelRuntime):
    """A V2 model whose ``predict`` blocks on the gate."""

    name, version = "gated", "1"

    def __init__(self, gate: Gate):
        self.gate = gate

    def load(self) -> None:
        pass

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("x", "FP32", (-1, 1))]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec("y", "FP32", (-1, 1))]

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.gate()
        return {"y": inputs["x"]}


INFER = "/v2/models/gated/infer"
INFER_BODY = b'{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[1.5]}]}'


@contextlib.contextmanager
def start(gate: Gate, limit: int, wait_ms: float, **more: object) -> Iterator[BackgroundServer]:
    settings = Settings(
        port=0, max_concurrent_requests=limit, max_queue_wait_ms=wait_ms, scoring_threads=limit + 2, **more
    )
    with BackgroundServer(FunctionApp(gate, runtimes=[GatedModel(gate)]), settings) as srv:
        assert srv.wait_ready()
        yield srv


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.let_through(100)  # nothing stays blocked after a failed test


def send(srv: BackgroundServer, path: str = "/score", body: bytes = b'{"data": 1}') -> socket.socket:
    """A request on a fresh connection, sent and not read yet."""
    sock = socket.create_connection(("127.0.0.1", srv.server.port), timeout=TIMEOUT)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.005)


def waiting(srv: BackgroundServer) -> int:
    return srv.service.metrics.waiting


def test_the_request_over_the_limit_waits_and_is_served_when_a_slot_frees(gate: Gate) -> None:
    with start(gate, limit=2, wait_ms=LONG_WAIT_MS) as srv:
        first = [send(srv), send(srv, INFER, INFER_BODY)]  # /score and V2 infer count toward the same limit
        gate.wait_entered(2)
        third = send(srv)
        until(lambda: waiting(srv) == 1, "the third request queued")
        assert gate.calls == 2  # it waits for a slot, not in the scorer
        gate.let_through(1)  # one of the first two finishes: its slot goes to the third
        gate.wait_entered(1)
        assert gate.calls == 3 and waiting(srv) == 0
        gate.let_through(2)
        statuses = [read_response(s)[0] for s in [*first, third]]
        assert statuses == [200, 200, 200]
        metrics = requests.get(srv.url + "/metrics", timeout=TIMEOUT).text
        assert "edgepack_requests_queued_total 1\n" in metrics
        assert "edgepack_requests_rejected_total 0\n" in metrics
        assert "edgepack_requests_waiting 0\n" in metrics


@pytest.mark.parametrize(("path", "body", "key"), [("/score", b'{"data": 1}', "message"), (INFER, INFER_BODY, "error")])
def test_a_request_that_waits_too_long_is_503_with_retry_after(gate: Gate, path: str, body: bytes, key: str) -> None:
    with start(gate, limit=1, wait_ms=20) as srv:
        busy = send(srv)
        gate.wait_entered(1)
        late = send(srv, path, body)
        status, headers, text = read_response(late)  # after the 20 ms wait
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "application/json"
        message = requests.models.complexjson.loads(text)[key]
        assert "busy" in message and "EDGEPACK_MAX_CONCURRENT_REQUESTS" in message
        assert gate.calls == 1  # never reached the scorer
        # the body was read: the same connection serves the next request once a slot is free
        gate.let_through(1)
        assert read_response(busy)[0] == 200
        late.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(late)[0] == 200
        metrics = requests.get(srv.url + "/metrics", timeout=TIMEOUT).text
        assert "edgepack_requests_rejected_total 1\n" in metrics
        route = "/score" if path == "/score" else "/v2/models/gated/infer"
        assert f'edgepack_requests_total{{route="{route}",method="POST",status="503"}} 1' in metrics


def test_no_queue_wait_answers_503_at_once(gate: Gate) -> None:
    with start(gate, limit=1, wait_ms=0) as srv:
        busy = send(srv)
        gate.wait_entered(1)
        assert read_response(send(srv))[0] == 503
        assert srv.service.metrics.queued == 0 and srv.service.metrics.rejected == 1
        gate.let_through(1)
        assert read_response(busy)[0] == 200


def test_health_documents_and_metrics_do_not_wait_while_saturated(gate: Gate) -> None:
    with start(gate, limit=1, wait_ms=LONG_WAIT_MS) as srv:
        busy = send(srv)
        gate.wait_entered(1)
        queued = send(srv)
        until(lambda: waiting(srv) == 1, "the second request queued")
        for path in ("/", "/v2/health/live", "/v2/health/ready", "/v2/models/gated/ready", "/v2/models/gated"):
            assert requests.get(srv.url + path, timeout=TIMEOUT).status_code == 200, path
        for path in ("/swagger.json", "/openapi.json", "/metrics", "/v2", "/v2/repository/index"):
            r = requests.request("POST" if path.endswith("index") else "GET", srv.url + path, timeout=TIMEOUT)
            assert r.status_code == 200, path
        assert "edgepack_requests_waiting 1\n" in requests.get(srv.url + "/metrics", timeout=TIMEOUT).text
        assert waiting(srv) == 1 and gate.calls == 1
        gate.let_through(2)
        assert [read_response(busy)[0], read_response(queued)[0]] == [200, 200]


def test_batched_requests_each_hold_a_slot(gate: Gate) -> None:
    with start(gate, limit=2, wait_ms=LONG_WAIT_MS, max_batch_size=8) as srv:
        first = [send(srv, INFER, INFER_BODY) for _ in range(2)]
        until(lambda: srv.service.limit.active == 2, "two requests admitted")
        gate.wait_entered(1)  # one batch call or two: the limit counts requests either way
        third = send(srv, INFER, INFER_BODY)
        until(lambda: waiting(srv) == 1, "the third request queued")
        gate.let_through(100)
        assert [read_response(s)[0] for s in [*first, third]] == [200, 200, 200]


def test_unlimited_by_default_puts_nothing_on_the_path(gate: Gate) -> None:
    with BackgroundServer(FunctionApp(gate, runtimes=[GatedModel(gate)]), Settings(port=0, scoring_threads=4)) as srv:
        assert srv.wait_ready()
        assert srv.service.limit is None
        assert not any(route.gated for route in srv.service.routes.values())
        socks = [send(srv) for _ in range(3)]
        gate.wait_entered(3)  # all three in the scorer at once
        gate.let_through(3)
        assert [read_response(s)[0] for s in socks] == [200, 200, 200]


def test_a_dead_workers_slots_are_reclaimed_by_its_successor() -> None:
    shared = SharedLimit(2, workers=2)
    for _ in range(2):  # worker 1 took both slots, then died
        assert shared.semaphore.acquire(False)
    shared.held[1] = 2
    assert not shared.semaphore.acquire(False)
    assert shared.reclaim(1) == 2
    assert shared.held[1] == 0
    assert shared.semaphore.acquire(False) and shared.semaphore.acquire(False)
    assert not shared.semaphore.acquire(False)


# -- settings -------------------------------------------------------------------------------------------
def test_settings_and_their_v1_aliases() -> None:
    assert Settings.from_env({}).max_concurrent_requests == 0
    assert Settings.from_env({}).max_queue_wait_ms == 500
    s = Settings.from_env({"MAX_CONCURRENT_REQUESTS_PER_CONTAINER": "3", "MAX_QUEUE_WAIT_MS": "250"})
    assert (s.max_concurrent_requests, s.max_queue_wait_ms) == (3, 250)
    env = {"EDGEPACK_MAX_CONCURRENT_REQUESTS": "5", "MAX_CONCURRENT_REQUESTS_PER_CONTAINER": "3"}
    assert Settings.from_env(env).max_concurrent_requests == 5
    flags = {"max_concurrent_requests": "7", "max_queue_wait_ms": "0"}
    s = settings_from_flags(flags, environ=env)
    assert (s.max_concurrent_requests, s.max_queue_wait_ms) == (7, 0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"EDGEPACK_MAX_CONCURRENT_REQUESTS": "lots"},
            "invalid EDGEPACK_MAX_CONCURRENT_REQUESTS 'lots': expected a whole",
        ),
        ({"MAX_CONCURRENT_REQUESTS_PER_CONTAINER": "1.5"}, "invalid MAX_CONCURRENT_REQUESTS_PER_CONTAINER '1.5'"),
        ({"EDGEPACK_MAX_CONCURRENT_REQUESTS": "-1"}, "invalid max concurrent requests -1: use 0 (unlimited) or more"),
        ({"EDGEPACK_MAX_QUEUE_WAIT_MS": "soon"}, "invalid EDGEPACK_MAX_QUEUE_WAIT_MS 'soon': expected a number"),
        ({"EDGEPACK_MAX_QUEUE_WAIT_MS": "-5"}, "invalid max queue wait -5.0: use 0 or more milliseconds"),
        ({"EDGEPACK_MAX_QUEUE_WAIT_MS": "inf"}, "invalid max queue wait inf"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert message in str(err.value)


def test_a_bad_flag_is_named() -> None:
    with pytest.raises(SettingsError, match=r"invalid --max-concurrent-requests 'x': expected a whole number"):
        settings_from_flags({"max_concurrent_requests": "x"}, environ={})


# -- several workers: one limit for the replica ------------------------------------------------------------
SCORE_PY = """
import os, time, uuid

def init():
    pass

def run(raw_data):
    here = os.path.dirname(os.path.abspath(__file__))
    open(os.path.join(here, "entered-" + uuid.uuid4().hex), "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(here, "gate")) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"pid": os.getpid()}
"""


def test_two_workers_share_one_limit(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text(SCORE_PY)
    port = free_port()
    args = ["--source-dir", str(tmp_path), "--entry-script", "score.py", "--port", str(port), "--host", "127.0.0.1"]
    args += ["--workers", "2", "--max-concurrent-requests", "1", "--max-queue-wait-ms", "50"]
    proc = Proc(args, module=True)
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_for(r"ready in .*POST /score")  # both workers
        entered = lambda: len(list(tmp_path.glob("entered-*")))  # noqa: E731
        busy = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        busy.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        until(lambda: entered() == 1, "the first request in the scorer")
        # new connections land on both workers (SO_REUSEPORT); a per-worker limit would let some in
        statuses = [requests.post(url + "/score", json={}, timeout=TIMEOUT).status_code for _ in range(12)]
        assert statuses == [503] * 12
        assert entered() == 1
        (tmp_path / "gate").touch()
        assert read_response(busy)[0] == 200
        assert requests.post(url + "/score", json={}, timeout=TIMEOUT).status_code == 200
        time.sleep(1.2)  # workers publish their counters about once a second
        metrics = requests.get(url + "/metrics", timeout=TIMEOUT).text
        assert re.search(r"^edgepack_requests_rejected_total 12$", metrics, re.M), metrics
    finally:
        proc.stop()
