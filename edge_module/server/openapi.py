"""The server's own OpenAPI 3.0 document (``GET /openapi.json``): every route and every status it answers.

The ``/score`` request schema comes from the app's swagger (version 3) when it has one; the V2 routes
follow the Open Inference Protocol. Used by clients and by the schemathesis fuzz test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_module.server.service import Service

_ERROR = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}
_V2_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(codes: dict[int, str], v2: bool = False) -> dict[str, Any]:
    schema = _V2_ERROR if v2 else _ERROR
    return {str(code): _json(schema, text) for code, text in codes.items()}


_AUTH = {401: "Missing or invalid credentials (WWW-Authenticate says how)"}
_LIMITS = {413: "Body over the size limit", 431: "x-request-id longer than 100 characters"}

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
_TENSOR_SPEC = {  # metadata: -1 marks a dimension of any size
    **_TENSOR,
    "properties": {
        **_TENSOR["properties"],
        "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}
_MODEL_METADATA = {
    "type": "object",
    "required": ["name", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR_SPEC},
        "outputs": {"type": "array", "items": _TENSOR_SPEC},
    },
}


def _score_request_schema(service: Service) -> dict[str, Any]:
    """The ``/score`` body schema from the app's OpenAPI 3 document, else any JSON."""
    if service.ready:
        try:
            doc = service.app.swagger(3)
            op = doc.get("paths", {}).get("/score", {}).get("post", {})
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if isinstance(schema, dict) and "$ref" not in str(schema):
                return schema
        except Exception:
            pass
    return {}


def document(service: Service) -> dict[str, Any]:
    from edge_module._version import __version__

    auth = bool(service.auth)
    secured = [{"bearer": []}] if auth else []
    prot = _AUTH if auth else {}
    model_param = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
    }
    model_names = sorted(service.runtimes)
    if model_names:
        model_param["examples"] = {n: {"value": n} for n in model_names}
    v2_model_errors = {404: "Unknown model", 503: "Not ready (still loading, or load() failed)"}

    def op(summary: str, responses: dict[str, Any], security: bool = True, **extra: Any) -> dict[str, Any]:
        out = {"summary": summary, "responses": responses, **extra}
        if not security:
            out["security"] = []
        return out

    paths: dict[str, Any] = {
        "/": {
            "get": op(
                "Liveness (Azure ML)",
                {"200": {"description": "Healthy", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                security=False,
            )
        },
        "/score": {
            "post": op(
                "Score (Azure ML entry-script contract or ONNX auto-scoring)",
                {
                    "200": {"description": "The scorer's answer"},
                    **_errors(
                        {
                            400: "Malformed input (the message names the problem)",
                            **prot,
                            404: "Not found (from the scorer)",
                            **_LIMITS,
                            415: "Unsupported content type",
                            500: "run() raised (x-ms-run-function-failed: True)",
                            503: "Not ready (still loading, or load() failed)",
                            504: "Scoring timed out",
                        }
                    ),
                },
                requestBody={"content": {"application/json": {"schema": _score_request_schema(service)}}},
            ),
        },
        "/swagger.json": {
            "get": op(
                "The /score swagger (2.0) or OpenAPI (3.x) document",
                {
                    "200": _json({"type": "object"}, "The document"),
                    **_errors({404: "No such swagger version", 503: "Not ready"}),
                },
                security=False,
                parameters=[{"name": "version", "in": "query", "schema": {"type": "string", "enum": ["2", "3"]}}],
            )
        },
        "/openapi.json": {
            "get": op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.0")}, security=False)
        },
        "/metrics": {
            "get": op(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(prot),
                },
            )
        },
        "/v2/health/live": {"get": op("V2 liveness", {"200": _json({"type": "object"}, "Live")}, security=False)},
        "/v2/health/ready": {
            "get": op(
                "V2 readiness",
                {"200": _json({"type": "object"}, "Ready"), "503": _json({"type": "object"}, "Not ready")},
                security=False,
            )
        },
        "/v2": {
            "get": op(
                "V2 server metadata",
                {"200": _json({"type": "object"}, "Server metadata"), **_errors(prot, v2=True)},
            )
        },
        "/v2/repository/index": {
            "post": op(
                "Models served",
                {"200": _json({"type": "array"}, "Model index"), **_errors({**prot, **_LIMITS}, v2=True)},
            )
        },
        "/v2/models/{model_name}": {
            "get": op(
                "V2 model metadata",
                {"200": _json(_MODEL_METADATA, "Model metadata"), **_errors({**prot, **v2_model_errors}, v2=True)},
                parameters=[model_param],
            )
        },
        "/v2/models/{model_name}/ready": {
            "get": op(
                "V2 model readiness",
                {"200": _json({"type": "object"}, "Ready"), **_errors(v2_model_errors, v2=True)},
                security=False,
                parameters=[model_param],
            )
        },
        "/v2/models/{model_name}/infer": {
            "post": op(
                "V2 inference (JSON tensors, or the binary tensor extension)",
                {
                    "200": _json(_INFER_RESPONSE, "Outputs"),
                    **_errors(
                        {
                            400: "Malformed request, or an input with the wrong name, shape or datatype",
                            **prot,
                            **_LIMITS,
                            415: "Unsupported content type or encoding",
                            500: "The model raised",
                            **v2_model_errors,
                            504: "Scoring timed out",
                        },
                        v2=True,
                    ),
                },
                parameters=[model_param],
                requestBody={"required": True, "content": {"application/json": {"schema": _INFER_REQUEST}}},
            )
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "edgepack scoring server", "version": __version__},
        "paths": paths,
    }
    if auth:
        doc["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
        doc["security"] = secured
    return doc
