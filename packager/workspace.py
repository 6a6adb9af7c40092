"""A workspace: a folder holding the SQLite registry (WAL) and the content-addressed blob store.

Layout::

    <workspace>/registry.db        models, versions, files (SQLite, WAL)
    <workspace>/blobs/sha256/...   file contents by digest
    <workspace>/blobs/tmp/         in-flight writes (renamed into place when whole)
    <workspace>/cache/             materialised models for get_model_path
"""

from __future__ import annotations

import os
from pathlib import Path

from packager.blobstore import BlobStore
from packager.errors import InvalidInputError, NotFoundError
from packager.registry.store import RegistryStore

ENV_WORKSPACE = "EDGEPACK_WORKSPACE"
DEFAULT_DIR = ".edgepack"


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

    @property
    def models(self) -> dict:
        """Latest version of every model, by name (as ``Workspace.models`` in v1)."""
        from packager.registry.model import Model

        return {m.name: m for m in Model.list(self, latest=True)}
