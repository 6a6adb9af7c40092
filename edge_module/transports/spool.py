"""A bounded on-disk FIFO for outgoing MQTT messages (store-and-forward).

Every result is appended here before it is published and removed only when the broker acknowledges
it, so results survive broker outages (and, from the last acknowledged one on, a restart of the
process). Layout in ``directory``:

- ``<first seq, 20 digits>.seg2``: append-only segments of records ``magic, crc32, length | seq,
  topic, correlation data, meta (JSON: content type, user properties), payload`` (the CRC is the
  body's: a damaged length fails it too); a new segment starts past ``segment_bytes``; a segment is
  deleted once every record in it is acknowledged.
- ``head``: the lowest sequence number not yet acknowledged (8 bytes), rewritten as it advances.

Damage. A torn record at the end (the process died mid-write) is cut off when the spool is opened.
A damaged record elsewhere (a flipped bit: its CRC fails) is skipped: the reader scans forward to
the next record magic whose CRC holds, so only the damaged record is lost; a record whose CRC holds
but that does not decode (e.g. a topic that is not UTF-8) is skipped too. Lost records are logged,
counted (:attr:`Spool.lost`) and acknowledged, so the spool never waits for them.

Safety. The folder holds what is published under the scorer's identity, so it must be private: it is
created 0700 (files 0600), and the spool refuses (:class:`SpoolError`, naming the path and the fix)
a folder that is a symlink, belongs to another user or is writable by group or others, and any entry
that is a symlink, not a regular file or belongs to another user. Files are opened relative to the
folder's descriptor with ``O_NOFOLLOW``. A folder of ours that others may only read is made 0700.

Format versions: ``.seg`` segments (no record magic: a damaged record lost the rest of its segment)
are converted to ``.seg2`` when the spool is opened (written beside, then renamed; the old one is
removed after).

Writes are not fsync'ed unless ``fsync=True``: a process crash loses nothing, a power cut may lose
the last writes. One thread uses a spool at a time (the transport's worker); it is not thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson

log = logging.getLogger("edgepack.mqtt.spool")

_MAGIC = b"\xfe\xed\x5a\xa5"  # 0xFE never occurs in UTF-8 text: JSON payloads hold no false starts
_FRAME = struct.Struct("<4sII")  # magic, crc32 of the body, body length
_V1_FRAME = struct.Struct("<II")  # the .seg format: crc32 of the body, body length
_BODY = struct.Struct("<QHHI")  # seq, topic length, correlation data length, meta length
_HEAD = struct.Struct("<Q")
_SUFFIX = ".seg2"
_V1_SUFFIX = ".seg"
_CHUNK = 256 * 1024
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC
_FIX = "point EDGEPACK_MQTT_SPOOL_DIR (or EDGEPACK_STATE_DIR) at a folder of this user's own, mode 0700"


class SpoolFull(Exception):
    """The spool holds ``max_entries`` records or ``max_bytes`` bytes: wait for acknowledgements."""


class SpoolError(OSError):
    """The spool's folder or one of its files is unsafe to use (symlink, foreign owner, open to others)."""


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
        return _FRAME.pack(_MAGIC, zlib.crc32(body), len(body)) + body

    @staticmethod
    def decode(body: bytes) -> Record:
        """The record in ``body``; raises ValueError (UnicodeDecodeError, JSONDecodeError...) or struct.error."""
        seq, tlen, clen, mlen = _BODY.unpack_from(body)
        at = _BODY.size
        if at + tlen + clen + mlen > len(body):
            raise ValueError("the record's lengths run past its end")
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
    name: str
    last: int = -1  # highest seq written; -1 while empty
    size: int = 0


@dataclass
class _Reader:
    seg: _Segment
    fd: int
    offset: int = 0


