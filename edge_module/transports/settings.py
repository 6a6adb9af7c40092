"""Settings of the message transports: :class:`MqttSettings` and :class:`IotEdgeSettings`.

Kept apart from the transports so that reading settings never imports paho or azure-iot-device
(:class:`edge_module.settings.Settings` holds one of each when the transport is switched on).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edge_module.settings import SettingsError, parse_size

HUB_MESSAGE_LIMIT = 256 * 1024  # IoT Hub's (and the SDK's) limit for one message


@dataclass(frozen=True)
class MqttSettings:
    """The MQTT transport's settings (``from_env`` reads ``EDGEPACK_MQTT_*``)."""

    url: str = "mqtt://127.0.0.1:1883"  # mqtt://host:port or mqtts://host:port (TLS)
    service: str = "default"
    client_id: str | None = None  # None: edgepack-<service>-<hostname> (stable: the session is kept by id)
    request_topic: str = "edgepack/{service}/score/request/#"
    response_topic: str = "edgepack/{service}/score/response/{id}"
    error_topic: str = "edgepack/{service}/score/error/{id}"
    qos: int = 1
    protocol: int = 5  # 5 or 311
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    session_expiry: int = 86_400  # s the broker keeps the session (MQTT 5)
    keepalive: int = 30
    max_batch: int = 32
    max_wait_ms: float = 0.0
    max_inflight: int = 200  # replies published and not acknowledged yet
    spool_dir: str | None = None  # None: <tmp>/edgepack-mqtt/<client id>
    spool_max: int = 100_000  # replies waiting for the broker
    spool_max_bytes: int = 256 * 2**20
    spool_fsync: bool = False
    dedupe_window: int = 10_000  # request ids remembered to recognise redeliveries
    max_payload: int = 2**20  # bytes; larger requests get a 413 error reply
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0

    def __post_init__(self) -> None:
        self.address  # noqa: B018 - validates the URL
        if self.protocol not in (5, 311):
            raise SettingsError(f"invalid MQTT protocol {self.protocol!r}: use 5 or 311 (3.1.1)")
        if self.qos not in (0, 1):
            raise SettingsError(f"invalid MQTT qos {self.qos!r}: use 1 (or 0 to allow losses)")
        if not self.request_topic or "{id}" in self.request_topic:
            raise SettingsError(f"invalid request topic {self.request_topic!r}")
        for name in ("response_topic", "error_topic"):
            value = getattr(self, name)
            if not value or "+" in value or "#" in value:
                raise SettingsError(f"invalid {name} {value!r}: a topic (with {{id}}, {{service}}) without wildcards")
        for name in ("max_batch", "max_inflight", "spool_max", "dedupe_window", "max_payload", "keepalive"):
            if getattr(self, name) < 1:
                raise SettingsError(f"MQTT {name} must be at least 1, got {getattr(self, name)!r}")
        if self.max_wait_ms < 0 or self.session_expiry < 0 or not 0 < self.reconnect_min <= self.reconnect_max:
            raise SettingsError("max_wait_ms and session_expiry must be >= 0, and 0 < reconnect_min <= reconnect_max")
        if (self.cert_file is None) != (self.key_file is None):
            raise SettingsError("give both an MQTT client certificate and its key, or neither")
        if self.password is not None and self.username is None:
            raise SettingsError("an MQTT password needs a username")

    @property
    def address(self) -> tuple[str, int, bool]:
        """(host, port, tls) from ``url``."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise SettingsError(f"invalid MQTT url {self.url!r}: use mqtt://host:port or mqtts://host:port")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise SettingsError(f"invalid port in MQTT url {self.url!r}") from None
        return parts.hostname, port, tls or self.ca_file is not None

    def topic(self, template: str) -> str:
        return template.replace("{service}", self.service)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"edgepack-{self.service}-{socket.gethostname()}"[:64]

    @property
    def effective_spool_dir(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.effective_client_id)
        return self.spool_dir or os.path.join(tempfile.gettempdir(), "edgepack-mqtt", safe)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> MqttSettings:
        """Settings from ``EDGEPACK_MQTT_<NAME>`` (the field name upper-cased: ``EDGEPACK_MQTT_URL``,
        ``..._MAX_BATCH``, ``..._CA_FILE``...; sizes accept ``1MiB``; ``SERVICE_NAME`` is the service's
        fallback); ``overrides`` (e.g. CLI flags) win when not None."""
        env = environ if environ is not None else os.environ
        values: dict[str, Any] = {}
        if env.get("SERVICE_NAME"):
            values["service"] = env["SERVICE_NAME"]
        for f in cls.__dataclass_fields__.values():
            var = f"EDGEPACK_MQTT_{f.name.upper()}"
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw, var)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_INTS = {"qos", "session_expiry", "keepalive", "max_batch", "max_inflight", "spool_max", "dedupe_window"}
_FLOATS = {"max_wait_ms", "reconnect_min", "reconnect_max"}


def parse_protocol(raw: str, what: str) -> int:
    """``5`` or ``311`` from how people write MQTT versions (``5``, ``3.1.1``, ``311``, ``4``)."""
    value = {"5": 5, "5.0": 5, "311": 311, "3.1.1": 311, "4": 311}.get(str(raw).strip())
    if value is None:
        raise SettingsError(f"invalid {what} {raw!r}: use 5 or 3.1.1")
    return value


def _convert(name: str, raw: str, var: str) -> Any:
    if name in ("max_payload", "spool_max_bytes"):
        return parse_size(raw, var)
    if name == "protocol":
        return parse_protocol(raw, var)
    if name == "spool_fsync":
        if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise SettingsError(f"invalid {var} {raw!r}: use true or false")
        return raw.strip().lower() in ("1", "true", "yes", "on")
    kind = int if name in _INTS else float if name in _FLOATS else None
    if kind is None:
        return raw
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"invalid {var} {raw!r}: expected a number") from None


@dataclass(frozen=True)
class IotEdgeSettings:
    """The hub transport's settings (``from_env`` reads ``EDGEPACK_IOTEDGE_*``)."""

    input_name: str = "input1"
    output_name: str = "output1"
    error_output: str = "error"
    max_message_bytes: int = HUB_MESSAGE_LIMIT
    connection_string: str | None = field(default=None, repr=False)  # None: create_from_edge_environment()
    server_verification_cert: str | None = field(default=None, repr=False)  # PEM text; connection strings only
    max_batch_size: int = 1  # the default before the twin says otherwise
    send_threads: int = 1
    report_interval: float = 30.0  # seconds between reports of the counts
    retry_interval: float = 2.0  # seconds between attempts while edgeHub is unreachable

    def __post_init__(self) -> None:
        for name in ("input_name", "output_name", "error_output"):
            if not getattr(self, name) or "/" in getattr(self, name):
                raise SettingsError(f"invalid IoT Edge {name} {getattr(self, name)!r}: a non-empty name without '/'")
        if not 0 < self.max_message_bytes <= HUB_MESSAGE_LIMIT:
            raise SettingsError(f"max_message_bytes must be 1..{HUB_MESSAGE_LIMIT} (the hub's limit)")
        for name in ("max_batch_size", "send_threads"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.report_interval <= 0 or self.retry_interval <= 0:
            raise SettingsError("report_interval and retry_interval must be positive")
        if self.server_verification_cert and not self.connection_string:
            raise SettingsError(
                "server_verification_cert needs a connection string; in a module the CA comes from the workload API"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> IotEdgeSettings:
        """Settings from the environment; ``overrides`` (e.g. CLI flags) win.

        ``EDGEPACK_IOTEDGE_INPUT``, ``_OUTPUT``, ``_ERROR_OUTPUT``, ``_MAX_MESSAGE_SIZE`` (bytes or
        ``256KiB``), ``_CONNECTION_STRING``, ``_CA_FILE`` (PEM file), ``_MAX_BATCH_SIZE``,
        ``_SEND_THREADS``, ``_REPORT_INTERVAL`` (s), ``_RETRY_INTERVAL`` (s)."""
        env = environ if environ is not None else os.environ
        values: dict[str, Any] = {}

        def number(var: str, kind: type) -> Any:
            try:
                return kind(env[var])
            except ValueError:
                raise SettingsError(f"invalid {var} {env[var]!r}: expected a number") from None

        plain = {"INPUT": "input_name", "OUTPUT": "output_name", "ERROR_OUTPUT": "error_output"}
        for suffix, name in plain.items():
            if env.get(f"EDGEPACK_IOTEDGE_{suffix}"):
                values[name] = env[f"EDGEPACK_IOTEDGE_{suffix}"]
        if env.get("EDGEPACK_IOTEDGE_MAX_MESSAGE_SIZE"):
            values["max_message_bytes"] = parse_size(
                env["EDGEPACK_IOTEDGE_MAX_MESSAGE_SIZE"], "EDGEPACK_IOTEDGE_MAX_MESSAGE_SIZE"
            )
        if env.get("EDGEPACK_IOTEDGE_CONNECTION_STRING"):
            values["connection_string"] = env["EDGEPACK_IOTEDGE_CONNECTION_STRING"]
        if env.get("EDGEPACK_IOTEDGE_CA_FILE"):
            try:
                with open(env["EDGEPACK_IOTEDGE_CA_FILE"], encoding="utf-8") as f:
                    values["server_verification_cert"] = f.read()
            except OSError as exc:
                raise SettingsError(f"cannot read EDGEPACK_IOTEDGE_CA_FILE: {exc}") from None
        numbers = {
            "MAX_BATCH_SIZE": ("max_batch_size", int),
            "SEND_THREADS": ("send_threads", int),
            "REPORT_INTERVAL": ("report_interval", float),
            "RETRY_INTERVAL": ("retry_interval", float),
        }
        for suffix, (name, kind) in numbers.items():
            if env.get(f"EDGEPACK_IOTEDGE_{suffix}"):
                values[name] = number(f"EDGEPACK_IOTEDGE_{suffix}", kind)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
