"""Settings of the message transports: :class:`MqttSettings` and :class:`IotEdgeSettings`.

Kept apart from the transports so that reading settings never imports paho or azure-iot-device
(:class:`edge_module.settings.Settings` holds one of each when the transport is switched on). Each
field declares its variable (and flag) once, as in :mod:`edge_module.settings`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edge_module.settings_table import (
    SettingsError,
    boolean,
    env_and_overrides,
    integer,
    number,
    parse_size,
    read_text_file,
    setting,
)

HUB_MESSAGE_LIMIT = 256 * 1024  # IoT Hub's (and the SDK's) limit for one message


def default_state_dir(environ: Mapping[str, str] | None = None) -> str:
    """Where the module keeps private state when ``EDGEPACK_STATE_DIR`` is not set:
    ``$XDG_STATE_HOME/edgepack``, else ``~/.local/state/edgepack`` (``/root/...`` in images, which run
    as root). Never the shared temporary folder: others could plant files or symlinks there."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "edgepack")
    home = env.get("HOME") or os.path.expanduser("~")
    if not home or not os.path.isabs(home) or home == "/":
        raise SettingsError(
            "no home folder for the MQTT spool: set EDGEPACK_STATE_DIR or EDGEPACK_MQTT_SPOOL_DIR to a private folder"
        )
    return os.path.join(home, ".local", "state", "edgepack")


def parse_protocol(raw: str, what: str) -> int:
    """``5`` or ``311`` from how people write MQTT versions (``5``, ``3.1.1``, ``311``, ``4``)."""
    value = {"5": 5, "5.0": 5, "311": 311, "3.1.1": 311, "4": 311}.get(str(raw).strip())
    if value is None:
        raise SettingsError(f"invalid {what} {raw!r}: use 5 or 3.1.1")
    return value


@dataclass(frozen=True)
class MqttSettings:
    """The MQTT transport's settings (``from_env`` reads ``EDGEPACK_MQTT_*``)."""

    url: str = setting(
        "mqtt://127.0.0.1:1883", "EDGEPACK_MQTT_URL", help="mqtt://HOST:PORT or mqtts://HOST:PORT (TLS)."
    )
    service: str = setting(
        "default",
        "EDGEPACK_MQTT_SERVICE",
        "SERVICE_NAME",
        flag="--mqtt-service",
        metavar="NAME",
        help="<service> in the MQTT topics.",
    )
    client_id: str | None = setting(
        None,
        "EDGEPACK_MQTT_CLIENT_ID",
        shown="edgepack-<service>-<hostname>",
        help="MQTT client id (keep it stable: the broker keeps the session by id).",
    )
    request_topic: str = setting(
        "edgepack/{service}/score/request/#",
        "EDGEPACK_MQTT_REQUEST_TOPIC",
        flag="--mqtt-topic",
        metavar="FILTER",
        help="Request topic filter.",
    )
    response_topic: str = setting(
        "edgepack/{service}/score/response/{id}", "EDGEPACK_MQTT_RESPONSE_TOPIC", help="Where 3.1.1 answers go."
    )
    error_topic: str = setting(
        "edgepack/{service}/score/error/{id}", "EDGEPACK_MQTT_ERROR_TOPIC", help="Where error replies go."
    )
    qos: int = setting(1, "EDGEPACK_MQTT_QOS", parse=integer, help="1, or 0 to allow losses.")
    protocol: int = setting(
        5,
        "EDGEPACK_MQTT_PROTOCOL",
        parse=parse_protocol,
        flag="--mqtt-protocol",
        metavar="5|3.1.1",
        help="MQTT protocol version.",
    )
    username: str | None = setting(
        None, "EDGEPACK_MQTT_USERNAME", flag="--mqtt-username", metavar="USER", help="MQTT user name."
    )
    password: str | None = setting(
        None,
        "EDGEPACK_MQTT_PASSWORD",
        flag="--mqtt-password",
        metavar="PASSWORD",
        secret=True,
        help="MQTT password (prefer the variable: flags show in ps).",
    )
    ca_file: str | None = setting(
        None, "EDGEPACK_MQTT_CA_FILE", flag="--mqtt-ca", metavar="FILE", help="CA certificates for mqtts://."
    )
    cert_file: str | None = setting(
        None, "EDGEPACK_MQTT_CERT_FILE", flag="--mqtt-cert", metavar="FILE", help="Client certificate (PEM)."
    )
    key_file: str | None = setting(
        None, "EDGEPACK_MQTT_KEY_FILE", flag="--mqtt-key", metavar="FILE", help="The client certificate's key (PEM)."
    )
    session_expiry: int = setting(
        86_400, "EDGEPACK_MQTT_SESSION_EXPIRY", parse=integer, help="Seconds the broker keeps the session (MQTT 5)."
    )
    keepalive: int = setting(30, "EDGEPACK_MQTT_KEEPALIVE", parse=integer, help="MQTT keepalive, seconds.")
    max_batch: int = setting(32, "EDGEPACK_MQTT_MAX_BATCH", parse=integer, help="Requests scored in one model run.")
    max_wait_ms: float = setting(
        0.0, "EDGEPACK_MQTT_MAX_WAIT_MS", parse=number, help="How long a batch waits for more requests."
    )
    max_inflight: int = setting(
        200, "EDGEPACK_MQTT_MAX_INFLIGHT", parse=integer, help="Replies published and not acknowledged yet."
    )
    state_dir: str | None = setting(
        None,
        "EDGEPACK_STATE_DIR",
        shown="$XDG_STATE_HOME/edgepack, else ~/.local/state/edgepack",
        help="The module's private state (the MQTT spool goes under mqtt/<client id>); mount a volume here.",
    )
    spool_dir: str | None = setting(
        None,
        "EDGEPACK_MQTT_SPOOL_DIR",
        shown="<state dir>/mqtt/<client id>",
        help="Where replies wait for the broker (a private folder: 0700, this user's, no symlinks).",
    )
    spool_max: int = setting(100_000, "EDGEPACK_MQTT_SPOOL_MAX", parse=integer, help="Replies waiting for the broker.")
    spool_max_bytes: int = setting(
        256 * 2**20, "EDGEPACK_MQTT_SPOOL_MAX_BYTES", parse=parse_size, shown="256MiB", help="Their size at most."
    )
    spool_fsync: bool = setting(
        False, "EDGEPACK_MQTT_SPOOL_FSYNC", parse=boolean, help="fsync every spooled reply (survives power loss)."
    )
    dedupe_window: int = setting(
        10_000, "EDGEPACK_MQTT_DEDUPE_WINDOW", parse=integer, help="Request ids remembered to recognise redeliveries."
    )
    max_payload: int = setting(
        2**20,
        "EDGEPACK_MQTT_MAX_PAYLOAD",
        parse=parse_size,
        shown="1MiB",
        help="Largest request; larger ones get a 413 error reply.",
    )
    reconnect_min: float = setting(0.5, "EDGEPACK_MQTT_RECONNECT_MIN", parse=number, help="First reconnect delay, s.")
    reconnect_max: float = setting(
        30.0, "EDGEPACK_MQTT_RECONNECT_MAX", parse=number, help="Longest reconnect delay, s."
    )

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
        """``spool_dir``, else ``<state dir>/mqtt/<client id>`` (see :func:`default_state_dir`)."""
        if self.spool_dir:
            return self.spool_dir
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.effective_client_id).lstrip(".") or "_"
        return os.path.join(self.state_dir or default_state_dir(), "mqtt", safe)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> MqttSettings:
        """Settings from ``EDGEPACK_MQTT_<NAME>`` (the field name upper-cased: ``EDGEPACK_MQTT_URL``,
        ``..._MAX_BATCH``, ``..._CA_FILE``...; sizes accept ``1MiB``; ``SERVICE_NAME`` is the service's
        fallback); ``overrides`` (e.g. CLI flags) win when not None."""
        return cls(**env_and_overrides(cls, os.environ if environ is None else environ, overrides))


