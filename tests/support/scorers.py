"""Small real scorers for the scoring tests (no tests here).

- :class:`OnnxRuntime`: a ``ModelRuntime`` over onnxruntime (inputs by name, shape/dtype checks,
  ``cancel()`` through ``RunOptions.terminate``);
- :class:`OnnxApp`: ``/score`` for a single-input ONNX model, ``{"data": [...]}`` in, outputs by name;
- :class:`FunctionApp`: ``/score`` calls a Python function (to make ``run()`` raise, hang, answer raw);
- :func:`make_mlp`: the 64-256-256-10 reference MLP as ONNX bytes;
- :class:`LinearRuntime`: a second (numpy) ``ModelRuntime`` implementing only the abstract methods.

Sockets: :mod:`tests.support.net`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from edge_module.runtime import (
    NUMPY_TO_V2,
    BadInputError,
    ModelRuntime,
    Request,
    Response,
    ScoringApp,
    TensorSpec,
    UnsupportedMediaTypeError,
)

_ORT_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def make_mlp(dims: tuple[int, ...] = (64, 256, 256, 10), seed: int = 0) -> bytes:
    """The benchmark MLP (Gemm/Relu/.../Softmax), input ``input`` [N, 64], output ``output`` [N, 10]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "input"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        inits.append(numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(np.zeros(b, np.float32), f"B{i}"))
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [f"h{i}"]))
        x = f"h{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [x], [x + "r"]))
            x += "r"
    nodes.append(helper.make_node("Softmax", [x], ["output"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", dims[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", dims[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class OnnxRuntime(ModelRuntime):
    inline_safe = True

    def __init__(self, path: str | Path | bytes, name: str = "mlp", version: str | None = "1", delay: float = 0.0):
        self.path = path
        self.name = name
        self.version = version
        self.delay = delay
        self.session: ort.InferenceSession | None = None
        self.run_options = ort.RunOptions()

    def load(self) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        source = self.path if isinstance(self.path, bytes) else str(self.path)
        self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        self._inputs = [self._spec(i) for i in self.session.get_inputs()]
        self._outputs = [self._spec(o) for o in self.session.get_outputs()]
        self._by_name = {s.name: s for s in self._inputs}
        self._out_names = [o.name for o in self._outputs]

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        return TensorSpec(arg.name, _ORT_TO_V2.get(arg.type, "BYTES"), shape)

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    @property
    def platform(self) -> str:
        return "onnxruntime"

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, arr in inputs.items():
            spec = self._by_name.get(name)
            if spec is None:
                raise BadInputError(f"unknown input '{name}'; the model takes {sorted(self._by_name)}")
            if arr.ndim != len(spec.shape) or any(
                e >= 0 and e != d for e, d in zip(spec.shape, arr.shape, strict=False)
            ):
                raise BadInputError(f"input '{name}': expected shape {list(spec.shape)}, got {list(arr.shape)}")
            if NUMPY_TO_V2.get(arr.dtype) != spec.datatype:
                raise BadInputError(f"input '{name}': expected {spec.datatype}, got {arr.dtype}")
        try:
            if self.delay:
                time.sleep(self.delay)  # stands in for a slow model; a cancel() meanwhile stops the run below
            outs = self.session.run(self._out_names, dict(inputs), self.run_options)  # type: ignore[union-attr]
        finally:
            self.run_options.terminate = False
        return dict(zip(self._out_names, outs, strict=True))

    def cancel(self) -> None:
        self.run_options.terminate = True


class OnnxApp(ScoringApp):
    """No-code scoring of one single-input ONNX model: ``{"data": [...]}`` → ``{"output": [...]}``."""

    inline_safe = True

    def __init__(self, runtime: OnnxRuntime):
        self.runtime = runtime

    def load(self) -> None:
        self.runtime.load()
        self._input = self.runtime.inputs[0]

    def models(self) -> list[ModelRuntime]:
        return [self.runtime]

    def cancel(self) -> None:
        self.runtime.cancel()

    def score(self, request: Request) -> Response:
        ctype = request.content_type.split(";", 1)[0].strip().lower()
        if ctype not in ("application/json", ""):
            raise UnsupportedMediaTypeError(f"unsupported content type {request.content_type!r}; send application/json")
        try:
            doc = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise BadInputError(f"malformed JSON: {exc}") from None
        if not isinstance(doc, dict) or "data" not in doc:
            raise BadInputError('expected {"data": [...]}')
        try:
            arr = np.asarray(doc["data"], dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise BadInputError(f"input '{self._input.name}': {exc}") from None
        outputs = self.runtime.predict({self._input.name: arr})
        return Response(orjson.dumps(outputs, option=orjson.OPT_SERIALIZE_NUMPY))

    def swagger(self, version: int = 2) -> dict[str, Any]:
        schema = {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}},
        }
        if version == 2:
            return {"swagger": "2.0", "info": {"title": "mlp", "version": "1"}, "paths": {}}
        return {
            "openapi": "3.0.3",
            "info": {"title": "mlp", "version": "1"},
            "paths": {"/score": {"post": {"requestBody": {"content": {"application/json": {"schema": schema}}}}}},
        }


class FunctionApp(ScoringApp):
    """``/score`` answers ``fn(request)``; ``load_fn`` runs in ``load()``."""

    def __init__(
        self,
        fn: Callable[[Request], Any],
        load_fn: Callable[[], None] | None = None,
        runtimes: list[ModelRuntime] | None = None,
    ):
        self.fn = fn
        self.load_fn = load_fn
        self.runtimes = runtimes or []

    def load(self) -> None:
        if self.load_fn is not None:
            self.load_fn()
        for rt in self.runtimes:
            rt.load()

    def score(self, request: Request) -> Any:
        return self.fn(request)

    def models(self) -> list[ModelRuntime]:
        return self.runtimes

    def swagger(self, version: int = 2) -> dict[str, Any]:
        if version == 2:
            return {"swagger": "2.0", "info": {"title": "fn", "version": "1"}, "paths": {}}
        return {"openapi": "3.0.3", "info": {"title": "fn", "version": "1"}, "paths": {}}


class Gate:
    """A scoring function that blocks every call until the test lets it through.

    ``wait_entered(n)`` returns once ``n`` more calls have started; ``let_through(n)`` lets ``n``
    calls return ``{"ok": true}``; ``calls`` counts the calls that started."""

    def __init__(self, hold: float = 30.0):
        self.hold = hold  # a call the test forgot ends with an error after this long, not never
        self.calls = 0
        self._lock = threading.Lock()
        self._entered = threading.Semaphore(0)
        self._pass = threading.Semaphore(0)

    def __call__(self, request: Any = None) -> Any:
        with self._lock:
            self.calls += 1
        self._entered.release()
        if not self._pass.acquire(timeout=self.hold):
            raise RuntimeError("the test never let this call through")
        return {"ok": True}

    def wait_entered(self, n: int = 1, timeout: float = 10.0) -> None:
        for _ in range(n):
            if not self._entered.acquire(timeout=timeout):
                raise AssertionError(f"a scoring call did not start within {timeout} s ({self.calls} started)")

    def let_through(self, n: int = 1) -> None:
        for _ in range(n):
            self._pass.release()


class LinearRuntime(ModelRuntime):
    """A second runtime proving the interface: a linear layer ``x @ W + b`` (and its softmax) in numpy.

    It implements only what :class:`ModelRuntime` requires (``load``, ``inputs``, ``outputs``,
    ``predict``): checking and converting request values, names and everything ``/score``, V2, the
    swagger document and the MQTT/IoT Edge batches use come from the base class. ``path``: an ``.npz``
    with ``W`` (features × classes) and ``b``; ``calls`` records the rows of every ``predict``."""

    def __init__(self, path: str | Path, name: str | None = None, version: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name.split(".")[0]
        self.version = version
        self.calls: list[int] = []
        self._w: np.ndarray | None = None

    def load(self) -> None:
        with np.load(self.path) as npz:
            self._w, self._b = npz["W"].astype(np.float32), npz["b"].astype(np.float32)

    @property
    def inputs(self) -> list[TensorSpec]:
        assert self._w is not None, "load() first"
        return [TensorSpec("x", "FP32", (-1, self._w.shape[0]))]

    @property
    def outputs(self) -> list[TensorSpec]:
        assert self._w is not None, "load() first"
        classes = self._w.shape[1]
        return [TensorSpec("logits", "FP32", (-1, classes)), TensorSpec("probs", "FP32", (-1, classes))]

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self.prepare(inputs)["x"]  # the base class's checks, as any runtime may call them
        self.calls.append(len(x))
        logits = x @ self._w + self._b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"logits": logits, "probs": e / e.sum(axis=1, keepdims=True)}

    @staticmethod
    def save(path: Path, features: int = 6, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Write a random model to ``path`` (an ``.npz``); return ``W`` and ``b``."""
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((features, classes)).astype(np.float32)
        b = rng.standard_normal(classes).astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, W=w, b=b)
        return w, b
