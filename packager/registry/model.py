"""Registered models, with the shape of Azure ML v1's ``azureml.core.Model``.

A model version is a set of files (a registered file, or a folder's files keeping their
structure) plus metadata, stored in a :class:`~packager.workspace.Workspace`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_module.model_dir import MODEL_DIR_ENV, ModelPathNotFoundError, resolve_model_path
from packager.blobstore import DigestMismatchError
from packager.errors import ConflictError, IntegrityError, InvalidInputError, NotFoundError
from packager.fs import replace_dir
from packager.registry import frameworks, samples
from packager.registry.files import collect
from packager.registry.names import match_filters, string_map, validate_name, validate_version
from packager.registry.store import MapColumn, ModelRow, NewVersion, StoredFile
from packager.workspace import Workspace

Progress = Callable[[int], None]

MODEL_KIND, SAMPLE_INPUT, SAMPLE_OUTPUT = "model", "sample_input", "sample_output"


@dataclass
class ResourceConfiguration:
    """CPU, memory and GPU a model needs (as ``azureml.core.ResourceConfiguration``)."""

    cpu: float | None = None
    memory_in_gb: float | None = None
    gpu: int | None = None

    def serialize(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memoryInGB": self.memory_in_gb, "gpu": self.gpu}

    @classmethod
    def deserialize(cls, data: Mapping[str, Any] | None) -> ResourceConfiguration | None:
        if data is None:
            return None
        return cls(
            cpu=data.get("cpu"), memory_in_gb=data.get("memoryInGB", data.get("memory_in_gb")), gpu=data.get("gpu")
        )


@dataclass(frozen=True)
class ModelFile:
    """One stored file of a model version."""

    path: str
    digest: str
    size: int
    executable: bool = False


def _resource_config(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, ResourceConfiguration):
        return value.serialize()
    if isinstance(value, Mapping):
        return ResourceConfiguration.deserialize(value).serialize()  # type: ignore[union-attr]
    raise InvalidInputError("resource_configuration must be a ResourceConfiguration or a dict")


class Model:
    """One version of a registered model.

    ``Model(workspace, name)`` is the latest version; ``Model(workspace, name, version=3)`` or
    ``Model(workspace, id="name:3")`` a given one.
    """

    Framework = frameworks.Framework

    def __init__(
        self, workspace: Workspace, name: str | None = None, id: str | None = None, version: int | None = None
    ):
        if id is not None:
            name, _, ver = id.rpartition(":")
            if not ver.isdigit():
                raise InvalidInputError(f"invalid model id {id!r}: expected NAME:VERSION")
            version = int(ver)
        if name is None:
            raise InvalidInputError("give a model name (or an id NAME:VERSION)")
        validate_name(name)
        if version is not None:
            validate_version(version)
        self.workspace = workspace
        self._load(_fetch_row(workspace, name, version))

    @classmethod
    def _from_row(cls, workspace: Workspace, row: ModelRow) -> Model:
        model = cls.__new__(cls)
        model.workspace = workspace
        model._load(row)
        return model

    def _load(self, row: ModelRow) -> None:
        self._id: int = row.id
        self.name: str = row.name
        self.version: int = row.version
        self.root: str = row.root
        self.is_folder: bool = row.is_folder
        self.model_framework: str = row.framework
        self.model_framework_version: str | None = row.framework_version
        self.description: str | None = row.description
        self.tags: dict[str, str] = dict(row.tags)
        self.properties: dict[str, str] = dict(row.properties)
        self.resource_configuration = ResourceConfiguration.deserialize(row.resource_configuration)
        self.created_time: str = row.created_time
        self._files: dict[str, list[ModelFile]] = {MODEL_KIND: [], SAMPLE_INPUT: [], SAMPLE_OUTPUT: []}
        for f in self.workspace.store.files(self._id):
            self._files[f.kind].append(ModelFile(f.path, f.digest, f.size, f.executable))

    # -- plain attributes ------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def files(self) -> list[ModelFile]:
        return list(self._files[MODEL_KIND])

    @property
    def size(self) -> int:
        return sum(f.size for f in self._files[MODEL_KIND])

    @property
    def sample_input(self) -> ModelFile | None:
        return next(iter(self._files[SAMPLE_INPUT]), None)

    @property
    def sample_output(self) -> ModelFile | None:
        return next(iter(self._files[SAMPLE_OUTPUT]), None)

    def load_sample_input(self) -> Any:
        """The registered sample input (numpy array, dict of arrays, or JSON value); None if none."""
        return self._load_sample(self.sample_input)

    def load_sample_output(self) -> Any:
        return self._load_sample(self.sample_output)

    def _load_sample(self, f: ModelFile | None) -> Any:
        if f is None:
            return None
        try:
            return samples.decode(f.path, self.workspace.blobs.read_verified(f.digest))
        except DigestMismatchError as exc:
            raise self._integrity_error(f, exc) from None

    def __repr__(self) -> str:
        return (
            f"Model(workspace={self.workspace!r}, name={self.name!r}, version={self.version}, "
            f"framework={self.model_framework!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (other.workspace, other.id) == (self.workspace, self.id)

    def __hash__(self) -> int:
        return hash((self.workspace, self.id))

    def serialize(self) -> dict[str, Any]:
        """A JSON-ready dict (camelCase keys, as v1's ``serialize``); ``--json`` prints this."""

        def file_dict(f: ModelFile) -> dict[str, Any]:
            return {"path": f.path, "digest": f"sha256:{f.digest}", "size": f.size}

        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "framework": self.model_framework,
            "frameworkVersion": self.model_framework_version,
            "description": self.description,
            "tags": dict(self.tags),
            "properties": dict(self.properties),
            "createdTime": self.created_time,
            "modelRoot": self.root,
            "isFolder": self.is_folder,
            "size": self.size,
            "files": [file_dict(f) for f in self.files],
            "sampleInput": file_dict(self.sample_input) if self.sample_input else None,
            "sampleOutput": file_dict(self.sample_output) if self.sample_output else None,
            "resourceConfiguration": self.resource_configuration.serialize() if self.resource_configuration else None,
            "workspace": str(self.workspace.path),
        }

    @classmethod
    def deserialize(cls, workspace: Workspace, data: Mapping[str, Any]) -> Model:
        """The stored model that ``data`` (from :meth:`serialize`) describes."""
        return cls(workspace, name=data["name"], version=int(data["version"]))

    # -- register -------------------------------------------------------------------------------------
    @staticmethod
    def register(
        workspace: Workspace,
        model_path: str | os.PathLike,
        model_name: str,
        tags: Mapping[str, object] | None = None,
        properties: Mapping[str, object] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        child_paths: list[str] | None = None,
        sample_input: Any = None,
        sample_output: Any = None,
        resource_configuration: ResourceConfiguration | Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        follow_symlinks: bool = False,
    ) -> Model:
        """Register a file or folder as the next version of ``model_name``.

        Atomic: contents land in the blob store first (under temporary names, then renamed),
        and the version row with all its files is written in one transaction.
        ``progress`` is called with byte counts as files are copied. A file link inside a folder
        that points outside it is refused unless ``follow_symlinks`` (then its target's content is stored).
        """
        validate_name(model_name)
        tag_map = string_map(tags, "tags")
        prop_map = string_map(properties, "properties")
        if description is not None and not isinstance(description, str):
            raise InvalidInputError("description must be a string")
        if model_framework is None and model_framework_version is not None:
            raise InvalidInputError("model_framework_version needs model_framework too")
        resources = _resource_config(resource_configuration)
        root, is_folder, sources = collect(model_path, child_paths, follow_symlinks)
        framework = (
            frameworks.normalize(model_framework)
            if model_framework
            else frameworks.detect([(s.rel, s.path) for s in sources])
        )

        blobs = workspace.blobs
        files: list[StoredFile] = []
        restore: dict[str, Callable[[], object]] = {}  # how to store each blob again
        for src in sources:
            digest, size = blobs.put_file(src.path, progress)
            files.append(StoredFile(MODEL_KIND, src.rel, digest, size, src.executable))
            restore[digest] = lambda p=src.path: blobs.put_file(p)
        for kind, sample in ((SAMPLE_INPUT, sample_input), (SAMPLE_OUTPUT, sample_output)):
            if sample is None:
                continue
            file_name, content = samples.encode(sample, kind)
            digest, size = blobs.put_file(content) if isinstance(content, Path) else blobs.put_bytes(content)
            files.append(StoredFile(kind, file_name, digest, size))
            restore[digest] = (
                (lambda c=content: blobs.put_file(c))
                if isinstance(content, Path)
                else (lambda c=content: blobs.put_bytes(c))
            )

        new = NewVersion(
            name=model_name,
            root=root,
            is_folder=is_folder,
            framework=framework,
            framework_version=model_framework_version,
            description=description,
            tags=tag_map,
            properties=prop_map,
            resource_configuration=resources,
            files=files,
        )
        for _attempt in range(3):
            with workspace.store.write() as tx:
                # Checked under the write lock, which delete() also holds while collecting blobs.
                missing = {f.digest for f in files if not blobs.exists(f.digest)}
                if not missing:
                    version = tx.insert_version(new)
                    break
            for digest in missing:  # a concurrent delete collected them: store them again
                restore[digest]()
        else:
            raise IntegrityError(
                f"could not register {model_name!r}: its files kept disappearing under concurrent deletes; try again"
            )
        return Model(workspace, model_name, version=version)

    # -- list -----------------------------------------------------------------------------------------
    @staticmethod
    def list(
        workspace: Workspace,
        name: str | None = None,
        tags: object = None,
        properties: object = None,
        framework: str | None = None,
        latest: bool = False,
    ) -> list[Model]:
        """Models by name (A→Z), newest version first.

        ``tags``/``properties`` filters: ``["key", "key=value", [key, value]]`` or a dict; all must match.
        ``latest`` keeps only the newest matching version of each name.
        """
        rows = workspace.store.models(
            name=None if name is None else validate_name(name),
            framework=None if framework is None else frameworks.normalize(framework),
        )
        out: list[Model] = []
        seen: set[str] = set()
        for row in rows:
            if latest and row.name in seen:
                continue
            if not (match_filters(row.tags, tags, "tags") and match_filters(row.properties, properties, "properties")):
                continue
            seen.add(row.name)
            out.append(Model._from_row(workspace, row))
        return out

    # -- update ---------------------------------------------------------------------------------------
    def _reload(self) -> None:
        self._load(_fetch_row(self.workspace, self.name, self.version))

    def update(self, tags: Mapping[str, object] | None = None, description: str | None = None) -> Model:
        """Replace the tags (as v1 does) and/or the description."""
        new_tags = None if tags is None else string_map(tags, "tags")
        if description is not None and not isinstance(description, str):
            raise InvalidInputError("description must be a string")
        if new_tags is not None or description is not None:
            if not self.workspace.store.update_model(self._id, tags=new_tags, description=description):
                raise NotFoundError(f"model {self.id} was deleted")
            self._reload()
        return self

    def _edit_json(self, column: MapColumn, edit: Callable[[dict[str, str]], dict[str, str]]) -> None:
        if not self.workspace.store.edit_map(self._id, column, edit):
            raise NotFoundError(f"model {self.id} was deleted")
        self._reload()

    def add_tags(self, tags: Mapping[str, object]) -> Model:
        """Add or overwrite tags."""
        new = string_map(tags, "tags")
        self._edit_json("tags", lambda cur: {**cur, **new})
        return self

    def remove_tags(self, tags: list[str]) -> Model:
        """Remove tags by key (absent keys are ignored)."""
        gone = set(tags)
        self._edit_json("tags", lambda cur: {k: v for k, v in cur.items() if k not in gone})
        return self

    def add_properties(self, properties: Mapping[str, object]) -> Model:
        """Add properties. Properties are add-only: changing an existing value is refused."""
        new = string_map(properties, "properties")

        def merge(cur: dict[str, str]) -> dict[str, str]:
            clash = sorted(k for k, v in new.items() if k in cur and cur[k] != v)
            if clash:
                raise ConflictError(
                    f"properties are add-only; {', '.join(clash)} already set on {self.id}; "
                    "use a tag for values that change"
                )
            return {**cur, **new}

        self._edit_json("properties", merge)
        return self

    # -- delete ---------------------------------------------------------------------------------------
    def delete(self) -> None:
        """Delete this version and any content no other version uses. Version numbers are not reused."""
        store = self.workspace.store
        digests = store.delete_model(self._id)
        if digests is None:
            raise NotFoundError(f"model {self.id} does not exist (already deleted?)")
        # Collect orphans under the write lock, so a concurrent register (which checks its blobs
        # under the same lock) either sees them gone and re-stores them, or keeps them referenced.
        with store.write() as tx:
            for digest in tx.unreferenced(digests):
                self.workspace.blobs.remove(digest)
        cached = self.workspace.cache_dir / "azureml-models" / self.name / str(self.version)
        shutil.rmtree(cached, ignore_errors=True)

    # -- download -------------------------------------------------------------------------------------
    def _integrity_error(self, f: ModelFile, exc: DigestMismatchError) -> IntegrityError:
        problem = (
            "is missing from the blob store"
            if exc.actual is None
            else (f"is corrupted (expected sha256 {exc.digest}, found {exc.actual})")
        )
        return IntegrityError(
            f"file {f.path!r} of model {self.id} {problem} in workspace {self.workspace.path}; "
            f"register the model again from its source"
        )

    def download(
        self, target_dir: str | os.PathLike = ".", exist_ok: bool = False, progress: Progress | None = None
    ) -> str:
        """Copy the model's file or folder into ``target_dir``; return its path.

        Every file is re-hashed against its digest; on any mismatch nothing is left in ``target_dir``.
        With ``exist_ok`` an existing copy is replaced (atomically per model root).
        """
        target = Path(target_dir)
        if target.exists() and not target.is_dir():
            raise InvalidInputError(f"download target {str(target)!r} is a file; pass a folder")
        dest = target / self.root
        if dest.exists() and not exist_ok:
            raise InvalidInputError(f"{dest} already exists; pass exist_ok=True (--overwrite) or another folder")
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".edgepack-download-", dir=target))
        try:
            for f in self.files:
                out = staging / f.path
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.workspace.blobs.copy_verified(f.digest, out, progress)
                except DigestMismatchError as exc:
                    raise self._integrity_error(f, exc) from None
                os.chmod(out, 0o755 if f.executable else 0o644)
            replace_dir(staging / self.root, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return str(dest)

    # -- deployment paths -----------------------------------------------------------------------------
    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Workspace | None = None) -> str:
        """Path of a model's file or folder, as in Azure ML v1.

        Inside a deployment (``AZUREML_MODEL_DIR`` set): ``$AZUREML_MODEL_DIR/<name>/<version>/...``
        when several models are deployed, ``$AZUREML_MODEL_DIR/...`` for one. Otherwise (or with
        ``_workspace``) the model is materialised once from the workspace into its cache.
        """
        validate_name(model_name)
        if version is not None:
            validate_version(version)
        if _workspace is None and os.environ.get(MODEL_DIR_ENV):
            try:
                return str(resolve_model_path(model_name, version))
            except ModelPathNotFoundError as exc:
                raise NotFoundError(str(exc)) from None
        workspace = _workspace or Workspace.default(create=False)
        model = Model(workspace, model_name, version=version)
        version_dir = workspace.cache_dir / "azureml-models" / model.name / str(model.version)
        cached = version_dir / model.root
        if not cached.exists():
            model.download(version_dir, exist_ok=True)
        return str(cached)


def _fetch_row(workspace: Workspace, name: str, version: int | None) -> ModelRow:
    row = workspace.store.get_model(name, version)
    if row is not None:
        return row
    versions = workspace.store.versions(name)
    if not versions:
        raise NotFoundError(
            f"no model named {name!r} in workspace {workspace.path}; see `edgepack model list` for registered models"
        )
    raise NotFoundError(f"model {name!r} has no version {version}; versions: {_ranges(versions)}")


def _ranges(versions: list[int]) -> str:
    """``[1, 2, 3, 5]`` → ``1-3, 5``."""
    out: list[str] = []
    start = prev = versions[0]
    for v in [*versions[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(out)


__all__ = ["Model", "ModelFile", "ResourceConfiguration"]
