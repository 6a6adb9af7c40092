"""The router as a process in front of real scoring servers: the split, the pin header, readiness,
routes changes under load, removing a version with requests in flight, keys, graceful stop."""

from __future__ import annotations

import collections
import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from edge_module.server.lifecycle import BackgroundServer
from tests.support.net import read_response, read_to_close, request_head, send_until_refused
from tests.support.router import RouterProc, backend, write_routes
from tests.support.scorers import Gate

KEY = "router-test-key"


@pytest.fixture(scope="module")
def blue() -> Iterator[BackgroundServer]:
    srv = backend("blue")
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def green() -> Iterator[BackgroundServer]:
    srv = backend("green")
    srv.wait_ready()
    yield srv
    srv.stop()


def score(session: requests.Session, url: str, n: int, **headers: str) -> requests.Response:
    r = session.post(url + "/score", json={"n": n}, headers=headers, timeout=30)
    return r


def served_by(r: requests.Response, n: int) -> str:
    """The version that answered: the router's header and the backend's own word must agree."""
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["echo"] == {"n": n}
    assert r.headers["azureml-model-deployment"] == body["version"]
    return body["version"]


def test_split_80_20_is_exact_and_pin_header_wins(tmp_path: Path, blue: BackgroundServer, green: BackgroundServer):
    routes = tmp_path / "routes.json"
    write_routes(routes, "ep", 1, [("blue", blue.url, 80, True), ("green", green.url, 20, False)])
    router = RouterProc(routes)
    try:
        state = router.wait_ready({"blue", "green"})
        assert state["endpoint"] == "ep" and state["versions"]["blue"]["share"] == 80
        counts: collections.Counter[str] = collections.Counter()
        with requests.Session() as s:
            for i in range(3000):
                counts[served_by(score(s, router.url, i), i)] += 1
            assert counts == {"blue": 2400, "green": 600}  # smooth weighted round robin: exact
            pinned = collections.Counter(
                served_by(score(s, router.url, i, **{"azureml-model-deployment": "green"}), i) for i in range(50)
            )
            assert pinned == {"green": 50}
            r = score(s, router.url, 0, **{"azureml-model-deployment": "red"})
            assert r.status_code == 404 and "blue, green" in r.json()["message"]
        state = router.state()
        assert state["versions"]["blue"]["requests"] == 2400
        assert state["versions"]["green"]["requests"] == 650
        assert state["versions"]["green"]["latency_ms"]["p99"] is not None
        metrics = requests.get(router.url + "/-/router/metrics", timeout=10).text
        assert 'edgepack_router_requests_total{version="blue"} 2400' in metrics
    finally:
        assert router.stop() == 0


def test_a_version_that_is_not_ready_gets_nothing_and_its_share_goes_to_the_default(
    tmp_path: Path, blue: BackgroundServer, green: BackgroundServer
):
    loaded = threading.Event()
    red = backend("red", load=lambda: loaded.wait(60))
    routes = tmp_path / "routes.json"
    write_routes(
        routes, "ep", 1, [("blue", blue.url, 50, True), ("green", green.url, 30, False), ("red", red.url, 20, False)]
    )
    router = RouterProc(routes)
    try:
        router.wait_ready({"blue", "green"})
        state = router.wait_state(lambda s: s["versions"]["red"]["reason"] != "not polled yet")  # red polled once
        assert not state["versions"]["red"]["ready"]
        assert "not ready" in state["versions"]["red"]["reason"] or "503" in state["versions"]["red"]["reason"]
        assert state["versions"]["blue"]["share"] == 70 and state["versions"]["red"]["share"] == 0
        with requests.Session() as s:
            counts = collections.Counter(served_by(score(s, router.url, i), i) for i in range(1000))
            assert counts == {"blue": 700, "green": 300}
            r = score(s, router.url, 0, **{"azureml-model-deployment": "red"})
            assert r.status_code == 503 and "red" in r.json()["message"]
            loaded.set()
            router.wait_ready({"blue", "green", "red"})
            counts = collections.Counter(served_by(score(s, router.url, i), i) for i in range(1000))
            assert counts == {"blue": 500, "green": 300, "red": 200}
        assert requests.get(router.url + "/-/ready", timeout=10).status_code == 200
    finally:
        router.stop()
        red.stop()


