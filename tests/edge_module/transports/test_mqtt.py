"""The MQTT transport: spool and settings (fast), then against real Mosquitto brokers (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from edge_module.runtime import ScoringError
from edge_module.settings import SettingsError
from edge_module.transports.mqtt import MqttSettings, MqttTransport, _fill, _with_id, mqtt_request
from edge_module.transports.spool import Record, Spool, SpoolFull
from tests.support.mqtt import Mosquitto, Requester, expected_outputs, onnx_app, paho2_python, v1_segment

SUPPORT = Path(__file__).resolve().parents[2] / "support" / "mqtt.py"
REPO = Path(__file__).resolve().parents[3]


# spool ------------------------------------------------------------------------------------------
def test_spool_keeps_order_and_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000)
    records = [Record(f"t/{i}", b"x" * 50, f"c{i}".encode(), "application/json", (("k", str(i)),)) for i in range(30)]
    for chunk in (records[:10], records[10:20], records[20:]):  # three appends: several segments
        spool.append(chunk)
    taken = spool.take(12)
    assert [r.topic for r in taken] == [f"t/{i}" for i in range(12)]
    assert taken[3].correlation_data == b"c3" and taken[3].user_properties == (("k", "3"),)
    spool.ack([r.seq for r in reversed(taken[:10])])  # out of order is fine
    assert len(spool) == 20 and spool.pending == 18
    spool.close()

    reopened = Spool(tmp_path, segment_bytes=1000)  # acknowledged ones stay gone; the rest is handed out again
    assert len(reopened) == 20
    assert [r.topic for r in reopened.take(100)] == [f"t/{i}" for i in range(10, 30)]
    reopened.ack(list(range(10, 30)))
    assert len(reopened) == 0 and len(list(tmp_path.glob("*.seg2"))) == 1
    reopened.close()


def test_spool_cuts_a_torn_tail_and_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "a")
    spool.append([Record("a", b"1"), Record("b", b"2" * 300_000)])  # a record larger than a read chunk
    spool.close()
    seg = next((tmp_path / "a").glob("*.seg2"))
    with open(seg, "ab") as f:
        f.write(b"\x07\x00\x00")  # the process died mid-write
    spool = Spool(tmp_path / "a")
    assert [(r.topic, len(r.payload)) for r in spool.take(10)] == [("a", 1), ("b", 300_000)]
    spool.append([Record("c", b"3")])
    assert [r.topic for r in spool.take(10)] == ["c"]
    spool.close()

    small = Spool(tmp_path / "b", max_entries=3)
    small.append([Record("x", b"")] * 2)
    with pytest.raises(SpoolFull):
        small.append([Record("y", b"")] * 2)
    assert small.room() == 1
    small.close()


# settings and reply shapes ------------------------------------------------------------------------
def test_settings_from_env_and_validation() -> None:
    s = MqttSettings.from_env(
        {
            "EDGEPACK_MQTT_URL": "mqtts://broker.local:8884",
            "SERVICE_NAME": "digits",
            "EDGEPACK_MQTT_PROTOCOL": "3.1.1",
            "EDGEPACK_MQTT_MAX_BATCH": "64",
            "EDGEPACK_MQTT_MAX_PAYLOAD": "64KiB",
            "EDGEPACK_MQTT_MAX_WAIT_MS": "1.5",
            "EDGEPACK_MQTT_SPOOL_FSYNC": "true",
        },
        max_inflight=50,
    )
    assert s.address == ("broker.local", 8884, True)
    assert (s.protocol, s.max_batch, s.max_payload, s.max_wait_ms, s.max_inflight) == (311, 64, 65536, 1.5, 50)
    assert s.topic(s.request_topic) == "edgepack/digits/score/request/#" and s.spool_fsync
    assert s.effective_client_id.startswith("edgepack-digits-")
    with pytest.raises(SettingsError, match="EDGEPACK_MQTT_MAX_BATCH"):
        MqttSettings.from_env({"EDGEPACK_MQTT_MAX_BATCH": "many"})
    with pytest.raises(SettingsError, match="url"):
        MqttSettings(url="http://x:1")
    with pytest.raises(SettingsError, match="wildcards"):
        MqttSettings(response_topic="a/+/b")
    with pytest.raises(SettingsError, match="certificate"):
        MqttSettings(cert_file="c.pem")


@pytest.mark.parametrize(
    "corr,ctype,users",
    [(b"abc", "application/json", [("status", "400"), ("k", "v")]), (b"x" * 300, None, []), (None, "text/plain", [])],
)
def test_packed_properties_match_paho(corr: bytes | None, ctype: str | None, users: list[tuple[str, str]]) -> None:
    from edge_module.transports import paho_compat as pc

    packed = pc.packed_publish_properties(corr, ctype, users)
    assert packed is not None and packed.pack() == pc.publish_properties(corr, None, ctype, users).pack()
    assert pc.packed_publish_properties() is None


def test_spool_serves_fresh_records_from_memory_and_falls_back_to_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.recent_max = 5
    spool.append([Record(f"a{i}", b"") for i in range(3)])
    assert [r.seq for r in spool.take(2)] == [0, 1]
    spool.append([Record(f"b{i}", b"") for i in range(4)])  # over recent_max: read back from disk
    assert [r.topic for r in spool.take(10)] == ["a2", "b0", "b1", "b2", "b3"]
    spool.append([Record("c", b"")])  # caught up: memory again
    assert [(r.topic, r.seq) for r in spool.take(10)] == [("c", 7)]
    spool.rewind()
    assert [r.seq for r in spool.take(100)] == list(range(8))
    spool.close()


def test_reply_helpers() -> None:
    assert _with_id("7", b'{"output":[[1]]}', "application/json") == b'{"id":"7","output":[[1]]}'
    assert _with_id("7", b"{}", "application/json") == b'{"id":"7"}'
    assert orjson.loads(_with_id("7", b"[1,2]", "application/json")) == {"id": "7", "result": [1, 2]}
    assert orjson.loads(_with_id(None, b"plain", "text/plain")) == {"id": None, "result": "plain"}
    assert _fill("e/svc/score/error/{id}", "a+b#") == "e/svc/score/error/a_b_"
    assert _fill("e/svc/score/error/{id}", None) == "e/svc/score/error"


# against a broker of our own ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as b:
        yield b


@pytest.fixture
def serve(broker: Mosquitto, mlp_path: Path, tmp_path: Path) -> Any:
    """``serve(protocol=5, **settings)`` -> a started transport on the module's broker (stopped after)."""
    started: list[MqttTransport] = []

    def start(protocol: int = 5, app: Any = None, **overrides: Any) -> MqttTransport:
        service = f"t{uuid.uuid4().hex[:8]}"
        values: dict[str, Any] = {
            "url": broker.url,
            "service": service,
            "client_id": f"scorer-{service}",
            "protocol": protocol,
            "spool_dir": str(tmp_path / f"spool-{service}"),
            "reconnect_min": 0.2,
            "reconnect_max": 1.0,
            **overrides,
        }
        transport = MqttTransport(app or onnx_app(mlp_path.parent), MqttSettings(**values)).start()
        started.append(transport)
        transport.wait_connected(15)
        return transport

    yield start
    for t in started:
        t.stop(5)


