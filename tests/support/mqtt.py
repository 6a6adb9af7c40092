"""Helpers for the MQTT transport tests and benchmark (no tests here).

- :class:`Mosquitto`: a throwaway broker on a free port of 127.0.0.1 (persistence on), to stop and
  start at will without touching the shared dev broker;
- :class:`Requester`: a QoS 1 client with a persistent session that publishes scoring requests and
  collects the replies by request id (MQTT 5 response topic + correlation data, or 3.1.1 topics);
- :func:`outage_run`: the reliability scenario (requests, broker stopped and started mid-run),
  runnable in another interpreter (e.g. a paho 2 venv)::

      python tests/support/mqtt.py outage --model M.onnx --workdir DIR [--n 5000] [--protocol 5]

It imports edge_module, paho, numpy and onnxruntime only (no pytest, no onnx).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from edge_module.transports import paho_compat as pc  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
PAHO2 = "paho-mqtt==2.2.0"  # the newest paho; the host has 1.6 (azure-iot-device caps it)


def paho2_python() -> Path:
    """The python of a venv with paho-mqtt 2.x and what the transport needs (built once, then reused)."""
    import onnxruntime

    from tests.peer_venv import peer_venv

    return peer_venv("paho2", [PAHO2, "numpy", f"onnxruntime=={onnxruntime.__version__}", "orjson", "httptools"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """A mosquitto process of our own: ``start()``, ``stop()`` (SIGTERM: it saves its persistence
    file, so sessions and queued QoS 1 messages survive), ``start()`` again on the same port."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        *,
        max_inflight: int | None = 1000,
        max_queued: int | None = 100_000,
        extra: list[str] | None = None,
        anonymous: bool = True,
    ):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        lines = [
            "user root",
            "per_listener_settings false",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.dir}/",
            "persistence_file mosquitto.db",
            "autosave_interval 60",
            "set_tcp_nodelay true",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
        ]
        if max_inflight is not None:
            lines.append(f"max_inflight_messages {max_inflight}")
        if max_queued is not None:
            lines += [f"max_queued_messages {max_queued}", "max_queued_bytes 0"]
        lines += list(extra or [])
        lines.append(f"listener {self.port} 127.0.0.1")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {err}{log[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto is not listening on {self.port} after {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Requester:
    """Publishes requests (QoS 1, persistent session) and collects replies per request id.

    MQTT 5: requests go to ``<prefix>`` with a response topic of its own and the id as correlation
    data. 3.1.1: to ``<prefix>/<id>``; replies come on ``.../response/<id>`` and ``.../error/<id>``."""

    def __init__(
        self,
        url: str,
        service: str,
        protocol: int = 5,
        client_id: str | None = None,
        max_inflight: int = 200,
        **tls: Any,
    ):
        self.service = service
        self.protocol = protocol
        self.prefix = f"edgepack/{service}/score/request"
        self.client_id = client_id or f"req-{uuid.uuid4().hex[:12]}"
        self.reply_topic = f"edgepack/test/{self.client_id}/response"
        self.replies: dict[str, list[tuple[str, bytes, dict[str, str]]]] = {}
        self.reply_times: dict[str, float] = {}
        self.sent_at: dict[str, float] = {}
        self.acked = 0
        self.connects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.got = threading.Condition(self._lock)
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        v5 = protocol == 5
        self.client = pc.new_client(self.client_id, pc.MQTT_V5 if v5 else pc.MQTT_V311, clean_session=False)
        if tls:
            pc.use_tls(self.client, tls.get("ca_file"), tls.get("cert_file"), tls.get("key_file"))
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.2, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        if v5:
            self.client.connect_async(host, int(port), 30, clean_start=False, properties=pc.connect_properties(3600))
        else:
            self.client.connect_async(host, int(port), 30)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, *props: Any) -> None:
        if pc.reason_value(rc) == 0:
            self.connects += 1
            if self.protocol == 5:
                client.subscribe(self.reply_topic, 1)
            else:
                base = f"edgepack/{self.service}/score"
                client.subscribe([(f"{base}/response/#", 1), (f"{base}/error/#", 1)])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        props = getattr(msg, "properties", None)
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        users = dict(getattr(props, "UserProperty", None) or []) if props is not None else {}
        if corr:
            rid = corr.decode()
        else:
            rid = msg.topic.split("/score/", 1)[1].split("/", 1)[1] if "/score/" in msg.topic else msg.topic
        with self.got:
            self.replies.setdefault(rid, []).append((msg.topic, bytes(msg.payload), users))
            self.reply_times.setdefault(rid, time.perf_counter())
            self.got.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int) -> None:
        self.acked += 1

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        if not self._subscribed.wait(timeout):
            raise TimeoutError("the requester did not subscribe")

    def send(self, rid: str, body: bytes, topic_suffix: str | None = None) -> None:
        """Publish one request (paho keeps it and sends it again after a reconnect if needed)."""
        self.sent_at[rid] = time.perf_counter()
        if self.protocol == 5:
            props = pc.publish_properties(rid.encode(), self.reply_topic, "application/json")
            topic = self.prefix if topic_suffix is None else f"{self.prefix}/{topic_suffix}"
            self.client.publish(topic, body, 1, properties=props)
        else:
            self.client.publish(f"{self.prefix}/{rid if topic_suffix is None else topic_suffix}", body, 1)

    def wait_for(self, ids: list[str] | set[str], timeout: float) -> set[str]:
        """Wait until every id has a reply; return the ids still missing."""
        deadline = time.monotonic() + timeout
        with self.got:
            while True:
                missing = {i for i in ids if i not in self.replies}
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self.got.wait(min(left, 0.5))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def v1_segment(folder: str | os.PathLike[str], records: list[tuple[bytes, bytes]], first: int = 0) -> Path:
    """A spool segment in the first format (``<first>.seg``: crc32, length | body, no record magic), the
    topics as raw bytes (so a test can store one that is not UTF-8 with a valid CRC)."""
    import struct
    import zlib

    blobs = []
    for i, (topic, payload) in enumerate(records):
        body = struct.pack("<QHHI", first + i, len(topic), 0, 0) + topic + payload
        blobs.append(struct.pack("<II", zlib.crc32(body), len(body)) + body)
    path = Path(folder) / f"{first:020d}.seg"
    path.write_bytes(b"".join(blobs))
    return path


def onnx_app(model: str | os.PathLike[str]) -> Any:
    from edge_module.scoring.onnx_app import OnnxScoringApp

    return OnnxScoringApp(model, intra_op_threads=1)


def expected_outputs(model: str | os.PathLike[str], rows: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": rows.astype(np.float32)})[0]


def outage_run(model: str, workdir: str, n: int = 5000, protocol: int = 5, stop_after: float = 0.3) -> dict[str, Any]:
    """n requests; when ``stop_after`` of them are answered the broker stops (SIGTERM) and starts
    again 1.5 s later. Returns what the test checks: missing ids, duplicates, wrong results, stats."""
    from edge_module.transports.mqtt import MqttSettings, MqttTransport

    work = Path(workdir)
    broker = Mosquitto(work / "broker").start()
    service = f"outage{uuid.uuid4().hex[:6]}"
    settings = MqttSettings(
        url=broker.url,
        service=service,
        client_id=f"scorer-{service}",
        protocol=protocol,
        spool_dir=str(work / "spool"),
        reconnect_min=0.2,
        reconnect_max=1.0,
    )
    transport = MqttTransport(onnx_app(model), settings).start()
    requester = None
    try:
        transport.wait_connected(20)
        requester = Requester(broker.url, service, protocol)
        requester.wait_subscribed()
        rng = np.random.default_rng(1)
        rows = rng.standard_normal((n, 64)).astype(np.float32)
        ids = [f"r{i:05d}" for i in range(n)]
        started = time.perf_counter()
        stopped_at: dict[str, Any] = {}

        def sender() -> None:
            for i, rid in enumerate(ids):
                requester.send(rid, orjson.dumps({"data": rows[i : i + 1].tolist()}))
                if i % 200 == 199:
                    time.sleep(0.02)  # a steady stream rather than one burst

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        with requester.got:
            while len(requester.replies) < n * stop_after and time.perf_counter() - started < 60:
                requester.got.wait(0.2)
        broker.stop()
        stopped_at = {"replies": len(requester.replies), "at": time.perf_counter() - started}
        time.sleep(0.5)
        stopped_at["stats_during_outage"] = transport.stats()
        time.sleep(1.0)
        broker.start()
        thread.join(60)
        missing = requester.wait_for(ids, 120)
        elapsed = time.perf_counter() - started
        time.sleep(1.0)  # late duplicates, if any
        expected = expected_outputs(model, rows)
        wrong, errors = [], []
        for i, rid in enumerate(ids):
            for topic, payload, _ in requester.replies.get(rid, []):
                doc = orjson.loads(payload)
                if "error" in doc:
                    errors.append((rid, topic, doc))
                    continue
                got = np.asarray(doc["output"], dtype=np.float32)
                if (protocol != 5 and doc.get("id") != rid) or not np.allclose(got, expected[i : i + 1], atol=1e-5):
                    wrong.append(rid)
        duplicates = {rid: len(r) for rid, r in requester.replies.items() if len(r) > 1}
        for _ in range(50):
            if transport.stats()["spooled"] == 0:
                break
            time.sleep(0.1)
        return {
            "paho": pc.PAHO_VERSION,
            "n": n,
            "protocol": protocol,
            "seconds": round(elapsed, 2),
            "missing": sorted(missing)[:20],
            "missing_count": len(missing),
            "wrong": wrong[:20],
            "errors": errors[:5],
            "duplicates": duplicates,
            "unknown_ids": sorted(set(requester.replies) - set(ids))[:20],
            "stopped_at": stopped_at,
            "requester_connects": requester.connects,
            "stats": transport.stats(),
        }
    finally:
        if requester is not None:
            requester.close()
        transport.stop(5)
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    outage = sub.add_parser("outage")
    outage.add_argument("--model", required=True)
    outage.add_argument("--workdir", required=True)
    outage.add_argument("--n", type=int, default=5000)
    outage.add_argument("--protocol", type=int, default=5)
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):
        result = outage_run(args.model, args.workdir, args.n, args.protocol)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
