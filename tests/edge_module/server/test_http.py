"""The HTTP server over real sockets: Azure ML routes, errors and limits, readiness, metrics, CORS."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from edge_module.runtime import BadInputError, Request, Response, ScoringApp
from edge_module.scoring import OnnxScoringApp
from edge_module.scoring.onnx_runtime import OnnxRuntime as OnnxScoringRuntime
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from tests.support.net import raw_http
from tests.support.scorers import FunctionApp, OnnxApp, OnnxRuntime

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
X = np.random.default_rng(1).random((1, 64)).astype(np.float32)


@contextmanager
def serving(app: ScoringApp, wait: bool = True, **settings: Any) -> Iterator[BackgroundServer]:
    srv = BackgroundServer(app, Settings(port=0, **settings)).start()
    try:
        if wait:
            srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def onnx_server(mlp_path: Path) -> Iterator[BackgroundServer]:
    """edgepack's own no-code ONNX scorer (edge_module.scoring) behind the server."""
    with serving(OnnxScoringApp(mlp_path.parent, intra_op_threads=1)) as srv:
        yield srv


def expected(mlp_path: Path, x: np.ndarray) -> np.ndarray:
    rt = OnnxRuntime(mlp_path)
    rt.load()
    return rt.predict({"input": x})["output"]


# -- Azure ML routes -------------------------------------------------------------------------------------
def test_liveness_request_ids_and_headers(onnx_server: BackgroundServer) -> None:
    r = requests.get(onnx_server.url + "/")
    assert r.status_code == 200 and r.text == "Healthy"
    generated = r.headers["x-request-id"]
    assert UUID_RE.match(generated)
    again = requests.get(onnx_server.url + "/").headers["x-request-id"]
    assert again != generated and UUID_RE.match(again)
    r = requests.get(onnx_server.url + "/", headers={"x-request-id": "my-id-42"})
    assert r.headers["x-request-id"] == "my-id-42"
    assert "date" in r.headers
    r = requests.get(onnx_server.url + "/", headers={"x-request-id": "x" * 101})
    assert r.status_code == 431


def test_score_onnx_model(onnx_server: BackgroundServer, mlp_path: Path) -> None:
    r = requests.post(onnx_server.url + "/score", json={"data": X.tolist()})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert float(r.headers["x-ms-run-fn-exec-ms"]) >= 0
    np.testing.assert_allclose(r.json()["output"], expected(mlp_path, X), rtol=1e-5)


def test_score_exec_ms_header_is_sent_once(onnx_server: BackgroundServer) -> None:
    raw = raw_http(
        onnx_server.server.port,
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body := json.dumps({"data": X.tolist()}).encode()), body),
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.lower().count(b"x-ms-run-fn-exec-ms:") == 1


def test_malformed_json_is_400_with_the_parse_error(onnx_server: BackgroundServer) -> None:
    r = requests.post(onnx_server.url + "/score", data=b'{"data": [1, 2', headers={"content-type": "application/json"})
    assert r.status_code == 400
    message = r.json()["message"]
    assert "malformed JSON" in message and ("line 1" in message or "column" in message or "char" in message)


def test_wrong_shape_is_400_naming_the_input(onnx_server: BackgroundServer) -> None:
    r = requests.post(onnx_server.url + "/score", json={"data": [[0.5] * 63]})
    assert r.status_code == 400
    message = r.json()["message"]
    assert "'input'" in message and "64" in message


def test_unsupported_content_type_is_415(onnx_server: BackgroundServer) -> None:
    r = requests.post(onnx_server.url + "/score", data=b"a,b\n1,2", headers={"content-type": "text/csv"})
    assert r.status_code == 415
    assert "content type" in r.json()["message"]


def test_unknown_route_and_method(onnx_server: BackgroundServer) -> None:
    r = requests.get(onnx_server.url + "/nope")
    assert r.status_code == 404 and "/nope" in r.json()["message"]
    r = requests.delete(onnx_server.url + "/score")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    r = requests.head(onnx_server.url + "/")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "7"


def test_swagger_versions(onnx_server: BackgroundServer) -> None:
    assert requests.get(onnx_server.url + "/swagger.json").json()["swagger"] == "2.0"
    assert requests.get(onnx_server.url + "/swagger.json?version=3").json()["openapi"].startswith("3.")
    r = requests.get(onnx_server.url + "/swagger.json?version=9")
    assert r.status_code == 404 and "9" in r.json()["message"]


