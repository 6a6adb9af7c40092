"""A workspace: a folder holding the SQLite registry (WAL) and the content-addressed blob store.

Layout::

    <workspace>/registry.db        models, versions, files (SQLite, WAL)
    <workspace>/blobs/sha256/...   file contents by digest
    <workspace>/blobs/tmp/         in-flight writes (renamed into place when whole)
    <workspace>/cache/             materialised models for get_model_path
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from packager.blobstore import TEMP_GRACE_S, BlobStore, StoredBlob
from packager.errors import InvalidInputError, NotFoundError
from packager.registry.store import RegistryStore

ENV_WORKSPACE = "EDGEPACK_WORKSPACE"
DEFAULT_DIR = ".edgepack"
GC_GRACE_S = 3600.0


@dataclass
class GcReport:
    """What :meth:`Workspace.gc` removed (or, in a dry run, would remove)."""

    dry_run: bool
    removed: list[StoredBlob] = field(default_factory=list)
    kept_recent: int = 0  # unreferenced but newer than the grace period: a register may be using them
    temp_removed: int = 0

    @property
    def bytes(self) -> int:
        return sum(b.size for b in self.removed)

    def serialize(self) -> dict[str, object]:
        """A JSON-ready dict (``edgepack model gc --json``)."""
        return {
            "dryRun": self.dry_run,
            "removed": [{"digest": f"sha256:{b.digest}", "size": b.size} for b in self.removed],
            "bytes": self.bytes,
            "keptRecent": self.kept_recent,
            "tempRemoved": self.temp_removed,
        }


class Workspace:
    """A local model workspace: its paths, its registry store and its blob store. Thread- and process-safe."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).absolute()
        self.db_path = self.path / "registry.db"
        self.store = RegistryStore(self.db_path)
        self.blobs = BlobStore(self.path / "blobs")
        self.cache_dir = self.path / "cache"

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | os.PathLike, create: bool = True) -> Workspace:
        """Open the workspace at ``path``, creating it when ``create`` (the default)."""
        ws = cls(path)
        if ws.path.exists() and not ws.path.is_dir():
            raise InvalidInputError(f"workspace path {str(ws.path)!r} is a file; pass a folder")
        if not ws.db_path.exists():
            if not create:
                raise NotFoundError(
                    f"no edgepack workspace at {str(ws.path)!r}; register a model there first or pass --workspace"
                )
            ws.path.mkdir(parents=True, exist_ok=True)
        ws.blobs.ensure()
        ws.store.ensure_schema()
        ws.blobs.sweep_temp()
        return ws

    @classmethod
    def default(cls, create: bool = True) -> Workspace:
        """``$EDGEPACK_WORKSPACE`` or ``./.edgepack``."""
        return cls.from_path(os.environ.get(ENV_WORKSPACE) or DEFAULT_DIR, create=create)

    @classmethod
    def from_config(cls, path: str | os.PathLike | None = None) -> Workspace:
        """Azure ML v1 spelling: open ``path`` or the default workspace (no config file needed)."""
        return cls.from_path(path) if path is not None else cls.default()

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Workspace) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # -- garbage collection ------------------------------------------------------------------------------
    def gc(self, grace_s: float = GC_GRACE_S, dry_run: bool = False) -> GcReport:
        """Remove blobs no model version references (left by a register killed before it committed).

        Blobs written or reused less than ``grace_s`` seconds ago are kept: a register in progress
        stores its blobs before it writes its row. (Removing one anyway is safe, only wasteful: register
        checks its blobs under the write lock and stores missing ones again.) Removal runs under the
        store's write lock, re-checking each blob, so it never races a register's commit or a delete.
        Temporary files of killed writers older than ``max(grace_s, 24 h)`` are removed too.
        """
        cutoff = time.time() - grace_s
        referenced = self.store.referenced_digests()
        report = GcReport(dry_run)
        candidates: list[StoredBlob] = []
        for blob in self.blobs.stored():
            if blob.digest in referenced:
                continue
            if blob.mtime < cutoff:
                candidates.append(blob)
            else:
                report.kept_recent += 1
        if dry_run:
            report.removed = candidates
            return report
        by_digest = {b.digest: b for b in candidates}
        with self.store.write() as tx:
            for digest in tx.unreferenced(by_digest):
                if self.blobs.remove_if_older(digest, cutoff):
                    report.removed.append(by_digest[digest])
                else:
                    report.kept_recent += 1
        report.temp_removed = self.blobs.sweep_temp(max(grace_s, TEMP_GRACE_S))
        return report

    @property
    def models(self) -> dict:
        """Latest version of every model, by name (as ``Workspace.models`` in v1)."""
        from packager.registry.model import Model

        return {m.name: m for m in Model.list(self, latest=True)}
