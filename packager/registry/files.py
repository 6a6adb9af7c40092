"""Which files a registration takes from a path, and where they sit inside the model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packager.errors import InvalidInputError


@dataclass(frozen=True)
class SourceFile:
    rel: str  # posix path inside the model, starting with the registered file or folder name
    path: Path  # where it is read from
    executable: bool


def _walk(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for d in dirnames:
            if (base / d).is_symlink():
                raise InvalidInputError(
                    f"{base / d} is a symbolic link to a folder; copy the folder in or register its target"
                )
        for f in filenames:
            p = base / f
            if not p.is_file():
                raise InvalidInputError(f"{p} is not a regular file (broken link or special file); remove it")
            out.append(p)
    return out


def collect(model_path: str | os.PathLike, child_paths: list[str] | None = None) -> tuple[str, bool, list[SourceFile]]:
    """Return ``(root name, is_folder, files)`` for a registration, sorted by path.

    ``child_paths`` (only with a folder) picks files or sub-folders inside it.
    """
    src = Path(model_path)
    if not src.exists():
        raise InvalidInputError(f"model path {str(src)!r} does not exist; pass the file or folder to register")
    src = src.resolve()
    root = src.name
    if not root:
        raise InvalidInputError(f"cannot register the file-system root {str(src)!r}; pass a file or folder")

    if src.is_file():
        if child_paths:
            raise InvalidInputError("child_paths only applies when the model path is a folder")
        return root, False, [SourceFile(root, src, os.access(src, os.X_OK))]
    if not src.is_dir():
        raise InvalidInputError(f"model path {str(src)!r} is neither a file nor a folder")

    if child_paths:
        picked: list[Path] = []
        for child in child_paths:
            rel = PurePosixPath(str(child).replace(os.sep, "/"))
            target = (src / rel).resolve()
            if rel.is_absolute() or (target != src and src not in target.parents):
                raise InvalidInputError(f"child path {child!r} must be relative and inside {src}")
            if target.is_file():
                picked.append(target)
            elif target.is_dir():
                picked.extend(_walk(target))
            else:
                raise InvalidInputError(f"child path {child!r} does not exist in {src}")
        paths = sorted(set(picked))
    else:
        paths = sorted(_walk(src))
    if not paths:
        raise InvalidInputError(f"folder {str(src)!r} has no files; nothing to register")
    files = [SourceFile(f"{root}/{p.relative_to(src).as_posix()}", p, os.access(p, os.X_OK)) for p in paths]
    return root, True, files
