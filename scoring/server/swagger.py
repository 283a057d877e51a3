"""The ``/swagger.json`` document (Swagger 2.0, the shape ``azmlinfsrv`` serves)."""

from __future__ import annotations

from typing import Any

_ANY = {"type": "object", "description": "Any JSON the scoring script accepts."}


def document(
    title: str,
    input_schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe ``POST /score``; a missing schema means "any JSON the script accepts"."""
    return {
        "swagger": "2.0",
        "info": {
            "title": title,
            "version": "1.0",
            "description": "Scoring API of an ml-endpoints deployment.",
        },
        "schemes": ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "paths": {
            "/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Liveness.",
                    "responses": {"200": {"description": "Healthy"}},
                }
            },
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run the model on the request body.",
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
        "definitions": {
            "ServiceInput": input_schema or _ANY,
            "ServiceOutput": output_schema or _ANY,
            "ErrorResponse": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}},
            },
        },
    }
