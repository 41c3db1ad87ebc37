"""The OpenAPI document (``/openapi.json``) as the server really answers.

FastAPI's generated document describes what its own machinery would do: a 422 with its
validation body, and no security. This server answers every error with the OpenAI error
body (:mod:`cinecloud.api.errors`), bad parameters with 400, missing or wrong keys with
401 and ``WWW-Authenticate``, limits with 429 and ``Retry-After``, an unreachable
database with 503 and ``Retry-After``; ``POST /v1/videos`` reads its body itself (JSON
or a multipart form). :func:`install_openapi` rewrites the document once, from the
routes' own dependencies, so that it says so; routers name their specific errors (404,
409, ...) with :func:`errors`. The document is checked against the running server by
tests/integration/test_schemathesis.py.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cinecloud.api.schemas import ErrorBody, VideoCreate

__all__ = ["ERROR_DESCRIPTIONS", "errors", "install_openapi"]

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: a parameter, header or body field is wrong (code names it)",
    401: "No API key, or not a valid one",
    403: "The key may not do this (e.g. admin_required)",
    404: "Not found",
    409: "The resource's state does not allow this",
    410: "Gone: the video's files have expired",
    413: "The request body is too large",
    415: "Unsupported Content-Type",
    429: "A rate limit or quota refused the request; retry after Retry-After seconds",
    503: "The database is unavailable; retry after Retry-After seconds",
}

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}
# Operations that answer without touching the database (no 503).
_NO_DATABASE = {("/healthz", "get")}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the OpenAI error body under each of ``statuses``."""
    return {s: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


def _error_response(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": dict(_ERROR_REF)}},
    }
    if status in _HEADERS:
        out["headers"] = copy.deepcopy(_HEADERS[status])
    return out


def _json_schema(response: dict[str, Any]) -> Any:
    return response.get("content", {}).get("application/json", {}).get("schema")


def _complete_errors(path: str, method: str, op: dict[str, Any]) -> None:
    """The error responses every operation can give, besides those its route names."""
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's own validation body: this server sends 400
    statuses = {int(s) for s in responses if s.isdigit() and int(s) >= 400}
    if op.get("parameters") or op.get("requestBody"):
        statuses.add(400)
    schemes = {name for req in op.get("security", []) for name in req}
    if schemes:
        statuses.add(401)
    if "apiKey" in schemes:
        statuses.add(429)  # the key's request rate (limits.rate)
    if (path, method) not in _NO_DATABASE:
        statuses.add(503)
    for status in sorted(statuses):
        own = responses.get(str(status))
        if own is None:
            responses[str(status)] = _error_response(status)
        elif status in _HEADERS and _json_schema(own) == _ERROR_REF:
            own.setdefault("headers", copy.deepcopy(_HEADERS[status]))
        # else: the route's own body (e.g. /readyz's 503) stays as it is


def _video_create_body(models: Iterable[str], default_model: str) -> dict[str, Any]:
    """``POST /v1/videos``'s body, read by the handler itself: JSON or a multipart form
    (the same fields; ``metadata`` as a JSON string; the image as ``input_reference``)."""
    json_schema = VideoCreate.model_json_schema()
    json_schema["properties"]["model"] = {
        "anyOf": [{"type": "string", "enum": sorted(models)}, {"type": "null"}],
        "title": "Model",
        "description": "A model id of GET /v1/models; none: the default model",
    }
    form = copy.deepcopy(json_schema)
    form["properties"]["metadata"] = {
        "type": "string",
        "description": "A JSON object of up to 16 string values",
    }
    form["properties"]["input_reference"] = {
        "type": "string",
        "format": "binary",
        "description": "The image to start from (image-to-video models)",
    }
    form["title"] = "VideoCreateForm"
    example = {"prompt": "a paper boat drifting on a pond at dawn", "model": default_model}
    return {
        "required": True,
        "content": {
            "application/json": {"schema": json_schema, "example": example},
            "multipart/form-data": {"schema": form},
        },
    }


# Links from a created video to the operations on it (not the event stream, which stays
# open while the video is unfinished), and from a webhook endpoint to its own.
_LINKS: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {
    ("/v1/videos", "post"): [
        ("/v1/videos/{video_id}", "get", "RetrieveVideo", "video_id"),
        ("/v1/videos/{video_id}", "delete", "DeleteVideo", "video_id"),
        ("/v1/videos/{video_id}/cancel", "post", "CancelVideo", "video_id"),
        ("/v1/videos/{video_id}/content", "get", "VideoContent", "video_id"),
        ("/v1/videos/{video_id}/webhooks", "get", "VideoWebhookDeliveries", "video_id"),
    ],
    ("/v1/webhooks", "post"): [
        ("/v1/webhooks/{webhook_id}", "get", "RetrieveWebhook", "webhook_id"),
        ("/v1/webhooks/{webhook_id}", "delete", "DeleteWebhook", "webhook_id"),
    ],
}


def _add_links(paths: dict[str, Any]) -> None:
    for (path, method), targets in _LINKS.items():
        links = {}
        for target, target_method, name, param in targets:
            op = paths.get(target, {}).get(target_method)
            if op is not None:
                links[name] = {
                    "operationId": op["operationId"],
                    "parameters": {param: "$response.body#/id"},
                }
        paths[path][method]["responses"]["200"]["links"] = links


def _document(app: FastAPI, models: Iterable[str], default_model: str) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schemas["ErrorBody"].pop("$defs", {}))
    paths: dict[str, Any] = doc["paths"]
    for path, item in paths.items():
        for method, op in item.items():
            _complete_errors(path, method, op)
    create = paths["/v1/videos"]["post"]
    create["requestBody"] = _video_create_body(models, default_model)
    _add_links(paths)
    return doc


def install_openapi(app: FastAPI, models: Iterable[str], default_model: str) -> None:
    """Serve the rewritten document at ``/openapi.json`` (built once, on first use)."""
    ids = list(models)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app, ids, default_model)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