def _row(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 64)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [5, 311])
def test_scores_and_answers_errors_without_stopping(
    serve: Any, broker: Mosquitto, mlp_path: Path, protocol: int
) -> None:
    transport = serve(protocol, max_payload=4096)
    req = Requester(broker.url, transport.settings.service, protocol)
    try:
        req.wait_subscribed()
        rows = np.concatenate([_row(i) for i in range(20)])
        for i in range(20):
            req.send(f"ok{i}", orjson.dumps({"data": rows[i : i + 1].tolist()}))
        bad = {
            "json": b'{"data": [[1, 2',
            "shape": orjson.dumps({"data": [[1.0, 2.0, 3.0]]}),
            "notobject": b"[1, 2, 3]",
            "key": orjson.dumps({"date": [[0.0] * 64]}),
            "big": orjson.dumps({"data": [[0.5] * 64] * 40}),  # over max_payload (4 KiB)
            "dtype": orjson.dumps({"data": [["a"] * 64]}),
        }
        for rid, body in bad.items():
            req.send(rid, body)
        req.send("after", orjson.dumps({"data": rows[:1].tolist()}))  # the loop goes on
        ids = [f"ok{i}" for i in range(20)] + [*bad, "after"]
        assert req.wait_for(ids, 20) == set()
        expected = expected_outputs(mlp_path, rows)
        for i in range(20):
            ((topic, payload, _),) = req.replies[f"ok{i}"]
            doc = orjson.loads(payload)
            assert np.allclose(doc["output"], expected[i : i + 1], atol=1e-5)
            if protocol == 311:
                assert topic == f"edgepack/{transport.settings.service}/score/response/ok{i}" and doc["id"] == f"ok{i}"
            else:
                assert topic == req.reply_topic and "id" not in doc  # body exactly as HTTP /score
        statuses = {}
        for rid in bad:
            replies = req.replies[rid]
            doc = orjson.loads(replies[0][1])
            assert doc["id"] == rid and doc["error"], doc
            statuses[rid] = doc["status"]
            if protocol == 5:  # the requester's response topic gets the error (and so does the error topic)
                assert replies[0][0] == req.reply_topic and replies[0][2]["status"] == str(doc["status"])
            else:
                assert replies[0][0].endswith(f"/score/error/{rid}")
        assert statuses == {"json": 400, "shape": 400, "notobject": 400, "key": 400, "big": 413, "dtype": 400}
        assert "64" in orjson.loads(req.replies["shape"][0][1])["error"]  # names the expected shape
        stats = transport.stats()
        assert stats["scored"] == 21 and stats["errors"] == len(bad)
    finally:
        req.close()


