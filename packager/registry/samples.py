"""Sample inputs and outputs stored with a model (numpy arrays, JSON values, or files)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from packager.errors import InvalidInputError

FORMATS = {".npy": "npy", ".npz": "npz", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def encode(sample: Any, role: str) -> tuple[str, bytes | Path]:
    """Return ``(file name, bytes or source path)`` for a sample given as a path, array or JSON value."""
    if isinstance(sample, str | os.PathLike):
        path = Path(sample)
        if not path.is_file():
            raise InvalidInputError(f"{role} file {str(path)!r} does not exist; pass a .npy, .npz, .json or .csv file")
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise InvalidInputError(f"{role} file {path.name!r} has an unknown type; use one of {', '.join(FORMATS)}")
        return f"{role}{path.suffix.lower()}", path
    if isinstance(sample, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, sample, allow_pickle=False)
        return f"{role}.npy", buf.getvalue()
    try:
        return f"{role}.json", json.dumps(sample).encode()
    except TypeError as exc:
        raise InvalidInputError(
            f"{role} must be a file path, a numpy array or a JSON-serialisable value: {exc}"
        ) from None


def decode(file_name: str, data: bytes) -> Any:
    """Load a stored sample: numpy array (npy), dict of arrays (npz), JSON value, or raw bytes."""
    fmt = FORMATS.get(Path(file_name).suffix.lower())
    if fmt == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if fmt == "npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    if fmt == "json":
        return json.loads(data)
    return data
