"""Calibration, evaluation and label data for quantization: loading, naming, shape checks, batches.

Data is held as a *dataset*: one array per model input, rows along axis 0 (the batch axis).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from packager.errors import InvalidInputError

Dataset = dict[str, np.ndarray]
# What callers may pass: a path (.npz, .npy or a folder of them), one array, or arrays by input name.
DataSource = str | os.PathLike | np.ndarray | Mapping[str, Any]

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint64)": np.uint64,
    "tensor(uint32)": np.uint32,
    "tensor(uint16)": np.uint16,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, shape (None = dynamic) and numpy dtype (None = unknown, left as given)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype | None

    @classmethod
    def from_ort(cls, node_arg: Any) -> InputSpec:
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (node_arg.shape or ()))
        dtype = _ORT_DTYPES.get(node_arg.type)
        return cls(node_arg.name, shape, np.dtype(dtype) if dtype is not None else None)

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or None when the first dimension is dynamic (or there is none)."""
        return self.shape[0] if self.shape else None

    def describe(self) -> str:
        return "[" + ", ".join("N" if d is None else str(d) for d in self.shape) + "]"


def _read_file(path: Path, what: str) -> np.ndarray | dict[str, np.ndarray]:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {what} file {str(path)!r}: {exc}") from None
    raise InvalidInputError(f"{what} file {path.name!r} must be .npz or .npy (or give a folder of them)")


