"""Scoring on the IoT Edge hub: module input messages in, results out, settings from the module twin.

Flow: ``IoTHubModuleClient`` (azure-iot-device, MQTT over TLS to edgeHub on port 8883) delivers the
messages routed to the module's inputs. Messages on ``input_name`` (``input1``) are scored with the
app's ``/score`` contract (message body = request body, the message's content type or JSON) and the
answer goes out with ``send_message_to_output(..., output_name)`` (``output1``), keeping the input's
custom properties and its correlation id (the input's correlation id, else its message id). A
message that cannot be scored (malformed JSON, wrong shape, over ``max_message_bytes``, another
input, a failing model) gets an error message on ``error_output`` (``error``): a JSON body
``{"error": "...", "status": 400, "input": ..., "correlation_id": ..., "message_id": ...}`` with the
same properties plus ``error_status``. The loop always goes on.

Threads: the SDK's MQTT thread only queues input messages (straight from its paho client, without the
SDK's receive pipeline, see :mod:`~edge_module.transports.iotedge_publish`); one scoring thread scores them (several
queued messages in one model run for ONNX apps when ``max_batch_size`` > 1) and applies twin
changes between batches (so a model switch never overlaps scoring); one sender thread publishes the
answers, in order, straight on the SDK's MQTT connection with up to 256 unacknowledged
(:mod:`~edge_module.transports.iotedge_publish`: the SDK's topic and property encoding without its
per-message pipeline, which cost more CPU than scoring); when the SDK's layout is not the known one,
``send_threads`` threads use ``send_message_to_output`` (one keeps the order; ~1 ms per acknowledged
send); a twin thread connects, reads the twin and reports.

Nothing lost across outages: the SDK keeps a persistent session (``clean_session=False``) and
subscribes with QoS 1, so edgeHub (or an MQTT broker with persistence) keeps the module's messages
while it is disconnected. Results wait in memory and are sent again until edgeHub acknowledges
them (at-least-once: a result whose acknowledgement was lost is sent twice; published ones stay in
the MQTT client's session and go out again after a reconnect; ``sent`` counts acknowledgements). Not covered: messages
the SDK acknowledged and handed over but not yet answered when the process dies (the SDK acks on
receipt), or left when ``stop()`` runs out of grace (logged with their count).

Module twin, desired properties (applied without a restart; a ``null`` restores the default):

==========================  =====================================================================
``max_batch_size``          whole number >= 1: queued messages scored in one model run (ONNX apps)
``threshold``               number: results get the properties ``max_score`` (the largest number
                            in the first output) and ``above_threshold`` (``"true"``/``"false"``,
                            ``max_score >= threshold``), for routes such as ``WHERE
                            above_threshold = 'true'``
``drop_below_threshold``    true: results under the threshold are counted (``below_threshold``)
                            and not sent (a filter module); default false
``model_version``           which version of each model answers (``"2"``, ``"mlp:2"``,
                            ``{"mlp": "2"}``; ``null``: the latest; see
                            :mod:`~edge_module.transports.model_switch`), for an app declaring
                            :class:`~edge_module.runtime.VersionSelection` (the ONNX scorer: every
                            version in the image is loaded, the switch is instant and also applies
                            to HTTP ``/score`` in the same process); or passed to a ``reconfigure``
                            hook (see :data:`Reconfigure`). An unknown model or version is reported
                            under ``error`` and the previous version keeps serving; for an entry
                            script it is reported under ``ignored`` with the reason
==========================  =====================================================================

Other keys are reported back under ``ignored`` with the reason, as are invalid values.
Reported properties: ``status`` (``loading``/``ready``/``failed``), ``error`` (why it failed, or
why the last reconfiguration failed), ``models`` (``{name: {"version": v}}``), ``settings`` (what is
applied), ``desired_version``, ``ignored``, ``counts`` (``received``, ``scored``, ``errors``,
``below_threshold``, ``sent``, ``send_retries``; every ``report_interval``), ``last_error``.

Connecting: in an IoT Edge module (no ``connection_string``) the client comes from
``IoTHubModuleClient.create_from_edge_environment()``, which reads the variables the IoT Edge
runtime sets (``IOTEDGE_IOTHUBHOSTNAME``, ``IOTEDGE_DEVICEID``, ``IOTEDGE_MODULEID``,
``IOTEDGE_GATEWAYHOSTNAME``, ``IOTEDGE_MODULEGENERATIONID``, ``IOTEDGE_WORKLOADURI``,
``IOTEDGE_APIVERSION``) and signs its SAS tokens and gets edgeHub's CA through the workload API
(or, in the VS Code simulator, ``EdgeHubConnectionString`` and ``EdgeModuleCACertificateFile``).
Elsewhere (tests, a transparent gateway) give a module connection string
``HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...;GatewayHostName=...`` and the
gateway's CA as ``server_verification_cert`` (PEM text).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from edge_module.runtime import Request, Response, ScoringApp, ScoringError, VersionSelection
from edge_module.transports.batch_scoring import score_requests
from edge_module.transports.iotedge_publish import DirectOutputs, sdk_transport
from edge_module.transports.model_switch import cannot_switch_reason, version_hook
from edge_module.transports.settings import IotEdgeSettings

log = logging.getLogger("edgepack.iotedge")

_ERROR_TEXT_LIMIT = 4096
_RESERVED_PROPERTIES = ("max_score", "above_threshold", "error_status")
_MAX_VERSION_NAMES = 64
_DIRECT_WINDOW = 256  # results published and not yet acknowledged (direct outputs)

Reconfigure = Callable[[dict[str, Any]], ScoringApp | None]
"""The hook for desired ``model_version``: called on the scoring thread (no message is being scored)
with ``{"model_version": value}`` (``None`` when the property was removed) each time it changes.
It returns a loaded app to score with from then on, or ``None`` when it changed the current app in
place. When it raises, the current app keeps scoring and the error is reported (``error``)."""


@dataclass(frozen=True)
class Tuning:
    """What the twin's desired properties set (see the module doc)."""

    max_batch_size: int = 1
    threshold: float | None = None
    drop_below_threshold: bool = False
    model_version: str | dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "threshold": self.threshold,
            "drop_below_threshold": self.drop_below_threshold,
            "model_version": copy.deepcopy(self.model_version),
        }


