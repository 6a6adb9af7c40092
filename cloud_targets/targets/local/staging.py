"""Lay a service's content out on this machine as the image holds it: ``azureml-models/`` and ``app/``.

Process mode runs the scoring module on these folders; Docker mode's ``reload()`` copies ``app/`` into
the container. The same functions pick the files as the image builder does
(:func:`packager.image.content.stage_app`: ignore files, VCS folders and the workspace left out).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from edge_module.model_dir import MODELS_FOLDER, write_model_dir
from packager.image import content
from packager.image.inference_config import InferenceConfig
from packager.image.spec import APP_ROOT, FileEntry
from packager.registry import Model
from packager.workspace import Workspace

APP_FOLDER = "app"


def write_entries(files: Sequence[FileEntry], prefix: str, dest: Path) -> None:
    """Write layer entries found under image folder ``prefix`` into ``dest`` (modes kept, digests checked)."""
    for entry in files:
        rel = os.path.relpath(entry.path, prefix)
        if rel.startswith(".."):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.link is not None:
            os.symlink(entry.link, target)
            continue
        if entry.data is not None:
            target.write_bytes(entry.data)
        else:
            assert entry.source is not None
            shutil.copyfile(entry.source, target, follow_symlinks=False)
        os.chmod(target, entry.mode)


def stage_app(config: InferenceConfig, dest: Path, exclude: Sequence[Path] = ()) -> str:
    """Copy the entry script and source directory into ``dest``; returns the entry script path in it ("" without)."""
    source = content.stage_app(config.entry_script, config.source_directory, {"edgepack": "local"}, exclude=exclude)
    dest.mkdir(parents=True, exist_ok=True)
    write_entries(source.files, APP_ROOT, dest)
    return content.entry_script_path(config.entry_script, config.source_directory)


def stage_models(workspace: Workspace, models: Sequence[Model], dest_root: Path) -> Path:
    """Download ``models`` (re-hashed) under ``dest_root/azureml-models``; returns the ``AZUREML_MODEL_DIR``."""
    del workspace  # models carry their workspace
    return write_model_dir(
        dest_root,
        {(m.name, m.version): (lambda target, m=m: m.download(target, exist_ok=True)) for m in models},
    )


def stage_content(
    workspace: Workspace, models: Sequence[Model], config: InferenceConfig, dest: Path
) -> tuple[Path, str]:
    """Models and app under ``dest``; returns ``(AZUREML_MODEL_DIR, entry script relative to dest/app)``."""
    model_dir = stage_models(workspace, models, dest)
    entry = stage_app(config, dest / APP_FOLDER, exclude=(workspace.path,))
    return model_dir, entry


__all__ = ["APP_FOLDER", "MODELS_FOLDER", "stage_app", "stage_content", "stage_models", "write_entries"]
