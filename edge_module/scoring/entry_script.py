"""Azure ML v1 entry scripts (``score.py`` with ``init()`` and ``run()``), as v1's server ran them.

- ``AZUREML_ENTRY_SCRIPT`` names the script, relative to the source directory (``AML_APP_ROOT``
  style), which goes on ``sys.path`` so the script can import its neighbours; ``AZUREML_MODEL_DIR``
  is set for the script when a model directory is given.
- ``init()`` runs once in :meth:`EntryScriptApp.load`; whatever it raises propagates with its own
  traceback (plus a note naming the script) for the server to report.
- ``run`` is called per request the way azureml-inference-server-http does it:

  * undecorated: ``run(body_as_str)`` (GET: the query parameters as a JSON string);
  * decorated with ``inference_schema``'s ``@input_schema``: the JSON body is parsed and its keys
    passed as keyword arguments, converted by the decorators (numpy arrays, DataFrames...);
    arguments that do not fit their schema are a 400 naming the parameter and the expected shape;
  * decorated with ``@rawhttp``: ``run(request)`` with an :class:`~edge_module.compat.AMLRequest`;
  * a ``request_headers`` parameter, when ``run`` has one, receives the request headers.

- What ``run`` returns is sent as v1 did: an ``AMLResponse`` (or a Flask-style response) with its
  status, headers and body; anything else as ``json.dumps(result)`` would (a str becomes a JSON
  string), numpy arrays/scalars and pandas objects included. ``run`` raising is a 500 with the
  message; the traceback goes to the log and to the error's ``__cause__``.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import itertools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from edge_module.compat import aml_request as _compat_request
from edge_module.compat import install_azureml_compat
from edge_module.compat.aml_request import AMLRequest, Headers
from edge_module.compat.aml_response import AMLResponse
from edge_module.model_dir import MODEL_DIR_ENV
from edge_module.protocol.json_codec import dumps_result, loads_json
from edge_module.runtime import (
    BadInputError,
    ModelRuntime,
    NotReadyError,
    Request,
    Response,
    ScoringApp,
    ScoringError,
    UnsupportedMediaTypeError,
)
from edge_module.scoring.swagger import GENERIC_SCHEMA, SwaggerVersionError, build_document, swagger_version

logger = logging.getLogger("edge_module.scoring")

ENTRY_SCRIPT_ENV = "AZUREML_ENTRY_SCRIPT"
APP_ROOT_ENV = "AML_APP_ROOT"
_REAL_RAWHTTP_MODULES = ("azureml.contrib.services.aml_request", "azureml_inference_server_http.api.aml_request")
_module_counter = itertools.count(1)
_load_lock = threading.Lock()


class EntryScriptError(Exception):
    """The entry script cannot be used: missing, no ``init``/``run``, or a ``run`` signature v1 refused."""


def _json_content_type(content_type: str | None) -> bool:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _query_values(query: str) -> dict[str, Any]:
    """v1's GET parameters: every value parsed as JSON when it is JSON; repeated keys become lists."""

    def parse(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return text

    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    return {k: parse(v[0]) if len(v) == 1 else [parse(x) for x in v] for k, v in grouped.items()}


def _is_response(value: Any) -> bool:
    return isinstance(value, AMLResponse) or (
        hasattr(value, "status_code") and hasattr(value, "headers") and callable(getattr(value, "get_data", None))
    )


def _to_response(value: Any) -> Response:
    if isinstance(value, AMLResponse):
        return value.to_response()
    # A Flask/werkzeug response (the real azureml packages' AMLResponse is one).
    headers: dict[str, str] = {}
    content_type = "application/json"
    for key, item in value.headers.items():
        if key.lower() == "content-type":
            content_type = item
        elif key.lower() != "content-length":
            headers[key] = f"{headers[key]}, {item}" if key in headers else str(item)
    return Response(value.get_data(), int(value.status_code), content_type, headers)


def _schema_expectation(param_type: Any) -> str:
    """What an inference_schema parameter type wants, for a 400's message."""
    sample = getattr(param_type, "sample_input", None)
    kind = type(param_type).__name__
    if kind == "NumpyParameterType" and hasattr(sample, "shape"):
        shape = [-1, *list(sample.shape)[1:]] if sample.shape else []
        return f"expected a {sample.dtype} array of shape {shape}"
    if kind == "PandasParameterType" and hasattr(sample, "columns"):
        columns = [str(c) for c in sample.columns]
        return f"expected a table (orient {getattr(param_type, 'orient', 'records')!r}) with columns {columns}"
    if sample is not None:
        return f"expected {type(sample).__name__} like {json.dumps(sample, default=str)[:200]}"
    return "expected what the schema describes"


class _SchemaParam:
    __slots__ = ("name", "optional", "param_type")

    def __init__(self, name: str, param_type: Any, optional: bool):
        self.name = name
        self.param_type = param_type
        self.optional = optional


def _schema_params(run: Any) -> list[_SchemaParam]:
    """The ``@input_schema`` decorators on ``run`` (outermost first), read from wrapt's wrappers."""
    found: list[_SchemaParam] = []
    seen: set[int] = set()
    func = run
    while func is not None and id(func) not in seen:
        seen.add(id(func))
        wrapper = getattr(func, "_self_wrapper", None)
        if wrapper is not None and getattr(wrapper, "__closure__", None):
            names = wrapper.__code__.co_freevars
            cells = dict(zip(names, (c.cell_contents for c in wrapper.__closure__), strict=True))
            if "param_name" in cells and "param_type" in cells and cells.get("convert_to_provided_type", True):
                found.append(_SchemaParam(cells["param_name"], cells["param_type"], bool(cells.get("optional"))))
        func = getattr(func, "__wrapped__", None)
    return found


class EntryScriptApp(ScoringApp):
    """``/score`` over a v1 entry script."""

    inline_safe = False  # user code may block: a transport should run it off its event loop

    def __init__(
        self,
        entry_script: str | os.PathLike[str],
        source_dir: str | os.PathLike[str] | None = None,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        serialize_runs: bool = False,
    ):
        """``serialize_runs``: one ``run()`` at a time (v1's sync worker did that) for scripts that are
        not thread-safe, when the transport calls ``score`` from several threads."""
        script = Path(entry_script)
        root = source_dir or os.environ.get(APP_ROOT_ENV)
        if root:
            self.source_dir = Path(root).resolve()
        elif script.is_absolute():
            self.source_dir = script.parent
        else:
            self.source_dir = Path.cwd().resolve()
        self.script_path = script if script.is_absolute() else self.source_dir / script
        self.model_dir = None if model_dir is None else Path(model_dir).resolve()
        self.module: ModuleType | None = None
        self.ready = False
        self._run: Callable[..., Any] | None = None
        self._raw = False
        self._schema_decorated = False
        self._schema_params: list[_SchemaParam] = []
        self._deserialize: Callable[[Any, Any, str], Any] | None = None
        self._params: list[inspect.Parameter] = []
        self._first: str = "data"
        self._headers_param = False
        self._run_lock = threading.Lock() if serialize_runs else None
        self._swagger: dict[str, dict[str, Any]] = {}

    # ScoringApp ---------------------------------------------------------------------------
    def load(self) -> None:
        with _load_lock:
            self._load_script()
        init = self.module.init  # type: ignore[union-attr]
        logger.info("running init() of %s", self.script_path)
        start = time.perf_counter()
        try:
            init()
        except BaseException as exc:
            exc.add_note(f"raised by init() of the entry script {self.script_path}")
            raise
        self.init_seconds = time.perf_counter() - start
        logger.info("init() of %s finished in %.3f s", self.script_path, self.init_seconds)
        self.ready = True

    def models(self) -> list[ModelRuntime]:
        return []

    def score(self, request: Request) -> Response:
        if not self.ready:
            raise NotReadyError("init() of the entry script has not finished")
        method = request.method.upper()
        if self._raw:
            kwargs: dict[str, Any] = {self._first: AMLRequest.from_request(request)}
        elif method == "POST":
            kwargs = self._schema_args(request) if self._schema_decorated else {self._first: self._body_text(request)}
        elif method == "GET":
            values = _query_values(request.query)
            kwargs = self._extract(values) if self._schema_decorated else {self._first: json.dumps(values)}
        elif method == "OPTIONS":
            return Response(b"", 200, "text/plain", {"allow": "GET, POST, OPTIONS"})
        else:
            raise ScoringError("Method not allowed", 405)
        if self._headers_param:
            headers = Headers(request.headers)
            if request.content_type and "Content-Type" not in headers:
                headers["Content-Type"] = request.content_type
            kwargs["request_headers"] = headers
        start = time.perf_counter()
        try:
            if self._run_lock is None:
                result = self._run(**kwargs)  # type: ignore[misc]
            else:
                with self._run_lock:
                    result = self._run(**kwargs)  # type: ignore[misc]
        except ScoringError:
            raise  # e.g. AMLRequest.get_json() on a malformed body: a 4xx of its own
        except Exception as exc:
            logger.exception("run() of %s raised", self.script_path)
            raise ScoringError(f"run() raised {type(exc).__name__}: {exc}") from exc
        elapsed = {"x-ms-run-fn-exec-ms": f"{(time.perf_counter() - start) * 1000.0:.3f}"}
        if _is_response(result):
            response = _to_response(result)
            response.headers.update(elapsed)
            return response
        return Response(dumps_result(result), 200, "application/json", elapsed)

    def swagger(self, version: int | str = 2) -> dict[str, Any]:
        key = swagger_version(version)
        if key not in self._swagger:
            if self._run is None:
                raise NotReadyError("the entry script has not been loaded")
            self._swagger[key] = self._build_swagger(key)
        return copy.deepcopy(self._swagger[key])

    # loading -------------------------------------------------------------------------------
    def _load_script(self) -> None:
        path = self.script_path
        if not path.is_file():
            raise EntryScriptError(
                f"entry script {path} not found (AZUREML_ENTRY_SCRIPT is relative to the source directory "
                f"{self.source_dir})"
            )
        install_azureml_compat()
        if self.model_dir is not None:
            os.environ[MODEL_DIR_ENV] = str(self.model_dir)
        for folder in (str(self.source_dir), str(path.parent)):
            if folder not in sys.path:
                sys.path.append(folder)  # appended, as v1 did: the script cannot shadow installed modules

        name = "entry_module" if "entry_module" not in sys.modules else f"entry_module_{next(_module_counter)}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise EntryScriptError(f"cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        _compat_request._rawHttpRequested = False
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            exc.add_note(f"raised while importing the entry script {path}")
            raise
        for needed in ("init", "run"):
            if not callable(getattr(module, needed, None)):
                raise EntryScriptError(f"entry script {path} does not define an {needed}() function")
        run = module.run
        # v1: some SDKs wrap the user's script in a driver module; call the real run() directly.
        driver = getattr(module, "driver_module", None)
        if isinstance(driver, ModuleType) and callable(getattr(driver, "run", None)):
            run = driver.run
        self.module = module
        self._analyze_run(run)

    def _analyze_run(self, run: Callable[..., Any]) -> None:
        path = self.script_path
        try:
            params = list(inspect.signature(run).parameters.values())
        except (TypeError, ValueError) as exc:
            raise EntryScriptError(f"cannot read the signature of run() in {path}: {exc}") from exc
        if any(p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
            raise EntryScriptError(f"run() in {path} cannot take positional-only arguments, *args or **kwargs")
        self._headers_param = any(p.name == "request_headers" for p in params)
        params = [p for p in params if p.name != "request_headers"]
        if not params:
            raise EntryScriptError(f"run() in {path} needs a parameter for the input data")
        raw = bool(getattr(run, _compat_request.RAWHTTP_ATTR, False)) or _compat_request._rawHttpRequested
        raw = raw or any(getattr(sys.modules.get(m), "_rawHttpRequested", False) for m in _REAL_RAWHTTP_MODULES)
        decorated = False
        if "inference_schema" in sys.modules:  # only scripts that use it can be decorated with it
            from inference_schema.schema_util import is_schema_decorated

            decorated = bool(is_schema_decorated(run))
        if raw and decorated:
            raise EntryScriptError(f"run() in {path} cannot be decorated with both @rawhttp and @input_schema")
        self._run = run
        self._raw = raw
        self._schema_decorated = decorated
        self._params = params
        self._first = params[0].name
        self._schema_params = _schema_params(run) if decorated else []
        if self._schema_params:
            try:  # inference_schema's own conversion, so values come out exactly as the decorators make them
                from inference_schema.schema_decorators import _deserialize_input_argument

                self._deserialize = _deserialize_input_argument
            except ImportError:  # another inference_schema: the decorators still convert (a misfit is then a 500)
                self._schema_params = []
        mode = "@rawhttp: run(request)" if raw else "@input_schema: typed arguments" if decorated else "a JSON string"
        logger.info("entry script %s loaded; run() receives %s", path, mode)

    # requests ------------------------------------------------------------------------------
    @staticmethod
    def _body_text(request: Request) -> str:
        body = request.body
        if isinstance(body, str):
            return body
        try:
            return str(body, "utf-8")
        except UnicodeDecodeError as exc:
            raise BadInputError(f"Input cannot be decoded as UTF-8: {exc}") from None

    def _schema_args(self, request: Request) -> dict[str, Any]:
        if not _json_content_type(request.content_type):
            raise UnsupportedMediaTypeError("Expects Content-Type to be application/json")
        if not request.body:
            raise BadInputError("POST body is empty. Expecting a JSON dictionary.")
        body = loads_json(request.body)
        if not isinstance(body, dict):
            raise BadInputError("POST body should be a JSON dictionary.")
        return self._extract(body)

    def _extract(self, body: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for param in self._params:
            value = body.get(param.name, param.default)
            if value is inspect.Parameter.empty:
                raise BadInputError(f"A value is not provided for the {param.name!r} parameter.")
            kwargs[param.name] = value
        if self._schema_params:
            self._convert(kwargs)
        return kwargs

    def _convert(self, kwargs: dict[str, Any]) -> None:
        """Run inference_schema's conversions before run() so a misfit is a 400, not run() raising.

        The decorators convert again, but find the values already of the right type and pass them on."""
        deserialize = self._deserialize
        for param in self._schema_params:
            if param.name not in kwargs:
                continue
            value = kwargs[param.name]
            if param.optional and not value:
                continue
            try:
                kwargs[param.name] = deserialize(value, param.param_type, param.name)  # type: ignore[misc]
            except Exception as exc:
                raise BadInputError(
                    f"input {param.name!r} does not fit its schema: {exc}; {_schema_expectation(param.param_type)}"
                ) from None

    # swagger -------------------------------------------------------------------------------
    def _user_swagger(self, version: str) -> dict[str, Any] | None:
        names = {"2.0": ["swagger.json", "swagger2.json"], "3.0": ["swagger3.json"], "3.1": ["swagger3.1.json"]}
        for filename in names[version]:
            candidate = self.source_dir / filename
            if candidate.is_file():
                with open(candidate, encoding="utf-8") as fh:
                    return json.load(fh)
        return None

    def _build_swagger(self, version: str) -> dict[str, Any]:
        user = self._user_swagger(version)
        if user is not None:
            return user
        input_schema: dict[str, Any] = copy.deepcopy(GENERIC_SCHEMA)
        output_schema: dict[str, Any] = copy.deepcopy(GENERIC_SCHEMA)
        if self._schema_decorated:
            from inference_schema.schema_util import get_input_schema, get_output_schema, get_supported_versions

            supported = get_supported_versions(self._run)
            if version not in supported:
                raise SwaggerVersionError(
                    f"Swagger version [{version}] is not supported for the scoring script. "
                    f"Supported swagger versions: [{', '.join(supported)}]."
                )
            input_schema = copy.deepcopy(get_input_schema(self._run))
            output_schema = copy.deepcopy(get_output_schema(self._run))
        return build_document(version, input_schema, output_schema)
