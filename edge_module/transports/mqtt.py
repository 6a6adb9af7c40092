"""Scoring over plain MQTT (Mosquitto, EMQX, HiveMQ...): requests in on a topic filter, results out.

Flow: one paho client (its network thread: ``loop_start``) subscribes with QoS 1 to
``request_topic`` (default ``edgepack/<service>/score/request/#``); received messages go to a queue
that one worker thread drains in micro-batches: what queued while the previous batch ran, up to
``max_batch`` (and, with ``max_wait_ms`` > 0, waiting that long for more while under it). ONNX apps
(``parse``/``respond``) score a batch's requests for the same model and row shape in one run; other
apps call ``app.score`` per message. Payloads are the ``/score`` JSON bodies; a JSON object whose
``"inputs"`` is a list is a V2 infer request (JSON tensors; ``"model_name"`` picks the model when
several are served).

Replies:

- MQTT 5 request with a response topic: the result goes there with the request's correlation data,
  body exactly as HTTP ``/score`` answers.
- Otherwise (MQTT 3.1.1, or 5 without a response topic): to ``response_topic`` (default
  ``edgepack/<service>/score/response/{id}``) with the id echoed in the JSON (``{"id": ..., <the
  answer's keys>}``; a non-object answer becomes ``{"id": ..., "result": ...}``).
- Errors (malformed JSON, wrong shape, oversize, a failing model...) always go to ``error_topic``
  (default ``edgepack/<service>/score/error/{id}``) as ``{"id", "status", "error", "topic"}``; an
  MQTT 5 requester with a response topic also gets that error there (user property ``status``).

The request id: MQTT 5 correlation data, else the topic levels under the filter's ``#``
(``.../request/<id>``), else the JSON field ``"id"`` or ``"request_id"`` (removed from a ``/score``
body before scoring). No id: replies go to the templates with ``{id}`` empty.

Reliability. The session is persistent (3.1.1 ``clean_session=False``; 5: ``clean_start=False`` and
``session_expiry``), so the broker keeps requests while the scorer is away; paho reconnects with
backoff (``reconnect_min``..``reconnect_max`` s). Every reply is first written to an on-disk
:class:`~edge_module.transports.spool.Spool` and removed only when the broker's PUBACK for it
arrives; at most ``max_inflight`` replies are unacknowledged at a time, and after a reconnect the
ones paho re-sends are acknowledged before newer ones go out (order is kept). Requests redelivered
by the broker (our PUBACK lost in an outage) are recognised by request id among the last
``dedupe_window`` ones and not scored again (counted as ``duplicates``).

What "exactly one result" means: paho acknowledges a request when it hands it over (1.6 has no
manual ack), so a request is the scorer's once received. Across broker outages every received
request gets one reply; the broker may deliver a reply twice to the requester only where MQTT QoS 1
allows (our publish reached the broker but its PUBACK did not reach us), and the requester tells
them apart by id. A process crash loses requests received but not yet scored (replies already in
the spool are sent after the restart, possibly again). Not covered: the broker dropping messages
because of its own limits: raise Mosquitto's ``max_queued_messages`` (default 1000 per client, the
excess is dropped silently) and ``max_inflight_messages`` (default 20: caps throughput); see
``benchmarks/README.md``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import select
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from edge_module.protocol.errors import as_scoring_error
from edge_module.protocol.v2 import decode_request, encode_response, input_table
from edge_module.runtime import BadInputError, Request, Response, ScoringApp, ScoringError
from edge_module.transports import paho_compat as pc
from edge_module.transports.batch_scoring import score_requests
from edge_module.transports.settings import MqttSettings
from edge_module.transports.spool import Record, Spool, SpoolFull

log = logging.getLogger("edgepack.mqtt")

_V2_HINT = re.compile(rb'"inputs"\s*:\s*\[')
_ERROR_TEXT_LIMIT = 4096
_TOPIC_UNSAFE = str.maketrans({"+": "_", "#": "_", "\0": "_"})


@dataclass
class _Incoming:
    """A received request and where its answer goes."""

    topic: str
    payload: bytes
    received: float
    response_topic: str | None = None
    correlation_data: bytes | None = None
    content_type: str | None = None
    user: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    echo: bool = True  # echo the id in the JSON (no MQTT 5 response topic)


class MqttTransport:
    """Serves ``app`` over MQTT. ``start()`` returns at once (connecting goes on in the background).

    One thread does everything: it drives paho through its external-loop API (``loop_read``,
    ``loop_write``, ``loop_misc`` around one ``select``), scores what each read brought in and
    publishes the replies, so no message crosses a thread and no lock is taken per message.

    ``load=True``: that thread calls ``app.load()`` first and connects only then (requests wait at
    the broker); ``False``: the caller has loaded the app (e.g. the HTTP server in the same process).
    ``load_error``: the caller's ``load()`` failed with this error; requests get it in a 503 reply.
    ``metrics``: any object with ``observe(route, method, status, seconds)``, called per request from
    the transport's thread with route ``"mqtt"``.

    Failure: a bad message or a damaged spool record is answered or skipped (and logged); an error
    that escapes the loop (a bug, the disk full, an unsafe spool file) ends the thread for good: it
    is logged, :attr:`error` says what happened and ``on_failure(error)`` is called from that
    thread (the HTTP server then reports not ready and exits with code 3: see
    :mod:`edge_module.transports.hosted`)."""

    def __init__(
        self,
        app: ScoringApp,
        settings: MqttSettings | None = None,
        metrics: Any = None,
        *,
        load: bool = True,
        load_error: str | None = None,
        on_failure: Callable[[str], None] | None = None,
    ):
        self.app = app
        self.on_failure = on_failure
        self._failure: str | None = None  # why the thread ended for good
        self.settings = s = settings or MqttSettings()
        self.metrics = metrics
        self._load = load and load_error is None
        self._statuses: list[int] = []  # what each request of the batch being handled came to (metrics)
        self._filter = s.topic(s.request_topic)
        self._filter_levels = self._filter.split("/")
        self._response_template = s.topic(s.response_topic)
        self._error_template = s.topic(s.error_topic)
        self._v5 = s.protocol == 5
        self._received: list[Any] = []  # paho messages read and not handled yet
        self._acks: list[int] = []  # mids paho reported acknowledged
        self._inflight: dict[int, int] = {}  # paho mid -> spool seq
        self._resending = False  # after a reconnect: wait for paho's re-sends before new replies
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._counts = dict.fromkeys(
            ("received", "scored", "errors", "duplicates", "published", "batches", "connects", "disconnects"), 0
        )
        self._max_batch_seen = 0
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._load_error: str | None = load_error  # the host's load() failed: every request gets a 503
        self._v2_tables: dict[int, Any] = {}
        self._attempts = 0  # failed connection attempts in a row
        self._next_attempt = 0.0  # monotonic time of the next one
        self._outage_logged = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.spool: Spool | None = None
        self.client: Any = None
        self._worker: threading.Thread | None = None

    # life -----------------------------------------------------------------------------------
    def start(self) -> MqttTransport:
        self.spool = Spool(
            self.settings.effective_spool_dir,
            max_entries=self.settings.spool_max,
            max_bytes=self.settings.spool_max_bytes,
            fsync=self.settings.spool_fsync,
        )
        if len(self.spool):
            log.info("%d replies from an earlier run wait in the spool; they go out once connected", len(self.spool))
        self.client = self._create_client()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._worker = threading.Thread(target=self._run, name="edgepack-mqtt", daemon=True)
        self._worker.start()
        return self

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Wait until connected and subscribed (raise TimeoutError)."""
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"not connected and subscribed to {self.settings.url} within {timeout} s")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def error(self) -> str | None:
        """None while the transport works (connected or reconnecting); why it stopped for good once it has."""
        return self._failure

    @property
    def request_filter(self) -> str:
        """The topic filter requests are read from."""
        return self._filter

    def stop(self, timeout: float = 10.0) -> None:
        """Score what was received and send the spool (up to ``timeout`` s), then disconnect. Replies
        still unsent stay in the spool for the next start."""
        if self._worker is None:
            return
        self._stopping.set()
        self._wake()
        self._worker.join(timeout)
        if self._worker.is_alive():
            self._abandon.set()
            self._wake()
            self._worker.join(5)
        left = len(self._received)
        if left:
            log.error("stopping with %d request(s) not scored: the stop timeout of %.1f s ran out", left, timeout)
        if self.spool is not None:
            if len(self.spool):
                log.warning("%d replies stay in the spool %s for the next start", len(self.spool), self.spool.directory)
            self.spool.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._worker = None

    def __enter__(self) -> MqttTransport:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Counts, plus ``queued`` (received, not scored), ``spooled`` (replies not acknowledged),
        ``inflight``, ``connected``, ``max_batch`` (the largest batch so far) and ``spool_lost``
        (spooled replies skipped as damaged)."""
        spool = self.spool
        return {
            **self._counts,
            "queued": len(self._received),
            "spooled": len(spool) if spool is not None else 0,
            "inflight": len(self._inflight),
            "connected": self.connected,
            "max_batch": self._max_batch_seen,
            "spool_lost": spool.lost if spool is not None else 0,
        }

    # paho -------------------------------------------------------------------------------------
    def _create_client(self) -> Any:
        s = self.settings
        client = pc.new_client(s.effective_client_id, pc.MQTT_V5 if self._v5 else pc.MQTT_V311, clean_session=False)
        if s.address[2]:
            pc.use_tls(client, s.ca_file, s.cert_file, s.key_file)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        client.max_inflight_messages_set(0)  # _pump keeps max_inflight; paho counting too costs O(n) per PUBACK
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        host, port, _ = s.address
        if self._v5:  # only sets the parameters: every attempt is a reconnect()
            props = pc.connect_properties(s.session_expiry)
            client.connect_async(host, port, s.keepalive, clean_start=False, properties=props)
        else:
            client.connect_async(host, port, s.keepalive)
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, *props: Any) -> None:
        code = pc.reason_value(rc)
        if code != 0:
            log.warning("the broker %s refused the connection: %s", self.settings.url, pc.error_string(rc))
            return
        self._counts["connects"] += 1
        self._attempts = 0
        self._outage_logged = False
        present = flags.get("session present") if isinstance(flags, dict) else getattr(flags, "session_present", None)
        log.info("connected to %s (session present: %s)", self.settings.url, bool(present))
        if self._inflight:
            self._resending = True
        client.subscribe(self._filter, qos=self.settings.qos)
        self._connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, granted: Any, *props: Any) -> None:
        codes = [pc.reason_value(g) for g in (granted if isinstance(granted, list | tuple) else [granted])]
        if any(c >= 0x80 for c in codes):
            log.error("the broker refused the subscription to %r (codes %s)", self._filter, codes)
            return
        if not self._subscribed.is_set():
            log.info("subscribed to %s on %s", self._filter, self.settings.url)
        self._subscribed.set()

    def _on_disconnect(self, client: Any, userdata: Any, rc: Any, *props: Any) -> None:
        self._connected.clear()
        self._subscribed.clear()
        self._counts["disconnects"] += 1
        self._schedule_reconnect()
        if not self._stopping.is_set():
            log.warning("disconnected from %s (%s): reconnecting", self.settings.url, pc.error_string(rc))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self._received.append(msg)

    def _on_publish(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        self._acks.append(mid)

    def _wake(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # full (a wake-up is pending anyway), closed, unstarted
            self._wake_w.send(b"\0")  # type: ignore[union-attr]

    # the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            self._failure = f"{type(exc).__name__}: {exc}"
            log.critical("the MQTT transport stopped for good: %s", self._failure, exc_info=True)
            if self.on_failure is not None:
                try:
                    self.on_failure(self._failure)
                except Exception:
                    log.exception("reporting the MQTT transport's failure failed")

    def _serve(self) -> None:
        if self._load:
            try:
                self.app.load()
            except Exception as exc:
                log.exception("load() failed; requests get an error reply until the service is fixed")
                self._load_error = f"{type(exc).__name__}: {exc}"
        spool = self.spool
        assert spool is not None
        blocked: list[Record] = []  # replies waiting for room in the spool: no scoring meanwhile
        try:
            while not self._abandon.is_set():
                if self.client.socket() is None:
                    if self._stopping.is_set():
                        break  # not connected: what is spooled stays for the next start
                    self._try_connect()
                    continue
                self._settle_acks()
                blocked = self._store(blocked)
                self._pump()
                if self._stopping.is_set() and not self._received and not blocked and not len(spool):
                    break
                if blocked:
                    self._io(0.005)  # acknowledgements make room
                    continue
                batch = self._gather(0.2)
                while batch:
                    chunk, batch = batch[: self.settings.max_batch], batch[self.settings.max_batch :]
                    started = time.perf_counter()
                    try:
                        replies = self._handle(chunk)
                    except Exception:  # a bug of ours: say so and keep serving the messages after these
                        log.exception("handling %d MQTT message(s) failed; they get no reply", len(chunk))
                        replies, self._statuses = [], [500] * len(chunk)
                    blocked = self._store(replies)
                    self._observe(chunk, time.perf_counter() - started)
                    if blocked:
                        self._received[:0] = batch  # scored later, in order, once the spool has room
                        break
        finally:
            self._disconnect()

    def _io(self, timeout: float) -> None:
        """One round of network work: wait up to ``timeout`` s for the socket (or a wake-up), read
        what is there (messages land in ``_received``, acknowledgements in ``_acks``), write what is queued."""
        client = self.client
        sock = client.socket()
        if sock is None:
            return
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted wait in the SSL object
        if pending is not None and pending() > 0:
            timeout = 0.0
        try:
            readable, writable, _ = select.select(
                [sock, self._wake_r], [sock] if client.want_write() else [], [], timeout
            )
        except (OSError, ValueError):  # the socket was closed under us: paho notices below
            readable, writable = [sock], []
        if self._wake_r in readable:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
        if sock in readable or (pending is not None and pending() > 0):
            client.loop_read()
        if client.socket() is not None and (writable or client.want_write()):
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()

    def _gather(self, idle: float) -> list[Any]:
        """Messages to score: what one read brought in (waiting up to ``idle`` s for any), and with
        ``max_wait_ms`` > 0 what more arrives within that time, up to ``max_batch``."""
        s = self.settings
        if not self._received:
            self._io(idle)
        if self._received and s.max_wait_ms > 0 and len(self._received) < s.max_batch:
            deadline = time.monotonic() + s.max_wait_ms / 1000.0
            while len(self._received) < s.max_batch and self.client.socket() is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._io(remaining)
        batch = self._received.copy()
        self._received.clear()
        return batch

    def _try_connect(self) -> None:
        """Connect when the backoff allows (else wait for it, or for a wake-up)."""
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._wake_r], [], [], min(wait, 0.5))
            return
        try:
            self.client.reconnect()
        except Exception as exc:  # OSError (refused, unreachable, TLS), socket.gaierror, ...
            if not self._outage_logged:
                log.warning("cannot connect to %s (%s): retrying with backoff", self.settings.url, exc)
                self._outage_logged = True
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        s = self.settings
        delay = min(s.reconnect_max, s.reconnect_min * 2 ** min(self._attempts, 16))
        self._attempts += 1
        self._next_attempt = time.monotonic() + delay

    def _disconnect(self) -> None:
        client = self.client
        if client.socket() is None:
            return
        self._stopping.set()
        client.disconnect()  # queues DISCONNECT; writing it closes the socket
        deadline = time.monotonic() + 1.0
        while client.socket() is not None and time.monotonic() < deadline:
            self._io(0.05)
        self._connected.clear()
        self._subscribed.clear()

    def _store(self, replies: list[Record]) -> list[Record]:
        """Append replies to the spool; what does not fit comes back (the loop waits for acks)."""
        if not replies:
            return replies
        spool = self.spool
        assert spool is not None
        room = spool.room()
        try:
            spool.append(replies[:room])
        except SpoolFull:
            return replies
        if room < len(replies):
            log.warning("the spool is full (%d replies): scoring waits for the broker", len(spool))
        return replies[room:]

    def _settle_acks(self) -> None:
        if not self._acks:
            return
        acks, self._acks = self._acks, []
        inflight = self._inflight
        seqs = [seq for seq in map(inflight.pop, acks, [None] * len(acks)) if seq is not None]
        self._counts["published"] += len(seqs)
        self.spool.ack(seqs)  # type: ignore[union-attr]
        if self._resending and not inflight:
            self._resending = False

    def _pump(self) -> None:
        """Hand spooled replies to paho while connected, at most ``max_inflight`` unacknowledged."""
        if not self.connected or self._resending:
            return
        room = self.settings.max_inflight - len(self._inflight)
        if room <= 0:
            return
        qos = self.settings.qos
        for rec in self.spool.take(room):  # type: ignore[union-attr]
            props = None
            if self._v5:
                props = pc.packed_publish_properties(rec.correlation_data, rec.content_type, rec.user_properties)
            info = self.client.publish(rec.topic, rec.payload, qos, properties=props)
            if info.rc not in (pc.ERR_SUCCESS, pc.ERR_NO_CONN):
                log.error("paho refused to publish to %r (rc %s): retrying after a reconnect", rec.topic, info.rc)
                self.spool.rewind()  # type: ignore[union-attr]
                return
            self._inflight[info.mid] = rec.seq

    def _observe(self, batch: list[Any], seconds: float) -> None:
        n = len(batch)
        self._counts["batches"] += 1
        if n > self._max_batch_seen:
            self._max_batch_seen = n
        statuses, self._statuses = self._statuses, []
        if self.metrics is not None:
            for status in statuses:
                self.metrics.observe("mqtt", "PUBLISH", status, seconds)

    # scoring ----------------------------------------------------------------------------------
    def _handle(self, batch: list[Any]) -> list[Record]:
        """Replies (results and errors) for a batch of paho messages, in order."""
        self._counts["received"] += len(batch)
        out: list[list[Record]] = [[] for _ in batch]
        pending: list[tuple[int, _Incoming, Request]] = []
        for i, msg in enumerate(batch):
            inc = self._incoming(msg)
            if inc is None:
                continue
            checked = self._check(inc)
            if isinstance(checked, Request):
                pending.append((i, inc, checked))
            else:
                out[i] = checked
        outcomes = score_requests(self.app, [request for _, _, request in pending])
        for (i, inc, _), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, ScoringError):
                out[i] = self._error(inc, outcome.status, str(outcome))
            else:
                out[i] = self._result(inc, outcome)
        return [r for replies in out for r in replies]

    def _incoming(self, msg: Any) -> _Incoming | None:
        """The request's addressing and id; None for a redelivered duplicate."""
        inc = _Incoming(msg.topic, bytes(msg.payload), time.perf_counter())
        props = getattr(msg, "properties", None)
        if props is not None:
            inc.response_topic = getattr(props, "ResponseTopic", None) or None
            inc.correlation_data = getattr(props, "CorrelationData", None) or None
            inc.content_type = getattr(props, "ContentType", None) or None
            users = getattr(props, "UserProperty", None)
            if users:
                inc.user = {str(k).lower(): str(v) for k, v in users}
        if inc.correlation_data is not None:
            inc.id = _text_id(inc.correlation_data)
        else:
            inc.id = self._topic_id(inc.topic)
        inc.echo = inc.response_topic is None
        if inc.id is not None and not self._first_time(inc):
            self._counts["duplicates"] += 1
            log.debug("request %r on %r is a redelivery: already answered", inc.id, inc.topic)
            return None
        return inc

    def _topic_id(self, topic: str) -> str | None:
        levels = self._filter_levels
        if levels[-1] != "#":
            return None
        rest = topic.split("/")[len(levels) - 1 :]
        return "/".join(rest) or None

    def _first_time(self, inc: _Incoming) -> bool:
        key = (inc.response_topic or inc.topic, inc.id or "")
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.settings.dedupe_window:
            self._seen.popitem(last=False)
        return True

    def _check(self, inc: _Incoming) -> Request | list[Record]:
        s = self.settings
        if len(inc.payload) > s.max_payload:
            return self._error(inc, 413, f"the request is {len(inc.payload)} bytes, over the limit of {s.max_payload}")
        if self._load_error is not None:
            return self._error(inc, 503, f"the model failed to load: {self._load_error}")
        body = inc.payload
        if b'id"' in body:
            had_id = inc.id is not None
            try:
                body = self._json_id(inc, body)
            except BadInputError as exc:
                return self._error(inc, 400, str(exc))
            if not had_id and inc.id is not None and not self._first_time(inc):
                self._counts["duplicates"] += 1
                return []
        if _V2_HINT.search(body):
            return self._score_v2(inc, body)
        return Request(body, inc.content_type or "application/json", headers=inc.user)

    @staticmethod
    def _json_id(inc: _Incoming, body: bytes) -> bytes:
        """The request id from ``"request_id"``/``"id"`` when the message had none; a ``/score`` body
        loses those keys (the app would refuse them), a V2 body keeps ``id`` (part of the protocol)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadInputError(f"malformed JSON: {exc}") from None
        if type(doc) is not dict:
            return body
        v2 = isinstance(doc.get("inputs"), list)
        changed = False
        for key in ("request_id", "id"):
            value = doc.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                if inc.id is None:
                    inc.id = str(value)
                if not (v2 and key == "id"):
                    del doc[key]
                    changed = True
        return orjson.dumps(doc) if changed else body

    def _score_v2(self, inc: _Incoming, body: bytes) -> list[Record]:
        """A V2 infer request (JSON tensors) against the model named by ``model_name`` (or the only one)."""
        try:
            doc = orjson.loads(body)
            models = self.app.models()
            name, version = doc.get("model_name"), doc.get("model_version")
            chosen = [
                m for m in models if (name is None or m.name == name) and (version is None or m.version == version)
            ]
            if not models:
                raise BadInputError("this service has no V2 models: send a /score body")
            if len(chosen) != 1:
                listing = ", ".join(sorted({m.name for m in models}))
                if name is None:
                    raise BadInputError(f'several models are served: name one with "model_name"; models: {listing}')
                raise BadInputError(f"unknown model {name!r} (version {version!r}); models: {listing}")
            runtime = chosen[0]
            table = self._v2_tables.get(id(runtime))
            if table is None:
                table = self._v2_tables[id(runtime)] = input_table(runtime.inputs)
            request = decode_request(body, None, table)
            results = runtime.predict(request.inputs)
            payload, _ = encode_response(runtime.name, runtime.version, request, results)
        except orjson.JSONDecodeError as exc:
            return self._error(inc, 400, f"malformed JSON: {exc}")
        except Exception as exc:
            error = as_scoring_error(exc, "V2 inference")
            return self._error(inc, error.status, str(error))
        self._counts["scored"] += 1
        self._statuses.append(200)
        return [self._reply(inc, payload, "application/json")]

    # replies ----------------------------------------------------------------------------------
    def _result(self, inc: _Incoming, response: Response) -> list[Record]:
        body = response.body.encode("utf-8") if isinstance(response.body, str) else bytes(response.body)
        if response.status >= 400:
            return self._error(inc, response.status, body.decode("utf-8", "replace"))
        self._counts["scored"] += 1
        self._statuses.append(200)
        return [self._reply(inc, body, response.content_type)]

    def _reply(self, inc: _Incoming, body: bytes, content_type: str | None) -> Record:
        if inc.response_topic is not None:
            return Record(inc.response_topic, body, inc.correlation_data, content_type if self._v5 else None)
        if inc.echo:
            body = _with_id(inc.id, body, content_type)
        topic = _fill(self._response_template, inc.id)
        return Record(topic, body, inc.correlation_data, "application/json" if self._v5 else None)

    def _error(self, inc: _Incoming, status: int, text: str) -> list[Record]:
        self._counts["errors"] += 1
        self._statuses.append(status)
        text = text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "..."
        log.info("request %s on %r: error %d: %s", inc.id, inc.topic, status, text)
        doc = orjson.dumps({"id": inc.id, "status": status, "error": text, "topic": inc.topic})
        user = (("status", str(status)),) if self._v5 else ()
        ctype = "application/json" if self._v5 else None
        replies = [Record(_fill(self._error_template, inc.id), doc, inc.correlation_data, ctype, user)]
        if inc.response_topic is not None:
            replies.append(Record(inc.response_topic, doc, inc.correlation_data, ctype, user))
        return replies


def _text_id(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.hex()


def _fill(template: str, request_id: str | None) -> str:
    if request_id is None:
        return template.replace("/{id}", "").replace("{id}", "")
    return template.replace("{id}", request_id.translate(_TOPIC_UNSAFE))


def _with_id(request_id: str | None, body: bytes, content_type: str | None) -> bytes:
    """``body`` with ``"id"`` first: spliced into a JSON object, else ``{"id": ..., "result": ...}``."""
    rid = orjson.dumps(request_id)
    if body[:1] == b"{":
        rest = body[1:].lstrip()
        return b'{"id":' + rid + (b"}" if rest[:1] == b"}" else b"," + rest)
    json_body = (content_type or "application/json").split(";", 1)[0].strip().lower().endswith("json")
    result = body if json_body and body.strip() else orjson.dumps(body.decode("utf-8", "replace"))
    return b'{"id":' + rid + b',"result":' + result + b"}"


# a small client ------------------------------------------------------------------------------


def mqtt_request(
    url: str,
    topic: str,
    payload: bytes | str | Mapping[str, Any],
    timeout: float = 10.0,
    *,
    protocol: int = 5,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Publish one scoring request (QoS 1) and wait for its answer.

    MQTT 5: ``topic`` is any topic under the service's request filter (e.g.
    ``edgepack/<service>/score/request``); the answer comes on a private response topic with the
    correlation data. 3.1.1: the request goes to ``<topic>/<id>`` and the answer is read from the
    topics that replace ``/request`` by ``/response`` and ``/error``. Returns the answer's JSON;
    raises :class:`ScoringError` (with the status) for an error reply and TimeoutError."""
    settings = MqttSettings(
        url=url,
        protocol=protocol,
        username=username,
        password=password,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
    )
    body = (
        payload
        if isinstance(payload, bytes)
        else payload.encode()
        if isinstance(payload, str)
        else orjson.dumps(payload)
    )
    rid = request_id or uuid.uuid4().hex
    v5 = protocol == 5
    client = pc.new_client(f"edgepack-request-{rid[:16]}", pc.MQTT_V5 if v5 else pc.MQTT_V311, clean_session=True)
    host, port, tls = settings.address
    if tls:
        pc.use_tls(client, ca_file, cert_file, key_file)
    if username is not None:
        client.username_pw_set(username, password)
    answer: queue.SimpleQueue[Any] = queue.SimpleQueue()
    if v5:
        reply_topics = [f"edgepack/client/{rid}/response"]
        request_topic = topic
    else:
        base = topic.rstrip("/")
        if "/request" not in base:
            raise ValueError(f"MQTT 3.1.1 request topics must contain /request (got {topic!r})")
        reply_topics = [
            base.replace("/request", "/response", 1) + f"/{rid}",
            base.replace("/request", "/error", 1) + f"/{rid}",
        ]
        request_topic = f"{base}/{rid}"

    def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, *props: Any) -> None:
        if pc.reason_value(rc) != 0:
            answer.put(ConnectionError(f"the broker refused the connection: {pc.error_string(rc)}"))
            return
        c.subscribe([(t, 1) for t in reply_topics])

    def on_subscribe(c: Any, userdata: Any, mid: int, granted: Any, *props: Any) -> None:
        properties = pc.publish_properties(rid.encode(), reply_topics[0], "application/json") if v5 else None
        c.publish(request_topic, body, 1, properties=properties)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = lambda c, userdata, msg: answer.put(msg)
    client.connect(host, port, 30)
    client.loop_start()
    try:
        got = answer.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"no answer on {reply_topics[0]} within {timeout} s") from None
    finally:
        client.disconnect()
        client.loop_stop()
    if isinstance(got, Exception):
        raise got
    doc = orjson.loads(got.payload)
    props = getattr(got, "properties", None)
    users = dict(getattr(props, "UserProperty", None) or []) if props is not None else {}
    is_error = "/error" in got.topic or "status" in users
    if is_error and isinstance(doc, dict) and "error" in doc:
        raise ScoringError(str(doc["error"]), int(doc.get("status") or 500))
    return doc
