"""Checking request values against a model's inputs: names, dtypes, rank and fixed dimensions.

Shared by every :class:`~edge_module.runtime.ModelRuntime` (the default ``prepare``) and the ONNX
runtime. A wrong value raises :class:`~edge_module.runtime.BadInputError` naming the input, e.g.
``input 'input' has shape [1, 63], expected [-1, 64]``. Casts are the safe ones: any real number to a
float input (JSON numbers arrive as float64/int64), integral numbers within range to an integer input,
0/1 to a bool input, text only to a string input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edge_module.runtime import V2_TO_NUMPY, BadInputError, TensorSpec

_KIND_NAMES = {"U": "text", "S": "bytes", "O": "null, objects or mixed values", "M": "dates", "m": "durations"}


def describe(array: np.ndarray) -> str:
    """What a client sent, in words (``numbers (float64)``, ``text``...)."""
    if array.dtype.kind in "iufb":
        return f"numbers ({array.dtype})"
    return _KIND_NAMES.get(array.dtype.kind, str(array.dtype))


def dims(shape: Sequence[Any] | None) -> tuple[int, ...]:
    """A shape with symbolic or unknown dimensions as ``-1``."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (shape or ()))


class InputCheck:
    """What is precomputed per input so the per-request checks stay a few comparisons."""

    __slots__ = ("dtype", "fixed", "kind", "name", "rank", "shape", "shape_text", "spec", "tail", "v2")

    def __init__(self, spec: TensorSpec, dtype: np.dtype | bool | None = True):
        """``dtype``: the numpy dtype values are cast to; by default the spec's datatype's (None: an
        input that cannot be fed from JSON or numpy, e.g. an ONNX sequence)."""
        self.name = spec.name
        self.dtype = V2_TO_NUMPY.get(spec.datatype) if dtype is True else dtype
        self.kind = self.dtype.kind if isinstance(self.dtype, np.dtype) else "?"
        self.v2 = spec.datatype
        self.shape = dims(spec.shape)
        self.rank = len(self.shape)
        self.fixed = tuple((axis, size) for axis, size in enumerate(self.shape) if size >= 0)
        # The usual case, a free batch dimension and fixed others: one tuple comparison per request.
        rest = self.shape[1:]
        self.tail = rest if self.rank and all(d >= 0 for d in rest) else None
        self.shape_text = str(list(self.shape))
        self.spec = spec if spec.shape == self.shape else TensorSpec(spec.name, spec.datatype, self.shape)


def check_input(spec: InputCheck, value: Any) -> np.ndarray:
    """``value`` as an array of the input's dtype and shape; :class:`BadInputError` naming the input."""
    if type(value) is np.ndarray:
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise BadInputError(
                f"input {spec.name!r} is not a rectangular array ({exc}); expected {spec.v2} {spec.shape_text}"
            ) from None
    if array.dtype != spec.dtype:
        array = cast(spec, array)
    shape = array.shape
    tail = spec.tail
    if tail is not None:
        if shape[1:] != tail or len(shape) != spec.rank or (spec.shape[0] >= 0 and shape[0] != spec.shape[0]):
            raise BadInputError(f"input {spec.name!r} has shape {list(shape)}, expected {spec.shape_text}")
    elif len(shape) != spec.rank or any(shape[axis] != size for axis, size in spec.fixed):
        raise BadInputError(f"input {spec.name!r} has shape {list(shape)}, expected {spec.shape_text}")
    return array


def cast(spec: InputCheck, array: np.ndarray) -> np.ndarray:
    """``array`` cast to the input's dtype when the cast loses nothing; else :class:`BadInputError`."""
    kind, target, name = array.dtype.kind, spec.kind, spec.name
    numeric = kind in "iufb"
    if target == "f" and numeric:
        return array.astype(spec.dtype)
    if target in "iu" and numeric:
        if kind == "f" and array.size:
            if not np.isfinite(array).all():
                raise BadInputError(f"input {name!r} expects integers ({spec.v2}), got non-finite numbers")
            if not (np.mod(array, 1) == 0).all():
                raise BadInputError(f"input {name!r} expects integers ({spec.v2}), got fractional numbers")
        if kind != "b" and array.size:
            info = np.iinfo(spec.dtype)  # type: ignore[arg-type]
            if array.min() < info.min or array.max() > info.max:
                raise BadInputError(f"input {name!r} expects {spec.v2}, got values outside [{info.min}, {info.max}]")
        return array.astype(spec.dtype)
    if target == "b" and numeric:
        if kind != "b" and array.size and not np.isin(array, (0, 1)).all():
            raise BadInputError(f"input {name!r} expects booleans (BOOL), got numbers other than 0 and 1")
        return array.astype(np.bool_)
    if target == "O":
        if kind == "U" or (kind == "O" and all(isinstance(v, str) for v in array.flat)):
            return array.astype(object)
        if kind == "S":
            return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array)
        raise BadInputError(f"input {name!r} expects strings (BYTES), got {describe(array)}")
    if spec.dtype is None:
        raise BadInputError(f"input {name!r} has type {spec.v2}, which cannot be fed from JSON or numpy here")
    raise BadInputError(f"input {name!r} expects {spec.v2} values, got {describe(array)}")


class InputChecker:
    """The inputs of one model, checked and converted by name (see the module doc)."""

    __slots__ = ("by_name", "checks", "model")

    def __init__(self, model: str, checks: Iterable[InputCheck | TensorSpec]):
        self.model = model
        self.checks = [c if isinstance(c, InputCheck) else InputCheck(c) for c in checks]
        self.by_name = {c.name: c for c in self.checks}

    def prepare(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Every input converted with :func:`check_input`; unknown or missing names raise."""
        by_name = self.by_name
        if len(inputs) != len(by_name) or any(k not in by_name for k in inputs):
            self.name_error(inputs)
        return {name: check_input(by_name[name], value) for name, value in inputs.items()}

    def prepare_single(self, value: Any) -> dict[str, np.ndarray]:
        """Feeds for a single-input model (the ``{"data": ...}`` form)."""
        spec = self.checks[0]
        return {spec.name: check_input(spec, value)}

    def name_error(self, inputs: Mapping[str, Any]) -> None:
        expected = ", ".join(f"{i.name!r} ({i.v2} {i.shape_text})" for i in self.checks)
        unknown = [k for k in inputs if k not in self.by_name]
        missing = [i.name for i in self.checks if i.name not in inputs]
        parts = []
        if unknown:
            parts.append(f"unknown input{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
        if missing:
            parts.append(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
        raise BadInputError(f"{'; '.join(parts)}: model {self.model!r} expects {expected}")
