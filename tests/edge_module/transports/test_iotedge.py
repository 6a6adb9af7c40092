"""The IoT Edge hub transport, for real: azure-iot-device's module client against the dev Mosquitto.

The module client speaks MQTT over TLS to a gateway (``GatewayHostName=localhost``, port 8883, the
dev CA as server verification cert). The test plays edgeHub/IoT Hub with a paho client on the same
broker (:class:`FakeHub`): it publishes input messages on ``devices/<d>/modules/<m>/inputs/<input>/``,
reads results on ``devices/<d>/modules/<m>/messages/events/`` (``$.on`` is the output name), answers
twin GETs (``$iothub/twin/GET`` → ``$iothub/twin/res/200``) and reported-property PATCHes (``204``),
and sends desired-property patches on ``$iothub/twin/PATCH/properties/desired/?$version=N``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests

from edge_module.runtime import Request, Response, ScoringApp
from edge_module.scoring.onnx_app import OnnxScoringApp
from edge_module.settings import SettingsError
from edge_module.transports import paho_compat as pc
from edge_module.transports.iotedge import IotEdgeTransport, Tuning, max_score, reported_patch
from edge_module.transports.settings import HUB_MESSAGE_LIMIT, IotEdgeSettings
from tests.support.scorers import FunctionApp, make_mlp

MODULE = "scorer"
# The SDK's twin topics ($iothub/twin/GET, .../res, .../PATCH/properties/desired) name no device: on a
# shared broker every fake hub answers every module's twin GET and every module gets every desired
# patch. Tests playing a hub take this lock (across pytest-xdist workers and worktrees) one at a time.
TWIN_LOCK = Path("/tmp/edgepack-test-iotedge-twin.lock")


def _paho_client(client_id: str, clean_session: bool = True) -> Any:
    """A 3.1.1 paho client with the version-1 callbacks on paho 1.6 and 2.x."""
    return pc.new_client(client_id, pc.MQTT_V311, clean_session=clean_session)


def _decode_properties(segment: str) -> dict[str, str | None]:
    props: dict[str, str | None] = {}
    for pair in filter(None, segment.split("&")):
        key, sep, value = pair.partition("=")
        props[urllib.parse.unquote(key)] = urllib.parse.unquote(value) if sep else None
    return props


class Event:
    """A message the module sent: output name, system properties ($.cid, ...), custom properties, body."""

    def __init__(self, topic: str, payload: bytes):
        self.props = _decode_properties(topic.split("/messages/events/", 1)[1])
        self.output = self.props.pop("$.on", None)
        self.system = {k: v for k, v in self.props.items() if k.startswith("$.")}
        self.custom = {k: v for k, v in self.props.items() if not k.startswith("$.")}
        self.body = payload

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Event({self.output}, {self.props}, {self.body[:120]!r})"


class FakeHub:
    """edgeHub's and IoT Hub's side of the MQTT conversation, on the real broker."""

    def __init__(
        self,
        host: str,
        port: int,
        device: str,
        module: str = MODULE,
        desired: dict | None = None,
        persistent: bool = False,
    ):
        """``persistent``: a persistent session (the broker keeps the module's results for it across a restart)."""
        self.device, self.module = device, module
        self.base = f"devices/{device}/modules/{module}"
        self.desired: dict[str, Any] = {**(desired or {}), "$version": 1}
        self.reported: dict[str, Any] = {"$version": 1}
        self.reported_patches: list[dict[str, Any]] = []
        self.events: list[Event] = []
        self.twin_gets = 0
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = _paho_client(f"fakehub-{device}", clean_session=not persistent)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, userdata, flags, rc: client.subscribe(
            [
                (f"{self.base}/messages/events/#", 1),
                ("$iothub/twin/GET/#", 1),
                ("$iothub/twin/PATCH/properties/reported/#", 1),
            ]
        )
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_disconnect = lambda *args: self._subscribed.clear()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.connect(host, port)
        self.client.loop_start()
        self.wait_connected()

    def wait_connected(self, timeout: float = 10.0) -> None:
        assert self._subscribed.wait(timeout), "the fake hub could not connect and subscribe"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        topic = msg.topic
        with self._cond:
            if topic.startswith(f"{self.base}/messages/events/"):
                self.events.append(Event(topic, msg.payload))
            elif topic.startswith("$iothub/twin/GET/"):
                self.twin_gets += 1
                rid = topic.split("$rid=", 1)[1]
                twin = {"desired": self.desired, "reported": self.reported}
                client.publish(f"$iothub/twin/res/200/?$rid={rid}", json.dumps(twin), qos=1)
            elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
                rid = topic.split("$rid=", 1)[1]
                patch = json.loads(msg.payload)
                self.reported_patches.append(patch)
                _merge_twin(self.reported, patch)
                self.reported["$version"] += 1
                client.publish(f"$iothub/twin/res/204/?$rid={rid}&$version={self.reported['$version']}", b"", qos=1)
            self._cond.notify_all()

    # what the test does as the hub -------------------------------------------------------------
    def send(
        self,
        body: bytes | str | dict,
        input_name: str = "input1",
        correlation_id: str | None = None,
        message_id: str | None = None,
        properties: dict[str, str] | None = None,
        content_type: str | None = "application/json",
        wait: bool = True,
    ) -> None:
        """Route a message to the module's input (what edgeHub does for a route ending in BrokeredEndpoint)."""
        pairs = [("$.mid", message_id), ("$.cid", correlation_id), ("$.ct", content_type)]
        pairs += list((properties or {}).items())
        segment = "&".join(
            f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in pairs if v is not None
        )
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        info = self.client.publish(f"{self.base}/inputs/{input_name}/{segment}", payload, qos=1)
        if wait:
            info.wait_for_publish(10)

    def patch_desired(self, patch: dict[str, Any]) -> None:
        with self._cond:
            _merge_twin(self.desired, patch)
            self.desired["$version"] += 1
            doc = {**patch, "$version": self.desired["$version"]}
        topic = f"$iothub/twin/PATCH/properties/desired/?$version={doc['$version']}"
        self.client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(10)

    def wait_events(self, count: int, timeout: float = 20.0) -> list[Event]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.events) >= count, timeout):
                raise AssertionError(
                    f"{len(self.events)} of {count} messages came out within {timeout} s: {self.events}"
                )
            return list(self.events)

    def wait_correlated(self, ids: set[str], timeout: float = 20.0) -> list[Event]:
        """Wait until a message with each correlation id came out (duplicates allowed: at-least-once)."""
        with self._cond:
            if not self._cond.wait_for(lambda: ids <= {e.system.get("$.cid") for e in self.events}, timeout):
                seen = {e.system.get("$.cid") for e in self.events}
                raise AssertionError(f"no message came out for {sorted(ids - seen)} within {timeout} s")
            return list(self.events)

    def wait_reported(self, check: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: check(self.reported), timeout):
                raise AssertionError(f"the reported properties never matched within {timeout} s: {self.reported}")
            return json.loads(json.dumps(self.reported))


