"""Atomic file-system updates: readers see the old content or the new, never half of either.

Every helper writes beside its target (same folder, so the same file system), fsyncs the data,
renames it into place and fsyncs the folder, so the rename survives a power cut too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the renames inside folder ``path`` durable."""
    _fsync(path)


def _sibling(path: Path, tag: str) -> Path:
    """A hidden, unique name next to ``path``."""
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def _remove(path: Path) -> None:
    """Remove a file, link or folder; a missing one is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def publish_file(tmp: str | os.PathLike, dest: str | os.PathLike, mode: int | None = None) -> None:
    """Rename the finished file ``tmp`` onto ``dest`` (same file system), durably.

    ``mode`` sets the permissions first (else ``tmp``'s are kept). On error ``tmp`` is left for
    the caller to remove.
    """
    tmp, dest = Path(tmp), Path(dest)
    _fsync(tmp)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: int | None = None) -> Iterator[BinaryIO]:
    """Write ``path`` through a file object; it replaces ``path`` only when the block ends without error.

    The new file gets ``mode``, else the mode of the file it replaces, else the default (``0o666``
    less the umask). Parent folders are created. On error ``path`` is untouched and no temporary file is left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        with contextlib.suppress(FileNotFoundError):
            mode = os.stat(path).st_mode & 0o7777
    tmp = _sibling(path, "tmp")
    try:
        with open(tmp, "xb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
            if mode is not None:
                os.fchmod(out.fileno(), mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see :func:`atomic_writer` for ``mode``)."""
    with atomic_writer(path, mode) as out:
        out.write(data)


def replace_dir(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished folder (or file) ``staged`` to ``final``, replacing what is there.

    An existing ``final`` is first moved aside; if ``staged`` then cannot be moved in, it is put
    back. So ``final`` is never half-written: it holds the old content or the new (and is absent
    only between the two renames). ``staged`` must be on the same file system (a sibling, or
    inside the same parent); on error the caller removes it.
    """
    staged, final = Path(staged), Path(final)
    backup = _sibling(final, "old")
    try:
        os.replace(final, backup)
    except FileNotFoundError:  # nothing to replace (or someone removed it meanwhile)
        os.replace(staged, final)
        fsync_dir(final.parent)
        return
    try:
        os.replace(staged, final)
    except BaseException as exc:
        try:
            os.replace(backup, final)
        except OSError as restore_error:
            exc.add_note(f"could not restore {final} ({restore_error}); its previous content is at {backup}")
        raise
    fsync_dir(final.parent)
    _remove(backup)


__all__ = ["atomic_writer", "fsync_dir", "publish_file", "replace_dir", "write_atomic"]
