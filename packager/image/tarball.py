"""Deterministic layer tarballs: the same files give the same gzip digest on every run and machine.

A layer is a PAX tar (entries sorted by path, parent directories first with mode 0755, mtime from
``SOURCE_DATE_EPOCH`` or 0, uid/gid 0, no user or group names, modes 0644/0755, or 0600/0700 for
files that were not world-readable where :func:`host_entry` was asked to keep them so) compressed with
zlib at a fixed level behind a fixed gzip header (mtime 0, no file name, OS byte 255). One
streaming pass computes both the blob ``digest`` (of the gzip bytes) and the ``diff_id`` (of the
tar). Blobs land atomically in ``<cache_root>/layers/sha256/<hex>``; a source with a
``cache_key`` seen before is answered from ``<cache_root>/layers/keys/`` without re-tarring.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import struct
import tarfile
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from packager.errors import EdgepackError, InvalidInputError
from packager.fs import publish_file, write_atomic
from packager.image.spec import FileEntry, Layer, LayerSource, NullReporter, Reporter

#: zlib level for layers. Measured on the ~150 MB dependency layer (2 shared cores): level 1 is
#: ~3x faster than 6 for ~10 % more bytes; the dependency layer is built once per requirements set.
GZIP_LEVEL = 1
#: Bumped whenever the tar or gzip bytes for the same files would change (part of every cache key).
FORMAT_VERSION = "edgepack-layer-v1"
MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
_CHUNK = 1 << 20
_GZIP_OS_UNKNOWN = 255


def source_date_epoch() -> int:
    """The fixed mtime of every entry: ``$SOURCE_DATE_EPOCH`` (a whole number of seconds) or 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return 0
    try:
        epoch = int(value)
    except ValueError:
        raise InvalidInputError(
            f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds; unset or fix it"
        ) from None
    if epoch < 0:
        raise InvalidInputError(f"SOURCE_DATE_EPOCH={value!r} is negative; use seconds since 1970")
    return epoch


def normal_mode(mode: int, keep_private: bool = False) -> int:
    """0755 when any execute bit is set, else 0644 (so umask and ownership do not leak into digests).

    With ``keep_private``, a file that is not world-readable becomes 0700/0600 instead: never wider
    than it was (a 0600 ``.env`` stays owner-only in the image).
    """
    if keep_private and not mode & 0o004:
        return 0o700 if mode & 0o111 else 0o600
    return 0o755 if mode & 0o111 else 0o644


def host_entry(source: Path, dest: str, keep_private: bool = False) -> FileEntry:
    """A :class:`FileEntry` for the host file ``source`` at image path ``dest`` (symlinks kept as links).

    ``keep_private`` keeps owner-only modes (user files); without it modes are 0644/0755 (installed files).
    """
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        return FileEntry(dest, link=os.readlink(source), mode=0o777)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{source} is not a regular file or symbolic link; remove it from the layer's sources")
    return FileEntry(dest, source=source, mode=normal_mode(st.st_mode, keep_private))


def tree_entries(root: Path, dest: str, skip_dirs: Iterable[str] = ("__pycache__",)) -> list[FileEntry]:
    """Entries for every file and symlink under ``root``, placed under image folder ``dest`` (modes 0644/0755).

    Symlinked folders are kept as links (not followed); ``skip_dirs`` names are left out. A user's
    source directory is collected by :func:`packager.image.source_dir.collect` instead (ignore files, modes).
    """
    skip = set(skip_dirs)
    out: list[FileEntry] = []
    base = PurePosixPath(dest)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root).as_posix()
        keep = []
        for d in sorted(dirnames):
            if d in skip:
                continue
            if (here / d).is_symlink():
                out.append(host_entry(here / d, str(base / rel / d)))
            else:
                keep.append(d)
        dirnames[:] = keep
        out.extend(host_entry(here / f, str(base / rel / f)) for f in filenames)
    return out


def stat_key(files: Iterable[FileEntry], extra: str = "") -> str:
    """A cheap cache key: image paths, modes and links, plus size/mtime/inode of host files and hashes of data."""
    h = hashlib.sha256(f"{FORMAT_VERSION}\0{extra}\0".encode())
    for f in files:
        h.update(f"{f.path}\0{f.mode:o}\0".encode())
        if f.source is not None:
            st = os.stat(f.source)
            h.update(f"src\0{f.source}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0".encode())
        elif f.data is not None:
            h.update(b"data\0" + hashlib.sha256(f.data).digest())
        else:
            h.update(f"link\0{f.link}\0".encode())
    return h.hexdigest()


class _GzipDigestWriter:
    """File-like sink for tarfile: hashes the tar, gzips it with a fixed header, hashes and writes the gzip."""

    def __init__(self, out: BinaryIO, level: int):
        self._out = out
        self._diff = hashlib.sha256()
        self._blob = hashlib.sha256()
        self._crc = 0
        self._raw = 0
        self._size = 0
        self._buf: list[bytes] = []
        self._buffered = 0
        self._zip = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        self._emit(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([xfl, _GZIP_OS_UNKNOWN]))

    def _emit(self, data: bytes) -> None:
        if data:
            self._blob.update(data)
            self._out.write(data)
            self._size += len(data)

    def _flush_buffer(self) -> None:
        if self._buf:
            data = b"".join(self._buf)
            self._buf, self._buffered = [], 0
            self._feed(data)

    def _feed(self, data: bytes | memoryview) -> None:
        self._diff.update(data)
        self._crc = zlib.crc32(data, self._crc)
        self._emit(self._zip.compress(data))

    def write(self, data: bytes) -> int:
        n = len(data)
        self._raw += n
        if n >= _CHUNK:
            self._flush_buffer()
            self._feed(data)
        else:
            self._buf.append(bytes(data))
            self._buffered += n
            if self._buffered >= _CHUNK:
                self._flush_buffer()
        return n

    def tell(self) -> int:
        return self._raw

    def finish(self) -> tuple[str, str, int]:
        """Close the gzip stream; return ``(digest, diff_id, compressed size)``."""
        self._flush_buffer()
        self._emit(self._zip.flush())
        self._emit(struct.pack("<II", self._crc & 0xFFFFFFFF, self._raw & 0xFFFFFFFF))
        return f"sha256:{self._blob.hexdigest()}", f"sha256:{self._diff.hexdigest()}", self._size


