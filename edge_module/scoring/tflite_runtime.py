"""A ``.tflite`` model behind :class:`~edge_module.runtime.ModelRuntime`, on LiteRT.

The interpreter comes from ``ai_edge_litert`` (``pip install ai-edge-litert``: wheels for Linux
x86_64 and aarch64, macOS arm64 and Windows x86_64), else ``tflite_runtime``, else TensorFlow's
``tf.lite``; it is imported in :meth:`TfliteRuntime.load`, so importing this module stays cheap.

- **Threads.** A TFLite interpreter is not thread-safe: every thread that scores gets its own
  interpreter (made on its first call from the model bytes read once at load), so concurrent
  requests on scoring threads run side by side and never share tensors.
- **Batch.** Inputs are resized (``resize_tensor_input`` + ``allocate_tensors``) only when a call's
  shape differs from that thread's previous call; a steady batch size pays nothing.
- **Quantized models.** An integer (INT8/UINT8/INT16) input or output with a scale is served as FP32:
  clients send floats, quantized with the input's scale and zero point, and get dequantized floats
  back, as the model's float source would answer.
- **Signatures.** Names come from the ``serving_default`` signature (or the only one); files without
  signatures use their tensor names without ``serving_default_`` and ``:0``. Outputs of a signature are
  in natural order (``output_2`` before ``output_10``), others in tensor order.

The helpers (:func:`interpreter_class`, :func:`io_details`, :func:`quantize`, :func:`dequantize`...)
are shared with the packager's conversion parity check (``packager.convert.tflite_runtime``).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from edge_module.runtime import (
    NUMPY_TO_V2,
    BadInputError,
    CheckedFileRuntime,
    NotReadyError,
    ScoringError,
    TensorSpec,
    dims,
)

INTEGER_IO = (np.int8, np.uint8, np.int16)
INSTALL_HINT = (
    "pip install ai-edge-litert (wheels for Linux x86_64/aarch64, macOS arm64, Windows x86_64; "
    "tflite-runtime or tensorflow work too)"
)


def interpreter_class() -> type:
    """LiteRT's ``Interpreter``: ``ai_edge_litert``, else ``tflite_runtime``, else ``tensorflow.lite``;
    :class:`ImportError` naming the install when none is importable."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(f"serving a TFLite model needs LiteRT: {INSTALL_HINT}") from None
    return tf.lite.Interpreter


def natural_key(name: str) -> list[Any]:
    """Sort key: ``output_2`` before ``output_10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def clean_name(name: str) -> str:
    """``serving_default_pixels:0`` → ``pixels`` (tensor names of models without signatures)."""
    name = name.removeprefix("serving_default_")
    return name[:-2] if name.endswith(":0") else name


def signature_key(interp: Any) -> str | None:
    """The signature to serve: ``serving_default``, or the only one; None when there is none to pick."""
    sigs = interp.get_signature_list()
    if "serving_default" in sigs:
        return "serving_default"
    return next(iter(sigs)) if len(sigs) == 1 else None


def io_details(interp: Any) -> tuple[dict[str, dict], dict[str, dict], Any]:
    """Input and output details by name, and the signature runner (None: plain tensor indices)."""
    key = signature_key(interp)
    if key is not None:
        runner = interp.get_signature_runner(key)
        return runner.get_input_details(), runner.get_output_details(), runner
    ins = {clean_name(d["name"]): d for d in interp.get_input_details()}
    outs = {clean_name(d["name"]): d for d in interp.get_output_details()}
    return ins, outs, None


def ordered_outputs(outs: Mapping[str, dict], runner: Any) -> list[str]:
    """Output names in a stable order: natural order for a signature, tensor order otherwise."""
    if runner is not None:
        return sorted(outs, key=natural_key)
    return [n for n, _ in sorted(outs.items(), key=lambda item: item[1]["index"])]


def is_quantized(detail: Mapping[str, Any]) -> bool:
    """An integer tensor with a scale: served as floats."""
    return np.dtype(detail["dtype"]).type in INTEGER_IO and bool(detail["quantization"][0])


def quantize(name: str, array: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """Float values for an integer input quantized with its scale and zero point (rounded, saturated);
    other values cast to the input's dtype. :class:`ValueError` for floats given to an integer input
    without quantization parameters."""
    dtype = np.dtype(detail["dtype"])
    array = np.asarray(array)
    if dtype.type in INTEGER_IO and array.dtype.kind == "f":
        scale, zero_point = detail["quantization"]
        if not scale:
            raise ValueError(f"TFLite input {name!r} is {dtype.name} without quantization parameters")
        info = np.iinfo(dtype)
        return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)
    return array.astype(dtype, copy=False)


def dequantize(array: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """A quantized integer output as float32 (``(q - zero_point) * scale``); others unchanged."""
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).type in INTEGER_IO and scale:
        return ((array.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)
    return array


def _spec(name: str, detail: Mapping[str, Any]) -> TensorSpec:
    datatype = "FP32" if is_quantized(detail) else NUMPY_TO_V2.get(np.dtype(detail["dtype"]), "BYTES")
    shape = detail.get("shape_signature")
    if shape is None or len(shape) != len(detail["shape"]):
        shape = detail["shape"]
    return TensorSpec(name, datatype, dims([int(d) for d in shape]))


class _Slot:
    """One thread's interpreter and the input shapes its tensors are allocated for."""

    __slots__ = ("interp", "runner", "shapes")

    def __init__(self, interp: Any, runner: Any, shapes: dict[int, tuple[int, ...]]):
        self.interp = interp
        self.runner = runner
        self.shapes = shapes


