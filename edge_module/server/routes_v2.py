"""The V2 Open Inference Protocol routes: health, server and model metadata, repository index, infer.

``/v2/models/<name>[/versions/<v>]/...`` routes are added per runtime once the app has loaded
(:meth:`V2Routes.add_models`), each with what was resolved for it then: inline or on a scoring
thread, its ``cancel()`` when it supports one, its adaptive batcher when batching is on. A body over
``inline_max_body`` (or compressed) is decoded and scored on a scoring thread whatever the runtime:
decoding tens of megabytes on the event loop would stall every other client and the probes. The
message format is :mod:`edge_module.protocol.v2`; failures are answered through
:func:`edge_module.protocol.errors.as_scoring_error`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from edge_module._version import __version__
from edge_module.protocol import v2
from edge_module.protocol.errors import as_scoring_error
from edge_module.runtime import ModelRuntime, ScoringError
from edge_module.server.batching import Batcher
from edge_module.server.connection import OCTETS, Connection, HttpRequest, error_body

if TYPE_CHECKING:
    from edge_module.server.service import Route, Service


class V2Model:
    """One runtime as the V2 routes serve it, with what was resolved for it at load time."""

    __slots__ = ("batcher", "cancel", "inline", "metadata", "runtime", "specs")

    def __init__(
        self,
        runtime: ModelRuntime,
        metadata: bytes,
        specs: dict[str, v2.InputSpec],
        batcher: Batcher | None,
        inline: bool,
        cancel: Callable[[], None] | None,
    ):
        self.runtime = runtime
        self.metadata = metadata
        self.specs = specs
        self.batcher = batcher
        self.inline = inline
        self.cancel = cancel


def _version_key(version: str | None) -> tuple[int, int, str]:
    if version is None:
        return (0, 0, "")
    return (1, int(version), "") if version.isdigit() else (1, -1, version)


class V2Routes:
    """The handlers of the V2 routes, over one :class:`~edge_module.server.service.Service`."""

    def __init__(self, service: Service):
        self.service = service

    def add_routes(self) -> None:
        add = self.service.add_route
        add("/v2/health/live", "/v2/health/live", self.h_live, ("GET",), open=True)
        add("/v2/health/ready", "/v2/health/ready", self.h_ready, ("GET",), open=True)
        add("/v2", "/v2", self.h_server_metadata, ("GET",))
        add("/v2/repository/index", "/v2/repository/index", self.h_repository, ("POST",))

    def add_models(self, runtimes: list[ModelRuntime]) -> None:
        """``/v2/models/<name>/versions/<v>/...`` per runtime, ``/v2/models/<name>/...`` for the latest
        version of each name (until :meth:`serve_versions` points it at another)."""
        service = self.service
        by_name: dict[str, list[ModelRuntime]] = {}
        for rt in runtimes:
            by_name.setdefault(rt.name, []).append(rt)
        for name, group in by_name.items():
            latest = max(group, key=lambda rt: _version_key(rt.version))
            service.runtimes[name] = latest
            service.versions[name] = sorted((rt.version for rt in group if rt.version), key=_version_key)
            label = f"/v2/models/{name}"
            for rt in group:
                meta = v2.model_metadata(rt)
                meta["versions"] = service.versions[name]
                target = V2Model(
                    rt,
                    orjson.dumps(meta),
                    v2.input_table(rt.inputs),
                    service.batcher(rt) if service.settings.batching else None,
                    service.runs_inline(rt),
                    rt.cancel if rt.supports_cancel else None,
                )
                bases = [f"/v2/models/{name}/versions/{rt.version}"] if rt.version else []
                if rt is latest:
                    bases.append(label)
                for base in bases:
                    service.add_route(base, label, self.h_model_metadata, ("GET",), target=target)
                    service.add_route(base + "/ready", label + "/ready", self.h_model_ready, ("GET",), True, target)
                    service.add_route(
                        base + "/infer", label + "/infer", self.h_infer, ("POST",), target=target, scoring=True
                    )

    def serve_versions(self, served: dict[str, str | None]) -> None:
        """Point ``/v2/models/<name>/...`` (no version) at the version ``served`` names for each model,
        after the app switched (the module twin's ``model_version``); on the event loop."""
        service = self.service
        for name, version in served.items():
            if name not in service.runtimes or version is None:
                continue
            base = f"/v2/models/{name}"
            versioned = f"{base}/versions/{version}"
            if versioned not in service.routes:
                continue
            for suffix in ("", "/ready", "/infer"):
                service.routes[base + suffix] = service.routes[versioned + suffix]
            service.runtimes[name] = service.routes[versioned].target.runtime

    def not_found(self, conn: Connection, req: HttpRequest) -> None:
        """A ``/v2/models/...`` path with no route: which model or version is not served."""
        service = self.service
        path = req.path
        if not service.ready:
            service.not_ready(conn, req, v2_error=True)
            return
        rest = path[len("/v2/models/") :].split("/")
        name = rest[0]
        if name not in service.runtimes:
            conn.reply(req, 404, error_body(f"unknown model '{name}'; served: {sorted(service.runtimes)}", "error"))
            return
        if len(rest) >= 3 and rest[1] == "versions":
            have = ", ".join(service.versions[name]) or "none"
            conn.reply(req, 404, error_body(f"model '{name}' has no version '{rest[2]}' (served: {have})", "error"))
            return
        conn.reply(req, 404, error_body(f"unknown route {path} for model '{name}'", "error"))

    # -- health and metadata --------------------------------------------------------------------------
    def h_live(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        conn.reply(req, 200, b'{"live":true}')

    def h_ready(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        service = self.service
        if service.ready and service.transport_error is None:
            conn.reply(req, 200, b'{"ready":true}')
        else:
            doc: dict[str, Any] = {"ready": False}
            if service.ready:
                doc["error"] = service.transport_error
            elif service.load_error is not None:
                doc["error"] = f"load() failed: {service.load_error}"
            else:
                doc["error"] = "the model is still loading"
            conn.reply(req, 503, orjson.dumps(doc), headers=[b"retry-after: 1\r\n"])

    def h_server_metadata(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        doc = {"name": "edgepack", "version": __version__, "extensions": ["binary_tensor_data"]}
        conn.reply(req, 200, orjson.dumps(doc))

    def h_repository(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        service = self.service
        doc = [
            {"name": n, "version": rt.version or "", "state": "READY" if service.ready else "UNAVAILABLE"}
            for n, rt in sorted(service.runtimes.items())
        ]
        conn.reply(req, 200, orjson.dumps(doc))

    def h_model_metadata(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        conn.reply(req, 200, route.target.metadata)

    def h_model_ready(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        ready = self.service.ready
        doc = {"name": route.target.runtime.name, "ready": ready}
        conn.reply(req, 200 if ready else 503, orjson.dumps(doc))

    # -- infer ----------------------------------------------------------------------------------------
    def h_infer(self, conn: Connection, req: HttpRequest, route: Route) -> None:
        model: V2Model = route.target
        service = self.service
        headers = req.headers
        header_length = headers.get(b"inference-header-content-length")
        ctype = headers.get(b"content-type")
        if ctype is not None and header_length is None and ctype != b"application/json":
            base = ctype.split(b";", 1)[0].strip().lower()
            if base not in (b"application/json", b"text/plain", b""):
                conn.reply(
                    req,
                    415,
                    error_body(
                        f"unsupported content type {ctype.decode('latin-1')!r}; send application/json "
                        "(or the binary tensor extension with Inference-Header-Content-Length)",
                        "error",
                    ),
                )
                return
        body = req.body
        encoding = headers.get(b"content-encoding")
        if encoding is not None and encoding.lower() in (b"identity", b""):
            encoding = None
        if encoding is not None or len(body) > service.inline_max_body:

            def decoded(result: Any, error: BaseException | None) -> None:
                infer, outputs = result if error is None else (None, None)
                self._infer_done(conn, req, model, infer, outputs, error)

            args = (model, body, encoding, header_length)
            service.offload(self._decode_predict, args, service.guard(conn, req, decoded), model.cancel)
            return
        try:  # JSON (the common case) straight to the codec; the binary extension checks its header first
            if header_length is None:
                infer = v2.decode_request(body, None, model.specs)
            else:
                infer = self._decode(model, body, None, header_length)
        except ScoringError as exc:
            conn.reply(req, exc.status, error_body(str(exc), "error"))
            return

        if model.inline and model.batcher is None:
            try:
                result = service.lane.run_inline(model.runtime.predict, (infer.inputs,), model.cancel)
            except BaseException as exc:
                self._infer_done(conn, req, model, infer, None, exc)
                return
            self._infer_done(conn, req, model, infer, result, None)
            return

        def done(result: Any, error: BaseException | None) -> None:
            self._infer_done(conn, req, model, infer, result, error)

        if model.batcher is not None:
            model.batcher.submit(infer.inputs, infer.rows, service.guard(conn, req, done))
        else:
            service.offload(model.runtime.predict, (infer.inputs,), service.guard(conn, req, done), model.cancel)

    def _decode(
        self, model: V2Model, body: bytes, encoding: bytes | None, header_length: bytes | None
    ) -> v2.InferRequest:
        if encoding is not None:
            body = _decompress(body, encoding.lower(), self.service.max_body_size)
        hl = None
        if header_length is not None:
            if not header_length.isdigit():
                raise ScoringError("Inference-Header-Content-Length must be a whole number", 400)
            hl = int(header_length)
        return v2.decode_request(body, hl, model.specs)

    def _decode_predict(
        self, model: V2Model, body: bytes, encoding: bytes | None, header_length: bytes | None
    ) -> tuple[v2.InferRequest, Any]:
        """A large or compressed request, on a scoring thread: decode it and run the model (unbatched)."""
        infer = self._decode(model, body, encoding, header_length)
        return infer, model.runtime.predict(infer.inputs)

    def _infer_done(
        self,
        conn: Connection,
        req: HttpRequest,
        model: V2Model,
        infer: v2.InferRequest | None,
        result: Any,
        error: BaseException | None,
    ) -> None:
        runtime = model.runtime
        if error is None:
            try:
                body, head_len = v2.encode_response(runtime.name, runtime.version, infer, result)  # type: ignore[arg-type]
            except Exception as exc:
                error = exc
            else:
                if head_len is None:
                    conn.reply(req, 200, body)
                else:
                    conn.reply(
                        req, 200, body, OCTETS, [b"inference-header-content-length: ", b"%d" % head_len, b"\r\n"]
                    )
                return
        if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: answer, then let it go
            conn.reply(req, 500, error_body(f"model '{runtime.name}' failed", "error"))
            raise error
        failure = as_scoring_error(error, f"V2 infer on model {runtime.name}", f"model '{runtime.name}' failed: ")
        conn.reply(req, failure.status, error_body(str(failure), "error"))


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding == b"gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        d = zlib.decompressobj()
    else:
        raise ScoringError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}; use gzip or deflate", 415)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ScoringError(f"the {encoding.decode()} body does not decompress: {exc}", 400) from None
    if len(out) > limit:
        raise ScoringError(f"the decompressed body is over the {limit}-byte limit", 413)
    return out