@dataclass
class _Desired:
    doc: dict[str, Any]
    full: bool  # the whole desired document (from get_twin) rather than a patch


@dataclass
class _Outgoing:
    message: Any  # azure.iot.device.Message
    output: str
    is_error: bool = False
    source: Any = None  # the input message, to answer with an error if this one cannot be sent
    status: int = 200  # what the message came to (metrics)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _twin_key(name: str) -> str:
    """Twin property names cannot hold ``. $ #`` or spaces."""
    return "".join("_" if c in ".$# " else c for c in name) or "_"


def reported_patch(sent: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """The reported-properties patch turning ``sent`` into ``state`` (removed keys → ``None``)."""
    patch: dict[str, Any] = {}
    for key, value in state.items():
        old = sent.get(key, _Missing)
        if isinstance(value, dict) and isinstance(old, dict):
            sub = reported_patch(old, value)
            if sub:
                patch[key] = sub
        elif old is _Missing or old != value:
            patch[key] = value
    for key in sent:
        if key not in state:
            patch[key] = None
    return patch


class _Missing:
    pass


def max_score(body: bytes | str) -> float | None:
    """The largest number in a JSON answer's first output (``{"output": [[...]]}`` → its max); None if none."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict):
        doc = next(iter(doc.values()), None)
    try:
        array = np.asarray(doc, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if array.size == 0:
        return None
    value = float(np.nanmax(array)) if not np.all(np.isnan(array)) else math.nan
    return None if math.isnan(value) else value


class IotEdgeTransport:
    """Serves ``app`` on the IoT Edge hub. ``start()`` returns at once; ``stop()`` drains and disconnects.

    ``load=True``: the transport calls ``app.load()`` on its scoring thread (messages wait meanwhile);
    ``False``: the caller has loaded it (e.g. the HTTP server in the same process did).

    ``reconfigure``: the hook for ``model_version``; by default, for an app declaring
    :class:`~edge_module.runtime.VersionSelection`, a switch of its served versions in place
    (:func:`~edge_module.transports.model_switch.version_hook`). ``cannot_switch``: the reason a
    ``model_version`` is ignored instead (no hook is used then)."""

    def __init__(
        self,
        app: ScoringApp,
        settings: IotEdgeSettings | None = None,
        reconfigure: Reconfigure | None = None,
        *,
        load: bool = True,
        load_error: str | None = None,
        metrics: Any = None,
        cannot_switch: str | None = None,
    ):
        self.app = app
        self.metrics = metrics
        self._preset_error = load_error
        self._statuses: list[int] = []  # of the batch just handled, for metrics
        self.settings = settings or IotEdgeSettings()
        if reconfigure is None and cannot_switch is None:
            cannot_switch = cannot_switch_reason(app)
            if cannot_switch is None:
                reconfigure = version_hook(app)  # type: ignore[arg-type]  # cannot_switch_reason: it is one
        self.reconfigure = None if cannot_switch is not None else reconfigure
        self.cannot_switch = cannot_switch
        self.tuning = Tuning(max_batch_size=self.settings.max_batch_size)
        self.client: Any = None
        self._direct: DirectOutputs | None = None
        self._load = load
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._outbox: queue.Queue[_Outgoing | None] = queue.Queue()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("received", "scored", "errors", "below_threshold", "sent", "send_retries"), 0)
        self._desired: dict[str, Any] = {}
        self._desired_version: int | None = None
        self._reported: dict[str, Any] = {
            "status": "loading",
            "error": None,
            "models": {},
            "settings": self.tuning.to_dict(),
            "desired_version": None,
            "ignored": {},
            "last_error": None,
            "routes": {
                "input": self.settings.input_name,
                "output": self.settings.output_name,
                "error_output": self.settings.error_output,
            },
        }
        self._reported_sent: dict[str, Any] = {}
        self._report_wake = threading.Event()
        self._stopping = threading.Event()  # finish what is queued, then end
        self._abandon = threading.Event()  # end now (the stop grace ran out)
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._connected = threading.Event()
        self._threads: list[threading.Thread] = []

    # life -----------------------------------------------------------------------------------
    def start(self) -> IotEdgeTransport:
        """Create the client and start the threads; connecting (with retries) happens in the background."""
        self.client = self._create_client()
        self._disable_nagle(self.client)
        self._direct = DirectOutputs.attach(self.client, _DIRECT_WINDOW, lambda: self._count("sent"))
        if self._direct is not None:
            self._direct.receive_inputs(self._on_message)
        targets = [(self._score_loop, "score"), (self._twin_loop, "twin")]
        senders = 1 if self._direct is not None else self.settings.send_threads  # direct: never blocks on an ack
        targets += [(self._send_loop, f"send-{i}") for i in range(senders)]
        for target, name in targets:
            thread = threading.Thread(target=target, name=f"edgepack-iotedge-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _create_client(self) -> Any:
        from azure.iot.device import IoTHubModuleClient

        s = self.settings
        if s.connection_string is None:
            return IoTHubModuleClient.create_from_edge_environment()
        kwargs = {"server_verification_cert": s.server_verification_cert} if s.server_verification_cert else {}
        return IoTHubModuleClient.create_from_connection_string(s.connection_string, **kwargs)

    @staticmethod
    def _disable_nagle(client: Any) -> bool:
        """TCP_NODELAY on the SDK's MQTT socket, at every connect. paho 1.x leaves Nagle on, so a result
        waits for the broker's delayed ACK of the packet before: 40-80 ms per message under a steady
        trickle. Reaches into azure-iot-device 2.x's pipeline; when its layout differs nothing changes."""
        paho = getattr(sdk_transport(client), "_mqtt_client", None)
        if paho is None or not hasattr(paho, "on_socket_open"):
            log.debug("cannot reach the SDK's MQTT client to set TCP_NODELAY")
            return False
        previous = paho.on_socket_open

        def on_socket_open(mqtt_client: Any, userdata: Any, sock: Any) -> None:
            with contextlib.suppress(OSError, AttributeError):  # websockets: not a TCP socket object
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if previous is not None:
                previous(mqtt_client, userdata, sock)

        paho.on_socket_open = on_socket_open
        return True

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until connected (subscribed, twin read) and the app loaded; True when it loaded fine."""
        deadline = time.monotonic() + timeout
        if not self._loaded.wait(timeout) or not self._connected.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"the IoT Edge transport was not ready within {timeout} s")
        return self._reported["status"] == "ready"

    def stop(self, grace: float = 10.0) -> None:
        """Score and send what is queued (up to ``grace`` seconds), report, disconnect."""
        if self.client is None:
            return
        deadline = time.monotonic() + grace
        self._stopping.set()
        scorer, twin, *senders = self._threads
        scorer.join(max(0.0, deadline - time.monotonic()))
        if scorer.is_alive():
            self._abandon.set()
            scorer.join(5)
        for _ in senders:
            self._outbox.put(None)
        for thread in senders:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._direct is not None and not self._direct.wait_acked(max(0.0, deadline - time.monotonic())):
            log.error("stopping with %d result(s) not acknowledged by edgeHub", self._direct.unacked())
        self._abandon.set()
        self._report_wake.set()
        twin.join(max(1.0, deadline - time.monotonic()))
        left = self._inbox.qsize() + sum(1 for item in list(self._outbox.queue) if item is not None)
        if left:
            log.error("stopping with %d message(s) not answered: the stop grace of %.1f s ran out", left, grace)
        try:
            self.client.shutdown()
        except Exception as exc:  # shutting down a client that never connected
            log.debug("client shutdown: %s", exc)
        for thread in senders:
            thread.join(5)
        self.client = None

    def __enter__(self) -> IotEdgeTransport:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # reporting --------------------------------------------------------------------------------
    def report(self, properties: Mapping[str, Any]) -> None:
        """Merge ``properties`` into the reported properties and send the change soon (``None`` deletes)."""
        with self._lock:
            _merge(self._reported, properties)
        self._report_wake.set()

    def stats(self) -> dict[str, int]:
        """The counts, plus the messages waiting to be scored (``queued``) and sent or acknowledged (``unsent``)."""
        with self._lock:
            counts = {**self._counts, "queued": self._inbox.qsize(), "unsent": self._outbox.qsize()}
        if self._direct is not None:  # published, not yet acknowledged
            counts["unsent"] += self._direct.unacked()
        return counts

    @property
    def reported(self) -> dict[str, Any]:
        """A copy of the reported properties as they are now (sent or about to be)."""
        with self._lock:
            return copy.deepcopy({**self._reported, "counts": dict(self._counts)})

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    # SDK handlers (SDK threads: queue only) ----------------------------------------------------
    def _on_message(self, message: Any) -> None:
        self._count("received")
        self._inbox.put(message)

    def _on_desired(self, patch: dict[str, Any]) -> None:
        self._inbox.put(_Desired(patch, full=False))

    # twin thread --------------------------------------------------------------------------------
    def _twin_loop(self) -> None:
        if not self._retry("connect to edgeHub", self._subscribe):
            return
        twin = self._retry("read the module twin", self.client.get_twin)
        if twin is None:
            return
        self._inbox.put(_Desired(dict(twin.get("desired") or {}), full=True))
        self._connected.set()
        log.info(
            "connected to edgeHub: scoring input %r to output %r", self.settings.input_name, self.settings.output_name
        )
        while not self._abandon.is_set():
            self._report_wake.wait(self.settings.report_interval)
            self._report_wake.clear()
            if not self._flush_report() and not self._abandon.is_set():
                self._abandon.wait(self.settings.retry_interval)
        self._flush_report()

    def _subscribe(self) -> None:
        # Setting a handler connects (auto_connect) and subscribes, synchronously; it raises when edgeHub is down.
        self.client.on_message_received = self._on_message
        self.client.on_twin_desired_properties_patch_received = self._on_desired

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        attempt = 0
        while not self._abandon.is_set():
            try:
                result = call()
                return True if result is None else result
            except Exception as exc:
                attempt += 1
                if attempt == 1 or attempt % 30 == 0:
                    log.warning(
                        "cannot %s (attempt %d, retrying every %g s): %s",
                        what,
                        attempt,
                        self.settings.retry_interval,
                        exc,
                    )
                self._abandon.wait(self.settings.retry_interval)
        return None

    def _flush_report(self) -> bool:
        with self._lock:
            state = copy.deepcopy({**self._reported, "counts": dict(self._counts)})
        patch = reported_patch(self._reported_sent, state)
        if not patch:
            return True
        try:
            self.client.patch_twin_reported_properties(patch)
        except Exception as exc:
            log.warning("cannot report the module's state (will retry): %s", exc)
            return False
        self._reported_sent = state
        return True

    # sender threads -----------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            self._send(item)

    def _send(self, out: _Outgoing) -> None:
        """Send until edgeHub acknowledges (retrying through outages), unless the stop grace ran out.
        Direct outputs: queued on the connection (counted at the PUBACK; paho resends it after a reconnect)."""
        attempt = 0
        while True:
            try:
                if self._direct is not None:
                    from azure.iot.device.constant import TELEMETRY_MESSAGE_SIZE_LIMIT

                    if out.message.get_size() > TELEMETRY_MESSAGE_SIZE_LIMIT:
                        raise ValueError("Size of message can not exceed 256 KB.")
                    if not self._direct.publish(out.message, out.output, self._abandon):
                        log.error("a message to %r was not sent (stopping)", out.output)
                    return
                self.client.send_message_to_output(out.message, out.output)
            except ValueError as exc:  # the SDK's own size check
                if out.is_error or out.source is None:
                    log.error("cannot send a message to %r: %s", out.output, exc)
                    return
                out = self._error(out.source, 413, f"the result cannot be sent: {exc}")
                continue
            except Exception as exc:
                if self._abandon.is_set():
                    log.error("a message to %r was not sent (stopping): %s", out.output, exc)
                    return
                attempt += 1
                self._count("send_retries")
                if attempt == 1 or attempt % 30 == 0:
                    log.warning(
                        "cannot send to %r (attempt %d, retrying every %g s): %s",
                        out.output,
                        attempt,
                        self.settings.retry_interval,
                        exc,
                    )
                self._abandon.wait(self.settings.retry_interval)
                continue
            self._count("sent")
            return

    # scoring thread -------------------------------------------------------------------------------
    def _score_loop(self) -> None:
        self._load_app()
        while not self._abandon.is_set():
            try:
                item = self._inbox.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            if isinstance(item, _Desired):
                self._apply_desired(item)
                continue
            batch, control = [item], None
            while len(batch) < self.tuning.max_batch_size:
                try:
                    nxt = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, _Desired):
                    control = nxt
                    break
                batch.append(nxt)
            started = time.perf_counter()
            for out in self._handle(batch):
                self._outbox.put(out)
            self._observe(time.perf_counter() - started)
            if control is not None:
                self._apply_desired(control)

    def _observe(self, seconds: float) -> None:
        statuses, self._statuses = self._statuses, []
        if self.metrics is not None:
            for status in statuses:
                self.metrics.observe("iotedge", "MESSAGE", status, seconds)

    def _load_app(self) -> None:
        if self._preset_error is not None:  # the host's load() failed (e.g. the HTTP server beside us)
            self._load_error = RuntimeError(self._preset_error)
            self.report({"status": "failed", "error": self._preset_error})
            self._loaded.set()
            return
        try:
            if self._load:
                self.app.load()
        except Exception as exc:
            log.exception("load() failed; messages get an error reply until the module is fixed")
            self._load_error = exc
            self.report({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        else:
            self._load_error = None
            self.report({"status": "ready", "error": None, "models": self._models()})
        self._loaded.set()

    def _models(self) -> dict[str, Any]:
        app = self.app
        if isinstance(app, VersionSelection):  # several versions loaded: the one each name serves
            return {_twin_key(name): {"version": version} for name, version in app.served().items()}
        return {_twin_key(m.name): {"version": m.version} for m in app.models()}

    def _handle(self, batch: list[Any]) -> list[_Outgoing]:
        """The answers to ``batch``, in order (results under the threshold that are dropped: none)."""
        results: list[_Outgoing | None] = [None] * len(batch)
        pending: list[tuple[int, Any, Request]] = []
        for i, message in enumerate(batch):
            checked = self._check(message)
            if isinstance(checked, Request):
                pending.append((i, message, checked))
            else:
                results[i] = checked
        outcomes = score_requests(self.app, [request for _, _, request in pending])
        for (i, message, _), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, ScoringError):
                results[i] = self._error(message, outcome.status, str(outcome))
            else:
                results[i] = self._result(message, outcome)
        self._statuses = [200 if r is None else r.status for r in results]  # None: dropped below the threshold
        return [r for r in results if r is not None]

    def _check(self, message: Any) -> Request | _Outgoing:
        s = self.settings
        if message.input_name != s.input_name:
            return self._error(
                message, 404, f"no input {message.input_name!r}: this module scores input {s.input_name!r}"
            )
        data = message.data
        body = data.encode("utf-8") if isinstance(data, str) else bytes(data or b"")
        if len(body) > s.max_message_bytes:
            return self._error(
                message, 413, f"the message body is {len(body)} bytes, over the limit of {s.max_message_bytes} bytes"
            )
        if self._load_error is not None:
            return self._error(message, 503, f"the model failed to load: {self._load_error}")
        headers = {str(k).lower(): "" if v is None else str(v) for k, v in (message.custom_properties or {}).items()}
        return Request(body, message.content_type or "application/json", headers=headers)

    def _result(self, message: Any, response: Response) -> _Outgoing | None:
        body = response.body.encode("utf-8") if isinstance(response.body, str) else bytes(response.body)
        if response.status >= 400:
            return self._error(message, response.status, body.decode("utf-8", "replace"))
        props = self._properties(message)
        threshold = self.tuning.threshold
        if threshold is not None:
            score = max_score(body)
            if score is not None:
                above = score >= threshold
                props["max_score"] = repr(score)
                props["above_threshold"] = "true" if above else "false"
                if not above and self.tuning.drop_below_threshold:
                    self._count("scored")
                    self._count("below_threshold")
                    return None
        out = self._message(message, body, response.content_type, props)
        from azure.iot.device.constant import TELEMETRY_MESSAGE_SIZE_LIMIT

        if out.get_size() > TELEMETRY_MESSAGE_SIZE_LIMIT:
            return self._error(
                message,
                413,
                f"the result is {len(body)} bytes: with its properties over the hub's message limit of "
                f"{TELEMETRY_MESSAGE_SIZE_LIMIT} bytes",
            )
        self._count("scored")
        return _Outgoing(out, self.settings.output_name, source=message)

    def _error(self, message: Any, status: int, text: str) -> _Outgoing:
        text = text if len(text) <= _ERROR_TEXT_LIMIT else text[:_ERROR_TEXT_LIMIT] + "..."
        cid = message.correlation_id or message.message_id
        doc = {
            "error": text,
            "status": status,
            "input": message.input_name,
            "correlation_id": cid,
            "message_id": message.message_id,
        }
        self._count("errors")
        with self._lock:
            self._reported["last_error"] = {"message": text, "status": status, "correlation_id": cid, "at": _now()}
        log.info("message %s on %r: error %d: %s", cid, message.input_name, status, text)
        props = {**self._properties(message), "error_status": str(status)}
        body = orjson.dumps(doc)
        return _Outgoing(
            self._message(message, body, "application/json", props), self.settings.error_output, True, status=status
        )

    @staticmethod
    def _properties(message: Any) -> dict[str, str]:
        return {
            str(k): "" if v is None else str(v)
            for k, v in (message.custom_properties or {}).items()
            if k not in _RESERVED_PROPERTIES
        }

    @staticmethod
    def _message(source: Any, body: bytes, content_type: str, properties: dict[str, str]) -> Any:
        from azure.iot.device import Message

        json = content_type.split(";", 1)[0].strip().lower().endswith("json")
        out = Message(
            body, message_id=str(uuid.uuid4()), content_type=content_type, content_encoding="utf-8" if json else None
        )
        out.correlation_id = source.correlation_id or source.message_id
        out.custom_properties = properties
        return out

    # twin desired properties (scoring thread) --------------------------------------------------------
    def _apply_desired(self, desired: _Desired) -> None:
        version = desired.doc.get("$version")
        current = self._desired_version
        if (
            isinstance(version, int)
            and current is not None
            and (version == current or (not desired.full and version < current))
        ):
            return  # a repeated document, or an older patch (patches can arrive out of order)
        state: dict[str, Any] = {} if desired.full else copy.deepcopy(self._desired)
        # a patch merges into the desired document as the hub does: objects key by key, null removes
        _merge(state, {key: value for key, value in desired.doc.items() if not key.startswith("$")})
        self._desired = state
        if isinstance(version, int):
            self._desired_version = version
        tuning, ignored = self._tuning_from(state)
        error = self._switch_model(tuning.model_version) if tuning.model_version != self.tuning.model_version else None
        if error is not None:
            tuning = replace(tuning, model_version=self.tuning.model_version)
        self.tuning = tuning
        with self._lock:
            self._reported["settings"] = tuning.to_dict()
            self._reported["desired_version"] = self._desired_version
            self._reported["ignored"] = ignored
        log.info(
            "desired properties (version %s) applied: %s%s",
            version,
            tuning.to_dict(),
            f"; ignored {ignored}" if ignored else "",
        )
        self._report_wake.set()

    def _tuning_from(self, state: Mapping[str, Any]) -> tuple[Tuning, dict[str, str]]:
        ignored: dict[str, str] = {}
        values: dict[str, Any] = {"max_batch_size": self.settings.max_batch_size}
        for key, value in state.items():
            if key == "max_batch_size":
                if (type(value) is int or (type(value) is float and value.is_integer())) and value >= 1:
                    values[key] = int(value)
                else:
                    ignored[key] = f"expected a whole number >= 1, got {value!r}"
            elif key == "threshold":
                if type(value) in (int, float) and math.isfinite(value):
                    values[key] = float(value)
                else:
                    ignored[key] = f"expected a number, got {value!r}"
            elif key == "drop_below_threshold":
                if type(value) is bool:
                    values[key] = value
                else:
                    ignored[key] = f"expected true or false, got {value!r}"
            elif key == "model_version":
                if type(value) in (str, int) and str(value):
                    values[key] = str(value)
                elif (
                    isinstance(value, dict)
                    and 0 < len(value) <= _MAX_VERSION_NAMES
                    and all(type(v) in (str, int) and str(v) for v in value.values())
                ):
                    values[key] = {str(k): str(v) for k, v in value.items()}
                else:
                    ignored[key] = f'expected a version, "<name>:<version>" or {{"<name>": "<version>"}}, got {value!r}'
            else:
                ignored[_twin_key(key)] = "unknown setting"
        if "model_version" in values and self.reconfigure is None:
            del values["model_version"]
            ignored["model_version"] = self.cannot_switch or "this deployment cannot switch models (no hook)"
        return Tuning(**values), ignored

    def _switch_model(self, version: str | dict[str, str] | None) -> str | None:
        """Ask the hook for ``version``; the error text when it fails (the current app keeps scoring)."""
        if self.reconfigure is None:
            return None
        try:
            app = self.reconfigure({"model_version": version})
        except Exception as exc:
            text = f"model_version {version!r}: {type(exc).__name__}: {exc}"
            log.error("switching models failed, the current one keeps scoring: %s", text)
            self.report({"error": text})
            return text
        if app is not None:
            self.app = app
            self._load_error = None
        self.report({"status": "ready", "error": None, "models": self._models()})
        return None


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Merge ``patch`` into ``target`` as twin patches merge: objects key by key, ``None`` removes."""
    for key, value in patch.items():
        if isinstance(value, Mapping):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)
