"""The contract between transports (HTTP, MQTT, IoT Edge hub) and what scores.

Two levels, as in MLServer's split of transport from model runtime:

- :class:`ModelRuntime`: one model; ``load()`` once, ``predict(inputs) -> outputs`` on named
  numpy arrays, plus metadata (input/output names, datatypes, shapes). Every route and transport
  scores through it (``/score``, V2, MQTT and IoT Edge batches); backends implement it (ONNX,
  TFLite, the FPGA runtime) and register in :mod:`edge_module.scoring.registry`.
- :class:`ScoringApp`: what a transport serves: the Azure ML ``/score`` contract
  (``score(Request) -> Response``), the swagger documents, and the models for V2.
  :class:`BatchableApp` is a ScoringApp whose ``/score`` splits around the model call
  (``parse`` → ``runtime.predict`` → ``respond``), so transports can merge requests.

What transports rely on is declared here, with defaults, and read once when the app has loaded:

=====================  ============================================================================
``inline_safe``        fast, bounded and free of user code: may run on a transport's event loop
                       (default False: run on a scoring thread with a timeout)
``cancel()``           stop the calls in progress (they raise); called when a call overruns the
                       scoring timeout: an inline call, or a call on a scoring thread when it is the
                       only one in progress. Default: nothing to stop (``supports_cancel`` False)
``supports_cancel``    True when the class overrides ``cancel()``
``predict(inputs)``    rows along axis 0 are independent: requests with the same input names,
                       dtypes and per-row shapes may be concatenated and scored in one call, the
                       outputs cut back per request (see :mod:`edge_module.batching`)
=====================  ============================================================================

Optional capability, declared by subclassing (transports test ``isinstance``):
:class:`VersionSelection`, an app that serves several versions of a model and can switch which one
``/score`` uses while serving (the module twin's ``model_version``).

Transports never import a backend; backends never import a transport. Everything here is
synchronous: transports decide how to run it (inline, thread, batch).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# V2 (Open Inference Protocol) datatypes ↔ numpy.
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: V2 datatype (``FP32``, ``INT64``, ``BYTES``...) and shape (``-1`` = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class ScoringError(Exception):
    """A failure with an HTTP-style status; transports turn it into a 4xx/5xx reply or an error message."""

    status = 500

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class BadInputError(ScoringError):
    """The request is malformed or does not fit the model (wrong name, shape, dtype)."""

    status = 400


class UnsupportedMediaTypeError(ScoringError):
    status = 415


class NotReadyError(ScoringError):
    """The model has not finished loading (or failed to)."""

    status = 503


class ModelNotFoundError(ScoringError):
    status = 404


class ScoringTimeout(ScoringError):
    """The call ran past the scoring timeout (504)."""

    status = 504

    def __init__(self, timeout: float):
        super().__init__(f"scoring timed out after {timeout:g} s")
        self.timeout = timeout


class _Cancellable:
    """``cancel()`` and ``supports_cancel``, shared by :class:`ModelRuntime` and :class:`ScoringApp`."""

    inline_safe: bool = False
    """Fast, bounded and free of user code: a transport may call it on its event loop (the watchdog
    then bounds an overrunning call with :meth:`cancel`). False: it runs on a scoring thread."""

    def cancel(self) -> None:
        """Stop the calls in progress: they raise (a 504 :class:`ScoringError`), later calls are not
        affected. Transports call it when a call overruns the scoring timeout. The default cannot stop
        anything; override it (onnxruntime: ``RunOptions.terminate``) to make ``supports_cancel`` True."""

    @property
    def supports_cancel(self) -> bool:
        """Whether :meth:`cancel` can stop a call (True when a subclass overrides it)."""
        return type(self).cancel is not _Cancellable.cancel


class ModelRuntime(_Cancellable, ABC):
    """One model. ``load`` may be slow and is called once before any ``predict``.

    ``predict`` gets arrays whose first axis is the batch (when the model has one): a transport may
    concatenate several requests' inputs along it and cut the outputs back (outputs must then keep
    one row per input row; a runtime whose outputs do not is scored request by request).

    Every route and transport scores through this class only (``/score`` and its swagger, V2,
    MQTT and IoT Edge batches): a subclass implements ``load``, ``inputs``, ``outputs`` and
    ``predict``; the rest has defaults a runtime may override for speed or detail:

    ======================  =======================================================================
    ``prepare(inputs)``     check and convert a request's values (nested lists or arrays) against
                            ``inputs`` (names, dtypes, rank, fixed dimensions; safe casts only:
                            :class:`InputChecker`, at the end of this module)
    ``prepare_single(v)``   the same for a single-input model's ``{"data": ...}``
    ``predict_prepared``    score what ``prepare`` returned (default: ``predict``; override to skip
                            checking twice)
    ``loaded``              True once ``load()`` has run (default False: apps call ``load()`` once)
    ``input_names`` ...     ``input_names``/``output_names`` from the specs; ``platform``;
                            ``output_kind(name)``: ``"sequence"``/``"map"`` for an output that is
                            not a tensor (for the swagger schema)
    ======================  =======================================================================
    """

    name: str
    version: str | None = None
    path: Any = None
    """Where the model was loaded from (a file or folder), for logs; None when not from a file."""

    @abstractmethod
    def load(self) -> None: ...

    @property
    @abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score named arrays, outputs by name; raise :class:`BadInputError` naming the input for a
        wrong name, shape or dtype, :class:`ScoringError` for a failure of the model."""

    @property
    def platform(self) -> str:
        """V2 metadata ``platform`` (e.g. ``onnxruntime``)."""
        return "edgepack"

    # Defaults every route relies on; override for speed -------------------------------------
    @property
    def loaded(self) -> bool:
        """True once :meth:`load` has run (the default False makes an app call ``load()`` itself)."""
        return False

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def prepare(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """A request's values (arrays or nested lists by input name) checked and converted against
        :attr:`inputs`; :class:`BadInputError` naming the input (see :class:`InputChecker`)."""
        return self._input_checker().prepare(inputs)

    def prepare_single(self, value: Any) -> dict[str, np.ndarray]:
        """:meth:`prepare` for a single-input model given the value alone (``{"data": ...}``)."""
        return self._input_checker().prepare_single(value)

    def predict_prepared(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score feeds that :meth:`prepare` returned (default: :meth:`predict`)."""
        return self.predict(feeds)

    def output_kind(self, name: str) -> str | None:
        """``"sequence"`` or ``"map"`` for an output that is not a tensor (ONNX ``seq(map(...))``, as
        classifiers give); None for a tensor. Only the swagger document's schema uses it."""
        return None

    def _input_checker(self) -> Any:
        specs = self.inputs
        cached = self.__dict__.get("_edgepack_checker")
        if cached is None or (cached[0] is not specs and cached[0] != specs):
            cached = self.__dict__["_edgepack_checker"] = (specs, InputChecker(self.name, specs))
        return cached[1]


class FileRuntime(ModelRuntime):
    """A runtime whose ``load`` sets ``_inputs`` and ``_outputs`` (lists of specs) and whose ``loaded``
    says when: ``inputs``/``outputs`` are copies of them, :class:`NotReadyError` before."""

    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]

    @property
    def inputs(self) -> list[TensorSpec]:
        self._require_loaded()
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        self._require_loaded()
        return list(self._outputs)

    def _require_loaded(self) -> None:
        if not self.loaded:
            raise NotReadyError(f"model {self.name!r} is not loaded yet")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, name={self.name!r}, version={self.version!r})"


