"""Which files a registration takes from a path, and where they sit inside the model.

Symbolic links inside a registered folder: a link to a file of the folder is stored as a copy of
that file (as v1 did); a link to a file outside it is refused unless ``follow_symlinks``, so a
crafted model folder cannot quietly capture e.g. ``~/.ssh/id_rsa``; links to folders are refused.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packager.errors import InvalidInputError


@dataclass(frozen=True)
class SourceFile:
    rel: str  # posix path inside the model, starting with the registered file or folder name
    path: Path  # where it is read from (a link's resolved target)
    executable: bool


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _file_to_read(p: Path, root: Path, follow_symlinks: bool) -> Path:
    """The regular file to read for entry ``p`` of folder ``root``: ``p``, or a link's target."""
    if not p.is_symlink():
        if not p.is_file():
            raise InvalidInputError(f"{p} is not a regular file (special file); remove it")
        return p
    target = p.resolve()
    if target.is_dir():
        raise InvalidInputError(f"{p} is a symbolic link to a folder; copy the folder in or register its target")
    if not target.is_file():
        raise InvalidInputError(f"{p} is not a regular file (broken link to {target}, or special file); remove it")
    if not follow_symlinks and not _inside(target, root):
        raise InvalidInputError(
            f"{p} is a symbolic link to {target}, outside the registered folder {root}; registering it would "
            "copy that file into the model. Replace the link with a copy of the file, or pass --follow-symlinks "
            "(follow_symlinks=True) to capture its target's content"
        )
    return target


def _walk(folder: Path, root: Path, follow_symlinks: bool) -> list[tuple[Path, Path]]:
    """``(location, file to read)`` for every file under ``folder`` (inside the registered ``root``)."""
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
            out.append((p, _file_to_read(p, root, follow_symlinks)))
    return out


def _child(src: Path, child: str, follow_symlinks: bool) -> list[tuple[Path, Path]]:
    """The files ``child`` (a relative path inside ``src``) picks."""
    rel = posixpath.normpath(str(child).replace(os.sep, "/"))
    if PurePosixPath(rel).is_absolute() or rel == ".." or rel.startswith("../"):
        raise InvalidInputError(f"child path {child!r} must be relative and inside {src}")
    if rel == ".":
        return _walk(src, src, follow_symlinks)
    here = src / rel
    parent = here.parent.resolve()  # folder links on the way are followed, but must stay inside
    if not _inside(parent, src):
        raise InvalidInputError(f"child path {child!r} must be relative and inside {src}")
    loc = parent / here.name
    if loc.is_symlink() or loc.is_file():
        return [(loc, _file_to_read(loc, src, follow_symlinks))]
    if loc.is_dir():
        return _walk(loc, src, follow_symlinks)
    raise InvalidInputError(f"child path {child!r} does not exist in {src}")


def collect(
    model_path: str | os.PathLike, child_paths: list[str] | None = None, follow_symlinks: bool = False
) -> tuple[str, bool, list[SourceFile]]:
    """Return ``(root name, is_folder, files)`` for a registration, sorted by path.

    ``child_paths`` (only with a folder) picks files or sub-folders inside it. ``follow_symlinks``
    stores the content of file links that point outside the folder instead of refusing them.
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
        picked = dict(entry for child in child_paths for entry in _child(src, child, follow_symlinks))
    else:
        picked = dict(_walk(src, src, follow_symlinks))
    if not picked:
        raise InvalidInputError(f"folder {str(src)!r} has no files; nothing to register")
    return (
        root,
        True,
        [
            SourceFile(f"{root}/{loc.relative_to(src).as_posix()}", path, os.access(path, os.X_OK))
            for loc, path in sorted(picked.items())
        ],
    )