def _directories(files: Iterable[FileEntry]) -> set[str]:
    dirs: set[str] = set()
    for f in files:
        parent = PurePosixPath(f.path).parent
        while str(parent) not in ("/", "."):
            dirs.add(str(parent))
            parent = parent.parent
    return dirs


def _tar_name(path: str) -> str:
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise InvalidInputError(f"layer path {path!r} must be absolute and must not contain '..'")
    return str(p.relative_to("/"))


def _sort_key(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts


def write_tar(files: Iterable[FileEntry], writer: _GzipDigestWriter, reporter: Reporter, task: str) -> None:
    """Write ``files`` and their parent folders as a deterministic PAX tar into ``writer``."""
    entries = list(files)
    names = [f.path for f in entries]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInputError(f"layer has the same image path twice: {', '.join(dup[:5])}")
    dirs = _directories(entries) - set(names)
    mtime = source_date_epoch()
    items: list[tuple[tuple[str, ...], str | FileEntry]] = [(_sort_key(d), d) for d in dirs]
    items += [(_sort_key(f.path), f) for f in entries]
    items.sort(key=lambda it: it[0])
    with tarfile.TarFile(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK) as tar:  # type: ignore[arg-type]
        for _, item in items:
            info = tarfile.TarInfo(_tar_name(item if isinstance(item, str) else item.path))
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if isinstance(item, str):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif item.link is not None:
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, item.link
                tar.addfile(info)
            elif item.data is not None:
                info.mode, info.size = normal_mode(item.mode, keep_private=True), len(item.data)
                tar.addfile(info, _BytesReader(item.data))
                reporter.advance(task, info.size)
            elif item.source is not None:
                info.mode = normal_mode(item.mode, keep_private=True)
                with open(item.source, "rb") as fh:
                    info.size = os.fstat(fh.fileno()).st_size
                    if item.sha256:
                        reader = _HashingReader(fh)
                        tar.addfile(info, reader)  # type: ignore[arg-type]
                        item.check_digest(reader.hexdigest())
                    else:
                        tar.addfile(info, fh)
                reporter.advance(task, info.size)
            else:
                raise InvalidInputError(f"layer entry {item.path} has no source, data or link")


class _HashingReader:
    """Hashes what tarfile reads from ``fh`` (one pass: the bytes that go into the layer are the bytes hashed)."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _BytesReader:
    def __init__(self, data: bytes):
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else self._pos + n
        chunk = self._view[self._pos : end]
        self._pos += len(chunk)
        return bytes(chunk)


def layers_dir(cache_root: Path) -> Path:
    return Path(cache_root) / "layers"


def blob_file(cache_root: Path, digest: str) -> Path:
    """Where a built layer blob with ``digest`` (``sha256:...``) is kept."""
    return layers_dir(cache_root) / "sha256" / digest.split(":", 1)[-1]


def _key_file(cache_root: Path, source: LayerSource) -> Path:
    material = f"{FORMAT_VERSION}\0{GZIP_LEVEL}\0{source_date_epoch()}\0{source.name}\0{source.cache_key}"
    return layers_dir(cache_root) / "keys" / hashlib.sha256(material.encode()).hexdigest()


def _cached(cache_root: Path, source: LayerSource) -> Layer | None:
    key_file = _key_file(cache_root, source)
    try:
        meta = json.loads(key_file.read_text())
        path = blob_file(cache_root, meta["digest"])
        if path.stat().st_size != meta["size"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return Layer(source.name, path, meta["digest"], meta["diff_id"], meta["size"], MEDIA_TYPE, source.comment)


def _size(entry: FileEntry) -> int:
    if entry.data is not None:
        return len(entry.data)
    if entry.source is None:
        return 0
    try:
        return os.stat(entry.source).st_size
    except OSError:
        return 0  # reported when the tar reads it


def build_layer(source: LayerSource, cache_root: Path, reporter: Reporter | None = None) -> Layer:
    """Tar and gzip ``source`` into the layer cache (or return the layer already built for its cache key)."""
    reporter = reporter or NullReporter()
    cache_root = Path(cache_root)
    task = f"layer {source.name}"
    if source.cache_key:
        hit = _cached(cache_root, source)
        if hit is not None:
            reporter.done(task, f"cached {hit.digest[7:19]}")
            return hit
    reporter.start(task, sum(_size(f) for f in source.files))
    tmp_dir = layers_dir(cache_root) / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{source.name}.{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "wb") as out:
            writer = _GzipDigestWriter(out, GZIP_LEVEL)
            try:
                write_tar(source.files, writer, reporter, task)
            except OSError as exc:
                raise EdgepackError(
                    f"cannot read {exc.filename or 'a file'} for layer {source.name}: {exc.strerror}"
                ) from exc
            digest, diff_id, size = writer.finish()
        final = blob_file(cache_root, digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        publish_file(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if source.cache_key:
        meta = {"name": source.name, "digest": digest, "diff_id": diff_id, "size": size}
        write_atomic(_key_file(cache_root, source), json.dumps(meta, sort_keys=True).encode())
    reporter.done(task, digest[7:19])
    return Layer(source.name, final, digest, diff_id, size, MEDIA_TYPE, source.comment)