def _merge_twin(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_twin(target[key], value)
        else:
            target[key] = value


# fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(mlp_path: Path) -> Path:
    return mlp_path.parents[2]  # .../azureml-models (mlp/1/mlp.onnx)


@pytest.fixture(scope="module")
def reference(mlp_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    session = ort.InferenceSession(str(mlp_path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": np.asarray(x, np.float32)})[0]


@pytest.fixture
def broker(dev_services: dict[str, str]) -> dict[str, Any]:
    if dev_services.get("EDGEPACK_TEST_MQTT_TLS_PORT") != "8883":
        pytest.skip("the IoT Hub SDK connects to port 8883 only")
    return {
        "host": dev_services["EDGEPACK_TEST_MQTT_HOST"],
        "port": int(dev_services["EDGEPACK_TEST_MQTT_PORT"]),
        "ca": Path(dev_services["EDGEPACK_TEST_MQTT_CA"]).read_text(),
    }


class Module:
    """A device/module identity on the broker: the fake hub, and transports started for it."""

    def __init__(self, broker: dict[str, Any], desired: dict | None = None, persistent_hub: bool = False):
        self.broker = broker
        self._lock = TWIN_LOCK.open("a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # released by close(), or when the process ends
        self.device = f"edgepack-test-{uuid.uuid4().hex[:10]}"
        key = base64.b64encode(os.urandom(32)).decode()
        self.connection_string = (
            f"HostName=localhost;DeviceId={self.device};ModuleId={MODULE};"
            f"SharedAccessKey={key};GatewayHostName=localhost"
        )
        self.hub = FakeHub(broker["host"], broker["port"], self.device, desired=desired, persistent=persistent_hub)
        self.transports: list[IotEdgeTransport] = []

    def settings(self, **kw: Any) -> IotEdgeSettings:
        kw.setdefault("report_interval", 0.3)
        kw.setdefault("retry_interval", 0.2)
        return IotEdgeSettings(
            connection_string=self.connection_string, server_verification_cert=self.broker["ca"], **kw
        )

    def start(self, app: ScoringApp, wait: bool = True, **kw: Any) -> IotEdgeTransport:
        reconfigure = kw.pop("reconfigure", None)
        transport = IotEdgeTransport(app, self.settings(**kw), reconfigure).start()
        self.transports.append(transport)
        if wait:
            transport.wait_ready(30)
        return transport

    def close(self) -> None:
        for t in self.transports:
            t.stop(grace=5)
        self.hub.close()
        # drop the module's persistent session (clean_session=False) from the broker
        try:
            for client_id in (f"{self.device}/{MODULE}", f"fakehub-{self.device}"):
                c = _paho_client(client_id, clean_session=True)
                c.connect(self.broker["host"], self.broker["port"])
                c.disconnect()
        finally:
            self._lock.close()  # releases the flock


@pytest.fixture
def module(broker: dict[str, Any]) -> Iterator[Module]:
    m = Module(broker)
    yield m
    m.close()


def _wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _row(seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).standard_normal((1, 64)).astype(np.float32).tolist()


# with the broker ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_scores_input_messages_to_the_output_keeping_properties(module: Module, model_dir: Path, reference) -> None:
    transport = module.start(OnnxScoringApp(model_dir))
    rows = _row(1)
    module.hub.send({"data": rows}, correlation_id="corr-1", message_id="m-1", properties={"site": "plant 7"})
    module.hub.send({"inputs": {"input": _row(2)}}, message_id="m-2")  # no correlation id: the message id
    first, second = module.hub.wait_events(2)
    assert first.output == "output1"
    assert first.system["$.cid"] == "corr-1"
    assert first.custom == {"site": "plant 7"}
    assert first.system["$.ct"] == "application/json" and first.system["$.ce"] == "utf-8"
    assert first.system["$.mid"] not in (None, "m-1")  # a message id of its own
    np.testing.assert_allclose(first.json["output"], reference(rows), rtol=1e-5, atol=1e-6)
    assert second.output == "output1" and second.system["$.cid"] == "m-2"
    np.testing.assert_allclose(second.json["output"], reference(_row(2)), rtol=1e-5, atol=1e-6)

    reported = module.hub.wait_reported(lambda r: r.get("counts", {}).get("sent") == 2)
    assert reported["status"] == "ready"
    assert reported["models"] == {"mlp": {"version": "1"}}
    assert reported["routes"] == {"input": "input1", "output": "output1", "error_output": "error"}
    assert reported["counts"]["scored"] == 2 and reported["counts"]["errors"] == 0
    assert transport.stats()["received"] == 2


@pytest.mark.slow
def test_direct_outputs_answer_each_message_exactly_once_in_order(module: Module, model_dir: Path) -> None:
    """Outputs go straight on the SDK's connection, many unacknowledged: each input still gets one answer,
    in order, with the SDK's topic encoding; errors too; the twin (SDK publishes) keeps working beside them."""
    transport = module.start(OnnxScoringApp(model_dir))
    assert transport._direct is not None  # the SDK's layout is known: outputs bypass send_message_to_output
    n = 400
    for i in range(n):
        body = {"data": _row(i)} if i % 50 else b"not json"
        module.hub.send(body, correlation_id=f"c{i}", properties={"n": str(i)}, wait=False)
    events = module.hub.wait_events(n, timeout=60)
    reported = module.hub.wait_reported(lambda r: r.get("counts", {}).get("sent") == n, timeout=30)
    time.sleep(0.5)  # anything sent twice would be here by now
    events = module.hub.events
    assert len(events) == n
    assert [e.system["$.cid"] for e in events] == [f"c{i}" for i in range(n)]
    assert all(e.custom.get("n") == e.system["$.cid"][1:] for e in events)
    assert {e.output for e in events if e.system["$.cid"] in {f"c{i}" for i in range(0, n, 50)}} == {"error"}
    assert sum(e.output == "output1" for e in events) == n - n // 50
    assert reported["counts"]["errors"] == n // 50
    module.hub.patch_desired({"threshold": 0.5})
    assert module.hub.wait_reported(lambda r: r.get("settings", {}).get("threshold") == 0.5)
    assert transport.stats()["unsent"] == 0


@pytest.mark.slow
def test_bad_messages_get_an_error_reply_each_and_the_loop_goes_on(module: Module, model_dir: Path, reference) -> None:
    transport = module.start(OnnxScoringApp(model_dir))
    hub = module.hub
    hub.send(b'{"data": [[1, 2', correlation_id="malformed", properties={"kind": "x"})
    hub.send({"data": [[0.0] * 63]}, correlation_id="shape")
    hub.send(b'{"data": [' + b"0," * (HUB_MESSAGE_LIMIT // 2) + b"0]}", correlation_id="oversize")
    hub.send({"data": _row(3)}, input_name="input2", correlation_id="other-input")
    hub.send(b"\xff\xfe not json", correlation_id="binary", content_type="application/octet-stream")
    hub.send({"data": _row(4)}, correlation_id="good")
    events = hub.wait_events(6)
    by_cid = {e.system["$.cid"]: e for e in events}
    for cid, status, words in [
        ("malformed", 400, "JSON"),
        ("shape", 400, "input"),
        ("oversize", 413, "over the limit"),
        ("other-input", 404, "input2"),
        ("binary", 415, "content type"),
    ]:
        e = by_cid[cid]
        assert e.output == "error", e
        assert e.json["status"] == status and e.custom["error_status"] == str(status), e
        assert words in e.json["error"], e
        assert e.json["correlation_id"] == cid
    assert by_cid["malformed"].custom["kind"] == "x"
    assert "64" in by_cid["shape"].json["error"]  # names what the model expects
    assert by_cid["good"].output == "output1"
    np.testing.assert_allclose(by_cid["good"].json["output"], reference(_row(4)), rtol=1e-5, atol=1e-6)
    _wait_for(lambda: transport.stats()["sent"] == 6)
    stats = transport.stats()
    assert stats["errors"] == 5 and stats["scored"] == 1
    reported = hub.wait_reported(lambda r: r.get("counts", {}).get("errors") == 5)
    assert reported["last_error"]["correlation_id"] in by_cid


@pytest.mark.slow
def test_desired_properties_reconfigure_without_a_restart(broker: dict[str, Any], model_dir: Path) -> None:
    module = Module(broker, desired={"threshold": 2.0, "drop_below_threshold": True, "color": "blue"})
    try:
        transport = module.start(OnnxScoringApp(model_dir))
        hub = module.hub
        reported = hub.wait_reported(lambda r: r.get("desired_version") == 1)
        assert reported["settings"]["threshold"] == 2.0 and reported["settings"]["drop_below_threshold"] is True
        assert reported["ignored"] == {"color": "unknown setting"}
        hub.send({"data": _row(5)}, correlation_id="filtered")  # softmax outputs are below 2.0: dropped
        hub.wait_reported(lambda r: r.get("counts", {}).get("below_threshold") == 1)

        hub.patch_desired({"threshold": 0.0, "color": None, "max_batch_size": "many"})
        reported = hub.wait_reported(lambda r: r.get("desired_version") == 2)
        assert reported["ignored"] == {"max_batch_size": "expected a whole number >= 1, got 'many'"}
        assert reported["settings"]["threshold"] == 0.0
        hub.send({"data": _row(6)}, correlation_id="passed")
        (event,) = hub.wait_events(1)
        assert event.system["$.cid"] == "passed"
        assert event.custom["above_threshold"] == "true"
        assert float(event.custom["max_score"]) == pytest.approx(max(event.json["output"][0]))

        hub.patch_desired({"threshold": None, "drop_below_threshold": None, "max_batch_size": 8})
        reported = hub.wait_reported(lambda r: r.get("desired_version") == 3)
        assert "threshold" not in reported["settings"] and reported["settings"]["max_batch_size"] == 8
        assert "ignored" not in reported or reported["ignored"] == {}
        assert transport.tuning == Tuning(max_batch_size=8)
        hub.send({"data": _row(7)}, correlation_id="plain")
        assert "above_threshold" not in hub.wait_events(2)[1].custom
    finally:
        module.close()


@pytest.mark.slow
def test_model_version_goes_to_the_reconfigure_hook(module: Module, tmp_path: Path, model_dir: Path) -> None:
    v2 = tmp_path / "v2" / "mlp" / "2" / "mlp.onnx"
    v2.parent.mkdir(parents=True)
    v2.write_bytes(make_mlp(seed=42))
    calls: list[dict[str, Any]] = []

    def reconfigure(desired: dict[str, Any]) -> ScoringApp:
        calls.append(desired)
        if desired["model_version"] == "9":
            raise LookupError("model mlp has no version 9")
        app = OnnxScoringApp(tmp_path / "v2" if desired["model_version"] == "2" else model_dir)
        app.load()
        return app

    module.start(OnnxScoringApp(model_dir), reconfigure=reconfigure)
    hub = module.hub
    hub.send({"data": _row(8)}, correlation_id="v1")
    hub.wait_events(1)  # the SDK hands messages and twin patches over on different threads: no order between them
    hub.patch_desired({"model_version": 2})
    hub.wait_reported(lambda r: r.get("models") == {"mlp": {"version": "2"}})
    hub.send({"data": _row(8)}, correlation_id="v2")
    hub.patch_desired({"model_version": "9"})
    reported = hub.wait_reported(lambda r: "version 9" in (r.get("error") or ""))
    assert reported["status"] == "ready" and reported["settings"]["model_version"] == "2"
    hub.send({"data": _row(8)}, correlation_id="still-v2")
    one, two, three = hub.wait_events(3)
    assert calls == [{"model_version": "2"}, {"model_version": "9"}]
    assert one.json != two.json and two.json == three.json


@pytest.mark.slow
def test_micro_batches_score_like_single_messages(module: Module, model_dir: Path, reference) -> None:
    app = OnnxScoringApp(model_dir)
    transport = module.start(app, max_batch_size=16, send_threads=4)
    n = 200
    (runtime,) = app.models()
    run, rows_per_run = runtime.run, []

    def gated_run(feeds: dict[str, np.ndarray]) -> list[Any]:
        rows_per_run.append(len(feeds["input"]))
        if len(rows_per_run) == 1:  # hold the first run until every message is queued: the rest come in batches
            _wait_for(lambda: transport.stats()["received"] == n, 30)
        return run(feeds)

    runtime.run = gated_run  # type: ignore[method-assign]
    for i in range(n):
        body = {"data": [[0.5] * 10]} if i == 57 else {"data": np.vstack([_row(i)] * (1 + i % 3)).tolist()}
        module.hub.send(body, correlation_id=f"c{i}", wait=i == n - 1)
    events = {e.system["$.cid"]: e for e in module.hub.wait_events(n, timeout=60)}
    assert len(events) == n
    assert events["c57"].output == "error" and events["c57"].json["status"] == 400
    for i in range(n):
        if i != 57:
            expected = reference(np.vstack([_row(i)] * (1 + i % 3)))
            np.testing.assert_allclose(events[f"c{i}"].json["output"], expected, rtol=1e-5, atol=1e-6)
    _wait_for(lambda: transport.stats()["sent"] == n)
    assert transport.stats()["scored"] == n - 1
    assert sum(rows_per_run) == sum(1 + i % 3 for i in range(n) if i != 57)
    assert len(rows_per_run) <= 1 + -(-(n - 1) // 16) + 1 and max(rows_per_run) > 16


@pytest.mark.slow
def test_messages_sent_while_the_module_is_down_are_scored_when_it_is_back(module: Module, model_dir: Path) -> None:
    first = module.start(OnnxScoringApp(model_dir))
    first.stop(grace=5)
    module.transports.remove(first)
    for i in range(20):  # the broker holds them for the module's persistent session
        module.hub.send({"data": _row(i)}, correlation_id=f"late-{i}")
    time.sleep(0.5)
    assert module.hub.events == []
    module.start(OnnxScoringApp(model_dir))
    events = module.hub.wait_events(20)
    assert sorted(e.system["$.cid"] for e in events) == sorted(f"late-{i}" for i in range(20))
    assert all(e.output == "output1" for e in events)


@pytest.mark.slow
def test_a_model_that_fails_to_load_is_reported_and_answered(module: Module) -> None:
    def boom() -> None:
        raise RuntimeError("weights are corrupt")

    app = FunctionApp(lambda r: Response(b"{}"), load_fn=boom)
    transport = module.start(app)
    assert transport.wait_ready() is False
    reported = module.hub.wait_reported(lambda r: r.get("status") == "failed")
    assert "weights are corrupt" in reported["error"]
    module.hub.send({"data": [1]}, correlation_id="x")
    (event,) = module.hub.wait_events(1)
    assert event.output == "error" and event.json["status"] == 503 and "weights are corrupt" in event.json["error"]


@pytest.mark.slow
def test_entry_script_style_apps_and_oversize_results(module: Module) -> None:
    def score(request: Request) -> Response:
        doc = json.loads(request.body)
        if doc.get("big"):
            return Response(b'"' + b"x" * HUB_MESSAGE_LIMIT + b'"')
        if doc.get("fail"):
            return Response(b'{"message": "no"}', status=422)
        return Response(json.dumps({"echo": doc, "site": request.headers.get("site")}))

    module.start(FunctionApp(score))
    module.hub.send({"big": True}, correlation_id="big")
    module.hub.send({"fail": True}, correlation_id="fail")
    module.hub.send({"a": 1}, correlation_id="ok", properties={"Site": "7"})
    events = {e.system["$.cid"]: e for e in module.hub.wait_events(3)}
    assert events["big"].output == "error" and events["big"].json["status"] == 413
    assert "limit" in events["big"].json["error"]
    assert events["fail"].output == "error" and events["fail"].json["status"] == 422
    assert events["ok"].json == {"echo": {"a": 1}, "site": "7"}


MOSQUITTO = "/usr/sbin/mosquitto"


def _outage_scenario(work: str, ca_file: str) -> None:
    """In a network namespace of its own (``unshare -n``): a private Mosquitto on 127.0.0.1:1883 and
    :8883 (the dev certificates, persistence), the transport, and the broker stopped while results
    are waiting to be sent. Raises when a result is lost."""
    import subprocess

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    root = Path(work)
    certs = Path(ca_file).parent
    (root / "data").mkdir()
    conf = root / "mosquitto.conf"
    conf.write_text(
        "user root\nper_listener_settings false\nallow_anonymous true\n"
        f"persistence true\npersistence_location {root}/data/\n"
        "listener 1883 127.0.0.1\nlistener 8883 127.0.0.1\n"
        f"cafile {certs}/ca.crt\ncertfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
    )

    def start_broker() -> subprocess.Popen:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: all(_port_open(p) for p in (1883, 8883)), 10)
        return proc

    model = root / "models" / "mlp" / "1" / "mlp.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(make_mlp())
    broker = start_broker()
    module = Module({"host": "127.0.0.1", "port": 1883, "ca": Path(ca_file).read_text()}, persistent_hub=True)
    app = OnnxScoringApp(model.parents[2])
    transport = module.start(app)
    (runtime,) = app.models()
    run, gate = runtime.run, threading.Event()
    runtime.run = lambda feeds: gate.wait(30) and run(feeds)  # type: ignore[method-assign]
    for i in range(10):
        module.hub.send({"data": _row(i)}, correlation_id=f"before-{i}")
    _wait_for(lambda: transport.stats()["received"] == 10)
    broker.terminate()  # SIGTERM: Mosquitto saves its sessions and queued messages
    broker.wait(10)
    gate.set()  # the ten results are scored now, with the broker down
    # through the SDK: sends fail and are retried; direct outputs: queued on the connection, unacknowledged
    _wait_for(lambda: transport.stats()["send_retries"] >= 3 or transport.stats()["unsent"] == 10, 20)
    time.sleep(2)
    assert transport.stats()["sent"] == 0
    broker = start_broker()
    try:
        module.hub.wait_connected()
        for i in range(5):
            module.hub.send({"data": _row(i)}, correlation_id=f"after-{i}")
        expected = {f"before-{i}" for i in range(10)} | {f"after-{i}" for i in range(5)}
        events = module.hub.wait_correlated(expected, timeout=60)
        assert {e.system["$.cid"] for e in events} == expected
        assert all(e.output == "output1" for e in events)
        _wait_for(lambda: transport.stats()["sent"] >= 15 and transport.stats()["unsent"] == 0, 20)
        print(json.dumps({"events": len(events), **transport.stats()}))
    finally:
        module.close()
        broker.terminate()
        broker.wait(10)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_results_wait_out_a_broker_outage(dev_services: dict[str, str], tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or not shutil.which("unshare") or not Path(MOSQUITTO).exists():
        pytest.skip("needs root, unshare and mosquitto for a private broker in a network namespace")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    code = (
        "import sys; from tests.edge_module.transports.test_iotedge import _outage_scenario as s; "
        "s(sys.argv[1], sys.argv[2])"
    )
    proc = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-W",
            "ignore",
            "-c",
            code,
            str(tmp_path),
            dev_services["EDGEPACK_TEST_MQTT_CA"],
        ],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["events"] >= 15 and stats["sent"] >= 15


@pytest.mark.slow
def test_a_steady_trickle_is_not_held_back_by_nagle(module: Module, model_dir: Path) -> None:
    """Back-to-back request/result round trips: without TCP_NODELAY each one waited ~40-80 ms for delayed ACKs."""
    module.start(OnnxScoringApp(model_dir))
    times = []
    for i in range(40):
        start = time.perf_counter()
        module.hub.send({"data": _row(i)}, correlation_id=f"t{i}", wait=False)
        module.hub.wait_events(i + 1)
        times.append(time.perf_counter() - start)
    assert float(np.median(times[5:])) < 0.03, times


# without the broker --------------------------------------------------------------------------------------
def test_reported_patch_sends_changes_and_nulls_for_removed_keys() -> None:
    sent = {"status": "loading", "ignored": {"a": "unknown setting", "b": "x"}, "counts": {"scored": 1}}
    state = {"status": "ready", "ignored": {"b": "x"}, "counts": {"scored": 1}, "error": None}
    assert reported_patch(sent, state) == {"status": "ready", "ignored": {"a": None}, "error": None}
    assert reported_patch(state, state) == {}


def test_max_score_reads_the_first_output() -> None:
    assert max_score(b'{"output": [[0.1, 0.7], [0.2, 0.05]]}') == pytest.approx(0.7)
    assert max_score(b'{"label": "cat"}') is None
    assert max_score(b"not json") is None
    assert max_score(b"[3, 9, 1]") == 9


def test_settings_from_env_and_validation(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    env = {
        "EDGEPACK_IOTEDGE_INPUT": "frames",
        "EDGEPACK_IOTEDGE_MAX_MESSAGE_SIZE": "64KiB",
        "EDGEPACK_IOTEDGE_CONNECTION_STRING": "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=a2V5",
        "EDGEPACK_IOTEDGE_CA_FILE": str(ca),
        "EDGEPACK_IOTEDGE_SEND_THREADS": "4",
    }
    s = IotEdgeSettings.from_env(env, output_name="scores")
    assert (s.input_name, s.output_name, s.max_message_bytes, s.send_threads) == ("frames", "scores", 65536, 4)
    assert s.server_verification_cert == "PEM"
    assert "SharedAccessKey" not in repr(s)
    with pytest.raises(SettingsError, match="max_message_bytes"):
        IotEdgeSettings(max_message_bytes=HUB_MESSAGE_LIMIT + 1)
    with pytest.raises(SettingsError, match="EDGEPACK_IOTEDGE_SEND_THREADS"):
        IotEdgeSettings.from_env({"EDGEPACK_IOTEDGE_SEND_THREADS": "two"})
    with pytest.raises(SettingsError, match="connection string"):
        IotEdgeSettings(server_verification_cert="PEM")


def test_the_sdk_socket_gets_tcp_nodelay() -> None:
    from azure.iot.device import IoTHubModuleClient

    key = base64.b64encode(os.urandom(32)).decode()
    client = IoTHubModuleClient.create_from_connection_string(
        f"HostName=localhost;DeviceId=d;ModuleId=m;SharedAccessKey={key}"
    )
    try:
        assert IotEdgeTransport._disable_nagle(client)  # the SDK's internals are where we expect them
    finally:
        client.shutdown()


@pytest.mark.slow
def test_the_server_scores_hub_messages_beside_http(module: Module, model_dir: Path, reference, tmp_path: Path) -> None:
    from tests.support.net import free_port
    from tests.support.procs import Proc

    ca = tmp_path / "ca.pem"
    ca.write_text(module.broker["ca"])
    port = free_port()
    env = {"EDGEPACK_IOTEDGE_CONNECTION_STRING": module.connection_string, "EDGEPACK_IOTEDGE_CA_FILE": str(ca)}
    args = ["--model-dir", str(model_dir / "mlp" / "1"), "--host", "127.0.0.1", "--port", str(port), "--iotedge"]
    proc = Proc(args, env=env, module=True)
    try:
        proc.wait_for(r"ready in [0-9.]+ s")
        module.hub.wait_reported(lambda r: r.get("status") == "ready")
        rows = _row(7)
        module.hub.send({"data": rows}, correlation_id="beside-http")
        (event,) = module.hub.wait_events(1)
        assert event.output == "output1" and event.system["$.cid"] == "beside-http"
        assert np.allclose(event.json["output"], reference(rows), atol=1e-5)
        http = requests.post(f"http://127.0.0.1:{port}/score", json={"data": rows}, timeout=5).json()
        assert http == event.json  # the same model and body both ways
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'edgepack_requests_total{route="iotedge",method="MESSAGE",status="200"} 1' in text
        # the image holds version 1 only: a desired model_version 7 is an error, version 1 serves on
        module.hub.patch_desired({"model_version": "7", "max_batch_size": 4})
        reported = module.hub.wait_reported(lambda r: r.get("settings", {}).get("max_batch_size") == 4)
        assert reported["settings"]["model_version"] is None, reported
        assert "no version '7'; versions: 1" in reported["error"]
        assert reported["models"] == {"mlp": {"version": "1"}} and reported["status"] == "ready"
    finally:
        assert proc.stop() == 0


@pytest.mark.slow
def test_the_twin_switches_the_version_http_and_the_hub_serve(module: Module, tmp_path: Path) -> None:
    """An image with mlp versions 1 and 2 (different weights), served over HTTP and the hub by one
    server: desired threshold, then model_version 1 -> 2 -> 9 (unknown) apply without a restart."""
    from edge_module.server.lifecycle import BackgroundServer
    from edge_module.settings import Settings

    root = tmp_path / "azureml-models"
    for version, seed in ((1, 1), (2, 2)):
        path = root / "mlp" / str(version) / "mlp.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(make_mlp(seed=seed))
    hub = module.hub
    rows = _row(11)
    sent = 0

    def over_http(**extra: Any) -> list[list[float]]:
        response = requests.post(f"{srv.url}/score", json={"data": rows, **extra}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["output"]

    def over_the_hub(cid: str) -> Event:
        nonlocal sent
        hub.send({"data": rows}, correlation_id=cid)
        sent += 1
        event = hub.wait_events(sent)[-1]
        assert event.system["$.cid"] == cid and event.output == "output1", event
        return event

    app = OnnxScoringApp(root)
    with BackgroundServer(app, Settings(port=0, iotedge=module.settings())) as srv:
        assert srv.wait_ready()
        server = srv.server
        v1, v2 = over_http(version="1"), over_http(version="2")
        assert not np.allclose(v1, v2)
        reported = hub.wait_reported(lambda r: r.get("status") == "ready" and "desired_version" in r)
        assert reported["models"] == {"mlp": {"version": "2"}}  # the latest by default
        np.testing.assert_allclose(over_the_hub("default").json["output"], v2, rtol=1e-6)

        hub.patch_desired({"threshold": 0.0})
        hub.wait_reported(lambda r: r.get("settings", {}).get("threshold") == 0.0)
        assert over_the_hub("threshold").custom["above_threshold"] == "true"

        hub.patch_desired({"model_version": "1"})
        reported = hub.wait_reported(lambda r: r.get("models") == {"mlp": {"version": "1"}})
        assert reported["settings"]["model_version"] == "1" and not reported.get("error")
        assert over_http() == v1
        np.testing.assert_allclose(over_the_hub("v1").json["output"], v1, rtol=1e-6)
        assert over_http(version="2") == v2  # a request naming a version still gets it

        hub.patch_desired({"model_version": 2})
        reported = hub.wait_reported(lambda r: r.get("models") == {"mlp": {"version": "2"}})
        assert reported["settings"]["model_version"] == "2"
        assert over_http() == v2
        np.testing.assert_allclose(over_the_hub("v2").json["output"], v2, rtol=1e-6)

        hub.patch_desired({"model_version": "9"})
        reported = hub.wait_reported(lambda r: "no version '9'" in (r.get("error") or ""))
        assert reported["status"] == "ready" and reported["settings"]["model_version"] == "2"
        assert reported["models"] == {"mlp": {"version": "2"}}
        assert over_http() == v2  # the old version keeps serving
        np.testing.assert_allclose(over_the_hub("still-v2").json["output"], v2, rtol=1e-6)
        assert srv.server is server and server.transports  # no restart: the same server and transport
        assert requests.get(f"{srv.url}/v2/models/mlp", timeout=5).json()["versions"] == ["1", "2"]
