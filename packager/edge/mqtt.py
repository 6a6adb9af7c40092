"""The MQTT 3.1.1 subset edgeHub speaks with module clients: packets in and out over asyncio streams.

CONNECT, CONNACK, PUBLISH (QoS 0 and 1), PUBACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ,
PINGRESP, DISCONNECT. QoS 2 is refused (the IoT Hub SDKs never use it). Sizes are bounded before
anything is allocated: a packet over ``max_packet`` closes the connection.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

MAX_PACKET = 512 * 1024  # edgeHub's messages are at most 256 KiB; topics carry the properties on top


class ProtocolError(Exception):
    """The peer broke MQTT 3.1.1 (or this subset of it)."""


@dataclass
class Connect:
    client_id: str
    username: str | None
    password: bytes | None
    clean_session: bool
    keepalive: int


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    packet_id: int | None = None
    retain: bool = False
    dup: bool = False


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes = b""
    fields: dict[str, object] = field(default_factory=dict)


async def read_packet(reader: asyncio.StreamReader, max_packet: int = MAX_PACKET) -> Packet:
    """One packet (``asyncio.IncompleteReadError`` at the end of the stream)."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise ProtocolError("malformed remaining length")
    if length > max_packet:
        raise ProtocolError(f"packet of {length} bytes is over the limit ({max_packet})")
    body = await reader.readexactly(length) if length else b""
    return Packet(first >> 4, first & 0x0F, body)


class PacketReader:
    """Packets from a stream, read in large chunks (one ``await`` per chunk, not per packet)."""

    def __init__(self, reader: asyncio.StreamReader, max_packet: int = MAX_PACKET) -> None:
        self.reader, self.max_packet = reader, max_packet
        self.buf = bytearray()
        self.pos = 0

    def pending(self) -> Packet | None:
        """The next whole packet already buffered, else None."""
        buf, pos = self.buf, self.pos
        if len(buf) - pos < 2:
            return None
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= len(buf):
                return None
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("malformed remaining length")
        if length > self.max_packet:
            raise ProtocolError(f"packet of {length} bytes is over the limit ({self.max_packet})")
        if len(buf) - i < length:
            return None
        first = buf[pos]
        packet = Packet(first >> 4, first & 0x0F, bytes(buf[i : i + length]))
        self.pos = i + length
        return packet

    async def fill(self) -> None:
        """Read more (``asyncio.IncompleteReadError`` at the end of the stream)."""
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        chunk = await self.reader.read(1 << 16)
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(self.buf), None)
        self.buf += chunk

    async def next(self) -> Packet:
        while (packet := self.pending()) is None:
            await self.fill()
        return packet


class BufferedWriter:
    """Writes gathered within one event-loop turn go out as one ``write`` (one TLS record, one syscall)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.parts: list[bytes] = []
        self.loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self.parts:
            self.loop.call_soon(self.flush)
        self.parts.append(data)

    def flush(self) -> None:
        if self.parts and not self.writer.is_closing():
            self.writer.write(b"".join(self.parts))
        self.parts.clear()

    def close(self) -> None:
        self.flush()
        self.writer.close()

    def is_closing(self) -> bool:
        return self.writer.is_closing()


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    raw, pos = _binary(buf, pos)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError as e:
        raise ProtocolError("a string is not UTF-8") from e


def _binary(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf):
        raise ProtocolError("truncated packet")
    (n,) = struct.unpack_from("!H", buf, pos)
    if pos + 2 + n > len(buf):
        raise ProtocolError("truncated packet")
    return buf[pos + 2 : pos + 2 + n], pos + 2 + n


def parse_connect(p: Packet) -> Connect:
    name, pos = _string(p.body, 0)
    if name != "MQTT" or pos + 4 > len(p.body):
        raise ProtocolError("not MQTT 3.1.1")
    level, flags = p.body[pos], p.body[pos + 1]
    (keepalive,) = struct.unpack_from("!H", p.body, pos + 2)
    if level != 4:
        raise ProtocolError(f"protocol level {level} (only 4, MQTT 3.1.1)")
    pos += 4
    client_id, pos = _string(p.body, pos)
    if flags & 0x04:  # will: read past it, never published
        _, pos = _string(p.body, pos)
        _, pos = _binary(p.body, pos)
    username = password = None
    if flags & 0x80:
        username, pos = _string(p.body, pos)
    if flags & 0x40:
        password, pos = _binary(p.body, pos)
    return Connect(client_id, username, password, bool(flags & 0x02), keepalive)


def parse_publish(p: Packet) -> Publish:
    qos = (p.flags >> 1) & 0x03
    if qos > 1:
        raise ProtocolError("QoS 2 is not supported")
    topic, pos = _string(p.body, 0)
    packet_id = None
    if qos:
        if pos + 2 > len(p.body):
            raise ProtocolError("truncated packet")
        (packet_id,) = struct.unpack_from("!H", p.body, pos)
        pos += 2
    return Publish(topic, p.body[pos:], qos, packet_id, bool(p.flags & 1), bool(p.flags & 8))


def parse_subscribe(p: Packet) -> tuple[int, list[tuple[str, int]]]:
    (packet_id,) = struct.unpack_from("!H", p.body, 0)
    pos, filters = 2, []
    while pos < len(p.body):
        topic, pos = _string(p.body, pos)
        if pos >= len(p.body):
            raise ProtocolError("truncated packet")
        filters.append((topic, p.body[pos] & 0x03))
        pos += 1
    return packet_id, filters


def parse_unsubscribe(p: Packet) -> tuple[int, list[str]]:
    (packet_id,) = struct.unpack_from("!H", p.body, 0)
    pos, filters = 2, []
    while pos < len(p.body):
        topic, pos = _string(p.body, pos)
        filters.append(topic)
    return packet_id, filters


def packet_id_of(p: Packet) -> int:
    if len(p.body) < 2:
        raise ProtocolError("truncated packet")
    return struct.unpack_from("!H", p.body, 0)[0]


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _length(len(body)) + body


def encode_publish(msg: Publish) -> bytes:
    topic = msg.topic.encode("utf-8")
    head = struct.pack("!H", len(topic)) + topic
    if msg.qos:
        head += struct.pack("!H", msg.packet_id or 0)
    flags = (8 if msg.dup else 0) | msg.qos << 1 | (1 if msg.retain else 0)
    return encode(PUBLISH, flags, head + msg.payload)


def connack(rc: int, session_present: bool = False) -> bytes:
    return encode(CONNACK, 0, bytes([1 if session_present and rc == 0 else 0, rc]))


def ack(kind: int, packet_id: int, payload: bytes = b"") -> bytes:
    return encode(kind, 0, struct.pack("!H", packet_id) + payload)


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)