def test_openapi_document_lists_every_route(onnx_server: BackgroundServer) -> None:
    doc = requests.get(onnx_server.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.0")
    for path in ("/", "/score", "/metrics", "/v2/health/ready", "/v2/models/{model_name}/infer"):
        assert path in doc["paths"]


# -- limits ----------------------------------------------------------------------------------------------
def test_body_over_the_limit_is_413_without_reading_it() -> None:
    seen: list[int] = []
    app = FunctionApp(lambda req: seen.append(len(req.body)) or Response(b"{}"))
    with serving(app, max_body_size=1000) as srv, socket.create_connection(("127.0.0.1", srv.server.port)) as s:
        # announce 50 MB, send only the headers and a few bytes: the answer must come anyway
        s.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{"
        )
        s.settimeout(5)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break  # the server closed the connection: it will not read the rest
            data += chunk
        assert data.startswith(b"HTTP/1.1 413 ")
        assert b"connection: close" in data.lower()
        assert b"limit" in data
    assert seen == []


def test_chunked_body_over_the_limit_is_413() -> None:
    app = FunctionApp(lambda req: Response(b"{}"))
    with serving(app, max_body_size=1000) as srv:
        chunk = b"x" * 800
        req = (
            b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2
            + b"0\r\n\r\n"
        )
        assert raw_http(srv.server.port, req).startswith(b"HTTP/1.1 413 ")
        # a body under the limit still works
        assert requests.post(srv.url + "/score", data=b"x" * 999).status_code == 200


def test_a_request_sent_too_slowly_is_408_and_closed() -> None:
    """Slowloris: headers trickling in keep the connection busy only until the read timeout."""
    app = FunctionApp(lambda req: Response(b"{}"))
    with serving(app, read_timeout=1.0) as srv, socket.create_connection(("127.0.0.1", srv.server.port)) as s:
        s.settimeout(0.2)
        data = b""
        start = time.monotonic()
        for byte in b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break  # closed on us
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            data += chunk
            if not chunk or data.endswith(b"}"):
                break
        elapsed = time.monotonic() - start
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert b"connection: close" in data.lower() and b"1 s" in data
        assert elapsed < 5
        # an idle keep-alive connection between requests is not a slow request: it stays open
        with requests.Session() as session:
            assert session.post(srv.url + "/score", data=b"{}").status_code == 200
            time.sleep(2.5)
            assert session.post(srv.url + "/score", data=b"{}").status_code == 200


def test_malformed_http_is_400_and_closed(onnx_server: BackgroundServer) -> None:
    raw = raw_http(onnx_server.server.port, b"GARBAGE\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")


# -- errors from the scorer ---------------------------------------------------------------------------------
def test_run_raising_is_500_and_the_server_keeps_serving() -> None:
    calls = {"n": 0}

    def run(req: Request) -> Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("boom in run()")
        return Response(b'{"ok": true}')

    with serving(FunctionApp(run)) as srv:
        r = requests.post(srv.url + "/score", json={})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/json"
        assert "boom in run()" in r.json()["message"]
        assert r.headers["x-ms-run-function-failed"] == "True"
        r = requests.post(srv.url + "/score", json={})
        assert r.status_code == 200 and r.json() == {"ok": True}


def test_scoring_error_statuses_pass_through() -> None:
    def run(req: Request) -> Any:
        raise BadInputError("parameter 'x' must be a list")

    with serving(FunctionApp(run)) as srv:
        r = requests.post(srv.url + "/score", json={})
        assert r.status_code == 400 and r.json() == {"message": "parameter 'x' must be a list"}


def test_scoring_timeout_is_504_and_the_server_recovers() -> None:
    release = threading.Event()

    def run(req: Request) -> Response:
        if req.body == b"hang":
            release.wait(10)  # a run() that hangs
        return Response(b'{"ok": true}')

    try:
        with serving(FunctionApp(run), scoring_timeout=0.3) as srv:
            t0 = time.monotonic()
            r = requests.post(srv.url + "/score", data=b"hang")
            assert r.status_code == 504
            assert 0.25 < time.monotonic() - t0 < 3
            assert "timed out" in r.json()["message"]
            # the stuck thread is left behind; a fresh one serves the next requests
            for _ in range(3):
                assert requests.post(srv.url + "/score", data=b"ok").status_code == 200
            metrics = requests.get(srv.url + "/metrics").text
            assert "edgepack_scoring_timeouts_total 1" in metrics
    finally:
        release.set()


def test_inline_scoring_timeout_cancels_the_model_and_answers_504(mlp_path: Path) -> None:
    runtime = OnnxRuntime(mlp_path, delay=0.0)
    with serving(OnnxApp(runtime), scoring_timeout=0.2) as srv:
        assert srv.service.score_inline
        runtime.delay = 0.5  # slower than the timeout: the watchdog cancels the run
        r = requests.post(srv.url + "/score", json={"data": X.tolist()})
        assert r.status_code == 504
        runtime.delay = 0.0
        r = requests.post(srv.url + "/score", json={"data": X.tolist()})
        assert r.status_code == 200


def test_raw_response_with_status_headers_and_binary_body() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))

    def run(req: Request) -> Response:
        assert req.headers["x-custom"] == "1"
        assert req.content_type == "image/png"
        return Response(req.body[::-1], status=201, content_type="application/octet-stream", headers={"x-out": "yes"})

    with serving(FunctionApp(run)) as srv:
        r = requests.post(srv.url + "/score", data=png, headers={"content-type": "image/png", "x-custom": "1"})
        assert r.status_code == 201
        assert r.content == png[::-1]
        assert r.headers["x-out"] == "yes"
        assert r.headers["content-type"] == "application/octet-stream"


