"""The interface between transports (HTTP, MQTT, IoT Edge hub) and what scores.

Two levels, as in MLServer's split of transport from model runtime:

- :class:`ModelRuntime`: one model; ``load()`` once, ``predict(inputs) -> outputs`` on named
  numpy arrays, plus metadata (input/output names, datatypes, shapes). The V2 inference protocol
  and the ONNX auto-scorer use it; later backends (TFLite, the FPGA emulator) implement it.
- :class:`ScoringApp`: what a transport serves: the Azure ML ``/score`` contract
  (``score(Request) -> Response``), the swagger documents, and the models for V2.

Transports never import a backend; backends never import a transport. Everything here is
synchronous: transports decide how to run it (inline, thread, batch).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
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


class ModelRuntime(ABC):
    """One model. ``load`` may be slow and is called once before any ``predict``."""

    name: str
    version: str | None = None

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
        """Score named arrays; raise :class:`BadInputError` naming the input for a wrong name, shape or dtype."""

    @property
    def platform(self) -> str:
        """V2 metadata ``platform`` (e.g. ``onnxruntime``)."""
        return "edgepack"


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


class ScoringApp(ABC):
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
