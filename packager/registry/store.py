"""The registry's SQLite store: schema, connections, and every query, as typed methods.

One database per workspace (``registry.db``, WAL). Each thread has its own connection (reopened
after a fork). Writes run in ``BEGIN IMMEDIATE`` transactions, which take SQLite's write lock at
once: that lock serialises version numbering across threads and processes, and it is the lock
that register's blob check and delete's blob collection share.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from packager.errors import InvalidInputError

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

#: The string-map columns of a model row.
MapColumn = Literal["tags", "properties"]


@dataclass(frozen=True)
class StoredFile:
    """One file row: ``kind`` is the model's own file(s) or a sample."""

    kind: str
    path: str
    digest: str
    size: int
    executable: bool = False


@dataclass(frozen=True)
class ModelRow:
    """One model version as stored (JSON columns decoded)."""

    id: int
    name: str
    version: int
    root: str
    is_folder: bool
    framework: str
    framework_version: str | None
    description: str | None
    tags: dict[str, str]
    properties: dict[str, str]
    resource_configuration: dict[str, Any] | None
    created_time: str


@dataclass(frozen=True)
class NewVersion:
    """What register stores for the next version of ``name``."""

    name: str
    root: str
    is_folder: bool
    framework: str
    framework_version: str | None
    description: str | None
    tags: dict[str, str]
    properties: dict[str, str]
    resource_configuration: dict[str, Any] | None
    files: list[StoredFile]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _model_row(row: sqlite3.Row) -> ModelRow:
    resources = row["resource_configuration"]
    return ModelRow(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        root=row["root"],
        is_folder=bool(row["is_folder"]),
        framework=row["framework"],
        framework_version=row["framework_version"],
        description=row["description"],
        tags=json.loads(row["tags"]),
        properties=json.loads(row["properties"]),
        resource_configuration=json.loads(resources) if resources else None,
        created_time=row["created_time"],
    )


