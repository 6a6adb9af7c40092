"""A workspace: a folder holding the SQLite registry (WAL) and the content-addressed blob store.

Layout::

    <workspace>/registry.db        models, versions, files (SQLite, WAL)
    <workspace>/blobs/sha256/...   file contents by digest
    <workspace>/blobs/tmp/         in-flight writes (renamed into place when whole)
    <workspace>/cache/             materialised models for get_model_path
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from packager.blobstore import BlobStore
from packager.errors import InvalidInputError, NotFoundError

ENV_WORKSPACE = "EDGEPACK_WORKSPACE"
DEFAULT_DIR = ".edgepack"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 120.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_names (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    root TEXT NOT NULL,
    is_folder INTEGER NOT NULL,
    framework TEXT NOT NULL,
    framework_version TEXT,
    description TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}',
    resource_configuration TEXT,
    created_time TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS model_files (
    model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    executable INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model_id, kind, path)
);
CREATE INDEX IF NOT EXISTS model_files_digest ON model_files (digest);
"""


class Workspace:
    """A local model workspace. Thread- and process-safe; one SQLite connection per thread."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).absolute()
        self.db_path = self.path / "registry.db"
        self.blobs = BlobStore(self.path / "blobs")
        self.cache_dir = self.path / "cache"
        self._local = threading.local()

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
        ws._init_schema()
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

    @property
    def models(self) -> dict:
        """Latest version of every model, by name (as ``Workspace.models`` in v1)."""
        from packager.registry.model import Model

        return {m.name: m for m in Model.list(self, latest=True)}

    # -- database -------------------------------------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (reopened after a fork)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start (``BEGIN IMMEDIATE``)."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _init_schema(self) -> None:
        conn = self.connection()
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("PRAGMA journal_mode = WAL")
        with self.write() as c:
            found = c.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise InvalidInputError(
                    f"workspace {str(self.path)!r} was written by a newer edgepack (schema {found}); upgrade edgepack"
                )
            for statement in filter(str.strip, _SCHEMA.split(";")):
                c.execute(statement)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
