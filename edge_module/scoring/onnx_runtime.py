"""An ONNX model behind :class:`~edge_module.runtime.ModelRuntime`, on onnxruntime.

``predict`` checks what it is given against the model (names, dtypes, rank and fixed dimensions)
and raises :class:`~edge_module.runtime.BadInputError` naming the input, e.g.
``input 'input' has shape [1, 63], expected [-1, 64]``. Casts are the safe ones: any real number
to a float input (JSON numbers arrive as float64/int64), integral numbers within range to an
integer input, 0/1 to a bool input, text only to a string input.

onnxruntime is imported in :meth:`OnnxRuntime.load`, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_module.runtime import NUMPY_TO_V2, BadInputError, ModelRuntime, NotReadyError, ScoringError, TensorSpec

# ONNX tensor element types (as onnxruntime names them) → numpy.
ONNX_TO_NUMPY: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(np.object_),
}
_OTHER_V2 = {"tensor(bfloat16)": "BF16"}
_KIND_NAMES = {"U": "text", "S": "bytes", "O": "null, objects or mixed values", "M": "dates", "m": "durations"}


def _describe(array: np.ndarray) -> str:
    if array.dtype.kind in "iufb":
        return f"numbers ({array.dtype})"
    return _KIND_NAMES.get(array.dtype.kind, str(array.dtype))


def v2_datatype(onnx_type: str) -> str:
    """V2 datatype for an onnxruntime type string (``tensor(float)`` → ``FP32``); ``BYTES`` for sequences and maps."""
    dtype = ONNX_TO_NUMPY.get(onnx_type)
    if dtype is not None:
        return NUMPY_TO_V2[dtype]
    return _OTHER_V2.get(onnx_type, "BYTES")


def _dims(shape: Sequence[Any] | None) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (shape or ()))


class _Input:
    """What is precomputed per input so the per-request checks stay a few comparisons."""

    __slots__ = ("dtype", "fixed", "kind", "name", "rank", "shape", "shape_text", "spec", "tail", "v2")

    def __init__(self, name: str, onnx_type: str, shape: Sequence[Any] | None):
        self.name = name
        self.dtype = ONNX_TO_NUMPY.get(onnx_type)
        self.kind = self.dtype.kind if self.dtype is not None else "?"
        self.v2 = v2_datatype(onnx_type)
        self.shape = _dims(shape)
        self.rank = len(self.shape)
        self.fixed = tuple((axis, size) for axis, size in enumerate(self.shape) if size >= 0)
        # The usual case, a free batch dimension and fixed others: one tuple comparison per request.
        rest = self.shape[1:]
        self.tail = rest if self.rank and all(d >= 0 for d in rest) else None
        self.shape_text = str(list(self.shape))
        self.spec = TensorSpec(name, self.v2, self.shape)


class OnnxRuntime(ModelRuntime):
    """One ``.onnx`` file on onnxruntime's CPU provider (or the providers given)."""

    inline_safe = True  # no user code: a transport may call it on its event loop (cancel() bounds it)

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        version: str | int | None = None,
        *,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
    ):
        self.path = Path(path)
        self.name = name or self.path.stem
        self.version = None if version is None else str(version)
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.session: Any = None
        self._run: Any = None
        self._run_options: Any = None
        self._cancelled = False
        self._inputs: list[_Input] = []
        self._by_name: dict[str, _Input] = {}
        self._outputs: list[TensorSpec] = []
        self.output_names: list[str] = []
        self.input_names: list[str] = []
        self.onnx_types: dict[str, str] = {}  # input and output names → onnxruntime type strings

    # ModelRuntime -----------------------------------------------------------------------
    def load(self) -> None:
        import onnxruntime as ort

        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.name!r}: {self.path} is not a file")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_threads is not None:
            options.intra_op_num_threads = int(self.intra_op_threads)
        if self.inter_op_threads is not None:
            options.inter_op_num_threads = int(self.inter_op_threads)
        session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.providers)
        self._inputs = [_Input(a.name, a.type, a.shape) for a in session.get_inputs()]
        self._by_name = {i.name: i for i in self._inputs}
        self._outputs = [TensorSpec(a.name, v2_datatype(a.type), _dims(a.shape)) for a in session.get_outputs()]
        self.input_names = [i.name for i in self._inputs]
        self.output_names = [o.name for o in self._outputs]
        self.onnx_types = {a.name: a.type for a in (*session.get_inputs(), *session.get_outputs())}
        self.session = session
        self._run = session.run
        self._run_options = ort.RunOptions()

    @property
    def loaded(self) -> bool:
        return self.session is not None

    @property
    def inputs(self) -> list[TensorSpec]:
        self._require_loaded()
        return [i.spec for i in self._inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        self._require_loaded()
        return list(self._outputs)

    @property
    def platform(self) -> str:
        return "onnxruntime"

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Score named arrays (or nested lists); outputs by name."""
        return dict(zip(self.output_names, self.run(self.prepare(inputs)), strict=True))

    # The parts of predict, for callers that keep the outputs as a list (the ONNX app) ---------
    def prepare(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check names and convert every value with :meth:`prepare_input`."""
        self._require_loaded()
        by_name = self._by_name
        if len(inputs) != len(by_name) or any(k not in by_name for k in inputs):
            self._name_error(inputs)
        return {name: self.prepare_input(by_name[name], value) for name, value in inputs.items()}

    def prepare_single(self, value: Any) -> dict[str, np.ndarray]:
        """Feeds for a single-input model (the ``{"data": ...}`` form)."""
        spec = self._inputs[0]
        return {spec.name: self.prepare_input(spec, value)}

    def run(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        """onnxruntime's run on prepared feeds (all outputs, in :attr:`output_names` order).

        onnxruntime refusing the feeds is a :class:`BadInputError`; any other failure a :class:`ScoringError`."""
        options = self._run_options
        if self._cancelled:  # a cancel() that came after its run ended must not stop this one
            self._cancelled = False
            options.terminate = False
        try:
            return self._run(None, feeds, options)
        except Exception as exc:
            if type(exc).__name__ == "InvalidArgument":  # onnxruntime's complaint about the feeds
                raise BadInputError(f"model {self.name!r} rejected the input: {exc}") from exc
            if self._cancelled:
                raise ScoringError(f"model {self.name!r}: the run was cancelled", 504) from exc
            raise ScoringError(f"model {self.name!r} failed: {type(exc).__name__}: {exc}") from exc

    def cancel(self) -> None:
        """Stop the runs in progress (onnxruntime's ``RunOptions.terminate``): they raise a 504
        :class:`ScoringError`. For a transport's scoring timeout; later runs are not affected."""
        if self._run_options is not None:
            self._cancelled = True
            self._run_options.terminate = True

    @staticmethod
    def prepare_input(spec: _Input, value: Any) -> np.ndarray:
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
            array = OnnxRuntime._cast(spec, array)
        shape = array.shape
        tail = spec.tail
        if tail is not None:
            if shape[1:] != tail or len(shape) != spec.rank or (spec.shape[0] >= 0 and shape[0] != spec.shape[0]):
                raise BadInputError(f"input {spec.name!r} has shape {list(shape)}, expected {spec.shape_text}")
        elif len(shape) != spec.rank or any(shape[axis] != size for axis, size in spec.fixed):
            raise BadInputError(f"input {spec.name!r} has shape {list(shape)}, expected {spec.shape_text}")
        return array

    # helpers ------------------------------------------------------------------------------
    @staticmethod
    def _cast(spec: _Input, array: np.ndarray) -> np.ndarray:
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
                info = np.iinfo(spec.dtype)
                if array.min() < info.min or array.max() > info.max:
                    raise BadInputError(
                        f"input {name!r} expects {spec.v2}, got values outside [{info.min}, {info.max}]"
                    )
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
            raise BadInputError(f"input {name!r} expects strings (BYTES), got {_describe(array)}")
        if spec.dtype is None:
            raise BadInputError(f"input {name!r} has type {spec.v2}, which cannot be fed from JSON or numpy here")
        raise BadInputError(f"input {name!r} expects {spec.v2} values, got {_describe(array)}")

    def _name_error(self, inputs: Mapping[str, Any]) -> None:
        expected = ", ".join(f"{i.name!r} ({i.v2} {i.shape_text})" for i in self._inputs)
        unknown = [k for k in inputs if k not in self._by_name]
        missing = [i.name for i in self._inputs if i.name not in inputs]
        parts = []
        if unknown:
            parts.append(f"unknown input{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
        if missing:
            parts.append(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
        raise BadInputError(f"{'; '.join(parts)}: model {self.name!r} expects {expected}")

    def _require_loaded(self) -> None:
        if self.session is None:
            raise NotReadyError(f"model {self.name!r} is not loaded yet")

    def __repr__(self) -> str:
        return f"OnnxRuntime({str(self.path)!r}, name={self.name!r}, version={self.version!r})"