@pytest.mark.slow
def test_v2_tensors_json_ids_and_redelivered_duplicates(serve: Any, broker: Mosquitto, mlp_path: Path) -> None:
    transport = serve(311)
    req = Requester(broker.url, transport.settings.service, 311)
    try:
        req.wait_subscribed()
        row = _row(5)
        v2 = {
            "id": "v2-1",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row.ravel().tolist()}],
        }
        req.send("v2", orjson.dumps(v2))
        for _ in range(3):  # the same request id three times: scored once
            req.send("dup", orjson.dumps({"data": row.tolist()}))
        assert req.wait_for(["v2", "dup"], 15) == set()
        time.sleep(0.5)
        doc = orjson.loads(req.replies["v2"][0][1])
        assert doc["model_name"] == "mlp" and doc["outputs"][0]["shape"] == [1, 10]
        assert np.allclose(doc["outputs"][0]["data"], expected_outputs(mlp_path, row).ravel(), atol=1e-5)
        assert len(req.replies["dup"]) == 1 and transport.stats()["duplicates"] == 2

        # No id in the topic: the JSON "id" is the request id (and is not passed to the model).
        req.client.publish(
            f"edgepack/{transport.settings.service}/score/request", orjson.dumps({"id": "j1", "data": row.tolist()}), 1
        )
        assert req.wait_for(["j1"], 10) == set()
        assert "output" in orjson.loads(req.replies["j1"][0][1])
    finally:
        req.close()


@pytest.mark.slow
def test_mqtt_request_client(serve: Any, broker: Mosquitto) -> None:
    transport = serve(5)
    topic = f"edgepack/{transport.settings.service}/score/request"
    doc = mqtt_request(broker.url, topic, {"data": _row(1).tolist()}, timeout=10)
    assert len(doc["output"][0]) == 10
    doc311 = mqtt_request(broker.url, topic, {"data": _row(1).tolist()}, timeout=10, protocol=311)
    assert doc311["output"] == doc["output"] and doc311["id"]
    with pytest.raises(ScoringError, match="shape") as info:
        mqtt_request(broker.url, topic, {"data": [[1.0]]}, timeout=10)
    assert info.value.status == 400


@pytest.mark.slow
def test_replies_left_in_the_spool_go_out_at_the_next_start(broker: Mosquitto, serve: Any, tmp_path: Path) -> None:
    service = f"t{uuid.uuid4().hex[:8]}"
    req = Requester(broker.url, service, 311)
    try:
        req.wait_subscribed()
        spool = Spool(tmp_path / "left")
        spool.append([Record(f"edgepack/{service}/score/response/old{i}", b'{"id":"old%d"}' % i) for i in range(3)])
        spool.close()
        serve(311, service=service, spool_dir=str(tmp_path / "left"))
        assert req.wait_for(["old0", "old1", "old2"], 10) == set()
    finally:
        req.close()