@dataclass(frozen=True)
class IotEdgeSettings:
    """The hub transport's settings (``from_env`` reads ``EDGEPACK_IOTEDGE_*``)."""

    input_name: str = setting("input1", "EDGEPACK_IOTEDGE_INPUT", help="Hub input the requests arrive on.")
    output_name: str = setting("output1", "EDGEPACK_IOTEDGE_OUTPUT", help="Hub output the results go to.")
    error_output: str = setting("error", "EDGEPACK_IOTEDGE_ERROR_OUTPUT", help="Hub output error messages go to.")
    max_message_bytes: int = setting(
        HUB_MESSAGE_LIMIT,
        "EDGEPACK_IOTEDGE_MAX_MESSAGE_SIZE",
        parse=parse_size,
        shown="256KiB",
        help="Largest message (bytes or 256KiB; at most the hub's limit).",
    )
    connection_string: str | None = setting(
        None,
        "EDGEPACK_IOTEDGE_CONNECTION_STRING",
        secret=True,
        help="Connect with it (e.g. through a gateway) instead of create_from_edge_environment().",
    )
    server_verification_cert: str | None = setting(  # PEM text, kept out of repr (long); connection strings only
        None,
        "EDGEPACK_IOTEDGE_CA_FILE",
        parse=read_text_file,
        secret=True,
        help="PEM file of the CA the gateway's certificate is checked with (with a connection string).",
    )
    max_batch_size: int = setting(
        1, "EDGEPACK_IOTEDGE_MAX_BATCH_SIZE", parse=integer, help="Batch size until the module twin says otherwise."
    )
    send_threads: int = setting(1, "EDGEPACK_IOTEDGE_SEND_THREADS", parse=integer, help="Threads sending results.")
    report_interval: float = setting(
        30.0, "EDGEPACK_IOTEDGE_REPORT_INTERVAL", parse=number, help="Seconds between reports of the counts."
    )
    retry_interval: float = setting(
        2.0,
        "EDGEPACK_IOTEDGE_RETRY_INTERVAL",
        parse=number,
        help="Seconds between attempts while edgeHub is unreachable.",
    )

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
        """Settings from ``EDGEPACK_IOTEDGE_*`` (``_INPUT``, ``_OUTPUT``, ``_MAX_MESSAGE_SIZE``, ``_CA_FILE``
        (a PEM file, read)...: see the fields); ``overrides`` (e.g. CLI flags) win when not None."""
        return cls(**env_and_overrides(cls, os.environ if environ is None else environ, overrides))