class CheckedFileRuntime(FileRuntime):
    """A :class:`FileRuntime` (ONNX, TFLite) named after its file's stem whose ``load`` ends with
    :meth:`_set_io`: the names are kept and one :class:`InputChecker` checks every request."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None, version: str | int | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem
        self.version = None if version is None else str(version)
        self._checker: InputChecker | None = None
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._input_names: list[str] = []
        self._output_names: list[str] = []

    def _set_io(self, inputs: Iterable[InputCheck | TensorSpec], outputs: list[TensorSpec]) -> None:
        """Keep the loaded model's inputs (checks or specs), outputs, their names and the input checker."""
        checker = InputChecker(self.name, inputs)
        self._inputs = [check.spec for check in checker.checks]
        self._outputs = outputs
        self._input_names = [check.name for check in checker.checks]
        self._output_names = [spec.name for spec in outputs]
        self._checker = checker

    @property
    def input_names(self) -> list[str]:
        """The input names, in the model's order (the list kept at load: callers only read it)."""
        return self._input_names

    @property
    def output_names(self) -> list[str]:
        """The output names, in the order ``predict`` gives them (kept at load, as ``input_names``)."""
        return self._output_names

    def prepare(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check names and convert every value (:meth:`InputChecker.prepare`)."""
        return self._loaded_checker().prepare(inputs)

    def prepare_single(self, value: Any) -> dict[str, np.ndarray]:
        """Feeds for a single-input model (the ``{"data": ...}`` form)."""
        spec = self._loaded_checker().checks[0]
        return {spec.name: check_input(spec, value)}

    def _loaded_checker(self) -> InputChecker:
        """The input checker; :class:`NotReadyError` before :meth:`_set_io` has run."""
        checker = self._checker
        if checker is None:
            raise NotReadyError(f"model {self.name!r} is not loaded yet")
        return checker


@dataclass
class Request:
    """A transport-neutral ``/score`` request."""

    body: bytes
    content_type: str = "application/json"
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    query: str = ""
    path: str = "/score"


@dataclass
class Response:
    """What ``/score`` answers. ``body`` is sent as is; str is UTF-8 encoded."""

    body: bytes | str
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class ScoringApp(_Cancellable, ABC):
    """What a transport serves. ``load`` runs the entry script's ``init()`` / loads the models."""

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def score(self, request: Request) -> Response:
        """The Azure ML ``/score`` contract. Raise :class:`ScoringError` subclasses for 4xx/5xx."""

    @abstractmethod
    def models(self) -> list[ModelRuntime]:
        """Models exposed through the V2 protocol (may be empty for entry-script apps)."""

    @abstractmethod
    def swagger(self, version: int | str = 2) -> dict[str, Any]:
        """The swagger (2.0) or OpenAPI (3.x, e.g. ``3`` or ``"3.1"``) document for ``/score``."""


class BatchableApp(ScoringApp):
    """A :class:`ScoringApp` whose ``/score`` is ``respond(runtime, runtime.predict(feeds))`` for
    ``runtime, feeds = parse(request)``: transports then merge the feeds of concurrent requests
    for one runtime into one ``predict`` call (HTTP adaptive batching, MQTT and IoT Edge micro-batches).
    """

    @abstractmethod
    def parse(self, request: Request) -> tuple[ModelRuntime, dict[str, np.ndarray]]:
        """The runtime a ``/score`` POST is for and its checked inputs (rows along axis 0).
        Raise :class:`ScoringError` subclasses for a request that cannot be scored."""

    @abstractmethod
    def respond(self, runtime: ModelRuntime, outputs: Mapping[str, Any], run_ms: float | None = None) -> Response:
        """The ``/score`` answer for ``runtime.predict``'s outputs (``run_ms``: how long scoring took)."""


class VersionSelection(ABC):
    """Declared by a :class:`ScoringApp` that serves several versions of a model and can switch, while
    serving, which one answers a ``/score`` request that names no version (HTTP, MQTT, the IoT Edge hub).

    Every version stays loaded (they are loaded at start: switching is instant and the memory bound is
    the sum of the versions); requests that name a version, and V2's versioned paths, keep reaching it.
    A switch is atomic: a request parsed before it is scored by the version it was parsed for, a request
    parsed after it by the new one."""

    @abstractmethod
    def versions(self) -> dict[str, list[str]]:
        """Every loaded version of each model name (oldest first; a model without versions: ``[]``)."""

    @abstractmethod
    def served(self) -> dict[str, str | None]:
        """The version each model name serves by default now (``None``: a model without versions)."""

    @abstractmethod
    def select(self, selection: Mapping[str, str | None]) -> dict[str, str | None]:
        """Serve ``selection``'s version of each model it names (``None``, or a name left out: the latest)
        and return :meth:`served`. All or nothing: a name or version that is not loaded raises
        :class:`ModelNotFoundError` (naming what is) and nothing changes; :class:`NotReadyError`
        before the app has loaded."""


# -- Input checks: ModelRuntime.prepare's default, shared by the runtimes ------------------------------------
# A wrong value raises BadInputError naming the input, e.g. ``input 'input' has shape [1, 63], expected
# [-1, 64]``. Casts are the safe ones: any real number to a float input (JSON numbers arrive as
# float64/int64), integral numbers within range to an integer input, 0/1 to a bool input, text only to a
# string input.
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
