"""Which files of a ``--source-dir`` go into the image's app layer (both backends use :func:`collect`).

Left out always: VCS folders (``.git``, ``.hg``, ``.svn``), ``__pycache__`` and tool caches, the
workspace (``.edgepack`` folders, and any folder passed in ``exclude``: the workspace and layer cache
when they sit inside the source directory). Then the first ignore file found at the top of the folder:

* ``.edgepackignore``: ``.dockerignore`` syntax (patterns are relative to the source directory's top,
  ``**`` spans folders, ``!`` re-includes, the last matching line wins, even inside an excluded folder);
* else ``.amlignore``, else ``.gitignore``: gitignore syntax, as Azure ML v1 read them.

File modes are kept owner-only where they were (``.env`` at 0600 stays 0600 in the layer); files
named like secrets that do go in are reported with a warning.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pathspec import GitIgnoreSpec, PathSpec
from pathspec.patterns.gitignore import GitIgnorePatternError

from packager.errors import InvalidInputError
from packager.image import tarball
from packager.image.spec import FileEntry

log = logging.getLogger(__name__)

#: Folder names never taken from a source directory, at any depth.
ALWAYS_EXCLUDED = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".edgepack", ".ipynb_checkpoints", ".pytest_cache", ".mypy_cache"}
)
#: Ignore files, in order of precedence: the first present one is used.
IGNORE_FILES = (".edgepackignore", ".amlignore", ".gitignore")
#: Names that usually hold secrets: included ones are warned about.
SECRET_NAMES = (".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519")
_NOT_SECRET_SUFFIXES = (".example", ".sample", ".template", ".dist")
_MAX_IGNORE_FILE = 1 << 20


@dataclass(frozen=True)
class Rules:
    """The ignore rules of one source directory: ``file`` is the ignore file read (``""`` for none)."""

    file: str = ""
    spec: PathSpec | None = None

    @property
    def reincludes(self) -> bool:
        """True when a ``!`` line may bring back files inside an excluded folder (so the folder is walked)."""
        return self.spec is not None and any(p.include is False for p in self.spec.patterns)

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """Whether the path ``rel`` (POSIX, relative to the source directory) is left out."""
        if self.spec is None:
            return False
        return self.spec.match_file(rel + "/" if is_dir else rel)


def dockerignore_lines(lines: Iterable[str]) -> list[str]:
    """``.dockerignore`` lines as anchored gitignore lines (what Docker's matcher does, in gitignore terms).

    Docker trims each line, drops comments, cleans the path and anchors it at the top of the context:
    ``*.tmp`` is ``/*.tmp`` (top level only), ``data/`` is ``/data``, ``!data/keep.txt`` re-includes.
    """
    out: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        if neg:
            line = line[1:].strip()
            if not line:
                continue
        path = os.path.normpath(line.replace("\\", "/") if os.sep == "\\" else line)
        path = path.lstrip("/") or "."
        if path == ".":
            path = "**"
        if path == ".." or path.startswith("../"):
            continue  # outside the context: matches nothing
        out.append(("!" if neg else "") + "/" + path)
    return out


def load_rules(root: Path) -> Rules:
    """The rules of ``root``: ``.edgepackignore``, else ``.amlignore``, else ``.gitignore``, else none."""
    for name in IGNORE_FILES:
        path = root / name
        if not path.is_file():
            continue
        if path.stat().st_size > _MAX_IGNORE_FILE:
            raise InvalidInputError(f"{path} is larger than 1 MiB; an ignore file lists patterns, one a line")
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
        try:
            if name == ".edgepackignore":
                spec: PathSpec = PathSpec.from_lines("gitignore", dockerignore_lines(lines))
            else:
                spec = GitIgnoreSpec.from_lines(lines)
        except (GitIgnorePatternError, ValueError) as exc:
            raise InvalidInputError(f"{path}: {exc}; fix the pattern or remove the line") from None
        return Rules(name, spec)
    return Rules()


def collect(root: Path, dest: str, exclude: Sequence[Path] = ()) -> list[FileEntry]:
    """Entries for the files of source directory ``root`` that go into the image under ``dest``.

    Symlinks are kept as links (never followed); modes are kept owner-only where they are.
    """
    root = Path(root).resolve()
    rules = load_rules(root)
    skip = {Path(p).resolve() for p in exclude}
    base = PurePosixPath(dest)
    out: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for d in sorted(dirnames):
            rel = prefix + d
            if d in ALWAYS_EXCLUDED or here / d in skip:
                continue
            if (here / d).is_symlink():
                if not rules.ignored(rel):
                    out.append(tarball.host_entry(here / d, str(base / rel), keep_private=True))
            elif rules.reincludes or not rules.ignored(rel, is_dir=True):
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            rel = prefix + f
            if not rules.ignored(rel):
                out.append(tarball.host_entry(here / f, str(base / rel), keep_private=True))
    warn_secrets(out, dest)
    return out


def looks_secret(name: str) -> bool:
    """Whether a file name is one that usually holds secrets (``.env``, ``*.pem``, ``id_rsa``...)."""
    low = name.lower()
    if low.endswith(_NOT_SECRET_SUFFIXES):
        return False
    return any(fnmatch.fnmatchcase(low, pattern) for pattern in SECRET_NAMES)


def warn_secrets(entries: Iterable[FileEntry], dest: str) -> list[str]:
    """Log a warning naming the files that look like secrets; return their paths relative to ``dest``."""
    found = [
        str(PurePosixPath(e.path).relative_to(dest))
        for e in entries
        if e.link is None and looks_secret(PurePosixPath(e.path).name)
    ]
    if found:
        log.warning(
            "the source directory has files that look like secrets and go into the image: %s "
            "(owner-only modes are kept); list them in .edgepackignore to leave them out",
            ", ".join(sorted(found)),
        )
    return found


__all__ = ["ALWAYS_EXCLUDED", "IGNORE_FILES", "Rules", "collect", "dockerignore_lines", "load_rules", "looks_secret"]
