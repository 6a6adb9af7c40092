"""Swagger 2.0 / OpenAPI 3.x documents for ``/score``, shaped like azureml-inference-server-http's."""

from __future__ import annotations

import os
from typing import Any

from edge_module.runtime import ScoringError

SWAGGER_VERSIONS = ("2.0", "3.0", "3.1")
_ALIASES = {"2": "2.0", "2.0": "2.0", "3": "3.0", "3.0": "3.0", "3.1": "3.1", "3.1.0": "3.1", "3.0.3": "3.0"}

GENERIC_SCHEMA: dict[str, Any] = {"type": "object", "example": {}}


class SwaggerVersionError(ScoringError):
    """Unknown or unsupported swagger version (v1 answered 404)."""

    status = 404


def swagger_version(version: int | float | str) -> str:
    """``2``/``"2"``/``"2.0"`` → ``"2.0"``; ``3``/``"3"``/``"3.0"`` → ``"3.0"``; ``"3.1"`` → ``"3.1"``."""
    key = str(version).strip()
    if key not in _ALIASES:
        raise SwaggerVersionError(f"Swagger version [{version}] is not valid. Supported versions: [2, 3, 3.1].")
    return _ALIASES[key]


def _error_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"message": {"type": "string"}}}


def build_document(
    version: str,
    input_schema: dict[str, Any],
    output_schema: dict[str, Any],
    *,
    title: str | None = None,
    service_version: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """The ``/score`` document for ``version`` (from :func:`swagger_version`) with the given schemas."""
    title = title or os.environ.get("SERVICE_NAME") or "ML service"
    service_version = service_version or os.environ.get("SERVICE_VERSION") or "1.0"
    prefix = os.environ.get("SERVICE_PATH_PREFIX", "").strip("/")
    prefix = f"/{prefix}" if prefix else ""
    info = {
        "title": title,
        "description": description or f"API specification for the Azure Machine Learning service {title}",
        "version": service_version,
    }
    bearer = {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "description": "For example: Bearer abc123",
    }
    health_doc = "Simple health check endpoint to ensure the service is up at any given point."
    health_ok = "If service is up and running, this response will be returned with the content 'Healthy'"
    score_doc = "Run web service's model and get the prediction output"
    score_ok = "The service processed the input correctly and provided a result prediction, if applicable."
    failed = "The service failed to execute due to an error."
    payload = "The input payload for executing the real-time machine learning service."
    if version == "2.0":
        err = {"description": failed, "schema": {"$ref": "#/definitions/ErrorResponse"}}
        return {
            "swagger": "2.0",
            "info": info,
            "schemes": ["https"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {"Bearer": bearer},
            "paths": {
                f"{prefix}/": {
                    "get": {
                        "operationId": "ServiceHealthCheck",
                        "description": health_doc,
                        "responses": {
                            "200": {
                                "description": health_ok,
                                "schema": {"type": "string"},
                                "examples": {"application/json": "Healthy"},
                            },
                            "default": err,
                        },
                    }
                },
                f"{prefix}/score": {
                    "post": {
                        "operationId": "RunMLService",
                        "description": score_doc,
                        "security": [{"Bearer": []}],
                        "parameters": [
                            {
                                "name": "serviceInputPayload",
                                "in": "body",
                                "description": payload,
                                "schema": {"$ref": "#/definitions/ServiceInput"},
                            }
                        ],
                        "responses": {
                            "200": {"description": score_ok, "schema": {"$ref": "#/definitions/ServiceOutput"}},
                            "default": err,
                        },
                    }
                },
                f"{prefix}/swagger.json": {
                    "get": {
                        "operationId": "GetSwaggerSpec",
                        "description": "Get the Swagger specification.",
                        "parameters": [
                            {"name": "version", "in": "query", "required": False, "type": "integer", "enum": [2, 3]}
                        ],
                        "responses": {
                            "200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                            "default": err,
                        },
                    }
                },
            },
            "definitions": {
                "ServiceInput": input_schema,
                "ServiceOutput": output_schema,
                "ErrorResponse": _error_schema(),
            },
        }

    def json_content(ref: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}

    err3 = {"description": failed, "content": json_content("ErrorResponse")}
    return {
        "openapi": "3.1.0" if version == "3.1" else "3.0.3",
        "info": info,
        "security": [{"Bearer": []}],
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": health_doc,
                    "responses": {
                        "200": {
                            "description": health_ok,
                            "content": {"text/plain": {"schema": {"type": "string", "example": "Healthy"}}},
                        },
                        "default": err3,
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": score_doc,
                    "security": [{"Bearer": []}],
                    "requestBody": {"description": payload, "content": json_content("ServiceInput")},
                    "responses": {
                        "200": {"description": score_ok, "content": json_content("ServiceOutput")},
                        "default": err3,
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "enum": [2, 3]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "default": err3,
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "ServiceInput": input_schema,
                "ServiceOutput": output_schema,
                "ErrorResponse": _error_schema(),
            },
            "securitySchemes": {"Bearer": bearer},
        },
    }
