"""A bounded on-disk FIFO for outgoing MQTT messages (store-and-forward).

Every result is appended here before it is published and removed only when the broker acknowledges
it, so results survive broker outages (and, from the last acknowledged one on, a restart of the
process). Layout in ``directory``:

- ``<first seq, 20 digits>.seg``: append-only segments of records ``crc32, length | seq, topic,
  correlation data, meta (JSON: content type, user properties), payload``; a new segment starts past
  ``segment_bytes``; a segment is deleted once every record in it is acknowledged.
- ``head``: the lowest sequence number not yet acknowledged (8 bytes), rewritten as it advances.

A torn record at the end (the process died mid-write) is cut off when the spool is opened. Writes
are not fsync'ed unless ``fsync=True``: a process crash loses nothing, a power cut may lose the
last writes. One thread uses a spool at a time (the transport's worker); it is not thread-safe.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson

_FRAME = struct.Struct("<II")  # crc32 of the body, body length
_BODY = struct.Struct("<QHHI")  # seq, topic length, correlation data length, meta length
_HEAD = struct.Struct("<Q")
_SUFFIX = ".seg"
_CHUNK = 256 * 1024


class SpoolFull(Exception):
    """The spool holds ``max_entries`` records or ``max_bytes`` bytes: wait for acknowledgements."""


class Record(NamedTuple):
    """One outgoing message (``seq`` is set by the spool)."""

    topic: str
    payload: bytes
    correlation_data: bytes | None = None
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    seq: int = -1

    def encode(self, seq: int) -> bytes:
        topic = self.topic.encode("utf-8")
        corr = self.correlation_data or b""
        meta = b""
        if self.content_type or self.user_properties:
            meta = orjson.dumps({"c": self.content_type, "u": self.user_properties})
        body = b"".join((_BODY.pack(seq, len(topic), len(corr), len(meta)), topic, corr, meta, self.payload))
        return _FRAME.pack(zlib.crc32(body), len(body)) + body

    @staticmethod
    def decode(body: bytes) -> Record:
        seq, tlen, clen, mlen = _BODY.unpack_from(body)
        at = _BODY.size
        topic = body[at : at + tlen].decode("utf-8")
        at += tlen
        corr = body[at : at + clen] or None
        at += clen
        content_type, users = None, ()
        if mlen:
            meta = orjson.loads(body[at : at + mlen])
            content_type = meta.get("c")
            users = tuple((str(k), str(v)) for k, v in meta.get("u") or ())
        at += mlen
        return Record(topic, body[at:], corr, content_type, users, seq)


@dataclass
class _Segment:
    first: int
    path: Path
    last: int = -1  # highest seq written; -1 while empty
    size: int = 0


@dataclass
class _Reader:
    seg: _Segment
    fd: int
    offset: int = 0


class Spool:
    """Append, hand out in order (``take``), acknowledge in any order (``ack``)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_entries: int = 100_000,
        max_bytes: int = 256 * 2**20,
        segment_bytes: int = 4 * 2**20,
        fsync: bool = False,
    ):
        self.directory = Path(directory)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.directory.mkdir(parents=True, exist_ok=True)
        self._head_path = self.directory / "head"
        self._floor = self._read_head()  # lowest seq not acknowledged
        self._acked: set[int] = set()  # acknowledged seqs above the floor
        self._segments: list[_Segment] = []
        self._next_seq = self._floor
        self._reader: _Reader | None = None
        self._read_seq = self._floor  # next seq to hand out
        self._head_fd = os.open(self._head_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._writer_fd: int | None = None
        self._load()
        # Records not handed out yet, kept in memory while they are few (the usual case: sent right
        # after being stored), so take() need not read them back; None: read from disk.
        self._recent: deque[Record] | None = deque() if self.pending == 0 else None
        self.recent_max = 10_000

    # opening ----------------------------------------------------------------------------------
    def _read_head(self) -> int:
        try:
            data = self._head_path.read_bytes()
        except FileNotFoundError:
            return 0
        return _HEAD.unpack(data[: _HEAD.size])[0] if len(data) >= _HEAD.size else 0

    def _load(self) -> None:
        paths = sorted(p for p in self.directory.iterdir() if p.suffix == _SUFFIX and p.stem.isdigit())
        for path in paths:
            seg = _Segment(int(path.stem), path)
            good, last = self._scan(path)
            if good < path.stat().st_size:  # a torn tail: keep what is whole
                os.truncate(path, good)
            seg.size, seg.last = good, last
            if seg.last >= 0 and seg.last < self._floor:
                path.unlink()  # fully acknowledged before the last stop
                continue
            self._segments.append(seg)
        if self._segments:
            last = max(s.last for s in self._segments)
            self._next_seq = max(self._floor, last + 1)
            self._floor = max(self._floor, self._segments[0].first if self._segments[0].last >= 0 else self._floor)
        self._read_seq = self._floor

    @staticmethod
    def _scan(path: Path) -> tuple[int, int]:
        """(bytes of whole records, last seq) of a segment."""
        good, last = 0, -1
        with open(path, "rb") as f:
            while True:
                frame = f.read(_FRAME.size)
                if len(frame) < _FRAME.size:
                    break
                crc, length = _FRAME.unpack(frame)
                body = f.read(length)
                if len(body) < length or zlib.crc32(body) != crc:
                    break
                last = _BODY.unpack_from(body)[0]
                good += _FRAME.size + length
        return good, last

    # sizes ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Records not acknowledged yet."""
        return self._next_seq - self._floor - len(self._acked)

    @property
    def pending(self) -> int:
        """Records not handed out yet."""
        return self._next_seq - self._read_seq

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def room(self) -> int:
        """How many more records fit by count (bytes are checked on append)."""
        return max(0, self.max_entries - (self._next_seq - self._floor))

    # writing ----------------------------------------------------------------------------------
    def append(self, records: list[Record]) -> None:
        """Store ``records`` in order; raise :class:`SpoolFull` (storing none) when they do not fit."""
        if not records:
            return
        if len(records) > self.room():
            raise SpoolFull(f"the spool holds {self._next_seq - self._floor} of at most {self.max_entries} records")
        blobs = []
        seq = self._next_seq
        for rec in records:
            blobs.append(rec.encode(seq))
            seq += 1
        data = b"".join(blobs)
        if self.size_bytes + len(data) > self.max_bytes and len(self) > 0:
            raise SpoolFull(f"the spool holds {self.size_bytes} of at most {self.max_bytes} bytes")
        seg = self._tail()
        fd = self._writer_fd
        assert fd is not None
        os.write(fd, data)
        if self.fsync:
            os.fsync(fd)
        seg.size += len(data)
        seg.last = seq - 1
        if self._recent is not None:
            if len(self._recent) + len(records) > self.recent_max:
                self._recent = None
            else:
                first = self._next_seq
                self._recent.extend(rec._replace(seq=first + i) for i, rec in enumerate(records))
        self._next_seq = seq

    def _tail(self) -> _Segment:
        seg = self._segments[-1] if self._segments else None
        if seg is None or seg.size >= self.segment_bytes:
            if self._writer_fd is not None:
                os.close(self._writer_fd)
            seg = _Segment(self._next_seq, self.directory / f"{self._next_seq:020d}{_SUFFIX}")
            self._segments.append(seg)
            self._writer_fd = None
        if self._writer_fd is None:
            self._writer_fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return seg

    # reading ----------------------------------------------------------------------------------
    def take(self, limit: int) -> list[Record]:
        """Up to ``limit`` records not handed out yet, in append order."""
        recent = self._recent
        if recent is not None:
            out = [recent.popleft() for _ in range(min(limit, len(recent)))]
            if out:
                self._read_seq = out[-1].seq + 1
                self._close_reader()  # the disk position is behind now
            return out
        out = []
        while len(out) < limit and self._read_seq < self._next_seq:
            if self._reader is None:
                seg = self._segments[self._segment_of(self._read_seq)]
                self._reader = _Reader(seg, os.open(seg.path, os.O_RDONLY))
            reader = self._reader
            chunk = os.pread(reader.fd, _CHUNK, reader.offset)
            at = 0
            while len(out) < limit and at + _FRAME.size <= len(chunk):
                _, length = _FRAME.unpack_from(chunk, at)
                end = at + _FRAME.size + length
                if end > len(chunk):
                    if at == 0 and len(chunk) == _CHUNK:  # one record larger than a chunk
                        chunk = os.pread(reader.fd, end, reader.offset)
                        if len(chunk) == end:
                            continue
                    break
                rec = Record.decode(chunk[at + _FRAME.size : end])
                at = end
                if rec.seq >= self._read_seq:  # older ones were acknowledged before a restart
                    self._read_seq = rec.seq + 1
                    out.append(rec)
            reader.offset += at
            if at == 0:  # the end of this segment: on to the next one, if any
                index = self._segments.index(reader.seg)
                if index + 1 >= len(self._segments):
                    break
                os.close(reader.fd)
                self._reader = None
                self._read_seq = max(self._read_seq, self._segments[index + 1].first)
        if self._read_seq >= self._next_seq:
            self._recent = deque()  # caught up: serve from memory again
        return out

    def _segment_of(self, seq: int) -> int:
        for i in range(len(self._segments) - 1, -1, -1):
            if self._segments[i].first <= seq:
                return i
        return 0

    def rewind(self) -> None:
        """Hand out every unacknowledged record again (e.g. after the client lost what it had in flight)."""
        self._close_reader()
        self._read_seq = self._floor
        self._recent = deque() if self.pending == 0 else None

    def _close_reader(self) -> None:
        if self._reader is not None:
            os.close(self._reader.fd)
            self._reader = None

    # acknowledging ----------------------------------------------------------------------------
    def ack(self, seqs: list[int]) -> None:
        """Mark records as delivered; the head advances over contiguous ones and finished segments go."""
        if not seqs:
            return
        self._acked.update(s for s in seqs if s >= self._floor)
        floor = self._floor
        while floor in self._acked:
            self._acked.discard(floor)
            floor += 1
        if floor == self._floor:
            return
        self._floor = floor
        os.pwrite(self._head_fd, _HEAD.pack(floor), 0)
        while len(self._segments) > 1 and self._segments[0].last < floor:
            seg = self._segments.pop(0)
            if self._reader is not None and self._reader.seg is seg:
                self._close_reader()
            seg.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None
        self._close_reader()
        os.close(self._head_fd)