class TfliteRuntime(CheckedFileRuntime):
    """One ``.tflite`` file on LiteRT's CPU interpreter (see the module doc)."""

    inline_safe = True  # no user code, bounded; it has no cancel(): an overrunning call runs to its end

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        version: str | int | None = None,
        *,
        num_threads: int | None = None,
    ):
        super().__init__(path, name, version)
        self.num_threads = num_threads
        self._model: bytes | None = None
        self._interpreter: type | None = None
        self._local = threading.local()
        # (name, tensor index, detail when the input is quantized) / (name, tensor index, detail to dequantize)
        self._feed: list[tuple[str, int, dict | None]] = []
        self._fetch: list[tuple[str, int, dict | None]] = []
        self._subgraph = 0

    # ModelRuntime -----------------------------------------------------------------------
    def load(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite model {self.name!r}: {self.path} is not a file")
        self._interpreter = interpreter_class()
        self._model = self.path.read_bytes()
        slot = self._new_slot()
        ins, outs, runner = io_details(slot.interp)
        names = ordered_outputs(outs, runner)
        self._subgraph = getattr(runner, "_subgraph_index", 0) if runner is not None else 0
        self._feed = [(n, int(d["index"]), d if is_quantized(d) else None) for n, d in ins.items()]
        self._fetch = [(n, int(outs[n]["index"]), outs[n] if is_quantized(outs[n]) else None) for n in names]
        self._set_io([_spec(n, d) for n, d in ins.items()], [_spec(n, outs[n]) for n in names])
        if not self._subgraph:
            self._local.slot = slot  # the loading thread's; every other thread makes its own

    @property
    def loaded(self) -> bool:
        return self._checker is not None

    @property
    def platform(self) -> str:
        return "tflite"

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Score named arrays (or nested lists); outputs by name (dequantized for a quantized model)."""
        return self.predict_prepared(self.prepare(inputs))

    def predict_prepared(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score checked feeds on this thread's interpreter."""
        slot = self._slot()
        try:
            if slot.runner is not None:  # a signature on another subgraph: LiteRT's runner resizes itself
                values = {n: quantize(n, feeds[n], q) if q else feeds[n] for n, _, q in self._feed}
                results = slot.runner(**values)
                return {n: dequantize(np.asarray(results[n]), q) if q else results[n] for n, _, q in self._fetch}
            interp = slot.interp
            shapes = slot.shapes
            resized = False
            for name, index, _ in self._feed:
                shape = feeds[name].shape
                if shapes.get(index) != shape:
                    interp.resize_tensor_input(index, list(shape), strict=False)
                    shapes[index] = shape
                    resized = True
            if resized:
                interp.allocate_tensors()
            for name, index, q in self._feed:
                value = feeds[name]
                interp.set_tensor(index, quantize(name, value, q) if q else np.ascontiguousarray(value))
            interp.invoke()
            get = interp.get_tensor
            return {n: dequantize(get(index), q) if q else get(index) for n, index, q in self._fetch}
        except (ValueError, TypeError) as exc:
            slot.shapes.clear()  # a failed resize leaves the allocation unknown: redo it next call
            raise BadInputError(f"model {self.name!r} rejected the input: {exc}") from exc
        except Exception as exc:
            slot.shapes.clear()
            raise ScoringError(f"model {self.name!r} failed: {type(exc).__name__}: {exc}") from exc

    # helpers ------------------------------------------------------------------------------
    def _new_slot(self) -> _Slot:
        assert self._interpreter is not None and self._model is not None
        try:
            interp = self._interpreter(model_content=self._model, num_threads=self.num_threads)
        except (ValueError, RuntimeError) as exc:
            raise ScoringError(f"cannot load the TFLite model {self.path}: {exc}") from None
        interp.allocate_tensors()
        runner = None
        if self._subgraph:
            runner = interp.get_signature_runner(signature_key(interp))
        shapes = {int(d["index"]): tuple(int(x) for x in d["shape"]) for d in interp.get_input_details()}
        return _Slot(interp, runner, shapes)

    def _slot(self) -> _Slot:
        try:
            return self._local.slot
        except AttributeError:
            if self._model is None:
                raise NotReadyError(f"model {self.name!r} is not loaded yet") from None
            slot = self._local.slot = self._new_slot()
            return slot
