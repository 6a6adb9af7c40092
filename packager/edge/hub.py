"""The local edgeHub: module identity, module twins, routes, ``$upstream`` and store-and-forward.

One asyncio MQTT 3.1.1 server (:mod:`packager.edge.mqtt`) over TLS plays edgeHub for the modules of
one device. The IoT Hub SDK's module client connects with client id ``<device>/<module>`` and a SAS
token signed with the module's key as password: the hub checks both, so each connection is one
known module. That is what a shared Mosquitto cannot do: a module's twin topics
(``$iothub/twin/...``) carry no module identity, so the hub answers them per connection.

- twin: ``GET`` answers ``{"desired": ..., "reported": ...}``; reported patches are merged (``null``
  removes) and versioned; :meth:`EdgeHub.set_desired` sends a desired patch with the next ``$version``;
- routes (:mod:`packager.iotedge.routes`): a module's output message goes to every route whose source
  and ``WHERE`` condition accept it, once per sink: ``BrokeredEndpoint("/modules/<m>/inputs/<i>")`` or
  ``$upstream`` (appended to a JSONL file, see :func:`upstream_record`);
- store-and-forward: messages for a module input wait in the hub's queue for that module until it
  is connected and subscribed to its inputs, and are sent with QoS 1 until it acknowledges them
  (unacknowledged ones are sent again after a reconnect); a message older than its route's
  ``timeToLiveSecs`` (else ``$edgeHub``'s ``storeAndForwardConfiguration.timeToLiveSecs``) is dropped
  and counted. The queue lives in the hub process (``edgepack edge run``), not on disk. After a
  (re)connection, input messages wait until the module has read its twin (at most ``twin_hold`` s, default 5):
  the azure-iot-device client subscribes to its inputs before it reads its twin, so messages stored
  while a module was down would otherwise be handled before its desired settings (unlike edgeHub).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from packager.edge import mqtt
from packager.iotedge.routes import Route

log = logging.getLogger("packager.edge.hub")

DEFAULT_TTL = 7200.0
TWIN_HOLD = 5.0  # seconds a connection's stored input messages wait for the module to read its twin
_WINDOW = 200  # unacknowledged messages per module connection
_SYSTEM_KEYS = ("$.mid", "$.cid", "$.ct", "$.ce", "$.uid", "$.exp")


@dataclass
class _Message:
    module: str
    output: str
    body: bytes
    app: dict[str, str]
    system: dict[str, str]
    enqueued: float = field(default_factory=time.time)
    expires: float = float("inf")
    input: str = ""


@dataclass
class _Module:
    name: str
    key: bytes
    desired: dict[str, Any]
    reported: dict[str, Any] = field(default_factory=lambda: {"$version": 1})
    writer: mqtt.BufferedWriter | None = None
    subscriptions: dict[str, int] = field(default_factory=dict)
    queue: deque[_Message] = field(default_factory=deque)
    inflight: dict[int, _Message] = field(default_factory=dict)
    next_id: int = 0
    twin_read: bool = False  # on this connection
    paused: bool = False  # the module is being stopped: nothing more is sent until it connects again
    hold_until: float = 0.0
    counts: dict[str, int] = field(
        default_factory=lambda: {"sent": 0, "received": 0, "delivered": 0, "expired": 0, "connects": 0}
    )

    def packet_id(self) -> int:
        while True:
            self.next_id = self.next_id % 65535 + 1
            if self.next_id not in self.inflight:
                return self.next_id


def parse_properties(segment: str) -> tuple[dict[str, str], dict[str, str]]:
    """Application and system (``$.``) properties from a topic's last segment (as the SDK writes them)."""
    app: dict[str, str] = {}
    system: dict[str, str] = {}
    if not segment:
        return app, system
    for entry in segment.split("&"):
        if not entry:
            continue
        key, _, value = entry.partition("=")
        key, value = urllib.parse.unquote(key), urllib.parse.unquote(value)
        (system if key.startswith("$.") else app)[key] = value
    return app, system


def encode_properties(app: Mapping[str, str], system: Mapping[str, str]) -> str:
    pairs = [(k, v) for k, v in system.items() if k in _SYSTEM_KEYS] + list(app.items())
    return "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in pairs)


def upstream_record(msg: _Message) -> dict[str, Any]:
    """One ``$upstream`` JSONL line: time, module, output, properties, system properties, body."""
    record: dict[str, Any] = {
        "time": msg.enqueued,
        "module": msg.module,
        "output": msg.output,
        "properties": msg.app,
        "system_properties": {k: v for k, v in msg.system.items() if k != "$.on"},
    }
    try:
        record["body"] = msg.body.decode("utf-8")
    except UnicodeDecodeError:
        record["body_base64"] = base64.b64encode(msg.body).decode()
    return record


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if key == "$version":
            continue
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def diff_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The twin patch that turns ``old`` into ``new`` (``null`` for removed keys)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new and not k.startswith("$")}
    for key, value in new.items():
        if key.startswith("$"):
            continue
        if isinstance(value, Mapping) and isinstance(old.get(key), Mapping):
            sub = diff_patch(old[key], value)
            if sub:
                patch[key] = sub
        elif old.get(key, object()) != value:
            patch[key] = copy.deepcopy(value)
    return patch


