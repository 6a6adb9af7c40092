"""No-code scoring: models served on ``/score`` without an entry script, each by the runtime its
files need (:mod:`edge_module.scoring.registry`: ONNX on onnxruntime, TFLite on LiteRT, and whatever
registers itself), through the :class:`~edge_module.runtime.ModelRuntime` interface only.

Models come from an ``AZUREML_MODEL_DIR`` layout (see :mod:`edge_module.model_dir`): one model
(``.../<name>/<version>/<file or folder>``) or several (``<dir>/<name>/<version>/...``, every
deployed version loaded at start and served, the latest by default: :meth:`ModelScoringApp.select`
switches the default while serving, e.g. from the module twin's ``model_version``). A plain model
file, or a folder of them, works too (named after the file). Request bodies::

    {"data": [[...]]}                          single-input model
    {"inputs": {"a": [...], "b": [...]}}       any model
    {"model": "name", "version": "2", ...}     with several models ("version" optional: the one
                                               selected, by default the latest)

The answer is the outputs by name: ``{"output": [[...]]}``.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson

from edge_module.model_dir import MODEL_DIR_ENV, ModelPathNotFoundError, single_entry
from edge_module.protocol.json_codec import OPT_NUMPY, dumps_result, loads_json
from edge_module.runtime import (
    BadInputError,
    BatchableApp,
    ModelNotFoundError,
    ModelRuntime,
    NotReadyError,
    Request,
    Response,
    ScoringError,
    TensorSpec,
    UnsupportedMediaTypeError,
    VersionSelection,
)
from edge_module.scoring.registry import ModelDirError, RuntimeKind, RuntimeOptions, find_model, registered, supported
from edge_module.scoring.swagger import build_document, swagger_version

logger = logging.getLogger("edge_module.scoring")

_MISSING: Any = object()
_BODY_KEYS = frozenset({"data", "inputs", "model", "version"})
_MAX_EXAMPLE_ELEMENTS = 4096
_SWAGGER_TYPES = {
    "FP16": ("number", "float"),
    "FP32": ("number", "float"),
    "FP64": ("number", "double"),
    "BF16": ("number", "float"),
    "INT8": ("integer", "int32"),
    "INT16": ("integer", "int32"),
    "INT32": ("integer", "int32"),
    "INT64": ("integer", "int64"),
    "UINT8": ("integer", "int32"),
    "UINT16": ("integer", "int32"),
    "UINT32": ("integer", "int64"),
    "UINT64": ("integer", "int64"),
    "BOOL": ("boolean", None),
    "BYTES": ("string", None),
}


def _is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return True
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in ("application/json", "text/json") or (mime.startswith("application/") and mime.endswith("+json"))


class FoundModel(NamedTuple):
    """A model found under a model directory and the runtime that serves it."""

    name: str
    version: str | None
    path: Path
    kind: RuntimeKind


def _entry(version_dir: Path) -> Path:
    try:
        return single_entry(version_dir)
    except ModelPathNotFoundError as exc:
        raise ModelDirError(str(exc)) from None


def discover_models(model_dir: str | os.PathLike[str], framework: str | None = None) -> list[FoundModel]:
    """Every servable model under ``model_dir`` (see the module doc) with its runtime; models no
    registered runtime serves are skipped (logged), :class:`ModelDirError` when nothing is servable.
    ``framework`` (the registry's) narrows the runtimes when one declares it."""
    root = Path(model_dir)
    if not root.exists():
        raise ModelDirError(f"model directory {root} does not exist")
    if root.is_file():
        found_file = find_model(root, framework)
        if found_file is None:
            raise ModelDirError(
                f"{root} is not a model file edgepack serves without code ({supported()}); "
                "give an entry script (score.py) to serve other models"
            )
        return [FoundModel(root.stem, None, found_file[1], found_file[0])]
    found: list[FoundModel] = []
    skipped: list[str] = []
    if root.name.isdigit() and root.parent.name:  # one model: AZUREML_MODEL_DIR=.../<name>/<version>
        entry = _entry(root)
        hit = find_model(entry, framework)
        if hit is None:
            raise ModelDirError(
                f"model {root.parent.name!r} version {root.name} ({entry}) is not a model file edgepack serves "
                f"without code ({supported()}): give an entry script (score.py) for others"
            )
        return [FoundModel(root.parent.name, root.name, hit[1], hit[0])]
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = sorted((p for p in name_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        for version_dir in versions:
            hit = find_model(_entry(version_dir), framework)
            if hit is None:
                skipped.append(f"{name_dir.name}:{version_dir.name}")
            else:
                found.append(FoundModel(name_dir.name, version_dir.name, hit[1], hit[0]))
    if not found:  # a package folder a runtime recognises, or a plain folder of model files
        kinds = [k for k in registered() if framework and framework.lower() in k.frameworks] or registered()
        package = next(((k, m) for k in kinds if k.match is not None and (m := k.match(root)) is not None), None)
        if package is not None:
            found.append(FoundModel(root.name, None, Path(package[1]), package[0]))
        for p in sorted(root.iterdir()) if package is None else ():
            kind = next((k for k in kinds if k.serves_file(p)), None) if p.is_file() else None
            if kind is not None:
                found.append(FoundModel(p.stem, None, p, kind))
    if skipped:
        logger.warning(
            "not serving models %s: no runtime serves their files (no entry script given)", ", ".join(skipped)
        )
    if not found:
        raise ModelDirError(
            f"no servable model under {root}: expected {root}/<name>/<version>/<model file>, "
            f"{MODEL_DIR_ENV}=.../<name>/<version>, or model files; served without code: {supported()}"
            + (f" (found models no runtime serves: {', '.join(skipped)}: give an entry script)" if skipped else "")
        )
    return found


def discover_onnx_models(model_dir: str | os.PathLike[str]) -> list[tuple[str, str | None, Path]]:
    """``(name, version, onnx file)`` for every ONNX model under ``model_dir`` (others are left out)."""
    return [(m.name, m.version, m.path) for m in discover_models(model_dir) if m.kind.name == "onnx"]


def tensor_schema(spec: TensorSpec, kind: str | None = None) -> dict[str, Any]:
    """JSON schema of a tensor as nested arrays (fixed dimensions as min/maxItems); ``kind``
    (:meth:`~edge_module.runtime.ModelRuntime.output_kind`): ``"sequence"`` or ``"map"`` for outputs
    that are not tensors (an ONNX type string such as ``seq(map(int64,tensor(float)))`` works too)."""
    if kind and kind.startswith(("seq(", "sequence")):
        return {"type": "array", "items": {"type": "object"}}
    if kind and kind.startswith("map"):
        return {"type": "object"}
    kind, fmt = _SWAGGER_TYPES.get(spec.datatype, ("string", None))
    schema: dict[str, Any] = {"type": kind}
    if fmt:
        schema["format"] = fmt
    for size in reversed(spec.shape):
        schema = {"type": "array", "items": schema}
        if size >= 0:
            schema["minItems"] = schema["maxItems"] = size
    return schema


def tensor_example(spec: TensorSpec) -> Any:
    """A zero tensor of the input's shape (dynamic dimensions: 1), as JSON; None when it would be big."""
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    if int(np.prod(shape, dtype=np.int64)) > _MAX_EXAMPLE_ELEMENTS:
        return None
    value: Any = {"BOOL": False, "BYTES": ""}.get(spec.datatype, 0.0 if spec.datatype.startswith(("FP", "BF")) else 0)
    for size in reversed(shape):
        value = [copy.deepcopy(value) for _ in range(size)]
    return value


class ModelScoringApp(BatchableApp, VersionSelection):
    """The ``/score`` contract over one or several models (batchable: ``parse`` / ``respond``), each on
    the runtime its files need, every version loaded, the one a request without ``"version"`` gets
    switchable (:meth:`select`). Only :class:`~edge_module.runtime.ModelRuntime` methods are called:
    ``runtimes=`` may be any runtimes."""

    inline_safe = True  # no user code; an instance is inline-safe when all its runtimes are (see __init__)

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        runtimes: Iterable[ModelRuntime] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        framework: str | None = None,
        fpga_device: str | None = None,
        fpga_driver: str | None = None,
    ):
        """``intra_op_threads``: onnxruntime's intra-op pool per model (None or 0: onnxruntime's default,
        a spinning thread per core). 1 suits servers running requests side by side on small models: for
        the 64-256-256-10 MLP at batch 1 a run takes ~12 µs with 1 thread and ~30 µs with the default
        pool on 2 cores. The server's ``onnx_threads`` setting (default 1) passes it (LiteRT gets it
        as ``num_threads``). ``framework`` (the registry's) picks among runtimes serving the same files;
        ``fpga_device``/``fpga_driver`` go to FPGA packages (:class:`RuntimeOptions`)."""
        self._error: Exception | None = None
        self._runtimes: list[ModelRuntime] = list(runtimes or [])
        if not self._runtimes:
            where = model_dir if model_dir is not None else os.environ.get(MODEL_DIR_ENV)
            try:
                if not where:
                    raise ModelDirError(
                        f"no model directory: pass one or set {MODEL_DIR_ENV} (or give an entry script)"
                    )
                options = RuntimeOptions(
                    threads=intra_op_threads,
                    inter_op_threads=inter_op_threads,
                    fpga_device=fpga_device,
                    fpga_driver=fpga_driver,
                )
                self._runtimes = [
                    m.kind.create(m.path, m.name, m.version, options) for m in discover_models(where, framework)
                ]
            except (ModelDirError, OSError) as exc:
                self._error = exc  # raised by load(), where the server reports start-up failures
        self._by_name: dict[str, dict[str | None, ModelRuntime]] = {}
        for rt in self._runtimes:
            self._by_name.setdefault(rt.name, {})[rt.version] = rt
        self._latest = {name: versions[max(versions, key=_version_key)] for name, versions in self._by_name.items()}
        self._served: dict[str, ModelRuntime] = dict(self._latest)  # replaced whole by select(): atomic
        self._switch_lock = threading.Lock()
        self._single: ModelRuntime | None = self._runtimes[0] if len(self._runtimes) == 1 else None
        self._swagger: dict[str, dict[str, Any]] = {}
        self.ready = False
        # What transports read once loaded: inline when every runtime may run on the event loop,
        # cancellable when every runtime can stop its calls.
        self.inline_safe = all(rt.inline_safe for rt in self._runtimes)
        self._can_cancel = all(rt.supports_cancel for rt in self._runtimes)

    # ScoringApp ---------------------------------------------------------------------------
    def load(self) -> None:
        if self._error is not None:
            raise self._error
        start = time.perf_counter()
        for rt in self._runtimes:
            if not rt.loaded:
                rt.load()
            logger.info(
                "loaded model %s%s on %s from %s: inputs %s, outputs %s",
                rt.name,
                f":{rt.version}" if rt.version else "",
                rt.platform,
                rt.path,
                ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in rt.inputs),
                ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in rt.outputs),
            )
        self.load_seconds = time.perf_counter() - start
        self.ready = True

    def models(self) -> list[ModelRuntime]:
        return list(self._runtimes)

    # VersionSelection ----------------------------------------------------------------------
    def versions(self) -> dict[str, list[str]]:
        return {
            name: sorted((v for v in versions if v is not None), key=_version_key)
            for name, versions in self._by_name.items()
        }

    def served(self) -> dict[str, str | None]:
        return {name: rt.version for name, rt in self._served.items()}

    def select(self, selection: Mapping[str, str | None]) -> dict[str, str | None]:
        """Serve ``selection``'s version of each model it names, the latest of the others (see
        :class:`~edge_module.runtime.VersionSelection`); every version is already loaded."""
        if not self.ready:
            raise NotReadyError("the models are still loading" if self._error is None else str(self._error))
        with self._switch_lock:
            served = dict(self._latest)
            for name, version in selection.items():
                versions = self._by_name.get(name)
                if versions is None:
                    raise ModelNotFoundError(f"no model {name!r}; models: {', '.join(sorted(self._by_name))}")
                if version is None:
                    continue
                runtime = versions.get(str(version))
                if runtime is None:
                    have = ", ".join(v for v in self.versions()[name]) or "none"
                    raise ModelNotFoundError(f"model {name!r} has no version {str(version)!r}; versions: {have}")
                served[name] = runtime
            if served != self._served:
                self._served = served  # one assignment: a request picks the old map or the new one
                listing = ", ".join(f"{n}:{rt.version}" if rt.version else n for n, rt in sorted(served.items()))
                logger.info("serving %s by default", listing)
            return self.served()

    @property
    def supports_cancel(self) -> bool:
        return self._can_cancel

    def cancel(self) -> None:
        """Stop the model runs in progress (a transport's scoring timeout): they raise a 504."""
        for runtime in self._runtimes:
            runtime.cancel()

    def score(self, request: Request) -> Response:
        if request.method != "POST":
            return self._other_method(request)
        runtime, feeds = self.parse(request)
        start = time.perf_counter()
        result = runtime.predict_prepared(feeds)
        run_ms = (time.perf_counter() - start) * 1000.0
        return self.respond(runtime, result, run_ms)

    def parse(self, request: Request) -> tuple[ModelRuntime, dict[str, np.ndarray]]:
        """The model a ``/score`` POST is for and its checked feeds (the first half of :meth:`score`;
        a batching transport concatenates feeds of one model and calls ``runtime.predict`` itself)."""
        if not self.ready:
            raise NotReadyError("the models are still loading" if self._error is None else str(self._error))
        content_type = request.content_type
        if content_type != "application/json" and not _is_json_type(content_type):
            raise UnsupportedMediaTypeError(f"unsupported content type {content_type!r}: send application/json")
        doc = loads_json(request.body)
        if type(doc) is not dict:
            raise BadInputError(f'expected a JSON object {{"data": ...}} or {{"inputs": {{...}}}}, got {_kind(doc)}')
        runtime = self._single or self._pick(doc)
        data = doc.get("data", _MISSING)
        if data is not _MISSING and len(runtime.input_names) == 1 and type(data) is not dict:
            return runtime, runtime.prepare_single(data)
        return runtime, self._feeds(runtime, doc, data)

    def respond(self, runtime: ModelRuntime, outputs: Mapping[str, Any], run_ms: float | None = None) -> Response:
        """The ``/score`` answer for a model's outputs: ``{"<output name>": [...], ...}`` (the second half)."""
        result = outputs if type(outputs) is dict else dict(outputs)
        try:
            body = orjson.dumps(result, option=OPT_NUMPY)
        except (orjson.JSONEncodeError, TypeError):
            body = dumps_result(result, f"model {runtime.name!r}")
        headers = {} if run_ms is None else {"x-ms-run-fn-exec-ms": f"{run_ms:.3f}"}
        return Response(body, 200, "application/json", headers)

    def swagger(self, version: int | str = 2) -> dict[str, Any]:
        key = swagger_version(version)
        served = self._served  # the document describes the versions served now
        cache_key = f"{key} " + ",".join(f"{n}:{rt.version}" for n, rt in sorted(served.items()))
        if cache_key not in self._swagger:
            if not self.ready:
                raise NotReadyError("the models are still loading")
            self._swagger[cache_key] = self._build_swagger(key, served)
        return copy.deepcopy(self._swagger[cache_key])

    # request parts -------------------------------------------------------------------------
    def _other_method(self, request: Request) -> Response:
        if not self.ready:
            raise NotReadyError("the models are still loading")
        if request.method == "OPTIONS":
            return Response(b"", 200, "text/plain", {"allow": "POST, OPTIONS"})
        raise ScoringError(f"method {request.method} is not allowed on /score: POST a JSON body", 405)

    def _pick(self, doc: dict[str, Any]) -> ModelRuntime:
        listing = ", ".join(sorted(self._by_name))
        name = doc.get("model")
        if name is None and len(self._by_name) == 1:  # several versions of one model: the latest by default
            name = next(iter(self._by_name))
        if name is None:
            raise BadInputError(
                f'several models are served: name one with {{"model": "<name>", ...}}; models: {listing}'
            )
        versions = self._by_name.get(name) if isinstance(name, str) else None
        if versions is None:
            raise BadInputError(f"unknown model {name!r}; models: {listing}")
        version = doc.get("version")
        if version is None:
            return self._served[name]
        runtime = versions.get(str(version))
        if runtime is None:
            served = ", ".join(sorted(str(v) for v in versions))
            raise BadInputError(f"model {name!r} has no version {version!r}; versions: {served}")
        return runtime

    def _feeds(self, runtime: ModelRuntime, doc: dict[str, Any], data: Any) -> dict[str, np.ndarray]:
        unknown = [k for k in doc if k not in _BODY_KEYS]
        if unknown:
            raise BadInputError(
                f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in the body: "
                + self._forms(runtime)
            )
        inputs = doc.get("inputs", _MISSING)
        if inputs is not _MISSING and data is not _MISSING:
            raise BadInputError('give either "data" or "inputs", not both')
        if inputs is _MISSING:
            if data is _MISSING:
                raise BadInputError(f'the body has no "data" or "inputs": {self._forms(runtime)}')
            if type(data) is not dict:
                raise BadInputError(
                    f"model {runtime.name!r} has {len(runtime.input_names)} inputs: {self._forms(runtime)}"
                )
            inputs = data
        if type(inputs) is not dict:
            raise BadInputError(f'"inputs" must be an object of input names to arrays, got {_kind(inputs)}')
        return runtime.prepare(inputs)

    @staticmethod
    def _forms(runtime: ModelRuntime) -> str:
        names = runtime.input_names
        keyed = ", ".join(f'"{n}": [...]' for n in names)
        if len(names) == 1:
            return f'send {{"data": [...]}} or {{"inputs": {{{keyed}}}}}'
        return f'send {{"inputs": {{{keyed}}}}}'

    # swagger -------------------------------------------------------------------------------
    def _model_schemas(self, runtime: ModelRuntime, multi: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        specs = runtime.inputs
        examples = {s.name: tensor_example(s) for s in specs}
        complete = all(v is not None for v in examples.values())
        if len(specs) == 1:
            properties: dict[str, Any] = {"data": tensor_schema(specs[0])}
            required = ["data"]
            example: dict[str, Any] = {"data": examples[specs[0].name]}
        else:
            properties = {
                "inputs": {
                    "type": "object",
                    "required": [s.name for s in specs],
                    "properties": {s.name: tensor_schema(s) for s in specs},
                }
            }
            required = ["inputs"]
            example = {"inputs": examples}
        if multi:
            properties = {"model": {"type": "string", "enum": [runtime.name]}, **properties}
            required = ["model", *required]
            example = {"model": runtime.name, **example}
        input_schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
        if complete:
            input_schema["example"] = example

        output_schema: dict[str, Any] = {
            "type": "object",
            "required": list(runtime.output_names),
            "properties": {s.name: tensor_schema(s, runtime.output_kind(s.name)) for s in runtime.outputs},
        }
        if complete:
            try:
                outputs = runtime.predict_prepared(runtime.prepare(examples))
                output_schema["example"] = orjson.loads(dumps_result(outputs))
            except Exception:  # an example is a nicety: zeros may be outside what the model accepts
                logger.debug("no output example for model %s", runtime.name, exc_info=True)
        return input_schema, output_schema

    def _build_swagger(self, version: str, served: Mapping[str, ModelRuntime]) -> dict[str, Any]:
        multi = self._single is None
        latest = [served[name] for name in sorted(served)]
        pairs = [self._model_schemas(rt, multi) for rt in latest]
        if not multi:
            input_schema, output_schema = pairs[0]
            title = latest[0].name
        elif version == "2.0":  # no oneOf in swagger 2.0: one loose object, the first model as example
            input_schema = {
                "type": "object",
                "required": ["model"],
                "properties": {
                    "model": {"type": "string", "enum": [rt.name for rt in latest]},
                    "version": {"type": "string"},
                    "data": {"description": "the tensor, for a single-input model"},
                    "inputs": {"type": "object", "description": "tensors by input name"},
                },
            }
            if "example" in pairs[0][0]:
                input_schema["example"] = pairs[0][0]["example"]
            output_schema = {"type": "object", "description": "the outputs by name"}
            if "example" in pairs[0][1]:
                output_schema["example"] = pairs[0][1]["example"]
            title = "Models"
        else:
            input_schema = {"oneOf": [p[0] for p in pairs]}
            output_schema = {"oneOf": [p[1] for p in pairs]}
            title = "Models"
        models = ", ".join(f"{rt.name}" + (f":{rt.version}" if rt.version else "") for rt in latest)
        return build_document(
            version,
            input_schema,
            output_schema,
            title=os.environ.get("SERVICE_NAME") or title,
            description=f"No-code scoring of {models}",
        )


def _version_key(version: str | None) -> int:
    return -1 if version is None else int(version) if version.isdigit() else 0


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", dict: "an object", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


OnnxScoringApp = ModelScoringApp
"""The name this app had when it served ONNX models only."""
