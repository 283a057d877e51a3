"""The ``/swagger.json`` document: Swagger 2.0 by default, OpenAPI 3 on ``?version=3``.

As ``azmlinfsrv``: ``?version=`` takes ``2``/``2.0`` (the default), ``3``/``3.0`` and ``3.1``;
any other answers 404 naming the supported ones. A ``swagger2.json`` (or ``swagger.json``)
or ``swagger3.json`` in the code folder is served as it is for its version, instead of the
generated document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scoring.server.errors import NotFound

_ANY = {"type": "object", "example": {}}
_ERROR = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "error": {"type": "string"},
        "request_id": {"type": "string"},
    },
}
_HEALTH = {
    "get": {
        "operationId": "ServiceHealthCheck",
        "description": "Simple health check endpoint to ensure the service is up.",
        "responses": {"200": {"description": "Healthy"}},
    }
}
#: ``?version=`` value -> the document version it selects (azmlinfsrv's aliases).
VERSIONS = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
_USER_FILES = {"2": ("swagger.json", "swagger2.json"), "3": ("swagger3.json",), "3.1": ()}


def pick_version(value: str | None) -> str:
    """The document version asked for.

    Raises:
        NotFound: an unknown version (404, as azmlinfsrv), naming the supported ones.
    """
    version = VERSIONS.get("2" if value is None else value)
    if version is None:
        raise NotFound(f"Swagger version [{value}] is not valid. Supported versions: [2, 3, 3.1].")
    return version


def user_document(folder: Path | None, version: str) -> dict[str, Any] | None:
    """The user's own document for ``version`` from the code folder, if there is one."""
    if folder is None:
        return None
    for name in _USER_FILES[version]:
        path = folder / name
        if path.is_file():
            loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return loaded
    return None


def document(
    title: str,
    input_schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    version: str = "2",
) -> dict[str, Any]:
    """Describe ``POST /score``; a missing schema means "any JSON the script accepts"."""
    inputs, outputs = input_schema or _ANY, output_schema or _ANY
    info = {
        "title": title,
        "version": "1.0",
        "description": f"API specification for the Azure Machine Learning service {title}",
    }
    if version == "2":
        return _swagger2(info, inputs, outputs)
    return _openapi3(info, inputs, outputs, "3.1.0" if version == "3.1" else "3.0.1")


def _swagger2(info: dict[str, Any], inputs: Any, outputs: Any) -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": info,
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}
        },
        "paths": {
            "/": _HEALTH,
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run the model on the request body.",
                    "security": [{"Bearer": []}],
                    "parameters": [
                        {
                            "name": "serviceInputPayload",
                            "in": "body",
                            "required": True,
                            "schema": {"$ref": "#/definitions/ServiceInput"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "Predictions",
                            "schema": {"$ref": "#/definitions/ServiceOutput"},
                        },
                        "default": {
                            "description": "Error",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
                    },
                }
            },
        },
        "definitions": {"ServiceInput": inputs, "ServiceOutput": outputs, "ErrorResponse": _ERROR},
    }


def _openapi3(info: dict[str, Any], inputs: Any, outputs: Any, openapi: str) -> dict[str, Any]:
    def content(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

    return {
        "openapi": openapi,
        "info": info,
        "security": [{"Bearer": []}],
        "paths": {
            "/": _HEALTH,
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run the model on the request body.",
                    "security": [{"Bearer": []}],
                    "requestBody": {"required": True, "content": content("ServiceInput")},
                    "responses": {
                        "200": {"description": "Predictions", "content": content("ServiceOutput")},
                        "default": {"description": "Error", "content": content("ErrorResponse")},
                    },
                }
            },
        },
        "components": {
            "schemas": {"ServiceInput": inputs, "ServiceOutput": outputs, "ErrorResponse": _ERROR},
            "securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
