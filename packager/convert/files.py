"""Finding the model file inside a registered file or folder."""

from __future__ import annotations

from pathlib import Path

from packager.errors import InvalidInputError


def find_model_file(src: Path, suffixes: tuple[str, ...], what: str) -> Path:
    """The one file under ``src`` whose suffix is in ``suffixes``; a registered file is used whatever its name."""
    if src.is_file():
        return src
    found = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not found:
        raise InvalidInputError(f"no {what} file ({', '.join(suffixes)}) in the registered folder {src.name}")
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(src)) for p in found)
        raise InvalidInputError(
            f"the registered folder {src.name} holds several {what} files ({names}); register the one to convert"
        )
    return found[0]