def test_get_score_passes_the_query() -> None:
    with serving(FunctionApp(lambda req: {"method": req.method, "query": req.query})) as srv:
        assert requests.get(srv.url + "/score?a=1&b=2").json() == {"method": "GET", "query": "a=1&b=2"}


# -- connections ---------------------------------------------------------------------------------------------
def test_pipelined_requests_are_answered_in_order(onnx_server: BackgroundServer) -> None:
    body = json.dumps({"data": X.tolist()}).encode()
    score = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    reqs = (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\r\n\r\n"
        + score.replace(b"Host: x\r\n", b"Host: x\r\nX-Request-Id: b\r\n")
        + b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: c\r\n\r\n"
        + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Request-Id: d\r\nConnection: close\r\n\r\n"
    )
    raw = raw_http(onnx_server.server.port, reqs)
    statuses = re.findall(rb"HTTP/1.1 (\d+)", raw)
    ids = re.findall(rb"x-request-id: (\w+)", raw)
    assert statuses == [b"200", b"200", b"404", b"200"]
    assert ids == [b"a", b"b", b"c", b"d"]


def test_pipelined_requests_with_a_slow_scorer_stay_in_order() -> None:
    def run(req: Request) -> Response:
        time.sleep(0.05 if req.body == b"slow" else 0)
        return Response(req.body)

    with serving(FunctionApp(run)) as srv:
        reqs = b"".join(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
            for b in (b"slow", b"fast1", b"slow", b"fast2")
        )
        with socket.create_connection(("127.0.0.1", srv.server.port), timeout=5) as s:
            s.sendall(reqs)
            data = b""
            while data.count(b"HTTP/1.1 200") < 4 or not data.endswith(b"fast2"):
                data += s.recv(65536)
        bodies = re.findall(rb"\r\n\r\n(slow|fast1|fast2)", data)
        assert bodies == [b"slow", b"fast1", b"slow", b"fast2"]


def test_keep_alive_and_expect_continue(onnx_server: BackgroundServer) -> None:
    with requests.Session() as s:
        for _ in range(5):
            assert s.get(onnx_server.url + "/v2/health/live").status_code == 200
    assert len(onnx_server.service.connections) <= 2
    body = json.dumps({"data": X.tolist()}).encode()
    with socket.create_connection(("127.0.0.1", onnx_server.server.port), timeout=5) as s:
        s.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")


# -- readiness and load ---------------------------------------------------------------------------------------
def test_not_ready_until_load_has_finished() -> None:
    release = threading.Event()
    app = FunctionApp(lambda req: Response(b"{}"), load_fn=lambda: release.wait(10))
    with serving(app, wait=False) as srv:
        assert requests.get(srv.url + "/").status_code == 200  # alive while loading
        r = requests.get(srv.url + "/v2/health/ready")
        assert r.status_code == 503 and "loading" in r.json()["error"]
        r = requests.post(srv.url + "/score", json={})
        assert r.status_code == 503 and "loading" in r.json()["message"]
        release.set()
        assert srv.wait_ready()
        assert requests.get(srv.url + "/v2/health/ready").status_code == 200
        assert requests.post(srv.url + "/score", json={}).status_code == 200


