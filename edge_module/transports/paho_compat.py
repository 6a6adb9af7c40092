"""paho-mqtt 1.6 and 2.x behind one small surface.

azure-iot-device 2.14 pins ``paho-mqtt<2``, so images with the IoT Edge transport have paho 1.6; others
may have 2.x. paho 2 keeps the version-1 callback signatures behind ``CallbackAPIVersion.VERSION1``
(deprecated, hence the silenced warning); 1.6 has no ``CallbackAPIVersion`` at all. Callbacks written
against this module take ``*args`` where 3.1.1 and 5 differ (``on_connect``, ``on_disconnect``,
``on_subscribe``), and read reason codes through :func:`reason_value`.
"""

from __future__ import annotations

import ssl
import warnings
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PAHO_VERSION: tuple[int, ...] = tuple(int(p) for p in paho.mqtt.__version__.split(".")[:2] if p.isdigit())
MQTT_V311: int = mqtt.MQTTv311
MQTT_V5: int = mqtt.MQTTv5
ERR_SUCCESS: int = mqtt.MQTT_ERR_SUCCESS
ERR_NO_CONN: int = mqtt.MQTT_ERR_NO_CONN
MQTTMessage = mqtt.MQTTMessage

__all__ = [
    "ERR_NO_CONN",
    "ERR_SUCCESS",
    "MQTT_V5",
    "MQTT_V311",
    "PAHO_VERSION",
    "connect_properties",
    "error_string",
    "new_client",
    "packed_publish_properties",
    "publish_properties",
    "reason_value",
    "use_tls",
]


def new_client(client_id: str, protocol: int, clean_session: bool = False) -> mqtt.Client:
    """A client with the version-1 callback API on any paho (``clean_session`` only applies to 3.1.1;
    MQTT 5 takes ``clean_start`` in ``connect``)."""
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
    if protocol != MQTT_V5:
        kwargs["clean_session"] = clean_session
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is None:  # paho 1.x
        return mqtt.Client(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mqtt.Client(api.VERSION1, **kwargs)


def use_tls(client: mqtt.Client, ca_file: str | None, cert_file: str | None, key_file: str | None) -> None:
    """TLS with the system's or ``ca_file``'s CAs, host name checked, optional client certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    client.tls_set_context(context)


def connect_properties(session_expiry: int, receive_maximum: int | None = None) -> Properties:
    """MQTT 5 CONNECT properties: how long the broker keeps the session after a disconnect (s)."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def publish_properties(
    correlation_data: bytes | None = None,
    response_topic: str | None = None,
    content_type: str | None = None,
    user_properties: list[tuple[str, str]] | None = None,
) -> Properties | None:
    """MQTT 5 PUBLISH properties, or None when there are none."""
    if not (correlation_data or response_topic or content_type or user_properties):
        return None
    props = Properties(PacketTypes.PUBLISH)
    if correlation_data:
        props.CorrelationData = correlation_data
    if response_topic:
        props.ResponseTopic = response_topic
    if content_type:
        props.ContentType = content_type
    if user_properties:
        props.UserProperty = list(user_properties)
    return props


class PackedProperties:
    """MQTT 5 PUBLISH properties encoded once: paho only calls ``pack()`` (when sending, and again when
    re-sending), and building paho's ``Properties`` costs several µs per message."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def pack(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"PackedProperties({self.data!r})"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def packed_publish_properties(
    correlation_data: bytes | None = None,
    content_type: str | None = None,
    user_properties: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
) -> PackedProperties | None:
    """What :func:`publish_properties` makes, pre-encoded (correlation data, content type, user properties)."""
    parts = []
    if content_type:
        parts.append(b"\x03" + _utf8(content_type))
    if correlation_data:
        parts.append(b"\x09" + len(correlation_data).to_bytes(2, "big") + correlation_data)
    for key, value in user_properties:
        parts.append(b"\x26" + _utf8(key) + _utf8(value))
    if not parts:
        return None
    body = b"".join(parts)
    return PackedProperties(_varint(len(body)) + body)


def reason_value(rc: Any) -> int:
    """An int from what paho passes as a reason/return code (int in 3.1.1, ``ReasonCodes`` in 5)."""
    value = getattr(rc, "value", rc)
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def error_string(rc: Any) -> str:
    """A readable reason for a CONNACK/DISCONNECT code."""
    if hasattr(rc, "getName"):
        return str(rc.getName())
    value = reason_value(rc)
    try:
        return mqtt.connack_string(value) if 0 < value < 6 else mqtt.error_string(value)
    except Exception:
        return f"code {value}"