class WriteTransaction:
    """The queries that must run under the write lock, inside :meth:`RegistryStore.write`."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def insert_version(self, new: NewVersion) -> int:
        """Take the next version number of ``new.name`` (never reused) and store the row and its files."""
        version = self._conn.execute(
            "INSERT INTO model_names (name, last_version) VALUES (?, 1) "
            "ON CONFLICT (name) DO UPDATE SET last_version = last_version + 1 RETURNING last_version",
            (new.name,),
        ).fetchone()[0]
        model_id = self._conn.execute(
            "INSERT INTO models (name, version, root, is_folder, framework, framework_version, description, tags, "
            "properties, resource_configuration, created_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.name,
                version,
                new.root,
                int(new.is_folder),
                new.framework,
                new.framework_version,
                new.description,
                json.dumps(new.tags),
                json.dumps(new.properties),
                json.dumps(new.resource_configuration) if new.resource_configuration is not None else None,
                _now(),
            ),
        ).lastrowid
        self._conn.executemany(
            "INSERT INTO model_files (model_id, kind, path, digest, size, executable) VALUES (?, ?, ?, ?, ?, ?)",
            [(model_id, f.kind, f.path, f.digest, f.size, int(f.executable)) for f in new.files],
        )
        return version

    def update_model(
        self, model_id: int, *, tags: dict[str, str] | None = None, description: str | None = None
    ) -> bool:
        """Set the given fields; False if the model is gone."""
        columns: dict[str, str] = {}
        if tags is not None:
            columns["tags"] = json.dumps(tags)
        if description is not None:
            columns["description"] = description
        if not columns:
            return self._conn.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is not None
        sets = ", ".join(f"{col} = ?" for col in columns)
        return self._conn.execute(f"UPDATE models SET {sets} WHERE id = ?", (*columns.values(), model_id)).rowcount > 0

    def read_map(self, model_id: int, column: MapColumn) -> dict[str, str] | None:
        """The tags or properties of a model; None if the model is gone."""
        row = self._conn.execute(f"SELECT {_map_column(column)} FROM models WHERE id = ?", (model_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def write_map(self, model_id: int, column: MapColumn, value: dict[str, str]) -> bool:
        sql = f"UPDATE models SET {_map_column(column)} = ? WHERE id = ?"
        return self._conn.execute(sql, (json.dumps(value), model_id)).rowcount > 0

    def delete_model(self, model_id: int) -> list[str] | None:
        """Delete a version and its file rows; return the digests it used (None if it was not there)."""
        digests = [
            r[0] for r in self._conn.execute("SELECT DISTINCT digest FROM model_files WHERE model_id = ?", (model_id,))
        ]
        if self._conn.execute("DELETE FROM models WHERE id = ?", (model_id,)).rowcount == 0:
            return None
        return digests

    def unreferenced(self, digests: Iterable[str]) -> list[str]:
        """Those of ``digests`` that no stored file uses any more (blobs safe to remove under this lock)."""
        query = "SELECT 1 FROM model_files WHERE digest = ? LIMIT 1"
        return [d for d in digests if self._conn.execute(query, (d,)).fetchone() is None]


def _map_column(column: str) -> str:
    if column not in ("tags", "properties"):
        raise ValueError(f"not a string-map column: {column!r}")
    return column


class RegistryStore:
    """The SQLite database at ``db_path``. Thread- and process-safe; one connection per thread."""

    def __init__(self, db_path: str | os.PathLike):
        self.db_path = Path(db_path)
        self._local = threading.local()

    # -- connections ----------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (reopened after a fork)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[WriteTransaction]:
        """A write transaction holding SQLite's write lock from the start (``BEGIN IMMEDIATE``).

        Commits when the block ends, rolls back if it raises.
        """
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield WriteTransaction(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def ensure_schema(self) -> None:
        """Create the tables (WAL mode) in a new database; refuse one from a newer edgepack."""
        conn = self._connection()
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("PRAGMA journal_mode = WAL")
        with self.write():
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise InvalidInputError(
                    f"workspace {str(self.db_path.parent)!r} was written by a newer edgepack (schema {found}); "
                    "upgrade edgepack"
                )
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- reads ------------------------------------------------------------------------------------------
    def get_model(self, name: str, version: int | None = None) -> ModelRow | None:
        """Version ``version`` of ``name`` (the latest when None); None if there is none."""
        conn = self._connection()
        if version is None:
            row = conn.execute("SELECT * FROM models WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)).fetchone()
        else:
            row = conn.execute("SELECT * FROM models WHERE name = ? AND version = ?", (name, version)).fetchone()
        return None if row is None else _model_row(row)

    def versions(self, name: str) -> list[int]:
        """The stored versions of ``name``, ascending."""
        query = "SELECT version FROM models WHERE name = ? ORDER BY version"
        return [r[0] for r in self._connection().execute(query, (name,))]

    def models(self, name: str | None = None, framework: str | None = None) -> list[ModelRow]:
        """Model versions by name (A→Z), newest first, optionally of one name and/or framework."""
        query, args = "SELECT * FROM models", []
        clauses = []
        if name is not None:
            clauses.append("name = ?")
            args.append(name)
        if framework is not None:
            clauses.append("framework = ?")
            args.append(framework)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY name, version DESC"
        return [_model_row(r) for r in self._connection().execute(query, args).fetchall()]

    def referenced_digests(self) -> set[str]:
        """Every digest some stored file uses (blobs outside this set are garbage, see ``Workspace.gc``)."""
        return {r[0] for r in self._connection().execute("SELECT DISTINCT digest FROM model_files")}

    def files(self, model_id: int) -> list[StoredFile]:
        """A version's files, by path."""
        query = "SELECT kind, path, digest, size, executable FROM model_files WHERE model_id = ? ORDER BY path"
        return [
            StoredFile(r["kind"], r["path"], r["digest"], r["size"], bool(r["executable"]))
            for r in self._connection().execute(query, (model_id,)).fetchall()
        ]

    # -- writes in their own transaction ----------------------------------------------------------------
    def update_model(
        self, model_id: int, *, tags: dict[str, str] | None = None, description: str | None = None
    ) -> bool:
        """Set the given fields in one transaction; False if the model is gone."""
        with self.write() as tx:
            return tx.update_model(model_id, tags=tags, description=description)

    def edit_map(self, model_id: int, column: MapColumn, edit: Callable[[dict[str, str]], dict[str, str]]) -> bool:
        """Read-modify-write a model's tags or properties in one transaction (``edit`` may raise to
        abort it); False if the model is gone."""
        with self.write() as tx:
            current = tx.read_map(model_id, column)
            if current is None:
                return False
            return tx.write_map(model_id, column, edit(current))

    def delete_model(self, model_id: int) -> list[str] | None:
        """Delete a version in one transaction; return the digests it used (None if it was not there)."""
        with self.write() as tx:
            return tx.delete_model(model_id)


__all__ = ["MapColumn", "ModelRow", "NewVersion", "RegistryStore", "StoredFile", "WriteTransaction"]
