"""The request bodies a profile sends to ``/score``, round-robin.

v1 took a dataset of JSON strings. Here: a list (each item a JSON string, or a JSON value that is
serialized), one body (a dict), a JSON file holding either, or a JSONL file (one body per line).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packager.errors import InvalidInputError

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_BODIES = 100_000


def _body(item: Any, where: str) -> str:
    if isinstance(item, str):
        try:
            json.loads(item)
        except ValueError as exc:
            raise InvalidInputError(f"input data {where}: not a JSON request body ({exc})") from None
        return item
    if isinstance(item, dict | list):
        return json.dumps(item)
    raise InvalidInputError(f"input data {where}: give a JSON object (or a JSON string) per request body")


def bodies_from(data: Sequence[Any] | dict[str, Any] | str) -> list[str]:
    """Request bodies from a Python value: a list of bodies, or one body (dict or JSON string)."""
    items = [data] if isinstance(data, dict | str) else list(data)
    if not items:
        raise InvalidInputError('input data is empty: give at least one request body, e.g. [{"data": [[...]]}]')
    if len(items) > MAX_BODIES:
        raise InvalidInputError(f"input data has {len(items)} bodies: at most {MAX_BODIES}")
    return [_body(item, f"item {i}") for i, item in enumerate(items)]


def load_file(path: str | os.PathLike[str]) -> list[str]:
    """Bodies from a JSON file (a list of bodies or one body) or a JSONL file (one body a line)."""
    p = Path(path).expanduser()
    try:
        size = p.stat().st_size
    except OSError:
        raise InvalidInputError(f"--input-data {path}: no such file") from None
    if size > MAX_FILE_BYTES:
        raise InvalidInputError(f"--input-data {path}: {size} bytes; at most {MAX_FILE_BYTES // 2**20} MiB")
    text = p.read_text(encoding="utf-8", errors="strict")
    if not text.strip():
        raise InvalidInputError(f"--input-data {path}: the file is empty; give a JSON list of request bodies")
    try:
        doc = json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            doc = [json.loads(line) for line in lines]
        except ValueError as exc:
            raise InvalidInputError(f"--input-data {path}: neither JSON nor JSONL ({exc})") from None
    if isinstance(doc, list | dict):
        return bodies_from(doc)
    raise InvalidInputError(f"--input-data {path}: give a JSON list of request bodies, one body, or JSONL")


__all__ = ["bodies_from", "load_file"]
