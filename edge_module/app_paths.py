"""Where an app's entry script and conda file are: Azure ML v1's rule, in one place.

v1 (``InferenceConfig(entry_script=..., source_directory=..., conda_file=...)`` and
``inferenceconfig.json``'s ``entryScript``/``sourceDirectory``/``condaFile``): with a source directory,
a relative entry script (and conda file) is a path inside it. edgepack also accepts a path that
already names the script from the working folder (``--entry-script app/score.py --source-dir app``)
and an absolute path, as long as the script is inside the source directory (the image's
``AZUREML_ENTRY_SCRIPT`` is relative to ``AML_APP_ROOT``); a script outside it is refused. Without
a source directory, paths are relative to ``base`` (the working folder). The conda file is only read
at build time, so it may live outside the source directory.

``edgepack serve``, ``build``/``build-and-push``/``package`` and :class:`InferenceConfig` all call
:func:`resolve_app_paths`; this module is stdlib-only so images can use it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class AppPathError(ValueError):
    """An entry script, conda file or source directory that cannot be used (the message says why)."""


@dataclass(frozen=True)
class AppPaths:
    """Resolved absolute paths (``None`` when not given)."""

    source_dir: Path | None
    entry_script: Path | None
    conda_file: Path | None = None

    @property
    def entry_script_rel(self) -> str | None:
        """The entry script relative to the source directory (POSIX), or its name without one: its path
        under the image's app root (``AZUREML_ENTRY_SCRIPT``)."""
        if self.entry_script is None:
            return None
        if self.source_dir is None:
            return self.entry_script.name
        return self.entry_script.relative_to(self.source_dir).as_posix()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _absolute(path: str | os.PathLike[str], base: Path) -> Path:
    p = Path(path).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def resolve_source_dir(
    source_dir: str | os.PathLike[str] | None, base: str | os.PathLike[str] | None = None
) -> Path | None:
    """``source_dir`` as an absolute, resolved folder (relative to ``base``, default: the working folder)."""
    if not source_dir:
        return None
    folder = _absolute(source_dir, Path(base) if base is not None else Path.cwd()).resolve()
    if not folder.is_dir():
        raise AppPathError(f"source directory {source_dir} is not a folder; pass the folder that holds your code")
    return folder


def find_file(
    path: str | os.PathLike[str],
    source_dir: Path | None,
    base: Path,
    what: str,
    *,
    must_be_inside: bool = False,
    source_flag: str = "--source-dir",
) -> Path:
    """``path`` looked up in ``source_dir`` first (when given and ``path`` is relative), then in ``base``.

    The error names every place looked in. With ``must_be_inside``, a file found outside
    ``source_dir`` is refused.
    """
    p = Path(path).expanduser()
    candidates: list[tuple[Path, str]] = []
    if p.is_absolute():
        candidates.append((Path(os.path.normpath(p)), ""))
    else:
        if source_dir is not None:
            candidates.append((Path(os.path.normpath(source_dir / p)), f" (inside {source_flag} {source_dir})"))
        candidates.append((Path(os.path.normpath(base / p)), ""))
    for candidate, _ in candidates:
        if candidate.is_file():
            found = candidate.resolve()
            if must_be_inside and source_dir is not None and not _inside(found, source_dir):
                raise AppPathError(
                    f"{what} '{path}' ({found}) is outside {source_flag} {source_dir}: move it into that folder "
                    "(the image holds only the source directory) or give its path relative to it"
                )
            return found
    looked = " and ".join(f"{c}{note}" for c, note in candidates)
    raise AppPathError(f"{what} '{path}' not found: looked in {looked}")


def resolve_app_paths(
    entry_script: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    conda_file: str | os.PathLike[str] | None = None,
    base: str | os.PathLike[str] | None = None,
    *,
    source_flag: str = "--source-dir",
) -> AppPaths:
    """The app's files as v1 finds them (see the module docstring); ``base`` defaults to the working folder.

    Raises :class:`AppPathError` naming the places looked in, or when the entry script is outside
    the source directory.
    """
    root = Path(base).expanduser().resolve() if base is not None else Path.cwd().resolve()
    src = resolve_source_dir(source_dir, root)
    script = (
        find_file(entry_script, src, root, "entry script", must_be_inside=True, source_flag=source_flag)
        if entry_script
        else None
    )
    conda = find_file(conda_file, src, root, "conda file", source_flag=source_flag) if conda_file else None
    return AppPaths(src, script, conda)


__all__ = ["AppPathError", "AppPaths", "find_file", "resolve_app_paths", "resolve_source_dir"]