def _frames(fd: int, pos: int, size: int) -> Iterator[tuple[int, bytes | None]]:
    """``(end, body)`` for each whole record of the file ``fd`` between ``pos`` and ``size``; a damaged
    stretch (no magic, CRC failed, length past ``size``) comes as ``(where the next record starts, None)``."""
    base, chunk = pos, b""

    def load(at: int, n: int) -> int:
        """Make bytes ``at``..``at + n`` readable in ``chunk``; their index there."""
        nonlocal base, chunk
        if not (base <= at and at + n <= base + len(chunk)):
            base, chunk = at, os.pread(fd, max(n, min(_CHUNK, size - at)), at)
        return at - base

    while pos < size:
        if pos + _FRAME.size <= size:
            i = load(pos, _FRAME.size)
            if len(chunk) - i >= _FRAME.size and chunk[i : i + 4] == _MAGIC:
                crc, length = _FRAME.unpack_from(chunk, i)[1:]
                end = pos + _FRAME.size + length
                if end <= size:
                    i = load(pos, _FRAME.size + length)
                    if len(chunk) - i >= _FRAME.size + length:
                        view = memoryview(chunk)
                        if zlib.crc32(view[i + _FRAME.size : i + _FRAME.size + length]) == crc:
                            yield end, bytes(view[i + _FRAME.size : i + _FRAME.size + length])
                            pos = end
                            continue
        # damaged: on to the next magic
        nxt = pos + 1
        while nxt < size:
            want = min(_CHUNK, size - nxt)
            i = load(nxt, want)
            found = chunk.find(_MAGIC, i)
            if found >= 0:
                nxt = base + found
                break
            if len(chunk) - i < want or base + len(chunk) >= size:  # the end (or the file is shorter)
                nxt = size
            else:  # a magic may straddle the chunk's end
                nxt = max(nxt + 1, base + len(chunk) - (len(_MAGIC) - 1))
        yield min(nxt, size), None
        pos = nxt


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
        self.lost = 0  # records skipped as damaged or undecodable
        self._dir_fd = private_dir(self.directory)
        self._head_fd = -1
        self._writer_fd: int | None = None
        self._reader: _Reader | None = None
        try:
            self._head_fd = self._open("head", os.O_RDWR | os.O_CREAT)
            data = os.pread(self._head_fd, _HEAD.size, 0)
            self._floor = _HEAD.unpack(data)[0] if len(data) == _HEAD.size else 0  # lowest seq not acknowledged
            self._acked: set[int] = set()  # acknowledged seqs above the floor
            self._segments: list[_Segment] = []
            self._next_seq = self._floor
            self._read_seq = self._floor  # next seq to hand out
            self._load()
        except BaseException:
            self.close()
            raise
        # Records not handed out yet, kept in memory while they are few (the usual case: sent right
        # after being stored), so take() need not read them back; None: read from disk.
        self._recent: deque[Record] | None = deque() if self.pending == 0 else None
        self.recent_max = 10_000

    # files ------------------------------------------------------------------------------------
    def _open(self, name: str, flags: int) -> int:
        """Open ``name`` in the folder (no symlinks; created 0600) and check it is a file of ours."""
        path = self.directory / name
        try:
            fd = os.open(name, flags | _OPEN, 0o600, dir_fd=self._dir_fd)
        except OSError as exc:
            if os.path.islink(path):
                raise SpoolError(f"the spool file {path} is a symlink: remove it ({_FIX})") from None
            raise SpoolError(f"cannot open the spool file {path}: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                raise SpoolError(f"the spool file {path} is not a plain file (or has other links): remove it")
            _require_owner(st, f"the spool file {path}", "remove it")
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._dir_fd)

    # opening ----------------------------------------------------------------------------------
    def _load(self) -> None:
        names = os.listdir(self._dir_fd)
        for name in sorted(n for n in names if n.endswith(_V1_SUFFIX) and n[: -len(_V1_SUFFIX)].isdigit()):
            self._migrate_v1(name)
        names = sorted(n for n in os.listdir(self._dir_fd) if n.endswith(_SUFFIX) and n[: -len(_SUFFIX)].isdigit())
        for name in names:
            seg = _Segment(int(name[: -len(_SUFFIX)]), name)
            fd = self._open(name, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                good, last, damaged = 0, -1, 0
                for end, body in _frames(fd, 0, size):
                    if body is None:
                        damaged += 1
                        continue
                    if len(body) >= _BODY.size:
                        last = _BODY.unpack_from(body)[0]
                    good = end
                if good < size:  # a torn tail: keep what is whole
                    os.ftruncate(fd, good)
                    damaged -= 1
            finally:
                os.close(fd)
            if damaged > 0:
                log.warning(
                    "the spool segment %s has %d damaged stretch(es): their records are lost, the rest is kept",
                    self.directory / name,
                    damaged,
                )
            seg.size, seg.last = good, last
            if seg.last >= 0 and seg.last < self._floor:
                self._unlink(name)  # fully acknowledged before the last stop
                continue
            self._segments.append(seg)
        if self._segments:
            last = max(s.last for s in self._segments)
            self._next_seq = max(self._floor, last + 1)
            self._floor = max(self._floor, self._segments[0].first if self._segments[0].last >= 0 else self._floor)
        self._read_seq = self._floor

    def _migrate_v1(self, name: str) -> None:
        """Rewrite a ``.seg`` segment as ``.seg2`` (its whole records, in order), then remove it."""
        new = name[: -len(_V1_SUFFIX)] + _SUFFIX
        tmp = new + ".tmp"
        fd = self._open(name, os.O_RDONLY)
        try:
            data = os.read(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        out, at = [], 0
        while at + _V1_FRAME.size <= len(data):
            crc, length = _V1_FRAME.unpack_from(data, at)
            body = data[at + _V1_FRAME.size : at + _V1_FRAME.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                break  # the old format cannot resynchronise: the rest is lost, as it was
            out.append(_FRAME.pack(_MAGIC, crc, length) + body)
            at += _V1_FRAME.size + length
        self._unlink(tmp)
        fd = self._open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, b"".join(out))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, new, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._unlink(name)
        log.info("converted the spool segment %s to %s (%d records)", self.directory / name, new, len(out))

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
            seg = _Segment(self._next_seq, f"{self._next_seq:020d}{_SUFFIX}")
            self._segments.append(seg)
            self._writer_fd = None
        if self._writer_fd is None:
            self._writer_fd = self._open(seg.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return seg

    # reading ----------------------------------------------------------------------------------
    def take(self, limit: int) -> list[Record]:
        """Up to ``limit`` records not handed out yet, in append order (damaged ones are skipped)."""
        recent = self._recent
        if recent is not None:
            out = [recent.popleft() for _ in range(min(limit, len(recent)))]
            if out:
                self._read_seq = out[-1].seq + 1
                self._close_reader()  # the disk position is behind now
            return out
        out: list[Record] = []
        lost: list[int] = []
        while len(out) < limit and self._read_seq < self._next_seq:
            if self._reader is None:
                seg = self._segments[self._segment_of(self._read_seq)]
                self._reader = _Reader(seg, self._open(seg.name, os.O_RDONLY))
            reader = self._reader
            for end, body in _frames(reader.fd, reader.offset, reader.seg.size):
                reader.offset = end
                if body is None:
                    continue
                try:
                    rec = Record.decode(body)
                except (ValueError, struct.error) as exc:
                    seq = _BODY.unpack_from(body)[0] if len(body) >= _BODY.size else -1
                    log.warning("skipping a spooled reply that does not decode (seq %d): %s", seq, exc)
                    if seq >= self._read_seq:
                        lost.extend(range(self._read_seq, seq + 1))
                        self._read_seq = seq + 1
                    continue
                if rec.seq >= self._read_seq:  # older ones were acknowledged before a restart
                    lost.extend(range(self._read_seq, rec.seq))  # damaged ones in between
                    self._read_seq = rec.seq + 1
                    out.append(rec)
                    if len(out) >= limit:
                        break
            if reader.offset >= reader.seg.size:  # the end of this segment: on to the next one, if any
                index = self._segments.index(reader.seg)
                if index + 1 >= len(self._segments):
                    if self._read_seq < self._next_seq and reader.offset >= reader.seg.size:
                        lost.extend(range(self._read_seq, self._next_seq))  # a damaged end
                        self._read_seq = self._next_seq
                    break
                self._close_reader()
                nxt = self._segments[index + 1].first
                lost.extend(range(self._read_seq, nxt))
                self._read_seq = max(self._read_seq, nxt)
        lost = [s for s in lost if s >= self._floor and s not in self._acked]
        if lost:
            self.lost += len(lost)
            log.warning("%d spooled repl(ies) were damaged and are lost (seq %d..%d)", len(lost), lost[0], lost[-1])
            self.ack(lost)
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
            self._unlink(seg.name)

    def close(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None
        self._close_reader()
        if self._head_fd >= 0:
            os.close(self._head_fd)
            self._head_fd = -1
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1


def _require_owner(st: os.stat_result, what: str, remedy: str) -> None:
    """:class:`SpoolError` (``what``, then ``remedy``) unless ``st`` belongs to this process's user."""
    if st.st_uid != os.geteuid():
        raise SpoolError(
            f"{what} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()}): {remedy} ({_FIX})"
        )


def private_dir(path: Path) -> int:
    """A descriptor of the folder ``path``, created 0700 when missing (parents too), after checking it
    is safe for the spool: not a symlink, ours, not writable by group or others."""
    missing = []
    p = path
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SpoolError(f"cannot create the spool folder {p}: {exc.strerror} ({_FIX})") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _OPEN)
    except OSError as exc:
        if os.path.islink(path):
            raise SpoolError(f"the spool folder {path} is a symlink: refusing it ({_FIX})") from None
        raise SpoolError(f"cannot open the spool folder {path}: {exc.strerror} ({_FIX})") from None
    try:
        st = os.fstat(fd)
        _require_owner(st, f"the spool folder {path}", "refusing it")
        if st.st_mode & 0o022:
            raise SpoolError(
                f"the spool folder {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"refusing it; check its files and chmod 700 it, or {_FIX}"
            )
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd
