"""Content-addressed blob store: ``blobs/sha256/<2 hex>/<64 hex>``.

Writes go to a temporary file in the store's own ``tmp/`` folder (same file system),
then :func:`packager.fs.publish_file` fsyncs and renames it into place, so a blob is either whole or absent.
Reads re-hash what they copy and refuse content whose digest does not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from packager.fs import publish_file

CHUNK = 1 << 20
Progress = Callable[[int], None]


class DigestMismatchError(Exception):
    """A blob's content no longer matches its address."""

    def __init__(self, digest: str, actual: str | None):
        self.digest, self.actual = digest, actual
        what = "is missing" if actual is None else f"has sha256 {actual}"
        super().__init__(f"blob sha256:{digest} {what}")


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
        return self.path(digest).is_file()

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
            self._commit(tmp, digest)
            return digest, size
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; return ``(sha256 hex, size)``."""
        digest = hashlib.sha256(data).hexdigest()
        if self.exists(digest):
            return digest, len(data)
        tmp = self.temp_path(".part")
        try:
            tmp.write_bytes(data)
            self._commit(tmp, digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return digest, len(data)

    def _commit(self, tmp: Path, digest: str) -> None:
        final = self.path(digest)
        if final.is_file():
            return  # same content already stored
        final.parent.mkdir(exist_ok=True)
        publish_file(tmp, final, mode=0o444)

    def copy_verified(self, digest: str, dest: Path, progress: Progress | None = None) -> None:
        """Copy blob ``digest`` to ``dest``, re-hashing on the way; raise on mismatch.

        ``dest`` may be left partly written on error: callers write into a staging folder.
        """
        src = self.path(digest)
        hasher = hashlib.sha256()
        try:
            fin = open(src, "rb")  # noqa: SIM115 - closed below
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
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise DigestMismatchError(digest, None) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatchError(digest, actual)
        return data

    def sweep_temp(self, older_than_s: float = 24 * 3600) -> int:
        """Delete temporary files left by killed writers (old enough that no live writer owns them)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in os.scandir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def remove(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