@pytest.mark.slow
def test_a_spooled_reply_that_does_not_decode_is_skipped_and_the_transport_serves_on(
    broker: Mosquitto, serve: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record with a valid CRC and a topic that is not UTF-8 (before: it killed the MQTT thread for good)."""
    service = f"t{uuid.uuid4().hex[:8]}"
    req = Requester(broker.url, service, 311)
    try:
        req.wait_subscribed()
        folder = tmp_path / "left"
        folder.mkdir(mode=0o700)
        topic = f"edgepack/{service}/score/response/".encode()
        v1_segment(
            folder, [(topic + b"old0", b'{"id":"old0"}'), (b"\xff\xfe", b"{}"), (topic + b"old2", b'{"id":"old2"}')]
        )
        with caplog.at_level("WARNING", "edgepack.mqtt"):
            transport = serve(311, service=service, spool_dir=str(folder))
            assert req.wait_for(["old0", "old2"], 10) == set()
        assert "does not decode" in caplog.text
        req.send("new", orjson.dumps({"data": _row(4).tolist()}))  # and it goes on serving
        assert req.wait_for(["new"], 10) == set()
        assert transport.error is None and transport.stats()["spool_lost"] == 1
        _until(lambda: transport.stats()["spooled"] == 0)
        assert transport.stats()["spooled"] == 0  # the skipped one does not wait for an acknowledgement
    finally:
        req.close()


def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.slow
def test_username_and_password(tmp_path: Path, mlp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "edge", "s3cret"], check=True, capture_output=True)
    with Mosquitto(tmp_path / "b", extra=[f"password_file {passwords}"], anonymous=False) as b:
        common = {"url": b.url, "service": "auth", "spool_dir": str(tmp_path / "s1"), "reconnect_min": 0.2}
        wrong = MqttTransport(onnx_app(mlp_path.parent), MqttSettings(**common, username="edge", password="nope"))
        wrong.start()
        try:
            with pytest.raises(TimeoutError):
                wrong.wait_connected(2)
        finally:
            wrong.stop(2)
        right = MqttSettings(**{**common, "spool_dir": str(tmp_path / "s2")}, username="edge", password="s3cret")
        with MqttTransport(onnx_app(mlp_path.parent), right) as transport:
            transport.wait_connected(10)
            doc = mqtt_request(
                b.url, "edgepack/auth/score/request", {"data": _row(2).tolist()}, username="edge", password="s3cret"
            )
            assert len(doc["output"][0]) == 10


@pytest.mark.slow
def test_tls_with_client_certificate(dev_services: dict[str, str], mlp_path: Path, tmp_path: Path) -> None:
    """The dev broker's TLS listener, with its CA and a client certificate."""
    tls = {
        "ca_file": dev_services["EDGEPACK_TEST_MQTT_CA"],
        "cert_file": dev_services["EDGEPACK_TEST_MQTT_CLIENT_CERT"],
        "key_file": dev_services["EDGEPACK_TEST_MQTT_CLIENT_KEY"],
    }
    url = f"mqtts://{dev_services['EDGEPACK_TEST_MQTT_HOST']}:{dev_services['EDGEPACK_TEST_MQTT_TLS_PORT']}"
    service = f"tls{uuid.uuid4().hex[:8]}"
    settings = MqttSettings(url=url, service=service, spool_dir=str(tmp_path / "spool"), session_expiry=60, **tls)
    with MqttTransport(onnx_app(mlp_path.parent), settings) as transport:
        transport.wait_connected(15)
        doc = mqtt_request(url, f"edgepack/{service}/score/request", {"data": _row(3).tolist()}, **tls)
        assert len(doc["output"][0]) == 10


# the outage run: stop Mosquitto mid-run, start it again; on paho 1.6 and 2.x ---------------------
@pytest.mark.slow
@pytest.mark.parametrize("paho,protocol", [("1.6", 5), ("1.6", 311), ("2.x", 5), ("2.x", 311)])
def test_broker_outage_loses_nothing(paho: str, protocol: int, mlp_path: Path, tmp_path: Path) -> None:
    python = sys.executable if paho == "1.6" else str(paho2_python())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            python,
            str(SUPPORT),
            "outage",
            "--model",
            str(mlp_path),
            "--workdir",
            str(tmp_path),
            "--n",
            "5000",
            "--protocol",
            str(protocol),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["paho"][0] == (1 if paho == "1.6" else 2)
    assert result["missing_count"] == 0, result
    assert not result["wrong"] and not result["errors"] and not result["unknown_ids"], result
    stats = result["stats"]
    assert stats["scored"] == 5000 and stats["disconnects"] >= 1 and stats["connects"] >= 2, stats
    assert stats["spooled"] == 0 and stats["received"] == stats["scored"] + stats["duplicates"], stats
    # Duplicates only where QoS 1 allows them, told apart by id: a reply whose PUBACK the outage swallowed
    # is sent again (scorer -> broker), and the broker sends again what the requester had not acknowledged
    # (broker -> requester): one outage, two hops, at most 2 x 2 copies; only around the outage.
    assert all(n <= 4 for n in result["duplicates"].values()), result["duplicates"]
    assert len(result["duplicates"]) <= 2 * 200 + 1000
    assert result["stopped_at"]["replies"] < 5000  # the broker really stopped mid-run


@pytest.mark.slow
def test_apps_without_parse_score_per_message_and_failures_are_answered(serve: Any, broker: Mosquitto) -> None:
    from edge_module.runtime import Response
    from tests.support.scorers import FunctionApp

    def fn(request: Any) -> Response:
        doc = orjson.loads(request.body)
        if doc.get("boom"):
            raise RuntimeError("the entry script failed")
        return Response(orjson.dumps([doc["x"] * 2]))

    failing = FunctionApp(fn, load_fn=lambda: None)
    transport = serve(311, app=failing)
    req = Requester(broker.url, transport.settings.service, 311)
    try:
        req.wait_subscribed()
        req.send("a", b'{"x": 21}')
        req.send("b", b'{"boom": true}')
        req.send("c", b'{"x": 1}')
        assert req.wait_for(["a", "b", "c"], 10) == set()
        assert orjson.loads(req.replies["a"][0][1]) == {"id": "a", "result": [42]}
        err = orjson.loads(req.replies["b"][0][1])
        assert err["status"] == 500 and "the entry script failed" in err["error"]
        assert orjson.loads(req.replies["c"][0][1]) == {"id": "c", "result": [2]}
    finally:
        req.close()


@pytest.mark.slow
def test_a_second_runtime_is_scored_in_micro_batches(serve: Any, broker: Mosquitto, tmp_path: Path) -> None:
    """Nothing ONNX-specific in the MQTT path: a numpy ModelRuntime behind the no-code app, its requests
    merged into one predict (the first call is held until the broker has every message and a moment
    more, so the rest wait for the model together)."""
    from edge_module.scoring import ModelScoringApp
    from tests.support.scorers import LinearRuntime

    w, b = LinearRuntime.save(tmp_path / "lin.npz")
    runtime = LinearRuntime(tmp_path / "lin.npz", "lin", "1")
    transport = serve(311, app=ModelScoringApp(runtimes=[runtime]), max_batch=32)
    n = 12
    predict = runtime.predict

    req = Requester(broker.url, transport.settings.service, 311)

    def held(inputs: Any) -> Any:
        if not runtime.calls:
            deadline = time.monotonic() + 20
            while req.acked < n and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)
        return predict(inputs)

    runtime.predict = held  # type: ignore[method-assign]
    try:
        req.wait_subscribed()
        rows = np.random.default_rng(9).standard_normal((n, 6)).astype(np.float32)
        for i in range(n):
            req.send(f"r{i}", orjson.dumps({"data": rows[i : i + 1].tolist()}))
        assert req.wait_for([f"r{i}" for i in range(n)], 20) == set()
        logits = rows @ w + b
        for i in range(n):
            doc = orjson.loads(req.replies[f"r{i}"][0][1])
            np.testing.assert_allclose(doc["logits"], logits[i : i + 1], rtol=1e-5)
        assert sum(runtime.calls) == n and max(runtime.calls) > 1, runtime.calls
    finally:
        req.close()