def test_load_failure_is_reported_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    def init() -> None:
        raise RuntimeError("model file is corrupt")

    with serving(FunctionApp(lambda req: {}, load_fn=init), wait=False) as srv:
        assert srv.wait_ready() is False
        failed = [info for state, info in srv.states if state == "failed"]
        assert failed and "model file is corrupt" in failed[0]["error"]
        assert "Traceback" in failed[0]["traceback"] and "in init" in failed[0]["traceback"]
        assert requests.get(srv.url + "/").status_code == 200
        r = requests.get(srv.url + "/v2/health/ready")
        assert r.status_code == 503 and "RuntimeError: model file is corrupt" in r.json()["error"]
        r = requests.post(srv.url + "/score", json={})
        assert r.status_code == 503 and "model file is corrupt" in r.json()["message"]
        assert "edgepack_load_failed" in requests.get(srv.url + "/metrics").text
    assert any("model file is corrupt" in rec.getMessage() or "Traceback" in rec.getMessage() for rec in caplog.records)


# -- metrics, CORS ---------------------------------------------------------------------------------------------
def test_metrics_in_prometheus_text(onnx_server: BackgroundServer) -> None:
    for _ in range(3):
        requests.post(onnx_server.url + "/score", json={"data": X.tolist()})
    requests.post(onnx_server.url + "/score", json={"data": [[1.0]]})
    r = requests.get(onnx_server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    m = re.search(r'edgepack_requests_total\{route="/score",method="POST",status="200"\} (\d+)', text)
    assert m and int(m.group(1)) >= 3
    assert re.search(r'edgepack_requests_total\{route="/score",method="POST",status="400"\} \d+', text)
    assert re.search(r'edgepack_request_duration_seconds_bucket\{route="/score",le="\+Inf"\} \d+', text)
    assert re.search(r'edgepack_request_duration_seconds_count\{route="/score"\} \d+', text)
    assert "# TYPE edgepack_request_duration_seconds histogram" in text
    assert re.search(r"^edgepack_requests_in_flight 1$", text, re.M)  # the /metrics request itself
    assert re.search(r'^edgepack_model_load_seconds\{worker="0"\} [0-9.e-]+$', text, re.M)
    assert re.search(r'^edgepack_ready\{worker="0"\} 1$', text, re.M)
    # cumulative buckets never decrease
    counts = [
        int(v) for v in re.findall(r'edgepack_request_duration_seconds_bucket\{route="/score",le="[^"]+"\} (\d+)', text)
    ]
    assert counts == sorted(counts)


def test_cors() -> None:
    with serving(FunctionApp(lambda req: {"ok": 1}), cors_origins=("https://app.example.com",)) as srv:
        r = requests.options(
            srv.url + "/score",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "POST" in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-allow-headers"] == "authorization, content-type"
        r = requests.post(srv.url + "/score", json={}, headers={"Origin": "https://app.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert r.headers["vary"] == "Origin"
        r = requests.post(srv.url + "/score", json={}, headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in r.headers
    with serving(FunctionApp(lambda req: {"ok": 1})) as srv:  # CORS off by default
        r = requests.post(srv.url + "/score", json={}, headers={"Origin": "https://app.example.com"})
        assert "access-control-allow-origin" not in r.headers


def test_several_scoring_threads_run_calls_concurrently() -> None:
    together = threading.Barrier(3, timeout=10)  # passes only when three run() calls are inside at once

    def run(req: Request) -> Response:
        together.wait()  # an I/O-bound run(); BrokenBarrierError (a 500) if the calls were serialised
        return Response(b"{}")

    statuses: list[int] = []
    with serving(FunctionApp(run), scoring_threads=3) as srv:
        threads = [
            threading.Thread(target=lambda: statuses.append(requests.post(srv.url + "/score", data=b"x").status_code))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert statuses == [200, 200, 200]


# -- response headers from scorers ----------------------------------------------------------------------
SPLITTING = {
    "crlf-in-value": ({"X-Evil": "a\r\nSet-Cookie: pwned=1"}, "text/plain", "X-Evil"),
    "lf-in-value": ({"X-Evil": "a\nSet-Cookie: pwned=1"}, "text/plain", "X-Evil"),
    "nul-in-value": ({"X-Evil": "a\0b"}, "text/plain", "X-Evil"),
    "crlf-in-name": ({"X-Evil\r\nSet-Cookie": "pwned=1"}, "text/plain", "Set-Cookie"),
    "space-in-name": ({"X Evil": "v"}, "text/plain", "X Evil"),
    "colon-in-name": ({"Set-Cookie: pwned=1\r\nX": "v"}, "text/plain", "pwned"),
    "crlf-in-content-type": ({}, "text/plain\r\nSet-Cookie: pwned=1", "Content-Type"),
}


@pytest.mark.parametrize("case", sorted(SPLITTING))
def test_response_splitting_by_a_scorer_is_refused(case: str) -> None:
    """A scorer's header that would inject headers (CR/LF/NUL, a name that is not a token) is a 500 naming it."""
    headers, content_type, named = SPLITTING[case]
    app = FunctionApp(lambda req: Response(b"ok", 200, content_type, headers))
    with serving(app) as srv:
        raw = raw_http(srv.server.port, b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", False)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 500 "), raw
        assert b"pwned" not in head and b"x-evil" not in head.lower()
        assert named in json.loads(body)["message"]
        assert requests.post(srv.url + "/score").status_code == 500  # and the server goes on


def test_response_splitting_by_a_rawhttp_entry_script_is_refused(tmp_path: Path) -> None:
    from edge_module.scoring import build_app

    script = tmp_path / "score.py"
    script.write_text(
        "from azureml.contrib.services.aml_request import rawhttp\n"
        "from azureml.contrib.services.aml_response import AMLResponse\n\n"
        "def init():\n    pass\n\n"
        "@rawhttp\n"
        "def run(request):\n"
        "    return AMLResponse('hi', 200, {'X-Next': request.args.get('next', '')})\n"
    )
    with serving(build_app(str(script), str(tmp_path))) as srv:
        assert requests.get(srv.url + "/score?next=ok").headers["x-next"] == "ok"
        r = requests.get(srv.url + "/score?next=a%0d%0aSet-Cookie:%20pwned=1")
        assert r.status_code == 500 and "X-Next" in r.json()["message"]
        assert "set-cookie" not in r.headers


# -- large requests off the event loop --------------------------------------------------------------------
class HeldOnnxRuntime(OnnxScoringRuntime):
    """The no-code ONNX runtime, recording which thread runs each batch; a run of more than ``hold_rows``
    rows waits for ``release`` (after setting ``entered``), standing in for a long decode and run."""

    def __init__(self, path: Path, hold_rows: int = 10**9):
        super().__init__(path, "mlp", "1", intra_op_threads=1)
        self.hold_rows = hold_rows
        self.threads: list[tuple[int, str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def run(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        rows = len(next(iter(feeds.values())))
        self.threads.append((rows, threading.current_thread().name))
        if rows > self.hold_rows:
            self.entered.set()
            self.release.wait(60)  # longer than any timeout below: only a release ends it
        return super().run(feeds)


def test_large_requests_are_decoded_and_scored_off_the_event_loop(mlp_path: Path) -> None:
    """Small requests stay inline (the hot path); bodies over inline_max_body go to a scoring thread."""
    runtime = HeldOnnxRuntime(mlp_path)
    app = OnnxScoringApp(runtimes=[runtime])
    with serving(app) as srv:  # inline_max_body: 64 KiB by default
        small, big = np.zeros((1, 64), np.float32), np.zeros((500, 64), np.float32)
        assert len(json.dumps(big.tolist())) > 64 * 1024 > len(json.dumps(small.tolist())) * 2
        for x in (small, big):
            assert requests.post(srv.url + "/score", json={"data": x.tolist()}).status_code == 200
            doc = {
                "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
            }
            assert requests.post(srv.url + "/v2/models/mlp/infer", json=doc).status_code == 200
        loop_thread = srv._thread.name  # type: ignore[union-attr]
        assert [name == loop_thread for _, name in runtime.threads] == [True, True, False, False]


def test_a_large_request_in_flight_leaves_the_probes_answering(mlp_path: Path) -> None:
    """While a big /score request is being scored, GET / and the V2 probes answer (deterministic: the run
    is held until they have)."""
    runtime = HeldOnnxRuntime(mlp_path, hold_rows=100)
    with serving(OnnxScoringApp(runtimes=[runtime])) as srv:
        big = {"data": np.zeros((2000, 64), np.float32).tolist()}  # ~ 0.5 MB of JSON
        answers: list[requests.Response] = []
        sender = threading.Thread(
            target=lambda: answers.append(requests.post(srv.url + "/score", json=big, timeout=30))
        )
        sender.start()
        try:
            assert runtime.entered.wait(10)
            assert requests.get(srv.url + "/", timeout=5).status_code == 200  # (a timeout: the loop is blocked)
            assert requests.get(srv.url + "/v2/health/ready", timeout=5).status_code == 200
        finally:
            runtime.release.set()
            sender.join(30)
        assert answers and answers[0].status_code == 200