def read_source(source: str | os.PathLike, what: str) -> list[tuple[str, np.ndarray | dict[str, np.ndarray]]]:
    """The arrays in a file, or in each .npy/.npz file of a folder (sorted by name), labelled for errors."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".npy", ".npz"))
        if not files:
            raise InvalidInputError(f"{what} folder {str(path)!r} has no .npy or .npz files")
        return [(f"{what} file {p.name!r}", _read_file(p, what)) for p in files]
    if not path.exists():
        raise InvalidInputError(f"{what} file {str(path)!r} does not exist; give an .npz file or a folder of .npy/.npz")
    return [(f"{what} file {path.name!r}", _read_file(path, what))]


def _name_arrays(arrays: np.ndarray | Mapping[str, Any], specs: list[InputSpec], label: str) -> Dataset:
    names = [s.name for s in specs]
    if not isinstance(arrays, Mapping):
        if len(specs) != 1:
            raise InvalidInputError(
                f"{label} is one array but the model has {len(specs)} inputs ({', '.join(names)}); "
                "give an .npz with one array per input name"
            )
        return {names[0]: np.asarray(arrays)}
    if len(specs) == 1 and len(arrays) == 1:
        return {names[0]: np.asarray(next(iter(arrays.values())))}
    keys = list(arrays)
    if set(names) <= set(keys):
        extra = [k for k in keys if k not in names]
        if extra:
            raise InvalidInputError(
                f"{label} has arrays that are not model inputs: {', '.join(extra)} (inputs: {', '.join(names)})"
            )
        return {n: np.asarray(arrays[n]) for n in names}
    if keys == [f"arr_{i}" for i in range(len(names))]:  # np.savez(path, a, b): positional
        return {n: np.asarray(arrays[k]) for n, k in zip(names, keys, strict=True)}
    missing = [n for n in names if n not in arrays]
    expected = ", ".join(f"{s.name} {s.describe()}" for s in specs)
    raise InvalidInputError(
        f"{label} lacks input(s) {', '.join(missing)}: it has {', '.join(keys) or 'no arrays'}; "
        f"the model expects {expected}"
    )


def _check_shape(spec: InputSpec, array: np.ndarray, label: str) -> np.ndarray:
    if spec.shape and array.ndim == len(spec.shape) - 1 and _fits(spec.shape[1:], array.shape):
        array = array[np.newaxis]  # one example without its batch axis
    if not spec.shape and array.ndim == 0:
        return array
    rows_ok = spec.batch is None or (array.ndim > 0 and array.shape[0] % spec.batch == 0 and array.shape[0] > 0)
    if array.ndim != len(spec.shape) or not _fits(spec.shape[1:], array.shape[1:]) or not rows_ok:
        rows = f" (a multiple of {spec.batch} rows)" if spec.batch is not None and spec.batch > 1 else ""
        raise InvalidInputError(
            f"{label}: input {spec.name!r} has shape {list(array.shape)}, the model expects {spec.describe()}{rows}"
        )
    if spec.dtype is not None and array.dtype != spec.dtype:
        try:
            array = array.astype(spec.dtype)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{label}: input {spec.name!r} is {array.dtype}, the model expects {spec.dtype} ({exc})"
            ) from None
    return array


def _fits(expected: tuple[int | None, ...], actual: tuple[int, ...]) -> bool:
    return len(expected) == len(actual) and all(e is None or e == a for e, a in zip(expected, actual, strict=True))


def to_dataset(source: DataSource, specs: list[InputSpec], what: str) -> Dataset:
    """Load ``source`` and check it against the model's inputs: names, shapes, one row count; cast dtypes."""
    is_path = isinstance(source, str | os.PathLike)
    parts = read_source(source, what) if is_path else [(f"{what} data", source)]
    pieces: list[Dataset] = []
    for label, arrays in parts:
        named = _name_arrays(arrays, specs, label)
        pieces.append({s.name: _check_shape(s, named[s.name], label) for s in specs})
    try:
        data = {s.name: np.concatenate([p[s.name] for p in pieces]) for s in specs} if len(pieces) > 1 else pieces[0]
    except ValueError as exc:
        raise InvalidInputError(f"the {what} files do not stack into one batch per input: {exc}") from None
    counts = {name: (len(a) if a.ndim else 1) for name, a in data.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{n}: {c}" for n, c in counts.items())
        raise InvalidInputError(f"{what} data has different row counts per input ({detail}); give one row per example")
    if rows(data) == 0:
        raise InvalidInputError(f"{what} data is empty: give at least one example")
    return data


def rows(data: Dataset) -> int:
    first = next(iter(data.values()))
    return len(first) if first.ndim else 1


def sample_to_source(sample: Any) -> DataSource | None:
    """A registered sample input (array, dict of arrays or JSON value) as data; None when there is none."""
    if sample is None or isinstance(sample, np.ndarray):
        return sample
    if isinstance(sample, Mapping):
        return {k: np.asarray(v) for k, v in sample.items()}
    if isinstance(sample, bytes):  # CSV or another raw format
        raise InvalidInputError("the registered sample input is not .npy, .npz or .json; give --calibration")
    return np.asarray(sample)


def load_labels(
    labels: str | os.PathLike | np.ndarray | Any, specs: list[InputSpec]
) -> tuple[np.ndarray, Dataset | None]:
    """Labels, and the data they label when they come with it (an .npz with ``x`` and ``y``)."""
    data: Dataset | None = None
    if isinstance(labels, str | os.PathLike):
        path = Path(labels)
        if not path.is_file():
            raise InvalidInputError(f"labels file {str(path)!r} does not exist; give a .npy of class labels")
        loaded = _read_file(path, "labels")
        if isinstance(loaded, dict):
            if "y" not in loaded:
                raise InvalidInputError(
                    f"labels file {path.name!r} has no 'y' array: give y (labels) and x (inputs), or a .npy of labels"
                )
            labels = loaded.pop("y")
            if loaded:  # x, or arrays named after the inputs
                x = loaded["x"] if list(loaded) == ["x"] else loaded
                data = to_dataset(x, specs, f"labels file {path.name!r}")
        else:
            labels = loaded
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InvalidInputError(f"labels must be one class label per row, got shape {list(y.shape)}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InvalidInputError("labels must be integer class labels (or the model's string labels)")
        y = y.astype(np.int64)
    return y, data


def batches(data: Dataset, specs: list[InputSpec], batch_size: int, pad: bool = False) -> list[Dataset]:
    """Split into batches of ``batch_size`` rows (inputs with a fixed batch size: that size).

    With ``pad`` a short last batch is topped up with the first rows: onnxruntime's histogram
    calibrators (entropy, percentile) need every batch to have one shape, and repeating a few
    examples in calibration is harmless.
    """
    n = rows(data)
    fixed = {s.batch for s in specs if s.batch is not None}
    size = fixed.pop() if len(fixed) == 1 else min(batch_size, n)
    if any(a.ndim == 0 for a in data.values()):
        return [data]
    out = []
    for start in range(0, n, size):
        idx = np.arange(start, start + size) % n if pad else np.arange(start, min(start + size, n))
        out.append({k: np.take(a, idx, axis=0) for k, a in data.items()})
    return out


def take_rows(data: Dataset, count: int) -> Dataset:
    """``count`` rows (wrapping round when there are fewer), e.g. a batch-64 feed from 4 sample rows."""
    n = rows(data)
    idx = np.arange(count) % n
    return {k: (np.take(a, idx, axis=0) if a.ndim else a) for k, a in data.items()}
