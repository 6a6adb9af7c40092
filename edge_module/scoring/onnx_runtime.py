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
from typing import Any

import numpy as np

from edge_module.runtime import (
    NUMPY_TO_V2,
    BadInputError,
    CheckedFileRuntime,
    InputCheck,
    ScoringError,
    TensorSpec,
    cast,
    check_input,
    describe,
    dims,
)

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
_describe = describe  # the names this module had before the checks moved to edge_module.runtime
_dims = dims


def v2_datatype(onnx_type: str) -> str:
    """V2 datatype for an onnxruntime type string (``tensor(float)`` → ``FP32``); ``BYTES`` for sequences and maps."""
    dtype = ONNX_TO_NUMPY.get(onnx_type)
    if dtype is not None:
        return NUMPY_TO_V2[dtype]
    return _OTHER_V2.get(onnx_type, "BYTES")


def _Input(name: str, onnx_type: str, shape: Sequence[Any] | None) -> InputCheck:
    """The check of one ONNX input (its dtype from the ONNX type: a sequence or map cannot be fed)."""
    return InputCheck(TensorSpec(name, v2_datatype(onnx_type), dims(shape)), ONNX_TO_NUMPY.get(onnx_type))


def _output_kind(onnx_type: str) -> str | None:
    if onnx_type.startswith("seq("):
        return "sequence"
    if onnx_type.startswith("map("):
        return "map"
    return None


class OnnxRuntime(CheckedFileRuntime):
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
        super().__init__(path, name, version)
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.session: Any = None
        self._run: Any = None
        self._run_options: Any = None
        self._cancelled = False
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
        self._set_io(
            [_Input(a.name, a.type, a.shape) for a in session.get_inputs()],
            [TensorSpec(a.name, v2_datatype(a.type), dims(a.shape)) for a in session.get_outputs()],
        )
        self.onnx_types = {a.name: a.type for a in (*session.get_inputs(), *session.get_outputs())}
        self.session = session
        self._run = session.run
        self._run_options = ort.RunOptions()

    @property
    def loaded(self) -> bool:
        return self.session is not None

    @property
    def platform(self) -> str:
        return "onnxruntime"

    def output_kind(self, name: str) -> str | None:
        return _output_kind(self.onnx_types.get(name, ""))

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Score named arrays (or nested lists); outputs by name."""
        return dict(zip(self._output_names, self.run(self.prepare(inputs)), strict=True))

    def predict_prepared(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score checked feeds (:meth:`prepare`'s) without checking them again; outputs by name."""
        outputs = self.run(feeds)
        names = self._output_names
        return {names[0]: outputs[0]} if len(names) == 1 else dict(zip(names, outputs, strict=True))

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

    # the checks, by the names they had here (edge_module.runtime has them now) ---------------
    prepare_input = staticmethod(check_input)
    _cast = staticmethod(cast)
