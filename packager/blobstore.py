"""Content-addressed blob store: ``blobs/sha256/<2 hex>/<64 hex>``.

Writes go to a temporary file in the store's own ``tmp/`` folder (same file system),
then :func:`packager.fs.publish_file` fsyncs and renames it into place, so a blob is either whole or absent.
Storing content that is already there re-hashes the stored copy and replaces it if it was damaged.
Reads re-hash what they copy and refuse content whose digest does not match. Blobs are opened
without following symbolic links.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from packager.fs import publish_file

CHUNK = 1 << 20
TEMP_GRACE_S = 24 * 3600  # a temporary file untouched this long belongs to no live writer
Progress = Callable[[int], None]

log = logging.getLogger(__name__)
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _open_blob(path: Path) -> BinaryIO:
    """Open a stored blob for reading; a symbolic link counts as missing content (``FileNotFoundError``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or os.path.islink(path):
            raise FileNotFoundError(str(path)) from None
        raise
    return os.fdopen(fd, "rb")


class DigestMismatchError(Exception):
    """A blob's content no longer matches its address."""

    def __init__(self, digest: str, actual: str | None):
        self.digest, self.actual = digest, actual
        what = "is missing" if actual is None else f"has sha256 {actual}"
        super().__init__(f"blob sha256:{digest} {what}")


@dataclass(frozen=True)
class StoredBlob:
    """A blob file as found on disk (not verified)."""

    digest: str
    size: int
    mtime: float


class BlobStore:
    """Blobs addressed by sha256 under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.objects = self.root / "sha256"

    def ensure(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        """Whether blob ``digest`` is stored as a regular file (not checked against its digest)."""
        try:
            return stat.S_ISREG(os.lstat(self.path(digest)).st_mode)
        except FileNotFoundError:
            return False

    def _damage(self, digest: str, size: int) -> str | None:
        """None if blob ``digest`` is stored intact (``size`` bytes hashing to ``digest``), else what is wrong."""
        try:
            fin = _open_blob(self.path(digest))
        except FileNotFoundError:
            return "a symbolic link" if os.path.islink(self.path(digest)) else "missing"
        with fin:
            st = os.fstat(fin.fileno())
            if not stat.S_ISREG(st.st_mode):
                return "not a regular file"
            if st.st_size != size:
                return f"{st.st_size} bytes instead of {size}"
            hasher = hashlib.sha256()
            while chunk := fin.read(CHUNK):
                hasher.update(chunk)
        actual = hasher.hexdigest()
        return None if actual == digest else f"corrupted (sha256 {actual})"

    def temp_path(self, suffix: str = "") -> Path:
        return self.tmp / f"{uuid.uuid4().hex}{suffix}"

    def put_file(self, src: Path, progress: Progress | None = None) -> tuple[str, int]:
        """Copy ``src`` into the store; return ``(sha256 hex, size)``. Idempotent."""
        tmp = self.temp_path(".part")
        hasher = hashlib.sha256()
        size = 0
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    hasher.update(chunk)
                    fout.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(len(chunk))
            digest = hasher.hexdigest()
            self._commit(tmp, digest, size)
            return digest, size
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; return ``(sha256 hex, size)``."""
        digest = hashlib.sha256(data).hexdigest()
        damage = self._damage(digest, len(data))
        if damage is None:
            self._touch(digest)
            return digest, len(data)
        tmp = self.temp_path(".part")
        try:
            tmp.write_bytes(data)
            self._publish(tmp, digest, damage)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return digest, len(data)

    def _commit(self, tmp: Path, digest: str, size: int) -> None:
        """Publish the finished ``tmp`` as blob ``digest`` unless that blob is already stored intact."""
        damage = self._damage(digest, size)
        if damage is None:
            self._touch(digest)  # same content already stored
            return
        self._publish(tmp, digest, damage)

    def _publish(self, tmp: Path, digest: str, damage: str) -> None:
        final = self.path(digest)
        final.parent.mkdir(exist_ok=True)
        publish_file(tmp, final, mode=0o444)  # a rename: replaces a damaged file (or a link) whole
        if damage != "missing":
            log.warning(
                "repaired blob sha256:%s in %s: the stored copy was %s; replaced it with the content being stored",
                digest,
                self.root,
                damage,
            )

    def _touch(self, digest: str) -> None:
        """Mark a reused blob as recently used, so ``gc``'s grace period covers the register reusing it."""
        with contextlib.suppress(OSError):
            os.utime(self.path(digest), follow_symlinks=False)

    def copy_verified(self, digest: str, dest: Path, progress: Progress | None = None) -> None:
        """Copy blob ``digest`` to ``dest``, re-hashing on the way; raise on mismatch.

        ``dest`` may be left partly written on error: callers write into a staging folder.
        """
        src = self.path(digest)
        hasher = hashlib.sha256()
        try:
            fin = _open_blob(src)
        except FileNotFoundError:
            raise DigestMismatchError(digest, None) from None
        with fin, open(dest, "wb") as fout:
            while chunk := fin.read(CHUNK):
                hasher.update(chunk)
                fout.write(chunk)
                if progress:
                    progress(len(chunk))
        actual = hasher.hexdigest()
        if actual != digest:
            raise DigestMismatchError(digest, actual)

    def read_verified(self, digest: str) -> bytes:
        """Return a (small) blob's bytes after checking its digest."""
        try:
            with _open_blob(self.path(digest)) as fin:
                data = fin.read()
        except FileNotFoundError:
            raise DigestMismatchError(digest, None) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatchError(digest, actual)
        return data

    def sweep_temp(self, older_than_s: float = TEMP_GRACE_S) -> int:
        """Delete temporary files left by killed writers (old enough that no live writer owns them)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                if not entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def remove(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def stored(self) -> Iterator[StoredBlob]:
        """Every blob file on disk (links included, not followed); other names are ignored."""
        for prefix in os.scandir(self.objects):
            if not (prefix.is_dir(follow_symlinks=False) and len(prefix.name) == 2):
                continue
            for entry in os.scandir(prefix.path):
                if _DIGEST.fullmatch(entry.name) and entry.name[:2] == prefix.name:
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat(follow_symlinks=False)
                        yield StoredBlob(entry.name, st.st_size, st.st_mtime)

    def remove_if_older(self, digest: str, cutoff: float) -> bool:
        """Remove blob ``digest`` if it was last written or reused before ``cutoff``; True if removed."""
        path = self.path(digest)
        try:
            if os.lstat(path).st_mtime >= cutoff:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True
