"""Where deployed models live, in Azure ML v1's ``AZUREML_MODEL_DIR`` layout.

One model deployed::

    AZUREML_MODEL_DIR=<root>/azureml-models/<name>/<version>
    <root>/azureml-models/<name>/<version>/<file or folder as registered>

Several models deployed::

    AZUREML_MODEL_DIR=<root>/azureml-models
    <root>/azureml-models/<name>/<version>/<file or folder as registered>

``write_model_dir`` lays models out that way (``edgepack serve``; the image builder uses
``version_dir`` and ``model_dir_for`` for the same layout inside images), and
``resolve_model_path`` answers ``Model.get_model_path(name, version)`` for both, as v1 did.

Model names follow one rule, :data:`MODEL_NAME_RE` (the registry in ``packager`` uses it too), so a
name is never a path: ``../x`` or ``/etc`` are refused rather than resolved outside the model folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, TypeVar

MODEL_DIR_ENV = "AZUREML_MODEL_DIR"
MODELS_FOLDER = "azureml-models"

#: Azure ML's model-name rule; it also keeps names from being paths (no ``/``, never ``.`` or ``..``).
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
MODEL_NAME_RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit, at most 255 characters"

P = TypeVar("P", bound=PurePath)


class InvalidModelNameError(ValueError):
    """A model name that breaks :data:`MODEL_NAME_RE` (e.g. a path such as ``../x``)."""


def check_model_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidModelNameError`."""
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise InvalidModelNameError(f"invalid model name {name!r}: use {MODEL_NAME_RULE}")
    return name


def version_dir(models_root: P, name: str, version: int) -> P:
    """``<models_root>/<name>/<version>``: where one version of a model sits."""
    return models_root / check_model_name(name) / str(version)


def model_dir_for(models_root: P, models: Iterable[tuple[str, int]]) -> P:
    """The ``AZUREML_MODEL_DIR`` for ``(name, version)`` models laid out under ``models_root``:
    one model → its version folder, several → ``models_root``."""
    distinct = sorted(set(models))
    return version_dir(models_root, *distinct[0]) if len(distinct) == 1 else models_root


def write_model_dir(root: Path, models: Mapping[tuple[str, int], Callable[[Path], Any]]) -> Path:
    """Lay models out under ``root/azureml-models``; return the ``AZUREML_MODEL_DIR`` to use.

    ``models`` maps ``(name, version)`` to a function that puts the model's file or folder (as
    registered) into the version folder it is given (e.g. a registry download)."""
    models_root = root / MODELS_FOLDER
    for (name, version), write in models.items():
        target = version_dir(models_root, name, version)
        target.mkdir(parents=True, exist_ok=True)
        write(target)
    return model_dir_for(models_root, models)


class ModelPathNotFoundError(LookupError):
    """No deployed model matches the name and version asked for."""


def _versions(name_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit())


def single_entry(version_dir: Path) -> Path:
    """The one file or folder a deployed model version holds."""
    entries = [p for p in version_dir.iterdir() if not p.name.startswith(".")]
    if len(entries) != 1:
        raise ModelPathNotFoundError(
            f"{version_dir} must hold exactly one file or folder (the registered model), "
            f"found {sorted(p.name for p in entries)}"
        )
    return entries[0]


def resolve_model_path(model_name: str, version: int | None = None, model_dir: str | os.PathLike | None = None) -> Path:
    """Return the path of a deployed model's file or folder.

    ``model_dir`` defaults to ``$AZUREML_MODEL_DIR``. ``version=None`` means the latest deployed one.
    Raises :class:`ModelPathNotFoundError` with what was looked at when nothing matches, and
    :class:`InvalidModelNameError` for a name that is not a model name (a path).
    """
    check_model_name(model_name)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise TypeError(f"version must be an int, not {type(version).__name__}")
    root_value = model_dir if model_dir is not None else os.environ.get(MODEL_DIR_ENV)
    if not root_value:
        raise ModelPathNotFoundError(f"{MODEL_DIR_ENV} is not set: not inside a deployment")
    root = Path(root_value)

    name_dir = root / model_name
    if name_dir.is_dir() and _versions(name_dir):  # several models deployed
        available = _versions(name_dir)
        chosen = available[-1] if version is None else version
        if chosen not in available:
            raise ModelPathNotFoundError(
                f"model {model_name!r} version {chosen} is not deployed under {root}; deployed versions: {available}"
            )
        return single_entry(name_dir / str(chosen))

    if root.name.isdigit() and root.parent.name == model_name:  # one model deployed
        if version is not None and int(root.name) != version:
            raise ModelPathNotFoundError(
                f"model {model_name!r} version {version} is not deployed; {root} holds version {root.name}"
            )
        return single_entry(root)

    raise ModelPathNotFoundError(
        f"model {model_name!r} is not deployed under {root} "
        f"(expected {root}/{model_name}/<version>/ or {MODEL_DIR_ENV} ending in /{model_name}/<version>)"
    )