def test_routes_change_under_load_drops_no_request(tmp_path: Path, blue: BackgroundServer, green: BackgroundServer):
    cyan = backend("cyan")
    routes = tmp_path / "routes.json"
    write_routes(routes, "ep", 1, [("blue", blue.url, 100, True)])
    router = RouterProc(routes)
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with requests.Session() as s:
            i = 0
            while not stop.is_set():
                n = k * 1_000_000 + i
                try:
                    who = served_by(score(s, router.url, n), n)
                except Exception as exc:  # counted: the test fails on any
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    results.append((n, who))
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    try:
        router.wait_ready({"blue"})
        for t in threads:
            t.start()
        steps = [
            [("blue", blue.url, 50, True), ("green", green.url, 50, False)],  # add a version
            [("blue", blue.url, 20, True), ("green", green.url, 40, False), ("cyan", cyan.url, 40, False)],
            [("green", green.url, 100, True), ("cyan", cyan.url, 0, False)],  # remove blue, move the default
            [("cyan", cyan.url, 70, True), ("green", green.url, 30, False)],
        ]
        for revision, versions in enumerate(steps, start=2):
            seen = len(results)
            write_routes(routes, "ep", revision, versions)
            names = {n for n, _, _, _ in versions}
            router.wait_ready(names, revision=revision)
            while len(results) < seen + 200:  # traffic flows under each revision
                threading.Event().wait(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    try:
        assert errors == []
        assert len(results) > 800
        assert {who for _, who in results} == {"blue", "green", "cyan"}
        state = router.state()
        assert state["revision"] == 5 and set(state["versions"]) == {"cyan", "green"}
        assert sum(v["errors"] for v in state["versions"].values()) == 0
    finally:
        router.stop()
        cyan.stop()


def test_removing_a_version_lets_its_requests_in_flight_finish(tmp_path: Path, blue: BackgroundServer):
    gate = Gate()
    slow = backend("slow", score=gate)
    routes = tmp_path / "routes.json"
    write_routes(routes, "ep", 1, [("blue", blue.url, 50, True), ("slow", slow.url, 50, False)])
    router = RouterProc(routes)
    answers: list[requests.Response] = []

    def pinned(i: int) -> None:
        answers.append(score(requests.Session(), router.url, i, **{"azureml-model-deployment": "slow"}))

    try:
        router.wait_ready({"blue", "slow"})
        threads = [threading.Thread(target=pinned, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        gate.wait_entered(3)
        write_routes(routes, "ep", 2, [("blue", blue.url, 100, True)])
        state = router.wait_state(lambda s: s["revision"] == 2)
        assert set(state["versions"]) == {"blue"}
        assert state["draining"] == {"slow": {"url": slow.url, "in_flight": 3}}
        with requests.Session() as s:
            assert {served_by(score(s, router.url, i), i) for i in range(20)} == {"blue"}
            r = score(s, router.url, 0, **{"azureml-model-deployment": "slow"})
            assert r.status_code == 404
        gate.let_through(3)
        for t in threads:
            t.join(30)
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert {r.headers["azureml-model-deployment"] for r in answers} == {"slow"}
        router.wait_state(lambda s: s["draining"] == {})
    finally:
        router.stop()
        slow.stop()


def test_a_bad_routes_file_is_refused_and_the_table_in_force_stays(tmp_path: Path, blue: BackgroundServer):
    routes = tmp_path / "routes.json"
    write_routes(routes, "ep", 1, [("blue", blue.url, 100, True)])
    router = RouterProc(routes)
    try:
        router.wait_ready({"blue"})
        tmp = tmp_path / "bad.json"
        bad = {
            "format": 1,
            "endpoint": "ep",
            "revision": 2,
            "versions": [{"name": "x", "url": blue.url, "traffic": 140}],
        }
        tmp.write_text(json.dumps(bad))
        tmp.replace(routes)
        router.wait_for(r"refused: .*traffic.*keeping revision 1")
        with requests.Session() as s:
            assert served_by(score(s, router.url, 1), 1) == "blue"
        assert router.state()["revision"] == 1
    finally:
        router.stop()


def test_a_version_that_goes_away_is_skipped_without_failing_requests(tmp_path: Path, blue: BackgroundServer):
    doomed = backend("doomed")
    routes = tmp_path / "routes.json"
    write_routes(routes, "ep", 1, [("blue", blue.url, 50, True), ("doomed", doomed.url, 50, False)])
    router = RouterProc(routes, args=("--health-interval", "30"))  # no poll in between: the proxy must notice
    try:
        router.wait_ready({"blue", "doomed"})
        with requests.Session() as s:
            assert collections.Counter(served_by(score(s, router.url, i), i) for i in range(10)) == {
                "blue": 5,
                "doomed": 5,
            }
            doomed.stop()
            assert {served_by(score(s, router.url, i), i) for i in range(20)} == {"blue"}
        state = router.state()
        assert not state["versions"]["doomed"]["ready"] and "connect" in state["versions"]["doomed"]["reason"]
    finally:
        router.stop()


def test_keys_401_before_the_body_and_the_open_probes(tmp_path: Path, blue: BackgroundServer):
    routes = tmp_path / "routes.json"
    write_routes(routes, "ep", 1, [("blue", blue.url, 100, True)])
    router = RouterProc(routes, env={"EDGEPACK_PRIMARY_KEY": KEY, "EDGEPACK_SECONDARY_KEY": KEY + "-2"})
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        router.wait_ready({"blue"}, headers=auth)
        assert KEY not in "".join(router.lines)
        with requests.Session() as s:
            r = score(s, router.url, 1)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert score(s, router.url, 1, Authorization="Bearer nope").status_code == 401
            assert served_by(score(s, router.url, 1, **auth), 1) == "blue"
            assert served_by(score(s, router.url, 2, Authorization=f"Bearer {KEY}-2"), 2) == "blue"
            assert s.get(router.url + "/-/router", timeout=10).status_code == 401
            assert s.get(router.url + "/-/healthy", timeout=10).status_code == 200
            assert s.get(router.url + "/-/ready", timeout=10).status_code == 200
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
            sock.sendall(request_head("POST", "/score", [("Content-Length", "50000000")]))
            sent = send_until_refused(sock, 50_000_000, b"x" * 65536)
            assert sent < 50_000_000  # closed on us: the body was never read
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
            sock.sendall(request_head("POST", "/score", [("Content-Length", "10")]))
            status, headers, _ = read_response(sock)
            assert status == 401 and headers["connection"] == "close"
    finally:
        router.stop()


def test_sigterm_finishes_the_requests_in_flight(tmp_path: Path):
    gate = Gate()
    slow = backend("slow", score=gate)
    routes = tmp_path / "routes.json"
    write_routes(routes, "ep", 1, [("slow", slow.url, 100, True)])
    router = RouterProc(routes)
    answers: list[requests.Response] = []
    try:
        router.wait_ready({"slow"})
        t = threading.Thread(target=lambda: answers.append(score(requests.Session(), router.url, 7)))
        t.start()
        gate.wait_entered(1)
        router.p.send_signal(signal.SIGTERM)
        with pytest.raises(requests.ConnectionError):  # no longer accepting
            for _ in range(200):
                requests.get(router.url + "/-/healthy", timeout=5)
                threading.Event().wait(0.02)
        gate.let_through(1)
        t.join(30)
        assert served_by(answers[0], 7) == "slow"
        assert router.p.wait(30) == 0
    finally:
        router.stop()
        slow.stop()


def test_unknown_pin_and_no_versions(tmp_path: Path):
    routes = tmp_path / "routes.json"
    write_routes(routes, "empty", 1, [])
    router = RouterProc(routes)
    try:
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
            sock.sendall(request_head("GET", "/score"))
            status, _, body = read_response(sock)
            assert status == 503 and b"no versions" in body
        assert requests.get(router.url + "/-/ready", timeout=10).status_code == 503
        data, closed = b"", False
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
            sock.sendall(request_head("GET", "/score", [("azureml-model-deployment", "x")]))
            data, closed = read_to_close(sock)
        assert data.startswith(b"HTTP/1.1 404") and closed
    finally:
        router.stop()


def test_a_missing_routes_file_stops_the_router_with_a_clear_error(tmp_path: Path):
    with pytest.raises(AssertionError, match="cannot read the routes file"):
        RouterProc(tmp_path / "nope.json")