def check_sas(password: bytes | None, resource: str, key: bytes, now: float) -> bool:
    """``SharedAccessSignature sr=...&sig=...&se=...`` signed with ``key`` for ``resource``, not expired."""
    if not password or len(password) > 4096:
        return False
    text = password.decode("utf-8", "replace")
    prefix = "SharedAccessSignature "
    if not text.startswith(prefix):
        return False
    fields = dict(part.partition("=")[::2] for part in text[len(prefix) :].split("&"))
    sr, sig, se = fields.get("sr", ""), urllib.parse.unquote(fields.get("sig", "")), fields.get("se", "")
    if urllib.parse.unquote(sr) != resource or not se.isdigit() or int(se) < now:
        return False
    expected = base64.b64encode(hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, sig)


class EdgeHub:
    """edgeHub for one device's modules; runs its event loop in a thread (:meth:`start` / :meth:`stop`)."""

    def __init__(
        self,
        device_id: str,
        keys: Mapping[str, str],
        desired: Mapping[str, Mapping[str, Any]],
        routes: Mapping[str, Route],
        certfile: Path,
        keyfile: Path,
        upstream: Path,
        host: str = "127.0.0.1",
        port: int = 8883,
        hostname: str = "edgepack.local",
        ttl: float = DEFAULT_TTL,
        twin_hold: float = TWIN_HOLD,
    ) -> None:
        self.device_id, self.hostname, self.host, self.port = device_id, hostname, host, port
        self.modules = {
            name: _Module(name, base64.b64decode(key), {**copy.deepcopy(dict(desired.get(name, {}))), "$version": 1})
            for name, key in keys.items()
        }
        self.routes = dict(routes)
        self.ttl, self.twin_hold = ttl, twin_hold
        self.upstream_path = upstream
        self.upstream_count = 0
        self._upstream: BinaryIO | None = None
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ssl.load_cert_chain(certfile, keyfile)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> EdgeHub:
        self.upstream_path.parent.mkdir(parents=True, exist_ok=True)
        self._upstream = open(self.upstream_path, "ab")  # noqa: SIM115 - closed in stop()
        self._thread = threading.Thread(target=self._run, name="edgepack-edgehub", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            raise OSError(f"the local edge hub could not listen on {self.host}:{self.port}: {self._error}")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(10)
        if self._upstream:
            self._upstream.close()
            self._upstream = None

    def __enter__(self) -> EdgeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port, ssl=self._ssl, reuse_address=True)
            )
        except OSError as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for m in self.modules.values():
                if m.writer:
                    m.writer.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0.05))
            loop.close()

    # public, thread-safe -----------------------------------------------------------------------
    def set_desired(self, module: str, desired: Mapping[str, Any]) -> int:
        """Replace the module's desired properties; the module gets the difference as a patch. -> $version."""
        done: asyncio.Future[int] | None = None

        def apply() -> int:
            m = self.modules[module]
            patch = diff_patch(m.desired, desired)
            if not patch:
                return m.desired["$version"]
            version = m.desired["$version"] + 1
            m.desired = {**copy.deepcopy(dict(desired)), "$version": version}
            self._send(m, f"$iothub/twin/PATCH/properties/desired/?$version={version}", {**patch, "$version": version})
            return version

        if self._loop is None or not self._loop.is_running():
            return apply()
        done = asyncio.run_coroutine_threadsafe(self._call(apply), self._loop)
        return done.result(10)

    def add_module(self, name: str, key: str, desired: Mapping[str, Any]) -> None:
        """A module deployed while running (``edgepack edge apply``)."""
        module = _Module(name, base64.b64decode(key), {**copy.deepcopy(dict(desired)), "$version": 1})
        self._in_loop(lambda: self.modules.setdefault(name, module))

    def pause(self, name: str) -> None:
        """Send ``name`` nothing more until it connects again: its container is being stopped. (The SDK
        acknowledges a message on receipt; one that arrives while the module shuts down would be lost.)"""

        def apply() -> None:
            if name in self.modules:
                self.modules[name].paused = True

        self._in_loop(apply)

    def set_routes(self, routes: Mapping[str, Route], ttl: float) -> None:
        """Replace the routes (messages already queued keep their expiry)."""

        def apply() -> None:
            self.routes, self.ttl = dict(routes), ttl

        self._in_loop(apply)

    def _in_loop(self, fn: Any) -> Any:
        if self._loop is None or not self._loop.is_running():
            return fn()
        return asyncio.run_coroutine_threadsafe(self._call(fn), self._loop).result(10)

    @staticmethod
    async def _call(fn: Any) -> Any:
        return fn()

    def snapshot(self) -> dict[str, Any]:
        """Per module: connected, twin (desired, reported), counts, queued; and the $upstream count."""

        def take() -> dict[str, Any]:
            return {
                "modules": {
                    m.name: {
                        "connected": m.writer is not None,
                        "desired": copy.deepcopy(m.desired),
                        "reported": copy.deepcopy(m.reported),
                        "counts": dict(m.counts),
                        "queued": len(m.queue) + len(m.inflight),
                    }
                    for m in self.modules.values()
                },
                "upstream": self.upstream_count,
            }

        if self._loop is None or not self._loop.is_running():
            return take()
        return asyncio.run_coroutine_threadsafe(self._call(take), self._loop).result(10)

    # connections ---------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, raw: asyncio.StreamWriter) -> None:
        module: _Module | None = None
        writer = mqtt.BufferedWriter(raw)
        with contextlib.suppress(Exception):
            raw.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        packets = mqtt.PacketReader(reader)
        try:
            first = await asyncio.wait_for(packets.next(), 30)
            if first.kind != mqtt.CONNECT:
                raise mqtt.ProtocolError("the first packet is not CONNECT")
            connect = mqtt.parse_connect(first)
            module, rc = self._authenticate(connect)
            if module is None:
                writer.write(mqtt.connack(rc))
                writer.flush()
                await raw.drain()
                return
            if module.writer is not None:  # a newer connection of the same module takes over
                module.writer.close()
                self._requeue(module)
            if connect.clean_session:
                module.subscriptions.clear()
            module.writer = writer
            module.twin_read, module.hold_until = False, time.monotonic() + self.twin_hold
            module.paused = False
            module.counts["connects"] += 1
            writer.write(mqtt.connack(0, session_present=not connect.clean_session))
            self._pump(module)
            timeout = connect.keepalive * 1.5 if connect.keepalive else None
            while True:
                packet = packets.pending()
                if packet is None:
                    writer.flush()
                    if raw.transport.get_write_buffer_size() > 1 << 20:
                        await raw.drain()
                    await asyncio.wait_for(packets.fill(), timeout)
                    continue
                if packet.kind == mqtt.DISCONNECT:
                    break
                self._handle(module, writer, packet)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ssl.SSLError):
            pass
        except mqtt.ProtocolError as e:
            log.warning("module %s: %s", module.name if module else "?", e)
        finally:
            if module is not None and module.writer is writer:
                module.writer = None
                self._requeue(module)
            writer.close()

    def _authenticate(self, c: mqtt.Connect) -> tuple[_Module | None, int]:
        device, _, name = c.client_id.partition("/")
        module = self.modules.get(name) if device == self.device_id else None
        if module is None:
            log.warning("refused client %r: not a module of this deployment", c.client_id[:200])
            return None, 2
        resource = f"{self.hostname}/devices/{device}/modules/{name}"
        if not check_sas(c.password, resource, module.key, time.time()):
            log.warning("refused module %s: bad credentials", name)
            return None, 4
        return module, 0

    def _handle(self, m: _Module, w: mqtt.BufferedWriter, p: mqtt.Packet) -> None:
        if p.kind == mqtt.PUBLISH:
            msg = mqtt.parse_publish(p)
            self._on_publish(m, msg)
            if msg.qos:
                w.write(mqtt.ack(mqtt.PUBACK, msg.packet_id or 0))
        elif p.kind == mqtt.PUBACK:
            done = m.inflight.pop(mqtt.packet_id_of(p), None)
            if done is not None:
                m.counts["delivered"] += 1
                self._pump(m)
        elif p.kind == mqtt.SUBSCRIBE:
            packet_id, filters = mqtt.parse_subscribe(p)
            for topic, qos in filters:
                m.subscriptions[topic] = min(qos, 1)
            w.write(mqtt.ack(mqtt.SUBACK, packet_id, bytes(min(q, 1) for _, q in filters)))
            self._pump(m)
        elif p.kind == mqtt.UNSUBSCRIBE:
            packet_id, topics = mqtt.parse_unsubscribe(p)
            for topic in topics:
                m.subscriptions.pop(topic, None)
            w.write(mqtt.ack(mqtt.UNSUBACK, packet_id))
        elif p.kind == mqtt.PINGREQ:
            w.write(mqtt.encode(mqtt.PINGRESP, 0, b""))
        else:
            raise mqtt.ProtocolError(f"unexpected packet type {p.kind}")

    # messages ------------------------------------------------------------------------------------
    def _on_publish(self, m: _Module, msg: mqtt.Publish) -> None:
        topic = msg.topic
        if topic.startswith("$iothub/twin/"):
            self._twin(m, topic, msg.payload)
            return
        base = f"devices/{self.device_id}/modules/{m.name}/messages/events/"
        if not topic.startswith(base):
            log.warning("module %s published to %r: ignored", m.name, topic[:200])
            return
        app, system = parse_properties(topic[len(base) :].split("/", 1)[0])
        m.counts["sent"] += 1
        self.route(_Message(m.name, system.get("$.on", ""), msg.payload, app, system))

    def route(self, msg: _Message) -> int:
        """Send ``msg`` to each sink whose route accepts it (once per sink). -> sinks reached."""
        sinks: dict[tuple[str, str, str], float] = {}
        for route in self.routes.values():
            if route.accepts(msg.module, msg.output, msg.app, msg.system, msg.body):
                key = (route.sink.kind, route.sink.module or "", route.sink.input or "")
                ttl = route.time_to_live_secs if route.time_to_live_secs is not None else self.ttl
                sinks[key] = max(sinks.get(key, 0.0), float(ttl))
        for (kind, module, input_name), ttl in sinks.items():
            if kind == "upstream":
                self._write_upstream(msg)
            elif module in self.modules:
                target = self.modules[module]
                target.queue.append(
                    _Message(
                        msg.module,
                        msg.output,
                        msg.body,
                        msg.app,
                        msg.system,
                        msg.enqueued,
                        msg.enqueued + ttl,
                        input_name,
                    )
                )
                self._pump(target)
            else:
                log.warning("route to unknown module %s: message dropped", module)
        return len(sinks)

    def _write_upstream(self, msg: _Message) -> None:
        assert self._upstream is not None
        self._upstream.write(json.dumps(upstream_record(msg), separators=(",", ":")).encode() + b"\n")
        self._upstream.flush()
        self.upstream_count += 1

    def _pump(self, m: _Module) -> None:
        w = m.writer
        if w is None or m.paused:
            return
        if m.queue:
            wait = m.hold_until - time.monotonic()
            if wait > 0:
                assert self._loop is not None
                self._loop.call_later(wait + 0.01, self._pump, m)
                return
        now = time.time()
        while m.queue and len(m.inflight) < _WINDOW:
            msg = m.queue[0]
            topic = f"devices/{self.device_id}/modules/{m.name}/inputs/{msg.input}/"
            qos = max((q for f, q in m.subscriptions.items() if mqtt.topic_matches(f, topic + "x")), default=None)
            if qos is None:
                return  # not subscribed to this input (yet): wait
            m.queue.popleft()
            if msg.expires < now:
                m.counts["expired"] += 1
                continue
            packet_id = m.packet_id()
            m.inflight[packet_id] = msg
            w.write(
                mqtt.encode_publish(
                    mqtt.Publish(topic + encode_properties(msg.app, msg.system), msg.body, 1, packet_id)
                )
            )
            m.counts["received"] += 1

    def _requeue(self, m: _Module) -> None:
        """Unacknowledged messages go back to the front of the queue, in order."""
        for packet_id in sorted(m.inflight, reverse=True):
            m.queue.appendleft(m.inflight[packet_id])
        m.inflight.clear()

    def _send(self, m: _Module, topic: str, doc: Any) -> None:
        if m.writer is not None:
            payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            m.writer.write(mqtt.encode_publish(mqtt.Publish(topic, payload)))

    def _twin(self, m: _Module, topic: str, payload: bytes) -> None:
        rid = urllib.parse.parse_qs(topic.partition("?")[2]).get("$rid", [""])[0]
        if topic.startswith("$iothub/twin/GET/"):
            self._send(m, f"$iothub/twin/res/200/?$rid={rid}", {"desired": m.desired, "reported": m.reported})
            if not m.twin_read:  # inputs flow shortly after: the module applies its twin first
                m.twin_read = True
                m.hold_until = min(m.hold_until, time.monotonic() + 0.1)
                self._pump(m)
        elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
            try:
                patch = json.loads(payload)
                if not isinstance(patch, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._send(m, f"$iothub/twin/res/400/?$rid={rid}", b"")
                return
            merge_patch(m.reported, patch)
            m.reported["$version"] += 1
            self._send(m, f"$iothub/twin/res/204/?$rid={rid}&$version={m.reported['$version']}", b"")
        else:
            self._send(m, f"$iothub/twin/res/404/?$rid={rid}", b"")


def free_hub_address(port: int = 8883) -> str:
    """A loopback address (``127.13.x.1``) where ``port`` is free: the SDK always dials port 8883."""
    import socket

    for x in range(1, 250):
        host = f"127.13.{x}.1"
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return host
    raise OSError(f"no free loopback address for port {port}")
