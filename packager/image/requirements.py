"""pip requirement lines (PEP 508) read with :mod:`packaging`: project names, validation, requirements files.

A line is kept as written (extras and environment markers included: pip reads it); ``packaging``
checks it and gives the canonical project name (``Scikit_Learn`` and ``scikit.learn`` are both
``scikit-learn``). Requirements files are read line by line with ``-r FILE`` includes followed;
other pip options and URL/VCS requirements are refused with the reason (images are built from
binary wheels of an index).
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from packager.errors import InvalidInputError

#: What a requirement line may look like, for error messages.
ACCEPTED = "a project name with optional extras, version and marker (PEP 508), e.g. scikit-learn==1.5.2 or pandas>=2"


def parse_requirement(line: str, where: str = "requirement") -> Requirement:
    """``line`` as a :class:`~packaging.requirements.Requirement`; a clear error names it when it is not one."""
    try:
        return Requirement(line.strip())
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise InvalidInputError(
            f"{where}: {line.strip()!r} is not a valid pip requirement ({reason}); write {ACCEPTED}"
        ) from None


def requirement_name(line: str, where: str = "requirement") -> str:
    """The canonical project name of a requirement line (``Onnx_Runtime>=1.31`` → ``onnx-runtime``)."""
    return canonicalize_name(parse_requirement(line, where).name)


def resolve_path(path: str | Path, base_dir: Path | None) -> Path:
    """``path`` made absolute, relative to ``base_dir`` (when given) rather than the current folder."""
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p.resolve()


def read_requirements_file(path: Path, seen: frozenset[Path] = frozenset()) -> list[str]:
    """The requirement lines of a ``requirements.txt`` (comments dropped, ``-r`` includes followed)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"cannot read requirements file {path}: {exc.strerror}; fix the path") from None
    out: list[str] = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        out += pip_entry(line, path.parent, f"requirements file {path}", seen | {path})
    return out


def pip_entry(entry: str, base_dir: Path | None, where: str, seen: frozenset[Path] = frozenset()) -> list[str]:
    """One pip requirement line: ``-r FILE`` is read (relative to ``base_dir``); other options are refused."""
    line = entry.strip()
    if line.startswith(("-r ", "--requirement ", "-r=", "--requirement=")):
        target = re.split(r"[ =]", line, maxsplit=1)[1].strip()
        path = resolve_path(target, base_dir)
        if path in seen:
            raise InvalidInputError(f"{where}: requirements file {path} includes itself")
        return read_requirements_file(path, seen)
    if line.startswith("-"):
        raise InvalidInputError(
            f"{where}: pip option {line!r} is not supported; edgepack installs wheels from PyPI "
            "(set PIP_INDEX_URL / PIP_EXTRA_INDEX_URL in the environment for another index)"
        )
    if "://" in line or line.startswith(("git+", "hg+", "svn+", "bzr+")):
        raise InvalidInputError(
            f"{where}: {line!r} is a URL or VCS requirement; images are built from binary wheels only: "
            "publish a wheel to an index and require it by name"
        )
    parse_requirement(line, where)
    return [line]


__all__ = [
    "ACCEPTED",
    "parse_requirement",
    "pip_entry",
    "read_requirements_file",
    "requirement_name",
    "resolve_path",
]
