"""What goes into the ``edge_module``, ``models`` and ``app`` layers, and the environment that finds them.

Each ``stage_*`` function only lists files (a :class:`LayerSource`); :mod:`packager.image.tarball`
turns a source into a layer. Cache keys are cheap: file stats for host files, stored digests for
models (exact), content hashes for generated data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import edge_module
from edge_module.app_paths import AppPathError, AppPaths, resolve_app_paths
from edge_module.model_dir import model_dir_for, version_dir
from packager.errors import IntegrityError, InvalidInputError
from packager.image import tarball
from packager.image.source_dir import collect as collect_source_dir
from packager.image.spec import (
    APP_ROOT,
    MODELS_ROOT,
    MODULE_DIR,
    PORT,
    PYTHONPATH,
    FileEntry,
    LayerSource,
)
from packager.registry import Model
from packager.workspace import Workspace

IMAGE_MANIFEST = "edgepack-image.json"


def canonical_json_text(doc: Any) -> bytes:
    """``doc`` as sorted, indented UTF-8 JSON with a final newline (stable bytes for the same content)."""
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def stage_edge_module() -> LayerSource:
    """The installed ``edge_module`` package (``.py`` files only) under :data:`MODULE_DIR` ``/edge_module``."""
    root = Path(edge_module.__file__).resolve().parent
    files = [
        e for e in tarball.tree_entries(root, f"{MODULE_DIR}/edge_module") if e.link is None and e.path.endswith(".py")
    ]
    return LayerSource.of("edge_module", files, cache_key=tarball.stat_key(sorted(files, key=lambda f: f.path)))


def model_dir(model: Model) -> str:
    """Where ``model`` sits in the image: :data:`MODELS_ROOT` ``/<name>/<version>``."""
    return str(version_dir(PurePosixPath(MODELS_ROOT), model.name, model.version))


def stage_models(workspace: Workspace, models: list[Model]) -> LayerSource:
    """Registered models in the Azure ML layout, read straight from the workspace's blob store.

    Sizes are checked here; contents are re-hashed while they are copied into the layer (or context).
    """
    seen: set[tuple[str, int]] = set()
    files: list[FileEntry] = []
    key = hashlib.sha256(f"{tarball.FORMAT_VERSION}\0models\0".encode())
    for model in sorted(models, key=lambda m: (m.name, m.version)):
        if (model.name, model.version) in seen:
            continue
        seen.add((model.name, model.version))
        base = model_dir(model)
        for f in model.files:
            blob = workspace.blobs.path(f.digest)
            try:
                size = blob.stat().st_size
            except FileNotFoundError:
                size = -1
            if size != f.size:
                raise IntegrityError(
                    f"model {model.id}: the stored content of {f.path} is missing or damaged "
                    f"(blob sha256:{f.digest}); register the model again"
                )
            files.append(
                FileEntry(
                    f"{base}/{f.path}",
                    source=blob,
                    mode=0o755 if f.executable else 0o644,
                    sha256=f.digest,  # re-hashed as the bytes go into the layer
                    origin=f"model {model.id}, file {f.path}",
                )
            )
            key.update(f"{model.name}\0{model.version}\0{f.path}\0{f.digest}\0{int(f.executable)}\n".encode())
    names = ", ".join(f"{n}:{v}" for n, v in sorted(seen))
    return LayerSource.of("models", files, cache_key=key.hexdigest(), comment=f"models {names}")


def _app_paths(entry_script: Path | str | None, source_dir: Path | str | None) -> AppPaths:
    try:
        return resolve_app_paths(entry_script, source_dir)
    except AppPathError as exc:
        raise InvalidInputError(str(exc)) from None


def entry_script_path(entry_script: Path | str | None, source_dir: Path | str | None) -> str:
    """The entry script's path relative to :data:`APP_ROOT` (``""`` without one).

    Found by :func:`edge_module.app_paths.resolve_app_paths` (v1's rule: relative to ``source_dir``,
    which must hold it); without a source directory it is copied to the app root under its name.
    """
    if not entry_script:
        return ""
    return _app_paths(entry_script, source_dir).entry_script_rel or ""


def stage_app(
    entry_script: Path | str | None,
    source_dir: Path | str | None,
    manifest: dict[str, Any],
    exclude: Sequence[Path] = (),
) -> LayerSource:
    """The ``app`` layer: ``source_dir`` under :data:`APP_ROOT`, the entry script, and ``edgepack-image.json``.

    ``source_dir`` is collected by :func:`packager.image.source_dir.collect` (VCS folders, the workspace
    and the ``exclude`` folders left out, ``.edgepackignore``/``.amlignore``/``.gitignore`` honoured,
    owner-only modes kept).
    """
    paths = _app_paths(entry_script, source_dir)
    files: list[FileEntry] = []
    if paths.source_dir is not None:
        files = collect_source_dir(paths.source_dir, APP_ROOT, exclude)
    if paths.entry_script is not None:
        dest = f"{APP_ROOT}/{paths.entry_script_rel}"
        if not any(f.path == dest for f in files):  # ignored by an ignore file, or no source directory
            files.append(tarball.host_entry(paths.entry_script, dest, keep_private=True))
    manifest_path = f"{APP_ROOT}/{IMAGE_MANIFEST}"
    if any(f.path == manifest_path for f in files):
        raise InvalidInputError(
            f"the source directory has a file named {IMAGE_MANIFEST}, which edgepack writes; rename it"
        )
    files.append(FileEntry(manifest_path, data=canonical_json_text(manifest)))
    files.sort(key=lambda f: f.path)
    return LayerSource.of("app", files, cache_key=tarball.stat_key(files, "app"))


def image_env(models: list[Model], entry_script_rel: str | None) -> dict[str, str]:
    """Environment of the image: the Azure ML names ``edge_module`` reads, plus the module's paths."""
    env = {
        "AZUREML_MODEL_DIR": str(model_dir_for(PurePosixPath(MODELS_ROOT), [(m.name, m.version) for m in models])),
        "AML_APP_ROOT": APP_ROOT,
        "AZUREML_SOURCE_DIRECTORY": APP_ROOT,
        "PYTHONPATH": PYTHONPATH,
        "EDGEPACK_PORT": str(PORT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if entry_script_rel:
        env["AZUREML_ENTRY_SCRIPT"] = str(PurePosixPath(entry_script_rel))
    return env


__all__ = [
    "IMAGE_MANIFEST",
    "entry_script_path",
    "image_env",
    "model_dir",
    "stage_app",
    "stage_edge_module",
    "stage_models",
]
